//! `lockbox envelope encrypt|decrypt`: envelope encryption (`lbxe1:`) from
//! the command line, on a local store (`--store`), a server (`--addr`), or
//! straight against AWS KMS (`--aws-kms-key`, no store needed).

use std::sync::Arc;

use clap::{Args, Subcommand};
use lockbox_kms::{AwsKmsConfig, AwsKmsProvider, Context, Envelope, Provider, Tenants};
use serde_json::json;

use crate::target::Target;
use crate::{
    block_on, json_line, line, read_stdin, read_token, target_args, CliError, CliResult, Global,
};

#[derive(Subcommand)]
pub(crate) enum EnvelopeCommand {
    /// Encrypt stdin to an `lbxe1:` envelope (one line on stdout).
    Encrypt(EnvelopeArgs),
    /// Decrypt an `lbxe1:` envelope from stdin; writes exactly the plaintext.
    Decrypt(EnvelopeArgs),
}

#[derive(Args)]
pub(crate) struct EnvelopeArgs {
    /// Lockbox key that wraps the data key (with --store or --addr).
    #[arg(long, conflicts_with = "tenant")]
    key: Option<String>,
    /// Tenant whose key (`tenant-<id>`, created on first use) wraps the data key.
    #[arg(long)]
    tenant: Option<String>,
    /// AWS KMS key (id, ARN or alias) that also (or alone) wraps the data key;
    /// region, endpoint and credentials come from the standard AWS environment.
    #[arg(long)]
    aws_kms_key: Option<String>,
    /// Encryption context pair KEY=VALUE (repeatable). On decrypt, if given,
    /// it must equal the context stored in the envelope.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
}

fn parse_context(pairs: &[String]) -> CliResult<Option<Context>> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut c = Context::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::new(format!("invalid --context {p:?}: expected KEY=VALUE")))?;
        if k.is_empty() {
            return Err(CliError::new(format!("invalid --context {p:?}: empty key")));
        }
        if c.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(CliError::new(format!("--context key {k:?} given twice")));
        }
    }
    Ok(Some(c))
}

impl From<lockbox_kms::KmsError> for CliError {
    fn from(e: lockbox_kms::KmsError) -> Self {
        let hint = match &e {
            lockbox_kms::KmsError::AuthenticationFailed => {
                Some("wrong key or tenant, wrong --context, or the envelope was modified")
            }
            lockbox_kms::KmsError::NoProvider { .. } => {
                Some("give the key that wrapped it (--key, --tenant or --aws-kms-key)")
            }
            lockbox_kms::KmsError::Unavailable { .. } => {
                Some("check the provider's address and the network; calls were retried")
            }
            _ => None,
        };
        CliError {
            message: e.to_string(),
            hint,
        }
    }
}

