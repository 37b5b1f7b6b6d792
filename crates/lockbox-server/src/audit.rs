//! The audit log: one chained, sealed entry per request and per event.
//!
//! Entries are sealed in a forward-secure HMAC chain
//! ([`lockbox_core::audit`]) and written to the configured sinks: a
//! JSON-lines file (rotated by size or age; the chain runs on across files),
//! stdout, and the store (queryable). Each run is a *segment* whose first
//! entry links to the last entry before it; an *anchor* (entries and head
//! of the segment) is kept in the store, at most a second old, so
//! truncation is detected.
//!
//! Writing: a request serializes and seals its entry on its own thread,
//! under a short lock, appending it to the entries waiting to be written.
//! The first request to find none waiting spawns a writer task, which lets
//! the worker run its other ready requests first (their entries join the
//! same batch) and then writes the whole batch with one `write(2)` (and one
//! store insert), in chain order.
//!
//! Failure policy: by default (fail closed) a request is answered only
//! after its batch is written; if the batch cannot be written the answer is
//! a 503 (a store write waits at most `timeout`). With `fail_open` requests
//! do not wait; an entry that finds `queue` entries waiting is dropped and
//! counted, as are entries whose batch fails. Never an unbounded backlog.
//!
//! Never in an entry: plaintext, ciphertext, tokens or key material. The
//! token appears as its accessor; a request's `context` as an HMAC under
//! the audit key (`hmac-sha256:...`, as Vault does), which `sys/audit-hash`
//! computes for a given value so an auditor can search for it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockbox_core::audit::{start_segment, Anchor, AuditChain};
use lockbox_core::encoding::b64url_encode;
use lockbox_core::kdf::hmac_sha256;
use lockbox_core::SecretBytes;
use lockbox_engine::{Engine, EngineError};
use lockbox_store::AuditRow;
use serde_json::{json, Map, Value};

/// Where audit entries go and what happens when they cannot be written.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// JSON-lines file (rotated files are `FILE.<unix-ms>`).
    pub file: Option<PathBuf>,
    /// Rotate the file when it grows past this many bytes (0 = never).
    pub file_max_bytes: u64,
    /// Rotate the file when it is older than this (0 = never).
    pub file_max_age: Duration,
    /// Also print entries to stdout.
    pub stdout: bool,
    /// Also keep entries in the store (`lockbox audit query`).
    pub store: bool,
    /// Let requests proceed when their entry cannot be written.
    pub fail_open: bool,
    /// Most entries waiting to be written: beyond it an entry is dropped
    /// (fail open) or its request refused (fail closed).
    pub queue: usize,
    /// How long a store-sink insert may take before its batch fails.
    pub timeout: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            file_max_bytes: 0,
            file_max_age: Duration::ZERO,
            stdout: false,
            store: false,
            fail_open: false,
            queue: 4096,
            timeout: Duration::from_secs(5),
        }
    }
}

impl AuditConfig {
    /// Whether any sink is configured.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.file.is_some() || self.stdout || self.store
    }
}

/// A request's audit entry. Fields are in alphabetical order, so its
/// serialization is the canonical form the chain MACs (no map, no sorting:
/// this is the hot path). `seg` and `seq` are set when it is sealed.
#[derive(serde::Serialize, Default)]
pub(crate) struct RequestEntry {
    pub(crate) accessor: Option<String>,
    pub(crate) context_hmac: Option<String>,
    pub(crate) duration_us: u64,
    pub(crate) error_class: Option<&'static str>,
    pub(crate) items: u64,
    pub(crate) key: Option<String>,
    pub(crate) key_version: Option<u64>,
    pub(crate) method: String,
    pub(crate) mount: Option<String>,
    pub(crate) operation: String,
    pub(crate) outcome: &'static str,
    pub(crate) path: Option<String>,
    pub(crate) request_id: String,
    pub(crate) role: Option<&'static str>,
    pub(crate) seg: String,
    pub(crate) seq: u64,
    pub(crate) status: u16,
    pub(crate) tenant: Option<String>,
    pub(crate) time: i64,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
}

