//! Authentication and authorization: tokens (`/v1/auth/token/...`), ACL
//! policies (`/v1/sys/policies/acl/...`, and Vault's older `sys/policy`),
//! the per-request ACL check and per-token rate limiting.
//!
//! Every request but the unauthenticated `sys` ones names a token
//! (`X-Vault-Token` or `Authorization: Bearer`). Its policies give an ACL
//! (see [`lockbox_core::acl`]); the request's path (without `/v1/`) must be
//! granted the verb's capability: `read` for GET, `list` for LIST or
//! `?list=true`, `create` or `update` for POST/PUT, `delete` for DELETE —
//! and `sudo` too on the privileged paths ([`needs_sudo`]). Operations whose
//! key is named in the body rather than the path are checked against a
//! path with the key appended (`lockbox/records/encrypt/KEY`,
//! `lockbox/decrypt/KEY`), so a policy can scope them by key name too.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{Method, StatusCode};
use lockbox_core::acl::{Acl, Caps};
use lockbox_engine::{role_policy, TokenInfo, TokenRequest, TOKEN_CACHE};
use serde_json::{json, Value};

use crate::transit::duration_field;
use crate::{no_content, ok, ApiError, ApiResult, AppState, Req};

/// Who is asking, with what rights.
#[derive(Clone)]
pub(crate) struct Authz {
    pub(crate) token: Arc<TokenInfo>,
    /// `None` for root: everything is allowed.
    pub(crate) acl: Option<Arc<Acl>>,
}

impl Authz {
    /// Whether `needed` (and `sudo` if asked) is granted on `path`.
    pub(crate) fn allows(&self, path: &str, needed: Caps, sudo: bool) -> bool {
        let Some(acl) = &self.acl else {
            return true;
        };
        let have = acl.capabilities(path);
        let verb = if needed == Caps::UPDATE {
            have.contains(Caps::UPDATE) || have.contains(Caps::CREATE)
        } else {
            needed != Caps::NONE && have.contains(needed)
        };
        verb && (!sudo || have.contains(Caps::SUDO))
    }

    /// As [`Authz::allows`], as a 403 error.
    pub(crate) fn require(&self, path: &str, needed: Caps) -> Result<(), ApiError> {
        if self.allows(path, needed, false) {
            Ok(())
        } else {
            Err(denied())
        }
    }
}

pub(crate) fn denied() -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "permission denied")
}