pub(crate) fn run(cmd: EnvelopeCommand, g: &Global) -> CliResult<Vec<u8>> {
    block_on(async move {
        let (encrypt, a) = match cmd {
            EnvelopeCommand::Encrypt(a) => (true, a),
            EnvelopeCommand::Decrypt(a) => (false, a),
        };
        let ctx = parse_context(&a.context)?;
        if a.key.is_none() && a.tenant.is_none() && a.aws_kms_key.is_none() {
            return Err(CliError::new("say which key wraps the data key").hint(
                "give --key NAME or --tenant ID (with --store or --addr), or --aws-kms-key ID",
            ));
        }
        let input = if encrypt {
            zeroize::Zeroizing::new(read_stdin()?)
        } else {
            zeroize::Zeroizing::new(read_token()?.into_bytes())
        };
        // A server does the whole operation (its keys never leave it).
        if g.store.is_none() && g.addr.is_some() && (a.key.is_some() || a.tenant.is_some()) {
            if a.aws_kms_key.is_some() {
                return Err(CliError::new(
                    "--aws-kms-key is used locally, not with --addr",
                ));
            }
            return remote(g, &a, encrypt, &input, ctx).await;
        }
        let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
        let mut target = None;
        if a.key.is_some() || a.tenant.is_some() {
            let t = Target::open(&target_args(g), true).await?;
            let Target::Local(engine) = &t else {
                return Err(CliError::new("internal: expected a local store"));
            };
            let name = match (&a.key, &a.tenant) {
                (Some(k), _) => k.clone(),
                (None, Some(tid)) => {
                    lockbox_kms::check_tenant(tid)?;
                    let n = Tenants::key_name(tid);
                    if encrypt {
                        engine
                            .create_key(&n, &lockbox_engine::CreateOptions::default())
                            .await?;
                    }
                    n
                }
                (None, None) => String::new(),
            };
            providers.push(Arc::new(lockbox_kms::LocalProvider::new(
                engine.clone(),
                &name,
            )));
            target = Some(t);
        }
        if let Some(k) = &a.aws_kms_key {
            providers.push(Arc::new(AwsKmsProvider::new(AwsKmsConfig::from_env(k)?)?));
        }
        let env = Envelope::new(providers)?;
        let tenant_ctx = |c: Option<Context>| -> CliResult<Option<Context>> {
            match &a.tenant {
                None => Ok(c),
                Some(t) => {
                    let mut c = c.unwrap_or_default();
                    if c.contains_key(lockbox_kms::TENANT_CONTEXT_KEY) {
                        return Err(CliError::new("the context key lockbox:tenant is reserved"));
                    }
                    c.insert(lockbox_kms::TENANT_CONTEXT_KEY.to_owned(), t.clone());
                    Ok(Some(c))
                }
            }
        };
        let out = if encrypt {
            let c = tenant_ctx(ctx)?.unwrap_or_default();
            let ct = env.encrypt("", &c, &input).await?;
            if g.json {
                json_line(&json!({ "ciphertext": ct }))?
            } else {
                line(ct)
            }
        } else {
            let expected = if ctx.is_some() {
                tenant_ctx(ctx)?
            } else {
                None
            };
            let text = std::str::from_utf8(&input)
                .map_err(|_| CliError::new("stdin is not an envelope"))?;
            let (pt, stored) = env.decrypt("", text, expected.as_ref()).await?;
            if let Some(t) = &a.tenant {
                if stored.get(lockbox_kms::TENANT_CONTEXT_KEY) != Some(t) {
                    return Err(lockbox_kms::KmsError::AuthenticationFailed.into());
                }
            }
            if g.json {
                json_line(&json!({
                    "plaintext": lockbox::encoding::b64_encode(&pt),
                    "context": stored,
                }))?
            } else {
                pt
            }
        };
        if let Some(t) = target {
            t.finish().await;
        }
        Ok(out)
    })
}

async fn remote(
    g: &Global,
    a: &EnvelopeArgs,
    encrypt: bool,
    input: &[u8],
    ctx: Option<Context>,
) -> CliResult<Vec<u8>> {
    let t = Target::open(&target_args(g), true).await?;
    let mut body = json!({});
    if let Some(k) = &a.key {
        body["key"] = json!(k);
    }
    if let Some(tid) = &a.tenant {
        body["tenant"] = json!(tid);
    }
    if let Some(c) = ctx {
        body["context"] = json!(c);
    }
    if encrypt {
        body["plaintext"] = json!(lockbox::encoding::b64_encode(input));
        let v = t
            .call("POST", "lockbox/envelope/encrypt", Some(body))
            .await?;
        let ct = v["data"]["ciphertext"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if g.json {
            return json_line(&json!({ "ciphertext": ct }));
        }
        return Ok(line(ct));
    }
    body["ciphertext"] = json!(String::from_utf8_lossy(input));
    let v = t
        .call("POST", "lockbox/envelope/decrypt", Some(body))
        .await?;
    let d = &v["data"];
    if g.json {
        return json_line(&json!({ "plaintext": d["plaintext"], "context": d["context"] }));
    }
    lockbox::encoding::b64_decode(d["plaintext"].as_str().unwrap_or_default())
        .map_err(|_| CliError::new("server returned invalid base64 for plaintext"))
}
