//! Request classification (shared by the audit log and metrics), the
//! Prometheus metrics at `/v1/sys/metrics?format=prometheus`, and the
//! decryption-failure-rate window behind `DECRYPTION_FAILURE_RATE_HIGH`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use axum::http::StatusCode;
use lockbox_engine::Engine;

/// What a request is: operation, mount and key (for audit and metrics).
#[derive(Clone, Debug, Default)]
pub(crate) struct Op {
    /// `encrypt`, `keys.rotate`, `lockbox.decrypt`, `sys.seal`, ...
    pub(crate) operation: String,
    pub(crate) mount: Option<String>,
    pub(crate) key: Option<String>,
    /// Whether the request passed authorization (its token, the route's
    /// ACL check and every key it names).
    pub(crate) authorized: bool,
}

/// Operations whose names are known (others are reported as `other`, so
/// label values stay bounded).
const KNOWN_OPS: &[&str] = &[
    "encrypt",
    "decrypt",
    "rewrap",
    "datakey",
    "hmac",
    "sign",
    "verify",
    "hash",
    "random",
    "export",
    "backup",
    "restore",
    "cache-config",
    "keys",
    "keys.read",
    "keys.create",
    "keys.delete",
    "keys.list",
    "keys.rotate",
    "keys.config",
    "keys.trim",
    "lockbox.encrypt",
    "lockbox.decrypt",
    "lockbox.records.encrypt",
    "lockbox.records.decrypt",
    "lockbox.records.search",
    "lockbox.envelope.encrypt",
    "lockbox.envelope.decrypt",
    "lockbox.keys.destroy",
    "lockbox.keys.restore",
    "lockbox.keys.backup",
    "lockbox.keys.import",
    "lockbox.restore",
    "sys.health",
    "sys.seal-status",
    "sys.init",
    "sys.unseal",
    "sys.seal",
    "sys.mounts",
    "sys.policies",
    "sys.policy",
    "sys.audit",
    "sys.audit-hash",
    "sys.metrics",
    "sys.events",
    "auth.token",
    "openapi",
];

/// Classifies a request path (segments after `/v1/`).
pub(crate) fn classify(seg: &[String], method: &str, key_in_body: Option<&str>) -> Op {
    let s: Vec<&str> = seg.iter().map(String::as_str).collect();
    let mut op = Op::default();
    match s.as_slice() {
        ["sys", rest @ ..] => {
            op.operation = format!("sys.{}", rest.first().copied().unwrap_or(""));
        }
        ["auth", "token", _rest @ ..] => op.operation = "auth.token".into(),
        ["openapi.json"] => op.operation = "openapi".into(),
        ["lockbox", "records", what, ..] => {
            op.operation = format!("lockbox.records.{what}");
            op.key = key_in_body.map(str::to_owned);
        }
        ["lockbox", "envelope", what, ..] => {
            op.operation = format!("lockbox.envelope.{what}");
            op.key = key_in_body.map(str::to_owned);
        }
        ["lockbox", "decrypt"] => {
            op.operation = "lockbox.decrypt".into();
            op.key = key_in_body.map(str::to_owned);
        }
        ["lockbox", "encrypt", k] => {
            op.operation = "lockbox.encrypt".into();
            op.key = Some((*k).to_owned());
        }
        ["lockbox", "keys", k, what, ..] => {
            op.operation = format!("lockbox.keys.{what}");
            op.key = Some((*k).to_owned());
        }
        ["lockbox", what, ..] => op.operation = format!("lockbox.{what}"),
        [mount, "keys"] => {
            op.operation = "keys.list".into();
            op.mount = Some((*mount).to_owned());
        }
        [mount, "keys", k] => {
            op.operation = match method {
                "GET" => "keys.read",
                "DELETE" => "keys.delete",
                _ => "keys.create",
            }
            .into();
            op.mount = Some((*mount).to_owned());
            op.key = Some((*k).to_owned());
        }
        [mount, "keys", k, what, ..] => {
            op.operation = format!("keys.{what}");
            op.mount = Some((*mount).to_owned());
            op.key = Some((*k).to_owned());
        }
        [mount, what @ ("datakey" | "export"), _, k, ..] => {
            op.operation = (*what).to_owned();
            op.mount = Some((*mount).to_owned());
            op.key = Some((*k).to_owned());
        }
        [mount, what, k, ..]
            if matches!(
                *what,
                "encrypt" | "decrypt" | "rewrap" | "hmac" | "sign" | "verify" | "backup"
            ) =>
        {
            op.operation = (*what).to_owned();
            op.mount = Some((*mount).to_owned());
            op.key = Some((*k).to_owned());
        }
        [mount, what, ..] => {
            op.operation = (*what).to_owned();
            op.mount = Some((*mount).to_owned());
        }
        [_] | [] => op.operation = "other".into(),
    }
    // Namespaced keys of extra mounts are stored as `mount/key`.
    if let (Some(m), Some(k)) = (&op.mount, &op.key) {
        if m != crate::DEFAULT_MOUNT {
            op.key = Some(format!("{m}/{k}"));
        }
    }
    op
}