/// The columns of a store row, kept aside (only with the store sink).
pub(crate) struct RowMeta {
    time: i64,
    operation: String,
    key: Option<String>,
    outcome: &'static str,
}

/// What is sealed: a request entry serialized on the request's thread
/// (with the placeholder `"seg":"","seq":0`, filled in when sealed, found
/// at `at` before the chain is locked), or any other entry (events,
/// segments).
pub(crate) enum Entry {
    Request {
        body: Vec<u8>,
        at: usize,
        row: Option<RowMeta>,
    },
    Other(Map<String, Value>),
}

/// What callers hand to [`Auditor::record`].
pub(crate) enum Pending {
    Request(Box<RequestEntry>),
    Other(Map<String, Value>),
}

impl From<Map<String, Value>> for Pending {
    fn from(m: Map<String, Value>) -> Self {
        Pending::Other(m)
    }
}

impl From<RequestEntry> for Pending {
    fn from(r: RequestEntry) -> Self {
        Pending::Request(Box::new(r))
    }
}

/// Where sealing puts `seg` and `seq` in a serialized request entry.
const PLACEHOLDER: &[u8] = br#","seg":"","seq":0,"status":"#;

/// Where [`PLACEHOLDER`] is in a serialized [`RequestEntry`]. JSON escapes
/// every `"` inside a string, so no field's text can hold it: the first
/// match is the one the serializer wrote.
fn placeholder_at(body: &[u8]) -> Option<usize> {
    // Built once: building a searcher cost more than the search itself.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(PLACEHOLDER));
    FINDER.find(body)
}

/// A serialized [`RequestEntry`] as parts, with `seg` and `seq` in place of
/// the [`PLACEHOLDER`] found at `at` (no copy of the entry).
fn spliced<'a>(body: &'a [u8], at: usize, seg: &'a str, seq: &'a str) -> [&'a [u8]; 7] {
    [
        &body[..at],
        br#","seg":""#,
        seg.as_bytes(),
        br#"","seq":"#,
        seq.as_bytes(),
        br#","status":"#,
        &body[at + PLACEHOLDER.len()..],
    ]
}

/// The request side of the audit log.
pub(crate) struct Auditor {
    pub(crate) core: Arc<SinkCore>,
    hmac_key: std::sync::RwLock<Option<SecretBytes>>,
}

/// The chain and the sinks. Requests seal their entries into the chain
/// under a short lock ([`SealState`]); a writer task then writes everything
/// sealed so far in one go ([`OutState`]), and fail-closed requests wait
/// for the [`Batch`] their entry is in.
pub(crate) struct SinkCore {
    /// Entries that could not be written (`audit_write_failures_total`).
    pub(crate) failures: AtomicU64,
    /// Whether the last batch was written.
    healthy: AtomicBool,
    cfg: AuditConfig,
    engine: Engine,
    seal: std::sync::Mutex<SealState>,
    /// Held by the writer for a whole batch: batches reach the sinks in
    /// chain order.
    out: tokio::sync::Mutex<OutState>,
    key: std::sync::RwLock<Option<Arc<SecretBytes>>>,
}

/// The chain, and what is sealed but not yet written.
struct SealState {
    chain: Option<(String, AuditChain)>,
    /// With no chain: the last entry written, which a new segment links to.
    last: Option<(String, u64, String)>,
    /// Whether `last` was read from the end of the file sink (first segment).
    linked: bool,
    /// Sealed lines, each ending in a newline.
    lines: Vec<u8>,
    rows: Vec<AuditRow>,
    entries: usize,
    /// What the entries in `lines` wait on.
    batch: Arc<Batch>,
    /// Whether a writer task is on its way.
    scheduled: bool,
}

/// The sinks, as the writer sees them.
struct OutState {
    file: Option<FileSink>,
    /// The last entry written to every sink (what anchors name).
    last: Option<(String, u64, String)>,
    /// The last entry written to the file sink (what a new segment links
    /// to: the file's chain is checked across segments, the store's is not).
    linked: Option<(String, u64, String)>,
    anchor_at: Instant,
    /// The previous batch's buffer, reused.
    spare: Vec<u8>,
}

