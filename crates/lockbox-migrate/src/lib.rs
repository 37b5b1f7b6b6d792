//! Column re-encryption for Lockbox: converts the values of table columns in
//! PostgreSQL, MariaDB/MySQL or SQLite to Lockbox native ciphertexts under a
//! key's current version — from plaintext, older versions, other keys,
//! Fernet tokens, Vault `vault:vN:` ciphertexts or pgcrypto messages — or back
//! to plaintext, and refreshes a blind-index column.
//!
//! Safety: a job splits the primary-key space into ranges (batches) stored in
//! the target database (`lockbox_reencrypt_jobs`, `lockbox_reencrypt_batches`).
//! A worker claims a batch row (`FOR UPDATE SKIP LOCKED` on PostgreSQL and
//! MariaDB ≥ 10.6 / MySQL 8; SQLite has one writer), converts its rows and
//! writes them and the batch's "done" mark in **one transaction**, each
//! row's `UPDATE` guarded by its old values (a row changed since it was read
//! is read again and retried). A killed worker's transaction rolls back and
//! its batch is claimed again, so a job resumes after `kill -9` and reruns
//! are idempotent (values already current are left alone).

pub mod convert;
pub mod db;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockbox_core::fernet::{FernetKey, MultiFernet};
use lockbox_engine::Engine;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use convert::{BlindIndex, Class, Converter, Counts, Outcome, PgpPlain, Template};
use db::{Arg, ColKind, Db, Dialect, Row, Shape, TableName};

/// Errors of the re-encryption tool. Messages never carry key material or
/// plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// Bad options.
    #[error("{0}")]
    Config(String),
    /// The table, a column or the primary key is missing or unsuitable.
    #[error("{0}")]
    Schema(String),
    /// Rows that cannot be converted (with `--on-bad-row fail`).
    #[error("{count} row(s) cannot be converted; first: {first}")]
    BadRows {
        /// How many.
        count: u64,
        /// The first, described.
        first: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(String),
    /// The key engine failed.
    #[error("{0}")]
    Engine(String),
    /// A job with this id exists with other options.
    #[error("{0}")]
    Job(String),
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, MigrateError>;

impl std::convert::From<lockbox_engine::EngineError> for MigrateError {
    fn from(e: lockbox_engine::EngineError) -> Self {
        MigrateError::Engine(e.to_string())
    }
}

/// Source formats accepted besides Lockbox's own (`lbx1:`, always accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceFormat {
    /// Plaintext values are encrypted.
    Plaintext,
    /// Fernet tokens (with Fernet keys).
    Fernet,
    /// Vault Transit ciphertexts (with an imported key).
    Vault,
    /// PostgreSQL pgcrypto `pgp_sym_encrypt` messages (with the passphrase).
    Pgcrypto,
}

impl std::str::FromStr for SourceFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "plaintext" => Ok(SourceFormat::Plaintext),
            "fernet" => Ok(SourceFormat::Fernet),
            "vault" => Ok(SourceFormat::Vault),
            "pgcrypto" => Ok(SourceFormat::Pgcrypto),
            _ => Err(format!(
                "unknown source format {s:?}: plaintext, fernet, vault or pgcrypto"
            )),
        }
    }
}

impl SourceFormat {
    fn name(self) -> &'static str {
        match self {
            SourceFormat::Plaintext => "plaintext",
            SourceFormat::Fernet => "fernet",
            SourceFormat::Vault => "vault",
            SourceFormat::Pgcrypto => "pgcrypto",
        }
    }
}

/// What to convert (fixed for a job; stored with it).
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// Table (`table` or `schema.table`).
    pub table: String,
    /// Integer primary key column.
    pub pk: String,
    /// Columns to convert.
    pub columns: Vec<String>,
    /// Lockbox key (encrypting key; also decrypts its own older versions).
    pub key: String,
    /// Context template, e.g. `{tenant_id}:{id}`.
    pub context: Option<String>,
    /// Accepted source formats.
    pub from: Vec<SourceFormat>,
    /// Imported Vault-format key for `vault:vN:` values.
    pub vault_key: Option<String>,
    /// Decrypt to plaintext instead of encrypting.
    pub to_plaintext: bool,
    /// Blind-index column (of the first converted column).
    pub blind_index_column: Option<String>,
    /// Key of the blind index.
    pub blind_index_key: Option<String>,
    /// Tenant template of the blind index.
    pub blind_index_tenant: Option<String>,
    /// Normalization of the blind index (`None`: all of trim, case fold and
    /// NFC, as the server's record API by default).
    pub blind_index_normalization: Option<lockbox_core::blind_index::Normalization>,
    /// Truncation of the blind index in bytes (`None`: the default, 16).
    pub blind_index_truncation: Option<usize>,
}

impl Spec {
    fn fingerprint(&self) -> Value {
        let mut from: Vec<&str> = self.from.iter().map(|f| f.name()).collect();
        from.sort_unstable();
        from.dedup();
        json!({
            "table": self.table,
            "pk": self.pk,
            "columns": self.columns,
            "key": self.key,
            "context": self.context,
            "from": from,
            "vault_key": self.vault_key,
            "to_plaintext": self.to_plaintext,
            "blind_index_column": self.blind_index_column,
            "blind_index_key": self.blind_index_key,
            "blind_index_tenant": self.blind_index_tenant,
            "blind_index_normalization": self.blind_index_column.as_ref().map(|_| {
                let n = self.bi_normalization();
                json!({"trim": n.trim, "case_fold": n.case_fold, "nfc": n.nfc})
            }),
            "blind_index_truncation": self.blind_index_column.as_ref().map(|_| self.bi_truncation()),
        })
    }

    fn bi_normalization(&self) -> lockbox_core::blind_index::Normalization {
        self.blind_index_normalization
            .unwrap_or(lockbox_core::blind_index::Normalization::ALL)
    }

