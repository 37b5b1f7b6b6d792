//! The three databases behind one enum: identifier checks and quoting, schema
//! introspection, keyset-paginated reads and batched optimistic writes.

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row as _;

use crate::{MigrateError, Result};

/// Which SQL dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MariaDB or MySQL.
    MySql,
    /// SQLite.
    Sqlite,
}

/// A pool on one of the three databases.
#[derive(Clone)]
pub enum Db {
    /// PostgreSQL.
    Pg(PgPool),
    /// MariaDB / MySQL.
    My(MySqlPool),
    /// SQLite.
    Lite(SqlitePool),
}

pub(crate) fn db_err(e: sqlx::Error) -> MigrateError {
    MigrateError::Database(e.to_string())
}

/// An identifier: `[A-Za-z_][A-Za-z0-9_]*`, at most 63 characters.
pub fn check_ident(s: &str) -> Result<()> {
    let mut chars = s.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        _ => false,
    } && s.len() <= 63;
    if ok {
        Ok(())
    } else {
        Err(MigrateError::Config(format!(
            "invalid identifier {s:?}: use [A-Za-z_][A-Za-z0-9_]* (at most 63 characters)"
        )))
    }
}

/// A table name, optionally `schema.table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableName {
    /// Schema (PostgreSQL schema, MySQL database), if given.
    pub schema: Option<String>,
    /// Table.
    pub name: String,
}

impl TableName {
    /// Parse and validate `table` or `schema.table`.
    ///
    /// # Errors
    /// [`MigrateError::Config`] for an invalid identifier.
    pub fn parse(s: &str) -> Result<Self> {
        let (schema, name) = match s.split_once('.') {
            Some((a, b)) => (Some(a.to_owned()), b.to_owned()),
            None => (None, s.to_owned()),
        };
        if let Some(sc) = &schema {
            check_ident(sc)?;
        }
        check_ident(&name)?;
        Ok(TableName { schema, name })
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// How a column's values are carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColKind {
    /// Text (TEXT, VARCHAR, CHAR…): values are UTF-8.
    Text,
    /// Bytes (bytea, BLOB, VARBINARY…).
    Bytes,
}

/// A column of the table.
#[derive(Clone, Debug)]
pub struct ColumnInfo {
    /// Name.
    pub name: String,
    /// Declared type (lowercase).
    pub data_type: String,
}

/// One row as read: primary key, column values, context values, blind index.
#[derive(Clone, Debug)]
pub struct Row {
    /// Primary key.
    pub pk: i64,
    /// The converted columns' values, in order.
    pub vals: Vec<Option<Vec<u8>>>,
    /// Values of the context template's columns, as text.
    pub ctx: Vec<Option<String>>,
    /// The blind-index column, if one is configured.
    pub bi: Option<String>,
}

/// One row to write: new values (and blind index), old values for the check.
#[derive(Clone, Debug)]
pub struct Write {
    /// Primary key.
    pub pk: i64,
    /// Values read (the optimistic check).
    pub old: Vec<Option<Vec<u8>>>,
    /// Values to write.
    pub new: Vec<Option<Vec<u8>>>,
    /// New blind index (only when configured).
    pub bi: Option<String>,
}

/// What is read and written: fixed for a job.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Table.
    pub table: TableName,
    /// Primary key column.
    pub pk: String,
    /// Converted columns and their kinds.
    pub cols: Vec<(String, ColKind)>,
    /// Columns the context template reads.
    pub ctx_cols: Vec<String>,
    /// Blind-index column.
    pub bi_col: Option<String>,
}

