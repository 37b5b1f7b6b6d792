//! Findings of the adversarial review that are about cost rather than
//! grants: what a client without a token, or with a weak one, can make the
//! server spend (CPU, memory, audit disk), and what the audit trail says
//! of requests an attacker shapes. (Grants are in acl_model.rs and authz.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::Api;
use serde_json::{json, Value};

const ROOT: &str = "root-token-for-adversary";

fn dev_server(extra: &[&str]) -> common::Server {
    common::dev(ROOT, extra, &[])
}

fn host(addr: &str) -> &str {
    addr.trim_start_matches("http://")
}

/// Sends `head` and then only `sent` bytes of a body announced as
/// `announced` bytes, and reads the answer: the status, or `None` if the
/// server does not answer within `wait`.
fn partial_request(
    addr: &str,
    head: &str,
    announced: usize,
    sent: usize,
    wait: Duration,
) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(host(addr)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let req = format!("{head}\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {announced}\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(&vec![b' '; sent]).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Finding 10: the token is checked from the headers before the body is
/// read, so a large body without a valid token is refused at once — the
/// server does not wait for (or buffer, or parse) the 30 MB announced.
#[test]
fn a_body_without_a_valid_token_is_never_read() {
    let srv = dev_server(&[]);
    for head in [
        "POST /v1/transit/encrypt/k HTTP/1.1",
        "POST /v1/transit/encrypt/k HTTP/1.1\r\nX-Vault-Token: lbs.not-a-token",
        "POST /v1/lockbox/records/encrypt HTTP/1.1",
    ] {
        let got = partial_request(&srv.addr, head, 30 << 20, 1024, Duration::from_secs(5));
        assert_eq!(got, Some(403), "{head}");
    }
    // A valid token whose policy does not grant the path is refused before
    // the body as well.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = Api::new(&srv.addr, ROOT);
    let weak = rt.block_on(async {
        api.root(
            "PUT",
            "sys/policies/acl/nothing",
            json!({"policy": "path \"nowhere/*\" { capabilities = [\"read\"] }"}),
        )
        .await;
        api.token(&["nothing"]).await
    });
    let head = format!("POST /v1/transit/encrypt/k HTTP/1.1\r\nX-Vault-Token: {weak}");
    let got = partial_request(&srv.addr, &head, 30 << 20, 1024, Duration::from_secs(5));
    assert_eq!(got, Some(403));
    // With the root token the body is awaited: no answer while it is incomplete.
    let head = format!("POST /v1/transit/encrypt/k HTTP/1.1\r\nX-Vault-Token: {ROOT}");
    let got = partial_request(&srv.addr, &head, 30 << 20, 1024, Duration::from_millis(500));
    assert_eq!(got, None);
}

/// A dev server with an audit file (and `extra`), its log's path, a client,
/// and a key `k`.
async fn audited_server(extra: &[&str]) -> (common::Server, std::path::PathBuf, Api) {
    let log = common::tmpdir("lockbox-adversary").join("audit.log");
    let mut args = vec!["--audit-file", log.to_str().unwrap()];
    args.extend_from_slice(extra);
    let srv = dev_server(&args);
    let api = Api::new(&srv.addr, ROOT);
    api.root("POST", "transit/keys/k", json!({})).await;
    (srv, log, api)
}

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Finding 4: a 60 000-character key name in the path was written twice
/// per audit entry (~120 KB per unauthenticated request). Entries now keep
/// at most 256 bytes of any caller-chosen name, with a hash of the rest.
#[tokio::test]
async fn long_names_cannot_fill_the_audit_log() {
    let (_srv, log, api) = audited_server(&["--unauthenticated-rate-limit", "0"]).await;
    let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let long = "a".repeat(60_000);
    for _ in 0..50 {
        let (s, _) = api
            .call(
                None,
                "POST",
                &format!("transit/encrypt/{long}"),
                json!({"plaintext": ""}),
            )
            .await;
        assert_eq!(s, 403);
        let (s, _) = api
            .call(
                Some(ROOT),
                "POST",
                "lockbox/records/encrypt",
                json!({"key": long, "tenant": long, "fields": ["x"], "record": {}}),
            )
            .await;
        assert_eq!(s, 400);
    }
    // Let the writer flush its last batch.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = std::fs::metadata(&log).unwrap().len() - before;
    assert!(grown < 100 * 2048, "100 entries took {grown} bytes");
    let lines = audit_lines(&log);
    let refused: Vec<&Value> = lines.iter().filter(|l| l["status"] == 403).collect();
    assert_eq!(refused.len(), 50);
    let path = refused[0]["path"].as_str().unwrap();
    assert!(path.len() <= 256 + 20 && path.contains('…'), "{path}");
    // The same long name gives the same bounded text: entries still compare.
    assert_eq!(refused[1]["path"], refused[0]["path"]);
}

/// Unauthenticated requests are limited per client address: past the
/// budget they get 429 and leave no audit entry, while a
/// valid token from the same address is served as usual.
#[tokio::test]
async fn unauthenticated_floods_are_cut_off_per_address() {
    let (_srv, log, api) = audited_server(&["--unauthenticated-rate-limit", "5"]).await;
    let mut statuses = Vec::new();
    for i in 0..60 {
        let token = if i % 2 == 0 { None } else { Some("lbs.wrong") };
        let (s, _) = api
            .call(token, "POST", "transit/encrypt/k", json!({"plaintext": ""}))
            .await;
        statuses.push(s);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    let refused = statuses.iter().filter(|s| **s == 403).count();
    assert_eq!(limited + refused, 60, "{statuses:?}");
    assert!(limited >= 40, "{statuses:?}");
    let (s, _) = api
        .call(
            Some(ROOT),
            "POST",
            "transit/encrypt/k",
            json!({"plaintext": "aGk="}),
        )
        .await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = audit_lines(&log);
    assert_eq!(lines.iter().filter(|l| l["status"] == 429).count(), 0);
    assert_eq!(lines.iter().filter(|l| l["status"] == 403).count(), refused);
}

/// Finding 5: one record with 100 000 fields took 27 s of CPU (the work
/// grew with the square of the field count). The field count is bounded
/// like a batch, and the work per field is constant.
#[tokio::test]
async fn record_work_grows_linearly_and_is_bounded() {
    let srv = dev_server(&[]);
    let api = Api::new(&srv.addr, ROOT);
    api.root("POST", "transit/keys/k", json!({})).await;
    let record = |n: usize| {
        let fields: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
        let rec: serde_json::Map<String, Value> =
            fields.iter().map(|f| (f.clone(), json!("v"))).collect();
        json!({"key": "k", "tenant": "t", "fields": fields, "record": rec})
    };
    let t = Instant::now();
    let (s, v) = api
        .call(
            Some(ROOT),
            "POST",
            "lockbox/records/encrypt",
            record(100_000),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("at most 10000 fields"), "{v}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let time = |n: usize| {
        let body = record(n);
        let api = &api;
        async move {
            let t = Instant::now();
            let (s, v) = api
                .call(Some(ROOT), "POST", "lockbox/records/encrypt", body)
                .await;
            assert_eq!(s, 200, "{v}");
            t.elapsed()
        }
    };
    time(1_000).await;
    let small = time(2_500).await;
    let large = time(10_000).await;
    // Four times the fields: about four times the time (the square: 16).
    let ratio = large.as_secs_f64() / small.as_secs_f64();
    assert!(
        ratio < 10.0,
        "2 500 fields {small:?}, 10 000 fields {large:?}"
    );
}

/// Finding 14: the audit entry of a native decrypt named no key; it names
/// the key of the ciphertext now (authorized before decryption).
#[tokio::test]
async fn native_decrypt_is_audited_with_its_key() {
    let dir = common::tmpdir("lockbox-adversary");
    let log = dir.join("audit.log");
    let srv = dev_server(&["--audit-file", log.to_str().unwrap()]);
    let api = Api::new(&srv.addr, ROOT);
    api.root("POST", "transit/keys/payroll", json!({})).await;
    let v = api
        .root(
            "POST",
            "lockbox/encrypt/payroll",
            json!({"plaintext": "aGk="}),
        )
        .await;
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    let v = api
        .root("POST", "lockbox/decrypt", json!({"ciphertext": ct}))
        .await;
    assert_eq!(v["data"]["key"], "payroll");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = audit_lines(&log);
    let entry = lines
        .iter()
        .find(|l| l["path"] == "lockbox/decrypt")
        .expect("an entry for the decrypt");
    assert_eq!(entry["key"], "payroll", "{entry}");
}

/// Found by the model-based test: `{"role": "admin", "keys": "db-*"}` was
/// stored as the unscoped admin policy (every path, sudo). It is refused;
/// and the unauthenticated probes answer only their own methods (any
/// other is an authenticated request: 403 without a token).
#[tokio::test]
async fn admin_cannot_be_scoped_and_probes_take_only_their_methods() {
    let srv = dev_server(&[]);
    let api = Api::new(&srv.addr, ROOT);
    let (s, v) = api
        .call(
            Some(ROOT),
            "PUT",
            "sys/policies/acl/db-admin",
            json!({"role": "admin", "keys": "db-*"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("cannot be scoped"), "{v}");
    for (method, path, want) in [
        ("GET", "sys/health", 200),
        ("HEAD", "sys/health", 200),
        ("DELETE", "sys/health", 403),
        ("POST", "sys/seal-status", 403),
        ("LIST", "sys/seal-status", 403),
        ("GET", "sys/unseal", 403),
        ("PUT", "openapi.json", 403),
    ] {
        assert_eq!(
            api.call(None, method, path, Value::Null).await.0,
            want,
            "{method} {path}"
        );
    }
}

/// Found by the attack on this code (F5): a restore without a name took
/// the name inside the backup as it was, so a token with sudo on one
/// mount's `restore` planted keys — with material it chose — in the
/// default namespace or in another mount. Unnamed restores now land in the
/// mount they were sent to, and a backup naming another mount is refused.
#[tokio::test]
async fn an_unnamed_restore_lands_in_its_own_mount() {
    let srv = dev_server(&[]);
    let api = Api::new(&srv.addr, ROOT);
    for m in ["m2", "m3x"] {
        api.root(
            "POST",
            &format!("sys/mounts/{m}"),
            json!({"type": "transit"}),
        )
        .await;
    }
    let backup_then_delete = |path: &'static str| {
        let api = &api;
        async move {
            api.root(
                "POST",
                path,
                json!({"allow_plaintext_backup": true, "exportable": true}),
            )
            .await;
            let (mount, name) = path.split_once("/keys/").unwrap();
            let v = api
                .root("GET", &format!("{mount}/backup/{name}"), Value::Null)
                .await;
            api.root(
                "POST",
                &format!("{path}/config"),
                json!({"deletion_allowed": true}),
            )
            .await;
            api.root("DELETE", path, Value::Null).await;
            v["data"]["backup"].as_str().unwrap().to_owned()
        }
    };
    let plain = backup_then_delete("transit/keys/src1").await;
    let foreign = backup_then_delete("m3x/keys/planted").await;
    api.root(
        "PUT",
        "sys/policies/acl/m2-restore",
        json!({"policy": "path \"m2/restore\" { capabilities = [\"update\", \"sudo\"] }"}),
    )
    .await;
    let t = api.token(&["m2-restore"]).await;
    let (s, v) = api
        .call(Some(&t), "POST", "m2/restore", json!({"backup": plain}))
        .await;
    assert_eq!(s, 204, "{v}");
    // 200 for a live key; a deleted (or never made) one does not count.
    let status = |p: &'static str| {
        let api = &api;
        async move {
            let (s, v) = api.call(Some(ROOT), "GET", p, Value::Null).await;
            if s == 200 && v["data"]["deleted"] == true {
                404
            } else {
                s
            }
        }
    };
    assert_eq!(status("m2/keys/src1").await, 200);
    assert_eq!(status("transit/keys/src1").await, 404);
    let (s, v) = api
        .call(Some(&t), "POST", "m2/restore", json!({"backup": foreign}))
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(status("m3x/keys/planted").await, 404);
    // Through the default mount and the native API alike.
    for path in ["transit/restore", "lockbox/restore"] {
        let (s, v) = api
            .call(Some(ROOT), "POST", path, json!({"backup": foreign}))
            .await;
        assert_eq!(s, 400, "{path}: {v}");
    }
    assert_eq!(status("m3x/keys/planted").await, 404);
}

/// Found by the attack (F1, F8): forged native headers. Each unknown key
/// id made the server reload every key; a header naming a mount's key was
/// answered with that key's name. Reloads on a miss are now at most one a
/// second, and the mount key is refused without being named.
#[tokio::test]
async fn forged_native_headers_cost_little_and_name_nothing() {
    use base64::Engine as _;
    let srv = dev_server(&[]);
    let api = Api::new(&srv.addr, ROOT);
    api.root("POST", "sys/mounts/m2", json!({"type": "transit"}))
        .await;
    api.root("POST", "transit/keys/own", json!({})).await;
    api.root("POST", "m2/keys/hidden", json!({})).await;
    for k in 0..100 {
        api.root("POST", &format!("transit/keys/filler-{k}"), json!({}))
            .await;
    }
    api.root(
        "PUT",
        "sys/policies/acl/own",
        json!({"role": "app", "keys": "own"}),
    )
    .await;
    let t = api.token(&["own"]).await;
    let ct = api
        .root("POST", "lockbox/encrypt/own", json!({"plaintext": "aGk="}))
        .await["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let raw = b64.decode(ct.strip_prefix("lbx1:").unwrap()).unwrap();
    let header = lockbox::native::inspect_text(&ct).unwrap();
    let with_id = |id: u32| {
        let mut b = raw.clone();
        let at = b
            .windows(4)
            .position(|w| w == header.key_id.to_be_bytes())
            .unwrap();
        b[at..at + 4].copy_from_slice(&id.to_be_bytes());
        format!("lbx1:{}", b64.encode(b))
    };
    // 5 000 items naming one unknown key id: answered fast, no reloads.
    let items: Vec<Value> = (0..5000)
        .map(|_| json!({"ciphertext": with_id(0x0bad_f00d)}))
        .collect();
    let t0 = Instant::now();
    let (s, _) = api
        .call(
            Some(&t),
            "POST",
            "lockbox/decrypt",
            json!({"batch_input": items}),
        )
        .await;
    assert!(s == 400 || s == 403, "{s}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // An unknown id is refused like a foreign key (which ids exist is not
    // told); root, who may see that, is limited to 32 distinct ids.
    let (s, v) = api
        .call(
            Some(&t),
            "POST",
            "lockbox/decrypt",
            json!({"ciphertext": with_id(0x0bad_f00d)}),
        )
        .await;
    assert_eq!((s, v), (403, json!({"errors": ["permission denied"]})));
    let items: Vec<Value> = (0..33u32)
        .map(|i| json!({"ciphertext": with_id(0x0bad_0000 + i)}))
        .collect();
    let (s, v) = api
        .call(
            Some(ROOT),
            "POST",
            "lockbox/decrypt",
            json!({"batch_input": items}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // The id of a mount's key: refused, and its name is not told.
    let hidden = api.root("GET", "m2/keys/hidden", Value::Null).await["data"]["key_id"]
        .as_str()
        .map(|h| u32::from_str_radix(h, 16).unwrap())
        .unwrap();
    let (s, v) = api
        .call(
            Some(&t),
            "POST",
            "lockbox/decrypt",
            json!({"ciphertext": with_id(hidden)}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(!v.to_string().contains("hidden"), "{v}");
}

/// Found by the attack (F4, F8): init and unseal, which need no token and
/// are audited, were outside the per-address budget; and a token's `meta`
/// had no size limit (up to the 32 MiB body, read on every lookup).
#[tokio::test]
async fn unseal_is_charged_and_token_meta_is_bounded() {
    let srv = dev_server(&["--unauthenticated-rate-limit", "5"]);
    let api = Api::new(&srv.addr, ROOT);
    let mut limited = 0;
    for _ in 0..30 {
        let (s, _) = api
            .call(None, "PUT", "sys/unseal", json!({"key": "not-a-share"}))
            .await;
        if s == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 20, "{limited} of 30 limited");
    // The probes are not charged.
    assert_eq!(
        api.call(None, "GET", "sys/health", Value::Null).await.0,
        200
    );
    let create = |meta: Value| {
        let api = &api;
        async move {
            api.call(
                Some(ROOT),
                "POST",
                "auth/token/create",
                json!({"policies": ["app"], "ttl": "1h", "meta": meta}),
            )
            .await
            .0
        }
    };
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert_eq!(create(Value::Object(many)).await, 400);
    assert_eq!(create(json!({"k": "v".repeat(513)})).await, 400);
    assert_eq!(create(json!({"team": "billing"})).await, 200);
}

/// Found by the second attack: the HTTP method went into audit entries
/// at full length (a 380 KB method, refused 403, wrote 160 KB of log).
#[tokio::test]
async fn a_huge_method_is_audited_as_other() {
    use std::io::{Read, Write};
    let (srv, log, _api) = audited_server(&["--unauthenticated-rate-limit", "0"]).await;
    let method = "X".repeat(100_000);
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(host(&srv.addr)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "{method} /v1/transit/keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size < 20_000, "{size} bytes of audit");
    let lines = audit_lines(&log);
    assert!(lines.iter().any(|l| l["method"] == "OTHER"), "{lines:?}");
}

/// Found by the second attack: a token with no rights could make
/// decryptions "fail" (a bad key name in the path, garbage or forged
/// native headers) and so raise the decryption-failure alert — which then
/// stays quiet for 5 minutes, muting a real one. Only requests that passed
/// authorization count.
#[tokio::test]
async fn a_token_without_rights_cannot_raise_the_failure_alert() {
    let (_srv, log, api) = audited_server(&["--unauthenticated-rate-limit", "0"]).await;
    api.root(
        "PUT",
        "sys/policies/acl/nothing",
        json!({"policy": "path \"nowhere/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    let t = api.token(&["nothing"]).await;
    for _ in 0..30 {
        let (s, _) = api
            .call(Some(&t), "POST", "transit/decrypt/a%252Fb", json!({}))
            .await;
        assert_eq!(s, 400);
        let (s, _) = api
            .call(
                Some(&t),
                "POST",
                "lockbox/decrypt",
                json!({"ciphertext": "lbx1:garbage"}),
            )
            .await;
        assert_eq!(s, 400);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("DECRYPTION_FAILURE_RATE_HIGH"));
}

/// Found by the second attack: `sys/events` wrote the caller's data into
/// the audit log unbounded, with fields such as `accessor` that made the
/// entry look like another token's. Data is bounded, reserved names are
/// refused, and the entry names who reported it.
#[tokio::test]
async fn reported_events_are_bounded_and_signed_by_their_reporter() {
    let (_srv, log, api) = audited_server(&[]).await;
    let ev = |data: Value| {
        let api = &api;
        async move {
            api.call(
                Some(ROOT),
                "POST",
                "sys/events",
                json!({"event": "REENCRYPTION_STARTED", "data": data}),
            )
            .await
            .0
        }
    };
    assert_eq!(ev(json!({"accessor": "someone-else"})).await, 400);
    assert_eq!(ev(json!({"table": "x".repeat(5000)})).await, 400);
    assert_eq!(ev(json!({"nested": {"a": 1}})).await, 400);
    assert_eq!(ev(json!({"table": "users", "rows": 10})).await, 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = audit_lines(&log);
    let e = lines
        .iter()
        .find(|l| l["event"] == "REENCRYPTION_STARTED")
        .unwrap();
    assert_eq!(e["table"], "users");
    assert_eq!(e["reported_by"], "root");
}