    fn bi_truncation(&self) -> usize {
        self.blind_index_truncation
            .unwrap_or(lockbox_core::blind_index::DEFAULT_TRUNCATION)
    }
}

/// Secrets for foreign formats (never stored).
#[derive(Default)]
pub struct Secrets {
    /// Fernet keys, newest first.
    pub fernet_keys: Vec<FernetKey>,
    /// pgcrypto passphrase.
    pub pgcrypto_passphrase: Option<Zeroizing<String>>,
}

/// What to do with a row that cannot be converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnBadRow {
    /// Stop with an error; with a new job, all rows are checked before
    /// anything is written.
    #[default]
    Fail,
    /// Report the row and leave it as it is.
    Skip,
}

/// Called with a batch's keys after it is read and before it is written
/// (tests use it to modify rows concurrently).
pub type BeforeWrite =
    Arc<dyn Fn(Vec<i64>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How to run.
#[derive(Clone)]
pub struct Options {
    /// Rows per batch (one transaction each).
    pub batch_size: u32,
    /// Concurrent workers in this process.
    pub workers: u32,
    /// Only count what would change.
    pub dry_run: bool,
    /// Throttle (rows per second, this process).
    pub max_rows_per_second: Option<u64>,
    /// Bad rows.
    pub on_bad_row: OnBadRow,
    /// Job id to create, resume or join; a new random one when `None`.
    pub job: Option<String>,
    /// The job must exist (resume/join only).
    pub must_exist: bool,
    /// Test hook.
    pub before_write: Option<BeforeWrite>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch_size: 1000,
            workers: 1,
            dry_run: false,
            max_rows_per_second: None,
            on_bad_row: OnBadRow::Fail,
            job: None,
            must_exist: false,
            before_write: None,
        }
    }
}

/// Progress of this process.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Job id.
    pub job: String,
    /// Rows processed (read and decided) by this process.
    pub rows_done: u64,
    /// Rows in the table when the run started.
    pub rows_total: u64,
    /// Rate over the run so far.
    pub rows_per_sec: f64,
    /// Estimated seconds left.
    pub eta_secs: Option<f64>,
}

/// Receives events, progress and bad rows.
pub trait Observer: Send + Sync {
    /// `REENCRYPTION_STARTED`, `REENCRYPTION_COMPLETED`.
    fn event(&self, _name: &str, _detail: &Value) {}
    /// Called about once a second and at the end.
    fn progress(&self, _p: &Progress) {}
    /// A row that was reported and skipped.
    fn bad_row(&self, _pk: i64, _column: &str, _reason: &str) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// The outcome of a run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Job id (`None` for a dry run).
    pub job: Option<String>,
    /// Dry run.
    pub dry_run: bool,
    /// Rows read and decided by this process.
    pub rows_seen: u64,
    /// Rows written (or that would be, for a dry run).
    pub rows_changed: u64,
    /// Rows left as they were (already current, NULL).
    pub rows_unchanged: u64,
    /// Rows reported and skipped.
    pub rows_bad: u64,
    /// Rows written again after a concurrent change.
    pub conflicts_retried: u64,
    /// Per-value actions: encrypt, rewrap, rekey, fernet, vault, pgcrypto,
    /// decrypt, current, null, plaintext, blind-index, bad.
    pub actions: BTreeMap<String, u64>,
    /// The job is complete (every batch done).
    pub job_complete: bool,
    /// Seconds.
    pub elapsed_secs: f64,
    /// Bad rows (first 100): key, column, reason.
    pub bad_rows: Vec<(i64, String, String)>,
}

impl Report {
    /// As JSON.
    pub fn to_json(&self) -> Value {
        let rate = if self.elapsed_secs > 0.0 {
            self.rows_seen as f64 / self.elapsed_secs
        } else {
            0.0
        };
        json!({
            "job": self.job,
            "dry_run": self.dry_run,
            "rows_seen": self.rows_seen,
            "rows_changed": self.rows_changed,
            "rows_unchanged": self.rows_unchanged,
            "rows_bad": self.rows_bad,
            "conflicts_retried": self.conflicts_retried,
            "actions": self.actions,
            "job_complete": self.job_complete,
            "elapsed_secs": (self.elapsed_secs * 1000.0).round() / 1000.0,
            "rows_per_sec": rate.round(),
            "bad_rows": self.bad_rows.iter().map(|(pk, c, r)| json!({"pk": pk, "column": c, "reason": r})).collect::<Vec<_>>(),
        })
    }
}

const JOBS: &str = "lockbox_reencrypt_jobs";
const BATCHES: &str = "lockbox_reencrypt_batches";

/// Everything prepared for a run or a verify.
struct Prepared {
    db: Db,
    shape: Shape,
    conv: Arc<Converter>,
    pgp_pass: Option<Zeroizing<String>>,
    rows_total: u64,
}

fn ph(d: Dialect, i: usize) -> String {
    match d {
        Dialect::Postgres => format!("${i}"),
        _ => "?".into(),
    }
}

fn int(d: Dialect, expr: &str) -> String {
    match d {
        Dialect::MySql => format!("CAST({expr} AS SIGNED)"),
        _ => format!("CAST({expr} AS BIGINT)"),
    }
}