/// Server-wide caches: ACLs per policy set, rate-limit buckets per token.
#[derive(Default)]
pub(crate) struct AuthState {
    acls: Mutex<HashMap<String, (Arc<Acl>, Instant)>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl AuthState {
    fn clear_acls(&self) {
        if let Ok(mut m) = self.acls.lock() {
            m.clear();
        }
    }

    /// Takes one request from the token's bucket (`rate` per second, burst
    /// of one second's worth). `false`: over the limit.
    fn take(&self, accessor: &str, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let Ok(mut m) = self.buckets.lock() else {
            return false;
        };
        if m.len() > 100_000 {
            m.clear();
        }
        let now = Instant::now();
        let cap = f64::from(rate);
        let (tokens, last) = m.entry(accessor.to_owned()).or_insert((cap, now));
        let refill = now.duration_since(*last).as_secs_f64() * cap;
        *tokens = (*tokens + refill).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Paths every valid token may use on itself (Vault's `default` policy).
fn is_self_service(path: &str) -> bool {
    matches!(
        path,
        "auth/token/lookup-self" | "auth/token/renew-self" | "auth/token/revoke-self"
    )
}

/// Privileged paths: `sudo` is needed in addition to the verb's capability.
pub(crate) fn needs_sudo(seg: &[&str], method: &Method) -> bool {
    match seg {
        ["sys", "seal"] => true,
        ["sys", "mounts", _, ..] => *method != Method::GET,
        ["sys", "policies", "acl", _] | ["sys", "policy", _] => *method != Method::GET,
        ["lockbox", "keys", _, "destroy" | "import"] => true,
        [_, "restore", ..] => true,
        _ => false,
    }
}

/// The capability a request needs.
fn verb_caps(r: &Req) -> Caps {
    if r.list {
        return Caps::LIST;
    }
    match r.method {
        Method::GET | Method::HEAD => Caps::READ,
        Method::DELETE => Caps::DELETE,
        _ => Caps::UPDATE,
    }
}

/// The path checked for a request: the request path, with the key named in
/// the body appended for the record and envelope endpoints.
fn checked_path(r: &Req) -> String {
    let path = r.segments.join("/");
    match (r.segments.as_slice(), r.named_key()) {
        ([a, b, _], Some(k)) if a == "lockbox" && (b == "records" || b == "envelope") => {
            format!("{path}/{k}")
        }
        _ => path,
    }
}

/// Authenticates the request's token, applies its rate limit and checks
/// the path. Returns who is asking.
pub(crate) async fn authorize(st: &AppState, r: &Req) -> Result<Authz, ApiError> {
    let token = r.token.as_deref().ok_or_else(denied)?;
    let info = st.engine.lookup_token(token).await?.ok_or_else(denied)?;
    let rate = if info.rate_limit > 0 {
        info.rate_limit
    } else {
        st.cfg.token_rate_limit
    };
    if !st.auth.take(&info.accessor, rate) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded for this token",
        ));
    }
    let acl = if info.is_root() {
        None
    } else {
        Some(acl_of(st, &info.policies).await?)
    };
    let authz = Authz { token: info, acl };
    let seg: Vec<&str> = r.segments.iter().map(String::as_str).collect();
    let path = checked_path(r);
    let ok = is_self_service(&path)
        // The key of a native decrypt is in each ciphertext: checked per item.
        || matches!(seg.as_slice(), ["lockbox", "decrypt"])
        || authz.allows(&path, verb_caps(r), needs_sudo(&seg, &r.method));
    if !ok {
        return Err(denied());
    }
    // The records' blind-index key is checked like the encryption key.
    if let (["lockbox", "records", _], Some(Value::String(k))) =
        (seg.as_slice(), r.body.get("index_key"))
    {
        let p = format!("{}/{k}", r.segments.join("/"));
        authz.require(&p, Caps::UPDATE)?;
    }
    Ok(authz)
}

async fn acl_of(st: &AppState, policies: &[String]) -> Result<Arc<Acl>, ApiError> {
    let key = policies.join(",");
    if let Ok(m) = st.auth.acls.lock() {
        if let Some((a, at)) = m.get(&key) {
            if at.elapsed() < TOKEN_CACHE {
                return Ok(a.clone());
            }
        }
    }
    let acl = Arc::new(st.engine.acl_for(policies).await?);
    if let Ok(mut m) = st.auth.acls.lock() {
        if m.len() > 10_000 {
            m.clear();
        }
        m.insert(key, (acl.clone(), Instant::now()));
    }
    Ok(acl)
}

fn auth_json(token: Option<&str>, i: &TokenInfo) -> Value {
    let at = lockbox_engine::now();
    let mut v = json!({
        "accessor": i.accessor,
        "policies": i.policies,
        "token_policies": i.policies,
        "metadata": i.meta,
        "lease_duration": i.ttl_left(at),
        "renewable": i.renewable,
        "entity_id": "",
        "token_type": "service",
        "orphan": true,
    });
    if let (Some(t), Value::Object(m)) = (token, &mut v) {
        m.insert("client_token".into(), Value::from(t));
    }
    v
}

fn lookup_json(i: &TokenInfo) -> Value {
    let at = lockbox_engine::now();
    json!({
        "accessor": i.accessor,
        "creation_time": i.created_at,
        "creation_ttl": i.ttl,
        "display_name": i.display_name,
        "expire_time": i.expire_at.map(crate::rfc3339),
        "explicit_max_ttl": i.explicit_max_ttl,
        "meta": i.meta,
        "num_uses": 0,
        "orphan": true,
        "path": "auth/token/create",
        "policies": i.policies,
        "renewable": i.renewable,
        "ttl": i.ttl_left(at),
        "type": "service",
        "role": i.role(),
        "rate_limit": i.rate_limit,
    })
}

fn authz_of(r: &Req) -> Result<&Authz, ApiError> {
    r.authz.as_ref().ok_or_else(denied)
}

/// The accessor a request names: `accessor`, or `token` looked up.
async fn target_accessor(st: &AppState, r: &Req) -> Result<String, ApiError> {
    if let Some(a) = r.str_field("accessor")? {
        return Ok(a);
    }
    let t = r
        .str_field("token")?
        .ok_or_else(|| ApiError::bad("missing token"))?;
    match st.engine.lookup_token(&t).await? {
        Some(i) if i.is_root() => Err(ApiError::bad(
            "the root token cannot be looked up, renewed or revoked this way",
        )),
        Some(i) => Ok(i.accessor.clone()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "bad token")),
    }
}

