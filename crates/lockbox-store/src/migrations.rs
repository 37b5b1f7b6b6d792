//! The schema, as numbered migration steps, one list per dialect.
//!
//! # Rules (read before editing)
//!
//! - **Never edit, renumber or remove a step once it has been released**:
//!   databases record the numbers of the steps they applied in
//!   `lockbox_schema_migrations(version)` and never run a step twice, so an
//!   edited step would leave old databases and new ones with different
//!   schemas. To change the schema, *append* a new step (next number) to
//!   **both** lists, with the same meaning in both dialects.
//! - Each step runs in its own transaction together with the insertion of
//!   its number (SQLite and PostgreSQL both have transactional DDL), so a
//!   step is applied entirely or not at all.
//! - A database that records a step this build does not know was migrated
//!   by a newer build: `migrate` refuses to run on it.
//!
//! # Schema (same semantics on both backends)
//!
//! - `lockbox_meta(name PK, value bytes)`: small key/value settings (seal
//!   configuration, root token hash, ...).
//! - `lockbox_keys(name PK, ...)`: one row per key, the fields of `KeyRow`.
//!   `u32` fields are 64-bit integers (range-checked on read), booleans are
//!   `BOOLEAN` (PostgreSQL) or `INTEGER` 0/1 (SQLite, checked).
//! - `lockbox_key_versions(name FK -> lockbox_keys, version, created_at,
//!   sealed bytes, PK (name, version))`.
//! - `lockbox_usage(name PK, encrypt_ops, decrypt_ops, other_ops,
//!   last_used_at)`: no foreign key, so counters can be flushed
//!   independently of key rows.
//!
//! - `lockbox_audit(segment, seq, time, operation, key, outcome, entry,
//!   PK (segment, seq))`: the store audit sink (step 2); `entry` is the sealed
//!   JSON line exactly as chained, the other columns are copies for queries.
//!
//! Text keys compare and sort by bytes on both backends (SQLite `BINARY`,
//! PostgreSQL `COLLATE "C"`). SQLite tables are `STRICT`.

/// One numbered step: statements run in order in one transaction.
pub(crate) struct Step {
    /// The step number (recorded in `lockbox_schema_migrations`).
    pub(crate) version: i64,
    /// The statements (one statement per string).
    pub(crate) statements: &'static [&'static str],
}

/// The bookkeeping table (created before any step, `IF NOT EXISTS`).
pub(crate) const SQLITE_BOOTSTRAP: &str = "CREATE TABLE IF NOT EXISTS lockbox_schema_migrations (\
     version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL) STRICT";

/// The bookkeeping table (created before any step, `IF NOT EXISTS`).
pub(crate) const POSTGRES_BOOTSTRAP: &str =
    "CREATE TABLE IF NOT EXISTS lockbox_schema_migrations (\
     version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

/// SQLite steps.
pub(crate) const SQLITE: &[Step] = &[
    Step {
        version: 1,
        statements: &[
            "CREATE TABLE lockbox_meta (
            name TEXT PRIMARY KEY NOT NULL,
            value BLOB NOT NULL
        ) STRICT",
            "CREATE TABLE lockbox_keys (
            name TEXT PRIMARY KEY NOT NULL,
            key_id INTEGER NOT NULL,
            key_type TEXT NOT NULL,
            derived INTEGER NOT NULL CHECK (derived IN (0, 1)),
            convergent INTEGER NOT NULL CHECK (convergent IN (0, 1)),
            exportable INTEGER NOT NULL CHECK (exportable IN (0, 1)),
            allow_plaintext_backup INTEGER NOT NULL CHECK (allow_plaintext_backup IN (0, 1)),
            deletion_allowed INTEGER NOT NULL CHECK (deletion_allowed IN (0, 1)),
            auto_rotate_period_secs INTEGER NOT NULL,
            min_decryption_version INTEGER NOT NULL,
            min_encryption_version INTEGER NOT NULL,
            latest_version INTEGER NOT NULL,
            min_available_version INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            last_rotated_at INTEGER NOT NULL,
            deleted_at INTEGER,
            destroyed_at INTEGER,
            destroyed_by TEXT,
            generation INTEGER NOT NULL,
            extra TEXT NOT NULL,
            mac BLOB NOT NULL
        ) STRICT",
            "CREATE TABLE lockbox_key_versions (
            name TEXT NOT NULL REFERENCES lockbox_keys (name) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            sealed BLOB NOT NULL,
            PRIMARY KEY (name, version)
        ) STRICT",
            "CREATE TABLE lockbox_usage (
            name TEXT PRIMARY KEY NOT NULL,
            encrypt_ops INTEGER NOT NULL,
            decrypt_ops INTEGER NOT NULL,
            other_ops INTEGER NOT NULL,
            last_used_at INTEGER NOT NULL
        ) STRICT",
        ],
    },
    Step {
        version: 2,
        statements: &[
            "CREATE TABLE lockbox_audit (
                segment TEXT NOT NULL,
                seq INTEGER NOT NULL,
                time INTEGER NOT NULL,
                operation TEXT NOT NULL,
                key TEXT,
                outcome TEXT NOT NULL,
                entry TEXT NOT NULL,
                PRIMARY KEY (segment, seq)
            ) STRICT",
            "CREATE INDEX lockbox_audit_time ON lockbox_audit (time)",
        ],
    },
];

