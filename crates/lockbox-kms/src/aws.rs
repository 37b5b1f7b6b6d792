//! AWS KMS over its JSON protocol (`TrentService.*`), signed with SigV4.
//!
//! Four calls are used: `GenerateDataKey`, `Encrypt`, `Decrypt` and
//! `ReEncrypt` (plus `DescribeKey` for health). The encryption context is
//! sent as KMS's `EncryptionContext`, so KMS itself refuses to unwrap a data
//! key under another context (and records the context in CloudTrail).
//!
//! Why `aws-sigv4` and not the AWS SDK: the SDK for KMS brings aws-config,
//! the smithy runtime, its own HTTP client stack and a generated client for
//! ~50 operations; Lockbox needs five JSON calls, already has an HTTP client
//! (reqwest), and the hard part — request signing — is exactly what the
//! official `aws-sigv4` crate (the SDK's own signer) provides.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use lockbox_core::encoding::{b64_decode, b64_encode};
use lockbox_core::envelope::DATA_KEY_LEN;
use lockbox_core::SecretBytes;
use serde_json::{json, Map, Value};

use crate::error::{KmsError, Result};
use crate::retry::{transport, Attempt, RetryPolicy};
use crate::{BoxFuture, Context, DataKey, Provider, WrappedKey};

/// AWS credentials (access key, secret key, optional session token).
#[derive(Clone)]
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: SecretBytes,
    session_token: Option<SecretBytes>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// Explicit credentials.
    #[must_use]
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> Self {
        AwsCredentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: SecretBytes::from_slice(secret_access_key.as_bytes()),
            session_token: session_token.map(|t| SecretBytes::from_slice(t.as_bytes())),
        }
    }

    /// The standard chain, as the AWS CLI and SDKs read it: the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
    /// then the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, by
    /// default `~/.aws/credentials`) for the profile `AWS_PROFILE` (default
    /// `default`). Instance metadata and SSO are not read.
    ///
    /// # Errors
    /// [`KmsError::Config`] when neither has credentials.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            return Ok(AwsCredentials::new(
                &id,
                &secret,
                var("AWS_SESSION_TOKEN").as_deref(),
            ));
        }
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let path = var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
        if let Some(path) = path {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let sec = ini_section(&text, &profile);
                if let (Some(id), Some(secret)) = (
                    sec.iter().find(|(k, _)| k == "aws_access_key_id"),
                    sec.iter().find(|(k, _)| k == "aws_secret_access_key"),
                ) {
                    let token = sec.iter().find(|(k, _)| k == "aws_session_token");
                    return Ok(AwsCredentials::new(
                        &id.1,
                        &secret.1,
                        token.map(|t| t.1.as_str()),
                    ));
                }
            }
        }
        Err(KmsError::Config(format!(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add \
             profile [{profile}] to the shared credentials file"
        )))
    }
}

/// `key = value` pairs of section `[name]` (or `[profile name]`) of an INI file.
fn ini_section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(h) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let h = h.trim();
            inside = h == name || h.strip_prefix("profile ").map(str::trim) == Some(name);
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    out
}

/// Where and how to reach AWS KMS.
#[derive(Clone, Debug)]
pub struct AwsKmsConfig {
    /// The KMS key: key id, key ARN, alias name (`alias/x`) or alias ARN.
    pub key_id: String,
    /// Region (`us-east-1`).
    pub region: String,
    /// Endpoint override (a VPC endpoint, LocalStack, moto); default
    /// `https://kms.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Credentials.
    pub credentials: AwsCredentials,
    /// Retries and timeouts.
    pub retry: RetryPolicy,
}

impl AwsKmsConfig {
    /// `key_id` with region, endpoint and credentials from the standard
    /// environment: `AWS_REGION` or `AWS_DEFAULT_REGION` (else the profile's
    /// `region` in `AWS_CONFIG_FILE` / `~/.aws/config`), `AWS_ENDPOINT_URL_KMS`
    /// or `AWS_ENDPOINT_URL`, and [`AwsCredentials::from_env`].
    ///
    /// # Errors
    /// [`KmsError::Config`] without a region or credentials.
    pub fn from_env(key_id: &str) -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| {
                let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
                let path = var("AWS_CONFIG_FILE")
                    .map(PathBuf::from)
                    .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".aws/config")))?;
                let text = std::fs::read_to_string(path).ok()?;
                ini_section(&text, &profile)
                    .into_iter()
                    .find(|(k, _)| k == "region")
                    .map(|(_, v)| v)
            })
            .ok_or_else(|| {
                KmsError::Config("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION)".into())
            })?;
        Ok(AwsKmsConfig {
            key_id: key_id.to_owned(),
            region,
            endpoint: var("AWS_ENDPOINT_URL_KMS").or_else(|| var("AWS_ENDPOINT_URL")),
            credentials: AwsCredentials::from_env()?,
            retry: RetryPolicy::default(),
        })
    }
}

