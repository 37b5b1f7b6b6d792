//! Authentication and authorization: tokens (`/v1/auth/token/...`), ACL
//! policies (`/v1/sys/policies/acl/...`, and Vault's older `sys/policy`),
//! the per-request ACL check and per-token rate limiting.
//!
//! Every request but the unauthenticated `sys` ones names a token
//! (`X-Vault-Token` or `Authorization: Bearer`), checked from the headers
//! before the body is read ([`authenticate`]). Its policies give an ACL
//! (see [`lockbox_core::acl`]). What the ACL must grant comes from the
//! route table ([`crate::routes`]): the verb's capability — `read` for GET,
//! `list` for LIST (or GET with `?list=true`), `create` or `update` for
//! POST/PUT, `delete` for DELETE — and `sudo` on the privileged routes, on
//! the request's canonical path ([`authorize_route`]). Keys named in the
//! body, or in the header of each native ciphertext, are checked on the
//! path with the key appended (`lockbox/records/encrypt/KEY`,
//! `lockbox/decrypt/KEY`) before any cryptographic work ([`authorize_body`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{Method, StatusCode};
use lockbox_core::acl::{Acl, Caps};
use lockbox_engine::{role_policy, Parent, TokenInfo, TokenRequest, TOKEN_CACHE};
use serde_json::{json, Value};

use crate::routes::{Access, BodyKeys, Matched};
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

/// The token of a request: `X-Vault-Token`, or `Authorization: Bearer`.
pub(crate) fn token_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .filter(|t| !t.is_empty())
}

/// Authenticates a request's token from its headers alone (the body is not
/// read yet) and applies the token's rate limit. A request without a valid
/// token counts against its address's budget for unauthenticated requests
/// (`ServerConfig::unauthenticated_rate_limit`); once that is spent, the
/// address gets 429 for every request without a valid token, while a
/// valid token from it is served as usual. (A request with an unknown
/// token costs one keyed hash and, once per 10 s per token, a store read.)
pub(crate) async fn authenticate(
    st: &AppState,
    token: Option<&str>,
    peer: Option<std::net::IpAddr>,
) -> Result<Authz, ApiError> {
    // Without a valid token: charged to the address, then refused.
    let refused = |st: &AppState| {
        charge_unauthenticated(st, peer)
            .err()
            .unwrap_or_else(denied)
    };
    let Some(token) = token else {
        return Err(refused(st));
    };
    let Some(info) = st.engine.lookup_token(token).await? else {
        return Err(refused(st));
    };
    let rate = effective_rate(st, &info);
    // Its own budget, then each limited ancestor's: a parent's rate is
    // shared by all it made, not multiplied.
    let within = st.auth.take(&info.accessor, rate)
        && info
            .shared_limits
            .iter()
            .all(|(acc, r)| st.auth.take(acc, *r));
    if !within {
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
    Ok(Authz { token: info, acl })
}

/// Charges a request without a valid token (or an unauthenticated write:
/// init, unseal) to its address's budget.
pub(crate) fn charge_unauthenticated(
    st: &AppState,
    peer: Option<std::net::IpAddr>,
) -> Result<(), ApiError> {
    match peer {
        Some(ip)
            if !st
                .auth
                .take(&ip.to_string(), st.cfg.unauthenticated_rate_limit) =>
        {
            Err(too_many_unauthenticated())
        }
        _ => Ok(()),
    }
}

/// A token's request rate as enforced: its own `rate_limit`, else the
/// server's default (0: unlimited).
fn effective_rate(st: &AppState, info: &TokenInfo) -> u32 {
    match info.rate_limit {
        0 => st.cfg.token_rate_limit,
        own => own,
    }
}

fn too_many_unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests without a valid token from this address",
    )
}

/// The path-level check of a matched route, before the body is read: the
/// verb's capability (and `sudo` where the route says) on the request's
/// canonical path. Routes whose keys are named in the body are checked in
/// [`authorize_body`] instead, on the path with each key appended.
pub(crate) fn authorize_route(z: &Authz, segments: &[String], m: &Matched) -> Result<(), ApiError> {
    if m.route.access == Access::SelfService || m.route.body_keys != BodyKeys::None {
        return Ok(());
    }
    let sudo = m.route.sudo.contains(&m.verb);
    if z.allows(&segments.join("/"), m.verb.caps(), sudo) {
        Ok(())
    } else {
        Err(denied())
    }
}

