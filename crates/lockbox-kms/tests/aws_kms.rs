//! The AWS KMS provider against a real `moto_server` (started here on
//! loopback), with boto3 as an independent peer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lockbox_core::encoding::{b64_decode, b64_encode};
use lockbox_core::SecretBytes;
use lockbox_kms::{
    CacheLimits, CachingMaterials, Envelope, KmsError, Provider, RootKeyProvider, Tenants,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_kms_against_moto() {
    let moto = moto();
    let arn = create_key(&moto.endpoint);
    let p = aws(&moto.endpoint, &arn);
    p.health().await.unwrap();
    let c = ctx(&[("tenant", "acme"), ("table", "users")]);

    // GenerateDataKey, then Decrypt through the provider.
    let dk = p.generate_data_key(&c).await.unwrap();
    assert_eq!(dk.plaintext.len(), 32);
    assert_eq!(dk.wrapped.provider, "aws-kms");
    assert_eq!(dk.wrapped.key_id, arn);
    assert_eq!(p.unwrap(&dk.wrapped, &c).await.unwrap(), dk.plaintext);

    // boto3 decrypts the same blob with the same EncryptionContext: the
    // context really went to KMS, as KMS's own EncryptionContext.
    let r = boto(&json!({
        "op": "decrypt", "endpoint": moto.endpoint,
        "blob_b64": b64_encode(&dk.wrapped.wrapped),
        "context": {"tenant": "acme", "table": "users"},
    }));
    assert_eq!(
        b64_decode(r["plaintext_b64"].as_str().unwrap()).unwrap(),
        dk.plaintext.expose_secret()
    );

    // Another context: KMS refuses (InvalidCiphertextException).
    let other = ctx(&[("tenant", "evil"), ("table", "users")]);
    assert!(matches!(
        p.unwrap(&dk.wrapped, &other).await.unwrap_err(),
        KmsError::AuthenticationFailed
    ));

    // Encrypt (wrap an existing key) and ReEncrypt to a second KMS key.
    let key = SecretBytes::random(32).unwrap();
    let w = p.wrap(&key, &c).await.unwrap();
    assert_eq!(p.unwrap(&w, &c).await.unwrap(), key);
    let arn2 = create_key(&moto.endpoint);
    let p2 = aws(&moto.endpoint, &arn2);
    let w2 = p.re_encrypt(&w, &c, &arn2).await.unwrap();
    assert_eq!(w2.key_id, arn2);
    assert_eq!(p2.unwrap(&w2, &c).await.unwrap(), key);

    // Envelopes: AWS KMS and a local root key both wrap the data key;
    // either one alone decrypts.
    let root = SecretBytes::random(32).unwrap();
    let local: Arc<dyn Provider> = Arc::new(RootKeyProvider::new(&root, "root-1").unwrap());
    let awsp: Arc<dyn Provider> = Arc::new(aws(&moto.endpoint, &arn));
    let both = Envelope::new(vec![awsp.clone(), local.clone()]).unwrap();
    let ct = both.encrypt("", &c, b"card 4242").await.unwrap();
    let only_aws = Envelope::new(vec![awsp.clone()]).unwrap();
    let only_local = Envelope::new(vec![local.clone()]).unwrap();
    assert_eq!(
        only_aws.decrypt("", &ct, Some(&c)).await.unwrap().0,
        b"card 4242"
    );
    assert_eq!(
        only_local.decrypt("", &ct, None).await.unwrap().0,
        b"card 4242"
    );
    assert!(matches!(
        only_local.decrypt("", &ct, Some(&other)).await.unwrap_err(),
        KmsError::AuthenticationFailed
    ));
    let unrelated = Envelope::new(vec![
        Arc::new(aws(&moto.endpoint, &arn2)) as Arc<dyn Provider>
    ])
    .unwrap();
    let e = unrelated.decrypt("", &ct, None).await.unwrap_err();
    assert!(matches!(e, KmsError::NoProvider { .. }), "{e}");

    // The cache: 500 encryptions, one GenerateDataKey; decrypts: one Decrypt.
    let cache = Arc::new(CachingMaterials::new(
        CacheLimits::new(Duration::from_secs(300), 1000, 1 << 20, 16).unwrap(),
    ));
    let cached = Envelope::new(vec![awsp.clone()]).unwrap().with_cache(cache);
    let mut cts = Vec::new();
    for i in 0..500 {
        cts.push(
            cached
                .encrypt("acme", &c, format!("row {i}").as_bytes())
                .await
                .unwrap(),
        );
    }
    assert_eq!(cached.stats().provider_calls, 1);
    for (i, ct) in cts.iter().enumerate() {
        let (pt, _) = cached.decrypt("acme", ct, Some(&c)).await.unwrap();
        assert_eq!(pt, format!("row {i}").as_bytes());
    }
    let s = cached.stats();
    assert_eq!(s.provider_calls, 2, "{s:?}");
    assert_eq!(s.cache.encrypt_hits, 499);
    assert_eq!(s.cache.decrypt_hits, 499);

    // An unknown key: KMS refuses with a clear, non-retried error.
    let missing = aws(&moto.endpoint, "11111111-2222-3333-4444-555555555555");
    let e = missing.generate_data_key(&c).await.unwrap_err();
    assert!(
        matches!(&e, KmsError::Rejected { status: 400, message, .. } if message.contains("NotFound")),
        "{e}"
    );
    // A disabled key: health says so (moto 5.2.5 does not refuse other
    // calls on disabled keys, real KMS does: DisabledException, a 400).
    boto(&json!({"op": "disable_key", "endpoint": moto.endpoint, "key_id": arn2}));
    let e = p2.health().await.unwrap_err();
    assert!(format!("{e}").contains("disabled"), "{e}");
}

/// BYOK: a tenant's data is under the tenant's own KMS key, isolated from
/// tenants on Lockbox keys; shredding a BYOK tenant wipes its cached keys
/// (destroying the key itself is the tenant's act at their KMS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byok_tenant_key_at_kms() {
    let moto = moto();
    let te = engine().await;
    let cache = Arc::new(CachingMaterials::new(
        CacheLimits::new(Duration::from_secs(300), 100, 1 << 20, 16).unwrap(),
    ));
    let t = Tenants::new(te.engine.clone(), Some(cache.clone()));
    let arn = create_key(&moto.endpoint);
    t.set_byok("globex", Arc::new(aws(&moto.endpoint, &arn)))
        .unwrap();
    let c = ctx(&[("row", "1")]);
    let ct = t.encrypt("globex", &c, b"globex secret").await.unwrap();
    let h = lockbox_core::envelope::parse_text(&ct).unwrap().header;
    assert_eq!(h.wrapped_keys[0].provider, "aws-kms");
    assert_eq!(h.wrapped_keys[0].key_id, arn);
    assert_eq!(h.context["lockbox:tenant"], "globex");
    let ct_acme = t.encrypt("acme", &c, b"acme secret").await.unwrap();
    assert!(t.decrypt("acme", &ct, &c).await.is_err());
    assert!(t.decrypt("globex", &ct_acme, &c).await.is_err());
    assert_eq!(
        t.decrypt("globex", &ct, &c).await.unwrap(),
        b"globex secret"
    );
    let ev = t.shred("globex", "test").await.unwrap();
    assert_eq!(ev.key, format!("aws-kms {arn}"));
    assert!(ev.purged_cache_entries >= 2, "{ev:?}");
    assert_eq!(
        t.decrypt("acme", &ct_acme, &c).await.unwrap(),
        b"acme secret"
    );
}

