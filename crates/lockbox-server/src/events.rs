//! Events: written to the audit log and delivered to a webhook.
//!
//! Kinds: `KEY_ROTATION`, `KEY_ROTATION_FAILED`, `KEY_DEPRECATED`,
//! `KEY_DELETED`, `KEY_DESTROYED` (from the engine, including the rotation
//! scheduler), `REENCRYPTION_STARTED` / `REENCRYPTION_COMPLETED` (posted by
//! re-encryption jobs to `sys/events`), `DECRYPTION_FAILURE_RATE_HIGH`
//! (more than 5% of decryptions failed over five minutes) and
//! `CERTIFICATE_EXPIRING` (the TLS certificate expires within 30 days).
//!
//! Webhook deliveries are signed ([`lockbox_core::webhook`]), queued in a
//! bounded queue and retried with exponential backoff and jitter; a delivery
//! that still fails is dropped and counted
//! (`webhook_delivery_failures_total`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lockbox_core::SecretBytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::audit::Auditor;
use crate::metrics::Metrics;

/// Where events are delivered besides the audit log.
#[derive(Clone)]
pub struct WebhookConfig {
    /// `http://` URL receiving POSTed JSON events.
    pub url: String,
    /// The signing secret.
    pub secret: SecretBytes,
    /// Attempts per delivery (at least 1).
    pub attempts: u32,
    /// First retry delay; doubled each time, plus up to as much jitter.
    pub backoff: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The event sink of a server.
pub(crate) struct Events {
    audit: Option<Arc<Auditor>>,
    hook: Option<mpsc::Sender<Value>>,
    metrics: Arc<Metrics>,
}

impl Events {
    pub(crate) fn start(
        audit: Option<Arc<Auditor>>,
        webhook: Option<WebhookConfig>,
        metrics: Arc<Metrics>,
    ) -> Arc<Events> {
        let hook = webhook.map(|cfg| {
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(deliver(cfg, rx, metrics.clone()));
            tx
        });
        Arc::new(Events {
            audit,
            hook,
            metrics,
        })
    }

    /// Emits an event (`data` is a JSON object of details; never secrets).
    pub(crate) async fn emit(&self, kind: &'static str, data: Value) {
        self.metrics.count_event(kind);
        let time = lockbox_engine::now();
        let mut entry = match data {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if let Some(a) = &self.audit {
            let mut e = entry.clone();
            e.insert("type".into(), Value::from("event"));
            e.insert("event".into(), Value::from(kind));
            e.insert("time".into(), Value::from(time));
            a.record(e).await;
        }
        if let Some(tx) = &self.hook {
            let mut id = [0u8; 12];
            let _ = lockbox_core::fill_random(&mut id);
            entry.insert("event".into(), Value::from(kind));
            entry.insert("time".into(), Value::from(time));
            let delivery = json!({
                "id": lockbox_core::encoding::b64url_encode(&id),
                "body": Value::Object(entry),
            });
            if tx.try_send(delivery).is_err() {
                self.metrics
                    .webhook_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn deliver(cfg: WebhookConfig, mut rx: mpsc::Receiver<Value>, metrics: Arc<Metrics>) {
    let http = match lockbox_kms::http::client(Duration::from_secs(10), Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockbox: webhook client: {e}");
            return;
        }
    };
    while let Some(d) = rx.recv().await {
        let id = d["id"].as_str().unwrap_or_default().to_owned();
        let body = d["body"].to_string();
        let mut delay = cfg.backoff;
        let mut delivered = false;
        for attempt in 0..cfg.attempts.max(1) {
            if attempt > 0 {
                // Exponential backoff with full jitter on top.
                let jitter = lockbox_core::random_u32().unwrap_or(0);
                let extra = delay.mul_f64(f64::from(jitter) / f64::from(u32::MAX));
                tokio::time::sleep(delay + extra).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            let ts = lockbox_engine::now();
            let sig =
                lockbox_core::webhook::sign(cfg.secret.expose_secret(), ts, &id, body.as_bytes());
            let res = http
                .post(&cfg.url)
                .header("content-type", "application/json")
                .header("x-lockbox-delivery", &id)
                .header("x-lockbox-timestamp", ts.to_string())
                .header("x-lockbox-signature", sig)
                .body(body.clone())
                .send()
                .await;
            if matches!(&res, Ok(r) if r.status().is_success()) {
                delivered = true;
                break;
            }
        }
        if !delivered {
            metrics.webhook_failures.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "lockbox: webhook delivery {id} failed after {} attempts",
                cfg.attempts
            );
        }
    }
}
