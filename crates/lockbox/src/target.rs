//! Where key commands run: a local store (`--store URL`, the engine
//! in-process) or a Lockbox server (`--addr URL` with `LOCKBOX_TOKEN`), with
//! one set of operations and one JSON shape for both.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lockbox_core::rootkey::RootKey;
use lockbox_engine::{
    ConfigUpdate, CreateOptions, Engine, EngineConfig, EngineError, ImportSpec, KeyInfo,
};
use lockbox_store::Store;
use serde_json::{json, Value};

use crate::CliError;

/// A local engine or a remote server.
pub enum Target {
    /// In-process engine over a store.
    Local(Engine),
    /// A server at `addr` with `token`.
    Remote {
        /// Base URL, e.g. `http://127.0.0.1:8200`.
        addr: String,
        /// Token (root token for now).
        token: Option<String>,
        /// HTTP client.
        http: reqwest::Client,
    },
}

impl From<EngineError> for CliError {
    fn from(e: EngineError) -> Self {
        let hint = match &e {
            EngineError::Sealed => Some("unseal first: set LOCKBOX_MASTER_KEY, or give shares (LOCKBOX_UNSEAL_SHARES / `lockbox unseal`)"),
            EngineError::NotInitialized => Some("initialize with `lockbox init` or start with LOCKBOX_MASTER_KEY"),
            EngineError::KeyNotFound(_) => Some("list keys with `lockbox keys list`"),
            _ => None,
        };
        CliError {
            message: e.to_string(),
            hint,
        }
    }
}

/// Where to run, from the global options.
pub struct TargetArgs {
    pub store: Option<String>,
    pub addr: Option<String>,
    pub token: Option<String>,
    pub master_key_file: Option<std::path::PathBuf>,
}

/// Open a local store engine, unsealed if a root key source is configured.
pub async fn open_local(
    url: &str,
    master_key_file: Option<&std::path::Path>,
    unseal: bool,
    cfg: EngineConfig,
) -> Result<Engine, CliError> {
    let store = Store::connect(url)
        .await
        .map_err(|e| CliError::new(format!("cannot open store {}: {e}", redact_url(url))))?;
    let engine = Engine::open(store, cfg).await?;
    if unseal {
        if let Some(root) = root_key_from_env(master_key_file)? {
            engine.unseal_with_master_key(root).await?;
        } else if let Ok(shares) = std::env::var("LOCKBOX_UNSEAL_SHARES") {
            for s in shares.split(',').filter(|s| !s.trim().is_empty()) {
                engine.submit_share(s.trim()).await?;
            }
        }
    }
    Ok(engine)
}

/// The root key from `--master-key-file` or `LOCKBOX_MASTER_KEY`, if given.
pub fn root_key_from_env(file: Option<&std::path::Path>) -> Result<Option<RootKey>, CliError> {
    if let Some(path) = file {
        check_key_file_mode(path)?;
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            CliError::new(format!(
                "cannot read master key file {}: {e}",
                path.display()
            ))
        })?);
        return RootKey::parse_master_key(&text)
            .map(Some)
            .map_err(|e| CliError::new(format!("master key file {}: {e}", path.display())));
    }
    match std::env::var("LOCKBOX_MASTER_KEY") {
        Ok(v) => {
            let v = zeroize::Zeroizing::new(v);
            RootKey::parse_master_key(&v).map(Some).map_err(|e| {
                CliError::new(format!("LOCKBOX_MASTER_KEY: {e}"))
                    .hint("generate one with `lockbox keygen-master`")
            })
        }
        Err(_) => Ok(None),
    }
}

/// A key file must not be readable by group or others.
pub fn check_key_file_mode(path: &std::path::Path) -> Result<(), CliError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| {
            CliError::new(format!(
                "cannot read master key file {}: {e}",
                path.display()
            ))
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CliError::new(format!(
                "master key file {} is readable by others (mode {mode:o})",
                path.display()
            ))
            .hint("chmod 600 the file"));
        }
    }
    Ok(())
}