impl Db {
    /// Connect to `url` (`postgres://`, `mysql://` / `mariadb://`, `sqlite://`)
    /// with at most `max_conns` connections.
    ///
    /// # Errors
    /// [`MigrateError::Config`] for an unknown scheme, [`MigrateError::Database`].
    pub async fn connect(url: &str, max_conns: u32) -> Result<Db> {
        let acquire = Duration::from_secs(30);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts: PgConnectOptions = url.parse().map_err(db_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_conns)
                .acquire_timeout(acquire)
                .after_connect(|c, _| {
                    Box::pin(async move {
                        // A batch's rows and its "done" mark commit together, so a
                        // commit lost in a PostgreSQL crash only makes the job redo
                        // that batch: no need to wait for each WAL flush.
                        sqlx::query("SET synchronous_commit = off")
                            .execute(&mut *c)
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(opts)
                .await
                .map_err(db_err)?;
            Ok(Db::Pg(pool))
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            let url = url.replacen("mariadb://", "mysql://", 1);
            let opts: MySqlConnectOptions = url.parse().map_err(db_err)?;
            let pool = MySqlPoolOptions::new()
                .max_connections(max_conns)
                .acquire_timeout(acquire)
                .after_connect(|c, _| {
                    Box::pin(async move {
                        sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                            .execute(&mut *c)
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(opts)
                .await
                .map_err(db_err)?;
            Ok(Db::My(pool))
        } else if url.starts_with("sqlite:") {
            let opts: SqliteConnectOptions = url.parse().map_err(db_err)?;
            let opts = opts.busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_conns)
                .acquire_timeout(acquire)
                .connect_with(opts)
                .await
                .map_err(db_err)?;
            Ok(Db::Lite(pool))
        } else {
            Err(MigrateError::Config(
                "--db must be a postgres://, mysql:// (or mariadb://) or sqlite:// URL".into(),
            ))
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Pg(_) => Dialect::Postgres,
            Db::My(_) => Dialect::MySql,
            Db::Lite(_) => Dialect::Sqlite,
        }
    }

    /// Quote a validated identifier.
    pub fn q(&self, ident: &str) -> String {
        match self {
            Db::My(_) => format!("`{ident}`"),
            _ => format!("\"{ident}\""),
        }
    }

    /// Quote a table name.
    pub fn qt(&self, t: &TableName) -> String {
        match &t.schema {
            Some(s) => format!("{}.{}", self.q(s), self.q(&t.name)),
            None => self.q(&t.name),
        }
    }

    /// Run a statement without results.
    ///
    /// # Errors
    /// [`MigrateError::Database`].
    pub async fn exec(&self, sql: &str) -> Result<()> {
        match self {
            Db::Pg(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Db::My(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            Db::Lite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
        .map_err(db_err)
    }

    /// The table's columns; an error if the table does not exist.
    ///
    /// # Errors
    /// [`MigrateError::Schema`] when the table is missing.
    pub async fn columns(&self, t: &TableName) -> Result<Vec<ColumnInfo>> {
        let rows: Vec<(String, String)> = match self {
            Db::Pg(p) => sqlx::query_as(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2 \
                 ORDER BY ordinal_position",
            )
            .bind(t.schema.as_deref())
            .bind(&t.name)
            .fetch_all(p)
            .await
            .map_err(db_err)?,
            Db::My(p) => sqlx::query_as(
                "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR) FROM information_schema.columns \
                 WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ? \
                 ORDER BY ORDINAL_POSITION",
            )
            .bind(t.schema.as_deref())
            .bind(&t.name)
            .fetch_all(p)
            .await
            .map_err(db_err)?,
            Db::Lite(p) => {
                if t.schema.is_some() {
                    return Err(MigrateError::Config(
                        "SQLite tables are not schema-qualified".into(),
                    ));
                }
                sqlx::query_as("SELECT name, type FROM pragma_table_info(?) ORDER BY cid")
                    .bind(&t.name)
                    .fetch_all(p)
                    .await
                    .map_err(db_err)?
            }
        };
        if rows.is_empty() {
            return Err(MigrateError::Schema(format!("table {t} does not exist")));
        }
        Ok(rows
            .into_iter()
            .map(|(name, ty)| ColumnInfo {
                name,
                data_type: ty.to_ascii_lowercase(),
            })
            .collect())
    }

    /// Whether a declared type is an integer type (usable as the key).
    pub fn is_integer_type(&self, ty: &str) -> bool {
        match self {
            Db::Pg(_) => matches!(ty, "integer" | "bigint" | "smallint"),
            Db::My(_) => matches!(ty, "int" | "bigint" | "smallint" | "mediumint" | "tinyint"),
            Db::Lite(_) => ty.contains("int"),
        }
    }

    /// How values of a declared type are carried, if supported.
    pub fn col_kind(&self, ty: &str) -> Option<ColKind> {
        match self {
            Db::Pg(_) => match ty {
                "text" | "character varying" | "character" => Some(ColKind::Text),
                "bytea" => Some(ColKind::Bytes),
                _ => None,
            },
            Db::My(_) => match ty {
                "char" | "varchar" | "text" | "tinytext" | "mediumtext" | "longtext" => {
                    Some(ColKind::Text)
                }
                "blob" | "tinyblob" | "mediumblob" | "longblob" | "varbinary" | "binary" => {
                    Some(ColKind::Bytes)
                }
                _ => None,
            },
            Db::Lite(_) => {
                if ty.contains("blob") {
                    Some(ColKind::Bytes)
                } else if ty.is_empty()
                    || ty.contains("text")
                    || ty.contains("char")
                    || ty.contains("clob")
                {
                    Some(ColKind::Text)
                } else {
                    None
                }
            }
        }
    }

    /// `(rows, non-null keys, distinct keys)` of the table.
    ///
    /// # Errors
    /// [`MigrateError::Database`].
    pub async fn key_counts(&self, t: &TableName, pk: &str) -> Result<(i64, i64, i64)> {
        let sql = format!(
            "SELECT COUNT(*), COUNT({k}), COUNT(DISTINCT {k}) FROM {t}",
            k = self.q(pk),
            t = self.qt(t)
        );
        match self {
            Db::Pg(p) => sqlx::query_as(&sql).fetch_one(p).await,
            Db::My(p) => sqlx::query_as(&sql).fetch_one(p).await,
            Db::Lite(p) => sqlx::query_as(&sql).fetch_one(p).await,
        }
        .map_err(db_err)
    }

    /// Whether PostgreSQL has the pgcrypto extension in this database.
    ///
    /// # Errors
    /// [`MigrateError::Database`].
    pub async fn has_pgcrypto(&self) -> Result<bool> {
        match self {
            Db::Pg(p) => {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_extension WHERE extname = 'pgcrypto'",
                )
                .fetch_one(p)
                .await
                .map_err(db_err)?;
                Ok(n > 0)
            }
            _ => Ok(false),
        }
    }

    /// Decrypt pgcrypto `pgp_sym_encrypt` values with `passphrase` in
    /// PostgreSQL: one result per value, `Err` for a value that does not
    /// decrypt (wrong passphrase or corrupt data).
    ///
    /// # Errors
    /// [`MigrateError::Database`] if PostgreSQL cannot be reached.
    pub async fn pgp_decrypt(
        &self,
        values: &[Vec<u8>],
        passphrase: &str,
    ) -> Result<Vec<std::result::Result<zeroize::Zeroizing<Vec<u8>>, String>>> {
        let Db::Pg(p) = self else {
            return Err(MigrateError::Config(
                "pgcrypto values need a PostgreSQL database".into(),
            ));
        };
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let all: std::result::Result<Vec<(i64, Vec<u8>)>, sqlx::Error> = sqlx::query_as(
            "SELECT i, pgp_sym_decrypt_bytea(v, $2) FROM unnest($1::bytea[]) WITH ORDINALITY AS u(v, i) ORDER BY i",
        )
        .bind(values)
        .bind(passphrase)
        .fetch_all(p)
        .await;
        match all {
            Ok(rows) if rows.len() == values.len() => Ok(rows
                .into_iter()
                .map(|(_, v)| Ok(zeroize::Zeroizing::new(v)))
                .collect()),
            Ok(_) => Err(MigrateError::Database(
                "pgcrypto decryption returned a wrong number of rows".into(),
            )),
            Err(sqlx::Error::Database(_)) => {
                // Some value does not decrypt: find which, one by one.
                let mut out = Vec::with_capacity(values.len());
                for v in values {
                    let r: std::result::Result<Vec<u8>, sqlx::Error> =
                        sqlx::query_scalar("SELECT pgp_sym_decrypt_bytea($1, $2)")
                            .bind(v)
                            .bind(passphrase)
                            .fetch_one(p)
                            .await;
                    out.push(match r {
                        Ok(pt) => Ok(zeroize::Zeroizing::new(pt)),
                        Err(sqlx::Error::Database(d)) => Err(format!(
                            "pgcrypto: {} (wrong passphrase or corrupt value)",
                            d.message()
                        )),
                        Err(e) => return Err(db_err(e)),
                    });
                }
                Ok(out)
            }
            Err(e) => Err(db_err(e)),
        }
    }
}

/// SQL for reading rows of `shape`, with optional bounds and limit.
fn select_sql(db: &Db, shape: &Shape, lo: bool, hi: bool, limit: bool, lock: bool) -> String {
    let pk = db.q(&shape.pk);
    let mut cols = vec![match db.dialect() {
        Dialect::Postgres => format!("CAST({pk} AS BIGINT)"),
        Dialect::MySql => format!("CAST({pk} AS SIGNED)"),
        Dialect::Sqlite => pk.clone(),
    }];
    for (c, _) in &shape.cols {
        cols.push(db.q(c));
    }
    for c in &shape.ctx_cols {
        cols.push(match db.dialect() {
            Dialect::MySql => format!("CAST({} AS CHAR)", db.q(c)),
            _ => format!("CAST({} AS TEXT)", db.q(c)),
        });
    }
    if let Some(b) = &shape.bi_col {
        cols.push(db.q(b));
    }
    let mut n = 0;
    let mut ph = || {
        n += 1;
        match db.dialect() {
            Dialect::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        }
    };
    let mut conds = Vec::new();
    if lo {
        conds.push(format!("{pk} > {}", ph()));
    }
    if hi {
        conds.push(format!("{pk} <= {}", ph()));
    }
    let cols: Vec<String> = cols
        .into_iter()
        .enumerate()
        .map(|(i, c)| format!("{c} AS lbx_c{i}"))
        .collect();
    let mut sql = format!("SELECT {} FROM {}", cols.join(", "), db.qt(&shape.table));
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {pk}"));
    if limit {
        sql.push_str(&format!(" LIMIT {}", ph()));
    }
    if lock && db.dialect() != Dialect::Sqlite {
        sql.push_str(" FOR UPDATE");
    }
    sql
}

fn decode_row<R>(r: &R, shape: &Shape) -> std::result::Result<Row, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
    String: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
    Vec<u8>: sqlx::Type<R::Database> + for<'a> sqlx::Decode<'a, R::Database>,
{
    let pk: i64 = r.try_get(0)?;
    let mut i = 1;
    let mut vals = Vec::with_capacity(shape.cols.len());
    for (_, kind) in &shape.cols {
        vals.push(match kind {
            ColKind::Text => r.try_get::<Option<String>, _>(i)?.map(String::into_bytes),
            ColKind::Bytes => r.try_get::<Option<Vec<u8>>, _>(i)?,
        });
        i += 1;
    }
    let mut ctx = Vec::with_capacity(shape.ctx_cols.len());
    for _ in &shape.ctx_cols {
        ctx.push(r.try_get::<Option<String>, _>(i)?);
        i += 1;
    }
    let bi = if shape.bi_col.is_some() {
        r.try_get::<Option<String>, _>(i)?
    } else {
        None
    };
    Ok(Row { pk, vals, ctx, bi })
}

macro_rules! fetch_rows {
    ($exec:expr, $sql:expr, $shape:expr, $lo:expr, $hi:expr, $limit:expr) => {{
        let mut q = sqlx::query($sql);
        if let Some(lo) = $lo {
            q = q.bind(lo);
        }
        if let Some(hi) = $hi {
            q = q.bind(hi);
        }
        if let Some(l) = $limit {
            q = q.bind(l);
        }
        let rows = q.fetch_all($exec).await.map_err(db_err)?;
        rows.iter()
            .map(|r| decode_row(r, $shape))
            .collect::<std::result::Result<Vec<Row>, sqlx::Error>>()
            .map_err(db_err)?
    }};
}

/// A statement parameter.
#[derive(Clone, Debug)]
pub enum Arg {
    /// Integer.
    I(Option<i64>),
    /// Text.
    S(String),
}

macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Arg::I(i) => q.bind(*i),
                Arg::S(s) => q.bind(s.clone()),
            };
        }
        q
    }};
}

/// A transaction on one of the databases.
pub enum Tx {
    /// PostgreSQL.
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    /// MariaDB / MySQL.
    My(sqlx::Transaction<'static, sqlx::MySql>),
    /// SQLite.
    Lite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl Db {
    /// Begin a transaction.
    ///
    /// # Errors
    /// [`MigrateError::Database`].
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Db::Pg(p) => Tx::Pg(p.begin().await.map_err(db_err)?),
            Db::My(p) => Tx::My(p.begin().await.map_err(db_err)?),
            Db::Lite(p) => Tx::Lite(p.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?),
        })
    }

    /// Rows with `lo < pk <= hi` (open ends when `None`), at most `limit`,
    /// outside any transaction.
    ///
    /// # Errors
    /// [`MigrateError::Database`].
    pub async fn read(
        &self,
        shape: &Shape,
        lo: Option<i64>,
        hi: Option<i64>,
        limit: Option<i64>,
    ) -> Result<Vec<Row>> {
        let sql = select_sql(
            self,
            shape,
            lo.is_some(),
            hi.is_some(),
            limit.is_some(),
            false,
        );
        Ok(match self {
            Db::Pg(p) => fetch_rows!(p, &sql, shape, lo, hi, limit),
            Db::My(p) => fetch_rows!(p, &sql, shape, lo, hi, limit),
            Db::Lite(p) => fetch_rows!(p, &sql, shape, lo, hi, limit),
        })
    }
}

impl Tx {
    /// Rows with `lo < pk <= hi`, read in the transaction (locked with
    /// `FOR UPDATE` when `lock`).
    ///
    /// # Errors
    /// [`MigrateError::Database`].
    pub async fn read(
        &mut self,
        db: &Db,
        shape: &Shape,
        lo: Option<i64>,
        hi: Option<i64>,
        lock: bool,
    ) -> Result<Vec<Row>> {
        let sql = select_sql(db, shape, lo.is_some(), hi.is_some(), false, lock);
        let none: Option<i64> = None;
        Ok(match self {
            Tx::Pg(t) => fetch_rows!(&mut **t, &sql, shape, lo, hi, none),
            Tx::My(t) => fetch_rows!(&mut **t, &sql, shape, lo, hi, none),
            Tx::Lite(t) => fetch_rows!(&mut **t, &sql, shape, lo, hi, none),
        })
    }

    /// The given rows, locked (re-read after a conflict).
    ///
    /// # Errors
    /// [`MigrateError::Database`].
    pub async fn read_pks(&mut self, db: &Db, shape: &Shape, pks: &[i64]) -> Result<Vec<Row>> {
        let mut out = Vec::new();
        for &pk in pks {
            let rows = self.read(db, shape, Some(pk - 1), Some(pk), true).await?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Commit.
    ///
    /// # Errors
    /// [`MigrateError::Database`].
    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Pg(t) => t.commit().await,
            Tx::My(t) => t.commit().await,
            Tx::Lite(t) => t.commit().await,
        }
        .map_err(db_err)
    }

    /// Write `rows` where each row's values are still the ones read; returns
    /// the keys of the rows written.
    ///
    /// # Errors
    /// [`MigrateError::Database`]; [`MigrateError::BadRow`]-free: values are
    /// checked before.
    pub async fn write(&mut self, db: &Db, shape: &Shape, rows: &[Write]) -> Result<Vec<i64>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Tx::Pg(t) => write_pg(t, db, shape, rows).await,
            Tx::My(t) => write_my(t, db, shape, rows).await,
            Tx::Lite(t) => write_lite(t, db, shape, rows).await,
        }
    }