/// PostgreSQL steps.
pub(crate) const POSTGRES: &[Step] = &[
    Step {
        version: 1,
        statements: &[
            r#"CREATE TABLE lockbox_meta (
            name TEXT COLLATE "C" PRIMARY KEY,
            value BYTEA NOT NULL
        )"#,
            r#"CREATE TABLE lockbox_keys (
            name TEXT COLLATE "C" PRIMARY KEY,
            key_id BIGINT NOT NULL,
            key_type TEXT NOT NULL,
            derived BOOLEAN NOT NULL,
            convergent BOOLEAN NOT NULL,
            exportable BOOLEAN NOT NULL,
            allow_plaintext_backup BOOLEAN NOT NULL,
            deletion_allowed BOOLEAN NOT NULL,
            auto_rotate_period_secs BIGINT NOT NULL,
            min_decryption_version BIGINT NOT NULL,
            min_encryption_version BIGINT NOT NULL,
            latest_version BIGINT NOT NULL,
            min_available_version BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            last_rotated_at BIGINT NOT NULL,
            deleted_at BIGINT,
            destroyed_at BIGINT,
            destroyed_by TEXT,
            generation BIGINT NOT NULL,
            extra TEXT NOT NULL,
            mac BYTEA NOT NULL
        )"#,
            r#"CREATE TABLE lockbox_key_versions (
            name TEXT COLLATE "C" NOT NULL REFERENCES lockbox_keys (name) ON DELETE CASCADE,
            version BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            sealed BYTEA NOT NULL,
            PRIMARY KEY (name, version)
        )"#,
            r#"CREATE TABLE lockbox_usage (
            name TEXT COLLATE "C" PRIMARY KEY,
            encrypt_ops BIGINT NOT NULL,
            decrypt_ops BIGINT NOT NULL,
            other_ops BIGINT NOT NULL,
            last_used_at BIGINT NOT NULL
        )"#,
        ],
    },
    Step {
        version: 2,
        statements: &[
            r#"CREATE TABLE lockbox_audit (
                segment TEXT COLLATE "C" NOT NULL,
                seq BIGINT NOT NULL,
                time BIGINT NOT NULL,
                operation TEXT NOT NULL,
                key TEXT COLLATE "C",
                outcome TEXT NOT NULL,
                entry TEXT NOT NULL,
                PRIMARY KEY (segment, seq)
            )"#,
            "CREATE INDEX lockbox_audit_time ON lockbox_audit (time)",
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_have_the_same_numbered_steps() {
        let a: Vec<i64> = SQLITE.iter().map(|s| s.version).collect();
        let b: Vec<i64> = POSTGRES.iter().map(|s| s.version).collect();
        assert_eq!(a, b);
        let expected: Vec<i64> = (1..=i64::try_from(a.len()).unwrap_or(0)).collect();
        assert_eq!(a, expected, "steps are numbered 1, 2, 3... in order");
    }
}