async fn prepare(
    engine: &Engine,
    url: &str,
    spec: &Spec,
    secrets: Secrets,
    conns: u32,
) -> Result<Prepared> {
    let table = TableName::parse(&spec.table)?;
    db::check_ident(&spec.pk)?;
    if spec.columns.is_empty() {
        return Err(MigrateError::Config("give at least one --column".into()));
    }
    for c in &spec.columns {
        db::check_ident(c)?;
        if *c == spec.pk {
            return Err(MigrateError::Config(format!(
                "column {c} is the primary key; it cannot be encrypted"
            )));
        }
    }
    let mut ctx_cols = Vec::new();
    let context = spec
        .context
        .as_deref()
        .map(|t| Template::parse(t, &mut ctx_cols))
        .transpose()
        .map_err(|e| MigrateError::Config(format!("--context: {e}")))?;
    let tenant = spec
        .blind_index_tenant
        .as_deref()
        .map(|t| Template::parse(t, &mut ctx_cols))
        .transpose()
        .map_err(|e| MigrateError::Config(format!("--blind-index-tenant: {e}")))?;
    if let Some(b) = &spec.blind_index_column {
        db::check_ident(b)?;
        if spec.columns.len() != 1 {
            return Err(MigrateError::Config(
                "a blind-index column goes with exactly one --column".into(),
            ));
        }
        if spec.blind_index_key.is_none() {
            return Err(MigrateError::Config(
                "--blind-index-column needs --blind-index-key".into(),
            ));
        }
    }
    let db = Db::connect(url, conns).await?;
    let cols = db.columns(&table).await?;
    let find = |name: &str, what: &str| {
        cols.iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| {
                MigrateError::Schema(format!("{what} {name} does not exist in table {table}"))
            })
    };
    let pkc = find(&spec.pk, "primary key column")?;
    if !db.is_integer_type(&pkc.data_type) {
        return Err(MigrateError::Schema(format!(
            "primary key column {} has type {}; an integer key is needed for keyset pagination",
            spec.pk, pkc.data_type
        )));
    }
    let mut shape_cols = Vec::new();
    for c in &spec.columns {
        let ci = find(c, "column")?;
        let kind = db.col_kind(&ci.data_type).ok_or_else(|| {
            MigrateError::Schema(format!(
                "column {c} has type {}; a text or binary column is needed",
                ci.data_type
            ))
        })?;
        shape_cols.push((c.clone(), kind));
    }
    for c in &ctx_cols {
        find(c, "context column")?;
    }
    if let Some(b) = &spec.blind_index_column {
        let bc = find(b, "blind-index column")?;
        if db.col_kind(&bc.data_type) != Some(ColKind::Text) {
            return Err(MigrateError::Schema(format!(
                "blind-index column {b} must be a text column"
            )));
        }
    }
    let (rows, nonnull, distinct) = db.key_counts(&table, &spec.pk).await?;
    if nonnull != rows {
        return Err(MigrateError::Schema(format!(
            "primary key column {} has {} NULL value(s); it must be a unique, non-null key",
            spec.pk,
            rows - nonnull
        )));
    }
    if distinct != nonnull {
        return Err(MigrateError::Schema(format!(
            "primary key column {} is not unique ({} duplicate value(s)); it must be a unique, non-null key",
            spec.pk,
            nonnull - distinct
        )));
    }
    let from = |f: SourceFormat| spec.from.contains(&f);
    if from(SourceFormat::Pgcrypto) {
        if db.dialect() != Dialect::Postgres {
            return Err(MigrateError::Config(
                "--from pgcrypto needs a PostgreSQL database".into(),
            ));
        }
        if !db.has_pgcrypto().await? {
            return Err(MigrateError::Config(
                "--from pgcrypto: the pgcrypto extension is not installed in this database".into(),
            ));
        }
        if secrets.pgcrypto_passphrase.is_none() {
            return Err(MigrateError::Config(
                "--from pgcrypto needs --passphrase-file".into(),
            ));
        }
        if !shape_cols.iter().any(|(_, k)| *k == ColKind::Bytes) {
            return Err(MigrateError::Schema(
                "--from pgcrypto: pgp_sym_encrypt values live in bytea columns; none of the columns is bytea".into(),
            ));
        }
    }
    let fernet = if from(SourceFormat::Fernet) {
        if secrets.fernet_keys.is_empty() {
            return Err(MigrateError::Config(
                "--from fernet needs at least one --fernet-key".into(),
            ));
        }
        Some(
            MultiFernet::new(secrets.fernet_keys)
                .map_err(|e| MigrateError::Config(e.to_string()))?,
        )
    } else {
        None
    };
    let vault = if from(SourceFormat::Vault) {
        let name = spec.vault_key.as_deref().ok_or_else(|| {
            MigrateError::Config("--from vault needs --vault-key (the imported key's name)".into())
        })?;
        Some(engine.key_handle(name).await?)
    } else {
        None
    };
    let target = engine.key_handle(&spec.key).await?;
    if target.encrypt_native(b"", b"").is_err() {
        return Err(MigrateError::Config(format!(
            "key {} cannot encrypt Lockbox native ciphertexts (use an aes256-gcm96, aes128-gcm96 or chacha20-poly1305 key)",
            spec.key
        )));
    }
    let mut others = HashMap::new();
    for name in engine.list_keys(false).await? {
        if name == spec.key {
            continue;
        }
        if let Ok(h) = engine.key_handle(&name).await {
            if h.encrypt_native(b"", b"").is_ok() {
                others.insert(h.key_id(), h);
            }
        }
    }
    let bi = match &spec.blind_index_key {
        Some(k) if spec.blind_index_column.is_some() => {
            let h = engine.key_handle(k).await?;
            let indexer = h
                .blind_indexer(spec.bi_normalization(), spec.bi_truncation())
                .map_err(|e| MigrateError::Config(format!("blind index: {e}")))?;
            Some(BlindIndex {
                current: indexer.current_version(),
                indexer,
                tenant,
            })
        }
        _ => None,
    };
    let conv = Converter {
        target,
        others,
        fernet,
        vault,
        pgcrypto: from(SourceFormat::Pgcrypto),
        plaintext: from(SourceFormat::Plaintext),
        to_plaintext: spec.to_plaintext,
        context,
        table: table.name.clone(),
        cols: shape_cols.clone(),
        bi,
    };
    let shape = Shape {
        table,
        pk: spec.pk.clone(),
        cols: shape_cols,
        ctx_cols,
        bi_col: spec.blind_index_column.clone(),
    };
    Ok(Prepared {
        db,
        shape,
        conv: Arc::new(conv),
        pgp_pass: secrets.pgcrypto_passphrase,
        rows_total: u64::try_from(rows).unwrap_or(0),
    })
}