    /// Run a statement with text/integer parameters; rows affected.
    ///
    /// # Errors
    /// [`MigrateError::Database`].
    pub async fn exec(&mut self, sql: &str, args: &[Arg]) -> Result<u64> {
        match self {
            Tx::Pg(t) => bind_args!(sqlx::query(sql), args)
                .execute(&mut **t)
                .await
                .map(|r| r.rows_affected()),
            Tx::My(t) => bind_args!(sqlx::query(sql), args)
                .execute(&mut **t)
                .await
                .map(|r| r.rows_affected()),
            Tx::Lite(t) => bind_args!(sqlx::query(sql), args)
                .execute(&mut **t)
                .await
                .map(|r| r.rows_affected()),
        }
        .map_err(db_err)
    }

    /// Fetch rows of nullable integers.
    ///
    /// # Errors
    /// [`MigrateError::Database`].
    pub async fn fetch_ints(
        &mut self,
        sql: &str,
        args: &[Arg],
        n: usize,
    ) -> Result<Vec<Vec<Option<i64>>>> {
        macro_rules! go {
            ($t:expr) => {{
                let rows = bind_args!(sqlx::query(sql), args)
                    .fetch_all(&mut **$t)
                    .await
                    .map_err(db_err)?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let mut v = Vec::with_capacity(n);
                    for i in 0..n {
                        v.push(r.try_get::<Option<i64>, _>(i).map_err(db_err)?);
                    }
                    out.push(v);
                }
                out
            }};
        }
        Ok(match self {
            Tx::Pg(t) => go!(t),
            Tx::My(t) => go!(t),
            Tx::Lite(t) => go!(t),
        })
    }
}

