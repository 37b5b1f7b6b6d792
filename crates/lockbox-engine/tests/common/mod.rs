//! Test harness: an unsealed engine on a fresh SQLite file or a fresh
//! PostgreSQL schema (dropped afterwards).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use lockbox_core::rootkey::RootKey;
use lockbox_engine::{Engine, EngineConfig};
use lockbox_store::Store;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn unique() -> String {
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

/// Where a test's store lives.
pub enum Backend {
    Sqlite(PathBuf),
    Postgres { base: String, schema: String },
}

pub mod backends {
    use super::*;

    pub fn sqlite() -> Backend {
        let dir = std::env::temp_dir().join(format!("lockbox-engine-test-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        Backend::Sqlite(dir.join("lockbox.db"))
    }

    pub fn postgres() -> Backend {
        Backend::Postgres {
            base: std::env::var("LOCKBOX_TEST_PG_URL")
                .unwrap_or_else(|_| DEFAULT_PG_URL.to_owned()),
            schema: format!("lbx_engine_{}", unique()),
        }
    }
}

impl Backend {
    pub fn url(&self) -> String {
        match self {
            Backend::Sqlite(p) => format!("sqlite://{}", p.display()),
            Backend::Postgres { base, schema } => {
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}schema={schema}")
            }
        }
    }
}

/// Drops the PostgreSQL schema (or the SQLite directory) when the test ends.
pub struct Guard {
    pub url: String,
    cleanup: Option<(String, String)>,
    dir: Option<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some((base, schema)) = self.cleanup.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(pool) = sqlx::postgres::PgPoolOptions::new()
                        .max_connections(1)
                        .connect(&base)
                        .await
                    {
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .execute(&pool)
                            .await;
                    }
                });
            })
            .join();
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

pub fn test_config() -> EngineConfig {
    EngineConfig::default()
}

/// A fresh, unsealed engine (master-key mode) and its root key.
pub async fn engine_on(b: &Backend) -> (Engine, RootKey, Guard) {
    let url = b.url();
    let store = Store::connect(&url).await.unwrap_or_else(|e| {
        panic!("cannot open test store ({e}); is PostgreSQL running? (scripts/test starts it)")
    });
    let engine = Engine::open(store, test_config()).await.unwrap();
    let root = RootKey::generate().unwrap();
    let copy = RootKey::from_bytes(root.expose_secret().expose_secret()).unwrap();
    engine.unseal_with_master_key(copy).await.unwrap();
    let guard = Guard {
        url,
        cleanup: match b {
            Backend::Postgres { base, schema } => Some((base.clone(), schema.clone())),
            Backend::Sqlite(_) => None,
        },
        dir: match b {
            Backend::Sqlite(p) => p.parent().map(PathBuf::from),
            Backend::Postgres { .. } => None,
        },
    };
    (engine, root, guard)
}

/// Another engine (its own connections) on the same store, unsealed.
pub async fn second_engine(_b: &Backend, g: &Guard, root: &RootKey) -> Engine {
    let store = Store::connect(&g.url).await.unwrap();
    let engine = Engine::open(store, test_config()).await.unwrap();
    engine
        .unseal_with_master_key(RootKey::from_bytes(root.expose_secret().expose_secret()).unwrap())
        .await
        .unwrap();
    engine
}