/// `/v1/auth/token/...`.
pub(crate) async fn token(st: &AppState, r: &Req, seg: &[&str]) -> ApiResult {
    let me = authz_of(r)?;
    let write = matches!(r.method, Method::POST | Method::PUT);
    match seg {
        ["create"] | ["create-orphan"] if write => create(st, r, me).await,
        ["lookup-self"] if write || r.method == Method::GET => ok(lookup_json(&me.token)),
        ["lookup"] | ["lookup-accessor"] if write => {
            let acc = target_accessor(st, r).await?;
            ok(lookup_json(&*st.engine.lookup_accessor(&acc).await?))
        }
        ["renew-self"] | ["renew"] | ["renew-accessor"] if write => {
            let acc = if seg == ["renew-self"] {
                if me.token.is_root() {
                    return Err(ApiError::bad("the root token does not expire"));
                }
                me.token.accessor.clone()
            } else {
                target_accessor(st, r).await?
            };
            let inc = duration_field(&r.body, "increment")?.unwrap_or(0);
            let info = st.engine.renew_accessor(&acc, inc).await?;
            Ok(crate::raw_json_response(
                StatusCode::OK,
                crate::envelope_auth(auth_json(None, &info)).to_string(),
            ))
        }
        ["revoke-self"] | ["revoke"] | ["revoke-accessor"] | ["revoke-orphan"] if write => {
            let acc = if seg == ["revoke-self"] {
                if me.token.is_root() {
                    return Err(ApiError::bad(
                        "the root token is replaced with `lockbox init`, not revoked",
                    ));
                }
                me.token.accessor.clone()
            } else {
                target_accessor(st, r).await?
            };
            st.engine.revoke_accessor(&acc).await?;
            no_content()
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path")),
    }
}

fn string_list(v: Option<&Value>, name: &str) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad(format!("{name} must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(ApiError::bad(format!("{name} must be a list of strings"))),
    }
}

async fn create(st: &AppState, r: &Req, me: &Authz) -> ApiResult {
    let policies = string_list(r.body.get("policies"), "policies")?;
    // Without sudo, a token can only hand out policies it has itself.
    let sudo = me.allows("auth/token/create", Caps::UPDATE, true);
    if !sudo {
        if let Some(p) = policies.iter().find(|p| !me.token.policies.contains(p)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("permission denied: cannot grant policy {p:?} without sudo on auth/token/create"),
            ));
        }
    }
    let meta: BTreeMap<String, String> = match r.body.get("meta") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::bad("meta values must be strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad("meta must be an object of strings")),
    };
    let ttl = duration_field(&r.body, "ttl")?.unwrap_or(0);
    if ttl == 0 && !sudo {
        return Err(ApiError::bad(
            "a ttl is required (tokens without expiry need sudo on auth/token/create)",
        ));
    }
    let rate_limit = r.u32_field("rate_limit")?.unwrap_or_default();
    let req = TokenRequest {
        policies,
        ttl,
        renewable: r.bool_field("renewable")?.unwrap_or(true),
        explicit_max_ttl: duration_field(&r.body, "explicit_max_ttl")?.unwrap_or(0),
        display_name: r.str_field("display_name")?.unwrap_or_default(),
        meta,
        rate_limit,
    };
    let (token, info) = st.engine.create_token(&req).await?;
    Ok(crate::raw_json_response(
        StatusCode::OK,
        crate::envelope_auth(auth_json(Some(&token), &info)).to_string(),
    ))
}

/// `/v1/sys/policies/acl[/NAME]` and `/v1/sys/policy[/NAME]`.
pub(crate) async fn policies(st: &AppState, r: &Req, name: Option<&str>) -> ApiResult {
    let e = &st.engine;
    match (name, &r.method) {
        (None, _) if r.list || r.method == Method::GET => {
            let names = e.policy_list().await?;
            ok(json!({ "keys": names, "policies": names }))
        }
        (Some(n), &Method::GET) => {
            let text = e.policy_text(n).await?.ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("no policy named {n}"))
            })?;
            ok(json!({ "name": n, "policy": text, "rules": text }))
        }
        (Some(n), &Method::POST | &Method::PUT) => {
            let text =
                match (r.str_field("policy")?, r.str_field("role")?) {
                    (Some(p), None) => p,
                    (None, Some(role)) => {
                        let keys = r.str_field("keys")?.unwrap_or_else(|| "*".into());
                        role_policy(&role, &keys)?
                    }
                    (Some(_), Some(_)) => {
                        return Err(ApiError::bad("give either 'policy' or 'role', not both"))
                    }
                    (None, None) => return Err(ApiError::bad(
                        "missing 'policy' (HCL or JSON) or 'role' (app, operator, auditor, admin)",
                    )),
                };
            e.policy_put(n, &text).await?;
            st.auth.clear_acls();
            no_content()
        }
        (Some(n), &Method::DELETE) => {
            e.policy_delete(n).await?;
            st.auth.clear_acls();
            no_content()
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "unsupported operation",
        )),
    }
}
