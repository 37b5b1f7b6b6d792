//! `lockbox reencrypt` against real PostgreSQL, MariaDB and SQLite: every
//! conversion mode, dry run, verify, idempotent reruns, bad input, and crash
//! tests that SIGKILL the real process at random points.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lockbox_engine::{Engine, EngineConfig};
use lockbox_store::Store;
use serde_json::Value;
use sqlx::{AnyPool, Row as _};

/// A key store (SQLite file) with a master key, in a fresh directory.
struct Env {
    dir: PathBuf,
    master: String,
    store: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env(name: &str) -> Env {
    let dir = std::env::temp_dir().join(format!(
        "lockbox-reencrypt-{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lockbox"))
        .arg("keygen-master")
        .output()
        .unwrap();
    assert!(out.status.success());
    let master = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let store = format!("sqlite://{}", dir.join("keys.db").display());
    Env { dir, master, store }
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lockbox"));
        common::clean_env(&mut c)
            .env("LOCKBOX_STORE", &self.store)
            .env("LOCKBOX_MASTER_KEY", &self.master)
            .env_remove("LOCKBOX_REENCRYPT_DB")
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Run, expect success, return stdout parsed as JSON (`--json`).
    fn ok_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        assert!(
            out.status.success(),
            "lockbox {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8(out.stdout).unwrap();
        serde_json::from_str(s.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    /// Run, expect failure, return stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "lockbox {args:?} should fail; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn key(&self, name: &str) {
        let out = self.run(&["keys", "create", name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn rotate(&self, name: &str) {
        let out = self.run(&["keys", "rotate", name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The engine over the same store, unsealed (to check values).
    async fn engine(&self) -> Engine {
        let store = Store::connect(&self.store).await.unwrap();
        let e = Engine::open(store, EngineConfig::default()).await.unwrap();
        e.unseal_with_master_key(
            lockbox::rootkey::RootKey::parse_master_key(&self.master).unwrap(),
        )
        .await
        .unwrap();
        e
    }
}

fn pg_url() -> String {
    std::env::var("LOCKBOX_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn my_url() -> String {
    std::env::var("LOCKBOX_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

async fn pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(3)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("database {url} is not available: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pg,
    My,
    Lite,
}

fn kind(url: &str) -> Kind {
    if url.starts_with("postgres") {
        Kind::Pg
    } else if url.starts_with("mysql") {
        Kind::My
    } else {
        Kind::Lite
    }
}

/// A fresh table `name (id BIGINT PRIMARY KEY, tenant INT, secret TEXT, secret_bi TEXT)`.
async fn table(db: &AnyPool, name: &str) {
    sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
        .execute(db)
        .await
        .unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {name} (id BIGINT PRIMARY KEY, tenant INT NOT NULL, secret TEXT, secret_bi VARCHAR(200))"
    ))
    .execute(db)
    .await
    .unwrap();
}

/// Insert rows `from..to` with `secret = 'value-{id}'` (NULL for every 50th).
async fn fill(db: &AnyPool, name: &str, from: i64, to: i64) {
    let mut i = from;
    while i < to {
        let end = (i + 1000).min(to);
        let vals: Vec<String> = (i..end)
            .map(|k| {
                if k % 50 == 0 {
                    format!("({k}, {}, NULL)", k % 7)
                } else {
                    format!("({k}, {}, 'value-{k}')", k % 7)
                }
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO {name} (id, tenant, secret) VALUES {}",
            vals.join(", ")
        ))
        .execute(db)
        .await
        .unwrap();
        i = end;
    }
}

fn original(id: i64) -> Option<String> {
    (id % 50 != 0).then(|| format!("value-{id}"))
}

async fn rows_any(
    db: &AnyPool,
    url: &str,
    name: &str,
) -> Vec<(i64, i64, Option<String>, Option<String>)> {
    let (int, text) = if kind(url) == Kind::My {
        ("SIGNED", "CHAR")
    } else {
        ("BIGINT", "TEXT")
    };
    sqlx::query(&format!(
        "SELECT id, CAST(tenant AS {int}), CAST(secret AS {text}), CAST(secret_bi AS {text}) FROM {name} ORDER BY id"
    ))
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        // The Any driver hands MariaDB text out as BLOB.
        let text = |i: usize| -> Option<String> {
            r.try_get::<Option<String>, _>(i).unwrap_or_else(|_| {
                r.get::<Option<Vec<u8>>, _>(i)
                    .map(|b| String::from_utf8(b).unwrap())
            })
        };
        (r.get(0), r.get(1), text(2), text(3))
    })
    .collect()
}

/// Every row decrypts, with its context, to its original value.
async fn check_all_decrypt(e: &Engine, db: &AnyPool, url: &str, name: &str, key: &str) -> usize {
    let h = e.key_handle(key).await.unwrap();
    let rs = rows_any(db, url, name).await;
    for (id, tenant, secret, _) in &rs {
        match (secret, original(*id)) {
            (None, None) => {}
            (Some(ct), Some(want)) => {
                assert!(ct.starts_with("lbx1:"), "row {id} not encrypted: {ct}");
                let ctx = format!("{name}.secret:{tenant}:{id}");
                let pt = h
                    .decrypt(ct, ctx.as_bytes(), &[])
                    .unwrap_or_else(|e| panic!("row {id} does not decrypt: {e}"));
                assert_eq!(String::from_utf8(pt).unwrap(), want, "row {id}");
                // Bound to its row: another row's context fails.
                let other = format!("{name}.secret:{tenant}:{}", id + 1);
                assert!(h.decrypt(ct, other.as_bytes(), &[]).is_err());
            }
            (got, want) => panic!("row {id}: {got:?} vs original {want:?}"),
        }
    }
    rs.len()
}

const CTX: &str = "{table}.{column}:{tenant}:{id}";

fn base<'a>(url: &'a str, name: &'a str) -> Vec<&'a str> {
    vec![
        "reencrypt",
        "run",
        "--db",
        url,
        "--table",
        name,
        "--column",
        "secret",
        "--key",
        "k",
        "--context",
        CTX,
    ]
}

/// The whole life of a column on one database.
async fn lifecycle(url: &str, name: &str) {
    let env = env(name);
    env.key("k");
    env.key("bi");
    let db = pool(url).await;
    table(&db, name).await;
    fill(&db, name, 1, 2001).await;
    let bi = [
        "--blind-index-column",
        "secret_bi",
        "--blind-index-key",
        "bi",
        "--blind-index-tenant",
        "{tenant}",
    ];

    // Dry run: counts, writes nothing.
    let mut a = base(url, name);
    a.extend(["--dry-run"]);
    let r = env.ok_json(&a);
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["actions"]["encrypt"], 1960);
    assert_eq!(r["actions"]["null"], 40);
    assert_eq!(
        rows_any(&db, url, name).await[0].2.as_deref(),
        Some("value-1")
    );

    // verify fails on plaintext.
    let mut v = vec![
        "--json",
        "reencrypt",
        "verify",
        "--db",
        url,
        "--table",
        name,
        "--column",
        "secret",
        "--key",
        "k",
        "--context",
        CTX,
    ];
    let out = env.run(&v);
    assert!(!out.status.success());
    let vr: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(vr["by_format"]["plaintext"], 1960);
    assert_eq!(vr["not_lockbox"], 1960);

    // plaintext -> encrypted, with the blind index; several workers on servers.
    let events = env.dir.join("events.jsonl");
    let mut a = base(url, name);
    a.extend(bi);
    a.extend([
        "--batch-size",
        "150",
        "--workers",
        "3",
        "--events",
        events.to_str().unwrap(),
    ]);
    let r = env.ok_json(&a);
    assert_eq!(r["rows_changed"], 1960, "{r}");
    assert_eq!(r["actions"]["encrypt"], 1960);
    assert_eq!(r["actions"]["blind-index"], 1960);
    assert_eq!(r["job_complete"], true);
    let ev = std::fs::read_to_string(&events).unwrap();
    let names: Vec<String> = ev
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["REENCRYPTION_STARTED", "REENCRYPTION_COMPLETED"]);
    let e = env.engine().await;
    assert_eq!(check_all_decrypt(&e, &db, url, name, "k").await, 2000);
    // Blind index: the engine computes the same value.
    let rs = rows_any(&db, url, name).await;
    let (id, tenant, _, bi_v) = &rs[1];
    let want = e
        .blind_index(
            "bi",
            &tenant.to_string(),
            "secret",
            &original(*id).unwrap(),
            lockbox::blind_index::Normalization::NONE,
            lockbox::blind_index::DEFAULT_TRUNCATION,
        )
        .await
        .unwrap();
    assert_eq!(bi_v.as_deref(), Some(want.as_str()));
    v.extend(bi);
    let vr = env.ok_json(&v[1..]);
    assert_eq!(vr["ok"], true, "{vr}");
    assert_eq!(vr["by_key_version"]["k/v1"], 1960);

    // Rerun: idempotent.
    let mut a = base(url, name);
    a.extend(bi);
    let r = env.ok_json(&a);
    assert_eq!(r["rows_changed"], 0, "{r}");
    assert_eq!(r["actions"]["current"], 1960);
    let before = rows_any(&db, url, name).await;

    // Rotate: only rows below the current version are rewrapped.
    env.rotate("k");
    sqlx::query(&format!(
        "INSERT INTO {name} (id, tenant, secret) VALUES (5001, 3, 'value-5001')"
    ))
    .execute(&db)
    .await
    .unwrap();
    let mut a = base(url, name);
    a.extend(bi);
    a.extend(["--progress", "json"]);
    let r = env.ok_json(&a);
    assert_eq!(r["actions"]["rewrap"], 1960, "{r}");
    assert_eq!(r["actions"]["encrypt"], 1);
    let e = env.engine().await;
    assert_eq!(check_all_decrypt(&e, &db, url, name, "k").await, 2001);
    let after = rows_any(&db, url, name).await;
    assert_ne!(before[1].2, after[1].2);
    assert_eq!(
        before[1].3, after[1].3,
        "blind index unchanged: its key did not rotate"
    );
    let vr = env.ok_json(&v[1..]);
    assert_eq!(vr["by_key_version"]["k/v2"], 1961, "{vr}");

    // Rotate the blind-index key: only the index is refreshed.
    env.rotate("bi");
    let out = env.run(&v);
    assert!(!out.status.success(), "stale blind indexes fail verify");
    let mut a = base(url, name);
    a.extend(bi);
    let r = env.ok_json(&a);
    assert_eq!(r["actions"]["blind-index"], 1961, "{r}");
    assert_eq!(r["actions"]["current"], 1961);
    let now = rows_any(&db, url, name).await;
    assert_eq!(after[1].2, now[1].2, "ciphertext left alone");
    assert!(now[1].3.as_deref().unwrap().starts_with("bi1:v2:"));
    let vr = env.ok_json(&v[1..]);
    assert_eq!(vr["ok"], true, "{vr}");

    // Back to plaintext: needs the explicit flag.
    let mut a = base(url, name);
    a.push("--to-plaintext");
    let err = env.fails(&a);
    assert!(err.contains("--i-understand-this-decrypts"), "{err}");
    a.push("--i-understand-this-decrypts");
    let r = env.ok_json(&a);
    assert_eq!(r["actions"]["decrypt"], 1961, "{r}");
    for (id, _, s, _) in rows_any(&db, url, name).await {
        assert_eq!(s, original(id), "row {id}");
    }
    // Status lists the jobs.
    let st = env.ok_json(&["reencrypt", "status", "--db", url]);
    assert!(
        st.as_array()
            .unwrap()
            .iter()
            .filter(|j| j["spec"]["table"] == name)
            .count()
            >= 5
    );
    sqlx::query(&format!("DROP TABLE {name}"))
        .execute(&db)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_lifecycle() {
    lifecycle(&pg_url(), "rx_life_pg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_lifecycle() {
    lifecycle(&my_url(), "rx_life_my").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_lifecycle() {
    let dir = std::env::temp_dir().join(format!("lockbox-rx-lite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.db");
    std::fs::File::create(&path).unwrap();
    let url = format!("sqlite://{}", path.display());
    lifecycle(&url, "rx_life_lite").await;
    let _ = std::fs::remove_dir_all(&dir);
}
