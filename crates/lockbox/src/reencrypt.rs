//! `lockbox reencrypt`: convert a database column to Lockbox ciphertexts
//! (from plaintext, older key versions, Fernet, Vault or pgcrypto), back to
//! plaintext, verify it, and show jobs. The work is in `lockbox-migrate`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand, ValueEnum};
use lockbox::blind_index::Normalization;
use lockbox::fernet::FernetKey;
use lockbox_engine::EngineConfig;
use lockbox_migrate::{
    MigrateError, Observer, OnBadRow, Options, Progress, Secrets, SourceFormat, Spec,
};
use serde_json::{json, Value};

use crate::{CliError, CliResult, Global};

/// `lockbox reencrypt …`
#[derive(Subcommand)]
pub(crate) enum ReencryptCommand {
    /// Convert columns: plaintext → encrypted, older key version → current,
    /// Fernet / Vault / pgcrypto → Lockbox, or encrypted → plaintext.
    Run(Box<RunArgs>),
    /// Check that every row decrypts; counts by format and key version
    /// (exit status 1 if a value fails, is not encrypted, or has a stale blind index).
    Verify(Box<TableArgs>),
    /// Show re-encryption jobs recorded in a database.
    Status {
        /// Database URL (postgres://, mysql://, sqlite://).
        #[arg(long, env = "LOCKBOX_REENCRYPT_DB", hide_env_values = true)]
        db: String,
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
    },
}

