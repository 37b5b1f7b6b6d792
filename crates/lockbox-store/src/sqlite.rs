//! The SQLite backend (embedded default).
//!
//! Durability and concurrency settings, on every pooled connection:
//! - `journal_mode=WAL` and `synchronous=FULL`: every commit is fsynced to
//!   the write-ahead log before it returns, so a committed transaction
//!   survives `kill -9` and power loss;
//! - `busy_timeout` of 30 s: other processes using the same file make us
//!   wait, not fail;
//! - `foreign_keys=ON`;
//! - every write transaction starts with `BEGIN IMMEDIATE`, which takes the
//!   write lock up front (waiting on the busy timeout), so a transaction
//!   never fails half-way with `SQLITE_BUSY` when upgrading a read lock.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::migrations::{Step, SQLITE, SQLITE_BOOTSTRAP};

type Db = sqlx::Sqlite;
type Backend = SqliteStore;

/// How long a connection waits for another process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pool size for a file database (WAL: readers run concurrently, writers
/// take turns).
const FILE_POOL_SIZE: u32 = 4;

const BOOTSTRAP: &str = SQLITE_BOOTSTRAP;
const MIGRATIONS: &[Step] = SQLITE;
const USAGE_UPSERT: &str = usage_upsert_sql!("MAX");

/// A SQLite store (file or in-memory). Cloning shares the pool.
#[derive(Clone)]
pub struct SqliteStore {
    pool: sqlx::Pool<Db>,
    /// The file path, or `:memory:`.
    location: String,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens `sqlite::memory:` or `sqlite://path` / `sqlite:path`.
    pub(crate) async fn connect(url: &str) -> Result<Self, StoreError> {
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| StoreError::Invalid("a SQLite URL starts with sqlite:".into()))?;
        if rest == ":memory:" || rest == "//:memory:" {
            return Self::connect_memory().await;
        }
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(StoreError::Invalid("the SQLite URL names no file".into()));
        }
        if path.contains('?') {
            return Err(StoreError::Invalid(
                "SQLite URLs take no parameters (sqlite://path/to/file.db)".into(),
            ));
        }
        Self::connect_file(Path::new(path)).await
    }

    async fn connect_memory() -> Result<Self, StoreError> {
        // A named shared-cache in-memory database, unique to this store; it
        // lives as long as one connection does, so the pool keeps exactly one
        // forever (which also serializes writers).
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db_err)?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open in-memory SQLite: {e}")))?;
        Ok(SqliteStore {
            pool,
            location: ":memory:".into(),
        })
    }

    async fn connect_file(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(StoreError::Invalid(format!(
                    "cannot open SQLite database {shown}: directory {} does not exist",
                    dir.display()
                )));
            }
        }
        create_private(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot create SQLite database {shown}: {e}"))
        })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot open SQLite database {shown}: {e}"))
            })?;
        Ok(SqliteStore {
            pool,
            location: path.display().to_string(),
        })
    }

    /// A write transaction, holding the database write lock from the start.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)
    }

    /// A read transaction: one snapshot for all its statements (WAL).
    async fn begin_read(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        self.pool.begin().await.map_err(db_err)
    }

    /// Migrations run under the write lock, so concurrent processes take turns.
    async fn begin_migration(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        self.begin_write().await
    }

    #[allow(clippy::unused_self)]
    fn migration_prelude(&self) -> Vec<String> {
        Vec::new()
    }

    /// Nothing to announce: SQLite has no other servers to tell.
    #[allow(clippy::unused_async)]
    async fn notify_changed(
        &self,
        _tx: &mut sqlx::Transaction<'static, Db>,
        _name: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Creates `path` with mode 0600 if it does not exist (SQLite gives its
/// `-wal` and `-shm` files the same mode).
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        open.mode(0o600);
    }
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

include!("shared.rs");

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn file_connections_are_configured_for_durability() {
        let dir = std::env::temp_dir().join(format!(
            "lockbox-store-unit-{}-{}",
            std::process::id(),
            unix_now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pragmas.db");
        let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = sqlx::query("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(fk, 1);
        let busy: i64 = sqlx::query("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(busy, 30_000);
        drop(conn);
        store.pool.close().await;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