/// The SigV4 signature our requests carry is the one botocore computes for
/// the same request (moto does not check signatures, so this is the check).
#[tokio::test]
async fn sigv4_matches_botocore() {
    let f = fault_server(Fault::Status(400)).await;
    let p = lockbox_kms::AwsKmsProvider::new(lockbox_kms::AwsKmsConfig {
        key_id: "alias/test".into(),
        region: "eu-west-3".into(),
        endpoint: Some(f.addr.clone()),
        credentials: lockbox_kms::AwsCredentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
        ),
        retry: fast_retry(),
    })
    .unwrap();
    let _ = p.generate_data_key(&ctx(&[("a", "b")])).await;
    let raw = f.last_request.lock().unwrap().clone();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let body = &raw[end + 4..];
    let mut headers = serde_json::Map::new();
    for l in head.lines().skip(1) {
        let (k, v) = l.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), json!(v.trim()));
    }
    let auth = headers["authorization"].as_str().unwrap().to_owned();
    let signed = auth
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    assert!(auth.contains("/eu-west-3/kms/aws4_request"), "{auth}");
    let r = boto(&json!({
        "op": "sigv4", "method": "POST", "url": format!("{}/", f.addr),
        "headers": headers, "signed_headers": signed, "body_b64": b64_encode(body),
        "region": "eu-west-3", "access_key": "AKIDEXAMPLE",
        "secret_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    }));
    assert_eq!(r["authorization"].as_str().unwrap(), auth);
}