/// The table and columns, the key and the context.
#[derive(Args)]
pub(crate) struct TableArgs {
    /// Database URL (postgres://, mysql:// or mariadb://, sqlite://).
    #[arg(long, env = "LOCKBOX_REENCRYPT_DB", hide_env_values = true)]
    db: String,
    /// Table (`table` or `schema.table`).
    #[arg(long)]
    table: String,
    /// Integer primary key column.
    #[arg(long, default_value = "id")]
    pk: String,
    /// Column to convert (repeat for several).
    #[arg(long = "column", required = true)]
    columns: Vec<String>,
    /// Lockbox key to encrypt with (its older versions are rewrapped).
    #[arg(long)]
    key: String,
    /// Context template bound to each value, e.g. '{table}.{column}:{tenant_id}:{id}'.
    #[arg(long)]
    context: Option<String>,
    /// Blind-index column of the (single) converted column, filled and refreshed.
    #[arg(long)]
    blind_index_column: Option<String>,
    /// Key of the blind index.
    #[arg(long)]
    blind_index_key: Option<String>,
    /// Tenant template of the blind index, e.g. '{tenant_id}'.
    #[arg(long)]
    blind_index_tenant: Option<String>,
    /// Normalization of the blind index: comma-separated trim, case_fold, nfc, or none
    /// (default: all three, as the server's record API).
    #[arg(long, value_delimiter = ',')]
    blind_index_normalize: Option<Vec<String>>,
    /// Blind-index truncation in bytes (8 to 32; default 16).
    #[arg(long)]
    blind_index_truncation: Option<usize>,
    /// Imported Vault-format key for `vault:vN:` values (`--from vault`).
    #[arg(long)]
    vault_key: Option<String>,
    /// Rows per batch (one transaction each).
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum BadRow {
    /// Stop with an error (a new job checks every row before writing anything).
    Fail,
    /// Report the row and leave it unchanged.
    Skip,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ProgressMode {
    /// A bar on a terminal, JSON lines with --json, else nothing.
    Auto,
    /// A progress bar on stderr.
    Bar,
    /// JSON progress lines on stderr.
    Json,
    /// No progress output.
    None,
}

/// `lockbox reencrypt run`
#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    t: TableArgs,
    /// Source formats to accept besides Lockbox's own: plaintext, fernet, vault, pgcrypto.
    #[arg(long, value_delimiter = ',', default_value = "plaintext")]
    from: Vec<String>,
    /// Fernet keys for `--from fernet` (comma-separated, newest first).
    #[arg(
        long = "fernet-key",
        env = "LOCKBOX_FERNET_KEYS",
        value_delimiter = ',',
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    fernet_keys: Vec<String>,
    /// File holding the pgcrypto passphrase (`--from pgcrypto`).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// Decrypt every value to plaintext (export, leaving Lockbox).
    #[arg(long, requires = "i_understand_this_decrypts")]
    to_plaintext: bool,
    /// Confirms --to-plaintext.
    #[arg(long)]
    i_understand_this_decrypts: bool,
    /// Concurrent workers in this process (SQLite: 1).
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Job id: created if new, else resumed or joined (same options required).
    #[arg(long)]
    job: Option<String>,
    /// Resume (or join) an existing job.
    #[arg(long, conflicts_with = "job")]
    resume: Option<String>,
    /// Only count what would change.
    #[arg(long)]
    dry_run: bool,
    /// Throttle this process to N rows per second.
    #[arg(long)]
    max_rows_per_second: Option<u64>,
    /// What to do with a row that cannot be converted.
    #[arg(long, value_enum, default_value_t = BadRow::Fail)]
    on_bad_row: BadRow,
    /// Progress output.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// Append REENCRYPTION_STARTED / REENCRYPTION_COMPLETED events (JSON lines) to FILE.
    #[arg(long)]
    events: Option<PathBuf>,
}

impl From<MigrateError> for CliError {
    fn from(e: MigrateError) -> Self {
        let hint = match &e {
            MigrateError::BadRows { .. } => {
                Some("fix the rows, give the right keys, or pass --on-bad-row skip")
            }
            MigrateError::Job(_) => Some("list jobs with `lockbox reencrypt status --db URL`"),
            _ => None,
        };
        let mut c = CliError::new(e.to_string());
        c.hint = hint;
        c
    }
}

/// Writes events and progress.
struct CliObserver {
    progress: ProgressMode,
    json_events_stderr: bool,
    events: Option<Mutex<std::fs::File>>,
    /// With `--addr`: the server whose audit log (and webhook) gets the
    /// events, through `POST /v1/sys/events`.
    server: Option<crate::target::Target>,
}

/// One audit-style event as a JSON line: to the events file and, in JSON
/// mode, to stderr. The one place events are written (to be pointed at the
/// audit log).
fn emit_event(sink: Option<&Mutex<std::fs::File>>, to_stderr: bool, name: &str, detail: &Value) {
    let mut ev = json!({"event": name, "time": lockbox_engine::now()});
    if let (Some(o), Value::Object(d)) = (ev.as_object_mut(), detail) {
        for (k, v) in d {
            o.insert(k.clone(), v.clone());
        }
    }
    let line = format!("{ev}\n");
    if let Some(f) = sink {
        if let Ok(mut f) = f.lock() {
            let _ = f.write_all(line.as_bytes()).and_then(|()| f.flush());
        }
    }
    if to_stderr {
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

impl Observer for CliObserver {
    fn event(&self, name: &str, detail: &Value) {
        emit_event(self.events.as_ref(), self.json_events_stderr, name, detail);
        if let Some(t) = &self.server {
            let body = json!({"event": name, "data": detail});
            let post = t.call("POST", "sys/events", Some(body));
            // Observers are called from the job's (multi-threaded) runtime.
            let res =
                tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(post));
            if let Err(e) = res {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "lockbox: warning: {name} not recorded in the server's audit log: {}",
                    e.message
                );
            }
        }
    }

    fn progress(&self, p: &Progress) {
        let mut err = std::io::stderr().lock();
        match self.progress {
            ProgressMode::Bar => {
                let frac = if p.rows_total > 0 {
                    (p.rows_done as f64 / p.rows_total as f64).min(1.0)
                } else {
                    1.0
                };
                let filled = (frac * 30.0) as usize;
                let eta = p
                    .eta_secs
                    .map(|s| format!("{s:.0}s"))
                    .unwrap_or_else(|| "?".into());
                let _ = write!(
                    err,
                    "\r[{}{}] {:>3.0}% {}/{} rows {:.0} rows/s ETA {eta}   ",
                    "=".repeat(filled),
                    " ".repeat(30 - filled),
                    frac * 100.0,
                    p.rows_done,
                    p.rows_total,
                    p.rows_per_sec
                );
            }
            ProgressMode::Json => {
                let _ = writeln!(
                    err,
                    "{}",
                    json!({
                        "event": "progress",
                        "job": p.job,
                        "rows_done": p.rows_done,
                        "rows_total": p.rows_total,
                        "rows_per_sec": p.rows_per_sec.round(),
                        "eta_secs": p.eta_secs.map(f64::round),
                    })
                );
            }
            _ => {}
        }
    }

    fn bad_row(&self, pk: i64, column: &str, reason: &str) {
        let mut err = std::io::stderr().lock();
        if self.progress == ProgressMode::Json {
            let _ = writeln!(
                err,
                "{}",
                json!({"event": "bad_row", "pk": pk, "column": column, "reason": reason})
            );
        } else {
            let _ = writeln!(err, "lockbox: skipped row {pk} ({column}): {reason}");
        }
    }
}

fn normalization(list: Option<&[String]>) -> CliResult<Option<Normalization>> {
    let Some(list) = list else { return Ok(None) };
    let mut n = Normalization::NONE;
    for s in list {
        n = match s.trim() {
            "trim" => n.with_trim(),
            "case_fold" => n.with_case_fold(),
            "nfc" => n.with_nfc(),
            "none" | "" => n,
            other => {
                return Err(CliError::new(format!(
                    "--blind-index-normalize: unknown {other:?}: use trim, case_fold, nfc or none"
                )))
            }
        };
    }
    Ok(Some(n))
}

fn spec(t: &TableArgs, from: Vec<SourceFormat>, to_plaintext: bool) -> CliResult<Spec> {
    Ok(Spec {
        blind_index_normalization: normalization(t.blind_index_normalize.as_deref())?,
        blind_index_truncation: t.blind_index_truncation,
        table: t.table.clone(),
        pk: t.pk.clone(),
        columns: t.columns.clone(),
        key: t.key.clone(),
        context: t.context.clone(),
        from,
        vault_key: t.vault_key.clone(),
        to_plaintext,
        blind_index_column: t.blind_index_column.clone(),
        blind_index_key: t.blind_index_key.clone(),
        blind_index_tenant: t.blind_index_tenant.clone(),
    })
}

fn runtime(workers: u32) -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::try_from(workers.clamp(2, 64)).unwrap_or(2))
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))
}

