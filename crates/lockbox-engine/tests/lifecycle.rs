//! The engine's key lifecycle, run against SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backends, engine_on, Backend};
use lockbox_core::rootkey::RootKey;
use lockbox_core::SecretBytes;
use lockbox_engine::{ConfigUpdate, CreateOptions, EngineError, ImportSpec, KeyType};

fn opts(t: &str) -> CreateOptions {
    CreateOptions {
        key_type: Some(t.into()),
        ..CreateOptions::default()
    }
}

async fn lifecycle_on(b: Backend) {
    let (e, _root, _guard) = engine_on(&b).await;
    assert!(e.create_key("orders", &opts("aes256-gcm96")).await.unwrap());
    assert!(
        !e.create_key("orders", &opts("aes256-gcm96")).await.unwrap(),
        "create is idempotent"
    );
    assert!(matches!(
        e.create_key("orders", &opts("chacha20-poly1305")).await,
        Err(EngineError::BadRequest(_))
    ));
    assert!(matches!(
        e.create_key("bad name!", &opts("aes256-gcm96")).await,
        Err(EngineError::BadRequest(_))
    ));
    assert!(matches!(
        e.create_key("x", &opts("des")).await,
        Err(EngineError::BadRequest(_))
    ));

    let c1 = e
        .encrypt("orders", b"card 4111", b"", b"", None)
        .await
        .unwrap();
    assert!(c1.starts_with("vault:v1:"));
    let n1 = e
        .encrypt_native("orders", b"card 4111", b"row=1")
        .await
        .unwrap();
    assert_eq!(e.rotate("orders").await.unwrap(), 2);
    let c2 = e
        .encrypt("orders", b"card 4242", b"", b"", None)
        .await
        .unwrap();
    assert!(c2.starts_with("vault:v2:"));
    assert_eq!(
        e.decrypt("orders", &c1, b"", b"").await.unwrap(),
        b"card 4111"
    );
    assert_eq!(
        e.decrypt("orders", &c2, b"", b"").await.unwrap(),
        b"card 4242"
    );
    assert_eq!(
        e.decrypt_native(&n1, b"row=1").await.unwrap(),
        ("orders".to_owned(), b"card 4111".to_vec())
    );
    assert!(e.decrypt_native(&n1, b"row=2").await.is_err());
    let r = e.rewrap("orders", &c1, b"", b"", None).await.unwrap();
    assert!(r.starts_with("vault:v2:"));

    // min_decryption_version blocks old ciphertexts; trim removes old versions for good.
    e.configure(
        "orders",
        &ConfigUpdate {
            min_decryption_version: Some(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(e.decrypt("orders", &c1, b"", b"").await.is_err());
    assert!(e.decrypt_native(&n1, b"row=1").await.is_err());
    assert!(matches!(
        e.trim("orders", 3).await,
        Err(EngineError::BadRequest(_))
    ));
    e.trim("orders", 2).await.unwrap();
    let info = e.read_key("orders").await.unwrap();
    assert_eq!((info.min_available_version, info.latest_version), (2, 2));
    assert_eq!(info.versions.keys().copied().collect::<Vec<_>>(), vec![2]);
    assert!(matches!(
        e.configure(
            "orders",
            &ConfigUpdate {
                min_decryption_version: Some(1),
                ..Default::default()
            }
        )
        .await,
        Err(EngineError::BadRequest(_))
    ));

    // Delete needs deletion_allowed; soft delete and restore; destroy is final.
    assert!(matches!(
        e.delete("orders").await,
        Err(EngineError::BadRequest(_))
    ));
    e.configure(
        "orders",
        &ConfigUpdate {
            deletion_allowed: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e.delete("orders").await.unwrap();
    assert!(matches!(
        e.encrypt("orders", b"x", b"", b"", None).await,
        Err(EngineError::KeyDeleted(_))
    ));
    assert!(!e
        .list_keys(false)
        .await
        .unwrap()
        .contains(&"orders".to_owned()));
    e.undelete("orders").await.unwrap();
    assert_eq!(
        e.decrypt("orders", &c2, b"", b"").await.unwrap(),
        b"card 4242"
    );
    e.destroy("orders", "test-suite").await.unwrap();
    match e.decrypt("orders", &c2, b"", b"").await {
        Err(EngineError::KeyDestroyed { by, .. }) => assert_eq!(by, "test-suite"),
        other => panic!("{other:?}"),
    }
    assert!(e.undelete("orders").await.is_err());
    let info = e.read_key("orders").await.unwrap();
    assert!(info.destroyed_at.is_some() && info.versions.is_empty());
    // The material is gone from the store itself, not just from memory.
    let (_, versions) = e.store().key_get("orders").await.unwrap().unwrap();
    assert!(versions.is_empty());
}

async fn types_on(b: Backend) {
    let (e, _root, _guard) = engine_on(&b).await;
    for t in KeyType::ALL {
        if matches!(t, KeyType::Fernet) {
            continue;
        }
        let name = format!("k-{}", t.name());
        e.create_key(&name, &opts(t.name())).await.unwrap();
        let info = e.read_key(&name).await.unwrap();
        assert_eq!(info.key_type, t.name());
        if t.supports_encryption() {
            let c = e.encrypt(&name, b"hi", b"", b"", None).await.unwrap();
            assert_eq!(e.decrypt(&name, &c, b"", b"").await.unwrap(), b"hi");
        } else {
            assert!(e.encrypt(&name, b"hi", b"", b"", None).await.is_err());
        }
        if t.supports_signing() {
            assert_eq!(info.public_keys.len(), 1);
        }
    }
    // derived + convergent, Vault semantics
    e.create_key(
        "conv",
        &CreateOptions {
            derived: true,
            convergent_encryption: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let a = e.encrypt("conv", b"same", b"ctx", b"", None).await.unwrap();
    assert_eq!(
        a,
        e.encrypt("conv", b"same", b"ctx", b"", None).await.unwrap()
    );
    assert!(
        e.encrypt("conv", b"same", b"", b"", None).await.is_err(),
        "context required"
    );
    assert!(matches!(
        e.create_key(
            "c2",
            &CreateOptions {
                convergent_encryption: true,
                ..Default::default()
            }
        )
        .await,
        Err(EngineError::BadRequest(_))
    ));
}

async fn retention_on(b: Backend) {
    let (e, _root, _guard) = engine_on(&b).await;
    e.create_key("r", &CreateOptions::default()).await.unwrap();
    let c1 = e.encrypt("r", b"one", b"", b"", None).await.unwrap();
    for _ in 0..7 {
        e.rotate("r").await.unwrap();
    }
    // Retention never trims at or above min_decryption_version (still 1).
    let info = e.read_key("r").await.unwrap();
    assert_eq!((info.min_available_version, info.latest_version), (1, 8));
    assert_eq!(e.decrypt("r", &c1, b"", b"").await.unwrap(), b"one");
    e.configure(
        "r",
        &ConfigUpdate {
            min_decryption_version: Some(6),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e.rotate("r").await.unwrap();
    let info = e.read_key("r").await.unwrap();
    // keep 5 versions: 5..=9, but never above min_decryption_version (6) -> 5
    assert_eq!((info.min_available_version, info.latest_version), (5, 9));
}

async fn export_backup_import_on(b: Backend) {
    let (e, _root, _guard) = engine_on(&b).await;
    e.create_key("plain", &CreateOptions::default())
        .await
        .unwrap();
    assert!(matches!(
        e.export("plain", "encryption-key", None).await,
        Err(EngineError::BadRequest(_))
    ));
    assert!(matches!(
        e.backup("plain", None).await,
        Err(EngineError::BadRequest(_))
    ));
    e.create_key(
        "exp",
        &CreateOptions {
            exportable: true,
            allow_plaintext_backup: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e.rotate("exp").await.unwrap();
    let c = e
        .encrypt("exp", b"payload", b"", b"", Some(1))
        .await
        .unwrap();
    let keys = e.export("exp", "encryption-key", None).await.unwrap();
    assert_eq!(keys.len(), 2);
    // Import the export as a new key (as from Vault): old ciphertexts decrypt.
    let versions = keys
        .iter()
        .map(|(v, k)| {
            (
                *v,
                SecretBytes::new(lockbox_core::encoding::b64_decode(k).unwrap()),
            )
        })
        .collect();
    e.import(
        "copy",
        ImportSpec {
            key_type: KeyType::Aes256Gcm96,
            versions,
            derived: false,
            convergent_encryption: false,
            exportable: false,
            allow_plaintext_backup: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(e.decrypt("copy", &c, b"", b"").await.unwrap(), b"payload");
    // Wrong size import: clear error, nothing written.
    let bad = ImportSpec {
        key_type: KeyType::Aes256Gcm96,
        versions: vec![(1, SecretBytes::from_slice(&[1u8; 16]))],
        derived: false,
        convergent_encryption: false,
        exportable: false,
        allow_plaintext_backup: false,
    };
    match e.import("bad", bad).await {
        Err(EngineError::BadRequest(m)) => assert!(m.contains("invalid key size 16"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(e.store().key_get("bad").await.unwrap().is_none());
    // Plain and encrypted backups restore under new names.
    let plain = e.backup("exp", None).await.unwrap();
    assert_eq!(
        e.restore_backup(&plain, None, Some("exp-restored"), false)
            .await
            .unwrap(),
        "exp-restored"
    );
    assert_eq!(
        e.decrypt("exp-restored", &c, b"", b"").await.unwrap(),
        b"payload"
    );
    let enc = e
        .backup("exp", Some(b"correct horse battery"))
        .await
        .unwrap();
    assert!(enc.starts_with("lbxbak1:"));
    assert!(matches!(
        e.restore_backup(&enc, Some(b"wrong passphrase!!"), Some("x1"), false)
            .await,
        Err(EngineError::BadRequest(_))
    ));
    assert!(matches!(
        e.restore_backup(&enc, None, Some("x1"), false).await,
        Err(EngineError::BadRequest(_))
    ));
    assert!(matches!(
        e.restore_backup("bm90IGpzb24=", None, Some("x2"), false)
            .await,
        Err(EngineError::BadRequest(_))
    ));
    assert!(matches!(
        e.restore_backup(&plain, None, Some("exp"), false).await,
        Err(EngineError::BadRequest(_))
    ));
    e.restore_backup(&enc, Some(b"correct horse battery"), Some("x3"), false)
        .await
        .unwrap();
    assert_eq!(e.decrypt("x3", &c, b"", b"").await.unwrap(), b"payload");
    // Fernet key import decrypts Python-style tokens.
    let fk = lockbox_core::fernet::Fernet::generate_key().unwrap();
    let token = lockbox_core::fernet::Fernet::new(
        lockbox_core::fernet::FernetKey::from_base64(&fk.expose_base64()).unwrap(),
    )
    .encrypt(b"legacy")
    .unwrap();
    let raw = lockbox_core::encoding::b64url_pad_decode(&fk.expose_base64()).unwrap();
    e.import(
        "legacy",
        ImportSpec {
            key_type: KeyType::Fernet,
            versions: vec![(1, SecretBytes::new(raw))],
            derived: false,
            convergent_encryption: false,
            exportable: false,
            allow_plaintext_backup: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        e.decrypt("legacy", &token, b"", b"").await.unwrap(),
        b"legacy"
    );
}

async fn seal_and_integrity_on(b: Backend) {
    let (e, root, _guard) = engine_on(&b).await;
    e.create_key("a", &CreateOptions::default()).await.unwrap();
    e.create_key("b", &CreateOptions::default()).await.unwrap();
    let c = e.encrypt("a", b"secret", b"", b"", None).await.unwrap();
    e.seal().await.unwrap();
    assert!(matches!(
        e.encrypt("a", b"x", b"", b"", None).await,
        Err(EngineError::Sealed)
    ));
    // A wrong master key is refused clearly.
    match e.unseal_with_master_key(RootKey::generate().unwrap()).await {
        Err(EngineError::Unseal(m)) => assert!(m.contains("wrong master key"), "{m}"),
        other => panic!("{other:?}"),
    }
    e.unseal_with_master_key(RootKey::from_bytes(root.expose_secret().expose_secret()).unwrap())
        .await
        .unwrap();
    assert_eq!(e.decrypt("a", &c, b"", b"").await.unwrap(), b"secret");
    // Someone with write access to the database swaps key b's version 1 into key a.
    let (row_a, _) = e.store().key_get("a").await.unwrap().unwrap();
    let (_, vb) = e.store().key_get("b").await.unwrap().unwrap();
    let mut forged = row_a.clone();
    forged.generation += 1;
    forged.latest_version = 2;
    let mut stolen = vb[0].clone();
    stolen.name = "a".into();
    stolen.version = 2;
    e.store()
        .key_update(&forged, row_a.generation, &[stolen], None, false)
        .await
        .unwrap();
    assert!(matches!(
        e.reload_key("a").await,
        Err(EngineError::Integrity(_))
    ));
}

async fn auto_rotation_once_on(b: Backend) {
    // Two engines on one store: each due rotation happens exactly once.
    let (e1, root, guard) = engine_on(&b).await;
    let e2 = common::second_engine(&b, &guard, &root).await;
    e1.create_key(
        "auto",
        &CreateOptions {
            auto_rotate_period: Some(3600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e1.create_key(
        "manual",
        &CreateOptions {
            auto_rotate_period: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let later = lockbox_engine::now() + 3601;
    let (r1, r2) = tokio::join!(e1.rotate_due_keys(later), e2.rotate_due_keys(later));
    let rotated: Vec<String> = r1.unwrap().into_iter().chain(r2.unwrap()).collect();
    assert_eq!(rotated, vec!["auto".to_owned()]);
    assert_eq!(e1.read_key("auto").await.unwrap().latest_version, 2);
    assert_eq!(e1.read_key("manual").await.unwrap().latest_version, 1);
    // Not due again until another period has passed.
    assert!(e2.rotate_due_keys(later + 10).await.unwrap().is_empty());
    // e2 sees e1's rotation at once: it reloads on an unknown version.
    let c = e1.encrypt("auto", b"fresh", b"", b"", None).await.unwrap();
    assert!(c.starts_with("vault:v2:"));
    assert_eq!(e2.decrypt("auto", &c, b"", b"").await.unwrap(), b"fresh");
}

macro_rules! on_both {
    ($($name:ident => $f:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() { $f(backends::sqlite()).await }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() { $f(backends::postgres()).await }
            }
        )*
    };
}

on_both! {
    lifecycle => lifecycle_on,
    key_types => types_on,
    retention => retention_on,
    export_backup_import => export_backup_import_on,
    seal_and_integrity => seal_and_integrity_on,
    auto_rotation_exactly_once => auto_rotation_once_on,
}

/// Keys exported from a real Vault 1.8.3 (published with the ciphertexts it
/// made; see lockbox-core/tests/vault_format.rs for the origin) import into
/// the store, and the Vault ciphertexts decrypt through the engine.
async fn real_vault_import_on(b: Backend) {
    let (e, _root, _guard) = engine_on(&b).await;
    let import = |key: &str, derived: bool| ImportSpec {
        key_type: KeyType::Aes256Gcm96,
        versions: vec![(
            1,
            SecretBytes::new(lockbox_core::encoding::b64_decode(key).unwrap()),
        )],
        derived,
        convergent_encryption: false,
        exportable: false,
        allow_plaintext_backup: false,
    };
    e.import(
        "vault-plain",
        import("MoUxGpXXLY1GpicsJG4FFCSp/t6HzVVlddS+CIbEJyE=", false),
    )
    .await
    .unwrap();
    e.import(
        "vault-derived",
        import("rph2pwTQCx+TD/lk+7o9igzQw5A7FU3+S+Z24Cf9Duk=", true),
    )
    .await
    .unwrap();
    assert_eq!(
        e.decrypt(
            "vault-plain",
            "vault:v1:aMEvW33l8iXqoDcvXl8KTtkaJEVcB8yeSsQ69mOltw==",
            b"",
            b""
        )
        .await
        .unwrap(),
        b"FOO"
    );
    assert_eq!(
        e.decrypt(
            "vault-derived",
            "vault:v1:1pEqzFnkQEa5RA35ynhOd0Ye907S9PvWIq5dRPDP3Q==",
            br#"{"bar":"baz"}"#,
            b""
        )
        .await
        .unwrap(),
        b"FOO"
    );
    // After the import, rotation and rewrap move the data to a Lockbox-made version.
    e.rotate("vault-plain").await.unwrap();
    let r = e
        .rewrap(
            "vault-plain",
            "vault:v1:aMEvW33l8iXqoDcvXl8KTtkaJEVcB8yeSsQ69mOltw==",
            b"",
            b"",
            None,
        )
        .await
        .unwrap();
    assert!(r.starts_with("vault:v2:"));
    assert_eq!(
        e.decrypt("vault-plain", &r, b"", b"").await.unwrap(),
        b"FOO"
    );
}

on_both! {
    real_vault_import => real_vault_import_on,
}

async fn sign_and_hmac_on(b: Backend) {
    use lockbox_engine::SignOptions;
    let (e, _root, _guard) = engine_on(&b).await;
    for t in ["ed25519", "ecdsa-p256", "ecdsa-p384", "rsa-2048"] {
        e.create_key(t, &opts(t)).await.unwrap();
        let mut variants = vec![SignOptions::default()];
        if t.starts_with("ecdsa") {
            variants.push(SignOptions {
                marshaling_algorithm: Some("jws".into()),
                ..Default::default()
            });
        }
        if t.starts_with("rsa") {
            variants.push(SignOptions {
                signature_algorithm: Some("pkcs1v15".into()),
                hash_algorithm: Some("sha2-512".into()),
                ..Default::default()
            });
        }
        for o in variants {
            let sig = e.sign(t, b"message", &o).await.unwrap();
            assert!(sig.starts_with("vault:v1:"), "{t}: {sig}");
            assert!(e.verify(t, b"message", &sig, &o).await.unwrap(), "{t}");
            assert!(
                !e.verify(t, b"other message", &sig, &o).await.unwrap(),
                "{t}"
            );
        }
        assert!(
            e.hmac(t, b"x", "sha2-256", None).await.is_err(),
            "{t}: signing keys have no HMAC"
        );
    }
    assert!(matches!(
        e.sign(
            "ecdsa-p256",
            b"m",
            &SignOptions {
                hash_algorithm: Some("sha2-512".into()),
                ..Default::default()
            }
        )
        .await,
        Err(EngineError::BadRequest(_))
    ));
    e.create_key("mac", &opts("hmac")).await.unwrap();
    e.create_key("aead", &opts("aes256-gcm96")).await.unwrap();
    for k in ["mac", "aead"] {
        for alg in ["sha2-224", "sha2-256", "sha2-384", "sha2-512"] {
            let m = e.hmac(k, b"payload", alg, None).await.unwrap();
            assert!(e.verify_hmac(k, b"payload", &m, alg).await.unwrap());
            assert!(!e.verify_hmac(k, b"payload!", &m, alg).await.unwrap());
        }
        assert!(e
            .verify_hmac(k, b"p", "vault:v1:!!", "sha2-256")
            .await
            .is_err());
        assert!(e.hmac(k, b"p", "md5", None).await.is_err());
    }
    assert!(e.sign("aead", b"m", &SignOptions::default()).await.is_err());
}

on_both! {
    sign_and_hmac => sign_and_hmac_on,
}

/// Key material that is one byte value repeated (all zeros...) is refused
/// on every way in: raw import, Fernet import, a Vault export's versions,
/// and a backup; nothing is written.
async fn repeated_byte_import_on(b: Backend) {
    let (e, _root, _guard) = engine_on(&b).await;
    let spec = |key_type, versions: Vec<(u32, SecretBytes)>| ImportSpec {
        key_type,
        versions,
        derived: false,
        convergent_encryption: false,
        exportable: false,
        allow_plaintext_backup: false,
    };
    let real = SecretBytes::random(32).unwrap();
    let cases = [
        (
            "zeros",
            spec(
                KeyType::Aes256Gcm96,
                vec![(1, SecretBytes::from_slice(&[0; 32]))],
            ),
        ),
        (
            "ones",
            spec(
                KeyType::Aes256Gcm96,
                vec![(1, SecretBytes::from_slice(&[0xff; 32]))],
            ),
        ),
        (
            "aes128",
            spec(
                KeyType::Aes128Gcm96,
                vec![(1, SecretBytes::from_slice(&[0; 16]))],
            ),
        ),
        (
            "fernet",
            spec(
                KeyType::Fernet,
                vec![(1, SecretBytes::from_slice(&[0; 32]))],
            ),
        ),
        (
            "mac",
            spec(KeyType::Hmac, vec![(1, SecretBytes::from_slice(&[7; 32]))]),
        ),
        (
            "vault-export",
            spec(
                KeyType::ChaCha20Poly1305,
                vec![(1, real), (2, SecretBytes::from_slice(&[0; 32]))],
            ),
        ),
    ];
    for (name, s) in cases {
        match e.import(name, s).await {
            Err(EngineError::BadRequest(m)) => {
                assert!(m.contains("one byte value repeated"), "{name}: {m}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(e.store().key_get(name).await.unwrap().is_none(), "{name}");
    }
    let doc = serde_json::json!({
        "lockbox_backup": 1, "name": "restored", "key_type": "aes256-gcm96",
        "derived": false, "convergent": false, "exportable": false,
        "allow_plaintext_backup": true, "deletion_allowed": false,
        "auto_rotate_period": 0, "min_decryption_version": 1, "min_encryption_version": 0,
        "versions": [{"version": 1, "created_at": 1, "key": lockbox_core::encoding::b64_encode(&[0; 32])}],
    });
    let blob = lockbox_core::encoding::b64_encode(doc.to_string().as_bytes());
    match e.restore_backup(&blob, None, None, false).await {
        Err(EngineError::BadRequest(m)) => assert!(m.contains("one byte value repeated"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(e.store().key_get("restored").await.unwrap().is_none());
    // A real key of the same shape still imports.
    e.import(
        "fine",
        spec(
            KeyType::Aes256Gcm96,
            vec![(1, SecretBytes::random(32).unwrap())],
        ),
    )
    .await
    .unwrap();
}

on_both! {
    repeated_byte_import => repeated_byte_import_on,
}
