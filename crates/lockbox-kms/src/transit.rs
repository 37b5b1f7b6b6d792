//! Vault Transit (a HashiCorp Vault, or another Lockbox) as KEK provider.
//!
//! The Transit key **must** be created with `derived: true`: the bound
//! encryption context is sent as Transit's `context`, so the remote server
//! derives a KEK per context and refuses to unwrap under another one. New
//! data keys come from `datakey/wrapped/:name` followed by `decrypt/:name`
//! (the two capabilities a Vault policy needs, plus `encrypt/:name` for
//! adding this KEK to an existing data key).

use std::time::Duration;

use lockbox_core::encoding::{b64_decode, b64_encode};
use lockbox_core::envelope::DATA_KEY_LEN;
use lockbox_core::SecretBytes;
use serde_json::{json, Value};

use crate::error::{KmsError, Result};
use crate::retry::{transport, Attempt, RetryPolicy};
use crate::{bound_context, BoxFuture, Context, DataKey, Provider, WrappedKey};

/// Where and how to reach a Transit engine.
#[derive(Clone)]
pub struct VaultTransitConfig {
    /// Server address, `http://127.0.0.1:8200`.
    pub addr: String,
    /// Token sent as `X-Vault-Token`.
    pub token: SecretBytes,
    /// Mount path of the Transit engine (default `transit`).
    pub mount: String,
    /// Key name (a `derived` key).
    pub key: String,
    /// Retries and timeouts.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for VaultTransitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultTransitConfig")
            .field("addr", &self.addr)
            .field("mount", &self.mount)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl VaultTransitConfig {
    /// Key `key` on the `transit` mount at `addr`, default retries.
    #[must_use]
    pub fn new(addr: &str, token: &str, key: &str) -> Self {
        VaultTransitConfig {
            addr: addr.trim_end_matches('/').to_owned(),
            token: SecretBytes::from_slice(token.as_bytes()),
            mount: "transit".into(),
            key: key.to_owned(),
            retry: RetryPolicy::default(),
        }
    }
}

/// A Transit key as KEK.
pub struct VaultTransitProvider {
    cfg: VaultTransitConfig,
    key_id: String,
    http: reqwest::Client,
}

impl VaultTransitProvider {
    /// A provider for `cfg`.
    ///
    /// # Errors
    /// [`KmsError::Config`] for an empty address, key or mount.
    pub fn new(cfg: VaultTransitConfig) -> Result<Self> {
        if cfg.key.is_empty() || cfg.key.contains('/') || cfg.mount.is_empty() {
            return Err(KmsError::Config(
                "Vault Transit needs a mount and a key name without '/'".into(),
            ));
        }
        if !(cfg.addr.starts_with("http://") || cfg.addr.starts_with("https://")) {
            return Err(KmsError::Config(format!(
                "Vault address must be an http(s) URL, got {:?}",
                cfg.addr
            )));
        }
        let http = crate::http::client(cfg.retry.timeout, Duration::from_secs(5))
            .map_err(KmsError::Config)?;
        Ok(VaultTransitProvider {
            key_id: format!("{}/{}", cfg.mount.trim_matches('/'), cfg.key),
            cfg,
            http,
        })
    }

