//! The PostgreSQL backend (shared by several servers).
//!
//! - `?schema=NAME` in the URL puts every table in schema `NAME` (created by
//!   `migrate`): each connection starts with `search_path=NAME`. Change
//!   notifications then use the channel `lockbox_keys_NAME`, so stores in
//!   different schemas of one database do not hear each other; without a
//!   schema the channel is `lockbox_keys`.
//! - Writes run at `READ COMMITTED`: the conditional `UPDATE ... WHERE
//!   generation = $expected` waits for a concurrent writer of the same row
//!   and then re-checks the condition, so exactly one of two updaters from
//!   the same generation wins. Multi-statement reads run in `REPEATABLE READ
//!   READ ONLY` transactions (one snapshot).
//! - Migrations hold a transaction-scoped advisory lock, so servers starting
//!   together take turns.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::mpsc;

use crate::error::redact;
use crate::migrations::{Step, POSTGRES, POSTGRES_BOOTSTRAP};

type Db = sqlx::Postgres;
type Backend = PgStore;

const BOOTSTRAP: &str = POSTGRES_BOOTSTRAP;
const MIGRATIONS: &[Step] = POSTGRES;
const USAGE_UPSERT: &str = usage_upsert_sql!("GREATEST");

/// The notification channel when no schema is given.
const CHANNEL: &str = "lockbox_keys";

/// The advisory lock key serializing migrations ("lockbox" in ASCII).
const MIGRATION_LOCK: i64 = 0x006c_6f63_6b62_6f78;

/// Pooled connections per store.
const POOL_SIZE: u32 = 8;

/// How long to wait for a pooled connection (or to open one).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest schema name accepted (so `lockbox_keys_NAME` fits in
/// PostgreSQL's 63-byte identifiers).
const MAX_SCHEMA_LEN: usize = 49;

/// Capacity of the channel returned by `subscribe`.
const SUBSCRIBE_BUFFER: usize = 1024;

/// Reconnection backoff of the listener: first and longest wait.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A PostgreSQL store. Cloning shares the pool.
#[derive(Clone)]
pub struct PgStore {
    pool: sqlx::Pool<Db>,
    /// Connection options (they hold the password: never printed). Boxed
    /// behind an `Arc` to keep `Store` small and cheap to clone.
    options: Arc<PgConnectOptions>,
    /// The schema from `?schema=`, if any.
    schema: Option<String>,
    /// The `NOTIFY` channel.
    channel: String,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("host", &self.options.get_host())
            .field("port", &self.options.get_port())
            .field("database", &self.options.get_database())
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// A PostgreSQL URL split into what the driver reads and what we read.
#[derive(Debug, PartialEq, Eq)]
struct PgUrl {
    /// The URL without our parameters.
    driver_url: String,
    /// `?schema=`.
    schema: Option<String>,
    /// The password in the URL (for redaction only).
    password: Option<String>,
}

fn parse_url(url: &str) -> Result<PgUrl, StoreError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for param in query.into_iter().flat_map(|q| q.split('&')) {
        if let Some(s) = param.strip_prefix("schema=") {
            check_schema(s)?;
            schema = Some(s.to_owned());
        } else if !param.is_empty() {
            kept.push(param);
        }
    }
    let driver_url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(PgUrl {
        driver_url,
        schema,
        password: url_password(base),
    })
}

/// The password in `scheme://user:password@host...`, if any.
fn url_password(base: &str) -> Option<String> {
    let after_scheme = base.split_once("://")?.1;
    let authority = after_scheme.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password.to_owned()).filter(|p| !p.is_empty())
}

/// A schema name: lowercase ASCII letters, digits and `_`, not starting with
/// a digit, at most [`MAX_SCHEMA_LEN`] bytes (so it needs no quoting and the
/// channel name fits).
fn check_schema(s: &str) -> Result<(), StoreError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SCHEMA_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes().first().is_some_and(u8::is_ascii_digit);
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "schema {s:?} must be 1 to {MAX_SCHEMA_LEN} lowercase letters, digits or _, \
             not starting with a digit"
        )))
    }
}