fn text_of(v: &Option<Vec<u8>>) -> Result<Option<String>> {
    match v {
        None => Ok(None),
        Some(b) => String::from_utf8(b.clone())
            .map(Some)
            .map_err(|_| MigrateError::Internal("non-UTF-8 value for a text column".into())),
    }
}

async fn write_pg(
    t: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    db: &Db,
    shape: &Shape,
    rows: &[Write],
) -> Result<Vec<i64>> {
    let pks: Vec<i64> = rows.iter().map(|w| w.pk).collect();
    let mut decl = vec!["$1::bigint[]".to_owned()];
    let mut names = vec!["pk".to_owned()];
    let mut sets = Vec::new();
    let mut checks = Vec::new();
    let mut n = 1;
    for (i, (c, kind)) in shape.cols.iter().enumerate() {
        let ty = match kind {
            ColKind::Text => "text[]",
            ColKind::Bytes => "bytea[]",
        };
        decl.push(format!("${}::{ty}", n + 1));
        decl.push(format!("${}::{ty}", n + 2));
        n += 2;
        names.push(format!("o{i}"));
        names.push(format!("n{i}"));
        sets.push(format!("{} = v.n{i}", db.q(c)));
        checks.push(format!("t.{} IS NOT DISTINCT FROM v.o{i}", db.q(c)));
    }
    if let Some(b) = &shape.bi_col {
        decl.push(format!("${}::text[]", n + 1));
        names.push("bi".into());
        sets.push(format!("{} = v.bi", db.q(b)));
    }
    let sql = format!(
        "UPDATE {tab} AS t SET {sets} FROM unnest({decl}) AS v({names}) WHERE t.{pk} = v.pk AND {checks} RETURNING CAST(t.{pk} AS BIGINT)",
        tab = db.qt(&shape.table),
        sets = sets.join(", "),
        decl = decl.join(", "),
        names = names.join(", "),
        pk = db.q(&shape.pk),
        checks = checks.join(" AND "),
    );
    let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(pks);
    for (i, (_, kind)) in shape.cols.iter().enumerate() {
        match kind {
            ColKind::Text => {
                let old = rows
                    .iter()
                    .map(|w| text_of(&w.old[i]))
                    .collect::<Result<Vec<_>>>()?;
                let new = rows
                    .iter()
                    .map(|w| text_of(&w.new[i]))
                    .collect::<Result<Vec<_>>>()?;
                q = q.bind(old).bind(new);
            }
            ColKind::Bytes => {
                let old: Vec<Option<Vec<u8>>> = rows.iter().map(|w| w.old[i].clone()).collect();
                let new: Vec<Option<Vec<u8>>> = rows.iter().map(|w| w.new[i].clone()).collect();
                q = q.bind(old).bind(new);
            }
        }
    }
    if shape.bi_col.is_some() {
        let bi: Vec<Option<String>> = rows.iter().map(|w| w.bi.clone()).collect();
        q = q.bind(bi);
    }
    q.fetch_all(&mut **t).await.map_err(db_err)
}