/// The error class of a status (audit `error_class`, metric label).
pub(crate) fn error_class(status: StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        0..=399 => return None,
        403 => "permission_denied",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "too_large",
        429 => "rate_limited",
        503 => "unavailable",
        400..=499 => "bad_request",
        _ => "internal",
    })
}

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default, Clone)]
struct Hist {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Ten-second buckets over five minutes: (bucket start, decrypts, failures).
const WINDOW_BUCKETS: usize = 30;

/// Counters and histograms.
pub(crate) struct Metrics {
    ops: Mutex<HashMap<(String, String), u64>>,
    errors: Mutex<HashMap<&'static str, u64>>,
    latency: Mutex<HashMap<&'static str, Hist>>,
    pub(crate) cert_not_after: AtomicI64,
    pub(crate) webhook_failures: AtomicU64,
    pub(crate) events: Mutex<HashMap<&'static str, u64>>,
    window: Mutex<[(i64, u64, u64); WINDOW_BUCKETS]>,
    last_rate_alert: Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            ops: Mutex::default(),
            errors: Mutex::default(),
            latency: Mutex::default(),
            cert_not_after: AtomicI64::new(0),
            webhook_failures: AtomicU64::new(0),
            events: Mutex::default(),
            window: Mutex::new([(0, 0, 0); WINDOW_BUCKETS]),
            last_rate_alert: Mutex::new(None),
        }
    }
}

fn known(op: &str) -> &'static str {
    KNOWN_OPS
        .iter()
        .find(|k| **k == op)
        .copied()
        .unwrap_or("other")
}

/// Operations counted as cryptographic operations.
fn is_crypto(op: &str) -> bool {
    matches!(
        op,
        "encrypt"
            | "decrypt"
            | "rewrap"
            | "datakey"
            | "hmac"
            | "sign"
            | "verify"
            | "lockbox.encrypt"
            | "lockbox.decrypt"
            | "lockbox.records.encrypt"
            | "lockbox.records.decrypt"
            | "lockbox.records.search"
            | "lockbox.envelope.encrypt"
            | "lockbox.envelope.decrypt"
    )
}

