//! `lockbox audit ...` and `lockbox webhook verify`.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::target::Target;
use crate::{block_on, json_line, line, parse_period, target_args, CliError, CliResult, Global};

/// The tamper-evident audit log.
#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify the audit trail: every edit, deletion, insertion, reordering
    /// or truncation is reported with the entry where it is found.
    Verify {
        /// The audit file (its rotated files `FILE.<n>` are read too, oldest first).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Verify the store sink.
        #[arg(long)]
        store_sink: bool,
    },
    /// Query the store sink.
    Query {
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
        /// Only entries at or after this time: Unix seconds, or an age like 1h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Only entries at or before this time (as --since).
        #[arg(long)]
        until: Option<String>,
        /// Only `ok` or `error`.
        #[arg(long)]
        outcome: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// Signed webhook deliveries.
#[derive(Subcommand)]
pub(crate) enum WebhookCommand {
    /// Verify one delivery (body on stdin): signature, freshness, no replay.
    Verify {
        /// File holding the signing secret.
        #[arg(long)]
        secret_file: PathBuf,
        /// The X-Lockbox-Signature header.
        #[arg(long)]
        signature: String,
        /// The X-Lockbox-Timestamp header.
        #[arg(long)]
        timestamp: String,
        /// The X-Lockbox-Delivery header.
        #[arg(long)]
        delivery: String,
        /// Seconds a delivery stays acceptable.
        #[arg(long, default_value_t = 300)]
        tolerance: i64,
        /// File remembering accepted delivery ids (replays are refused).
        #[arg(long)]
        seen_file: Option<PathBuf>,
    },
}

/// Unix seconds from `1767225600` or an age (`1h` = one hour ago).
fn when(s: &str) -> CliResult<i64> {
    if let Ok(v) = s.trim().parse::<i64>() {
        return Ok(v);
    }
    Ok(lockbox_engine::now() - parse_period(s)?)
}

pub(crate) fn audit_cmd(c: AuditCommand, g: &Global) -> CliResult<Vec<u8>> {
    block_on(async {
        let t = Target::open(&target_args(g), true).await?;
        let out = match (c, &t) {
            (AuditCommand::Verify { file, store_sink }, Target::Local(e)) => {
                if file.is_none() && !store_sink {
                    return Err(CliError::new(
                        "say what to verify: --file FILE and/or --store-sink",
                    ));
                }
                let mut report = serde_json::Map::new();
                let mut bad = Vec::new();
                if let Some(f) = &file {
                    match lockbox_server::audit::verify_file_sink(e, f).await {
                        Ok(r) => {
                            report.insert("file".into(), lockbox_server::audit::report_json(&r));
                        }
                        Err(m) => bad.push(m),
                    }
                }
                if store_sink {
                    match lockbox_server::audit::verify_store_sink(e).await {
                        Ok(r) => {
                            report.insert("store".into(), lockbox_server::audit::report_json(&r));
                        }
                        Err(m) => bad.push(m),
                    }
                }
                if !bad.is_empty() {
                    return Err(CliError::new(bad.join("\n")));
                }
                verified(&Value::Object(report), g.json)?
            }
            (AuditCommand::Verify { .. }, Target::Remote { .. }) => {
                let v = t.call("POST", "sys/audit/verify", Some(json!({}))).await?;
                let d = &v["data"];
                if d["ok"] != Value::Bool(true) {
                    let errs: Vec<String> = ["file", "store"]
                        .iter()
                        .filter_map(|s| d[*s]["error"].as_str().map(str::to_owned))
                        .collect();
                    return Err(CliError::new(errs.join("\n")));
                }
                verified(d, g.json)?
            }
            (
                AuditCommand::Query {
                    key,
                    since,
                    until,
                    outcome,
                    limit,
                },
                _,
            ) => {
                let since = since.as_deref().map(when).transpose()?;
                let until = until.as_deref().map(when).transpose()?;
                let entries: Vec<Value> = match &t {
                    Target::Local(e) => e
                        .store()
                        .audit_query(&lockbox_store::AuditFilter {
                            key,
                            since,
                            until,
                            outcome,
                            segment: None,
                            limit,
                        })
                        .await
                        .map_err(|e| CliError::new(e.to_string()))?
                        .iter()
                        .filter_map(|r| serde_json::from_str(&r.entry).ok())
                        .collect(),
                    Target::Remote { .. } => {
                        let v = t
                            .call(
                                "POST",
                                "sys/audit/query",
                                Some(json!({"key": key, "since": since, "until": until,
                                            "outcome": outcome, "limit": limit})),
                            )
                            .await?;
                        v["data"]["entries"].as_array().cloned().unwrap_or_default()
                    }
                };
                let mut out = String::new();
                for e in entries {
                    out.push_str(&e.to_string());
                    out.push('\n');
                }
                out.into_bytes()
            }
        };
        t.finish().await;
        Ok(out)
    })
}

fn verified(report: &Value, as_json: bool) -> CliResult<Vec<u8>> {
    if as_json {
        return json_line(&json!({"ok": true, "report": report}));
    }
    let mut s = String::from("audit trail verified");
    for sink in ["file", "store"] {
        let r = &report[sink];
        if r.is_object() {
            let segs = r["segments"].as_array().map_or(&[][..], Vec::as_slice);
            let entries: u64 = segs.iter().filter_map(|x| x["entries"].as_u64()).sum();
            let segs = segs.len();
            s.push_str(&format!("\n  {sink}: {entries} entries in {segs} segments"));
        }
    }
    Ok(line(s))
}

pub(crate) fn webhook_cmd(c: WebhookCommand) -> CliResult<Vec<u8>> {
    let WebhookCommand::Verify {
        secret_file,
        signature,
        timestamp,
        delivery,
        tolerance,
        seen_file,
    } = c;
    let secret = crate::read_secret_file(&secret_file, "webhook secret")?;
    let body = crate::read_stdin()?;
    let mut v = lockbox_core::webhook::Verifier::new(
        lockbox_core::SecretBytes::from_slice(secret.as_bytes()),
        tolerance,
    );
    if let Some(f) = &seen_file {
        if let Ok(text) = std::fs::read_to_string(f) {
            for l in text.lines() {
                if let Some((id, ts)) = l.split_once(' ') {
                    v.remember(id, ts.parse().unwrap_or(0));
                }
            }
        }
    }
    v.verify(
        &signature,
        &timestamp,
        &delivery,
        &body,
        lockbox_engine::now(),
    )
    .map_err(|e| CliError::new(format!("webhook delivery refused: {e}")))?;
    if let Some(f) = &seen_file {
        let text: String = v
            .seen()
            .iter()
            .map(|(id, ts)| format!("{id} {ts}\n"))
            .collect();
        std::fs::write(f, text)
            .map_err(|e| CliError::new(format!("cannot write {}: {e}", f.display())))?;
    }
    Ok(line("webhook delivery verified".into()))
}

/// TLS endpoints.
#[derive(Subcommand)]
pub(crate) enum TlsCommand {
    /// Connect and report protocol, cipher suite, certificate chain and days to expiry.
    Check {
        /// HOST:PORT.
        addr: String,
        /// PEM CA bundle to verify the chain against (without it the chain is only shown).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Server name to send and verify (default: HOST).
        #[arg(long)]
        server_name: Option<String>,
    },
}

pub(crate) fn tls_cmd(c: TlsCommand, g: &Global) -> CliResult<Vec<u8>> {
    let TlsCommand::Check {
        addr,
        ca_file,
        server_name,
    } = c;
    block_on(async {
        let r = lockbox_server::tls::check(&addr, server_name.as_deref(), ca_file.as_deref())
            .await
            .map_err(CliError::new)?;
        let now = lockbox_engine::now();
        let chain: Vec<Value> = r
            .chain
            .iter()
            .map(|(s, i, na)| {
                json!({
                    "subject": s,
                    "issuer": i,
                    "not_after": na,
                    "days_left": na.map(|n| (n - now).div_euclid(86_400)),
                })
            })
            .collect();
        let verified = match &r.verified {
            None => Value::Null,
            Some(Ok(())) => Value::Bool(true),
            Some(Err(e)) => Value::String(e.clone()),
        };
        let out = if g.json {
            json_line(&json!({
                "protocol": r.protocol, "suite": r.suite, "chain": chain, "verified": verified,
            }))?
        } else {
            let mut s = format!("protocol: {}\nsuite: {}\n", r.protocol, r.suite);
            for (i, c) in chain.iter().enumerate() {
                s.push_str(&format!(
                    "certificate {i}: {}\n  issuer: {}\n  expires in: {} days\n",
                    c["subject"].as_str().unwrap_or("?"),
                    c["issuer"].as_str().unwrap_or("?"),
                    c["days_left"]
                ));
            }
            s.push_str(&match &r.verified {
                None => "chain: not verified (give --ca-file)\n".to_owned(),
                Some(Ok(())) => "chain: verified\n".to_owned(),
                Some(Err(e)) => format!("chain: NOT verified: {e}\n"),
            });
            s.into_bytes()
        };
        if let Some(Err(e)) = &r.verified {
            return Err(CliError::new(format!(
                "the certificate chain does not verify: {e}"
            )));
        }
        Ok(out)
    })
}
