// The backend-independent half of each backend, written once.
//
// This file is not a module: `sqlite.rs` and `postgres.rs` each `include!` it,
// so the same code is compiled (and type-checked) once against each concrete
// driver, without generic trait-bound gymnastics or trait objects. The
// including module provides:
//
// - `type Db` (the sqlx database) and `type Backend` (the store struct, with
//   a field `pool: sqlx::Pool<Db>`);
// - `Backend::begin_write`, `begin_read`, `begin_migration` (each returns a
//   `sqlx::Transaction<'static, Db>`), `notify_changed(&mut tx, name)` and
//   `migration_prelude()` (statements run before the bookkeeping table is
//   created);
// - the constants `BOOTSTRAP`, `MIGRATIONS` and `USAGE_UPSERT`.
//
// SQL placeholders are `$N`, which both drivers accept.

use sqlx::Row as _;

use crate::error::{db_err, is_unique_violation};
use crate::{
    check_name, check_text, check_row, check_versions, count_to_i64, to_u32, to_u64, unix_now, KeyRow,
    AuditFilter, AuditRow, StoreError, Usage, VersionRow,
};

/// The row type of this driver.
type DbRow = <Db as sqlx::Database>::Row;
/// A query with arguments of this driver.
type DbQuery<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>;

/// Key columns, in the order `decode_key` reads them.
const KEY_COLUMNS: &str = "name, key_id, key_type, derived, convergent, exportable, \
     allow_plaintext_backup, deletion_allowed, auto_rotate_period_secs, \
     min_decryption_version, min_encryption_version, latest_version, min_available_version, \
     created_at, updated_at, last_rotated_at, deleted_at, destroyed_at, destroyed_by, \
     generation, extra, mac";

const KEY_INSERT: &str = "INSERT INTO lockbox_keys (name, key_id, key_type, derived, \
     convergent, exportable, allow_plaintext_backup, deletion_allowed, auto_rotate_period_secs, \
     min_decryption_version, min_encryption_version, latest_version, min_available_version, \
     created_at, updated_at, last_rotated_at, deleted_at, destroyed_at, destroyed_by, \
     generation, extra, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
     $14, $15, $16, $17, $18, $19, $20, $21, $22)";

const KEY_UPDATE: &str = "UPDATE lockbox_keys SET key_id = $2, key_type = $3, derived = $4, \
     convergent = $5, exportable = $6, allow_plaintext_backup = $7, deletion_allowed = $8, \
     auto_rotate_period_secs = $9, min_decryption_version = $10, min_encryption_version = $11, \
     latest_version = $12, min_available_version = $13, created_at = $14, updated_at = $15, \
     last_rotated_at = $16, deleted_at = $17, destroyed_at = $18, destroyed_by = $19, \
     generation = $20, extra = $21, mac = $22 WHERE name = $1 AND generation = $23";

const VERSION_INSERT: &str =
    "INSERT INTO lockbox_key_versions (name, version, created_at, sealed) VALUES ($1, $2, $3, $4)";

/// Binds the 22 key columns as `$1..$22`, in `KEY_COLUMNS` order.
fn bind_key<'q>(q: DbQuery<'q>, row: &'q KeyRow) -> DbQuery<'q> {
    q.bind(row.name.as_str())
        .bind(i64::from(row.key_id))
        .bind(row.key_type.as_str())
        .bind(row.derived)
        .bind(row.convergent)
        .bind(row.exportable)
        .bind(row.allow_plaintext_backup)
        .bind(row.deletion_allowed)
        .bind(row.auto_rotate_period_secs)
        .bind(i64::from(row.min_decryption_version))
        .bind(i64::from(row.min_encryption_version))
        .bind(i64::from(row.latest_version))
        .bind(i64::from(row.min_available_version))
        .bind(row.created_at)
        .bind(row.updated_at)
        .bind(row.last_rotated_at)
        .bind(row.deleted_at)
        .bind(row.destroyed_at)
        .bind(row.destroyed_by.as_deref())
        .bind(row.generation)
        .bind(row.extra.as_str())
        .bind(row.mac.as_slice())
}

/// Reads column `i` of a row, as `T`; a failure is [`StoreError::Corrupt`].
fn col<'r, T>(row: &'r DbRow, i: usize, table: &str, what: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Db> + sqlx::Type<Db>,
{
    row.try_get::<T, usize>(i)
        .map_err(|e| StoreError::Corrupt(format!("{table}.{what}: {e}")))
}

