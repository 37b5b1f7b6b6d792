//! `lockbox-store`: persistence of named keys, their sealed versions, usage
//! counters and a small key/value meta table.
//!
//! Two backends with the same schema semantics, behind one enum ([`Store`],
//! enum dispatch, no trait objects):
//! - **SQLite**, the embedded default: `sqlite://path/to/file.db` (created on
//!   first use, mode 0600) or `sqlite::memory:`. WAL journal,
//!   `synchronous=FULL` (a committed transaction survives `kill -9` and power
//!   loss), a 30 s busy timeout (several processes on one file wait for each
//!   other instead of failing), foreign keys on, `STRICT` tables, and
//!   `BEGIN IMMEDIATE` for every write transaction.
//! - **PostgreSQL**, shared by several servers: `postgres://user@host:port/db`
//!   (or `postgresql://`), with an optional `?schema=NAME` that puts every
//!   table in that schema (created by [`Store::migrate`]); changes are
//!   announced with `NOTIFY` and received through [`Store::subscribe`].
//!
//! Key material is opaque here: the engine above seals it before it reaches
//! the store (`VersionRow::sealed`) and authenticates each key row
//! (`KeyRow::mac`). Neither is ever printed (their `Debug` shows lengths).
//!
//! The schema is created and upgraded by [`Store::migrate`] from numbered
//! steps (see the `migrations` module source: applied steps are never edited).

/// The `lockbox_usage` upsert, with counters saturating at `i64::MAX`; `$max`
/// is the dialect's two-argument maximum (`MAX` in SQLite, `GREATEST` in
/// PostgreSQL).
macro_rules! usage_upsert_sql {
    ($max:literal) => {
        concat!(
            "INSERT INTO lockbox_usage (name, encrypt_ops, decrypt_ops, other_ops, last_used_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO UPDATE SET \
             encrypt_ops = CASE WHEN lockbox_usage.encrypt_ops > 9223372036854775807 - excluded.encrypt_ops \
               THEN 9223372036854775807 ELSE lockbox_usage.encrypt_ops + excluded.encrypt_ops END, \
             decrypt_ops = CASE WHEN lockbox_usage.decrypt_ops > 9223372036854775807 - excluded.decrypt_ops \
               THEN 9223372036854775807 ELSE lockbox_usage.decrypt_ops + excluded.decrypt_ops END, \
             other_ops = CASE WHEN lockbox_usage.other_ops > 9223372036854775807 - excluded.other_ops \
               THEN 9223372036854775807 ELSE lockbox_usage.other_ops + excluded.other_ops END, \
             last_used_at = ",
            $max,
            "(lockbox_usage.last_used_at, excluded.last_used_at)"
        )
    };
}

mod error;
mod migrations;
mod postgres;
mod sqlite;

use std::fmt;

pub use error::StoreError;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The longest key name (in bytes) the store accepts, on every backend
/// (PostgreSQL `NOTIFY` payloads are limited to 8000 bytes).
pub const MAX_NAME_LEN: usize = 4000;

/// One named key: everything but its versions.
///
/// `u32` fields are stored as 64-bit integers and range-checked when read
/// back ([`StoreError::Corrupt`] if out of range).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// Unique key name (primary key).
    pub name: String,
    /// The key id written in ciphertext headers.
    pub key_id: u32,
    /// Key type name (`aes256-gcm96`, ...).
    pub key_type: String,
    /// Per-context key derivation.
    pub derived: bool,
    /// Convergent (deterministic) encryption.
    pub convergent: bool,
    /// Key material may be exported.
    pub exportable: bool,
    /// A plaintext backup may be taken.
    pub allow_plaintext_backup: bool,
    /// The key may be deleted.
    pub deletion_allowed: bool,
    /// Automatic rotation period in seconds (0: never).
    pub auto_rotate_period_secs: i64,
    /// Lowest version allowed to decrypt.
    pub min_decryption_version: u32,
    /// Version used to encrypt (0: latest).
    pub min_encryption_version: u32,
    /// Highest version.
    pub latest_version: u32,
    /// Lowest version still stored (older ones were trimmed).
    pub min_available_version: u32,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Last update time (Unix seconds).
    pub updated_at: i64,
    /// Last rotation time (Unix seconds).
    pub last_rotated_at: i64,
    /// Soft-deletion time, if deleted.
    pub deleted_at: Option<i64>,
    /// Destruction time, if destroyed (crypto-shredded).
    pub destroyed_at: Option<i64>,
    /// Who destroyed it.
    pub destroyed_by: Option<String>,
    /// Optimistic-concurrency counter: every [`Store::key_update`] writes
    /// `expected + 1`.
    pub generation: i64,
    /// JSON text for future fields.
    pub extra: String,
    /// Row authentication tag, computed by the engine (opaque; never printed).
    pub mac: Vec<u8>,
}