async fn engine(g: &Global) -> CliResult<lockbox_engine::Engine> {
    let Some(url) = &g.store else {
        return Err(CliError::new("reencrypt needs the key store: give --store URL")
            .hint("the conversion runs in-process with the keys of a local store (--store and LOCKBOX_MASTER_KEY)"));
    };
    crate::target::open_local(
        url,
        g.master_key_file.as_deref(),
        true,
        EngineConfig::default(),
    )
    .await
}

/// Run `lockbox reencrypt …`; what goes to stdout.
pub(crate) fn run(cmd: ReencryptCommand, g: &Global) -> CliResult<Vec<u8>> {
    match cmd {
        ReencryptCommand::Status { db, job } => runtime(1)?.block_on(async {
            let v = lockbox_migrate::status(&db, job.as_deref()).await?;
            if g.json {
                return Ok(format!("{v}\n").into_bytes());
            }
            let mut out = String::new();
            for j in v.as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{}\t{}\t{}/{} batches\tchanged {}\tunchanged {}\tbad {}\t{}.{}\n",
                    j["job"].as_str().unwrap_or(""),
                    j["state"].as_str().unwrap_or(""),
                    j["batches_done"],
                    j["batches"],
                    j["rows_changed"],
                    j["rows_unchanged"],
                    j["rows_bad"],
                    j["spec"]["table"].as_str().unwrap_or(""),
                    j["spec"]["columns"]
                ));
            }
            Ok(out.into_bytes())
        }),
        ReencryptCommand::Verify(t) => runtime(1)?.block_on(async {
            let e = engine(g).await?;
            let s = spec(&t, vec![SourceFormat::Plaintext], false)?;
            let r = lockbox_migrate::verify(&e, &t.db, &s, t.batch_size).await?;
            let text = if g.json {
                format!("{}\n", r.to_json())
            } else {
                let mut o = format!("rows: {}\n", r.rows);
                for (k, v) in &r.by_format {
                    o.push_str(&format!("format {k}: {v}\n"));
                }
                for (k, v) in &r.by_key_version {
                    o.push_str(&format!("key version {k}: {v}\n"));
                }
                o.push_str(&format!(
                    "failed: {}\nnot encrypted with Lockbox: {}\nstale blind indexes: {}\n",
                    r.failed, r.not_lockbox, r.blind_index_stale
                ));
                for (pk, c, why) in &r.failures {
                    o.push_str(&format!("row {pk} ({c}): {why}\n"));
                }
                o
            };
            if r.ok() {
                Ok(text.into_bytes())
            } else {
                let _ = std::io::stdout().lock().write_all(text.as_bytes());
                Err(CliError::new(
                    "verify: some values do not decrypt, are not encrypted, or have stale blind indexes",
                ))
            }
        }),
        ReencryptCommand::Run(a) => run_cmd(*a, g),
    }
}