/// Decodes a row selected with `KEY_COLUMNS`.
fn decode_key(r: &DbRow) -> Result<KeyRow, StoreError> {
    const T: &str = "lockbox_keys";
    let name: String = col(r, 0, T, "name")?;
    let u32_col = |i: usize, what: &str| -> Result<u32, StoreError> {
        to_u32(col::<i64>(r, i, T, what)?, what, &name)
    };
    Ok(KeyRow {
        key_id: u32_col(1, "key_id")?,
        key_type: col(r, 2, T, "key_type")?,
        derived: col(r, 3, T, "derived")?,
        convergent: col(r, 4, T, "convergent")?,
        exportable: col(r, 5, T, "exportable")?,
        allow_plaintext_backup: col(r, 6, T, "allow_plaintext_backup")?,
        deletion_allowed: col(r, 7, T, "deletion_allowed")?,
        auto_rotate_period_secs: col(r, 8, T, "auto_rotate_period_secs")?,
        min_decryption_version: u32_col(9, "min_decryption_version")?,
        min_encryption_version: u32_col(10, "min_encryption_version")?,
        latest_version: u32_col(11, "latest_version")?,
        min_available_version: u32_col(12, "min_available_version")?,
        created_at: col(r, 13, T, "created_at")?,
        updated_at: col(r, 14, T, "updated_at")?,
        last_rotated_at: col(r, 15, T, "last_rotated_at")?,
        deleted_at: col(r, 16, T, "deleted_at")?,
        destroyed_at: col(r, 17, T, "destroyed_at")?,
        destroyed_by: col(r, 18, T, "destroyed_by")?,
        generation: col(r, 19, T, "generation")?,
        extra: col(r, 20, T, "extra")?,
        mac: col(r, 21, T, "mac")?,
        name,
    })
}

/// Decodes a row selected as `name, version, created_at, sealed`.
fn decode_version(r: &DbRow) -> Result<VersionRow, StoreError> {
    const T: &str = "lockbox_key_versions";
    let name: String = col(r, 0, T, "name")?;
    let version = to_u32(col::<i64>(r, 1, T, "version")?, "version", &name)?;
    Ok(VersionRow {
        version,
        created_at: col(r, 2, T, "created_at")?,
        sealed: col(r, 3, T, "sealed")?,
        name,
    })
}

