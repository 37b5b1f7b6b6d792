//! Envelope encryption (`/v1/lockbox/envelope/...`): a fresh data key per
//! message, wrapped by a named Lockbox key or by a tenant's key
//! (`tenant-<id>`, created on first use), the encryption context (a JSON
//! object of strings) authenticated and recorded in the `lbxe1:` header.
//!
//! - `POST encrypt`: `{"key"|"tenant", "plaintext": b64, "context": {..}}` →
//!   `{"ciphertext": "lbxe1:..."}`
//! - `POST decrypt`: `{"key"|"tenant", "ciphertext", "context"?}` →
//!   `{"plaintext": b64, "context": {..}}`; with `context`, it must equal
//!   the stored one; with `tenant`, the envelope must be that tenant's.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use lockbox_core::encoding::b64_encode;
use lockbox_kms::{Context, Envelope, KmsError, LocalProvider, Provider, Tenants};
use serde_json::{json, Value};

use crate::{b64_field, ok, ApiError, ApiResult, AppState, Req};

fn kms_error(e: KmsError) -> ApiError {
    match e {
        KmsError::Engine(e) => ApiError::from_engine(e),
        KmsError::Unavailable { .. } => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
        other => ApiError::bad(other.to_string()),
    }
}

fn context(r: &Req) -> Result<Option<Context>, ApiError> {
    match r.body.get("context") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) if !k.is_empty() => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::bad(
                    "context must be an object of non-empty keys to string values",
                )),
            })
            .collect::<Result<Context, _>>()
            .map(Some),
        Some(_) => Err(ApiError::bad(
            "context must be an object of non-empty keys to string values",
        )),
    }
}

/// Who wraps: a named key, or a tenant's key.
enum Owner {
    Key(String),
    Tenant(String),
}

fn owner(r: &Req) -> Result<Owner, ApiError> {
    match (r.str_field("key")?, r.str_field("tenant")?) {
        (Some(k), None) if !k.is_empty() => Ok(Owner::Key(k)),
        (None, Some(t)) => {
            lockbox_kms::check_tenant(&t).map_err(kms_error)?;
            Ok(Owner::Tenant(t))
        }
        _ => Err(ApiError::bad("give exactly one of 'key' or 'tenant'")),
    }
}

fn with_tenant(tenant: &str, ctx: Option<Context>) -> Result<Context, ApiError> {
    let mut c = ctx.unwrap_or_default();
    if c.contains_key(lockbox_kms::TENANT_CONTEXT_KEY) {
        return Err(ApiError::bad(format!(
            "the context key {} is reserved",
            lockbox_kms::TENANT_CONTEXT_KEY
        )));
    }
    c.insert(
        lockbox_kms::TENANT_CONTEXT_KEY.to_owned(),
        tenant.to_owned(),
    );
    Ok(c)
}

fn envelope(st: &AppState, key: &str) -> Result<Envelope, ApiError> {
    let p: Arc<dyn Provider> = Arc::new(LocalProvider::new(st.engine.clone(), key));
    Envelope::new(vec![p]).map_err(kms_error)
}

/// `/v1/lockbox/envelope/<rest>`.
pub(crate) async fn dispatch(st: &AppState, r: &Req, rest: &[&str]) -> ApiResult {
    if !matches!(r.method, Method::POST | Method::PUT) {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        ));
    }
    match rest {
        ["encrypt"] => {
            let pt = b64_field(&r.body, "plaintext")?
                .ok_or_else(|| ApiError::bad("missing plaintext (base64)"))?;
            let pt = zeroize::Zeroizing::new(pt);
            let ctx = context(r)?;
            let ct = match owner(r)? {
                Owner::Key(k) => envelope(st, &k)?
                    .encrypt("", &ctx.unwrap_or_default(), &pt)
                    .await
                    .map_err(kms_error)?,
                Owner::Tenant(t) => {
                    let ctx = ctx.unwrap_or_default();
                    Tenants::new(st.engine.clone(), None)
                        .encrypt(&t, &ctx, &pt)
                        .await
                        .map_err(kms_error)?
                }
            };
            ok(json!({ "ciphertext": ct }))
        }
        ["decrypt"] => {
            let ct = r
                .str_field("ciphertext")?
                .ok_or_else(|| ApiError::bad("missing ciphertext"))?;
            let given = context(r)?;
            let (key, expected, tenant) = match owner(r)? {
                Owner::Key(k) => (k, given, None),
                Owner::Tenant(t) => {
                    let expected = match given {
                        Some(c) => Some(with_tenant(&t, Some(c))?),
                        None => None,
                    };
                    (Tenants::key_name(&t), expected, Some(t))
                }
            };
            let (pt, stored) = envelope(st, &key)?
                .decrypt("", &ct, expected.as_ref())
                .await
                .map_err(kms_error)?;
            let pt = zeroize::Zeroizing::new(pt);
            if let Some(t) = tenant {
                if stored.get(lockbox_kms::TENANT_CONTEXT_KEY) != Some(&t) {
                    return Err(ApiError::bad("authentication failed"));
                }
            }
            ok(json!({ "plaintext": b64_encode(&pt), "context": stored }))
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path")),
    }
}