impl PgStore {
    /// Connects a pool (one connection is opened now, to fail early).
    pub(crate) async fn connect(url: &str) -> Result<Self, StoreError> {
        let parsed = parse_url(url)?;
        let secret = parsed.password.as_deref();
        let mut options = PgConnectOptions::from_str(&parsed.driver_url).map_err(|e| {
            StoreError::Invalid(redact(&format!("invalid PostgreSQL URL: {e}"), secret))
        })?;
        if let Some(schema) = &parsed.schema {
            options = options.options([("search_path", schema.as_str())]);
        }
        let where_ = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("")
        );
        let unavailable = |e: &dyn fmt::Display| {
            StoreError::Unavailable(redact(
                &format!("cannot connect to PostgreSQL at {where_}: {e}"),
                secret,
            ))
        };
        // One direct attempt first: the pool would retry a refused connection
        // until its acquire timeout, and an unreachable server should be
        // reported at once.
        let probe = tokio::time::timeout(ACQUIRE_TIMEOUT, options.connect())
            .await
            .map_err(|_| unavailable(&"timed out"))?
            .map_err(|e| unavailable(&e))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        let channel = match &parsed.schema {
            Some(s) => format!("{CHANNEL}_{s}"),
            None => CHANNEL.to_owned(),
        };
        Ok(PgStore {
            pool,
            options: Arc::new(options),
            schema: parsed.schema,
            channel,
        })
    }

    /// A write transaction (`READ COMMITTED`).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        self.pool.begin().await.map_err(db_err)
    }

    /// A read transaction on one snapshot.
    async fn begin_read(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db_err)
    }

    /// A transaction holding the migration lock until it ends.
    async fn begin_migration(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        Ok(tx)
    }

    /// Creates the schema, if one was named.
    fn migration_prelude(&self) -> Vec<String> {
        self.schema
            .iter()
            .map(|s| format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""))
            .collect()
    }

    /// Queues a notification, delivered if and when `tx` commits.
    async fn notify_changed(
        &self,
        tx: &mut sqlx::Transaction<'static, Db>,
        name: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(self.channel.as_str())
            .bind(name)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Starts the listener task (see `Store::subscribe`).
    pub(crate) async fn subscribe(&self) -> Result<mpsc::Receiver<String>, StoreError> {
        let listener = open_listener(&self.options, &self.channel)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot LISTEN on PostgreSQL: {}", db_err(e)))
            })?;
        let (tx, rx) = mpsc::channel(SUBSCRIBE_BUFFER);
        tokio::spawn(listen_loop(
            listener,
            Arc::clone(&self.options),
            self.channel.clone(),
            tx,
        ));
        Ok(rx)
    }
}

/// A listener on its own one-connection pool, already listening.
async fn open_listener(
    options: &PgConnectOptions,
    channel: &str,
) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Forwards notifications until the receiver is dropped; on a lost
/// connection, reconnects with exponential backoff and sends `"*"`.
async fn listen_loop(
    mut listener: PgListener,
    options: Arc<PgConnectOptions>,
    channel: String,
    tx: mpsc::Sender<String>,
) {
    loop {
        let event = tokio::select! {
            () = tx.closed() => return,
            r = listener.try_recv() => r,
        };
        match event {
            Ok(Some(n)) => {
                if tx.send(n.payload().to_owned()).await.is_err() {
                    return;
                }
            }
            // The driver noticed the loss and has already reconnected.
            Ok(None) => {
                if tx.send("*".to_owned()).await.is_err() {
                    return;
                }
            }
            Err(_) => {
                // Start over on a fresh pool, waiting longer after each failure.
                drop(listener);
                let mut wait = BACKOFF_MIN;
                listener = loop {
                    tokio::select! {
                        () = tx.closed() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    match open_listener(&options, &channel).await {
                        Ok(l) => break l,
                        Err(_) => wait = (wait * 2).min(BACKOFF_MAX),
                    }
                };
                if tx.send("*".to_owned()).await.is_err() {
                    return;
                }
            }
        }
    }
}

include!("shared.rs");

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn url_parsing_extracts_schema_and_password() {
        let p = parse_url("postgres://u:s3cr%40t@h:5432/db?schema=t_1&sslmode=disable").unwrap();
        assert_eq!(
            p.driver_url,
            "postgres://u:s3cr%40t@h:5432/db?sslmode=disable"
        );
        assert_eq!(p.schema.as_deref(), Some("t_1"));
        assert_eq!(p.password.as_deref(), Some("s3cr%40t"));
        let p = parse_url("postgresql://u@h/db").unwrap();
        assert_eq!(p.driver_url, "postgresql://u@h/db");
        assert_eq!(p.schema, None);
        assert_eq!(p.password, None);
        for bad in ["A", "1a", "a-b", "a\"b", ""] {
            let url = format!("postgres://u@h/db?schema={bad}");
            assert!(
                matches!(parse_url(&url), Err(StoreError::Invalid(_))),
                "{bad}"
            );
        }
        let long = "a".repeat(MAX_SCHEMA_LEN + 1);
        assert!(parse_url(&format!("postgres://u@h/db?schema={long}")).is_err());
    }

    #[tokio::test]
    async fn connection_errors_never_show_the_password() {
        // Nothing listens on port 1: the connection is refused.
        let err = PgStore::connect("postgres://user:hunter2%21@127.0.0.1:1/db")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let err = PgStore::connect("postgres://user:hunter2@127.0.0.1:notaport/db")
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }
}