/// Why an entry was not sealed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// `queue` entries are already waiting for a slow sink.
    Full,
    /// The audit key or the chain is not available.
    Broken,
}

/// A set of entries written together, and whether they were.
#[derive(Default)]
pub(crate) struct Batch {
    /// 0 pending, 1 written, 2 failed.
    state: std::sync::atomic::AtomicU8,
    done: tokio::sync::Notify,
}

impl Batch {
    fn finish(&self, ok: bool) {
        self.state.store(if ok { 1 } else { 2 }, Ordering::Release);
        self.done.notify_waiters();
    }

    /// Waits until the batch is written (`true`) or has failed.
    async fn wait(&self) -> bool {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.state.load(Ordering::Acquire) {
                0 => notified.await,
                s => return s == 1,
            }
        }
    }
}

/// The name anchors are kept under for a sink (the file's name, or `store`).
pub fn sink_name(file: Option<&Path>) -> String {
    file.and_then(Path::file_name)
        .map_or_else(|| "store".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// The store meta key of a segment's anchor.
fn anchor_key(sink: &str, seg: &str) -> String {
    format!("audit/anchor/{sink}/{seg}")
}

/// Every anchor of a sink, for verification.
///
/// # Errors
/// The store's errors.
pub async fn anchors(engine: &Engine, sink: &str) -> Result<Vec<Anchor>, EngineError> {
    let prefix = format!("audit/anchor/{sink}/");
    let mut out = Vec::new();
    for (name, v) in engine.store().meta_list(&prefix).await? {
        let seg = name.trim_start_matches(&prefix).to_owned();
        let j: Value = serde_json::from_slice(&v)
            .map_err(|_| EngineError::Integrity("an audit anchor does not parse".into()))?;
        out.push(Anchor {
            segment: seg,
            entries: j["entries"].as_u64().unwrap_or(0),
            head: j["head"].as_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(out)
}

impl Auditor {
    /// The audit log (its writer tasks are spawned as entries arrive).
    pub(crate) fn start(engine: Engine, cfg: AuditConfig) -> Arc<Auditor> {
        let core = Arc::new(SinkCore {
            failures: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            cfg,
            engine,
            seal: std::sync::Mutex::new(SealState {
                chain: None,
                last: None,
                linked: false,
                lines: Vec::new(),
                rows: Vec::new(),
                entries: 0,
                batch: Arc::default(),
                scheduled: false,
            }),
            out: tokio::sync::Mutex::new(OutState {
                file: None,
                last: None,
                linked: None,
                anchor_at: Instant::now(),
                spare: Vec::new(),
            }),
            key: std::sync::RwLock::new(None),
        });
        Arc::new(Auditor {
            core,
            hmac_key: std::sync::RwLock::new(None),
        })
    }

    pub(crate) fn fail_open(&self) -> bool {
        self.core.cfg.fail_open
    }

    /// Whether the last write succeeded (fail-closed servers refuse work
    /// while it has not).
    pub(crate) fn healthy(&self) -> bool {
        self.core.healthy.load(Ordering::Relaxed)
    }

    /// `hmac-sha256:` + hex of HMAC(audit HMAC key, value).
    pub(crate) async fn hash(&self, value: &[u8]) -> Result<String, EngineError> {
        let cached = self
            .hmac_key
            .read()
            .ok()
            .and_then(|k| k.as_ref().map(|k| hmac_sha256(k.expose_secret(), value)));
        let mac = match cached {
            Some(m) => m,
            None => {
                let ak = self.core.engine.audit_key().await?;
                let k = SecretBytes::new(
                    hmac_sha256(ak.expose_secret(), b"lockbox/v1/audit/hmac").to_vec(),
                );
                let m = hmac_sha256(k.expose_secret(), value);
                if let Ok(mut slot) = self.hmac_key.write() {
                    *slot = Some(k);
                }
                m
            }
        };
        Ok(format!(
            "hmac-sha256:{}",
            lockbox_core::encoding::hex_encode(&mac)
        ))
    }

    /// Forgets the HMAC key (on seal).
    pub(crate) fn forget(&self) {
        if let Ok(mut k) = self.hmac_key.write() {
            *k = None;
        }
        if let Ok(mut k) = self.core.key.write() {
            *k = None;
        }
    }

    /// Records an entry. Fail closed: waits until it is written and
    /// returns `false` if it was not. Fail open: returns at once (an entry
    /// that finds `queue` entries waiting is dropped and counted).
    pub(crate) async fn record(&self, entry: impl Into<Pending>) -> bool {
        let core = &self.core;
        let fail_open = core.cfg.fail_open;
        // Serialized here, on the request's thread, and sealed here too:
        // the writer only writes bytes.
        let entry = match entry.into() {
            Pending::Other(m) => Entry::Other(m),
            Pending::Request(r) => {
                let Some((body, at)) = serde_json::to_vec(&*r)
                    .ok()
                    .and_then(|b| placeholder_at(&b).map(|at| (b, at)))
                else {
                    core.failures.fetch_add(1, Ordering::Relaxed);
                    return fail_open;
                };
                let r = *r;
                let row = core.cfg.store.then_some(RowMeta {
                    time: r.time,
                    operation: r.operation,
                    key: r.key,
                    outcome: r.outcome,
                });
                Entry::Request { body, at, row }
            }
        };
        let sealed = match core.key().await {
            Some(key) => core.seal(&key, entry),
            None => Err(Refused::Broken),
        };
        let (batch, spawn) = match sealed {
            Ok(x) => x,
            Err(why) => {
                core.failures.fetch_add(1, Ordering::Relaxed);
                if !fail_open && why == Refused::Broken {
                    core.healthy.store(false, Ordering::Relaxed);
                }
                return fail_open;
            }
        };
        if spawn {
            tokio::spawn(core.clone().write_batch());
        }
        fail_open || batch.wait().await
    }
}

/// The file sink: the open file, its size and age.
struct FileSink {
    path: PathBuf,
    file: std::fs::File,
    size: u64,
    opened: Instant,
}

impl FileSink {
    fn open(path: &Path) -> std::io::Result<FileSink> {
        let mut o = std::fs::OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let file = o.open(path)?;
        let meta = file.metadata()?;
        let size = if meta.is_file() { meta.len() } else { 0 };
        Ok(FileSink {
            path: path.to_owned(),
            file,
            size,
            opened: Instant::now(),
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if !std::fs::metadata(&self.path)?.is_file() {
            return Ok(());
        }
        self.file.sync_all()?;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{ms:015}"));
        std::fs::rename(&self.path, PathBuf::from(name))?;
        *self = FileSink::open(&self.path)?;
        Ok(())
    }
}

/// The last line of a file (the previous run's last entry), if any. Reads
/// only the file's end (entries are far shorter than 64 KiB).
fn last_line(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok().filter(std::fs::Metadata::is_file)?.len();
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned)
}

/// The files of a file sink, oldest first: `FILE.<unix-ms>` then `FILE`.
#[must_use]
pub fn trail_files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!("{}.", name.to_string_lossy());
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut rotated: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .and_then(|n| {
                            n.strip_prefix(&prefix)
                                .map(|s| s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty())
                        })
                        .unwrap_or(false)
                })
                .collect();
            rotated.sort();
            out.extend(rotated);
        }
    }
    if path.exists() {
        out.push(path.to_owned());
    }
    out
}

impl SinkCore {
    /// The audit key, fetched from the engine once (forgotten on seal).
    async fn key(&self) -> Option<Arc<SecretBytes>> {
        if let Some(k) = self.key.read().ok().and_then(|k| k.clone()) {
            return Some(k);
        }
        let k = Arc::new(self.engine.audit_key().await.ok()?);
        if let Ok(mut slot) = self.key.write() {
            *slot = Some(k.clone());
        }
        Some(k)
    }

    /// The sealing state (a panic elsewhere while it was held does not
    /// stop the log: every change to it is complete before it is unlocked).
    fn sealing(&self) -> std::sync::MutexGuard<'_, SealState> {
        self.seal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seals `entry` into the chain, behind the entries already waiting.
    /// Returns the batch it will be written with, and whether the caller
    /// must spawn the writer task ([`SinkCore::write_batch`]).
    fn seal(&self, key: &SecretBytes, entry: Entry) -> Result<(Arc<Batch>, bool), Refused> {
        let mut st = self.sealing();
        if st.entries >= self.cfg.queue.max(1) {
            return Err(Refused::Full);
        }
        if st.chain.is_none() {
            let seg = st
                .new_segment(&self.cfg, key)
                .map_err(|()| Refused::Broken)?;
            st.push(self.cfg.store, Entry::Other(seg))
                .map_err(|()| Refused::Broken)?;
        }
        st.push(self.cfg.store, entry)
            .map_err(|()| Refused::Broken)?;
        let spawn = !std::mem::replace(&mut st.scheduled, true);
        Ok((st.batch.clone(), spawn))
    }

    /// The writer task: lets the worker run its other ready requests first
    /// (they seal their entries into the same batch; fail open, whose
    /// requests do not wait, gathers for a millisecond), then writes every
    /// entry sealed so far to the sinks in one go and wakes their requests.
    async fn write_batch(self: Arc<Self>) {
        if self.cfg.fail_open {
            // Nobody waits for the write: gather a millisecond's entries.
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
        let mut out = self.out.lock().await;
        let (mut lines, rows, batch, n, last) = {
            let mut st = self.sealing();
            st.scheduled = false;
            let spare = std::mem::take(&mut out.spare);
            (
                std::mem::replace(&mut st.lines, spare),
                std::mem::take(&mut st.rows),
                std::mem::take(&mut st.batch),
                std::mem::take(&mut st.entries),
                st.last(),
            )
        };
        if n == 0 {
            out.spare = lines;
            batch.finish(true);
            return;
        }
        let mut ok = out.write(&self.cfg, &lines, &last);
        if ok && !rows.is_empty() {
            let w = self.engine.store().audit_append(&rows);
            ok = match tokio::time::timeout(self.cfg.timeout, w).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    eprintln!("lockbox: audit store write failed: {e}");
                    false
                }
                Err(_) => {
                    eprintln!("lockbox: audit store write timed out");
                    false
                }
            };
        }
        lines.clear();
        out.spare = lines;
        let mut anchor = None;
        if ok {
            out.last.clone_from(&last);
            if out.anchor_at.elapsed() >= Duration::from_secs(1) {
                out.anchor_at = Instant::now();
                anchor = last;
            }
        } else {
            self.failures.fetch_add(n as u64, Ordering::Relaxed);
            // The entries sealed behind this batch are chained onto
            // entries that were not written: drop them too. The next entry
            // opens a segment linked to the last entry in the file.
            let mut st = self.sealing();
            st.chain = None;
            st.last.clone_from(&out.linked);
            // Nothing written in this run yet: link to the file's end.
            st.linked = out.linked.is_some();
            st.lines.clear();
            st.rows.clear();
            let dropped = std::mem::take(&mut st.entries);
            self.failures.fetch_add(dropped as u64, Ordering::Relaxed);
            std::mem::take(&mut st.batch).finish(false);
        }
        drop(out);
        self.healthy.store(ok, Ordering::Relaxed);
        batch.finish(ok);
        // Outside the writer's lock: a slow store must not hold up the
        // next batch once a second. (Anchors only bound the trail from
        // below, so one landing after a newer one weakens, never breaks,
        // the truncation check.)
        if let Some(a) = anchor {
            let _ = self.put_anchor(a).await;
        }
    }

    /// At shutdown: writes what is waiting, keeps the anchor of the last
    /// entry and syncs the file.
    pub(crate) async fn final_anchor(self: &Arc<Self>) {
        self.clone().write_batch().await;
        let out = self.out.lock().await;
        if let Some(a) = out.last.clone() {
            let _ = self.put_anchor(a).await;
        }
        if let Some(f) = &out.file {
            let _ = f.file.sync_all();
        }
    }

    async fn put_anchor(&self, (seg, seq, mac): (String, u64, String)) -> Result<(), EngineError> {
        let body = json!({ "entries": seq + 1, "head": mac }).to_string();
        let mut sinks = Vec::new();
        if let Some(p) = &self.cfg.file {
            sinks.push(sink_name(Some(p)));
        }
        if self.cfg.store {
            sinks.push(sink_name(None));
        }
        for s in sinks {
            self.engine
                .store()
                .meta_put(&anchor_key(&s, &seg), body.as_bytes())
                .await?;
        }
        Ok(())
    }
}