/// The body-level checks of a matched route: every key the body names —
/// `key`, `index_key`, `tenant`, or the key in each native ciphertext's
/// header — on the request path with the key appended, all before any
/// cryptographic work. Returns the keys authorized (for the handler, which
/// uses no other, and for the audit entry).
pub(crate) async fn authorize_body(
    st: &AppState,
    z: &Authz,
    r: &Req,
    m: &Matched,
) -> Result<Vec<String>, ApiError> {
    // A key named in the body must be a key name (one path segment).
    let named = |k: String| {
        if lockbox_engine::is_key_name(&k) {
            Ok(k)
        } else {
            Err(ApiError::bad(format!(
                "invalid key name {k:?}: use 1 to 128 characters from A-Z a-z 0-9 - _ ."
            )))
        }
    };
    let mut keys: Vec<String> = Vec::new();
    match m.route.body_keys {
        BodyKeys::None => return Ok(keys),
        BodyKeys::KeyAndIndex => {
            let key = r
                .str_field("key")?
                .ok_or_else(|| ApiError::bad("missing 'key': the encryption key's name"))?;
            keys.push(named(key)?);
            if let Some(ix) = r.str_field("index_key")? {
                keys.push(named(ix)?);
            }
        }
        BodyKeys::KeyOrTenant => match (r.str_field("key")?, r.str_field("tenant")?) {
            (Some(k), None) => keys.push(named(k)?),
            (None, Some(t)) => {
                lockbox_kms::check_tenant(&t).map_err(|e| ApiError::bad(e.to_string()))?;
                keys.push(lockbox_kms::Tenants::key_name(&t));
            }
            _ => return Err(ApiError::bad("give exactly one of 'key' or 'tenant'")),
        },
        BodyKeys::Ciphertexts => {
            let items: Vec<&Value> = match r.body.get("batch_input") {
                Some(Value::Array(a)) => a.iter().filter_map(|i| i.get("ciphertext")).collect(),
                _ => r.body.get("ciphertext").into_iter().collect(),
            };
            let mut seen = std::collections::HashSet::new();
            // Each unknown key id costs a reload of the key list: a request
            // may name only a few distinct ones.
            const MAX_KEY_IDS: usize = 32;
            for ct in items.into_iter().filter_map(Value::as_str) {
                // Per item: a malformed header is that item's error later.
                let Ok(h) = lockbox_core::native::inspect_text(ct) else {
                    continue;
                };
                if !seen.insert(h.key_id) {
                    continue;
                }
                if seen.len() > MAX_KEY_IDS {
                    return Err(ApiError::bad(format!(
                        "the ciphertexts of one request may name at most {MAX_KEY_IDS} keys"
                    )));
                }
                // A mount's key (`m2/k`) never makes native ciphertexts: a
                // header naming one is forged, and refused without naming it.
                // A key id that names no key is refused like a foreign one
                // (to anyone but root): which ids exist is not told.
                match st.engine.key_name_of_id(h.key_id).await {
                    Ok(k) if lockbox_engine::is_key_name(&k) || z.acl.is_none() => {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                    Err(lockbox_engine::EngineError::KeyNotFound(_)) | Ok(_) if z.acl.is_some() => {
                        return Err(denied());
                    }
                    Ok(_) | Err(_) => {}
                }
            }
        }
    }
    let base = r.segments.join("/");
    let sudo = m.route.sudo.contains(&m.verb);
    for k in &keys {
        if !z.allows(&format!("{base}/{k}"), m.verb.caps(), sudo) {
            return Err(denied());
        }
    }
    Ok(keys)
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
        "orphan": i.is_orphan(),
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
        "orphan": i.is_orphan(),
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
        ["create"] if write => create(st, r, me, "auth/token/create").await,
        ["create-orphan"] if write => create(st, r, me, "auth/token/create-orphan").await,
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
        // Leaving children alive without their parent: the route table
        // requires sudo, as Vault does.
        ["revoke-orphan"] if write => {
            let acc = target_accessor(st, r).await?;
            st.engine.revoke_orphan_accessor(&acc).await?;
            no_content()
        }
        // The token and, recursively, every token it made.
        ["revoke-self"] | ["revoke"] | ["revoke-accessor"] if write => {
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

/// The most metadata entries a token may carry.
const META_MAX_ENTRIES: usize = 64;

/// `auth/token/create` and `create-orphan` (`path`): a child of the caller,
/// bounded by it (the engine caps its TTL at the caller's expiry; its rate
/// limit may not exceed the caller's), or with sudo on `path` an orphan
/// (`create-orphan`, or `no_parent`), bounded by the system maximum only.
async fn create(st: &AppState, r: &Req, me: &Authz, path: &str) -> ApiResult {
    let policies = string_list(r.body.get("policies"), "policies")?;
    let sudo = me.allows(path, Caps::UPDATE, true);
    let orphan = path == "auth/token/create-orphan" || r.bool_field("no_parent")?.unwrap_or(false);
    if orphan && !sudo {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("permission denied: orphan tokens need sudo on {path}"),
        ));
    }
    // Without sudo, a token can only hand out policies it has itself.
    if !sudo {
        if let Some(p) = policies.iter().find(|p| !me.token.policies.contains(p)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("permission denied: cannot grant policy {p:?} without sudo on {path}"),
            ));
        }
    }
    let meta: BTreeMap<String, String> = match r.body.get("meta") {
        None | Some(Value::Null) => BTreeMap::new(),
        // Stored with the token and read on every lookup: bounded.
        Some(Value::Object(m)) if m.len() > META_MAX_ENTRIES => {
            return Err(ApiError::bad(format!(
                "meta may have at most {META_MAX_ENTRIES} entries"
            )))
        }
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) if k.len() <= 128 && s.len() <= 512 => Ok((k.clone(), s.clone())),
                Value::String(_) => Err(ApiError::bad(
                    "meta keys may be at most 128 bytes and values at most 512",
                )),
                _ => Err(ApiError::bad("meta values must be strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad("meta must be an object of strings")),
    };
    let req = TokenRequest {
        policies,
        // 0 (or absent): the default, the longest allowed.
        ttl: duration_field(&r.body, "ttl")?.unwrap_or(0),
        renewable: r.bool_field("renewable")?.unwrap_or(true),
        explicit_max_ttl: duration_field(&r.body, "explicit_max_ttl")?.unwrap_or(0),
        display_name: r.str_field("display_name")?.unwrap_or_default(),
        meta,
        rate_limit: r.u32_field("rate_limit")?.unwrap_or_default(),
    };
    let parent = (!orphan).then(|| Parent {
        token: &me.token,
        rate_limit: effective_rate(st, &me.token),
    });
    let made = st.engine.create_token_under(&req, parent).await?;
    let mut body = crate::envelope_auth(auth_json(Some(&made.token), &made.info));
    if !made.warnings.is_empty() {
        body["warnings"] = json!(made.warnings);
    }
    Ok(crate::raw_json_response(StatusCode::OK, body.to_string()))
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