/// Decrypt the pgcrypto values among `rows` in PostgreSQL.
async fn pgp_plain(p: &Prepared, rows: &[Row]) -> Result<PgpPlain> {
    let mut out = PgpPlain::new();
    let Some(pass) = &p.pgp_pass else {
        return Ok(out);
    };
    let mut keys = Vec::new();
    let mut vals = Vec::new();
    for r in rows {
        for (ci, (_, kind)) in p.shape.cols.iter().enumerate() {
            if convert::classify(r.vals[ci].as_deref(), *kind) == Class::Pgp {
                if let Some(v) = &r.vals[ci] {
                    keys.push((r.pk, ci));
                    vals.push(v.clone());
                }
            }
        }
    }
    let res = p.db.pgp_decrypt(&vals, pass).await?;
    for (k, r) in keys.into_iter().zip(res) {
        out.insert(k, r);
    }
    Ok(out)
}

struct Shared {
    done_rows: AtomicU64,
    start: Instant,
    stop: AtomicBool,
}

impl Shared {
    fn progress(&self, job: &str, total: u64) -> Progress {
        let done = self.done_rows.load(Ordering::Relaxed);
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = (rate > 0.0 && total >= done).then(|| (total - done) as f64 / rate);
        Progress {
            job: job.to_owned(),
            rows_done: done,
            rows_total: total,
            rows_per_sec: rate,
            eta_secs: eta,
        }
    }