impl SealState {
    /// Opens a new segment, linked to the last entry sealed (at the first
    /// segment of a run: the last entry in the file sink). Returns its
    /// first entry.
    fn new_segment(
        &mut self,
        cfg: &AuditConfig,
        key: &SecretBytes,
    ) -> Result<Map<String, Value>, ()> {
        if !self.linked {
            self.linked = true;
            if let Some(l) = cfg.file.as_deref().and_then(last_line) {
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&l) {
                    if let (Some(s), Some(q), Some(mac)) = (
                        m.get("seg").and_then(Value::as_str),
                        m.get("seq").and_then(Value::as_u64),
                        m.get("mac").and_then(Value::as_str),
                    ) {
                        self.last = Some((s.to_owned(), q, mac.to_owned()));
                    }
                }
            }
        }
        let mut id = [0u8; 12];
        lockbox_core::fill_random(&mut id).map_err(|_| ())?;
        let seg = b64url_encode(&id);
        let prev = self
            .last
            .as_ref()
            .map(|(s, q, m)| (s.as_str(), *q, m.as_str()));
        let (chain, entry) =
            start_segment(key, &seg, prev, lockbox_engine::now()).map_err(|_| ())?;
        self.chain = Some((seg, chain));
        match entry {
            Value::Object(m) => Ok(m),
            _ => Err(()),
        }
    }

    /// The last entry sealed: (segment, seq, mac).
    fn last(&self) -> Option<(String, u64, String)> {
        match &self.chain {
            Some((seg, c)) if c.next_seq() > 0 => Some((seg.clone(), c.next_seq() - 1, c.head())),
            _ => self.last.clone(),
        }
    }

    /// Seals one entry onto the chain and appends its line (and, with the
    /// store sink, its row). Nothing is appended if sealing fails.
    fn push(&mut self, store: bool, e: Entry) -> Result<(), ()> {
        let Some((seg, chain)) = self.chain.as_mut() else {
            return Err(());
        };
        let seq = chain.next_seq();
        let start = self.lines.len();
        let row = match e {
            Entry::Request { body, at, row } => {
                let seq_text = seq.to_string();
                chain
                    .seal_parts_into(&spliced(&body, at, seg, &seq_text), &mut self.lines)
                    .map_err(|_| ())?;
                row.map(|m| (m.time, m.operation, m.key, m.outcome.to_owned()))
            }
            Entry::Other(mut m) => {
                m.insert("seg".into(), Value::from(seg.as_str()));
                let row = store.then(|| {
                    let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
                    (
                        m.get("time").and_then(Value::as_i64).unwrap_or(0),
                        text("operation")
                            .or_else(|| text("event"))
                            .or_else(|| text("type"))
                            .unwrap_or_default(),
                        text("key"),
                        text("outcome").unwrap_or_else(|| "ok".to_owned()),
                    )
                });
                let line = chain.append(Value::Object(m)).map_err(|_| ())?;
                self.lines.extend_from_slice(line.as_bytes());
                row
            }
        };
        if let Some((time, operation, key, outcome)) = row {
            self.rows.push(AuditRow {
                segment: seg.clone(),
                seq,
                time,
                operation,
                key,
                outcome,
                entry: String::from_utf8_lossy(&self.lines[start..]).into_owned(),
            });
        }
        self.lines.push(b'\n');
        self.entries += 1;
        Ok(())
    }
}