/// A store URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

fn unb64(s: &str, what: &str) -> Result<Vec<u8>, CliError> {
    B64.decode(s)
        .map_err(|_| CliError::new(format!("server returned invalid base64 for {what}")))
}

/// The JSON shape of a key shown by `keys show` (same locally and remotely).
pub fn key_info_json(k: &KeyInfo) -> Value {
    json!({
        "name": k.name,
        "type": k.key_type,
        "key_id": k.key_id,
        "latest_version": k.latest_version,
        "min_decryption_version": k.min_decryption_version,
        "min_encryption_version": k.min_encryption_version,
        "min_available_version": k.min_available_version,
        "keys": k.versions.iter().map(|(v, c)| (v.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
        "derived": k.derived,
        "convergent_encryption": k.convergent_encryption,
        "exportable": k.exportable,
        "allow_plaintext_backup": k.allow_plaintext_backup,
        "deletion_allowed": k.deletion_allowed,
        "auto_rotate_period": k.auto_rotate_period,
        "last_rotated": k.last_rotated_at,
        "last_used": k.last_used_at,
        "encrypt_count": k.encrypt_ops,
        "decrypt_count": k.decrypt_ops,
        "deleted_at": k.deleted_at,
        "destroyed_at": k.destroyed_at,
        "destroyed_by": k.destroyed_by,
        "supports_encryption": k.supports_encryption,
        "supports_signing": k.supports_signing,
    })
}

impl Target {
    /// Build from options: `--store` wins, then `--addr`.
    pub async fn open(a: &TargetArgs, unseal: bool) -> Result<Target, CliError> {
        if let Some(url) = &a.store {
            return Ok(Target::Local(
                open_local(
                    url,
                    a.master_key_file.as_deref(),
                    unseal,
                    EngineConfig::default(),
                )
                .await?,
            ));
        }
        if let Some(addr) = &a.addr {
            let http = lockbox_kms::http::client(
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs(10),
            )
            .map_err(CliError::new)?;
            return Ok(Target::Remote {
                addr: addr.trim_end_matches('/').to_owned(),
                token: a.token.clone(),
                http,
            });
        }
        Err(CliError::new("no Lockbox to talk to")
            .hint("give --store URL (e.g. sqlite://lockbox.db) for a local store, or --addr URL (or LOCKBOX_ADDR) for a server"))
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let Target::Remote { addr, token, http } = self else {
            return Err(CliError::new("internal: remote call on a local target"));
        };
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| CliError::new("bad method"))?;
        let mut req = http.request(m, format!("{addr}/v1/{path}"));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            CliError::new(format!("cannot reach Lockbox at {addr}: {e}"))
                .hint("is `lockbox serve` running? check --addr / LOCKBOX_ADDR")
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::new(format!("reading response: {e}")))?;
        let v: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|_| CliError::new(format!("server answered {status} with non-JSON")))?
        };
        if !status.is_success() {
            let msg = v["errors"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| status.to_string());
            let hint = match status.as_u16() {
                403 => Some("set LOCKBOX_TOKEN (or --token) to a valid token"),
                503 => Some("the server is sealed: `lockbox unseal`"),
                _ => None,
            };
            return Err(CliError { message: msg, hint });
        }
        Ok(v)
    }

    /// Seal status.
    pub async fn status(&self) -> Result<Value, CliError> {
        match self {
            Target::Local(e) => Ok(serde_json::to_value(e.status().await?).unwrap_or(Value::Null)),
            Target::Remote { .. } => self.call("GET", "sys/seal-status", None).await,
        }
    }

    /// Initialize: shares and root token.
    pub async fn init(&self, shares: u8, threshold: u8) -> Result<(Vec<String>, String), CliError> {
        match self {
            Target::Local(e) => {
                let out = e.init(shares, threshold).await?;
                Ok((out.shares.clone(), out.root_token.clone()))
            }
            Target::Remote { .. } => {
                let v = self
                    .call(
                        "PUT",
                        "sys/init",
                        Some(json!({"secret_shares": shares, "secret_threshold": threshold})),
                    )
                    .await?;
                let keys = v["keys"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                Ok((
                    keys,
                    v["root_token"].as_str().unwrap_or_default().to_owned(),
                ))
            }
        }
    }

    /// Give one share to a server.
    pub async fn unseal(&self, share: Option<&str>, reset: bool) -> Result<Value, CliError> {
        match self {
            Target::Local(_) => Err(CliError::new("unseal applies to a running server (--addr)")
                .hint("for a local store set LOCKBOX_MASTER_KEY or LOCKBOX_UNSEAL_SHARES")),
            Target::Remote { .. } => {
                let body = if reset {
                    json!({"reset": true})
                } else {
                    json!({"key": share.unwrap_or_default()})
                };
                self.call("PUT", "sys/unseal", Some(body)).await
            }
        }
    }

    /// Seal a server.
    pub async fn seal(&self) -> Result<(), CliError> {
        match self {
            Target::Local(e) => Ok(e.seal().await?),
            Target::Remote { .. } => self.call("PUT", "sys/seal", None).await.map(|_| ()),
        }
    }

    /// Create a key.
    pub async fn create(&self, name: &str, opts: &CreateOptions) -> Result<(), CliError> {
        match self {
            Target::Local(e) => e
                .create_key(name, opts)
                .await
                .map(|_| ())
                .map_err(Into::into),
            Target::Remote { .. } => {
                let mut body = json!({
                    "type": opts.key_type.clone().unwrap_or_else(|| "aes256-gcm96".into()),
                    "derived": opts.derived,
                    "convergent_encryption": opts.convergent_encryption,
                    "exportable": opts.exportable,
                    "allow_plaintext_backup": opts.allow_plaintext_backup,
                });
                if let Some(p) = opts.auto_rotate_period {
                    body["auto_rotate_period"] = json!(p);
                }
                self.call("POST", &format!("transit/keys/{name}"), Some(body))
                    .await
                    .map(|_| ())
            }
        }
    }

    /// Key names.
    pub async fn list(&self) -> Result<Vec<String>, CliError> {
        match self {
            Target::Local(e) => Ok(e.list_keys(false).await?),
            Target::Remote { .. } => match self.call("GET", "transit/keys?list=true", None).await {
                Ok(v) => Ok(v["data"]["keys"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()),
                Err(e) if e.message.contains("404") || e.message.is_empty() => Ok(Vec::new()),
                Err(e) => Err(e),
            },
        }
    }

    /// Key metadata.
    pub async fn show(&self, name: &str) -> Result<Value, CliError> {
        match self {
            Target::Local(e) => Ok(key_info_json(&e.read_key(name).await?)),
            Target::Remote { .. } => Ok(self
                .call("GET", &format!("transit/keys/{name}"), None)
                .await?["data"]
                .clone()),
        }
    }

    /// Rotate.
    pub async fn rotate(&self, name: &str) -> Result<(), CliError> {
        match self {
            Target::Local(e) => e.rotate(name).await.map(|_| ()).map_err(Into::into),
            Target::Remote { .. } => self
                .call(
                    "POST",
                    &format!("transit/keys/{name}/rotate"),
                    Some(json!({})),
                )
                .await
                .map(|_| ()),
        }
    }

    /// Configure.
    pub async fn config(
        &self,
        name: &str,
        upd: &ConfigUpdate,
        body: Value,
    ) -> Result<(), CliError> {
        match self {
            Target::Local(e) => e.configure(name, upd).await.map_err(Into::into),
            Target::Remote { .. } => self
                .call("POST", &format!("transit/keys/{name}/config"), Some(body))
                .await
                .map(|_| ()),
        }
    }

    /// Trim.
    pub async fn trim(&self, name: &str, min: u32) -> Result<(), CliError> {
        match self {
            Target::Local(e) => e.trim(name, min).await.map_err(Into::into),
            Target::Remote { .. } => self
                .call(
                    "POST",
                    &format!("transit/keys/{name}/trim"),
                    Some(json!({"min_available_version": min})),
                )
                .await
                .map(|_| ()),
        }
    }

    /// Soft delete.
    pub async fn delete(&self, name: &str) -> Result<(), CliError> {
        match self {
            Target::Local(e) => e.delete(name).await.map_err(Into::into),
            Target::Remote { .. } => self
                .call("DELETE", &format!("transit/keys/{name}"), None)
                .await
                .map(|_| ()),
        }
    }

    /// Undelete.
    pub async fn restore(&self, name: &str) -> Result<(), CliError> {
        match self {
            Target::Local(e) => e.undelete(name).await.map_err(Into::into),
            Target::Remote { .. } => self
                .call(
                    "POST",
                    &format!("lockbox/keys/{name}/restore"),
                    Some(json!({})),
                )
                .await
                .map(|_| ()),
        }
    }

    /// Destroy (crypto-shred).
    pub async fn destroy(&self, name: &str, by: &str) -> Result<(), CliError> {
        match self {
            Target::Local(e) => e.destroy(name, by).await.map_err(Into::into),
            Target::Remote { .. } => self
                .call(
                    "POST",
                    &format!("lockbox/keys/{name}/destroy"),
                    Some(json!({})),
                )
                .await
                .map(|_| ()),
        }
    }

    /// Export.
    pub async fn export(
        &self,
        name: &str,
        kind: &str,
        version: Option<u32>,
    ) -> Result<BTreeMap<String, String>, CliError> {
        match self {
            Target::Local(e) => Ok(e
                .export(name, kind, version)
                .await?
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()),
            Target::Remote { .. } => {
                let path = match version {
                    Some(v) => format!("transit/export/{kind}/{name}/{v}"),
                    None => format!("transit/export/{kind}/{name}"),
                };
                let v = self.call("GET", &path, None).await?;
                Ok(v["data"]["keys"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default())
            }
        }
    }

    /// Backup (encrypted when a passphrase is given).
    pub async fn backup(&self, name: &str, passphrase: Option<&[u8]>) -> Result<String, CliError> {
        match self {
            Target::Local(e) => Ok(e.backup(name, passphrase).await?),
            Target::Remote { .. } => {
                let v = match passphrase {
                    None => {
                        self.call("GET", &format!("transit/backup/{name}"), None)
                            .await?
                    }
                    Some(p) => {
                        self.call(
                            "POST",
                            &format!("lockbox/keys/{name}/backup"),
                            Some(json!({"passphrase": String::from_utf8_lossy(p)})),
                        )
                        .await?
                    }
                };
                Ok(v["data"]["backup"].as_str().unwrap_or_default().to_owned())
            }
        }
    }

    /// Restore a backup.
    pub async fn restore_backup(
        &self,
        blob: &str,
        passphrase: Option<&[u8]>,
        name: Option<&str>,
    ) -> Result<String, CliError> {
        match self {
            Target::Local(e) => Ok(e.restore_backup(blob, passphrase, name, false).await?),
            Target::Remote { .. } => {
                let mut body = json!({"backup": blob});
                if let Some(p) = passphrase {
                    body["passphrase"] = json!(String::from_utf8_lossy(p));
                }
                let path = match name {
                    Some(n) => format!("lockbox/restore/{n}"),
                    None => "lockbox/restore".to_owned(),
                };
                let v = self.call("POST", &path, Some(body)).await?;
                Ok(v["data"]["name"]
                    .as_str()
                    .unwrap_or(name.unwrap_or_default())
                    .to_owned())
            }
        }
    }

    /// Import key material.
    pub async fn import(&self, name: &str, spec: ImportSpec) -> Result<(), CliError> {
        match self {
            Target::Local(e) => e.import(name, spec).await.map_err(Into::into),
            Target::Remote { .. } => {
                let keys: serde_json::Map<String, Value> = spec
                    .versions
                    .iter()
                    .map(|(v, m)| (v.to_string(), json!(b64(m.expose_secret()))))
                    .collect();
                self.call(
                    "POST",
                    &format!("lockbox/keys/{name}/import"),
                    Some(json!({
                        "type": spec.key_type.name(),
                        "keys": keys,
                        "derived": spec.derived,
                        "convergent_encryption": spec.convergent_encryption,
                        "exportable": spec.exportable,
                        "allow_plaintext_backup": spec.allow_plaintext_backup,
                    })),
                )
                .await
                .map(|_| ())
            }
        }
    }

    /// Encrypt (`native`: the `lbx1:` format; otherwise Vault's).
    pub async fn encrypt(
        &self,
        name: &str,
        pt: &[u8],
        ctx: &[u8],
        native: bool,
    ) -> Result<String, CliError> {
        match self {
            Target::Local(e) if native => Ok(e.encrypt_native(name, pt, ctx).await?),
            Target::Local(e) => Ok(e.encrypt(name, pt, ctx, &[], None).await?),
            Target::Remote { .. } => {
                let mut body = json!({"plaintext": b64(pt)});
                if !ctx.is_empty() {
                    body["context"] = json!(b64(ctx));
                }
                let path = if native {
                    format!("lockbox/encrypt/{name}")
                } else {
                    format!("transit/encrypt/{name}")
                };
                let v = self.call("POST", &path, Some(body)).await?;
                Ok(v["data"]["ciphertext"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned())
            }
        }
    }

    /// Decrypt; `name` may be omitted for native ciphertexts.
    pub async fn decrypt(
        &self,
        name: Option<&str>,
        ct: &str,
        ctx: &[u8],
    ) -> Result<Vec<u8>, CliError> {
        let native = ct.starts_with(lockbox_core::native::TEXT_PREFIX);
        match self {
            Target::Local(e) => match name {
                Some(n) => Ok(e.decrypt(n, ct, ctx, &[]).await?),
                None if native => Ok(e.decrypt_native(ct, ctx).await?.1),
                None => Err(CliError::new("--key NAME is needed for this ciphertext (only lbx1: ciphertexts name their key)")),
            },
            Target::Remote { .. } => {
                let mut body = json!({"ciphertext": ct});
                if !ctx.is_empty() {
                    body["context"] = json!(b64(ctx));
                }
                let path = match (name, native) {
                    (_, true) => "lockbox/decrypt".to_owned(),
                    (Some(n), false) => format!("transit/decrypt/{n}"),
                    (None, false) => return Err(CliError::new("--key NAME is needed for this ciphertext (only lbx1: ciphertexts name their key)")),
                };
                let v = self.call("POST", &path, Some(body)).await?;
                unb64(v["data"]["plaintext"].as_str().unwrap_or_default(), "plaintext")
            }
        }
    }

    /// Rewrap under the latest version.
    pub async fn rewrap(&self, name: &str, ct: &str, ctx: &[u8]) -> Result<String, CliError> {
        match self {
            Target::Local(e) => Ok(e.rewrap(name, ct, ctx, &[], None).await?),
            Target::Remote { .. } => {
                if ct.starts_with(lockbox_core::native::TEXT_PREFIX) {
                    let pt = zeroize::Zeroizing::new(self.decrypt(Some(name), ct, ctx).await?);
                    return self.encrypt(name, &pt, ctx, true).await;
                }
                let mut body = json!({"ciphertext": ct});
                if !ctx.is_empty() {
                    body["context"] = json!(b64(ctx));
                }
                let v = self
                    .call("POST", &format!("transit/rewrap/{name}"), Some(body))
                    .await?;
                Ok(v["data"]["ciphertext"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned())
            }
        }
    }

    /// Flush usage counters before a local process exits.
    pub async fn finish(&self) {
        if let Target::Local(e) = self {
            let _ = e.flush_usage().await;
        }
    }
}