    async fn throttle(&self, rate: Option<u64>) {
        if let Some(r) = rate.filter(|r| *r > 0) {
            let done = self.done_rows.load(Ordering::Relaxed);
            let want = Duration::from_secs_f64(done as f64 / r as f64);
            let el = self.start.elapsed();
            if want > el {
                tokio::time::sleep(want - el).await;
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    seen: u64,
    changed: u64,
    unchanged: u64,
    bad: u64,
    retried: u64,
    counts: Counts,
    bad_rows: Vec<(i64, String, String)>,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.seen += o.seen;
        self.changed += o.changed;
        self.unchanged += o.unchanged;
        self.bad += o.bad;
        self.retried += o.retried;
        for (k, v) in o.counts {
            *self.counts.entry(k).or_default() += v;
        }
        for b in o.bad_rows {
            if self.bad_rows.len() < 100 {
                self.bad_rows.push(b);
            }
        }
    }

    fn report(self, job: Option<String>, dry_run: bool, complete: bool, start: Instant) -> Report {
        Report {
            job,
            dry_run,
            rows_seen: self.seen,
            rows_changed: self.changed,
            rows_unchanged: self.unchanged,
            rows_bad: self.bad,
            conflicts_retried: self.retried,
            actions: self
                .counts
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            job_complete: complete,
            elapsed_secs: start.elapsed().as_secs_f64(),
            bad_rows: self.bad_rows,
        }
    }
}

/// Convert `rows`: the writes, plus the tally of the rest.
fn decide(
    conv: &Converter,
    rows: &[Row],
    pgp: &PgpPlain,
    t: &mut Tally,
    obs: &dyn Observer,
) -> Vec<db::Write> {
    let mut writes = Vec::new();
    for r in rows {
        t.seen += 1;
        match conv.convert(r, pgp, &mut t.counts) {
            Outcome::Same => t.unchanged += 1,
            Outcome::Change(w) => writes.push(w),
            Outcome::Bad { column, reason } => {
                t.bad += 1;
                obs.bad_row(r.pk, &column, &reason);
                if t.bad_rows.len() < 100 {
                    t.bad_rows.push((r.pk, column, reason));
                }
            }
        }
    }
    writes
}

/// Read every row (keyset pagination, no transaction) and decide each; no
/// writes. The dry run, and the check before a new job writes anything.
async fn scan(
    p: &Prepared,
    batch: u32,
    obs: &dyn Observer,
    shared: &Shared,
    stop_at_bad: bool,
) -> Result<Tally> {
    let mut t = Tally::default();
    let mut last: Option<i64> = None;
    loop {
        let rows =
            p.db.read(&p.shape, last, None, Some(i64::from(batch)))
                .await?;
        let Some(l) = rows.last() else { break };
        last = Some(l.pk);
        let pgp = pgp_plain(p, &rows).await?;
        let w = decide(&p.conv, &rows, &pgp, &mut t, obs);
        t.changed += w.len() as u64;
        shared
            .done_rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        if stop_at_bad && t.bad > 0 {
            break;
        }
    }
    Ok(t)
}

/// The key ranges `(lo, hi]` between boundaries, open at both ends.
fn ranges(b: &[i64]) -> Vec<(Option<i64>, Option<i64>)> {
    let mut out = Vec::with_capacity(b.len() + 1);
    let mut lo = None;
    for &hi in b {
        out.push((lo, Some(hi)));
        lo = Some(hi);
    }
    out.push((lo, None));
    out
}

/// [`scan`] over the ranges between `bounds`, `tasks` ranges at a time;
/// stops at the first bad row.
async fn scan_ranges(
    p: &Arc<Prepared>,
    bounds: &[i64],
    tasks: u32,
    shared: &Arc<Shared>,
) -> Result<Tally> {
    let all = Arc::new(ranges(bounds));
    let next = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicBool::new(false));
    let mut hs = Vec::new();
    for _ in 0..tasks.max(1) {
        let (p, all, next, bad, shared) = (
            p.clone(),
            all.clone(),
            next.clone(),
            bad.clone(),
            shared.clone(),
        );
        hs.push(tokio::spawn(async move {
            let mut t = Tally::default();
            loop {
                let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(usize::MAX);
                let Some(&(lo, hi)) = all.get(i) else { break };
                if bad.load(Ordering::Relaxed) {
                    break;
                }
                let rows = p.db.read(&p.shape, lo, hi, None).await?;
                let pgp = pgp_plain(&p, &rows).await?;
                let w = decide(&p.conv, &rows, &pgp, &mut t, &Quiet);
                t.changed += w.len() as u64;
                shared
                    .done_rows
                    .fetch_add(rows.len() as u64, Ordering::Relaxed);
                if t.bad > 0 {
                    bad.store(true, Ordering::Relaxed);
                    break;
                }
            }
            Ok::<Tally, MigrateError>(t)
        }));
    }
    let mut total = Tally::default();
    for h in hs {
        total.add(
            h.await
                .map_err(|e| MigrateError::Internal(format!("check: {e}")))??,
        );
    }
    Ok(total)
}

fn now_secs() -> i64 {
    lockbox_engine::now()
}

fn new_job_id() -> Result<String> {
    let mut b = [0u8; 8];
    lockbox_core::fill_random(&mut b).map_err(|e| MigrateError::Internal(e.to_string()))?;
    Ok(format!("job-{}", hex::encode(b)))
}

async fn create_tables(db: &Db) -> Result<()> {
    let text = match db.dialect() {
        Dialect::MySql => "LONGTEXT",
        _ => "TEXT",
    };
    let jobs = format!(
        "CREATE TABLE IF NOT EXISTS {JOBS} (job_id VARCHAR(64) NOT NULL PRIMARY KEY, spec {text} NOT NULL, \
         state VARCHAR(16) NOT NULL, batches BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)"
    );
    let batches = format!(
        "CREATE TABLE IF NOT EXISTS {BATCHES} (job_id VARCHAR(64) NOT NULL, batch_no BIGINT NOT NULL, \
         lo BIGINT NULL, hi BIGINT NULL, done BIGINT NOT NULL DEFAULT 0, changed BIGINT NOT NULL DEFAULT 0, \
         unchanged BIGINT NOT NULL DEFAULT 0, bad BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (job_id, batch_no))"
    );
    for sql in [jobs, batches] {
        // Two workers creating the tables at once can collide in PostgreSQL's catalog: retry.
        let mut tries = 0;
        loop {
            match db.exec(&sql).await {
                Ok(()) => break,
                Err(e) if tries < 3 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The job row: (spec, state).
async fn read_job(db: &Db, job: &str) -> Result<Option<(String, String)>> {
    let sql = format!(
        "SELECT spec, state FROM {JOBS} WHERE job_id = {}",
        ph(db.dialect(), 1)
    );
    let r: Option<(String, String)> = match db {
        Db::Pg(p) => sqlx::query_as(&sql).bind(job).fetch_optional(p).await,
        Db::My(p) => sqlx::query_as(&sql).bind(job).fetch_optional(p).await,
        Db::Lite(p) => sqlx::query_as(&sql).bind(job).fetch_optional(p).await,
    }
    .map_err(db::db_err)?;
    Ok(r)
}

/// Batch boundaries: every `batch`-th key.
async fn boundaries(db: &Db, shape: &Shape, batch: u32) -> Result<Vec<i64>> {
    let pk = db.q(&shape.pk);
    let sql = format!(
        "SELECT {k} FROM (SELECT {pk} AS k0, ROW_NUMBER() OVER (ORDER BY {pk}) AS rn FROM {t}) s WHERE rn % {batch} = 0 ORDER BY k0",
        k = int(db.dialect(), "k0"),
        t = db.qt(&shape.table),
    );
    match db {
        Db::Pg(p) => sqlx::query_scalar(&sql).fetch_all(p).await,
        Db::My(p) => sqlx::query_scalar(&sql).fetch_all(p).await,
        Db::Lite(p) => sqlx::query_scalar(&sql).fetch_all(p).await,
    }
    .map_err(db::db_err)
}

/// Create the job and its batches in one transaction. `false` if another
/// worker created it first.
async fn plan(db: &Db, job: &str, spec: &str, b: &[i64]) -> Result<bool> {
    let d = db.dialect();
    let mut tx = db.begin().await?;
    let t = now_secs();
    let ins = format!(
        "INSERT INTO {JOBS} (job_id, spec, state, batches, created_at, updated_at) VALUES ({}, {}, 'running', {}, {}, {})",
        ph(d, 1),
        ph(d, 2),
        ph(d, 3),
        ph(d, 4),
        ph(d, 5)
    );
    let n = (b.len() + 1) as i64;
    match tx
        .exec(
            &ins,
            &[
                Arg::S(job.into()),
                Arg::S(spec.into()),
                Arg::I(Some(n)),
                Arg::I(Some(t)),
                Arg::I(Some(t)),
            ],
        )
        .await
    {
        Ok(_) => {}
        Err(_) => return Ok(false),
    }
    for (ci, chunk) in ranges(b).chunks(500).enumerate() {
        let mut vals = Vec::new();
        let mut args = Vec::new();
        let mut i = 0;
        for (k, (lo, hi)) in chunk.iter().enumerate() {
            vals.push(format!(
                "({}, {}, {}, {})",
                ph(d, i + 1),
                ph(d, i + 2),
                ph(d, i + 3),
                ph(d, i + 4)
            ));
            i += 4;
            args.push(Arg::S(job.into()));
            args.push(Arg::I(Some((ci * 500 + k) as i64)));
            args.push(Arg::I(*lo));
            args.push(Arg::I(*hi));
        }
        tx.exec(
            &format!(
                "INSERT INTO {BATCHES} (job_id, batch_no, lo, hi) VALUES {}",
                vals.join(", ")
            ),
            &args,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Process batches until none is left to claim.
async fn worker(
    p: Arc<Prepared>,
    job: String,
    opts: Options,
    obs: Arc<dyn Observer>,
    shared: Arc<Shared>,
) -> Result<Tally> {
    let d = p.db.dialect();
    let claim = format!(
        "SELECT batch_no, lo, hi FROM {BATCHES} WHERE job_id = {} AND done = 0 ORDER BY batch_no LIMIT 1{}",
        ph(d, 1),
        if d == Dialect::Sqlite {
            ""
        } else {
            " FOR UPDATE SKIP LOCKED"
        }
    );
    let finish = format!(
        "UPDATE {BATCHES} SET done = 1, changed = {}, unchanged = {}, bad = {} WHERE job_id = {} AND batch_no = {}",
        ph(d, 1),
        ph(d, 2),
        ph(d, 3),
        ph(d, 4),
        ph(d, 5)
    );
    let mut total = Tally::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut tx = p.db.begin().await?;
        let got = tx.fetch_ints(&claim, &[Arg::S(job.clone())], 3).await?;
        let Some(b) = got.first() else {
            tx.commit().await?;
            break;
        };
        let (no, lo, hi) = (b[0].unwrap_or(0), b[1], b[2]);
        let rows = tx.read(&p.db, &p.shape, lo, hi, false).await?;
        let mut t = Tally::default();
        let pgp = pgp_plain(&p, &rows).await?;
        let mut writes = decide(&p.conv, &rows, &pgp, &mut t, obs.as_ref());
        if t.bad > 0 && opts.on_bad_row == OnBadRow::Fail {
            shared.stop.store(true, Ordering::Relaxed);
            let (pk, c, r) = t.bad_rows.first().cloned().unwrap_or_default();
            return Err(MigrateError::BadRows {
                count: t.bad,
                first: format!("row {pk}, column {c}: {r}"),
            });
        }
        if let Some(h) = &opts.before_write {
            h(writes.iter().map(|w| w.pk).collect()).await;
        }
        let mut attempt = 0;
        loop {
            let written = tx.write(&p.db, &p.shape, &writes).await?;
            t.changed += written.len() as u64;
            if written.len() == writes.len() {
                break;
            }
            let done: std::collections::HashSet<i64> = written.into_iter().collect();
            let left: Vec<i64> = writes
                .iter()
                .map(|w| w.pk)
                .filter(|pk| !done.contains(pk))
                .collect();
            attempt += 1;
            if attempt > 5 {
                return Err(MigrateError::Database(format!(
                    "{} row(s) kept changing while being converted (e.g. key {}); try again",
                    left.len(),
                    left[0]
                )));
            }
            t.retried += left.len() as u64;
            let again = tx.read_pks(&p.db, &p.shape, &left).await?;
            let pgp = pgp_plain(&p, &again).await?;
            // Rows re-read: count them once.
            t.seen -= again.len() as u64;
            writes = decide(&p.conv, &again, &pgp, &mut t, obs.as_ref());
            if t.bad > 0 && opts.on_bad_row == OnBadRow::Fail {
                return Err(MigrateError::BadRows {
                    count: t.bad,
                    first: "a row changed concurrently to a value that cannot be converted".into(),
                });
            }
            if writes.is_empty() {
                break;
            }
        }
        tx.exec(
            &finish,
            &[
                Arg::I(Some(t.changed as i64)),
                Arg::I(Some(t.unchanged as i64)),
                Arg::I(Some(t.bad as i64)),
                Arg::S(job.clone()),
                Arg::I(Some(no)),
            ],
        )
        .await?;
        tx.commit().await?;
        shared
            .done_rows
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        total.add(t);
        shared.throttle(opts.max_rows_per_second).await;
    }
    Ok(total)
}

/// Run a conversion (or, with `opts.dry_run`, count what it would change).
///
/// # Errors
/// Bad options or schema before anything is written; bad rows as
/// `opts.on_bad_row` says; database errors (the batch in flight is rolled
/// back, the job can be resumed).
pub async fn run(
    engine: &Engine,
    url: &str,
    spec: &Spec,
    secrets: Secrets,
    opts: &Options,
    obs: Arc<dyn Observer>,
) -> Result<Report> {
    let start = Instant::now();
    let workers = if url.starts_with("sqlite:") {
        1
    } else {
        opts.workers.clamp(1, 64)
    };
    if opts.batch_size == 0 {
        return Err(MigrateError::Config(
            "--batch-size must be at least 1".into(),
        ));
    }
    if opts.dry_run && opts.job.is_some() {
        return Err(MigrateError::Config(
            "--dry-run does not create or resume a job".into(),
        ));
    }
    let p = Arc::new(prepare(engine, url, spec, secrets, workers + 2).await?);
    let shared = Arc::new(Shared {
        done_rows: AtomicU64::new(0),
        start,
        stop: AtomicBool::new(false),
    });
    let job = match &opts.job {
        Some(j) => {
            if j.is_empty()
                || j.len() > 64
                || !j
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(MigrateError::Config(
                    "a job id is 1 to 64 characters from A-Z a-z 0-9 - _ .".into(),
                ));
            }
            j.clone()
        }
        None => new_job_id()?,
    };
    let ticker = {
        let shared = shared.clone();
        let obs = obs.clone();
        let job = if opts.dry_run {
            "dry-run".to_owned()
        } else {
            job.clone()
        };
        let total = p.rows_total;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                obs.progress(&shared.progress(&job, total));
            }
        })
    };
    let res = run_inner(
        engine,
        &p,
        spec,
        opts,
        obs.clone(),
        shared.clone(),
        &job,
        workers,
        start,
    )
    .await;
    ticker.abort();
    obs.progress(&shared.progress(if opts.dry_run { "dry-run" } else { &job }, p.rows_total));
    let enc = res
        .as_ref()
        .map(|r| {
            r.actions
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "current" | "null" | "bad" | "plaintext"))
                .map(|(_, v)| *v)
                .sum::<u64>()
        })
        .unwrap_or(0);
    if !opts.dry_run {
        engine.record_ops(&spec.key, 0, enc);
    }
    res
}

#[allow(clippy::too_many_arguments)]
async fn run_inner(
    _engine: &Engine,
    p: &Arc<Prepared>,
    spec: &Spec,
    opts: &Options,
    obs: Arc<dyn Observer>,
    shared: Arc<Shared>,
    job: &str,
    workers: u32,
    start: Instant,
) -> Result<Report> {
    if opts.dry_run {
        let t = scan(p, opts.batch_size, obs.as_ref(), &shared, false).await?;
        if t.bad > 0 && opts.on_bad_row == OnBadRow::Fail {
            // A dry run reports bad rows in its counts; it does not fail.
        }
        return Ok(t.report(None, true, false, start));
    }
    create_tables(&p.db).await?;
    let fp = spec.fingerprint().to_string();
    let existing = read_job(&p.db, job).await?;
    let resumed = existing.is_some();
    match existing {
        Some((s, _)) if s != fp => {
            return Err(MigrateError::Job(format!(
                "job {job} was started with other options ({s}); give the same options or another job id"
            )))
        }
        Some(_) => {}
        None if opts.must_exist => {
            return Err(MigrateError::Job(format!("no job {job} to resume")));
        }
        None => {
            let bounds = boundaries(&p.db, &p.shape, opts.batch_size).await?;
            if opts.on_bad_row == OnBadRow::Fail {
                // Check every row before anything is written, `workers` ranges at a time.
                let t = scan_ranges(p, &bounds, workers, &shared).await?;
                shared.done_rows.store(0, Ordering::Relaxed);
                if t.bad > 0 {
                    let (pk, c, r) = t.bad_rows.first().cloned().unwrap_or_default();
                    return Err(MigrateError::BadRows {
                        count: t.bad,
                        first: format!("row {pk}, column {c}: {r} (nothing was written; --on-bad-row skip reports and skips such rows)"),
                    });
                }
            }
            if !plan(&p.db, job, &fp, &bounds).await? {
                // Another worker created it meanwhile.
                match read_job(&p.db, job).await? {
                    Some((s, _)) if s == fp => {}
                    Some(_) => {
                        return Err(MigrateError::Job(format!(
                            "job {job} was started with other options"
                        )))
                    }
                    None => {
                        return Err(MigrateError::Database(format!(
                            "cannot create job {job}"
                        )))
                    }
                }
            }
        }
    }
    obs.event(
        "REENCRYPTION_STARTED",
        &json!({
            "job": job,
            "table": spec.table,
            "columns": spec.columns,
            "key": spec.key,
            "key_version": p.conv.target.latest_version(),
            "to_plaintext": spec.to_plaintext,
            "resumed": resumed,
            "workers": workers,
        }),
    );
    let mut handles = Vec::new();
    for _ in 0..workers {
        handles.push(tokio::spawn(worker(
            p.clone(),
            job.to_owned(),
            opts.clone(),
            obs.clone(),
            shared.clone(),
        )));
    }
    let mut tally = Tally::default();
    let mut first_err = None;
    for h in handles {
        match h.await {
            Ok(Ok(t)) => tally.add(t),
            Ok(Err(e)) => {
                shared.stop.store(true, Ordering::Relaxed);
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(MigrateError::Internal(format!("worker: {e}")));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    // Complete when no batch is left (other processes may still hold some).
    let d = p.db.dialect();
    let mut tx = p.db.begin().await?;
    let left = tx
        .fetch_ints(
            &format!(
                "SELECT {} FROM {BATCHES} WHERE job_id = {} AND done = 0",
                int(d, "COUNT(*)"),
                ph(d, 1)
            ),
            &[Arg::S(job.into())],
            1,
        )
        .await?;
    let left = left.first().and_then(|r| r[0]).unwrap_or(0);
    let mut complete = false;
    if left == 0 {
        let n = tx
            .exec(
                &format!(
                    "UPDATE {JOBS} SET state = 'done', updated_at = {} WHERE job_id = {} AND state <> 'done'",
                    ph(d, 1),
                    ph(d, 2)
                ),
                &[Arg::I(Some(now_secs())), Arg::S(job.into())],
            )
            .await?;
        complete = true;
        let totals = tx
            .fetch_ints(
                &format!(
                    "SELECT {}, {}, {} FROM {BATCHES} WHERE job_id = {}",
                    int(d, "COALESCE(SUM(changed), 0)"),
                    int(d, "COALESCE(SUM(unchanged), 0)"),
                    int(d, "COALESCE(SUM(bad), 0)"),
                    ph(d, 1)
                ),
                &[Arg::S(job.into())],
                3,
            )
            .await?;
        tx.commit().await?;
        if n == 1 {
            let t = totals.first().cloned().unwrap_or_default();
            obs.event(
                "REENCRYPTION_COMPLETED",
                &json!({
                    "job": job,
                    "table": spec.table,
                    "columns": spec.columns,
                    "key": spec.key,
                    "key_version": p.conv.target.latest_version(),
                    "rows_changed": t.first().copied().flatten(),
                    "rows_unchanged": t.get(1).copied().flatten(),
                    "rows_bad": t.get(2).copied().flatten(),
                }),
            );
        }
    } else {
        tx.commit().await?;
    }
    Ok(tally.report(Some(job.to_owned()), false, complete, start))
}

/// What `verify` found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Rows read.
    pub rows: u64,
    /// Values by format (`lockbox`, `plaintext`, `fernet`, `vault`, `pgcrypto`, `null`, …).
    pub by_format: BTreeMap<String, u64>,
    /// Lockbox values by key and version (`key/vN`).
    pub by_key_version: BTreeMap<String, u64>,
    /// Values that fail (first 100): key, column, reason.
    pub failures: Vec<(i64, String, String)>,
    /// Number of failing values.
    pub failed: u64,
    /// Values not in the Lockbox format (and not NULL).
    pub not_lockbox: u64,
    /// Stale or wrong blind indexes.
    pub blind_index_stale: u64,
}

impl VerifyReport {
    /// Every non-NULL value is a Lockbox ciphertext that decrypts, and every
    /// blind index is current.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.not_lockbox == 0 && self.blind_index_stale == 0
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.ok(),
            "rows": self.rows,
            "by_format": self.by_format,
            "by_key_version": self.by_key_version,
            "failed": self.failed,
            "not_lockbox": self.not_lockbox,
            "blind_index_stale": self.blind_index_stale,
            "failures": self.failures.iter().map(|(pk, c, r)| json!({"pk": pk, "column": c, "reason": r})).collect::<Vec<_>>(),
        })
    }
}