impl OutState {
    /// Writes sealed lines (the last of them `last`) to the file and stdout
    /// sinks, rotating the file when due. A failed file write is cut back
    /// off the file (no half line is left for the next batch to follow).
    fn write(
        &mut self,
        cfg: &AuditConfig,
        lines: &[u8],
        last: &Option<(String, u64, String)>,
    ) -> bool {
        if self.file.is_none() {
            if let Some(p) = &cfg.file {
                match FileSink::open(p) {
                    Ok(f) => self.file = Some(f),
                    Err(e) => {
                        eprintln!("lockbox: audit file {}: {e}", p.display());
                        return false;
                    }
                }
            }
        }
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f.file.write_all(lines) {
                eprintln!("lockbox: audit file write failed: {e}");
                let _ = f.file.set_len(f.size);
                return false;
            }
            f.size += lines.len() as u64;
        }
        self.linked.clone_from(last);
        if cfg.stdout {
            let mut out = std::io::stdout().lock();
            if out.write_all(lines).and_then(|()| out.flush()).is_err() {
                return false;
            }
        }
        if let Some(f) = self.file.as_mut() {
            let too_big = cfg.file_max_bytes > 0 && f.size >= cfg.file_max_bytes;
            let too_old = !cfg.file_max_age.is_zero() && f.opened.elapsed() >= cfg.file_max_age;
            if too_big || too_old {
                if let Err(e) = f.rotate() {
                    eprintln!("lockbox: audit file rotation failed: {e}");
                }
            }
        }
        true
    }
}

