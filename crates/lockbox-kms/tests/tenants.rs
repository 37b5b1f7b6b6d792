//! Tenants: per-tenant KEKs, isolation (swapped tokens, contexts, rows and
//! tenants all fail), and crypto-shredding end to end with audit evidence.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use lockbox_core::audit::{self, AuditChain};
use lockbox_core::SecretBytes;
use lockbox_engine::CreateOptions;
use lockbox_kms::{
    CacheLimits, CachingMaterials, Envelope, KmsError, LocalProvider, Provider, Tenants,
};

fn cache() -> Arc<CachingMaterials> {
    Arc::new(CachingMaterials::new(
        CacheLimits::new(Duration::from_secs(300), 1000, 1 << 20, 64).unwrap(),
    ))
}

#[tokio::test]
async fn tenants_are_isolated() {
    let te = engine().await;
    let t = Tenants::new(te.engine.clone(), Some(cache()));
    let row = |id: &str| ctx(&[("table", "users"), ("column", "ssn"), ("row", id)]);
    let a1 = t.encrypt("a", &row("1"), b"A-1").await.unwrap();
    let a2 = t.encrypt("a", &row("2"), b"A-2").await.unwrap();
    let b1 = t.encrypt("b", &row("1"), b"B-1").await.unwrap();
    assert_eq!(t.decrypt("a", &a1, &row("1")).await.unwrap(), b"A-1");
    assert_eq!(t.decrypt("a", &a2, &row("2")).await.unwrap(), b"A-2");
    assert_eq!(t.decrypt("b", &b1, &row("1")).await.unwrap(), b"B-1");
    // Each tenant has its own KEK.
    let ha = lockbox_core::envelope::parse_text(&a1).unwrap().header;
    let hb = lockbox_core::envelope::parse_text(&b1).unwrap().header;
    assert_eq!(ha.wrapped_keys[0].key_id, "tenant-a");
    assert_eq!(hb.wrapped_keys[0].key_id, "tenant-b");
    // Swap rows within a tenant: the context no longer matches.
    assert!(matches!(
        t.decrypt("a", &a1, &row("2")).await.unwrap_err(),
        KmsError::AuthenticationFailed
    ));
    // Swap between tenants (same row id): fails, whichever way.
    assert!(t.decrypt("b", &a1, &row("1")).await.is_err());
    assert!(t.decrypt("a", &b1, &row("1")).await.is_err());

    // Below the Tenants layer: tenant B's KEK, given A's envelope and even
    // A's exact context, cannot unwrap A's data key.
    let kb: Arc<dyn Provider> = Arc::new(LocalProvider::new(te.engine.clone(), "tenant-b"));
    let mut w = ha.wrapped_keys[0].clone();
    assert!(kb.unwrap(&w, &ha.context).await.is_err());
    w.key_id = "tenant-b".into(); // relabelled: still A's ciphertext under B's key
    assert!(kb.unwrap(&w, &ha.context).await.is_err());
    // And A's KEK refuses its own wrapped key under another context (the
    // context is the wrap's associated data), so a forged header fails too.
    let ka: Arc<dyn Provider> = Arc::new(LocalProvider::new(te.engine.clone(), "tenant-a"));
    let mut forged = ha.context.clone();
    forged.insert("row".into(), "2".into());
    assert!(matches!(
        ka.unwrap(&ha.wrapped_keys[0], &forged).await.unwrap_err(),
        KmsError::AuthenticationFailed
    ));
    // Reserved key and bad tenant ids are refused clearly.
    let bad = ctx(&[("lockbox:tenant", "b")]);
    assert!(matches!(
        t.encrypt("a", &bad, b"x").await.unwrap_err(),
        KmsError::Config(_)
    ));
    assert!(matches!(
        t.encrypt("../x", &row("1"), b"x").await.unwrap_err(),
        KmsError::Config(_)
    ));
}