macro_rules! bind_val {
    ($q:expr, $kind:expr, $v:expr) => {
        match $kind {
            ColKind::Text => $q.bind(text_of($v)?),
            ColKind::Bytes => $q.bind($v.clone()),
        }
    };
}

async fn write_my(
    t: &mut sqlx::Transaction<'static, sqlx::MySql>,
    db: &Db,
    shape: &Shape,
    rows: &[Write],
) -> Result<Vec<i64>> {
    let mut written = Vec::with_capacity(rows.len());
    // MySQL limits a statement to 65 535 placeholders.
    let per_row = 1 + 2 * shape.cols.len() + usize::from(shape.bi_col.is_some());
    let chunk = (60_000 / per_row).max(1);
    for part in rows.chunks(chunk) {
        let mut one = vec!["? AS pk".to_owned()];
        let mut more = vec!["?".to_owned()];
        let mut sets = Vec::new();
        let mut checks = Vec::new();
        for (i, (c, _)) in shape.cols.iter().enumerate() {
            one.push(format!("? AS o{i}, ? AS n{i}"));
            more.push("?, ?".into());
            sets.push(format!("t.{c} = v.n{i}", c = db.q(c)));
            checks.push(format!("BINARY t.{c} <=> BINARY v.o{i}", c = db.q(c)));
        }
        if let Some(b) = &shape.bi_col {
            one.push("? AS bi".into());
            more.push("?".into());
            sets.push(format!("t.{} = v.bi", db.q(b)));
        }
        let first = format!("SELECT {}", one.join(", "));
        let rest = format!(" UNION ALL SELECT {}", more.join(", "));
        let mut derived = first;
        for _ in 1..part.len() {
            derived.push_str(&rest);
        }
        let sql = format!(
            "UPDATE {tab} AS t JOIN ({derived}) AS v ON t.{pk} = v.pk AND {checks} SET {sets}",
            tab = db.qt(&shape.table),
            pk = db.q(&shape.pk),
            checks = checks.join(" AND "),
            sets = sets.join(", "),
        );
        let mut q = sqlx::query(&sql);
        for w in part {
            q = q.bind(w.pk);
            for (i, (_, kind)) in shape.cols.iter().enumerate() {
                q = bind_val!(q, kind, &w.old[i]);
                q = bind_val!(q, kind, &w.new[i]);
            }
            if shape.bi_col.is_some() {
                q = q.bind(w.bi.clone());
            }
        }
        let n = q.execute(&mut **t).await.map_err(db_err)?.rows_affected();
        if usize::try_from(n).ok() == Some(part.len()) {
            written.extend(part.iter().map(|w| w.pk));
        } else {
            // Find which rows now hold the new values.
            let pks: Vec<i64> = part.iter().map(|w| w.pk).collect();
            let now = Tx::read_pks_my(t, db, shape, &pks).await?;
            for w in part {
                if now.iter().any(|r| r.pk == w.pk && r.vals == w.new) {
                    written.push(w.pk);
                }
            }
        }
    }
    Ok(written)
}