/// Reads a whole file sink (all rotated files, oldest first) and the
/// store's anchors, and verifies the trail.
///
/// # Errors
/// A message for unreadable files; the verification failure.
pub async fn verify_file_sink(
    engine: &Engine,
    path: &Path,
) -> Result<Vec<lockbox_core::audit::SegmentReport>, String> {
    let key = engine.audit_key().await.map_err(|e| e.to_string())?;
    let anchors = anchors(engine, &sink_name(Some(path)))
        .await
        .map_err(|e| e.to_string())?;
    let mut texts = Vec::new();
    for f in trail_files(path) {
        let t = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let name = f
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        texts.push((name, t));
    }
    if texts.is_empty() {
        return Err(format!("no audit file at {}", path.display()));
    }
    let lines = texts.iter().flat_map(|(n, t)| {
        t.lines()
            .enumerate()
            .map(move |(i, l)| (n.as_str(), i + 1, l))
    });
    lockbox_core::audit::verify_trail(&key, lines, &anchors, true).map_err(|f| f.to_string())
}

/// Verifies the store sink, segment by segment (servers sharing a store
/// write their own segments, so segments are not linked to each other).
///
/// # Errors
/// As [`verify_file_sink`].
pub async fn verify_store_sink(
    engine: &Engine,
) -> Result<Vec<lockbox_core::audit::SegmentReport>, String> {
    let key = engine.audit_key().await.map_err(|e| e.to_string())?;
    let anchors = anchors(engine, "store").await.map_err(|e| e.to_string())?;
    let mut rows = engine
        .store()
        .audit_query(&lockbox_store::AuditFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    rows.sort_by(|a, b| (&a.segment, a.seq).cmp(&(&b.segment, b.seq)));
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("store:{}", r.segment))
        .collect();
    let lines = rows.iter().zip(&labels).map(|(r, l)| {
        (
            l.as_str(),
            usize::try_from(r.seq).unwrap_or(usize::MAX),
            r.entry.as_str(),
        )
    });
    lockbox_core::audit::verify_trail(&key, lines, &anchors, false).map_err(|f| f.to_string())
}