impl fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRow")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .field("key_type", &self.key_type)
            .field("derived", &self.derived)
            .field("convergent", &self.convergent)
            .field("exportable", &self.exportable)
            .field("allow_plaintext_backup", &self.allow_plaintext_backup)
            .field("deletion_allowed", &self.deletion_allowed)
            .field("auto_rotate_period_secs", &self.auto_rotate_period_secs)
            .field("min_decryption_version", &self.min_decryption_version)
            .field("min_encryption_version", &self.min_encryption_version)
            .field("latest_version", &self.latest_version)
            .field("min_available_version", &self.min_available_version)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("last_rotated_at", &self.last_rotated_at)
            .field("deleted_at", &self.deleted_at)
            .field("destroyed_at", &self.destroyed_at)
            .field("destroyed_by", &self.destroyed_by)
            .field("generation", &self.generation)
            .field("extra", &self.extra)
            .field("mac", &format_args!("[{} bytes]", self.mac.len()))
            .finish()
    }
}

/// One version of a key: its sealed material.
#[derive(Clone, PartialEq, Eq)]
pub struct VersionRow {
    /// The key name.
    pub name: String,
    /// The version number (1, 2, ...).
    pub version: u32,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Sealed key material (opaque; never printed).
    pub sealed: Vec<u8>,
}

impl fmt::Debug for VersionRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionRow")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("created_at", &self.created_at)
            .field("sealed", &format_args!("[{} bytes]", self.sealed.len()))
            .finish()
    }
}

/// Usage counters of one key. Counters saturate at `i64::MAX`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Encryptions.
    pub encrypt_ops: u64,
    /// Decryptions.
    pub decrypt_ops: u64,
    /// Other operations (sign, hmac, rewrap, ...).
    pub other_ops: u64,
    /// Last use (Unix seconds).
    pub last_used_at: i64,
}

/// One entry of the store audit sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// The chain segment (one per server run).
    pub segment: String,
    /// Position in the segment (0, 1, 2, ...).
    pub seq: u64,
    /// Unix seconds.
    pub time: i64,
    /// The operation (for queries).
    pub operation: String,
    /// The key the operation used, if any (for queries).
    pub key: Option<String>,
    /// `ok` or `error` (for queries).
    pub outcome: String,
    /// The sealed JSON line, exactly as chained.
    pub entry: String,
}

/// Which audit rows [`Store::audit_query`] returns (all conditions must hold).
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only this key.
    pub key: Option<String>,
    /// Only at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only at or before this time (Unix seconds).
    pub until: Option<i64>,
    /// Only this outcome (`ok` or `error`).
    pub outcome: Option<String>,
    /// Only this segment.
    pub segment: Option<String>,
    /// At most this many rows (1 to 100 000), oldest first.
    pub limit: usize,
}

/// A connected store: SQLite or PostgreSQL. Cloning is cheap (the
/// connection pool is shared).
#[derive(Clone, Debug)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(SqliteStore),
    /// Shared PostgreSQL.
    Postgres(PgStore),
}