impl Tx {
    async fn read_pks_my(
        t: &mut sqlx::Transaction<'static, sqlx::MySql>,
        db: &Db,
        shape: &Shape,
        pks: &[i64],
    ) -> Result<Vec<Row>> {
        let mut out = Vec::new();
        for &pk in pks {
            let sql = select_sql(db, shape, true, true, false, false);
            let none: Option<i64> = None;
            out.extend(fetch_rows!(
                &mut **t,
                &sql,
                shape,
                Some(pk - 1),
                Some(pk),
                none
            ));
        }
        Ok(out)
    }
}

async fn write_lite(
    t: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    db: &Db,
    shape: &Shape,
    rows: &[Write],
) -> Result<Vec<i64>> {
    let mut written = Vec::with_capacity(rows.len());
    let per_row = 1 + 2 * shape.cols.len() + usize::from(shape.bi_col.is_some());
    let chunk = (30_000 / per_row).max(1);
    for part in rows.chunks(chunk) {
        let mut names = vec!["pk".to_owned()];
        let mut sets = Vec::new();
        let mut checks = Vec::new();
        for (i, (c, _)) in shape.cols.iter().enumerate() {
            names.push(format!("o{i}"));
            names.push(format!("n{i}"));
            sets.push(format!("{} = v.n{i}", db.q(c)));
            checks.push(format!(
                "{t}.{c} IS v.o{i}",
                t = db.qt(&shape.table),
                c = db.q(c)
            ));
        }
        if let Some(b) = &shape.bi_col {
            names.push("bi".into());
            sets.push(format!("{} = v.bi", db.q(b)));
        }
        let tuple = format!("({})", vec!["?"; names.len()].join(", "));
        let values = vec![tuple; part.len()].join(", ");
        let sql = format!(
            "WITH v({names}) AS (VALUES {values}) UPDATE {tab} SET {sets} FROM v WHERE {tab}.{pk} = v.pk AND {checks} RETURNING {tab}.{pk}",
            names = names.join(", "),
            tab = db.qt(&shape.table),
            sets = sets.join(", "),
            pk = db.q(&shape.pk),
            checks = checks.join(" AND "),
        );
        let mut q = sqlx::query_scalar::<_, i64>(&sql);
        for w in part {
            q = q.bind(w.pk);
            for (i, (_, kind)) in shape.cols.iter().enumerate() {
                q = bind_val!(q, kind, &w.old[i]);
                q = bind_val!(q, kind, &w.new[i]);
            }
            if shape.bi_col.is_some() {
                q = q.bind(w.bi.clone());
            }
        }
        written.extend(q.fetch_all(&mut **t).await.map_err(db_err)?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated() {
        for ok in ["users", "_x", "Tenant_ID9", &"a".repeat(63)] {
            check_ident(ok).unwrap();
        }
        for bad in [
            "",
            "1a",
            "a-b",
            "a;b",
            "a b",
            "\"a\"",
            "`a`",
            "é",
            &"a".repeat(64),
        ] {
            assert!(check_ident(bad).is_err(), "{bad:?}");
        }
        let t = TableName::parse("app.users").unwrap();
        assert_eq!(
            (t.schema.as_deref(), t.name.as_str()),
            (Some("app"), "users")
        );
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("app.").is_err());
        assert!(TableName::parse("users; DROP TABLE x").is_err());
    }
}
