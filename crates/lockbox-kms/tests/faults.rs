//! Provider faults: unreachable, slow, erroring. Bounded retries with
//! backoff, a clear error, no partial envelope, and the cache serving
//! within its bounds while the provider is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lockbox_core::SecretBytes;
use lockbox_kms::{
    CacheLimits, CachingMaterials, Envelope, KmsError, Provider, RetryPolicy, RootKeyProvider,
    VaultTransitConfig, VaultTransitProvider,
};

fn transit(addr: &str) -> VaultTransitProvider {
    let mut cfg = VaultTransitConfig::new(addr, "token", "k");
    cfg.retry = fast_retry();
    VaultTransitProvider::new(cfg).unwrap()
}

#[tokio::test]
async fn unreachable_provider_is_retried_then_reported() {
    let port = free_port(); // bound then released: nothing listens there
    let addr = format!("http://127.0.0.1:{port}");
    let c = ctx(&[("a", "1")]);
    let t0 = Instant::now();
    let e = aws(&addr, "k").generate_data_key(&c).await.unwrap_err();
    assert!(
        matches!(&e, KmsError::Unavailable { attempts: 3, last, .. } if last.contains("connection")),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    let e = transit(&addr).generate_data_key(&c).await.unwrap_err();
    assert!(
        matches!(e, KmsError::Unavailable { attempts: 3, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("vault-transit transit/k is unavailable after 3 attempt(s)"),
        "{e}"
    );
}

#[tokio::test]
async fn erroring_provider_is_retried_exactly_max_attempts() {
    let f = fault_server(Fault::Status(500)).await;
    let c = ctx(&[("a", "1")]);
    let e = aws(&f.addr, "k").generate_data_key(&c).await.unwrap_err();
    assert!(
        matches!(e, KmsError::Unavailable { attempts: 3, .. }),
        "{e}"
    );
    assert_eq!(f.hits.load(Ordering::SeqCst), 3);
    let e = transit(&f.addr)
        .unwrap(
            &lockbox_kms::WrappedKey {
                provider: "vault-transit".into(),
                key_id: "transit/k".into(),
                wrapped: b"vault:v1:x".to_vec(),
            },
            &c,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { .. }), "{e}");
    assert_eq!(f.hits.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn refusals_are_not_retried() {
    let f = fault_server(Fault::Status(403)).await;
    let e = aws(&f.addr, "k")
        .generate_data_key(&ctx(&[]))
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::Rejected { status: 403, .. }), "{e}");
    assert_eq!(f.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn slow_provider_times_out_per_attempt() {
    let f = fault_server(Fault::Slow(Duration::from_secs(30))).await;
    let mut cfg = lockbox_kms::AwsKmsConfig {
        key_id: "k".into(),
        region: REGION.into(),
        endpoint: Some(f.addr.clone()),
        credentials: lockbox_kms::AwsCredentials::new("a", "b", None),
        retry: fast_retry(),
    };
    cfg.retry = RetryPolicy {
        max_attempts: 2,
        timeout: Duration::from_millis(300),
        ..fast_retry()
    };
    let p = lockbox_kms::AwsKmsProvider::new(cfg).unwrap();
    let t0 = Instant::now();
    let e = p.generate_data_key(&ctx(&[])).await.unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(e, KmsError::Unavailable { attempts: 2, .. }),
        "{e}"
    );
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// With two KEKs and the second down, no envelope is produced at all (an
/// envelope the second KEK could not open would be a partial write).
#[tokio::test]
async fn no_partial_envelope_when_one_kek_fails() {
    let f = fault_server(Fault::Status(503)).await;
    let root: Arc<dyn Provider> =
        Arc::new(RootKeyProvider::new(&SecretBytes::random(32).unwrap(), "r").unwrap());
    let down: Arc<dyn Provider> = Arc::new(aws(&f.addr, "k"));
    let env = Envelope::new(vec![root, down]).unwrap();
    let e = env.encrypt("", &ctx(&[]), b"x").await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { .. }), "{e}");
}

/// A warm cache keeps serving while the provider is down, but only within
/// its bounds: past max_messages it needs the provider again and fails clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_serves_within_bounds_while_provider_down() {
    let moto = moto();
    let arn = create_key(&moto.endpoint);
    let cache = Arc::new(CachingMaterials::new(
        CacheLimits::new(Duration::from_secs(300), 5, 1 << 20, 8).unwrap(),
    ));
    let env = Envelope::new(vec![
        Arc::new(aws(&moto.endpoint, &arn)) as Arc<dyn Provider>
    ])
    .unwrap()
    .with_cache(cache);
    let c = ctx(&[("t", "1")]);
    let first = env.encrypt("t", &c, b"m0").await.unwrap();
    assert_eq!(env.decrypt("t", &first, Some(&c)).await.unwrap().0, b"m0");
    drop(moto); // the provider goes away
    let mut cts = Vec::new();
    for i in 1..5 {
        cts.push(
            env.encrypt("t", &c, format!("m{i}").as_bytes())
                .await
                .unwrap(),
        );
    }
    for (i, ct) in cts.iter().enumerate() {
        assert_eq!(
            env.decrypt("t", ct, Some(&c)).await.unwrap().0,
            format!("m{}", i + 1).as_bytes()
        );
    }
    // The 6th message would exceed max_messages = 5: a new key is needed.
    let e = env.encrypt("t", &c, b"m5").await.unwrap_err();
    assert!(matches!(e, KmsError::Unavailable { .. }), "{e}");
    assert_eq!(env.stats().provider_calls, 3, "{:?}", env.stats());
}
