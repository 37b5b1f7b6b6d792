#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! One conformance suite, run against both backends.
//!
//! Every test function below runs twice: `sqlite::NAME` on a fresh temporary
//! file and `postgres::NAME` in a fresh schema of the database at
//! `LOCKBOX_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! dropped at the end. PostgreSQL tests FAIL (never skip) if the server is
//! unreachable; `scripts/test` starts it. The `sqlite_only` module holds what
//! only SQLite has (files, in-memory, crash safety).

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockbox_store::{KeyRow, Store, StoreError, Usage, VersionRow};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Row as _;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

enum Place {
    Sqlite { dir: PathBuf, path: PathBuf },
    Postgres { base_url: String, schema: String },
}

/// A migrated store in a fresh place, plus raw access for tests that need to
/// plant bad rows.
struct Harness {
    store: Store,
    url: String,
    place: Place,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

fn pg_base_url() -> String {
    std::env::var("LOCKBOX_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lockbox-store-test-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Harness {
    async fn new(backend: Backend) -> Harness {
        let (url, place) = match backend {
            Backend::Sqlite => {
                let dir = temp_dir();
                let path = dir.join("lockbox.db");
                (
                    format!("sqlite://{}", path.display()),
                    Place::Sqlite { dir, path },
                )
            }
            Backend::Postgres => {
                let base_url = pg_base_url();
                let schema = format!("lbx_test_{}", unique_suffix());
                let sep = if base_url.contains('?') { '&' } else { '?' };
                (
                    format!("{base_url}{sep}schema={schema}"),
                    Place::Postgres { base_url, schema },
                )
            }
        };
        let store = Store::connect(&url).await.unwrap_or_else(|e| {
            panic!("cannot connect to the test store ({e}); is PostgreSQL running? (scripts/test starts it)")
        });
        store.migrate().await.unwrap();
        Harness { store, url, place }
    }

    /// A second, independent store (its own pool) on the same database.
    async fn other_store(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }

    /// Runs raw SQL outside the store (to plant rows the store would never write).
    async fn raw(&self, sql: &str) {
        match &self.place {
            Place::Sqlite { path, .. } => {
                let opts = SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
                    .unwrap();
                sqlx::query(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
            Place::Postgres { base_url, schema } => {
                let opts = PgConnectOptions::from_str(base_url)
                    .unwrap()
                    .options([("search_path", schema.as_str())]);
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
                    .unwrap();
                sqlx::query(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    /// Runs a raw scalar query returning one BIGINT.
    async fn raw_i64(&self, sql: &str) -> i64 {
        match &self.place {
            Place::Sqlite { path, .. } => {
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(SqliteConnectOptions::new().filename(path))
                    .await
                    .unwrap();
                let v = sqlx::query(sql).fetch_one(&pool).await.unwrap().get(0);
                pool.close().await;
                v
            }
            Place::Postgres { base_url, schema } => {
                let opts = PgConnectOptions::from_str(base_url)
                    .unwrap()
                    .options([("search_path", schema.as_str())]);
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
                    .unwrap();
                let v = sqlx::query(sql).fetch_one(&pool).await.unwrap().get(0);
                pool.close().await;
                v
            }
        }
    }

    async fn cleanup(&self) {
        match &self.place {
            Place::Sqlite { dir, .. } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Place::Postgres { base_url, schema } => {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(base_url)
                    .await
                    .unwrap();
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
        }
    }
}

/// Runs one test body on a fresh harness, and cleans up even if it panics.
async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let h = Arc::new(Harness::new(backend).await);
    let result = tokio::spawn(body(Arc::clone(&h))).await;
    h.cleanup().await;
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test task failed: {e}");
    }
}

/// Generates `sqlite::NAME` and `postgres::NAME` for each test function.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(super::Backend::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(super::Backend::Postgres, super::$name).await;
                }
            )*
        }
    };
}

conformance!(
    migrate_is_idempotent,
    migrate_refuses_a_newer_schema,
    meta_put_get_if_absent,
    meta_put_if_absent_concurrent_has_one_winner,
    meta_list_delete,
    audit_append_query,
    key_insert_get_list_load_all,
    key_insert_already_exists,
    key_insert_rejects_bad_input,
    key_update_generation_checks,
    key_update_concurrent_exactly_one_wins,
    key_update_duplicate_version_rolls_back,
    key_update_delete_below,
    key_update_delete_all,
    usage_add_get,
    u32_range,
    subscribe_hears_other_stores,
    load_all_performance,
);

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn key(name: &str) -> KeyRow {
    KeyRow {
        name: name.to_owned(),
        key_id: 0x1234_5678,
        key_type: "aes256-gcm96".to_owned(),
        derived: false,
        convergent: true,
        exportable: false,
        allow_plaintext_backup: true,
        deletion_allowed: false,
        auto_rotate_period_secs: 86_400,
        min_decryption_version: 1,
        min_encryption_version: 0,
        latest_version: 1,
        min_available_version: 1,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_001,
        last_rotated_at: 1_700_000_002,
        deleted_at: None,
        destroyed_at: Some(-5),
        destroyed_by: None,
        generation: 1,
        extra: r#"{"a":1}"#.to_owned(),
        mac: vec![0, 1, 2, 255],
    }
}

fn ver(name: &str, version: u32) -> VersionRow {
    VersionRow {
        name: name.to_owned(),
        version,
        created_at: 1_700_000_000 + i64::from(version),
        sealed: format!("sealed:{name}:{version}").into_bytes(),
    }
}

fn vers(name: &str, range: std::ops::RangeInclusive<u32>) -> Vec<VersionRow> {
    range.map(|v| ver(name, v)).collect()
}

/// `row` as the next generation, with a marker in `extra`.
fn next(row: &KeyRow, marker: &str) -> KeyRow {
    let mut r = row.clone();
    r.generation = row.generation + 1;
    r.updated_at += 1;
    r.extra = format!(r#"{{"marker":"{marker}"}}"#);
    r
}

async fn get(store: &Store, name: &str) -> (KeyRow, Vec<VersionRow>) {
    store.key_get(name).await.unwrap().expect("key exists")
}

fn version_numbers(vs: &[VersionRow]) -> Vec<u32> {
    vs.iter().map(|v| v.version).collect()
}

// ---------------------------------------------------------------------------
// Tests (each runs on both backends)
// ---------------------------------------------------------------------------

async fn migrate_is_idempotent(h: Arc<Harness>) {
    // Already migrated once by the harness; again, and from several stores at once.
    h.store.migrate().await.unwrap();
    h.store.migrate().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = h.other_store().await;
        tasks.push(tokio::spawn(async move { s.migrate().await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let steps = h
        .raw_i64("SELECT COUNT(*) FROM lockbox_schema_migrations")
        .await;
    let distinct = h
        .raw_i64("SELECT COUNT(DISTINCT version) FROM lockbox_schema_migrations")
        .await;
    assert!(steps >= 1);
    assert_eq!(steps, distinct, "each step is recorded once");
    // The schema works after all that.
    h.store.meta_put("m", b"v").await.unwrap();
    assert_eq!(h.store.meta_get("m").await.unwrap(), Some(b"v".to_vec()));
    let expected = match h.place {
        Place::Sqlite { .. } => "sqlite",
        Place::Postgres { .. } => "postgres",
    };
    assert_eq!(h.store.backend(), expected);
}

async fn migrate_refuses_a_newer_schema(h: Arc<Harness>) {
    h.raw("INSERT INTO lockbox_schema_migrations (version, applied_at) VALUES (999999, 0)")
        .await;
    match h.store.migrate().await {
        Err(StoreError::Invalid(m)) => assert!(m.contains("newer"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

async fn meta_put_get_if_absent(h: Arc<Harness>) {
    let s = &h.store;
    assert_eq!(s.meta_get("seal").await.unwrap(), None);
    s.meta_put("seal", b"one").await.unwrap();
    assert_eq!(s.meta_get("seal").await.unwrap(), Some(b"one".to_vec()));
    s.meta_put("seal", b"two").await.unwrap();
    assert_eq!(s.meta_get("seal").await.unwrap(), Some(b"two".to_vec()));

    assert!(!s.meta_put_if_absent("seal", b"three").await.unwrap());
    assert_eq!(s.meta_get("seal").await.unwrap(), Some(b"two".to_vec()));
    assert!(s.meta_put_if_absent("token", b"t").await.unwrap());
    assert_eq!(s.meta_get("token").await.unwrap(), Some(b"t".to_vec()));

    // Empty and binary values round-trip exactly.
    s.meta_put("empty", b"").await.unwrap();
    assert_eq!(s.meta_get("empty").await.unwrap(), Some(Vec::new()));
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    s.meta_put("binary", &binary).await.unwrap();
    assert_eq!(s.meta_get("binary").await.unwrap(), Some(binary));

    // Invalid keys are refused on both backends alike.
    assert!(matches!(
        s.meta_put("", b"x").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.meta_put("a\0b", b"x").await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.meta_put_if_absent("", b"x").await,
        Err(StoreError::Invalid(_))
    ));
}

async fn meta_list_delete(h: Arc<Harness>) {
    let s = &h.store;
    for n in [
        "policy/b",
        "policy/a",
        "policyx",
        "token/1",
        "policy/\u{e9}",
    ] {
        s.meta_put(n, n.as_bytes()).await.unwrap();
    }
    let names: Vec<String> = s
        .meta_list("policy/")
        .await
        .unwrap()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(n.as_bytes(), v.as_slice());
            n
        })
        .collect();
    assert_eq!(names, ["policy/a", "policy/b", "policy/\u{e9}"]);
    assert!(s.meta_list("nothing/").await.unwrap().is_empty());
    assert!(matches!(s.meta_list("").await, Err(StoreError::Invalid(_))));
    assert!(s.meta_delete("policy/a").await.unwrap());
    assert!(!s.meta_delete("policy/a").await.unwrap());
    assert_eq!(s.meta_get("policy/a").await.unwrap(), None);
    assert_eq!(s.meta_list("policy/").await.unwrap().len(), 2);
}

async fn audit_append_query(h: Arc<Harness>) {
    use lockbox_store::{AuditFilter, AuditRow};
    let s = &h.store;
    let row = |seq: u64, time: i64, key: Option<&str>, outcome: &str| AuditRow {
        segment: "seg1".into(),
        seq,
        time,
        operation: "encrypt".into(),
        key: key.map(str::to_owned),
        outcome: outcome.into(),
        entry: format!(r#"{{"seq":{seq}}}"#),
    };
    let rows = vec![
        row(0, 100, Some("a"), "ok"),
        row(1, 101, Some("b"), "error"),
        row(2, 102, None, "ok"),
        row(3, 103, Some("a"), "error"),
    ];
    s.audit_append(&rows).await.unwrap();
    s.audit_append(&[]).await.unwrap();
    let all = s
        .audit_query(&AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all, rows);
    let q = s
        .audit_query(&AuditFilter {
            key: Some("a".into()),
            outcome: Some("error".into()),
            since: Some(101),
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(q, vec![rows[3].clone()]);
    let q = s
        .audit_query(&AuditFilter {
            until: Some(101),
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(q, vec![rows[0].clone()]);
    // A repeated (segment, seq) is refused and the whole batch rolls back.
    let again = vec![row(4, 104, None, "ok"), row(3, 105, None, "ok")];
    assert!(matches!(
        s.audit_append(&again).await,
        Err(StoreError::Conflict)
    ));
    let n = s
        .audit_query(&AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(n, 4);
}

async fn meta_put_if_absent_concurrent_has_one_winner(h: Arc<Harness>) {
    for round in 0..5 {
        let key = format!("init-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            // Half share the harness's pool, half have their own (like other servers).
            let s = if i % 2 == 0 {
                h.store.clone()
            } else {
                h.other_store().await
            };
            let (key, barrier) = (key.clone(), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                s.meta_put_if_absent(&key, &[i]).await.unwrap().then_some(i)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            if let Some(i) = t.await.unwrap() {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "exactly one winner, got {winners:?}");
        assert_eq!(h.store.meta_get(&key).await.unwrap(), Some(winners));
    }
}

async fn key_insert_get_list_load_all(h: Arc<Harness>) {
    let s = &h.store;
    // Names chosen so that byte order differs from most locale orders.
    let names = [
        "beta", "Alpha", "alpha", "Zeta", "äther", "a b", "a-b", "a_b",
    ];
    for (i, n) in names.iter().enumerate() {
        let mut row = key(n);
        row.key_id = u32::try_from(i).unwrap();
        row.destroyed_by = (i % 2 == 0).then(|| format!("user-{i}"));
        row.deleted_at = (i % 3 == 0).then_some(1_800_000_000);
        let count = u32::try_from(i % 4).unwrap();
        let versions = (1..=count).map(|v| ver(n, v)).collect::<Vec<_>>();
        s.key_insert(&row, &versions).await.unwrap();
    }
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort_unstable(); // byte order

    for (i, n) in names.iter().enumerate() {
        let (row, versions) = get(s, n).await;
        assert_eq!(row.name, *n);
        assert_eq!(row.key_id, u32::try_from(i).unwrap());
        let mut expected = key(n);
        expected.key_id = row.key_id;
        expected.destroyed_by = (i % 2 == 0).then(|| format!("user-{i}"));
        expected.deleted_at = (i % 3 == 0).then_some(1_800_000_000);
        assert_eq!(row, expected);
        let count = u32::try_from(i % 4).unwrap();
        assert_eq!(versions, (1..=count).map(|v| ver(n, v)).collect::<Vec<_>>());
    }
    assert_eq!(s.key_get("missing").await.unwrap(), None);

    let list = s.key_list().await.unwrap();
    assert_eq!(
        list.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        sorted
    );

    let all = s.key_load_all().await.unwrap();
    assert_eq!(all.len(), names.len());
    for (loaded, name) in all.iter().zip(&sorted) {
        assert_eq!(loaded.0.name, *name);
        assert_eq!(&get(s, name).await, loaded);
    }
    // Another store sees the same.
    let other = h.other_store().await;
    assert_eq!(other.key_load_all().await.unwrap(), all);
}

async fn key_insert_already_exists(h: Arc<Harness>) {
    let s = &h.store;
    s.key_insert(&key("k"), &vers("k", 1..=2)).await.unwrap();
    let mut different = key("k");
    different.key_type = "chacha20-poly1305".to_owned();
    assert_eq!(
        s.key_insert(&different, &vers("k", 3..=3)).await,
        Err(StoreError::AlreadyExists)
    );
    assert_eq!(get(s, "k").await, (key("k"), vers("k", 1..=2)));

    // Eight concurrent creators of one name: exactly one succeeds.
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let s = if i % 2 == 0 {
            h.store.clone()
        } else {
            h.other_store().await
        };
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let mut row = key("race");
            row.key_id = i;
            barrier.wait().await;
            s.key_insert(&row, &vers("race", 1..=3)).await.map(|()| i)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(i) => winners.push(i),
            Err(StoreError::AlreadyExists) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (row, versions) = get(s, "race").await;
    assert_eq!(row.key_id, winners[0]);
    assert_eq!(versions, vers("race", 1..=3));
}

async fn key_insert_rejects_bad_input(h: Arc<Harness>) {
    let s = &h.store;
    let cases: Vec<(KeyRow, Vec<VersionRow>)> = vec![
        (key(""), vec![]),
        (key("nul\0name"), vec![]),
        (key(&"x".repeat(lockbox_store::MAX_NAME_LEN + 1)), vec![]),
        (key("a"), vec![ver("b", 1)]),
        (key("a"), vec![ver("a", 1), ver("a", 1)]),
        (
            KeyRow {
                extra: "\0".to_owned(),
                ..key("a")
            },
            vec![],
        ),
    ];
    for (row, versions) in cases {
        let r = s.key_insert(&row, &versions).await;
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    }
    assert!(
        s.key_list().await.unwrap().is_empty(),
        "nothing was written"
    );
    // The longest allowed name works.
    let long = "y".repeat(lockbox_store::MAX_NAME_LEN);
    s.key_insert(&key(&long), &vers(&long, 1..=1))
        .await
        .unwrap();
    assert_eq!(get(s, &long).await.1.len(), 1);
}

async fn key_update_generation_checks(h: Arc<Harness>) {
    let s = &h.store;
    let v1 = key("k");
    s.key_insert(&v1, &vers("k", 1..=1)).await.unwrap();

    // The right generation: the row is replaced, the version added.
    let mut v2 = next(&v1, "second");
    v2.latest_version = 2;
    v2.mac = vec![9; 32];
    v2.key_type = "changed".to_owned();
    s.key_update(&v2, 1, &[ver("k", 2)], None, false)
        .await
        .unwrap();
    assert_eq!(get(s, "k").await, (v2.clone(), vers("k", 1..=2)));

    // A stale generation: Conflict, nothing written.
    let stale = next(&v1, "stale");
    assert_eq!(
        s.key_update(&stale, 1, &[ver("k", 3)], Some(2), false)
            .await,
        Err(StoreError::Conflict)
    );
    assert_eq!(get(s, "k").await, (v2.clone(), vers("k", 1..=2)));

    // The new generation must be expected + 1.
    for bad_generation in [2, 4, 0, i64::MIN] {
        let mut bad = next(&v2, "bad");
        bad.generation = bad_generation;
        assert!(matches!(
            s.key_update(&bad, 2, &[], None, false).await,
            Err(StoreError::Invalid(_))
        ));
    }
    let mut overflow = v2.clone();
    overflow.generation = i64::MIN;
    assert!(matches!(
        s.key_update(&overflow, i64::MAX, &[], None, false).await,
        Err(StoreError::Invalid(_))
    ));
    // A version of another key is refused.
    assert!(matches!(
        s.key_update(&next(&v2, "x"), 2, &[ver("other", 3)], None, false)
            .await,
        Err(StoreError::Invalid(_))
    ));
    // An unknown key.
    assert_eq!(
        s.key_update(&next(&key("nope"), "x"), 1, &[], None, false)
            .await,
        Err(StoreError::NotFound)
    );
    assert_eq!(get(s, "k").await, (v2, vers("k", 1..=2)));
}

async fn key_update_concurrent_exactly_one_wins(h: Arc<Harness>) {
    const UPDATERS: usize = 4;
    h.store
        .key_insert(&key("k"), &vers("k", 1..=1))
        .await
        .unwrap();
    let stores: Vec<Store> = {
        let mut v = vec![h.store.clone()];
        for _ in 1..UPDATERS {
            v.push(h.other_store().await);
        }
        v
    };
    for round in 0..10u32 {
        let (current, _) = get(&h.store, "k").await;
        let barrier = Arc::new(tokio::sync::Barrier::new(UPDATERS));
        let mut tasks = Vec::new();
        for (i, s) in stores.iter().enumerate() {
            let (s, current, barrier) = (s.clone(), current.clone(), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                let marker = format!("round{round}-updater{i}");
                let mut row = next(&current, &marker);
                row.latest_version = round + 2;
                let mut v = ver("k", round + 2);
                v.sealed = marker.clone().into_bytes();
                barrier.wait().await;
                let r = s
                    .key_update(&row, current.generation, &[v], None, false)
                    .await;
                (marker, r)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (marker, Ok(())) => winners.push(marker),
                (_, Err(StoreError::Conflict)) => {}
                (_, Err(e)) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let (row, versions) = get(&h.store, "k").await;
        assert_eq!(row.generation, current.generation + 1);
        assert!(
            row.extra.contains(&winners[0]),
            "the winner's row is stored"
        );
        assert_eq!(
            version_numbers(&versions),
            (1..=round + 2).collect::<Vec<_>>()
        );
        let last = versions.last().unwrap();
        assert_eq!(
            last.sealed,
            winners[0].as_bytes(),
            "only the winner's version"
        );
    }
}

async fn key_update_duplicate_version_rolls_back(h: Arc<Harness>) {
    let s = &h.store;
    s.key_insert(&key("k"), &vers("k", 1..=3)).await.unwrap();
    let before = get(s, "k").await;
    // Version 4 is new, version 2 exists: the whole update is rolled back,
    // including the row, the deletion and version 4.
    let mut row = next(&key("k"), "dup");
    row.latest_version = 4;
    let mut dup = ver("k", 2);
    dup.sealed = b"replacement".to_vec();
    assert_eq!(
        s.key_update(&row, 1, &[ver("k", 4), dup], Some(2), false)
            .await,
        Err(StoreError::Conflict)
    );
    assert_eq!(get(s, "k").await, before);
    // The same update without the duplicate goes through (nothing was left locked).
    s.key_update(&row, 1, &[ver("k", 4)], Some(2), false)
        .await
        .unwrap();
    let (stored, versions) = get(s, "k").await;
    assert_eq!(stored, row);
    assert_eq!(version_numbers(&versions), vec![2, 3, 4]);
}

async fn key_update_delete_below(h: Arc<Harness>) {
    let s = &h.store;
    s.key_insert(&key("k"), &vers("k", 1..=5)).await.unwrap();
    let mut row = key("k");
    for (below, expected) in [
        (0, vec![1, 2, 3, 4, 5]),
        (1, vec![1, 2, 3, 4, 5]),
        (3, vec![3, 4, 5]),
        (3, vec![3, 4, 5]),
        (5, vec![5]),
    ] {
        let mut new = next(&row, "trim");
        new.min_available_version = below;
        s.key_update(&new, row.generation, &[], Some(below), false)
            .await
            .unwrap();
        let (stored, versions) = get(s, "k").await;
        assert_eq!(stored, new);
        assert_eq!(version_numbers(&versions), expected);
        assert_eq!(
            versions,
            expected.iter().map(|v| ver("k", *v)).collect::<Vec<_>>()
        );
        row = new;
    }
    // Deleting below, then adding, in one update (e.g. rotate and trim).
    let new = next(&row, "rotate+trim");
    s.key_update(&new, row.generation, &[ver("k", 6)], Some(6), false)
        .await
        .unwrap();
    assert_eq!(version_numbers(&get(s, "k").await.1), vec![6]);
    // Other keys are untouched.
    s.key_insert(&key("other"), &vers("other", 1..=2))
        .await
        .unwrap();
    let new2 = next(&new, "again");
    s.key_update(&new2, new.generation, &[], Some(100), false)
        .await
        .unwrap();
    assert!(get(s, "k").await.1.is_empty());
    assert_eq!(version_numbers(&get(s, "other").await.1), vec![1, 2]);
}

async fn key_update_delete_all(h: Arc<Harness>) {
    let s = &h.store;
    s.key_insert(&key("k"), &vers("k", 1..=4)).await.unwrap();
    s.key_insert(&key("other"), &vers("other", 1..=2))
        .await
        .unwrap();
    let mut destroyed = next(&key("k"), "destroyed");
    destroyed.destroyed_at = Some(1_900_000_000);
    destroyed.destroyed_by = Some("admin".to_owned());
    s.key_update(&destroyed, 1, &[], None, true).await.unwrap();
    let (row, versions) = get(s, "k").await;
    assert_eq!(row, destroyed);
    assert!(versions.is_empty());
    assert_eq!(version_numbers(&get(s, "other").await.1), vec![1, 2]);
    // Deletions come before insertions: delete-all plus add replaces the set.
    let replaced = next(&destroyed, "replaced");
    let mut v1 = ver("k", 1);
    v1.sealed = b"new material".to_vec();
    s.key_update(&replaced, 2, &[v1.clone(), ver("k", 2)], None, true)
        .await
        .unwrap();
    assert_eq!(get(s, "k").await, (replaced, vec![v1, ver("k", 2)]));
    let all = s.key_load_all().await.unwrap();
    assert_eq!(all.len(), 2);
}

async fn usage_add_get(h: Arc<Harness>) {
    let s = &h.store;
    assert_eq!(s.usage_get("k").await.unwrap(), None);
    s.usage_add("k", 1, 2, 3, 100).await.unwrap();
    s.usage_add("k", 10, 0, 0, 50).await.unwrap();
    assert_eq!(
        s.usage_get("k").await.unwrap(),
        Some(Usage {
            encrypt_ops: 11,
            decrypt_ops: 2,
            other_ops: 3,
            last_used_at: 100
        })
    );
    s.usage_add("k", 0, 0, 1, 200).await.unwrap();
    let u = s.usage_get("k").await.unwrap().unwrap();
    assert_eq!((u.other_ops, u.last_used_at), (4, 200));
    // Usage does not need a key row.
    assert_eq!(s.key_get("k").await.unwrap(), None);

    // Concurrent flushes from several stores add up exactly.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 {
            h.store.clone()
        } else {
            h.other_store().await
        };
        tasks.push(tokio::spawn(async move {
            for j in 0..25 {
                s.usage_add("busy", 1, 2, 3, i * 100 + j).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        s.usage_get("busy").await.unwrap(),
        Some(Usage {
            encrypt_ops: 200,
            decrypt_ops: 400,
            other_ops: 600,
            last_used_at: 724
        })
    );

    // Counters saturate at i64::MAX instead of overflowing.
    let max = u64::try_from(i64::MAX).unwrap();
    s.usage_add("sat", max, 5, 0, 1).await.unwrap();
    s.usage_add("sat", 7, max, 0, 1).await.unwrap();
    let u = s.usage_get("sat").await.unwrap().unwrap();
    assert_eq!((u.encrypt_ops, u.decrypt_ops), (max, max));
    // Counts that do not fit a BIGINT are refused.
    assert!(matches!(
        s.usage_add("sat", max + 1, 0, 0, 1).await,
        Err(StoreError::Invalid(_))
    ));
    // A negative counter planted in the table is Corrupt, not a panic.
    h.raw("UPDATE lockbox_usage SET other_ops = -1 WHERE name = 'k'")
        .await;
    assert!(matches!(
        s.usage_get("k").await,
        Err(StoreError::Corrupt(_))
    ));
}

async fn u32_range(h: Arc<Harness>) {
    let s = &h.store;
    // The full u32 range round-trips.
    let mut row = key("max");
    row.key_id = u32::MAX;
    row.min_decryption_version = u32::MAX;
    row.min_encryption_version = u32::MAX;
    row.latest_version = u32::MAX;
    row.min_available_version = u32::MAX;
    row.auto_rotate_period_secs = i64::MAX;
    row.created_at = i64::MIN;
    row.generation = i64::MAX - 1;
    let versions = vec![ver("max", 0), ver("max", u32::MAX)];
    s.key_insert(&row, &versions).await.unwrap();
    assert_eq!(get(s, "max").await, (row.clone(), versions.clone()));
    // Updating from generation i64::MAX - 1 to i64::MAX works; past that it cannot.
    let mut last = row.clone();
    last.generation = i64::MAX;
    s.key_update(&last, i64::MAX - 1, &[], Some(u32::MAX), false)
        .await
        .unwrap();
    assert_eq!(get(s, "max").await, (last, vec![ver("max", u32::MAX)]));

    // Out-of-range values planted in the tables are Corrupt, never a panic.
    s.key_insert(&key("bad"), &vers("bad", 1..=2))
        .await
        .unwrap();
    for (sql, undo) in [
        (
            "UPDATE lockbox_keys SET key_id = 4294967296 WHERE name = 'bad'",
            "UPDATE lockbox_keys SET key_id = 1 WHERE name = 'bad'",
        ),
        (
            "UPDATE lockbox_keys SET latest_version = -1 WHERE name = 'bad'",
            "UPDATE lockbox_keys SET latest_version = 1 WHERE name = 'bad'",
        ),
        (
            "UPDATE lockbox_keys SET min_available_version = 9223372036854775807 WHERE name = 'bad'",
            "UPDATE lockbox_keys SET min_available_version = 1 WHERE name = 'bad'",
        ),
    ] {
        h.raw(sql).await;
        assert!(matches!(s.key_get("bad").await, Err(StoreError::Corrupt(_))), "{sql}");
        assert!(matches!(s.key_list().await, Err(StoreError::Corrupt(_))), "{sql}");
        assert!(matches!(s.key_load_all().await, Err(StoreError::Corrupt(_))), "{sql}");
        h.raw(undo).await;
    }
    h.raw("UPDATE lockbox_key_versions SET version = -2 WHERE name = 'bad' AND version = 1")
        .await;
    match s.key_get("bad").await {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("version") && m.contains("-2"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        s.key_load_all().await,
        Err(StoreError::Corrupt(_))
    ));
    h.raw(
        "UPDATE lockbox_key_versions SET version = 4294967296 WHERE name = 'bad' AND version = -2",
    )
    .await;
    assert!(matches!(
        s.key_get("bad").await,
        Err(StoreError::Corrupt(_))
    ));
    h.raw(
        "UPDATE lockbox_key_versions SET version = 1 WHERE name = 'bad' AND version = 4294967296",
    )
    .await;
    assert_eq!(get(s, "bad").await.1, vers("bad", 1..=2));
    assert_eq!(s.key_load_all().await.unwrap().len(), 2);
}

/// Receives the next message, failing after `secs`.
async fn recv_within(rx: &mut tokio::sync::mpsc::Receiver<String>, secs: u64) -> String {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no notification within {secs} s"))
        .expect("the subscription ended")
}

async fn subscribe_hears_other_stores(h: Arc<Harness>) {
    let Place::Postgres { schema, .. } = &h.place else {
        assert!(
            h.store.subscribe().await.unwrap().is_none(),
            "SQLite has no subscription"
        );
        return;
    };
    let mut rx = h
        .store
        .subscribe()
        .await
        .unwrap()
        .expect("PostgreSQL subscribes");
    let other = h.other_store().await;

    // An insert and an update through another store (another pool, as
    // another server would) are heard, in order.
    other
        .key_insert(&key("k"), &vers("k", 1..=1))
        .await
        .unwrap();
    assert_eq!(recv_within(&mut rx, 10).await, "k");
    let v2 = next(&key("k"), "2");
    other
        .key_update(&v2, 1, &[ver("k", 2)], None, false)
        .await
        .unwrap();
    assert_eq!(recv_within(&mut rx, 10).await, "k");

    // Failed writes announce nothing (NOTIFY is transactional).
    assert_eq!(
        other
            .key_update(&next(&key("k"), "stale"), 1, &[], None, false)
            .await,
        Err(StoreError::Conflict)
    );
    assert_eq!(
        other
            .key_update(&next(&v2, "dup"), 2, &[ver("k", 1)], None, false)
            .await,
        Err(StoreError::Conflict)
    );
    other.key_insert(&key("k"), &[]).await.unwrap_err();
    // A marker write proves the failed ones were not queued before it.
    other.key_insert(&key("marker"), &[]).await.unwrap();
    assert_eq!(recv_within(&mut rx, 10).await, "marker");

    // Stores in other schemas are not heard (each schema has its own channel).
    let foreign = Harness::new(Backend::Postgres).await;
    foreign
        .store
        .key_insert(&key("foreign"), &[])
        .await
        .unwrap();
    foreign.cleanup().await;

    // The listening connection is killed: the subscription reconnects, says
    // "*" (reload everything), and hears later changes again.
    let channel = format!("lockbox_keys_{schema}");
    let killed = h
        .raw_i64(&format!(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query = 'LISTEN \"{channel}\"'"
        ))
        .await;
    assert_eq!(killed, 1, "exactly one listener connection");
    assert_eq!(recv_within(&mut rx, 60).await, "*");
    let v3 = next(&v2, "3");
    other.key_update(&v3, 2, &[], None, false).await.unwrap();
    assert_eq!(recv_within(&mut rx, 10).await, "k");
    assert!(rx.try_recv().is_err(), "nothing else was announced");
}

/// `LOCKBOX_STORE_PERF_KEYS` overrides the number of keys (default 2 000),
/// e.g. 10 000 to check the engine's startup budget.
async fn load_all_performance(h: Arc<Harness>) {
    let keys: usize = std::env::var("LOCKBOX_STORE_PERF_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    const VERSIONS: u32 = 5;
    let start = Instant::now();
    // Eight writers, as a busy server would have.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = h.store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..keys).step_by(8) {
                let name = format!("key-{i:05}");
                let mut row = key(&name);
                row.key_id = u32::try_from(i).unwrap();
                row.latest_version = VERSIONS;
                let versions: Vec<VersionRow> = (1..=VERSIONS)
                    .map(|v| VersionRow {
                        sealed: vec![u8::try_from(v).unwrap(); 64],
                        ..ver(&name, v)
                    })
                    .collect();
                s.key_insert(&row, &versions).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let inserted = start.elapsed();

    let start = Instant::now();
    let all = h.store.key_load_all().await.unwrap();
    let loaded = start.elapsed();
    eprintln!(
        "[{}] load_all of {keys} keys x {VERSIONS} versions: {:.1} ms (inserting took {:.1} s)",
        h.store.backend(),
        loaded.as_secs_f64() * 1e3,
        inserted.as_secs_f64()
    );
    assert_eq!(all.len(), keys);
    for (i, (row, versions)) in all.iter().enumerate() {
        assert_eq!(row.name, format!("key-{i:05}"));
        assert_eq!(row.key_id, u32::try_from(i).unwrap());
        assert_eq!(
            version_numbers(versions),
            (1..=VERSIONS).collect::<Vec<_>>()
        );
        for v in versions {
            assert_eq!(v.name, row.name);
            assert_eq!(v.sealed, vec![u8::try_from(v.version).unwrap(); 64]);
        }
    }
    // Generous bound (debug build, shared CI machine); one query per key
    // would blow it.
    assert!(loaded < Duration::from_secs(5), "load_all took {loaded:?}");
}

// ---------------------------------------------------------------------------
// SQLite only
// ---------------------------------------------------------------------------

mod sqlite_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_store_works() {
        let s = Store::connect("sqlite::memory:").await.unwrap();
        assert_eq!(s.backend(), "sqlite");
        s.migrate().await.unwrap();
        s.migrate().await.unwrap();
        s.key_insert(&key("k"), &vers("k", 1..=2)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..8u8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.meta_put_if_absent("init", &[i]).await.unwrap()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.unwrap());
        }
        assert_eq!(wins, 1);
        assert_eq!(get(&s, "k").await, (key("k"), vers("k", 1..=2)));
        // Each in-memory store is its own database.
        let t = Store::connect("sqlite::memory:").await.unwrap();
        t.migrate().await.unwrap();
        assert_eq!(t.key_get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn file_is_created_private_and_persists() {
        let dir = temp_dir();
        let path = dir.join("new.db");
        let url = format!("sqlite://{}", path.display());
        {
            let s = Store::connect(&url).await.unwrap();
            s.migrate().await.unwrap();
            s.key_insert(&key("k"), &vers("k", 1..=3)).await.unwrap();
            s.meta_put("m", b"v").await.unwrap();
        }
        assert!(path.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        }
        let s = Store::connect(&url).await.unwrap();
        s.migrate().await.unwrap();
        assert_eq!(get(&s, "k").await, (key("k"), vers("k", 1..=3)));
        assert_eq!(s.meta_get("m").await.unwrap(), Some(b"v".to_vec()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn missing_directory_is_a_clear_error() {
        let dir = temp_dir();
        let url = format!("sqlite://{}", dir.join("nope/sub/x.db").display());
        match Store::connect(&url).await {
            Err(StoreError::Invalid(m)) => assert!(m.contains("does not exist"), "{m}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert!(!dir.join("nope").exists(), "no directory was created");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn bad_urls_are_invalid() {
        for url in ["mysql://x", "", "sqlite:", "sqlite://x.db?mode=ro"] {
            assert!(
                matches!(Store::connect(url).await, Err(StoreError::Invalid(_))),
                "{url}"
            );
        }
        let err = Store::connect("redis://user:pw-secret@host")
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("pw-secret"), "{err}");
    }

    const CRASH_ENV: &str = "LOCKBOX_STORE_CRASH_CHILD_DB";

    /// Runs in a child process (see `kill_9_keeps_every_committed_transaction`):
    /// writes forever, printing `committed N` after each commit returns.
    #[tokio::test]
    #[ignore = "child process of kill_9_keeps_every_committed_transaction"]
    async fn crash_child() {
        use std::io::Write as _;
        let Ok(url) = std::env::var(CRASH_ENV) else {
            return;
        };
        let s = Store::connect(&url).await.unwrap();
        s.migrate().await.unwrap();
        let start = s
            .key_list()
            .await
            .unwrap()
            .iter()
            .filter(|k| k.name.starts_with("crash-"))
            .count();
        let mut out = std::io::stdout();
        for i in start.. {
            let name = format!("crash-{i:06}");
            s.key_insert(&key(&name), &vers(&name, 1..=2))
                .await
                .unwrap();
            // Also move a shared counter key forward, so updates are covered.
            let (counter, _) = get(&s, "counter").await;
            let row = next(&counter, &i.to_string());
            s.key_update(&row, counter.generation, &[], None, false)
                .await
                .unwrap();
            writeln!(out, "committed {i} {}", row.generation).unwrap();
            out.flush().unwrap();
        }
    }

    #[tokio::test]
    async fn kill_9_keeps_every_committed_transaction() {
        use std::io::BufRead as _;
        let dir = temp_dir();
        let url = format!("sqlite://{}", dir.join("crash.db").display());
        {
            let s = Store::connect(&url).await.unwrap();
            s.migrate().await.unwrap();
            s.key_insert(&key("counter"), &[]).await.unwrap();
        }
        let exe = std::env::current_exe().unwrap();
        let mut acknowledged: Option<(usize, i64)> = None;
        for (round, kill_after) in [(0, 40), (1, 97), (2, 151)] {
            let mut child = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "sqlite_only::crash_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CRASH_ENV, &url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let mut lines = std::io::BufReader::new(stdout).lines();
            let mut seen = 0;
            while seen < kill_after {
                let line = lines
                    .next()
                    .unwrap_or_else(|| panic!("round {round}: child exited early"))
                    .unwrap();
                let Some(rest) = line.strip_prefix("committed ") else {
                    continue;
                };
                let mut parts = rest.split(' ');
                let i: usize = parts.next().unwrap().parse().unwrap();
                let generation: i64 = parts.next().unwrap().parse().unwrap();
                acknowledged = Some((i, generation));
                seen += 1;
            }
            child.kill().unwrap(); // SIGKILL, mid-write
            child.wait().unwrap();
            drop(lines);

            let (last, generation) = acknowledged.unwrap();
            let s = Store::connect(&url).await.unwrap();
            s.migrate().await.unwrap();
            let all = s.key_load_all().await.unwrap();
            for i in 0..=last {
                let name = format!("crash-{i:06}");
                let found = all.iter().find(|(k, _)| k.name == name);
                let (_, versions) = found.unwrap_or_else(|| panic!("committed key {name} lost"));
                assert_eq!(versions, &vers(&name, 1..=2));
            }
            let (counter, _) = get(&s, "counter").await;
            assert!(
                counter.generation >= generation,
                "a committed update was lost"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
