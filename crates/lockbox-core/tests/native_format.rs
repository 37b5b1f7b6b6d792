//! The native format: checked-in vector file (made by this code, see
//! docs/FORMAT.md), negative vectors, and property tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use lockbox_core::encoding::{b64_decode, b64_encode, b64url_decode, b64url_encode};
use lockbox_core::native::{self, EncryptOptions};
use lockbox_core::{Algorithm, Error, KeyState, Keyset, SecretBytes};
use proptest::prelude::*;
use serde_json::{json, Value};

const VECTOR_FILE: &str = "lockbox/native_v1.json";

/// Keyset from fixed material: key id, then (algorithm, key) per version.
fn fixed_keyset(key_id: u32, versions: &[(Algorithm, Vec<u8>)]) -> Keyset {
    let mut ks = Keyset::empty("vectors", key_id).unwrap();
    for (alg, key) in versions {
        let v = ks
            .import_version(*alg, SecretBytes::from_slice(key), 1_764_000_000)
            .unwrap();
        ks.set_primary(v).unwrap();
    }
    ks
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Build the vector file contents from fixed keys and nonces.
fn make_vectors() -> Value {
    let mut cases = Vec::new();
    let mut seed = 1u8;
    for alg in Algorithm::ALL {
        for (name, pt, ctx, store, ts) in [
            ("empty plaintext, no context", vec![], "", false, None),
            (
                "32-byte field with context",
                pattern(32, 7),
                "tenant=acme;table=users;column=ssn;row=42",
                false,
                None,
            ),
            (
                "stored context and timestamp",
                b"alice@example.com".to_vec(),
                "tenant=acme",
                true,
                Some(1_764_000_123u64),
            ),
            ("1000 bytes", pattern(1000, 3), "doc", false, None),
        ] {
            seed = seed.wrapping_add(17);
            let key_v1 = pattern(alg.key_len(), seed);
            let key_v2 = pattern(alg.key_len(), seed.wrapping_add(1));
            let ks = fixed_keyset(0x1a2b_3c4d, &[(alg, key_v1.clone()), (alg, key_v2.clone())]);
            let nonce = pattern(alg.nonce_len(), seed.wrapping_add(2));
            let opts = EncryptOptions {
                context: ctx.as_bytes(),
                store_context: store,
                timestamp: ts,
            };
            let ct = native::encrypt_text_with_nonce_for_vectors(&ks, &pt, &opts, &nonce).unwrap();
            cases.push(json!({
                "comment": format!("{alg}: {name}"),
                "algorithm": alg.name(),
                "key_id": "1a2b3c4d",
                "keys": {"1": b64_encode(&key_v1), "2": b64_encode(&key_v2)},
                "key_version": 2,
                "plaintext": b64_encode(&pt),
                "context": ctx,
                "store_context": store,
                "timestamp": ts,
                "nonce": b64_encode(&nonce),
                "ciphertext": ct,
                "overhead_bytes": native::binary_overhead(alg, &opts),
            }));
        }
    }
    json!({
        "format": "lockbox native v1",
        "note": "Made by lockbox-core (tests/native_format.rs, LOCKBOX_WRITE_VECTORS=1). Keys and plaintexts are fixed patterns; nonces are fixed here only so the ciphertexts are reproducible.",
        "cases": cases,
        "invalid": invalid_vectors(),
    })
}

fn keyset_of(case: &Value) -> Keyset {
    let alg: Algorithm = case["algorithm"].as_str().unwrap().parse().unwrap();
    let k1 = b64_decode(case["keys"]["1"].as_str().unwrap()).unwrap();
    let k2 = b64_decode(case["keys"]["2"].as_str().unwrap()).unwrap();
    let id = u32::from_str_radix(case["key_id"].as_str().unwrap(), 16).unwrap();
    fixed_keyset(id, &[(alg, k1), (alg, k2)])
}

/// Negative vectors derived from one valid AES-256-GCM ciphertext.
fn invalid_vectors() -> Value {
    let key = pattern(32, 99);
    let ks = fixed_keyset(0x0102_0304, &[(Algorithm::Aes256Gcm, key.clone())]);
    let opts = EncryptOptions::with_context(b"row=7");
    let good =
        native::encrypt_text_with_nonce_for_vectors(&ks, b"the plaintext", &opts, &pattern(12, 5))
            .unwrap();
    let body = b64url_decode(&good[5..]).unwrap();
    let with_body = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = body.clone();
        f(&mut b);
        format!("lbx1:{}", b64url_encode(&b))
    };
    let mut v = vec![
        ("valid (control)", good.clone(), "row=7", "ok"),
        (
            "wrong context",
            good.clone(),
            "row=8",
            "authentication-failed",
        ),
        ("missing context", good.clone(), "", "authentication-failed"),
        (
            "no prefix",
            good[5..].to_string(),
            "row=7",
            "unknown-prefix",
        ),
        (
            "future format version",
            good.replacen("lbx1:", "lbx2:", 1),
            "row=7",
            "unsupported-version",
        ),
        (
            "not base64",
            format!("{}*", &good[..good.len() - 1]),
            "row=7",
            "encoding",
        ),
        (
            "unknown algorithm id",
            with_body(&|b| b[0] = 0xee),
            "row=7",
            "unknown-algorithm",
        ),
        (
            "algorithm changed to ChaCha20-Poly1305",
            with_body(&|b| b[0] = 3),
            "row=7",
            "authentication-failed",
        ),
        (
            "unknown flag bit",
            with_body(&|b| b[1] |= 0x80),
            "row=7",
            "malformed",
        ),
        (
            "timestamp flag set, no timestamp",
            with_body(&|b| b[1] |= 0x02),
            "row=7",
            "authentication-failed",
        ),
        (
            "key id changed",
            with_body(&|b| b[2] ^= 1),
            "row=7",
            "wrong-key-id",
        ),
        (
            "key version changed",
            with_body(&|b| b[9] = 2),
            "row=7",
            "unknown-key-version",
        ),
        (
            "key version 0",
            with_body(&|b| b[6..10].copy_from_slice(&[0, 0, 0, 0])),
            "row=7",
            "malformed",
        ),
        (
            "commitment changed",
            with_body(&|b| b[10] ^= 0x40),
            "row=7",
            "authentication-failed",
        ),
        (
            "nonce changed",
            with_body(&|b| b[42] ^= 1),
            "row=7",
            "authentication-failed",
        ),
        (
            "ciphertext changed",
            with_body(&|b| b[54] ^= 1),
            "row=7",
            "authentication-failed",
        ),
        (
            "tag changed",
            with_body(&|b| {
                let n = b.len();
                b[n - 1] ^= 1
            }),
            "row=7",
            "authentication-failed",
        ),
        (
            "truncated by one byte",
            with_body(&|b| {
                b.pop();
            }),
            "row=7",
            "authentication-failed",
        ),
        (
            "extended by one byte",
            with_body(&|b| b.push(0)),
            "row=7",
            "authentication-failed",
        ),
        (
            "header only",
            with_body(&|b| b.truncate(42)),
            "row=7",
            "truncated",
        ),
        (
            "shorter than a tag after the nonce",
            with_body(&|b| b.truncate(42 + 12 + 15)),
            "row=7",
            "truncated",
        ),
        ("empty body", "lbx1:".to_string(), "row=7", "truncated"),
    ];
    // Same key id and version, different key material: the commitment rejects it.
    let other = fixed_keyset(0x0102_0304, &[(Algorithm::Aes256Gcm, pattern(32, 100))]);
    let forged =
        native::encrypt_text_with_nonce_for_vectors(&other, b"forged", &opts, &pattern(12, 5))
            .unwrap();
    v.push((
        "other key, same key id and version",
        forged,
        "row=7",
        "authentication-failed",
    ));
    json!({
        "key_id": "01020304",
        "algorithm": "aes256-gcm",
        "key": b64_encode(&key),
        "cases": v.into_iter().map(|(c, ct, ctx, e)| json!({"comment": c, "ciphertext": ct, "context": ctx, "expect": e})).collect::<Vec<_>>(),
    })
}