/// Check that every row decrypts (with its context) and count values by
/// format and key version. Writes nothing.
///
/// # Errors
/// Bad options or schema; database errors.
pub async fn verify(engine: &Engine, url: &str, spec: &Spec, batch: u32) -> Result<VerifyReport> {
    let p = prepare(engine, url, spec, Secrets::default(), 2).await?;
    let mut rep = VerifyReport::default();
    let mut last = None;
    let conv = &p.conv;
    loop {
        let rows =
            p.db.read(&p.shape, last, None, Some(i64::from(batch.max(1))))
                .await?;
        let Some(l) = rows.last() else { break };
        last = Some(l.pk);
        for r in &rows {
            rep.rows += 1;
            for (ci, (name, kind)) in p.shape.cols.iter().enumerate() {
                let v = r.vals[ci].as_deref();
                let class = convert::classify(v, *kind);
                *rep.by_format.entry(class.name().into()).or_default() += 1;
                let fail = |reason: String, rep: &mut VerifyReport| {
                    rep.failed += 1;
                    if rep.failures.len() < 100 {
                        rep.failures.push((r.pk, name.clone(), reason));
                    }
                };
                match class {
                    Class::Null => {}
                    Class::Native { key_id, version } => {
                        let h = if key_id == conv.target.key_id() {
                            Some(&conv.target)
                        } else {
                            conv.others.get(&key_id)
                        };
                        let Some(h) = h else {
                            fail(format!("unknown key id {key_id:08x}"), &mut rep);
                            continue;
                        };
                        *rep.by_key_version
                            .entry(format!("{}/v{version}", h.name()))
                            .or_default() += 1;
                        let ctx = conv
                            .context
                            .as_ref()
                            .map(|t| t.render(r, &conv.table, name))
                            .unwrap_or_default();
                        let s = v.and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
                        match h.decrypt(s, ctx.as_bytes(), &[]) {
                            Ok(pt) => {
                                if let (Some(b), 0) = (&conv.bi, ci) {
                                    let tenant = b
                                        .tenant
                                        .as_ref()
                                        .map(|t| t.render(r, &conv.table, name))
                                        .unwrap_or_default();
                                    let want = std::str::from_utf8(&pt)
                                        .ok()
                                        .and_then(|s| b.indexer.compute(s, &tenant, name).ok());
                                    if want.is_none() || want != r.bi {
                                        rep.blind_index_stale += 1;
                                    }
                                }
                                let _ = Zeroizing::new(pt);
                            }
                            Err(_) => fail(
                                format!(
                                    "does not decrypt with key {} (wrong key or context)",
                                    h.name()
                                ),
                                &mut rep,
                            ),
                        }
                    }
                    Class::BadNative => fail("corrupt Lockbox ciphertext".into(), &mut rep),
                    _ => rep.not_lockbox += 1,
                }
            }
        }
    }
    Ok(rep)
}

