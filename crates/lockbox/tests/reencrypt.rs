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

/// Drops a test's table (it must exist: the test made it).
async fn drop_table(db: &AnyPool, name: &str) {
    sqlx::query(&format!("DROP TABLE {name}"))
        .execute(db)
        .await
        .unwrap();
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
            lockbox::blind_index::Normalization::ALL,
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
    drop_table(&db, name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_lifecycle() {
    lifecycle(&common::pg_url(), "rx_life_pg").await;
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

/// Fernet tokens made by Python `cryptography` (a real peer): `(keys, tokens)`
/// for `value-{id}` of each id, under an old key (rotated away from) and a new one.
fn python_fernet(ids: &[i64]) -> (String, String, Vec<String>) {
    let script = r#"
import json, sys
from cryptography.fernet import Fernet
old, new = Fernet.generate_key(), Fernet.generate_key()
ids = json.loads(sys.argv[1])
toks = [Fernet(old if i % 2 else new).encrypt(f"value-{i}".encode()).decode() for i in ids]
print(json.dumps({"old": old.decode(), "new": new.decode(), "tokens": toks}))
"#;
    let out = Command::new(common::python())
        .args(["-c", script, &serde_json::to_string(ids).unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["old"].as_str().unwrap().to_owned(),
        v["new"].as_str().unwrap().to_owned(),
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect(),
    )
}

/// Fernet (from Python) and Vault-format values (from an imported-format
/// Transit key) next to plaintext, on PostgreSQL and MariaDB.
async fn foreign(url: &str, name: &str) {
    let env = env(name);
    env.key("k");
    env.key("vk");
    let e = env.engine().await;
    let db = pool(url).await;
    table(&db, name).await;
    let ids: Vec<i64> = (1..=90).collect();
    let fern_ids: Vec<i64> = ids.iter().copied().filter(|i| i % 3 == 0).collect();
    let (old, new, toks) = python_fernet(&fern_ids);
    let mut tok = fern_ids.iter().zip(toks);
    for id in &ids {
        let v = match id % 3 {
            0 => tok.next().unwrap().1,
            1 => e
                .encrypt("vk", format!("value-{id}").as_bytes(), &[], &[], None)
                .await
                .unwrap(),
            _ => format!("value-{id}"),
        };
        sqlx::query(&format!(
            "INSERT INTO {name} (id, tenant, secret) VALUES ({id}, {}, '{v}')",
            id % 7
        ))
        .execute(&db)
        .await
        .unwrap();
    }
    let before = rows_any(&db, url, name).await;
    assert!(before[0].2.as_deref().unwrap().starts_with("vault:v1:"));
    assert!(before[2].2.as_deref().unwrap().starts_with("gAAAAA"));

    // Without --from fernet/vault those values are neither plaintext nor accepted: nothing is written.
    let err = env.fails(&base(url, name));
    assert!(err.contains("looks like a"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(rows_any(&db, url, name).await, before);

    // A wrong Fernet key: a clear error, nothing written.
    let wrong = "dGhpcyBpcyBub3QgdGhlIHJpZ2h0IGtleSBhdCBhbGw=";
    let mut a = base(url, name);
    a.extend([
        "--from",
        "plaintext,fernet,vault",
        "--vault-key",
        "vk",
        "--fernet-key",
        wrong,
    ]);
    let err = env.fails(&a);
    assert!(err.contains("Fernet token does not decrypt"), "{err}");
    assert_eq!(rows_any(&db, url, name).await, before);

    // With skip: the Fernet rows are reported and left alone, the rest converted.
    a.extend(["--on-bad-row", "skip"]);
    let r = env.ok_json(&a);
    assert_eq!(r["rows_bad"], 30, "{r}");
    assert_eq!(r["actions"]["vault"], 30);
    assert_eq!(r["actions"]["encrypt"], 30);
    let mid = rows_any(&db, url, name).await;
    for (b, m) in before.iter().zip(&mid) {
        if b.0 % 3 == 0 {
            assert_eq!(b, m, "skipped row untouched");
        } else {
            assert!(m.2.as_deref().unwrap().starts_with("lbx1:"));
        }
    }

    // The right keys (new first, then the old one): every row converted.
    let keys = format!("{new},{old}");
    let mut a = base(url, name);
    a.extend([
        "--from",
        "plaintext,fernet,vault",
        "--vault-key",
        "vk",
        "--fernet-key",
        &keys,
    ]);
    let r = env.ok_json(&a);
    assert_eq!(r["actions"]["fernet"], 30, "{r}");
    assert_eq!(r["actions"]["current"], 60);
    let h = e.key_handle("k").await.unwrap();
    for (id, tenant, s, _) in rows_any(&db, url, name).await {
        let ctx = format!("{name}.secret:{tenant}:{id}");
        let pt = h
            .decrypt(s.as_deref().unwrap(), ctx.as_bytes(), &[])
            .unwrap();
        assert_eq!(pt, format!("value-{id}").as_bytes());
    }
    drop_table(&db, name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_fernet_and_vault() {
    foreign(&common::pg_url(), "rx_foreign_pg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_fernet_and_vault() {
    foreign(&my_url(), "rx_foreign_my").await;
}

/// pgcrypto `pgp_sym_encrypt` values made by PostgreSQL itself.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_pgcrypto() {
    let url = common::pg_url();
    let name = "rx_pgp";
    let env = env(name);
    env.key("k");
    let db = pool(&url).await;
    for sql in [
        "CREATE EXTENSION IF NOT EXISTS pgcrypto".to_owned(),
        format!("DROP TABLE IF EXISTS {name}"),
        format!("CREATE TABLE {name} (id BIGINT PRIMARY KEY, tenant INT NOT NULL, secret BYTEA)"),
        format!(
            "INSERT INTO {name} SELECT g, g % 7, CASE WHEN g % 10 = 0 THEN convert_to('value-' || g, 'UTF8') \
             ELSE pgp_sym_encrypt('value-' || g, 'correct horse') END FROM generate_series(1, 200) g"
        ),
    ] {
        sqlx::query(&sql).execute(&db).await.unwrap();
    }
    let read = || async {
        sqlx::query(&format!(
            "SELECT id, tenant, encode(secret, 'hex') FROM {name} ORDER BY id"
        ))
        .fetch_all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.get::<i64, _>(0),
                r.get::<i32, _>(1),
                r.get::<String, _>(2),
            )
        })
        .collect::<Vec<_>>()
    };
    let before = read().await;
    let pass = env.dir.join("pass");
    std::fs::write(&pass, "wrong horse\n").unwrap();
    let mut a = base(&url, name);
    a.extend([
        "--from",
        "plaintext,pgcrypto",
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    let err = env.fails(&a);
    assert!(
        err.contains("pgcrypto") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(read().await, before);

    std::fs::write(&pass, "correct horse\n").unwrap();
    let r = env.ok_json(&a);
    assert_eq!(r["actions"]["pgcrypto"], 180, "{r}");
    assert_eq!(r["actions"]["encrypt"], 20);
    let e = env.engine().await;
    let h = e.key_handle("k").await.unwrap();
    for (id, tenant, hexv) in read().await {
        let ct = String::from_utf8(hex::decode(hexv).unwrap()).unwrap();
        let ctx = format!("{name}.secret:{tenant}:{id}");
        let pt = h.decrypt(&ct, ctx.as_bytes(), &[]).unwrap();
        assert_eq!(pt, format!("value-{id}").as_bytes());
    }
    // Rerun: nothing to do.
    let r = env.ok_json(&a);
    assert_eq!(r["rows_changed"], 0, "{r}");
    drop_table(&db, name).await;
}

/// Bad input: a clear error before anything is written (or, with
/// `--on-bad-row skip`, the row reported and left alone).
async fn bad_input(url: &str, name: &str) {
    let env = env(name);
    env.key("k");
    let db = pool(url).await;
    table(&db, name).await;
    fill(&db, name, 1, 101).await;
    sqlx::query(&format!(
        "INSERT INTO {name} (id, tenant, secret) VALUES (200, 1, 'lbx9:AAAA'), (201, 1, 'vault:v1:AAAA'), (202, 1, 'lbx1:notbase64!')"
    ))
    .execute(&db)
    .await
    .unwrap();
    let before = rows_any(&db, url, name).await;
    let run = |extra: &[&str]| {
        let mut a = vec!["reencrypt", "run", "--db", url];
        if !extra.contains(&"--table") {
            a.extend(["--table", name]);
        }
        if !extra.contains(&"--key") {
            a.extend(["--key", "k"]);
        }
        a.extend_from_slice(extra);
        env.fails(&a)
    };
    let e = run(&["--column", "secret", "--table", "no_such_table"]);
    assert!(e.contains("table no_such_table does not exist"), "{e}");
    let e = run(&["--column", "nope"]);
    assert!(e.contains("column nope does not exist"), "{e}");
    let e = run(&["--column", "secret", "--pk", "nope"]);
    assert!(e.contains("primary key column nope does not exist"), "{e}");
    let e = run(&["--column", "secret", "--pk", "tenant"]);
    assert!(e.contains("not unique"), "{e}");
    let e = run(&["--column", "secret", "--pk", "secret_bi"]);
    assert!(e.contains("integer key"), "{e}");
    let e = run(&["--column", "secret; DROP TABLE x"]);
    assert!(e.contains("invalid identifier"), "{e}");
    let e = run(&["--column", "secret", "--key", "no-such-key"]);
    assert!(e.contains("no-such-key"), "{e}");
    let e = run(&["--column", "secret", "--context", "{nope}:{id}"]);
    assert!(e.contains("context column nope does not exist"), "{e}");
    let e = run(&[
        "--column",
        "secret",
        "--blind-index-column",
        "secret_bi",
        "--blind-index-key",
        "k",
        "--blind-index-normalize",
        "upper",
    ]);
    assert!(
        e.contains("--blind-index-normalize: unknown \"upper\""),
        "{e}"
    );
    let e = run(&[
        "--column",
        "secret",
        "--blind-index-column",
        "secret_bi",
        "--blind-index-key",
        "k",
        "--blind-index-truncation",
        "64",
    ]);
    assert!(e.contains("blind index"), "{e}");
    let e = run(&["--column", "secret", "--resume", "never-started"]);
    assert!(e.contains("no job never-started"), "{e}");
    // Values that are neither plaintext nor a known format.
    let e = run(&["--column", "secret"]);
    assert!(e.contains("3 row(s) cannot be converted"), "{e}");
    assert!(e.contains("nothing was written"), "{e}");
    assert_eq!(rows_any(&db, url, name).await, before);

    // NULL keys (a column without a key constraint).
    sqlx::query(&format!("CREATE TABLE {name}_nk (k BIGINT, secret TEXT)"))
        .execute(&db)
        .await
        .ok();
    sqlx::query(&format!(
        "INSERT INTO {name}_nk VALUES (1, 'a'), (NULL, 'b')"
    ))
    .execute(&db)
    .await
    .unwrap();
    let e = env.fails(&[
        "reencrypt",
        "run",
        "--db",
        url,
        "--table",
        &format!("{name}_nk"),
        "--pk",
        "k",
        "--column",
        "secret",
        "--key",
        "k",
    ]);
    assert!(e.contains("NULL"), "{e}");
    sqlx::query(&format!("DROP TABLE {name}_nk"))
        .execute(&db)
        .await
        .unwrap();

    // Skip: the three are reported and left alone, the rest encrypted.
    let job = format!("skip-{}-{}", std::process::id(), name);
    let r = env.ok_json(&[
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
        "--on-bad-row",
        "skip",
        "--job",
        &job,
    ]);
    assert_eq!(r["rows_bad"], 3, "{r}");
    assert_eq!(r["actions"]["encrypt"], 98);
    let bad: Vec<i64> = r["bad_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["pk"].as_i64().unwrap())
        .collect();
    assert_eq!(bad, [200, 201, 202]);
    let after = rows_any(&db, url, name).await;
    assert_eq!(after[after.len() - 3..], before[before.len() - 3..]);
    // The same job id with other options is refused.
    let e = env.fails(&[
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
        "{id}",
        "--job",
        &job,
    ]);
    assert!(e.contains("other options"), "{e}");
    drop_table(&db, name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_bad_input() {
    bad_input(&common::pg_url(), "rx_bad_pg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_bad_input() {
    bad_input(&my_url(), "rx_bad_my").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_bad_input() {
    let dir = std::env::temp_dir().join(format!("lockbox-rx-lite-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.db");
    std::fs::File::create(&path).unwrap();
    bad_input(&format!("sqlite://{}", path.display()), "rx_bad_lite").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// How many rows hold a Lockbox ciphertext.
async fn converted(db: &AnyPool, url: &str, name: &str) -> i64 {
    let int = if kind(url) == Kind::My {
        "SIGNED"
    } else {
        "BIGINT"
    };
    sqlx::query(&format!(
        "SELECT CAST(COUNT(*) AS {int}) FROM {name} WHERE secret LIKE 'lbx1:%'"
    ))
    .fetch_one(db)
    .await
    .unwrap()
    .get(0)
}

/// xorshift64*: random kill points (the seed is printed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Kill `lockbox reencrypt run` with SIGKILL at random points at least 20
/// times on a 100 000-row table, finish the job, then check that every row
/// decrypts to its original value.
async fn crash(url: &str, name: &str) {
    const ROWS: i64 = 100_000;
    let env = env(name);
    env.key("k");
    let db = pool(url).await;
    table(&db, name).await;
    fill(&db, name, 1, ROWS + 1).await;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let job = format!("crash-{}-{seed}", std::process::id());
    let mut args = base(url, name);
    args.extend(["--job", &job, "--batch-size", "250", "--progress", "none"]);
    if kind(url) != Kind::Lite {
        args.extend(["--workers", "2"]);
    }
    let mut kills = 0;
    let mut finished_early = 0;
    let start = Instant::now();
    while kills < 22 {
        let mut child = env
            .cmd(&args)
            .args(["--max-rows-per-second", "2500"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a random point after this run has committed a batch (a
        // slow start, e.g. a loaded CI machine, must not eat every kill).
        let before = converted(&db, url, name).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while converted(&db, url, name).await == before
            && child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.next() % 400)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        } else {
            finished_early += 1;
            assert!(finished_early < 3, "the job finished before {kills} kills");
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "crash loop too slow"
        );
    }
    // The rows are either untouched or fully converted: never half-written.
    let rs = rows_any(&db, url, name).await;
    let done = rs
        .iter()
        .filter(|r| r.2.as_deref().is_some_and(|s| s.starts_with("lbx1:")))
        .count();
    println!("after {kills} kills: {done} of {} rows converted", rs.len());
    assert!(
        done > 0 && done < 98_000,
        "kills must land mid-job ({done} converted)"
    );
    for (id, _, s, _) in &rs {
        if let Some(s) = s {
            assert!(
                s.starts_with("lbx1:") || *s == format!("value-{id}"),
                "row {id}: {s}"
            );
        }
    }
    // Resume until complete (a killed worker's lock may take a moment to go).
    let mut complete = false;
    for _ in 0..10 {
        let mut a = vec!["--json"];
        a.extend(args.iter().copied());
        let out = env.run(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        if r["job_complete"] == true {
            complete = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(complete);
    let e = env.engine().await;
    assert_eq!(
        check_all_decrypt(&e, &db, url, name, "k").await,
        ROWS as usize
    );
    let st = env.ok_json(&["reencrypt", "status", "--db", url, "--job", &job]);
    assert_eq!(st[0]["state"], "done");
    assert_eq!(st[0]["batches"], st[0]["batches_done"]);
    drop_table(&db, name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_crash_kill9() {
    crash(&common::pg_url(), "rx_crash_pg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_crash_kill9() {
    crash(&my_url(), "rx_crash_my").await;
}

/// `--max-rows-per-second` throttles; `--progress json` writes progress lines
/// (rows/s, ETA) to stderr.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_throttle_and_json_progress() {
    let url = common::pg_url();
    let name = "rx_throttle_pg";
    let env = env(name);
    env.key("k");
    let db = pool(&url).await;
    table(&db, name).await;
    fill(&db, name, 1, 601).await;
    let mut a = vec!["--json"];
    a.extend(base(&url, name));
    a.extend([
        "--batch-size",
        "100",
        "--max-rows-per-second",
        "300",
        "--progress",
        "json",
    ]);
    let t = Instant::now();
    let out = env.run(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1600),
        "{:?}",
        t.elapsed()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["rows_changed"], 588);
    let lines: Vec<Value> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let progress: Vec<&Value> = lines.iter().filter(|l| l["event"] == "progress").collect();
    assert!(progress.len() >= 2, "{lines:?}");
    assert!(progress.iter().any(|p| p["eta_secs"].is_number()));
    let last = progress.last().unwrap();
    assert_eq!(last["rows_done"], 600);
    assert_eq!(last["rows_total"], 600);
    assert!(last["rows_per_sec"].as_f64().unwrap() <= 400.0);
    assert!(lines.iter().any(|l| l["event"] == "REENCRYPTION_STARTED"));
    assert!(lines.iter().any(|l| l["event"] == "REENCRYPTION_COMPLETED"));
    drop_table(&db, name).await;
}

/// Two processes started at once with the same `--job` (as on two machines):
/// one creates the job, the other joins; batches are shared, every row is
/// converted exactly once, and the job completes once.
async fn two_processes(url: &str, name: &str) {
    let env = env(name);
    env.key("k");
    let db = pool(url).await;
    table(&db, name).await;
    fill(&db, name, 1, 20_001).await;
    let job = format!("join-{}-{name}", std::process::id());
    let events = env.dir.join("events.jsonl");
    let mut args = vec!["--json"];
    args.extend(base(url, name));
    args.extend([
        "--job",
        &job,
        "--batch-size",
        "200",
        "--workers",
        "2",
        "--max-rows-per-second",
        "8000",
        "--events",
        events.to_str().unwrap(),
    ]);
    let children: Vec<_> = (0..2)
        .map(|_| {
            env.cmd(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut changed = 0;
    let mut seen = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        let this = r["rows_seen"].as_i64().unwrap();
        assert!(this > 0, "both processes took batches: {r}");
        seen += this;
        changed += r["rows_changed"].as_i64().unwrap();
    }
    assert_eq!(seen, 20_000);
    assert_eq!(changed, 19_600);
    let ev = std::fs::read_to_string(&events).unwrap();
    let count = |n: &str| ev.lines().filter(|l| l.contains(n)).count();
    assert_eq!(count("REENCRYPTION_STARTED"), 2, "{ev}");
    assert_eq!(count("REENCRYPTION_COMPLETED"), 1, "{ev}");
    let e = env.engine().await;
    assert_eq!(check_all_decrypt(&e, &db, url, name, "k").await, 20_000);
    drop_table(&db, name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_two_processes_one_job() {
    two_processes(&common::pg_url(), "rx_join_pg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_two_processes_one_job() {
    two_processes(&my_url(), "rx_join_my").await;
}

/// With `--addr`, REENCRYPTION_STARTED and REENCRYPTION_COMPLETED go to the
/// server's audit log (through `sys/events`), chained with its other entries.
#[tokio::test(flavor = "multi_thread")]
async fn events_reach_the_servers_audit_log() {
    let name = "rx_events_sqlite";
    let env = env(name);
    env.key("k");
    let audit = env.dir.join("audit.log");
    let srv = common::start(
        &[
            "--dev",
            "--dev-root-token",
            "rx-root",
            "--audit-file",
            audit.to_str().unwrap(),
        ],
        &[],
    );
    let path = env.dir.join("app.db");
    std::fs::File::create(&path).unwrap();
    let url = format!("sqlite://{}", path.display());
    let db = pool(&url).await;
    table(&db, name).await;
    fill(&db, name, 1, 51).await;
    let mut a = vec!["--addr", srv.addr.as_str(), "--token", "rx-root"];
    a.extend(base(&url, name));
    let r = env.ok_json(&a);
    assert_eq!(r["job_complete"], true, "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&audit).unwrap_or_default();
        let started = log.contains("\"event\":\"REENCRYPTION_STARTED\"");
        let completed = log.contains("\"event\":\"REENCRYPTION_COMPLETED\"");
        if started && completed {
            assert!(log.contains(&format!("\"table\":\"{name}\"")), "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events not in the audit log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A server that cannot be reached: the job still runs, with a warning.
    fill(&db, name, 51, 61).await;
    let mut a = vec!["--addr", "http://127.0.0.1:9", "--token", "x"];
    a.extend(base(&url, name));
    let out = env.run(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not recorded in the server's audit log"));
}