    async fn post(&self, op: &str, body: Value) -> Result<Value> {
        let url = format!(
            "{}/v1/{}/{op}/{}",
            self.cfg.addr,
            self.cfg.mount.trim_matches('/'),
            self.cfg.key
        );
        let token = std::str::from_utf8(self.cfg.token.expose_secret())
            .map_err(|_| KmsError::Config("Vault token is not UTF-8".into()))?;
        let who = self.describe();
        self.cfg
            .retry
            .run(&who, || async {
                let resp = self
                    .http
                    .post(&url)
                    .header("X-Vault-Token", token)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| transport(&e))?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.map_err(|e| transport(&e))?;
                let v: Option<Value> = serde_json::from_slice(&bytes).ok();
                if (200..300).contains(&status) {
                    return v.and_then(|v| v.get("data").cloned()).ok_or_else(|| {
                        Attempt::Fail(KmsError::Protocol {
                            provider: who.clone(),
                            message: format!("{op} answer without data"),
                        })
                    });
                }
                let errors = v
                    .as_ref()
                    .and_then(|v| v.get("errors"))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                if status >= 500 || status == 429 {
                    return Err(Attempt::Retry(format!("HTTP {status} {errors}")));
                }
                if op == "decrypt" && status == 400 && errors.contains("authentication failed") {
                    return Err(Attempt::Fail(KmsError::AuthenticationFailed));
                }
                Err(Attempt::Fail(KmsError::Rejected {
                    provider: who.clone(),
                    status,
                    message: errors,
                }))
            })
            .await
    }

    fn protocol(&self, m: &str) -> KmsError {
        KmsError::Protocol {
            provider: self.describe(),
            message: m.to_owned(),
        }
    }
}

impl Provider for VaultTransitProvider {
    fn provider_id(&self) -> &str {
        "vault-transit"
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn generate_data_key<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<DataKey>> {
        Box::pin(async move {
            let c = b64_encode(&bound_context(ctx)?);
            let d = self
                .post("datakey/wrapped", json!({ "bits": 256, "context": c }))
                .await?;
            let ct = d
                .get("ciphertext")
                .and_then(Value::as_str)
                .ok_or_else(|| self.protocol("datakey answer without ciphertext"))?
                .to_owned();
            let wrapped = WrappedKey {
                provider: self.provider_id().to_owned(),
                key_id: self.key_id.clone(),
                wrapped: ct.into_bytes(),
            };
            let plaintext = self.unwrap(&wrapped, ctx).await?;
            Ok(DataKey { plaintext, wrapped })
        })
    }

    fn wrap<'a>(
        &'a self,
        key: &'a SecretBytes,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<WrappedKey>> {
        Box::pin(async move {
            let c = b64_encode(&bound_context(ctx)?);
            let d = self
                .post(
                    "encrypt",
                    json!({ "plaintext": b64_encode(key.expose_secret()), "context": c }),
                )
                .await?;
            let ct = d
                .get("ciphertext")
                .and_then(Value::as_str)
                .ok_or_else(|| self.protocol("encrypt answer without ciphertext"))?;
            Ok(WrappedKey {
                provider: self.provider_id().to_owned(),
                key_id: self.key_id.clone(),
                wrapped: ct.as_bytes().to_vec(),
            })
        })
    }

    fn unwrap<'a>(
        &'a self,
        w: &'a WrappedKey,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<SecretBytes>> {
        Box::pin(async move {
            let c = b64_encode(&bound_context(ctx)?);
            let ct = std::str::from_utf8(&w.wrapped).map_err(|_| KmsError::AuthenticationFailed)?;
            let d = self
                .post("decrypt", json!({ "ciphertext": ct, "context": c }))
                .await?;
            let pt = d
                .get("plaintext")
                .and_then(Value::as_str)
                .and_then(|s| b64_decode(s).ok())
                .map(SecretBytes::new)
                .ok_or_else(|| self.protocol("decrypt answer without plaintext"))?;
            if pt.len() != DATA_KEY_LEN {
                return Err(KmsError::AuthenticationFailed);
            }
            Ok(pt)
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let url = format!("{}/v1/sys/health", self.cfg.addr);
            let who = self.describe();
            self.cfg
                .retry
                .run(&who, || async {
                    let r = self
                        .http
                        .get(&url)
                        .send()
                        .await
                        .map_err(|e| transport(&e))?;
                    match r.status().as_u16() {
                        200 => Ok(()),
                        s => Err(Attempt::Retry(format!("health answered HTTP {s}"))),
                    }
                })
                .await
        })
    }
}
