//! Transit mounts (`/v1/sys/mounts`): the default `transit/` and any others
//! enabled at run time, each with its own key namespace. The list lives in
//! the store, so every server sees the same mounts.

use axum::http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::{no_content, plain, ApiError, ApiResult, AppState, Req, DEFAULT_MOUNT};

const META_MOUNTS: &str = "mounts";
const RESERVED: [&str; 4] = ["sys", "auth", "lockbox", "identity"];

async fn extra_mounts(st: &AppState) -> Result<Vec<String>, ApiError> {
    match st.engine.store().meta_get(META_MOUNTS).await {
        Ok(None) => Ok(Vec::new()),
        Ok(Some(b)) => serde_json::from_slice(&b).map_err(|_| {
            ApiError::from_engine(lockbox_engine::EngineError::Integrity(
                "mount list is corrupt".into(),
            ))
        }),
        Err(e) => Err(ApiError::from_engine(e.into())),
    }
}

async fn save(st: &AppState, mounts: &[String]) -> Result<(), ApiError> {
    let b = serde_json::to_vec(mounts)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    st.engine
        .store()
        .meta_put(META_MOUNTS, &b)
        .await
        .map_err(|e| ApiError::from_engine(e.into()))
}

/// Whether `mount` is a Transit mount (no store access for the default and
/// the reserved paths).
pub(crate) async fn is_transit(st: &AppState, mount: &str) -> Result<bool, ApiError> {
    if mount == DEFAULT_MOUNT {
        return Ok(true);
    }
    if RESERVED.contains(&mount) {
        return Ok(false);
    }
    Ok(extra_mounts(st).await?.iter().any(|m| m == mount))
}

fn describe(kind: &str, description: &str) -> Value {
    json!({
        "type": kind,
        "description": description,
        "accessor": "",
        "config": { "default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false },
        "options": null,
        "local": false,
        "seal_wrap": false,
        "external_entropy_access": false,
    })
}

/// GET /v1/sys/mounts: Vault's shape (the mounts at the top level and in `data`).
pub(crate) async fn list(st: &AppState, r: &Req) -> ApiResult {
    if r.method != Method::GET {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        ));
    }
    let mut m = Map::new();
    m.insert(
        format!("{DEFAULT_MOUNT}/"),
        describe("transit", "Lockbox Transit engine"),
    );
    for extra in extra_mounts(st).await? {
        m.insert(format!("{extra}/"), describe("transit", ""));
    }
    m.insert("sys/".into(), describe("system", "system endpoints"));
    let mut body = m.clone();
    body.insert("data".into(), Value::Object(m));
    plain(StatusCode::OK, Value::Object(body))
}

/// POST /v1/sys/mounts/:path (enable, type transit) and DELETE (disable).
pub(crate) async fn change(st: &AppState, r: &Req, path: &str) -> ApiResult {
    let path = path.trim_end_matches('/');
    let valid = !path.is_empty()
        && path.len() <= 64
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if !valid {
        return Err(ApiError::bad(format!(
            "invalid mount path {path:?}: use letters, digits, - and _"
        )));
    }
    let mut mounts = extra_mounts(st).await?;
    match r.method {
        Method::POST | Method::PUT => {
            match r.str_field("type")?.as_deref() {
                Some("transit") => {}
                Some(other) => {
                    return Err(ApiError::bad(format!(
                        "unsupported secrets engine type {other:?}: Lockbox serves only transit"
                    )))
                }
                None => return Err(ApiError::bad("missing 'type' (transit)")),
            }
            if path == DEFAULT_MOUNT || RESERVED.contains(&path) || mounts.iter().any(|m| m == path)
            {
                return Err(ApiError::bad(format!("path is already in use at {path}/")));
            }
            mounts.push(path.to_owned());
            save(st, &mounts).await?;
            no_content()
        }
        Method::DELETE => {
            if path == DEFAULT_MOUNT {
                return Err(ApiError::bad("the transit/ mount cannot be disabled"));
            }
            if !mounts.iter().any(|m| m == path) {
                // Vault answers 204 for a path with nothing mounted.
                return no_content();
            }
            let prefix = format!("{path}/");
            // Lockbox never drops live keys with a mount: they must be
            // deleted first (soft-deleted keys come back if the mount does).
            let keys = st.engine.list_keys(false).await?;
            if keys.iter().any(|k| k.starts_with(&prefix)) {
                return Err(ApiError::bad(format!(
                    "mount {path}/ still has keys: delete them first"
                )));
            }
            mounts.retain(|m| m != path);
            save(st, &mounts).await?;
            no_content()
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        )),
    }
}