impl Metrics {
    /// Records one finished request. Returns `Some((failures, total))` when
    /// the decryption failure rate just crossed 5% over five minutes (at
    /// least 20 decryptions; at most one alert per five minutes).
    pub(crate) fn observe(
        &self,
        op: &Op,
        status: StatusCode,
        items: u64,
        seconds: f64,
        now: i64,
    ) -> Option<(u64, u64)> {
        let name = known(&op.operation);
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(name).or_default();
            h.count += 1;
            h.sum += seconds;
            for (i, b) in BUCKETS.iter().enumerate() {
                if seconds <= *b {
                    h.counts[i] += 1;
                }
            }
        }
        if let Some(class) = error_class(status) {
            if let Ok(mut e) = self.errors.lock() {
                *e.entry(class).or_default() += 1;
            }
        }
        if is_crypto(name) && status.is_success() {
            if let (Some(k), Ok(mut o)) = (&op.key, self.ops.lock()) {
                *o.entry((name.to_owned(), k.clone())).or_default() += items.max(1);
            }
        }
        let is_decrypt = matches!(
            name,
            "decrypt" | "lockbox.decrypt" | "lockbox.records.decrypt" | "lockbox.envelope.decrypt"
        );
        // Client mistakes that are not decryptions (403, 404...) do not
        // count, nor does anything a request sent before it was authorized
        // (a token with no rights must not be able to raise, or mute, the
        // decryption-failure alert).
        let failed = is_decrypt && status == StatusCode::BAD_REQUEST && op.authorized;
        if !is_decrypt || !(status.is_success() || failed) {
            return None;
        }
        let slot = now.div_euclid(10);
        let (mut total, mut failures) = (0u64, 0u64);
        if let Ok(mut w) = self.window.lock() {
            let i = usize::try_from(slot.rem_euclid(WINDOW_BUCKETS as i64)).unwrap_or(0);
            if w[i].0 != slot {
                w[i] = (slot, 0, 0);
            }
            w[i].1 += 1;
            if failed {
                w[i].2 += 1;
            }
            for (s, t, f) in w.iter() {
                if slot - s < WINDOW_BUCKETS as i64 {
                    total += t;
                    failures += f;
                }
            }
        }
        if failed && total >= 20 && failures * 100 > total * 5 {
            if let Ok(mut last) = self.last_rate_alert.lock() {
                if last.map_or(true, |t| t.elapsed().as_secs() >= 300) {
                    *last = Some(Instant::now());
                    return Some((failures, total));
                }
            }
        }
        None
    }

    pub(crate) fn count_event(&self, kind: &'static str) {
        if let Ok(mut e) = self.events.lock() {
            *e.entry(kind).or_default() += 1;
        }
    }

    /// The Prometheus text exposition.
    pub(crate) async fn render(&self, engine: &Engine, audit_failures: u64) -> String {
        let mut out = String::new();
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        out.push_str("# HELP encryption_operations_total Cryptographic operations (batch items count one each) by type and key.\n# TYPE encryption_operations_total counter\n");
        if let Ok(o) = self.ops.lock() {
            let mut v: Vec<_> = o.iter().collect();
            v.sort();
            for ((t, k), n) in v {
                let _ = writeln!(
                    out,
                    "encryption_operations_total{{type=\"{}\",key=\"{}\"}} {n}",
                    esc(t),
                    esc(k)
                );
            }
        }
        out.push_str("# HELP encryption_errors_total Failed requests by error class.\n# TYPE encryption_errors_total counter\n");
        if let Ok(e) = self.errors.lock() {
            let mut v: Vec<_> = e.iter().collect();
            v.sort();
            for (c, n) in v {
                let _ = writeln!(out, "encryption_errors_total{{error_type=\"{c}\"}} {n}");
            }
        }
        out.push_str("# HELP key_rotation_last_success_timestamp Unix time of the key's last rotation (creation if never rotated).\n# TYPE key_rotation_last_success_timestamp gauge\n");
        let mut versions = String::from("# HELP key_versions_active Key versions that can still decrypt (latest - min_decryption_version + 1).\n# TYPE key_versions_active gauge\n");
        if let Ok(names) = engine.list_keys(false).await {
            for n in names {
                if let Ok(k) = engine.read_key(&n).await {
                    let _ = writeln!(
                        out,
                        "key_rotation_last_success_timestamp{{key=\"{}\"}} {}",
                        esc(&n),
                        k.last_rotated_at
                    );
                    let active = k
                        .latest_version
                        .saturating_sub(k.min_decryption_version.max(1))
                        + 1;
                    let _ = writeln!(
                        versions,
                        "key_versions_active{{key=\"{}\"}} {active}",
                        esc(&n)
                    );
                }
            }
        }
        out.push_str(&versions);
        let na = self.cert_not_after.load(Ordering::Relaxed);
        out.push_str("# HELP certificate_expiry_seconds Seconds until the TLS certificate expires (absent without TLS).\n# TYPE certificate_expiry_seconds gauge\n");
        if na != 0 {
            let _ = writeln!(
                out,
                "certificate_expiry_seconds {}",
                na - lockbox_engine::now()
            );
        }
        out.push_str("# HELP request_duration_seconds Request latency by operation.\n# TYPE request_duration_seconds histogram\n");
        if let Ok(l) = self.latency.lock() {
            let mut v: Vec<_> = l.iter().collect();
            v.sort_by_key(|(k, _)| **k);
            for (op, h) in v {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "request_duration_seconds_bucket{{operation=\"{op}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "request_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "request_duration_seconds_sum{{operation=\"{op}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "request_duration_seconds_count{{operation=\"{op}\"}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP audit_write_failures_total Audit entries that could not be written.\n# TYPE audit_write_failures_total counter\n");
        let _ = writeln!(out, "audit_write_failures_total {audit_failures}");
        out.push_str("# HELP webhook_delivery_failures_total Webhook deliveries given up after retries.\n# TYPE webhook_delivery_failures_total counter\n");
        let _ = writeln!(
            out,
            "webhook_delivery_failures_total {}",
            self.webhook_failures.load(Ordering::Relaxed)
        );
        out.push_str("# HELP lockbox_events_total Events emitted by kind.\n# TYPE lockbox_events_total counter\n");
        if let Ok(e) = self.events.lock() {
            let mut v: Vec<_> = e.iter().collect();
            v.sort();
            for (k, n) in v {
                let _ = writeln!(out, "lockbox_events_total{{event=\"{k}\"}} {n}");
            }
        }
        out
    }
}