fn run_cmd(a: RunArgs, g: &Global) -> CliResult<Vec<u8>> {
    let mut from = Vec::new();
    for f in &a.from {
        from.push(
            f.parse::<SourceFormat>()
                .map_err(|e| CliError::new(format!("--from: {e}")))?,
        );
    }
    let mut secrets = Secrets::default();
    if from.contains(&SourceFormat::Fernet) {
        for k in a.fernet_keys.iter().filter(|k| !k.trim().is_empty()) {
            secrets.fernet_keys.push(
                FernetKey::from_base64(k.trim())
                    .map_err(|e| CliError::new(format!("--fernet-key: {e}")))?,
            );
        }
    }
    if let Some(p) = &a.passphrase_file {
        let s = crate::read_secret_file(p, "passphrase file")?;
        secrets.pgcrypto_passphrase = Some(zeroize::Zeroizing::new(
            s.trim_end_matches(['\n', '\r']).to_owned(),
        ));
    }
    let progress = match a.progress {
        ProgressMode::Auto if g.json => ProgressMode::Json,
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
        ProgressMode::Auto => ProgressMode::None,
        m => m,
    };
    let events = match &a.events {
        Some(p) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    CliError::new(format!("cannot open events file {}: {e}", p.display()))
                })?,
        )),
        None => None,
    };
    let server = match &g.addr {
        Some(addr) => Some(crate::target::Target::Remote {
            addr: addr.trim_end_matches('/').to_owned(),
            token: g.token.clone(),
            http: lockbox_kms::http::client(
                std::time::Duration::from_secs(30),
                std::time::Duration::from_secs(10),
            )
            .map_err(CliError::new)?,
        }),
        None => None,
    };
    let obs = Arc::new(CliObserver {
        progress,
        json_events_stderr: g.json || progress == ProgressMode::Json,
        events,
        server,
    });
    let opts = Options {
        batch_size: a.t.batch_size,
        workers: a.workers,
        dry_run: a.dry_run,
        max_rows_per_second: a.max_rows_per_second,
        on_bad_row: match a.on_bad_row {
            BadRow::Fail => OnBadRow::Fail,
            BadRow::Skip => OnBadRow::Skip,
        },
        job: a.job.clone().or_else(|| a.resume.clone()),
        must_exist: a.resume.is_some(),
        before_write: None,
    };
    let s = spec(&a.t, from, a.to_plaintext)?;
    runtime(a.workers)?.block_on(async {
        let e = engine(g).await?;
        let res = lockbox_migrate::run(&e, &a.t.db, &s, secrets, &opts, obs.clone()).await;
        let _ = e.flush_usage().await;
        if progress == ProgressMode::Bar {
            let _ = writeln!(std::io::stderr());
        }
        let r = res?;
        if g.json {
            return Ok(format!("{}\n", r.to_json()).into_bytes());
        }
        let mut o = String::new();
        if let Some(j) = &r.job {
            o.push_str(&format!("job: {j}\n"));
        }
        if r.dry_run {
            o.push_str("dry run: nothing was written\n");
        }
        o.push_str(&format!(
            "rows: {} seen, {} {}, {} unchanged, {} skipped as bad\n",
            r.rows_seen,
            r.rows_changed,
            if r.dry_run { "would change" } else { "changed" },
            r.rows_unchanged,
            r.rows_bad
        ));
        for (k, v) in &r.actions {
            o.push_str(&format!("  {k}: {v}\n"));
        }
        if r.conflicts_retried > 0 {
            o.push_str(&format!(
                "rows retried after a concurrent change: {}\n",
                r.conflicts_retried
            ));
        }
        if !r.dry_run {
            o.push_str(if r.job_complete {
                "job complete\n"
            } else {
                "this process is done; other workers still hold batches of this job\n"
            });
        }
        o.push_str(&format!(
            "time: {:.1}s ({:.0} rows/s)\n",
            r.elapsed_secs,
            if r.elapsed_secs > 0.0 {
                r.rows_seen as f64 / r.elapsed_secs
            } else {
                0.0
            }
        ));
        Ok(o.into_bytes())
    })
}