/// Dispatches a method call to the backend.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(s) => s.$method($($arg),*).await,
            Store::Postgres(s) => s.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Connects to the store named by `url`:
    /// - `sqlite://path/to/file.db` (relative) or `sqlite:///abs/path.db`:
    ///   the file is created (mode 0600) if missing; its directory must exist;
    /// - `sqlite::memory:`: a private in-memory database (lost on drop);
    /// - `postgres://user[:password]@host[:port]/db[?schema=NAME&...]` (or
    ///   `postgresql://`): `schema` (lowercase letters, digits, `_`, at most 49
    ///   characters) isolates this store's tables in that schema; other
    ///   parameters go to the driver (`sslmode`, ...).
    ///
    /// Call [`Store::migrate`] before anything else.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a malformed URL, an unknown scheme or a
    /// missing directory; [`StoreError::Unavailable`] if the database cannot
    /// be opened or reached (the message never contains the password).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::connect(url).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::connect(url).await?))
        } else {
            let scheme = url.split_once(':').map_or("", |(s, _)| s);
            let scheme: String = scheme.chars().take(20).collect();
            Err(StoreError::Invalid(format!(
                "unsupported store URL scheme {scheme:?} (expected sqlite:, postgres:// or postgresql://)"
            )))
        }
    }

    /// The backend name: `"sqlite"` or `"postgres"`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Creates or upgrades the schema. Idempotent and safe to run from
    /// several servers at once (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: an
    /// advisory lock). Each numbered step runs in its own transaction and is
    /// recorded in `lockbox_schema_migrations`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if the database was migrated by a newer build
    /// (a step this build does not know is recorded);
    /// [`StoreError::Unavailable`] if a statement fails.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self.migrate())
    }

    /// Reads a meta value.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the database fails.
    pub async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self.meta_get(key))
    }

    /// Writes (inserts or replaces) a meta value.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a key that is empty or contains NUL;
    /// [`StoreError::Unavailable`] if the database fails.
    pub async fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        dispatch!(self.meta_put(key, value))
    }

    /// Inserts a meta value only if the key is absent, atomically (of any
    /// number of concurrent callers on any servers, exactly one gets `true`).
    ///
    /// # Errors
    /// As [`Store::meta_put`].
    pub async fn meta_put_if_absent(&self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        dispatch!(self.meta_put_if_absent(key, value))
    }

    /// Meta values whose names start with `prefix`, sorted by name.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty prefix; [`StoreError::Unavailable`].
    pub async fn meta_list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        dispatch!(self.meta_list(prefix))
    }

    /// Deletes a meta value; `false` if there was none.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for a bad key; [`StoreError::Unavailable`].
    pub async fn meta_delete(&self, key: &str) -> Result<bool, StoreError> {
        dispatch!(self.meta_delete(key))
    }

    /// Appends audit entries in one transaction (all or none).
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if a (segment, seq) is already stored;
    /// [`StoreError::Invalid`] for bad text; [`StoreError::Unavailable`].
    pub async fn audit_append(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        dispatch!(self.audit_append(rows))
    }

    /// Audit entries matching `filter`, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Corrupt`] for a bad row.
    pub async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        dispatch!(self.audit_query(filter))
    }

    /// Inserts a new key and its versions in one transaction. On PostgreSQL,
    /// other servers are notified (as by [`Store::key_update`]).
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] if the name exists (nothing written);
    /// [`StoreError::Invalid`] for a bad name, a version of another key or a
    /// repeated version; [`StoreError::Unavailable`] if the database fails.
    pub async fn key_insert(
        &self,
        row: &KeyRow,
        versions: &[VersionRow],
    ) -> Result<(), StoreError> {
        dispatch!(self.key_insert(row, versions))
    }

    /// Reads one key and its versions (ascending), from one consistent
    /// snapshot.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if a row cannot be decoded;
    /// [`StoreError::Unavailable`] if the database fails.
    pub async fn key_get(
        &self,
        name: &str,
    ) -> Result<Option<(KeyRow, Vec<VersionRow>)>, StoreError> {
        dispatch!(self.key_get(name))
    }

    /// Lists every key row (without versions), sorted by name (byte order).
    ///
    /// # Errors
    /// As [`Store::key_get`].
    pub async fn key_list(&self) -> Result<Vec<KeyRow>, StoreError> {
        dispatch!(self.key_list())
    }

    /// Loads every key with its versions (ascending), sorted by name, from one
    /// consistent snapshot, in two queries.
    ///
    /// # Errors
    /// As [`Store::key_get`]; also [`StoreError::Corrupt`] for a version row
    /// without its key row.
    pub async fn key_load_all(&self) -> Result<Vec<(KeyRow, Vec<VersionRow>)>, StoreError> {
        dispatch!(self.key_load_all())
    }

    /// The one mutation of an existing key, in one transaction:
    /// 1. the key row is replaced by `row` only if its stored generation is
    ///    `expected_generation`;
    /// 2. if `delete_all_versions`, every version is deleted; if
    ///    `delete_versions_below` is `Some(v)`, versions `< v` are deleted;
    /// 3. `add_versions` are inserted (after the deletions, so deleting all
    ///    and adding replaces the whole set);
    /// 4. on PostgreSQL, `NOTIFY` announces the name (delivered on commit).
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if `row.generation != expected_generation + 1`
    /// or a version names another key; [`StoreError::NotFound`] if the key
    /// does not exist; [`StoreError::Conflict`] if the stored generation
    /// differs or an added version already exists. Nothing is written on
    /// any error.
    pub async fn key_update(
        &self,
        row: &KeyRow,
        expected_generation: i64,
        add_versions: &[VersionRow],
        delete_versions_below: Option<u32>,
        delete_all_versions: bool,
    ) -> Result<(), StoreError> {
        dispatch!(self.key_update(
            row,
            expected_generation,
            add_versions,
            delete_versions_below,
            delete_all_versions
        ))
    }

    /// Adds to the usage counters of `name` (creating them if absent);
    /// `last_used_at` becomes the larger of the stored and given times.
    /// Counters saturate at `i64::MAX`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if a count exceeds `i64::MAX` or the name is
    /// invalid; [`StoreError::Unavailable`] if the database fails.
    pub async fn usage_add(
        &self,
        name: &str,
        encrypt_ops: u64,
        decrypt_ops: u64,
        other_ops: u64,
        last_used_at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self.usage_add(name, encrypt_ops, decrypt_ops, other_ops, last_used_at))
    }

    /// Reads the usage counters of `name`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a negative counter;
    /// [`StoreError::Unavailable`] if the database fails.
    pub async fn usage_get(&self, name: &str) -> Result<Option<Usage>, StoreError> {
        dispatch!(self.usage_get(name))
    }

    /// PostgreSQL: a receiver of the names of keys inserted or updated by any
    /// server (including this one), from a dedicated `LISTEN` connection that
    /// reconnects with backoff if it drops; after each reconnection it
    /// delivers `"*"`, meaning "reload everything" (notifications may have
    /// been missed). The background task ends when the receiver is dropped.
    /// SQLite: `None` (one process owns the file; nothing to hear).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the first `LISTEN` connection fails.
    pub async fn subscribe(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.subscribe().await.map(Some),
        }
    }
}