impl Backend {
    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        let known = MIGRATIONS.iter().map(|s| s.version).max().unwrap_or(0);
        let mut tx = self.begin_migration().await?;
        for stmt in self.migration_prelude() {
            sqlx::query(&stmt).execute(&mut *tx).await.map_err(db_err)?;
        }
        sqlx::query(BOOTSTRAP)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let newest: Option<i64> = sqlx::query("SELECT MAX(version) FROM lockbox_schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db_err)?;
        if let Some(newest) = newest.filter(|n| *n > known) {
            return Err(StoreError::Invalid(format!(
                "the database schema is at version {newest}, newer than this build supports \
                 ({known}); upgrade Lockbox"
            )));
        }
        tx.commit().await.map_err(db_err)?;

        for step in MIGRATIONS {
            let mut tx = self.begin_migration().await?;
            let applied = sqlx::query("SELECT 1 FROM lockbox_schema_migrations WHERE version = $1")
                .bind(step.version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .is_some();
            if applied {
                tx.rollback().await.map_err(db_err)?;
                continue;
            }
            for stmt in step.statements {
                sqlx::query(stmt).execute(&mut *tx).await.map_err(|e| {
                    StoreError::Unavailable(format!(
                        "migration step {} failed: {}",
                        step.version,
                        db_err(e)
                    ))
                })?;
            }
            sqlx::query(
                "INSERT INTO lockbox_schema_migrations (version, applied_at) VALUES ($1, $2)",
            )
            .bind(step.version)
            .bind(unix_now())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
        }
        Ok(())
    }

    pub(crate) async fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM lockbox_meta WHERE name = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| col(&r, 0, "lockbox_meta", "value")).transpose()
    }

    pub(crate) async fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        check_name("meta key", key)?;
        sqlx::query(
            "INSERT INTO lockbox_meta (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    pub(crate) async fn meta_put_if_absent(
        &self,
        key: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        check_name("meta key", key)?;
        let done = sqlx::query(
            "INSERT INTO lockbox_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn meta_list(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        check_name("meta prefix", prefix)?;
        // A byte-order range scan (both backends compare names by bytes).
        let upper = format!("{prefix}\u{10FFFF}");
        let rows = sqlx::query(
            "SELECT name, value FROM lockbox_meta WHERE name >= $1 AND name < $2 ORDER BY name",
        )
        .bind(prefix)
        .bind(upper.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let name: String = col(r, 0, "lockbox_meta", "name")?;
            if name.starts_with(prefix) {
                out.push((name, col(r, 1, "lockbox_meta", "value")?));
            }
        }
        Ok(out)
    }

    pub(crate) async fn meta_delete(&self, key: &str) -> Result<bool, StoreError> {
        check_name("meta key", key)?;
        let done = sqlx::query("DELETE FROM lockbox_meta WHERE name = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn audit_append(&self, rows: &[AuditRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for r in rows {
            check_name("audit segment", &r.segment)?;
            check_text("audit entry", &r.entry)?;
            sqlx::query(
                "INSERT INTO lockbox_audit (segment, seq, time, operation, key, outcome, entry) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(r.segment.as_str())
            .bind(count_to_i64(r.seq, "audit seq")?)
            .bind(r.time)
            .bind(r.operation.as_str())
            .bind(r.key.as_deref())
            .bind(r.outcome.as_str())
            .bind(r.entry.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    pub(crate) async fn audit_query(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        const T: &str = "lockbox_audit";
        let limit = i64::try_from(f.limit.clamp(1, 100_000)).unwrap_or(100_000);
        let rows = sqlx::query(
            "SELECT segment, seq, time, operation, key, outcome, entry FROM lockbox_audit \
             WHERE ($1 IS NULL OR key = $1) AND ($2 IS NULL OR time >= $2) \
             AND ($3 IS NULL OR time <= $3) AND ($4 IS NULL OR outcome = $4) \
             AND ($5 IS NULL OR segment = $5) \
             ORDER BY time, segment, seq LIMIT $6",
        )
        .bind(f.key.as_deref())
        .bind(f.since)
        .bind(f.until)
        .bind(f.outcome.as_deref())
        .bind(f.segment.as_deref())
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let seq: i64 = col(r, 1, T, "seq")?;
                Ok(AuditRow {
                    segment: col(r, 0, T, "segment")?,
                    seq: u64::try_from(seq)
                        .map_err(|_| StoreError::Corrupt("lockbox_audit.seq is negative".into()))?,
                    time: col(r, 2, T, "time")?,
                    operation: col(r, 3, T, "operation")?,
                    key: col(r, 4, T, "key")?,
                    outcome: col(r, 5, T, "outcome")?,
                    entry: col(r, 6, T, "entry")?,
                })
            })
            .collect()
    }

    pub(crate) async fn key_insert(
        &self,
        row: &KeyRow,
        versions: &[VersionRow],
    ) -> Result<(), StoreError> {
        check_row(row)?;
        check_versions(&row.name, versions)?;
        let mut tx = self.begin_write().await?;
        let sql = format!("{KEY_INSERT} ON CONFLICT (name) DO NOTHING");
        let done = bind_key(sqlx::query(&sql), row)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists);
        }
        insert_versions(&mut tx, versions).await?;
        self.notify_changed(&mut tx, &row.name).await?;
        tx.commit().await.map_err(db_err)
    }

    pub(crate) async fn key_get(
        &self,
        name: &str,
    ) -> Result<Option<(KeyRow, Vec<VersionRow>)>, StoreError> {
        let mut tx = self.begin_read().await?;
        let sql = format!("SELECT {KEY_COLUMNS} FROM lockbox_keys WHERE name = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
        else {
            tx.rollback().await.map_err(db_err)?;
            return Ok(None);
        };
        let key = decode_key(&row)?;
        let rows = sqlx::query(
            "SELECT name, version, created_at, sealed FROM lockbox_key_versions \
             WHERE name = $1 ORDER BY version",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.rollback().await.map_err(db_err)?;
        let versions = rows
            .iter()
            .map(decode_version)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((key, versions)))
    }

    pub(crate) async fn key_list(&self) -> Result<Vec<KeyRow>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM lockbox_keys ORDER BY name");
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        rows.iter().map(decode_key).collect()
    }

    pub(crate) async fn key_load_all(&self) -> Result<Vec<(KeyRow, Vec<VersionRow>)>, StoreError> {
        let mut tx = self.begin_read().await?;
        let sql = format!("SELECT {KEY_COLUMNS} FROM lockbox_keys ORDER BY name");
        let key_rows = sqlx::query(&sql)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let version_rows = sqlx::query(
            "SELECT name, version, created_at, sealed FROM lockbox_key_versions \
             ORDER BY name, version",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.rollback().await.map_err(db_err)?;

        let mut out = Vec::with_capacity(key_rows.len());
        for r in &key_rows {
            out.push((decode_key(r)?, Vec::new()));
        }
        // Merge join: both lists are sorted by name in byte order.
        let mut i = 0;
        for r in &version_rows {
            let v = decode_version(r)?;
            while out.get(i).is_some_and(|(k, _)| k.name < v.name) {
                i += 1;
            }
            match out.get_mut(i) {
                Some((k, vs)) if k.name == v.name => vs.push(v),
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "version {} of key {:?} has no key row",
                        v.version, v.name
                    )))
                }
            }
        }
        Ok(out)
    }

    pub(crate) async fn key_update(
        &self,
        row: &KeyRow,
        expected_generation: i64,
        add_versions: &[VersionRow],
        delete_versions_below: Option<u32>,
        delete_all_versions: bool,
    ) -> Result<(), StoreError> {
        check_row(row)?;
        check_versions(&row.name, add_versions)?;
        if expected_generation.checked_add(1) != Some(row.generation) {
            return Err(StoreError::Invalid(format!(
                "key {:?}: the new generation must be {expected_generation} + 1, not {}",
                row.name, row.generation
            )));
        }
        let mut tx = self.begin_write().await?;
        let done = bind_key(sqlx::query(KEY_UPDATE), row)
            .bind(expected_generation)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() != 1 {
            let exists = sqlx::query("SELECT 1 FROM lockbox_keys WHERE name = $1")
                .bind(row.name.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .is_some();
            tx.rollback().await.map_err(db_err)?;
            return Err(if exists {
                StoreError::Conflict
            } else {
                StoreError::NotFound
            });
        }
        if delete_all_versions {
            sqlx::query("DELETE FROM lockbox_key_versions WHERE name = $1")
                .bind(row.name.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        if let Some(below) = delete_versions_below {
            sqlx::query("DELETE FROM lockbox_key_versions WHERE name = $1 AND version < $2")
                .bind(row.name.as_str())
                .bind(i64::from(below))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        insert_versions(&mut tx, add_versions).await?;
        self.notify_changed(&mut tx, &row.name).await?;
        tx.commit().await.map_err(db_err)
    }

    pub(crate) async fn usage_add(
        &self,
        name: &str,
        encrypt_ops: u64,
        decrypt_ops: u64,
        other_ops: u64,
        last_used_at: i64,
    ) -> Result<(), StoreError> {
        check_name("key name", name)?;
        sqlx::query(USAGE_UPSERT)
            .bind(name)
            .bind(count_to_i64(encrypt_ops, "encrypt_ops")?)
            .bind(count_to_i64(decrypt_ops, "decrypt_ops")?)
            .bind(count_to_i64(other_ops, "other_ops")?)
            .bind(last_used_at)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    pub(crate) async fn usage_get(&self, name: &str) -> Result<Option<Usage>, StoreError> {
        const T: &str = "lockbox_usage";
        let Some(r) = sqlx::query(
            "SELECT encrypt_ops, decrypt_ops, other_ops, last_used_at FROM lockbox_usage \
             WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        else {
            return Ok(None);
        };
        Ok(Some(Usage {
            encrypt_ops: to_u64(col(&r, 0, T, "encrypt_ops")?, "encrypt_ops", name)?,
            decrypt_ops: to_u64(col(&r, 1, T, "decrypt_ops")?, "decrypt_ops", name)?,
            other_ops: to_u64(col(&r, 2, T, "other_ops")?, "other_ops", name)?,
            last_used_at: col(&r, 3, T, "last_used_at")?,
        }))
    }
}

/// Inserts versions; a version that exists is [`StoreError::Conflict`] (the
/// caller drops the transaction, which rolls it back).
async fn insert_versions(
    tx: &mut sqlx::Transaction<'static, Db>,
    versions: &[VersionRow],
) -> Result<(), StoreError> {
    for v in versions {
        sqlx::query(VERSION_INSERT)
            .bind(v.name.as_str())
            .bind(i64::from(v.version))
            .bind(v.created_at)
            .bind(v.sealed.as_slice())
            .execute(&mut **tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict
                } else {
                    db_err(e)
                }
            })?;
    }
    Ok(())
}