/// An AWS KMS key as KEK.
pub struct AwsKmsProvider {
    cfg: AwsKmsConfig,
    endpoint: String,
    http: reqwest::Client,
}

impl AwsKmsProvider {
    /// A provider for `cfg`.
    ///
    /// # Errors
    /// [`KmsError::Config`] for an empty key id or region, or a bad endpoint.
    pub fn new(cfg: AwsKmsConfig) -> Result<Self> {
        if cfg.key_id.is_empty() || cfg.region.is_empty() {
            return Err(KmsError::Config(
                "AWS KMS needs a key id and a region".into(),
            ));
        }
        let endpoint = cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://kms.{}.amazonaws.com", cfg.region));
        let endpoint = endpoint.trim_end_matches('/').to_owned() + "/";
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(KmsError::Config(format!(
                "AWS KMS endpoint must be an http(s) URL, got {endpoint:?}"
            )));
        }
        let http = crate::http::client(cfg.retry.timeout, Duration::from_secs(5))
            .map_err(KmsError::Config)?;
        Ok(AwsKmsProvider {
            cfg,
            endpoint,
            http,
        })
    }

    fn sign_headers(&self, target: &str, body: &[u8]) -> Result<Vec<(String, String)>> {
        let c = &self.cfg.credentials;
        let secret = std::str::from_utf8(c.secret_access_key.expose_secret())
            .map_err(|_| KmsError::Config("AWS secret access key is not UTF-8".into()))?;
        let token = match &c.session_token {
            Some(t) => Some(
                std::str::from_utf8(t.expose_secret())
                    .map_err(|_| KmsError::Config("AWS session token is not UTF-8".into()))?
                    .to_owned(),
            ),
            None => None,
        };
        let identity = aws_credential_types::Credentials::new(
            c.access_key_id.clone(),
            secret.to_owned(),
            token,
            None,
            "lockbox",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.cfg.region)
            .name("kms")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| KmsError::Config(format!("SigV4 parameters: {e}")))?
            .into();
        let target = format!("TrentService.{target}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let req = SignableRequest::new(
            "POST",
            &self.endpoint,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| KmsError::Config(format!("SigV4 request: {e}")))?;
        let (instructions, _sig) = sign(req, &params)
            .map_err(|e| KmsError::Config(format!("SigV4 signing: {e}")))?
            .into_parts();
        let mut out: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (k, v) in instructions.headers() {
            out.push((k.to_owned(), v.to_owned()));
        }
        Ok(out)
    }

    /// One KMS call with retries.
    async fn call(&self, target: &str, body: Value) -> Result<Map<String, Value>> {
        let body = serde_json::to_vec(&body)
            .map_err(|e| KmsError::Config(format!("request encoding: {e}")))?;
        let who = self.describe();
        self.cfg
            .retry
            .run(&who, || async {
                // Signed per attempt: the signature carries the time.
                let headers = self.sign_headers(target, &body).map_err(Attempt::Fail)?;
                let mut rb = self.http.post(&self.endpoint).body(body.clone());
                for (k, v) in &headers {
                    rb = rb.header(k.as_str(), v.as_str());
                }
                let resp = rb.send().await.map_err(|e| transport(&e))?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.map_err(|e| transport(&e))?;
                let v: Option<Value> = serde_json::from_slice(&bytes).ok();
                if (200..300).contains(&status) {
                    return match v {
                        Some(Value::Object(m)) => Ok(m),
                        _ => Err(Attempt::Fail(KmsError::Protocol {
                            provider: who.clone(),
                            message: format!("{target} answer is not a JSON object"),
                        })),
                    };
                }
                let kind = v
                    .as_ref()
                    .and_then(|v| v.get("__type"))
                    .and_then(Value::as_str)
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
                    .unwrap_or_default();
                let msg = v
                    .as_ref()
                    .and_then(|v| v.get("message").or_else(|| v.get("Message")))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if status >= 500
                    || status == 429
                    || matches!(
                        kind.as_str(),
                        "ThrottlingException"
                            | "KMSInternalException"
                            | "DependencyTimeoutException"
                    )
                {
                    return Err(Attempt::Retry(format!("HTTP {status} {kind} {msg}")));
                }
                if matches!(
                    kind.as_str(),
                    "InvalidCiphertextException" | "IncorrectKeyException"
                ) {
                    return Err(Attempt::Fail(KmsError::AuthenticationFailed));
                }
                Err(Attempt::Fail(KmsError::Rejected {
                    provider: who.clone(),
                    status,
                    message: format!("{kind}: {msg}"),
                }))
            })
            .await
    }

    fn field_b64(&self, m: &Map<String, Value>, name: &str) -> Result<Vec<u8>> {
        m.get(name)
            .and_then(Value::as_str)
            .and_then(|s| b64_decode(s).ok())
            .ok_or_else(|| KmsError::Protocol {
                provider: self.describe(),
                message: format!("missing or invalid {name}"),
            })
    }

    /// The wrapped key in a KMS answer: its `CiphertextBlob`, under the
    /// answer's `KeyId` (an ARN), or `key_id` if it names none.
    fn wrapped_key(&self, m: &Map<String, Value>, key_id: &str) -> Result<WrappedKey> {
        Ok(WrappedKey {
            provider: self.provider_id().to_owned(),
            key_id: m
                .get("KeyId")
                .and_then(Value::as_str)
                .unwrap_or(key_id)
                .to_owned(),
            wrapped: self.field_b64(m, "CiphertextBlob")?,
        })
    }

    /// Re-encrypt a wrapped data key under `destination_key_id` inside KMS
    /// (the plaintext never leaves KMS), keeping the context.
    ///
    /// # Errors
    /// As the other calls.
    pub async fn re_encrypt(
        &self,
        w: &WrappedKey,
        ctx: &Context,
        destination_key_id: &str,
    ) -> Result<WrappedKey> {
        let mut body = json!({
            "CiphertextBlob": b64_encode(&w.wrapped),
            "SourceKeyId": w.key_id,
            "DestinationKeyId": destination_key_id,
        });
        if !ctx.is_empty() {
            body["SourceEncryptionContext"] = json!(ctx);
            body["DestinationEncryptionContext"] = json!(ctx);
        }
        let m = self.call("ReEncrypt", body).await?;
        self.wrapped_key(&m, destination_key_id)
    }

    fn with_context(mut body: Value, ctx: &Context) -> Value {
        if !ctx.is_empty() {
            body["EncryptionContext"] = json!(ctx);
        }
        body
    }
}