/// Rejects text the two backends would treat differently (PostgreSQL TEXT
/// cannot hold NUL).
fn check_text(what: &str, value: &str) -> Result<(), StoreError> {
    if value.contains('\0') {
        return Err(StoreError::Invalid(format!(
            "{what} contains a NUL character"
        )));
    }
    Ok(())
}

/// Checks a key or meta name: non-empty, no NUL, at most [`MAX_NAME_LEN`] bytes.
fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::Invalid(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StoreError::Invalid(format!(
            "{what} is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    check_text(what, name)
}

/// Checks every text field of a key row.
fn check_row(row: &KeyRow) -> Result<(), StoreError> {
    check_name("key name", &row.name)?;
    check_text("key_type", &row.key_type)?;
    check_text("extra", &row.extra)?;
    if let Some(by) = &row.destroyed_by {
        check_text("destroyed_by", by)?;
    }
    Ok(())
}

/// Checks that versions belong to `name` and are not repeated.
fn check_versions(name: &str, versions: &[VersionRow]) -> Result<(), StoreError> {
    let mut seen: Vec<u32> = Vec::with_capacity(versions.len());
    for v in versions {
        if v.name != name {
            return Err(StoreError::Invalid(format!(
                "version {} names key {:?}, not {name:?}",
                v.version, v.name
            )));
        }
        seen.push(v.version);
    }
    seen.sort_unstable();
    if let Some(w) = seen.windows(2).find(|w| w.first() == w.get(1)) {
        return Err(StoreError::Invalid(format!(
            "version {} of key {name:?} is given twice",
            w.first().copied().unwrap_or_default()
        )));
    }
    Ok(())
}

/// A stored 64-bit value that must fit a `u32`.
fn to_u32(v: i64, what: &str, name: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| {
        StoreError::Corrupt(format!(
            "key {name:?}: {what} = {v} is out of range for a 32-bit unsigned value"
        ))
    })
}

/// A stored 64-bit counter that must not be negative.
fn to_u64(v: i64, what: &str, name: &str) -> Result<u64, StoreError> {
    u64::try_from(v)
        .map_err(|_| StoreError::Corrupt(format!("usage of {name:?}: {what} = {v} is negative")))
}

/// A counter to store: at most `i64::MAX`.
fn count_to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} = {v} exceeds i64::MAX")))
}

/// Now, in Unix seconds (0 if the clock is before 1970).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_secrets() {
        let v = VersionRow {
            name: "k".into(),
            version: 1,
            created_at: 0,
            sealed: vec![0xAB; 7],
        };
        let s = format!("{v:?}");
        assert!(s.contains("[7 bytes]"), "{s}");
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("ab, "),
            "{s}"
        );
    }

    #[test]
    fn version_checks() {
        let v = |n: &str, ver| VersionRow {
            name: n.into(),
            version: ver,
            created_at: 0,
            sealed: vec![],
        };
        assert!(check_versions("a", &[v("a", 1), v("a", 2)]).is_ok());
        assert!(matches!(
            check_versions("a", &[v("a", 2), v("a", 2)]),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            check_versions("a", &[v("b", 1)]),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn range_checks() {
        assert_eq!(to_u32(4_294_967_295, "x", "k"), Ok(u32::MAX));
        assert!(matches!(
            to_u32(4_294_967_296, "x", "k"),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(to_u32(-1, "x", "k"), Err(StoreError::Corrupt(_))));
        assert!(matches!(to_u64(-1, "x", "k"), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            count_to_i64(u64::MAX, "x"),
            Err(StoreError::Invalid(_))
        ));
    }
}
