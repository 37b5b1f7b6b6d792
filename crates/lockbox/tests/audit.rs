//! The audit log against real `lockbox serve` processes: tampering in every
//! way is caught at the right entry by `lockbox audit verify`; restarts
//! link segments; fail-closed and fail-open policies; queries; no secret
//! ever appears in an audit entry or a log; events reach a signed webhook
//! (verified with `lockbox webhook verify`); Prometheus metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::cli;
use serde_json::{json, Value};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lockbox")
}

fn tmpdir() -> PathBuf {
    let mut b = [0u8; 6];
    lockbox::fill_random(&mut b).unwrap();
    let d = std::env::temp_dir().join(format!("lockbox-audit-test-{}", hex::encode(b)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server on a SQLite store with a master key; its output is captured.
struct Srv {
    child: Child,
    addr: String,
    dir: PathBuf,
    store: String,
    key: String,
    token: String,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Srv {
    fn start(dir: &Path, key: &str, args: &[&str]) -> Srv {
        let store = format!("sqlite://{}", dir.join("lb.db").display());
        Srv::start_on(dir, key, &store, args)
    }

    fn start_on(dir: &Path, key: &str, store: &str, args: &[&str]) -> Srv {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut c = Command::new(bin());
        common::clean_env(&mut c)
            .args(["serve", "--store", store, "--listen", &listen])
            .args(args)
            .env("LOCKBOX_MASTER_KEY", key)
            .current_dir(dir);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.out"))
            .unwrap();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.err"))
            .unwrap();
        let child = c.stdout(out).stderr(err).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // An admin token, made on the local store by the CLI.
        let env = [("LOCKBOX_MASTER_KEY", key), ("LOCKBOX_STORE", store)];
        let t = cli(
            &env,
            &[
                "--json", "token", "create", "--policy", "admin", "--ttl", "2h",
            ],
            b"",
        );
        assert_eq!(t.code, 0, "{}", t.stderr);
        let token = serde_json::from_str::<Value>(&t.stdout).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        Srv {
            child,
            addr: format!("http://{listen}"),
            dir: dir.to_owned(),
            store: store.to_owned(),
            key: key.to_owned(),
            token,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("LOCKBOX_ADDR", self.addr.as_str()),
            ("LOCKBOX_TOKEN", self.token.as_str()),
        ]
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let o = cli(&self.env(), args, stdin);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
        o.stdout
    }

    fn api(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = reqwest::Client::new();
            let mut r = c
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}/v1/{path}", self.addr),
                )
                .header("X-Vault-Token", &self.token);
            if !body.is_null() {
                r = r.json(&body);
            }
            let resp = r.send().await.unwrap();
            let s = resp.status().as_u16();
            let t = resp.text().await.unwrap();
            (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
        })
    }

    fn stop(mut self) -> (PathBuf, String, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        (self.dir.clone(), self.store.clone(), self.key.clone())
    }
}

fn master_key() -> String {
    let o = cli(&[], &["keygen-master"], b"");
    o.stdout.trim().to_owned()
}

/// Copies the trail files (`audit.log*`) of `from` into a fresh directory.
fn copy_trail(from: &Path) -> PathBuf {
    let to = tmpdir();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("audit.log") {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
    to
}

fn trail_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("audit.log.")
        })
        .collect();
    v.sort();
    v.push(dir.join("audit.log"));
    v
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, l: &[String]) {
    let mut s = l.join("\n");
    s.push('\n');
    std::fs::write(p, s).unwrap();
}