/// Jobs in the database (all, or one), with their batch counts.
///
/// # Errors
/// Database errors.
pub async fn status(url: &str, job: Option<&str>) -> Result<Value> {
    let db = Db::connect(url, 1).await?;
    let d = db.dialect();
    create_tables(&db).await?;
    let sql = format!(
        "SELECT j.job_id, j.spec, j.state, {batches}, {done}, {changed}, {unchanged}, {bad} \
         FROM {JOBS} j LEFT JOIN {BATCHES} b ON b.job_id = j.job_id {filter} \
         GROUP BY j.job_id, j.spec, j.state, j.batches, j.created_at ORDER BY j.created_at, j.job_id",
        batches = int(d, "j.batches"),
        done = int(d, "COALESCE(SUM(b.done), 0)"),
        changed = int(d, "COALESCE(SUM(b.changed), 0)"),
        unchanged = int(d, "COALESCE(SUM(b.unchanged), 0)"),
        bad = int(d, "COALESCE(SUM(b.bad), 0)"),
        filter = if job.is_some() {
            format!("WHERE j.job_id = {}", ph(d, 1))
        } else {
            String::new()
        },
    );
    type R = (String, String, String, i64, i64, i64, i64, i64);
    let rows: Vec<R> = match &db {
        Db::Pg(p) => {
            let mut q = sqlx::query_as(&sql);
            if let Some(j) = job {
                q = q.bind(j);
            }
            q.fetch_all(p).await
        }
        Db::My(p) => {
            let mut q = sqlx::query_as(&sql);
            if let Some(j) = job {
                q = q.bind(j);
            }
            q.fetch_all(p).await
        }
        Db::Lite(p) => {
            let mut q = sqlx::query_as(&sql);
            if let Some(j) = job {
                q = q.bind(j);
            }
            q.fetch_all(p).await
        }
    }
    .map_err(db::db_err)?;
    if let (Some(j), true) = (job, rows.is_empty()) {
        return Err(MigrateError::Job(format!("no job {j}")));
    }
    Ok(Value::Array(
        rows.into_iter()
            .map(
                |(id, spec, state, batches, done, changed, unchanged, bad)| {
                    json!({
                        "job": id,
                        "spec": serde_json::from_str::<Value>(&spec).unwrap_or(Value::Null),
                        "state": state,
                        "batches": batches,
                        "batches_done": done,
                        "rows_changed": changed,
                        "rows_unchanged": unchanged,
                        "rows_bad": bad,
                    })
                },
            )
            .collect(),
    ))
}
