//! The optimistic check: a row changed by someone else between the batch's
//! read and its write is not overwritten with a conversion of the old value;
//! it is read again and converted from its new value. Real PostgreSQL and
//! MariaDB; the change comes from another connection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lockbox_core::rootkey::RootKey;
use lockbox_engine::{CreateOptions, Engine, EngineConfig};
use lockbox_migrate::db::Db;
use lockbox_migrate::{Options, Quiet, Secrets, SourceFormat, Spec};
use lockbox_store::Store;

async fn engine(tag: &str) -> (Engine, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("lockbox-migrate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.join("k.db").display()))
        .await
        .unwrap();
    let e = Engine::open(store, EngineConfig::default()).await.unwrap();
    e.unseal_with_master_key(RootKey::generate().unwrap())
        .await
        .unwrap();
    e.create_key("k", &CreateOptions::default()).await.unwrap();
    (e, dir)
}

async fn conflict(url: &str, table: &str) {
    let (e, dir) = engine(table).await;
    let db = Db::connect(url, 2).await.unwrap();
    db.exec(&format!("DROP TABLE IF EXISTS {table}"))
        .await
        .unwrap();
    db.exec(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, secret VARCHAR(300))"
    ))
    .await
    .unwrap();
    let vals: Vec<String> = (1..=100).map(|i| format!("({i}, 'old-{i}')")).collect();
    db.exec(&format!("INSERT INTO {table} VALUES {}", vals.join(", ")))
        .await
        .unwrap();
    let spec = Spec {
        table: table.into(),
        pk: "id".into(),
        columns: vec!["secret".into()],
        key: "k".into(),
        context: Some("{id}".into()),
        from: vec![SourceFormat::Plaintext],
        ..Spec::default()
    };
    // Between read and write of the first batch, another connection changes rows 7 and 42.
    let other = Db::connect(url, 1).await.unwrap();
    let fired = Arc::new(AtomicBool::new(false));
    let (t2, f2) = (table.to_owned(), fired.clone());
    let hook: lockbox_migrate::BeforeWrite = Arc::new(move |pks: Vec<i64>| {
        let other = other.clone();
        let t = t2.clone();
        let f = f2.clone();
        Box::pin(async move {
            if !f.swap(true, Ordering::SeqCst) {
                assert!(pks.contains(&7) && pks.contains(&42));
                other
                    .exec(&format!(
                        "UPDATE {t} SET secret = CASE id WHEN 7 THEN 'new-7' ELSE 'new-42' END WHERE id IN (7, 42)"
                    ))
                    .await
                    .unwrap();
            }
        })
    });
    let opts = Options {
        batch_size: 50,
        before_write: Some(hook),
        ..Options::default()
    };
    let r = lockbox_migrate::run(&e, url, &spec, Secrets::default(), &opts, Arc::new(Quiet))
        .await
        .unwrap();
    assert!(fired.load(Ordering::SeqCst));
    assert_eq!(r.conflicts_retried, 2, "{:?}", r);
    assert_eq!(r.rows_changed, 100);
    assert_eq!(r.rows_seen, 100);
    assert!(r.job_complete);
    // Every row decrypts; rows 7 and 42 to the concurrently written values.
    let h = e.key_handle("k").await.unwrap();
    let rep = lockbox_migrate::verify(&e, url, &spec, 1000).await.unwrap();
    assert!(rep.ok(), "{:?}", rep.to_json());
    let rows = db
        .read(
            &lockbox_migrate::db::Shape {
                table: lockbox_migrate::db::TableName::parse(table).unwrap(),
                pk: "id".into(),
                cols: vec![("secret".into(), lockbox_migrate::db::ColKind::Text)],
                ctx_cols: vec![],
                bi_col: None,
            },
            None,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 100);
    for r in rows {
        let ct = String::from_utf8(r.vals[0].clone().unwrap()).unwrap();
        let pt = h.decrypt(&ct, r.pk.to_string().as_bytes(), &[]).unwrap();
        let want = if r.pk == 7 || r.pk == 42 {
            format!("new-{}", r.pk)
        } else {
            format!("old-{}", r.pk)
        };
        assert_eq!(String::from_utf8(pt).unwrap(), want);
    }
    db.exec(&format!("DROP TABLE {table}")).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_concurrent_change_is_retried() {
    let url = std::env::var("LOCKBOX_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    conflict(&url, "rx_conflict_pg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_concurrent_change_is_retried() {
    let url = std::env::var("LOCKBOX_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    conflict(&url, "rx_conflict_my").await;
}