#[test]
fn tampering_in_every_way_is_caught_at_the_right_entry() {
    let dir = tmpdir();
    let key = master_key();
    let srv = Srv::start(
        &dir,
        &key,
        &["--audit-file", "audit.log", "--audit-file-max-size", "3K"],
    );
    srv.ok(&["keys", "create", "k"], b"");
    for i in 0..25 {
        let ct = srv.ok(&["encrypt", "--key", "k"], format!("value {i}").as_bytes());
        srv.ok(&["decrypt", "--key", "k"], ct.trim().as_bytes());
    }
    srv.ok(&["keys", "rotate", "k"], b"");
    // Let the anchor catch up with the last entries, then stop cleanly.
    std::thread::sleep(Duration::from_millis(1100));
    srv.ok(&["keys", "show", "k"], b"");
    let (dir, store, key) = srv.stop();
    let files = trail_files(&dir);
    assert!(files.len() >= 4, "rotated into several files: {files:?}");
    let verify = |d: &Path| {
        let env = [
            ("LOCKBOX_MASTER_KEY", key.as_str()),
            ("LOCKBOX_STORE", store.as_str()),
        ];
        cli(
            &env,
            &[
                "audit",
                "verify",
                "--file",
                d.join("audit.log").to_str().unwrap(),
            ],
            b"",
        )
    };
    let good = verify(&dir);
    assert_eq!(good.code, 0, "{}", good.stderr);
    assert!(good.stdout.contains("verified"), "{}", good.stdout);

    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let second = name(&files[1]);
    // (what, how, expected text in the error)
    type Tamper = Box<dyn Fn(&Path)>;
    let f1 = second.clone();
    let cases: Vec<(&str, Tamper, String)> = vec![
        (
            "edit a field",
            Box::new(move |d: &Path| {
                let p = d.join(&f1);
                let mut l = lines(&p);
                l[2] = l[2].replace("\"status\":200", "\"status\":201");
                assert!(l[2].contains("201"));
                write_lines(&p, &l);
            }),
            format!("{second}:3"),
        ),
        (
            "delete an entry",
            Box::new({
                let f = second.clone();
                move |d: &Path| {
                    let p = d.join(&f);
                    let mut l = lines(&p);
                    l.remove(3);
                    write_lines(&p, &l);
                }
            }),
            format!("{second}:4"),
        ),
        (
            "insert an entry",
            Box::new({
                let f = second.clone();
                move |d: &Path| {
                    let p = d.join(&f);
                    let mut l = lines(&p);
                    let copy = l[1].clone();
                    l.insert(2, copy);
                    write_lines(&p, &l);
                }
            }),
            format!("{second}:3"),
        ),
        (
            "reorder two entries",
            Box::new({
                let f = second.clone();
                move |d: &Path| {
                    let p = d.join(&f);
                    let mut l = lines(&p);
                    l.swap(4, 5);
                    write_lines(&p, &l);
                }
            }),
            format!("{second}:5"),
        ),
        (
            "truncate the end",
            Box::new(|d: &Path| {
                let p = d.join("audit.log");
                let mut l = lines(&p);
                l.truncate(l.len() - 2);
                write_lines(&p, &l);
            }),
            "truncated".into(),
        ),
        (
            "delete the newest file",
            Box::new(|d: &Path| std::fs::remove_file(d.join("audit.log")).unwrap()),
            "truncated".into(),
        ),
        (
            "delete a rotated file",
            Box::new({
                let f = second.clone();
                move |d: &Path| std::fs::remove_file(d.join(&f)).unwrap()
            }),
            "was expected".into(),
        ),
    ];
    for (what, tamper, expect) in cases {
        let d = copy_trail(&dir);
        tamper(&d);
        let o = verify(&d);
        assert_ne!(o.code, 0, "{what}: not detected\n{}", o.stdout);
        assert!(
            o.stderr.contains(&expect),
            "{what}: expected {expect:?} in:\n{}",
            o.stderr
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn restarts_link_segments_and_queries_work() {
    let dir = tmpdir();
    let key = master_key();
    let args = ["--audit-file", "audit.log", "--audit-store"];
    let srv = Srv::start(&dir, &key, &args);
    srv.ok(&["keys", "create", "q"], b"");
    srv.ok(&["encrypt", "--key", "q"], b"one");
    let (code, _) = srv.api(
        "POST",
        "transit/decrypt/q",
        json!({"ciphertext": "vault:v1:AAAA"}),
    );
    assert_eq!(code, 400);
    let (dir, _, _) = srv.stop();
    let srv = Srv::start(&dir, &key, &args);
    srv.ok(&["encrypt", "--key", "q"], b"two");
    // Over the API (auditor role) and with the CLI.
    let (s, v) = srv.api("POST", "sys/audit/verify", json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["ok"], true, "{v}");
    assert!(v["data"]["file"]["segments"].as_array().unwrap().len() >= 2);
    let out = srv.ok(&["audit", "verify"], b"");
    assert!(out.contains("verified"));
    let errors = srv.ok(
        &[
            "audit",
            "query",
            "--key",
            "q",
            "--outcome",
            "error",
            "--since",
            "1h",
        ],
        b"",
    );
    let errs: Vec<Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errs.len(), 1, "{errors}");
    assert_eq!(errs[0]["operation"], "decrypt");
    assert_eq!(errs[0]["error_class"], "bad_request");
    assert_eq!(errs[0]["key_version"], 1);
    assert!(errs[0]["accessor"].as_str().unwrap().len() > 10);
    assert_eq!(errs[0]["role"], "admin");
    let oks = srv.ok(&["audit", "query", "--key", "q", "--outcome", "ok"], b"");
    assert!(oks.lines().count() >= 3, "{oks}");
    // Bad queries are 400s.
    let (s, _) = srv.api("POST", "sys/audit/query", json!({"outcome": "maybe"}));
    assert_eq!(s, 400);
    let (s, _) = srv.api("POST", "sys/audit/query", json!({"since": "yesterday"}));
    assert_eq!(s, 400);
    // The HMAC of a value, to search entries for it.
    let (s, v) = srv.api("POST", "sys/audit-hash", json!({"input": "tenant-42"}));
    assert_eq!(s, 200);
    assert!(v["data"]["hash"]
        .as_str()
        .unwrap()
        .starts_with("hmac-sha256:"));
    let (dir, _, _) = srv.stop();
    // Cutting the first run's last entry breaks the link to the second.
    let d = copy_trail(&dir);
    let p = d.join("audit.log");
    let mut l = lines(&p);
    let cut = l
        .iter()
        .position(|x| x.contains("\"type\":\"segment\"") && x.contains("\"prev\":{"))
        .unwrap();
    l.remove(cut - 1);
    write_lines(&p, &l);
    let store = format!("sqlite://{}", dir.join("lb.db").display());
    let env = [
        ("LOCKBOX_MASTER_KEY", key.as_str()),
        ("LOCKBOX_STORE", store.as_str()),
    ];
    let o = cli(
        &env,
        &["audit", "verify", "--file", p.to_str().unwrap()],
        b"",
    );
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("does not follow"), "{}", o.stderr);
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fail_closed_refuses_and_fail_open_proceeds_when_the_sink_fails() {
    // Writes to /dev/full fail (ENOSPC): a sink that cannot be written.
    let dir = tmpdir();
    let key = master_key();
    let srv = Srv::start(&dir, &key, &["--audit-file", "/dev/full"]);
    let (s, v) = srv.api("POST", "transit/keys/x", json!({}));
    assert_eq!(s, 503, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("audit"));
    // Refused before any work: the key was not created.
    let (s, _) = srv.api("GET", "transit/keys/x", Value::Null);
    assert_eq!(s, 503);
    drop(srv);
    let srv = Srv::start(
        &dir,
        &key,
        &["--audit-file", "/dev/full", "--audit-fail-open"],
    );
    let (s, _) = srv.api("POST", "transit/keys/x", json!({}));
    assert_eq!(s, 200);
    let (s, v) = srv.api("GET", "transit/keys/x", Value::Null);
    assert_eq!(s, 200, "{v}");
    std::thread::sleep(Duration::from_millis(200));
    let (_, m) = srv.api("GET", "sys/metrics?format=prometheus", Value::Null);
    let text = m.as_str().unwrap().to_owned();
    let failures: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("audit_write_failures_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failures >= 2, "{text}");
    drop(srv);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `n` concurrent encryptions with key `key`: each answer's status and
/// request id, with the audit file's text read the moment that answer came
/// back (when `file` is given).
fn burst(srv: &Srv, key: &str, n: usize, file: Option<&Path>) -> Vec<(u16, String, String)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let mut tasks = Vec::new();
        for i in 0..n {
            let c = c.clone();
            let url = format!("{}/v1/transit/encrypt/{key}", srv.addr);
            let token = srv.token.clone();
            let file = file.map(Path::to_owned);
            tasks.push(tokio::spawn(async move {
                let pt = lockbox::encoding::b64_encode(format!("field {i}").as_bytes());
                let r = c
                    .post(url)
                    .header("X-Vault-Token", token)
                    .json(&json!({ "plaintext": pt }))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
                let seen = file.map_or_else(String::new, |f| {
                    std::fs::read_to_string(f).unwrap_or_default()
                });
                (status, rid, seen)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

fn audit_failures(srv: &Srv) -> u64 {
    let (_, m) = srv.api("GET", "sys/metrics?format=prometheus", Value::Null);
    m.as_str()
        .unwrap_or_else(|| panic!("{m}"))
        .lines()
        .find_map(|l| l.strip_prefix("audit_write_failures_total "))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn concurrent_requests_are_written_in_one_chain_before_they_are_answered() {
    // Fail closed (the default): entries of concurrent requests are sealed
    // and written together, yet each request is answered only once its own
    // entry is in the file and in the store.
    let dir = tmpdir();
    let key = master_key();
    let srv = Srv::start(&dir, &key, &["--audit-file", "audit.log", "--audit-store"]);
    srv.ok(&["keys", "create", "burst"], b"");
    let file = dir.join("audit.log");
    let answers = burst(&srv, "burst", 300, Some(&file));
    let mut ids = std::collections::HashSet::new();
    for (status, rid, seen) in &answers {
        assert_eq!(*status, 200);
        assert!(
            seen.contains(&format!("\"request_id\":\"{rid}\"")),
            "request {rid} was answered before its audit entry was written"
        );
        assert!(ids.insert(rid.clone()), "request id {rid} twice");
    }
    // One entry per request, in one verified chain, in both sinks.
    let (s, v) = srv.api("POST", "sys/audit/verify", json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["ok"], true, "{v}");
    let text = std::fs::read_to_string(&file).unwrap();
    let entries: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let encrypts: Vec<&Value> = entries
        .iter()
        .filter(|e| e["operation"] == "encrypt" && e["key"] == "burst")
        .collect();
    assert_eq!(encrypts.len(), 300);
    assert!(encrypts
        .iter()
        .all(|e| ids.contains(e["request_id"].as_str().unwrap())));
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let (s, q) = srv.api(
        "POST",
        "sys/audit/query",
        json!({"key": "burst", "outcome": "ok", "limit": 1000}),
    );
    assert_eq!(s, 200);
    let rows = q["data"]["entries"].as_array().unwrap();
    assert_eq!(
        rows.iter().filter(|e| e["operation"] == "encrypt").count(),
        300
    );
    assert_eq!(audit_failures(&srv), 0);
    drop(srv);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fail_closed_with_a_full_queue_refuses_and_counts() {
    // A backlog of at most one entry: a request whose entry finds it full
    // is refused (503) and counted; every request answered 200 has its
    // entry written; the chain verifies.
    let dir = tmpdir();
    let key = master_key();
    let srv = Srv::start(
        &dir,
        &key,
        &["--audit-file", "audit.log", "--audit-queue", "1"],
    );
    srv.ok(&["keys", "create", "full"], b"");
    let file = dir.join("audit.log");
    let answers = burst(&srv, "full", 300, Some(&file));
    let mut refused = 0;
    for (status, rid, seen) in &answers {
        match status {
            200 => assert!(seen.contains(rid.as_str()), "{rid} answered before written"),
            503 => refused += 1,
            s => panic!("status {s}"),
        }
    }
    println!("{refused} of 300 refused");
    assert_eq!(audit_failures(&srv), refused);
    let (s, v) = srv.api("POST", "sys/audit/verify", json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["ok"], true, "{v}");
    drop(srv);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fail_open_with_a_full_queue_drops_and_counts_but_never_breaks_the_chain() {
    // A queue of one entry: requests are never refused or delayed; every
    // entry is either written (in a chain that verifies) or counted.
    let dir = tmpdir();
    let key = master_key();
    let srv = Srv::start(
        &dir,
        &key,
        &[
            "--audit-file",
            "audit.log",
            "--audit-fail-open",
            "--audit-queue",
            "1",
        ],
    );
    srv.ok(&["keys", "create", "open"], b"");
    let answers = burst(&srv, "open", 300, None);
    assert!(answers.iter().all(|(s, _, _)| *s == 200));
    std::thread::sleep(Duration::from_millis(300));
    let dropped = audit_failures(&srv);
    println!("{dropped} of 300 dropped");
    let (s, v) = srv.api("POST", "sys/audit/verify", json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["ok"], true, "{v}");
    let written = lines(&dir.join("audit.log"))
        .iter()
        .filter(|l| l.contains("\"operation\":\"encrypt\""))
        .count() as u64;
    assert_eq!(
        written + dropped,
        300,
        "written {written}, dropped {dropped}"
    );
    drop(srv);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_store_sink_outage_refuses_requests_and_the_trail_resumes_linked() {
    // A PostgreSQL store whose audit table refuses inserts for a while (a
    // trigger): fail closed, requests are refused with 503 and do nothing;
    // once inserts work again requests succeed, and both the file and the
    // store trails verify, the file's chain linked across the outage.
    let dir = tmpdir();
    let key = master_key();
    let schema = format!(
        "lbx_audit_{}",
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .rsplit('-')
            .next()
            .unwrap()
    );
    let store = common::pg_schema_url(&schema);
    let srv = Srv::start_on(
        &dir,
        &key,
        &store,
        &["--audit-file", "audit.log", "--audit-store"],
    );
    srv.ok(&["keys", "create", "before"], b"");
    common::pg_exec(&format!(
        r#"CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'audit outage'; END $$;
           CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".lockbox_audit
             FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();"#
    ));
    let (s, v) = srv.api("POST", "transit/keys/during", json!({}));
    assert_eq!(s, 503, "{v}");
    let (s, _) = srv.api("POST", "transit/keys/during2", json!({}));
    assert_eq!(s, 503);
    common::pg_exec(&format!(
        r#"DROP TRIGGER refuse ON "{schema}".lockbox_audit"#
    ));
    let (s, v) = srv.api("POST", "transit/keys/after", json!({}));
    assert_eq!(s, 200, "{v}");
    assert!(audit_failures(&srv) >= 2);
    // Refused requests did nothing.
    let (s, _) = srv.api("GET", "transit/keys/during2", Value::Null);
    assert_eq!(s, 404);
    let (s, v) = srv.api("POST", "sys/audit/verify", json!({}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["ok"], true, "{v}");
    assert!(
        v["data"]["file"]["segments"].as_array().unwrap().len() >= 2,
        "{v}"
    );
    let (_, q) = srv.api("POST", "sys/audit/query", json!({"key": "after"}));
    assert!(!q["data"]["entries"].as_array().unwrap().is_empty(), "{q}");
    drop(srv);
    common::drop_schema(&schema);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_plaintext_ciphertext_token_or_key_in_any_log_or_audit_output() {
    let dir = tmpdir();
    let key = master_key();
    let srv = Srv::start(
        &dir,
        &key,
        &[
            "--audit-file",
            "audit.log",
            "--audit-stdout",
            "--audit-store",
        ],
    );
    let secret_pt = "PLAINTEXT-4111-1111-1111-1111";
    let secret_ctx = "tenant-context-ZX81";
    let b64 = |s: &str| lockbox::encoding::b64_encode(s.as_bytes());
    let mut needles = vec![
        secret_pt.to_owned(),
        b64(secret_pt),
        secret_ctx.to_owned(),
        b64(secret_ctx),
        srv.token.clone(),
        key.clone(),
    ];
    let (s, _) = srv.api(
        "POST",
        "transit/keys/pii",
        json!({"exportable": true, "derived": true}),
    );
    assert_eq!(s, 200);
    let (_, v) = srv.api(
        "POST",
        "transit/encrypt/pii",
        json!({"plaintext": b64(secret_pt), "context": b64(secret_ctx)}),
    );
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    needles.push(ct.clone());
    needles.push(ct.trim_start_matches("vault:v1:").to_owned());
    let (_, v) = srv.api(
        "POST",
        "transit/decrypt/pii",
        json!({"ciphertext": ct, "context": b64(secret_ctx)}),
    );
    assert_eq!(v["data"]["plaintext"], b64(secret_pt));
    let (_, v) = srv.api("GET", "transit/export/encryption-key/pii", Value::Null);
    let exported = v["data"]["keys"]["1"].as_str().unwrap().to_owned();
    needles.push(exported);
    let (_, v) = srv.api(
        "POST",
        "transit/datakey/plaintext/pii",
        json!({"context": b64(secret_ctx)}),
    );
    needles.push(v["data"]["plaintext"].as_str().unwrap().to_owned());
    needles.push(v["data"]["ciphertext"].as_str().unwrap().to_owned());
    let (_, v) = srv.api(
        "POST",
        "auth/token/create",
        json!({"policies": ["app"], "ttl": "1h"}),
    );
    needles.push(v["auth"]["client_token"].as_str().unwrap().to_owned());
    let n = srv.ok(
        &["encrypt", "--key", "pii", "--context", secret_ctx],
        secret_pt.as_bytes(),
    );
    needles.push(n.trim().to_owned());
    let (s, _) = srv.api(
        "POST",
        "transit/decrypt/pii",
        json!({"ciphertext": "vault:v1:AAAA", "context": b64(secret_ctx)}),
    );
    assert_eq!(s, 400);
    std::thread::sleep(Duration::from_millis(1100));
    srv.ok(&["keys", "show", "pii"], b"");
    let (dir, store, _) = srv.stop();
    // Everything the run wrote: audit files, server stdout/stderr, the
    // store's audit rows (via the CLI).
    let env = [
        ("LOCKBOX_MASTER_KEY", key.as_str()),
        ("LOCKBOX_STORE", store.as_str()),
    ];
    let q = cli(&env, &["audit", "query", "--limit", "100000"], b"");
    assert_eq!(q.code, 0, "{}", q.stderr);
    let mut haystacks = vec![("store audit rows".to_owned(), q.stdout.clone())];
    for name in ["audit.log", "server.out", "server.err"] {
        haystacks.push((
            name.to_owned(),
            std::fs::read_to_string(dir.join(name)).unwrap(),
        ));
    }
    let audit = &haystacks[1].1;
    assert!(audit.lines().count() >= 8, "the run was audited");
    assert!(audit.contains("hmac-sha256:"), "the context is HMAC'd");
    assert!(haystacks[2].1.contains("\"seg\""), "stdout sink used");
    for (what, text) in &haystacks {
        for n in &needles {
            assert!(!n.is_empty());
            assert!(!text.contains(n.as_str()), "{what} contains a secret: {n}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A request the receiver got: headers and body.
type Delivery = (Vec<(String, String)>, String);

/// A webhook receiver: answers 500 to the first `fail_first` deliveries,
/// then 200; returns every request (headers, body) it got.
fn receiver(fail_first: usize) -> (String, std::sync::mpsc::Receiver<Delivery>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut n = 0;
        for s in l.incoming() {
            let mut s = s.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let k = s.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some(i) = text.find("\r\n\r\n") {
                    let head = text[..i].to_owned();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while buf.len() < i + 4 + len {
                        let k = s.read(&mut chunk).unwrap();
                        buf.extend_from_slice(&chunk[..k]);
                    }
                    break (
                        head,
                        String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).into_owned(),
                    );
                }
            };
            n += 1;
            let status = if n <= fail_first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = s.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_lowercase(), v.to_owned()))
                .collect();
            if n > fail_first {
                let _ = tx.send((headers, body));
            }
        }
    });
    (addr, rx)
}

#[test]
fn events_reach_a_signed_webhook_with_retries_and_the_audit_log() {
    let dir = tmpdir();
    let key = master_key();
    let secret = dir.join("hook.secret");
    std::fs::write(&secret, "whsec-0123456789abcdef-test\n").unwrap();
    let (url, rx) = receiver(2);
    let srv = Srv::start(
        &dir,
        &key,
        &[
            "--audit-file",
            "audit.log",
            "--webhook-url",
            &url,
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    srv.ok(&["keys", "create", "ev"], b"");
    srv.ok(&["keys", "rotate", "ev"], b"");
    let next = |what: &str| {
        let (h, b) = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no {what} delivery"));
        let body: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(body["event"], what, "{body}");
        (h, b, body)
    };
    // Delivered after two failed attempts (retries with backoff).
    let (h, b, body) = next("KEY_ROTATION");
    assert_eq!(body["key"], "ev");
    assert_eq!(body["version"], 2);
    let get = |h: &[(String, String)], k: &str| h.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let seen = dir.join("seen");
    let verify = |h: &[(String, String)], body: &str, tolerance: &str| {
        cli(
            &[],
            &[
                "webhook",
                "verify",
                "--secret-file",
                secret.to_str().unwrap(),
                "--signature",
                &get(h, "x-lockbox-signature"),
                "--timestamp",
                &get(h, "x-lockbox-timestamp"),
                "--delivery",
                &get(h, "x-lockbox-delivery"),
                "--tolerance",
                tolerance,
                "--seen-file",
                seen.to_str().unwrap(),
            ],
            body.as_bytes(),
        )
    };
    let o = verify(&h, &b, "300");
    assert_eq!(o.code, 0, "{}", o.stderr);
    // The same delivery again is a replay; a modified body is refused.
    let o = verify(&h, &b, "300");
    assert!(o.code != 0 && o.stderr.contains("replayed"), "{}", o.stderr);
    let o = verify(&h, &b.replace("ev", "xx"), "300");
    assert!(
        o.code != 0 && o.stderr.contains("authentication"),
        "{}",
        o.stderr
    );

    srv.ok(
        &["keys", "config", "ev", "--min-decryption-version", "2"],
        b"",
    );
    let (_, _, body) = next("KEY_DEPRECATED");
    assert_eq!(body["version"], 2);
    let (s, v) = srv.api(
        "POST",
        "sys/events",
        json!({"event": "REENCRYPTION_STARTED", "data": {"table": "users"}}),
    );
    assert_eq!(s, 204, "{v}");
    let (_, _, body) = next("REENCRYPTION_STARTED");
    assert_eq!(body["table"], "users");
    let (s, _) = srv.api("POST", "sys/events", json!({"event": "SOMETHING_ELSE"}));
    assert_eq!(s, 400);
    // More than 5% of decryptions failing over 5 minutes.
    let (_, v) = srv.api("POST", "transit/encrypt/ev", json!({"plaintext": "aGk="}));
    let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    for _ in 0..18 {
        let (s, _) = srv.api("POST", "transit/decrypt/ev", json!({"ciphertext": ct}));
        assert_eq!(s, 200);
    }
    for _ in 0..3 {
        let (s, _) = srv.api(
            "POST",
            "transit/decrypt/ev",
            json!({"ciphertext": "vault:v2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
        );
        assert_eq!(s, 400);
    }
    let (_, _, body) = next("DECRYPTION_FAILURE_RATE_HIGH");
    assert!(body["failures"].as_u64().unwrap() >= 2);
    // Every event is in the audit log too.
    std::thread::sleep(Duration::from_millis(300));
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    for e in [
        "KEY_ROTATION",
        "KEY_DEPRECATED",
        "REENCRYPTION_STARTED",
        "DECRYPTION_FAILURE_RATE_HIGH",
    ] {
        assert!(
            audit.contains(&format!("\"event\":\"{e}\"")),
            "{e} not in the audit log"
        );
    }
    // Prometheus names.
    let (_, m) = srv.api("GET", "sys/metrics?format=prometheus", Value::Null);
    let text = m.as_str().unwrap();
    for name in [
        "encryption_operations_total{type=\"decrypt\",key=\"ev\"} 18",
        "encryption_errors_total{error_type=\"bad_request\"}",
        "key_rotation_last_success_timestamp{key=\"ev\"}",
        "key_versions_active{key=\"ev\"} 1",
        "request_duration_seconds_bucket{operation=\"decrypt\",le=\"+Inf\"} 21",
        "audit_write_failures_total 0",
        "lockbox_events_total{event=\"KEY_ROTATION\"} 1",
    ] {
        assert!(text.contains(name), "{name} missing in:\n{text}");
    }
    drop(srv);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn crypto_shredding_a_tenant_through_the_api_leaves_audit_evidence() {
    let dir = tmpdir();
    let key = master_key();
    let srv = Srv::start(&dir, &key, &["--audit-file", "audit.log", "--audit-store"]);
    let enc = |t: &str, pt: &str| {
        let (s, v) = srv.api(
            "POST",
            "lockbox/envelope/encrypt",
            json!({"tenant": t, "plaintext": lockbox::encoding::b64_encode(pt.as_bytes()),
                   "context": {"table": "notes", "row": "1"}}),
        );
        assert_eq!(s, 200, "{v}");
        v["data"]["ciphertext"].as_str().unwrap().to_owned()
    };
    let doomed: Vec<String> = (0..5)
        .map(|i| enc("doomed", &format!("note {i}")))
        .collect();
    let kept = enc("kept", "still here");
    for ct in &doomed {
        let (s, _) = srv.api(
            "POST",
            "lockbox/envelope/decrypt",
            json!({"tenant": "doomed", "ciphertext": ct}),
        );
        assert_eq!(s, 200);
    }
    // Shred: allow deletion, destroy the tenant's key.
    let (s, v) = srv.api(
        "POST",
        "transit/keys/tenant-doomed/config",
        json!({"deletion_allowed": true}),
    );
    assert!(s < 300, "{v}");
    let (s, v) = srv.api("POST", "lockbox/keys/tenant-doomed/destroy", json!({}));
    assert_eq!(s, 204, "{v}");
    for ct in &doomed {
        let (s, v) = srv.api(
            "POST",
            "lockbox/envelope/decrypt",
            json!({"tenant": "doomed", "ciphertext": ct}),
        );
        assert_eq!(s, 400, "{v}");
        assert!(
            v["errors"][0].as_str().unwrap().contains("destroyed"),
            "{v}"
        );
    }
    // Other tenants are untouched.
    let (s, v) = srv.api(
        "POST",
        "lockbox/envelope/decrypt",
        json!({"tenant": "kept", "ciphertext": kept}),
    );
    assert_eq!(
        (s, v["data"]["plaintext"].as_str()),
        (200, Some("c3RpbGwgaGVyZQ=="))
    );
    // Evidence: the destruction, by whom, and the refused decryptions, in a
    // verified trail.
    std::thread::sleep(Duration::from_millis(1100));
    srv.ok(&["keys", "list"], b"");
    let accessor = {
        let (_, me) = srv.api("GET", "auth/token/lookup-self", Value::Null);
        me["data"]["accessor"].as_str().unwrap().to_owned()
    };
    let (dir, store, key) = srv.stop();
    let env = [
        ("LOCKBOX_MASTER_KEY", key.as_str()),
        ("LOCKBOX_STORE", store.as_str()),
    ];
    let v = cli(
        &env,
        &[
            "audit",
            "verify",
            "--file",
            dir.join("audit.log").to_str().unwrap(),
            "--store-sink",
        ],
        b"",
    );
    assert_eq!(v.code, 0, "{}", v.stderr);
    let q = cli(&env, &["audit", "query", "--key", "tenant-doomed"], b"");
    let entries: Vec<Value> = q
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let destroyed = entries
        .iter()
        .find(|e| e["event"] == "KEY_DESTROYED")
        .unwrap_or_else(|| panic!("no KEY_DESTROYED in {entries:?}"));
    assert!(
        destroyed["detail"].as_str().unwrap().contains(&accessor),
        "{destroyed}"
    );
    let request = entries
        .iter()
        .find(|e| e["operation"] == "lockbox.keys.destroy" && e["outcome"] == "ok")
        .unwrap();
    assert_eq!(request["accessor"], accessor.as_str());
    let refused = entries
        .iter()
        .filter(|e| e["operation"] == "lockbox.envelope.decrypt" && e["outcome"] == "error")
        .count();
    assert_eq!(refused, 5);
    std::fs::remove_dir_all(&dir).unwrap();
}