#[test]
fn vector_file_matches_code() {
    let path = common::vectors_dir().join(VECTOR_FILE);
    let made = make_vectors();
    if std::env::var_os("LOCKBOX_WRITE_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&made).unwrap() + "\n").unwrap();
    }
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        file, made,
        "native vectors changed: the format must not change silently"
    );
}

#[test]
fn vector_file_decrypts() {
    let path = common::vectors_dir().join(VECTOR_FILE);
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = file["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4 * Algorithm::ALL.len());
    for case in cases {
        let ks = keyset_of(case);
        let ct = case["ciphertext"].as_str().unwrap();
        let ctx = case["context"].as_str().unwrap();
        let pt = b64_decode(case["plaintext"].as_str().unwrap()).unwrap();
        assert_eq!(
            ks.decrypt(ct, ctx.as_bytes()).unwrap(),
            pt,
            "{}",
            case["comment"]
        );
        assert!(lockbox_core::is_encrypted(ct));
        let h = native::inspect_text(ct).unwrap();
        assert_eq!(h.key_version, 2);
        assert_eq!(h.timestamp, case["timestamp"].as_u64());
        // Binary overhead stated in the file is the real one.
        let bin_len = b64url_decode(&ct[5..]).unwrap().len() + 4;
        assert_eq!(
            bin_len - pt.len(),
            case["overhead_bytes"].as_u64().unwrap() as usize
        );
        if case["store_context"].as_bool().unwrap() {
            assert_eq!(h.context.as_deref(), Some(ctx.as_bytes()));
            // A stored context may be omitted by the caller.
            assert_eq!(ks.decrypt(ct, b"").unwrap(), pt);
        } else {
            assert!(h.context.is_none());
        }
    }
    let inv = &file["invalid"];
    let ks = fixed_keyset(
        0x0102_0304,
        &[(
            Algorithm::Aes256Gcm,
            b64_decode(inv["key"].as_str().unwrap()).unwrap(),
        )],
    );
    let mut failures = 0;
    for case in inv["cases"].as_array().unwrap() {
        let got = ks.decrypt(
            case["ciphertext"].as_str().unwrap(),
            case["context"].as_str().unwrap().as_bytes(),
        );
        let got = match &got {
            Ok(_) => "ok",
            Err(e) => {
                failures += 1;
                common::class(e)
            }
        };
        assert_eq!(got, case["expect"].as_str().unwrap(), "{}", case["comment"]);
    }
    assert!(failures >= 20);
}

#[test]
fn overhead_is_as_documented() {
    // docs/FORMAT.md: 74 bytes for the 96-bit-nonce AEADs, 86 for XChaCha20, 62 for AES-SIV.
    let o = EncryptOptions::default();
    assert_eq!(native::binary_overhead(Algorithm::Aes256Gcm, &o), 74);
    assert_eq!(
        native::binary_overhead(Algorithm::XChaCha20Poly1305, &o),
        86
    );
    assert_eq!(native::binary_overhead(Algorithm::Aes256Siv, &o), 62);
    let ks = Keyset::generate("t", Algorithm::Aes256Gcm).unwrap();
    let t = ks.encrypt(&[0u8; 32], b"").unwrap();
    assert_eq!(t.len(), 141); // "lbx1:" + base64url(102 bytes) = 5 + 136
}

#[test]
fn deterministic_algorithm_is_deterministic_per_context() {
    let ks = Keyset::generate("email", Algorithm::Aes256Siv).unwrap();
    let a = ks.encrypt(b"alice@example.com", b"tenant=1").unwrap();
    assert_eq!(a, ks.encrypt(b"alice@example.com", b"tenant=1").unwrap());
    assert_ne!(a, ks.encrypt(b"alice@example.com", b"tenant=2").unwrap());
    assert_ne!(a, ks.encrypt(b"bob@example.com", b"tenant=1").unwrap());
    let r = Keyset::generate("r", Algorithm::Aes256Gcm).unwrap();
    assert_ne!(r.encrypt(b"x", b"").unwrap(), r.encrypt(b"x", b"").unwrap());
}

#[test]
fn states_and_versions() {
    let mut ks = Keyset::generate("k", Algorithm::Aes256Gcm).unwrap();
    let t1 = ks.encrypt(b"v1", b"").unwrap();
    let v2 = ks.rotate(Algorithm::ChaCha20Poly1305).unwrap();
    assert_eq!(v2, 2);
    let t2 = ks.encrypt(b"v2", b"").unwrap();
    assert_eq!(
        native::inspect_text(&t2).unwrap().algorithm,
        Algorithm::ChaCha20Poly1305
    );
    assert_eq!(ks.decrypt(&t1, b"").unwrap(), b"v1");
    ks.set_state(1, KeyState::DecryptOnly).unwrap();
    assert_eq!(ks.decrypt(&t1, b"").unwrap(), b"v1");
    assert!(matches!(
        ks.set_primary(1),
        Err(Error::KeyVersionUnusable { .. })
    ));
    ks.set_state(1, KeyState::Disabled).unwrap();
    assert!(matches!(
        ks.decrypt(&t1, b""),
        Err(Error::KeyVersionUnusable {
            state: "disabled",
            ..
        })
    ));
    ks.set_state(1, KeyState::Active).unwrap();
    assert_eq!(ks.decrypt(&t1, b"").unwrap(), b"v1");
    assert!(
        ks.set_state(2, KeyState::Disabled).is_err(),
        "primary cannot be disabled"
    );
    ks.set_state(1, KeyState::Destroyed).unwrap();
    assert!(ks.version(1).unwrap().expose_key_material().is_none());
    assert!(matches!(
        ks.decrypt(&t1, b""),
        Err(Error::KeyVersionUnusable {
            state: "destroyed",
            ..
        })
    ));
    assert!(ks.set_state(1, KeyState::Active).is_err());
    // Survives the file form, destroyed version included.
    let back = Keyset::from_json(&ks.to_json().unwrap()).unwrap();
    assert_eq!(back.decrypt(&t2, b"").unwrap(), b"v2");
    assert!(back.decrypt(&t1, b"").is_err());
    assert_eq!(back.version(1).unwrap().state(), KeyState::Destroyed);
    // Key material never in Debug.
    let dbg = format!("{back:?}");
    let k2 = b64_encode(
        back.version(2)
            .unwrap()
            .expose_key_material()
            .unwrap()
            .expose_secret(),
    );
    assert!(!dbg.contains(&k2));
}

#[test]
fn keyset_file_errors_name_the_problem() {
    let ks = Keyset::generate("k", Algorithm::Aes256Gcm).unwrap();
    let good: Value = serde_json::from_str(&ks.to_json().unwrap()).unwrap();
    type Mutation = Box<dyn Fn(&mut Value)>;
    let variants: Vec<(&str, Mutation)> = vec![
        (
            "unsupported keyset file version",
            Box::new(|v| v["lockbox_keyset"] = json!(9)),
        ),
        (
            "key_id must be 8 hex digits",
            Box::new(|v| v["key_id"] = json!("xyz")),
        ),
        (
            "primary_version 5 does not exist",
            Box::new(|v| v["primary_version"] = json!(5)),
        ),
        (
            "unknown algorithm",
            Box::new(|v| v["versions"][0]["algorithm"] = json!("rot13")),
        ),
        (
            "unknown key state",
            Box::new(|v| v["versions"][0]["state"] = json!("sleepy")),
        ),
        (
            "key is not base64",
            Box::new(|v| v["versions"][0]["key"] = json!("%%%")),
        ),
        (
            "needs a 32-byte key",
            Box::new(|v| v["versions"][0]["key"] = json!("AAAA")),
        ),
        (
            "has no key",
            Box::new(|v| {
                v["versions"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("key")
                    .map(|_| ())
                    .unwrap_or(())
            }),
        ),
        ("unknown field", Box::new(|v| v["extra"] = json!(1))),
        (
            "one byte value repeated",
            Box::new(|v| v["versions"][0]["key"] = json!(b64_encode(&[0u8; 32]))),
        ),
    ];
    for (needle, f) in variants {
        let mut v = good.clone();
        f(&mut v);
        let e = Keyset::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains(needle), "expected {needle:?} in {e:?}");
        let key = v["versions"][0]["key"]
            .as_str()
            .unwrap_or("AAAA-none")
            .to_owned();
        if key.len() > 8 {
            assert!(!e.contains(&key), "error leaks key: {e}");
        }
    }
}

#[test]
fn imported_key_material_of_one_repeated_byte_is_refused() {
    let mut ks = Keyset::empty("k", 1).unwrap();
    for alg in Algorithm::ALL {
        for byte in [0u8, 0xff] {
            let e = ks
                .import_version(alg, SecretBytes::from_slice(&vec![byte; alg.key_len()]), 1)
                .unwrap_err();
            assert!(matches!(e, Error::InvalidKey(_)), "{alg}: {e:?}");
            assert!(e.to_string().contains("one byte value repeated"), "{e}");
        }
    }
    assert_eq!(ks.versions().count(), 0);
    ks.import_version(
        Algorithm::Aes256Gcm,
        SecretBytes::from_slice(&pattern(32, 1)),
        1,
    )
    .unwrap();
}

fn any_alg() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn round_trip_and_tamper(alg in any_alg(), pt in prop::collection::vec(any::<u8>(), 0..300),
                             ctx in prop::collection::vec(any::<u8>(), 0..40),
                             store in any::<bool>(), ts in prop::option::of(any::<u64>()),
                             flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let ks = Keyset::generate("p", alg).unwrap();
        let opts = EncryptOptions { context: &ctx, store_context: store, timestamp: ts };
        let bin = ks.encrypt_binary(&pt, &opts).unwrap();
        prop_assert_eq!(ks.decrypt_binary(&bin, &ctx).unwrap(), pt.clone());
        let text = ks.encrypt_with(&pt, &opts).unwrap();
        prop_assert_eq!(ks.decrypt(&text, &ctx).unwrap(), pt.clone());
        // Any single bit flip is rejected.
        let mut bad = bin.clone();
        let i = flip.index(bad.len());
        bad[i] ^= 1 << bit;
        prop_assert!(ks.decrypt_binary(&bad, &ctx).is_err());
        // Truncation and extension are rejected.
        prop_assert!(ks.decrypt_binary(&bin[..bin.len() - 1], &ctx).is_err());
        let mut ext = bin.clone();
        ext.push(0);
        prop_assert!(ks.decrypt_binary(&ext, &ctx).is_err());
        // Wrong context (unless stored and caller passes none) is rejected.
        let mut other = ctx.clone();
        other.push(1);
        prop_assert!(ks.decrypt_binary(&bin, &other).is_err());
        // Another keyset (another key) is rejected, as is a rotated-away version number.
        let ks2 = Keyset::generate("p", alg).unwrap();
        prop_assert!(ks2.decrypt_binary(&bin, &ctx).is_err());
    }

    #[test]
    fn parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), s in ".{0,200}") {
        let ks = Keyset::generate("p", Algorithm::Aes256Gcm).unwrap();
        let _ = ks.decrypt_binary(&bytes, b"");
        let _ = ks.decrypt(&s, b"");
        let _ = native::inspect_binary(&bytes);
        let _ = native::is_encrypted_binary(&bytes);
        let _ = lockbox_core::is_encrypted(&s);
        let _ = Keyset::from_json(&s);
        let _ = Keyset::from_json(&String::from_utf8_lossy(&bytes));
        // Valid magic and prefix, arbitrary rest.
        let mut b = native::BINARY_MAGIC.to_vec();
        b.extend_from_slice(&bytes);
        let _ = ks.decrypt_binary(&b, b"");
        let _ = ks.decrypt(&format!("lbx1:{}", b64url_encode(&bytes)), b"");
    }
}