impl Provider for AwsKmsProvider {
    fn provider_id(&self) -> &str {
        "aws-kms"
    }

    fn key_id(&self) -> &str {
        &self.cfg.key_id
    }

    /// A wrapped key records the key ARN KMS answered with; the configured
    /// id may be that ARN, the bare key id, or an alias (which KMS resolves).
    fn can_unwrap(&self, w: &WrappedKey) -> bool {
        w.provider == "aws-kms"
            && (w.key_id == self.cfg.key_id
                || w.key_id.ends_with(&format!("/{}", self.cfg.key_id))
                || self.cfg.key_id.starts_with("alias/")
                || self.cfg.key_id.contains(":alias/"))
    }

    fn generate_data_key<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<DataKey>> {
        Box::pin(async move {
            let body = Self::with_context(
                json!({ "KeyId": self.cfg.key_id, "KeySpec": "AES_256" }),
                ctx,
            );
            let m = self.call("GenerateDataKey", body).await?;
            let plaintext = SecretBytes::new(self.field_b64(&m, "Plaintext")?);
            if plaintext.len() != DATA_KEY_LEN {
                return Err(KmsError::Protocol {
                    provider: self.describe(),
                    message: "data key is not 32 bytes".into(),
                });
            }
            Ok(DataKey {
                plaintext,
                wrapped: self.wrapped_key(&m, &self.cfg.key_id)?,
            })
        })
    }

    fn wrap<'a>(
        &'a self,
        key: &'a SecretBytes,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<WrappedKey>> {
        Box::pin(async move {
            let body = Self::with_context(
                json!({ "KeyId": self.cfg.key_id, "Plaintext": b64_encode(key.expose_secret()) }),
                ctx,
            );
            let m = self.call("Encrypt", body).await?;
            self.wrapped_key(&m, &self.cfg.key_id)
        })
    }

    fn unwrap<'a>(
        &'a self,
        w: &'a WrappedKey,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<SecretBytes>> {
        Box::pin(async move {
            // KeyId pins the configured key (id, ARN or alias): KMS refuses
            // a blob made by any other key, whatever the envelope claims.
            let body = Self::with_context(
                json!({ "CiphertextBlob": b64_encode(&w.wrapped), "KeyId": self.cfg.key_id }),
                ctx,
            );
            let m = self.call("Decrypt", body).await?;
            let pt = SecretBytes::new(self.field_b64(&m, "Plaintext")?);
            if pt.len() != DATA_KEY_LEN {
                return Err(KmsError::AuthenticationFailed);
            }
            Ok(pt)
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let m = self
                .call("DescribeKey", json!({ "KeyId": self.cfg.key_id }))
                .await?;
            let meta = m.get("KeyMetadata").ok_or_else(|| KmsError::Protocol {
                provider: self.describe(),
                message: "DescribeKey answer without KeyMetadata".into(),
            })?;
            if meta.get("Enabled").and_then(Value::as_bool) == Some(false) {
                return Err(KmsError::Rejected {
                    provider: self.describe(),
                    status: 400,
                    message: "the KMS key is disabled".into(),
                });
            }
            Ok(())
        })
    }
}
