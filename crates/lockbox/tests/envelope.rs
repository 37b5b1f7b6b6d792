//! Envelope encryption end to end: the Vault Transit provider against a
//! second real `lockbox serve`, the server's envelope endpoints, and the
//! `lockbox envelope` CLI (local store and server).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::Arc;

use lockbox::kms::{
    Context, Envelope, KmsError, Provider, RootKeyProvider, VaultTransitConfig,
    VaultTransitProvider,
};
use lockbox::SecretBytes;
use serde_json::{json, Value};

fn ctx(pairs: &[(&str, &str)]) -> Context {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn post(addr: &str, token: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{addr}/v1/{path}"))
        .header("X-Vault-Token", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let t = r.text().await.unwrap();
    (s, serde_json::from_str(&t).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_provider_against_a_second_lockbox() {
    let kms = common::start(&["--dev", "--dev-root-token", "kms-root"], &[]);
    let (s, _) = post(
        &kms.addr,
        "kms-root",
        "transit/keys/kek",
        json!({"derived": true}),
    )
    .await;
    assert!(s == 200 || s == 204, "{s}");
    let p =
        VaultTransitProvider::new(VaultTransitConfig::new(&kms.addr, "kms-root", "kek")).unwrap();
    p.health().await.unwrap();
    let c = ctx(&[("tenant", "acme"), ("row", "9")]);
    let dk = p.generate_data_key(&c).await.unwrap();
    assert_eq!(dk.plaintext.len(), 32);
    assert!(dk.wrapped.wrapped.starts_with(b"vault:v1:"));
    assert_eq!(p.unwrap(&dk.wrapped, &c).await.unwrap(), dk.plaintext);
    // The remote server derives a KEK per context: another context fails.
    let e = p
        .unwrap(&dk.wrapped, &ctx(&[("tenant", "evil"), ("row", "9")]))
        .await
        .unwrap_err();
    assert!(matches!(e, KmsError::AuthenticationFailed), "{e}");
    // Wrap an existing key (encrypt), unwrap it back.
    let k = SecretBytes::random(32).unwrap();
    let w = p.wrap(&k, &c).await.unwrap();
    assert_eq!(p.unwrap(&w, &c).await.unwrap(), k);
    // A bad token is refused at once, with the server's message.
    let bad =
        VaultTransitProvider::new(VaultTransitConfig::new(&kms.addr, "wrong", "kek")).unwrap();
    let e = bad.generate_data_key(&c).await.unwrap_err();
    assert!(matches!(e, KmsError::Rejected { status: 403, .. }), "{e}");

    // Envelopes under Transit and a local root key; each alone decrypts.
    let transit: Arc<dyn Provider> = Arc::new(p);
    let root: Arc<dyn Provider> =
        Arc::new(RootKeyProvider::new(&SecretBytes::random(32).unwrap(), "root").unwrap());
    let env = Envelope::new(vec![transit.clone(), root.clone()]).unwrap();
    let ct = env.encrypt("", &c, b"payload").await.unwrap();
    assert_eq!(env.stats().provider_calls, 2);
    let only_transit = Envelope::new(vec![transit]).unwrap();
    assert_eq!(
        only_transit.decrypt("", &ct, Some(&c)).await.unwrap().0,
        b"payload"
    );
    // With the Transit server gone, the root key still decrypts.
    drop(kms);
    assert!(matches!(
        only_transit.decrypt("", &ct, None).await.unwrap_err(),
        KmsError::Unavailable { .. }
    ));
    let only_root = Envelope::new(vec![root]).unwrap();
    assert_eq!(
        only_root.decrypt("", &ct, None).await.unwrap().0,
        b"payload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_envelope_endpoints() {
    let s = common::start(&["--dev", "--dev-root-token", "root"], &[]);
    let (a, t) = (s.addr.as_str(), "root");
    post(a, t, "transit/keys/env", json!({})).await;
    let (st, v) = post(
        a,
        t,
        "lockbox/envelope/encrypt",
        json!({"key": "env", "plaintext": "aGVsbG8=", "context": {"table": "users", "row": "1"}}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(ct.starts_with("lbxe1:"));
    let (st, v) = post(
        a,
        t,
        "lockbox/envelope/decrypt",
        json!({"key": "env", "ciphertext": ct}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"]["plaintext"], "aGVsbG8=");
    assert_eq!(v["data"]["context"], json!({"table": "users", "row": "1"}));
    // Moved to another row: refused.
    let (st, v) = post(
        a,
        t,
        "lockbox/envelope/decrypt",
        json!({"key": "env", "ciphertext": ct, "context": {"table": "users", "row": "2"}}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["errors"][0], "authentication failed");

    // Tenants: each gets its own key; swapping fails.
    let enc =
        |tenant: &str| json!({"tenant": tenant, "plaintext": "c2VjcmV0", "context": {"row": "1"}});
    let (_, va) = post(a, t, "lockbox/envelope/encrypt", enc("acme")).await;
    let (_, vb) = post(a, t, "lockbox/envelope/encrypt", enc("globex")).await;
    let cta = va["data"]["ciphertext"].as_str().unwrap();
    let ctb = vb["data"]["ciphertext"].as_str().unwrap();
    let dec = |tenant: &str, ct: &str| json!({"tenant": tenant, "ciphertext": ct, "context": {"row": "1"}});
    let (st, v) = post(a, t, "lockbox/envelope/decrypt", dec("acme", cta)).await;
    assert_eq!(
        (st, v["data"]["plaintext"].clone()),
        (200, json!("c2VjcmV0"))
    );
    let (st, _) = post(a, t, "lockbox/envelope/decrypt", dec("acme", ctb)).await;
    assert_eq!(st, 400);
    let (st, _) = post(a, t, "lockbox/envelope/decrypt", dec("globex", cta)).await;
    assert_eq!(st, 400);
    // The tenant's key is a Lockbox key like any other.
    let r = reqwest::Client::new()
        .get(format!("{a}/v1/transit/keys/tenant-acme"))
        .header("X-Vault-Token", t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Bad input: 4xx with a JSON error, never a 500.
    for (path, body) in [
        ("encrypt", json!({"key": "env"})),
        (
            "encrypt",
            json!({"key": "env", "tenant": "x", "plaintext": ""}),
        ),
        ("encrypt", json!({"plaintext": "aGk="})),
        ("encrypt", json!({"key": "env", "plaintext": "not base64!"})),
        (
            "encrypt",
            json!({"key": "env", "plaintext": "aGk=", "context": "row=1"}),
        ),
        (
            "encrypt",
            json!({"key": "env", "plaintext": "aGk=", "context": {"row": 1}}),
        ),
        (
            "encrypt",
            json!({"key": "env", "plaintext": "aGk=", "context": {"": "x"}}),
        ),
        ("encrypt", json!({"tenant": "../etc", "plaintext": "aGk="})),
        (
            "encrypt",
            json!({"tenant": "a", "plaintext": "aGk=", "context": {"lockbox:tenant": "b"}}),
        ),
        (
            "encrypt",
            json!({"key": "no-such-key", "plaintext": "aGk="}),
        ),
        ("decrypt", json!({"key": "env"})),
        ("decrypt", json!({"key": "env", "ciphertext": "lbxe1:AAAA"})),
        (
            "decrypt",
            json!({"key": "env", "ciphertext": "vault:v1:abc"}),
        ),
        ("decrypt", json!({"key": "env", "ciphertext": "lbxe1:***"})),
        ("nothing", json!({})),
    ] {
        let (st, v) = post(a, t, &format!("lockbox/envelope/{path}"), body.clone()).await;
        assert!((400..500).contains(&st), "{path} {body}: {st} {v}");
        assert!(v["errors"][0].is_string(), "{path} {body}: {v}");
    }
    let (st, _) = post(a, "wrong-token", "lockbox/envelope/encrypt", enc("acme")).await;
    assert_eq!(st, 403);
}

fn cli(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let o = common::run(args, env, stdin);
    (
        o.status.success(),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn cli_envelope_local_and_remote() {
    let dir = std::env::temp_dir().join(format!("lockbox-env-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("l.db").display());
    let mk = String::from_utf8(cli(&["keygen-master"], &[], b"").1).unwrap();
    let env = [("LOCKBOX_MASTER_KEY", mk.trim())];
    let (ok, ct, err) = cli(
        &[
            "--store",
            &store,
            "envelope",
            "encrypt",
            "--tenant",
            "acme",
            "--context",
            "row=1",
        ],
        &env,
        b"card 4242",
    );
    assert!(ok, "{err}");
    let ct = String::from_utf8(ct).unwrap();
    assert!(ct.starts_with("lbxe1:"));
    let (ok, pt, err) = cli(
        &[
            "--store",
            &store,
            "envelope",
            "decrypt",
            "--tenant",
            "acme",
            "--context",
            "row=1",
        ],
        &env,
        ct.as_bytes(),
    );
    assert!(ok, "{err}");
    assert_eq!(pt, b"card 4242");
    let (ok, _, err) = cli(
        &[
            "--store",
            &store,
            "envelope",
            "decrypt",
            "--tenant",
            "acme",
            "--context",
            "row=2",
        ],
        &env,
        ct.as_bytes(),
    );
    assert!(!ok);
    assert!(err.contains("authentication failed"), "{err}");
    let (ok, _, err) = cli(
        &[
            "--store", &store, "envelope", "decrypt", "--tenant", "globex",
        ],
        &env,
        ct.as_bytes(),
    );
    assert!(!ok);
    assert!(err.contains("no configured key provider"), "{err}");
    let (ok, _, err) = cli(
        &["--store", &store, "envelope", "encrypt", "--context", "x"],
        &env,
        b"",
    );
    assert!(!ok);
    assert!(
        err.contains("KEY=VALUE") || err.contains("which key"),
        "{err}"
    );

    // Remote: the server does the work.
    let s = common::start(&["--dev", "--dev-root-token", "root"], &[]);
    let renv = [("LOCKBOX_ADDR", s.addr.as_str()), ("LOCKBOX_TOKEN", "root")];
    let (ok, ct, err) = cli(
        &[
            "envelope",
            "encrypt",
            "--tenant",
            "acme",
            "--context",
            "doc=7",
        ],
        &renv,
        b"remote secret",
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli(
        &["--json", "envelope", "decrypt", "--tenant", "acme"],
        &renv,
        &ct,
    );
    assert!(ok, "{err}");
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["context"], json!({"doc": "7", "lockbox:tenant": "acme"}));
    let (ok, _, err) = cli(&["envelope", "decrypt", "--tenant", "globex"], &renv, &ct);
    assert!(!ok, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Auto-unseal: the master key is held by a Transit server (another
/// Lockbox), as Vault's auto-unseal holds it in a cloud KMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_unseal_with_transit() {
    let kms = common::start(&["--dev", "--dev-root-token", "kr"], &[]);
    post(
        &kms.addr,
        "kr",
        "transit/keys/unseal",
        json!({"derived": true}),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("lockbox-autounseal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("l.db").display());
    let master = String::from_utf8(cli(&["keygen-master"], &[], b"").1).unwrap();
    // Initialize the store under the master key, with one key in it.
    let (ok, _, err) = cli(
        &["--store", &store, "keys", "create", "k"],
        &[("LOCKBOX_MASTER_KEY", master.trim())],
        b"",
    );
    assert!(ok, "{err}");
    // Wrap the master key for auto-unseal under the Transit key.
    let transit: Arc<dyn Provider> = Arc::new(
        VaultTransitProvider::new(VaultTransitConfig::new(&kms.addr, "kr", "unseal")).unwrap(),
    );
    let env = Envelope::new(vec![transit]).unwrap();
    let purpose = ctx(&[("purpose", "lockbox-root-key")]);
    let wrap = |m: &str| {
        let env = &env;
        let purpose = &purpose;
        let m = m.to_owned();
        async move { env.encrypt("", purpose, m.as_bytes()).await.unwrap() }
    };
    let good = dir.join("root.env");
    std::fs::write(&good, wrap(&master).await).unwrap();
    let args = |f: &std::path::Path| {
        vec![
            "--store".to_owned(),
            store.clone(),
            "--auto-unseal".to_owned(),
            f.display().to_string(),
            "--auto-unseal-transit-addr".to_owned(),
            kms.addr.clone(),
            "--auto-unseal-transit-key".to_owned(),
            "unseal".to_owned(),
        ]
    };
    let a = args(&good);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    for _ in 0..2 {
        // Unsealed at start, and again after a restart.
        let s = common::start(&a, &[("LOCKBOX_AUTO_UNSEAL_TRANSIT_TOKEN", "kr")]);
        let v: Value = reqwest::get(format!("{}/v1/sys/seal-status", s.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["sealed"], false, "{v}");
        assert_eq!(v["initialized"], true, "{v}");
    }
    // Failures stop the server with a clear message, never a sealed half-start:
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lockbox"));
        common::clean_env(&mut c)
            .arg("serve")
            .args(extra)
            .args(["--listen", "127.0.0.1:0"]);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // the envelope of another master key,
    let other = String::from_utf8(cli(&["keygen-master"], &[], b"").1).unwrap();
    let bad = dir.join("other.env");
    std::fs::write(&bad, wrap(&other).await).unwrap();
    let b = args(&bad);
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let err = run(&b, &[("LOCKBOX_AUTO_UNSEAL_TRANSIT_TOKEN", "kr")]);
    assert!(err.contains("wrong master key"), "{err}");
    // a wrong token,
    let err = run(&a, &[("LOCKBOX_AUTO_UNSEAL_TRANSIT_TOKEN", "nope")]);
    assert!(err.contains("refused") && err.contains("403"), "{err}");
    // no token,
    let err = run(&a, &[]);
    assert!(err.contains("LOCKBOX_AUTO_UNSEAL_TRANSIT_TOKEN"), "{err}");
    // and the Transit server gone.
    drop(kms);
    let err = run(&a, &[("LOCKBOX_AUTO_UNSEAL_TRANSIT_TOKEN", "kr")]);
    assert!(err.contains("unavailable"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Envelope requests were counted as operation "other": they never reached
/// `encryption_operations_total` nor the decryption-failure alert.
#[tokio::test]
async fn envelope_requests_are_counted_in_metrics() {
    let srv = common::dev("env-metrics-root", &[], &[]);
    let api = common::Api::new(&srv.addr, "env-metrics-root");
    api.root("POST", "transit/keys/wrap", json!({})).await;
    let v = api
        .root(
            "POST",
            "lockbox/envelope/encrypt",
            json!({"key": "wrap", "plaintext": "aGk="}),
        )
        .await;
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    api.root(
        "POST",
        "lockbox/envelope/decrypt",
        json!({"key": "wrap", "ciphertext": ct}),
    )
    .await;
    let (_, m) = api
        .call(Some("env-metrics-root"), "GET", "sys/metrics", Value::Null)
        .await;
    let text = m.as_str().unwrap();
    for line in [
        "encryption_operations_total{type=\"lockbox.envelope.encrypt\",key=\"wrap\"} 1",
        "encryption_operations_total{type=\"lockbox.envelope.decrypt\",key=\"wrap\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing in:\n{text}");
    }
}