/// A sink's verification report as JSON: `{"ok": true, "segments": [...]}`
/// (the server's `sys/audit/verify` answer and the CLI's local report).
#[must_use]
pub fn report_json(r: &[lockbox_core::audit::SegmentReport]) -> Value {
    let segments: Vec<Value> = r
        .iter()
        .map(|s| json!({"segment": s.segment, "entries": s.entries, "starts_at": s.starts_at}))
        .collect();
    json!({"ok": true, "segments": segments})
}

/// `/v1/sys/audit[/verify|/query]` and `/v1/sys/audit-hash`.
pub(crate) async fn endpoint(
    st: &crate::AppState,
    r: &crate::Req,
    rest: &[&str],
) -> crate::ApiResult {
    use axum::http::{Method, StatusCode};
    let Some(a) = &st.audit else {
        return Err(crate::ApiError::bad(
            "no audit log is configured (serve --audit-file, --audit-stdout or --audit-store)",
        ));
    };
    match (rest, &r.method) {
        ([], &Method::GET) => {
            let c = &a.core.cfg;
            crate::ok(json!({
                "file": c.file.as_ref().map(|p| p.display().to_string()),
                "file_max_bytes": c.file_max_bytes,
                "file_max_age_seconds": c.file_max_age.as_secs(),
                "stdout": c.stdout,
                "store": c.store,
                "fail_open": c.fail_open,
                "queue": c.queue,
                "healthy": a.healthy(),
                "write_failures": a.core.failures.load(Ordering::Relaxed),
            }))
        }
        (["verify"], &Method::POST | &Method::PUT) => {
            let mut out = Map::new();
            let mut ok = true;
            if let Some(p) = &a.core.cfg.file {
                match verify_file_sink(&st.engine, p).await {
                    Ok(rep) => {
                        out.insert("file".into(), report_json(&rep));
                    }
                    Err(e) => {
                        ok = false;
                        out.insert("file".into(), json!({"ok": false, "error": e}));
                    }
                }
            }
            if a.core.cfg.store {
                match verify_store_sink(&st.engine).await {
                    Ok(rep) => {
                        out.insert("store".into(), report_json(&rep));
                    }
                    Err(e) => {
                        ok = false;
                        out.insert("store".into(), json!({"ok": false, "error": e}));
                    }
                }
            }
            out.insert("ok".into(), Value::from(ok));
            crate::ok(Value::Object(out))
        }
        (["query"], &Method::POST | &Method::PUT | &Method::GET) => {
            if !a.core.cfg.store {
                return Err(crate::ApiError::bad(
                    "queries need the store sink (serve --audit-store)",
                ));
            }
            let b = &r.body;
            let text =
                |n: &str| -> Result<Option<String>, crate::ApiError> { crate::field_str(b, n) };
            let int = |n: &str| -> Result<Option<i64>, crate::ApiError> {
                match b.get(n) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                        crate::ApiError::bad(format!("{n} must be an integer (Unix seconds)"))
                    }),
                }
            };
            let outcome = text("outcome")?;
            if let Some(o) = &outcome {
                if o != "ok" && o != "error" {
                    return Err(crate::ApiError::bad("outcome must be ok or error"));
                }
            }
            let limit = match int("limit")? {
                None => 1000,
                Some(l) if (1..=100_000).contains(&l) => usize::try_from(l).unwrap_or(1000),
                Some(_) => return Err(crate::ApiError::bad("limit must be 1 to 100000")),
            };
            let rows = st
                .engine
                .store()
                .audit_query(&lockbox_store::AuditFilter {
                    key: text("key")?,
                    since: int("since")?,
                    until: int("until")?,
                    outcome,
                    segment: text("segment")?,
                    limit,
                })
                .await
                .map_err(|e| crate::ApiError::from_engine(e.into()))?;
            let entries: Vec<Value> = rows
                .iter()
                .filter_map(|r| serde_json::from_str(&r.entry).ok())
                .collect();
            crate::ok(json!({ "entries": entries }))
        }
        _ => Err(crate::ApiError::new(
            StatusCode::NOT_FOUND,
            "unsupported path",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_is_found_where_the_serializer_put_it() {
        // Field text that spells the placeholder cannot be mistaken for it.
        let fake = r#"x","seg":"","seq":0,"status":1"#;
        let e = RequestEntry {
            path: Some(fake.into()),
            key: Some(fake.into()),
            method: "POST".into(),
            status: 200,
            ..RequestEntry::default()
        };
        let b = serde_json::to_vec(&e).unwrap();
        let at = placeholder_at(&b).unwrap();
        let line = spliced(&b, at, "s1", "7").concat();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["seg"], "s1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["path"], fake);
        assert_eq!(v["key"], fake);
        assert_eq!(placeholder_at(b"no placeholder here"), None);
    }
}