/// A derived Lockbox key as KEK: one key, a KEK derived per context.
#[tokio::test]
async fn derived_kek_per_context() {
    let te = engine().await;
    te.engine
        .create_key(
            "derived",
            &CreateOptions {
                derived: true,
                ..CreateOptions::default()
            },
        )
        .await
        .unwrap();
    let p: Arc<dyn Provider> = Arc::new(LocalProvider::derived(te.engine.clone(), "derived"));
    p.health().await.unwrap();
    let env = Envelope::new(vec![p.clone()]).unwrap();
    let ca = ctx(&[("tenant", "a")]);
    let ct = env.encrypt("a", &ca, b"x").await.unwrap();
    assert_eq!(env.decrypt("a", &ct, Some(&ca)).await.unwrap().0, b"x");
    let w = &lockbox_core::envelope::parse_text(&ct)
        .unwrap()
        .header
        .wrapped_keys[0];
    assert!(p.unwrap(w, &ctx(&[("tenant", "b")])).await.is_err());
    // The non-derived constructor on a derived key is a configuration error.
    let wrong = LocalProvider::new(te.engine.clone(), "derived");
    assert!(matches!(
        wrong.health().await.unwrap_err(),
        KmsError::Config(_)
    ));
}

#[tokio::test]
async fn crypto_shredding_end_to_end() {
    let te = engine().await;
    let c = cache();
    // The audit hook writes to a tamper-evident chain, as the server's
    // audit log will.
    let audit_key = SecretBytes::random(32).unwrap();
    let chain = Arc::new(Mutex::new((
        AuditChain::new(&audit_key).unwrap(),
        Vec::<String>::new(),
    )));
    let sink = chain.clone();
    let t = Tenants::new(te.engine.clone(), Some(c.clone())).with_audit_hook(Arc::new(
        move |ev: &lockbox_kms::KmsEvent| {
            let mut g = sink.lock().unwrap();
            let line = g.0.append(ev.to_json()).unwrap();
            g.1.push(line);
        },
    ));
    let mut rows = Vec::new();
    for i in 0..20 {
        let cx = ctx(&[("row", &i.to_string())]);
        rows.push((
            cx.clone(),
            t.encrypt("doomed", &cx, b"secret").await.unwrap(),
        ));
    }
    let keep_ctx = ctx(&[("row", "0")]);
    let keep = t.encrypt("survivor", &keep_ctx, b"kept").await.unwrap();
    // Warm the decrypt cache too.
    for (cx, ct) in &rows {
        assert_eq!(t.decrypt("doomed", ct, cx).await.unwrap(), b"secret");
    }
    assert!(c.len().0 > 0 && c.len().1 > 0);

    let ev = t.shred("doomed", "alice").await.unwrap();
    assert_eq!(ev.kind, "TENANT_KEY_DESTROYED");
    assert_eq!(ev.key, "local:tenant-doomed");
    assert!(ev.purged_cache_entries >= 2, "{ev:?}");

    // Every envelope of the tenant is now undecryptable, with a clear error
    // (the decrypt cache was purged, so nothing is served from it).
    for (cx, ct) in &rows {
        let e = t.decrypt("doomed", ct, cx).await.unwrap_err();
        assert!(matches!(e, KmsError::KeyDestroyed(_)), "{e}");
    }
    // Even straight from the engine with the right context.
    let p = LocalProvider::new(te.engine.clone(), "tenant-doomed");
    let h = lockbox_core::envelope::parse_text(&rows[0].1)
        .unwrap()
        .header;
    assert!(p.unwrap(&h.wrapped_keys[0], &h.context).await.is_err());
    // New data for the tenant cannot be written either.
    assert!(t.encrypt("doomed", &keep_ctx, b"x").await.is_err());
    // Other tenants are untouched.
    assert_eq!(
        t.decrypt("survivor", &keep, &keep_ctx).await.unwrap(),
        b"kept"
    );
    // The engine records who destroyed it.
    let info = te.engine.read_key("tenant-doomed").await.unwrap();
    assert_eq!(info.destroyed_by.as_deref(), Some("alice"));
    assert!(info.destroyed_at.is_some());

    // Audit evidence: one entry, the chain verifies, and it names the tenant.
    let g = chain.lock().unwrap();
    assert_eq!(g.1.len(), 1);
    let report = audit::verify(&audit_key, g.1.iter().map(String::as_str)).unwrap();
    assert_eq!(report.entries, 1);
    let entry: serde_json::Value = serde_json::from_str(&g.1[0]).unwrap();
    assert_eq!(entry["event"], "TENANT_KEY_DESTROYED");
    assert_eq!(entry["tenant"], "doomed");
    assert_eq!(entry["by"], "alice");
}
