//! The Lockbox HTTP server: HashiCorp Vault's Transit API (so Vault clients
//! such as Python `hvac` work unchanged), Vault's `sys` seal endpoints, and
//! Lockbox's native API (`/v1/lockbox/...`), over a [`lockbox_engine::Engine`].
//!
//! The public interface is [`router`], [`serve`] and [`ServerConfig`].
//! Requests are dispatched by one handler so that Vault's conventions hold
//! everywhere: the `LIST` verb and `?list=true`, one JSON error shape
//! (`{"errors":[...]}`), one mapping from engine errors to status codes
//! ([`ApiError::from_engine`]), and limits checked before any work.

pub mod audit;
mod auth;
mod envelope;
pub mod events;
mod listen;
mod metrics;
mod mounts;
mod records;
mod routes;
pub mod tls;
mod transit;

pub use listen::{serve, serve_tls};

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use lockbox_engine::{Engine, EngineError};
use serde_json::{json, Map, Value};

/// Server limits and mode.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest request body (bytes); larger gets 413. Default 32 MiB.
    pub max_body_bytes: usize,
    /// Most items in one `batch_input`. Default 10 000.
    pub max_batch_items: usize,
    /// Deepest JSON nesting accepted. Default 32.
    pub max_json_depth: usize,
    /// Development mode (reported by health).
    pub dev_mode: bool,
    /// Requests per second per token (0 = unlimited); a token's own
    /// `rate_limit` overrides it. Over the limit: 429.
    pub token_rate_limit: u32,
    /// The audit log's sinks and failure policy.
    pub audit: audit::AuditConfig,
    /// Where events are delivered (besides the audit log).
    pub webhook: Option<events::WebhookConfig>,
    /// Whether clients reach this server over TLS (adds HSTS).
    pub tls: bool,
    /// Requests per second from one client address that carry no valid
    /// token (0 = unlimited). Beyond it: 429 and no audit entry (a request
    /// without any token is refused before a lookup; valid tokens from the
    /// address are served as usual). Default 100 (burst of one second's
    /// worth).
    pub unauthenticated_rate_limit: u32,
    /// How long a client has to send a request's line and headers: from
    /// the moment a new connection is ready, or from the first byte of the
    /// next request on a kept-alive one. Default 10 s.
    pub header_read_timeout: std::time::Duration,
    /// A kept-alive connection with no request in flight and no bytes
    /// moving for this long is closed. Default 75 s (above the 60 s idle
    /// timeout of common load balancers, so they close first).
    pub idle_timeout: std::time::Duration,
    /// The most one request may take, its body included; past it the
    /// client gets a JSON 503 and the connection is closed. Default 90 s.
    pub request_timeout: std::time::Duration,
    /// The most a TLS handshake may take. Default 10 s.
    pub tls_handshake_timeout: std::time::Duration,
    /// Most connections open at once (TLS handshakes included); beyond it
    /// new connections are closed at once. Default 4096.
    pub max_connections: usize,
    /// Most connections open at once from one client address; beyond it
    /// that address's new connections are closed at once, so one client
    /// cannot take every slot. Default 1024.
    pub max_connections_per_address: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 32 << 20,
            max_batch_items: 10_000,
            max_json_depth: 32,
            dev_mode: false,
            token_rate_limit: 0,
            audit: audit::AuditConfig::default(),
            webhook: None,
            tls: false,
            unauthenticated_rate_limit: 100,
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(75),
            request_timeout: std::time::Duration::from_secs(90),
            tls_handshake_timeout: std::time::Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_address: 1024,
        }
    }
}

/// The OpenAPI 3 description of this API (docs/openapi.json, made by
/// scripts/gen-openapi.py).
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// The Transit mount every server has.
pub(crate) const DEFAULT_MOUNT: &str = "transit";

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) cfg: Arc<ServerConfig>,
    pub(crate) auth: Arc<auth::AuthState>,
    pub(crate) audit: Option<Arc<audit::Auditor>>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) events: Arc<events::Events>,
}

impl AppState {
    /// The state, with the audit log, the webhook worker and the
    /// engine-event forwarder started.
    fn new(engine: Engine, cfg: ServerConfig) -> AppState {
        let audit = cfg
            .audit
            .enabled()
            .then(|| audit::Auditor::start(engine.clone(), cfg.audit.clone()));
        let metrics = Arc::new(metrics::Metrics::default());
        let events = events::Events::start(audit.clone(), cfg.webhook.clone(), metrics.clone());
        let mut rx = engine.events();
        let ev = Arc::downgrade(&events);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        let Some(ev) = ev.upgrade() else { break };
                        ev.emit(
                            e.kind,
                            json!({"key": e.key, "version": e.version, "detail": e.detail}),
                        )
                        .await;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        AppState {
            engine,
            cfg: Arc::new(cfg),
            auth: Arc::default(),
            audit,
            metrics,
            events,
        }
    }
}

/// The router: every path under `/v1/` goes through one dispatcher.
pub fn router(engine: Engine, cfg: ServerConfig) -> Router {
    app(AppState::new(engine, cfg))
}

/// The one handler over `st`, for [`router`] and the listeners.
fn app(st: AppState) -> Router {
    Router::new().fallback(handle).with_state(st)
}

/// An error answer: status and messages (and, for batches, the data).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    errors: Vec<String>,
    data: Option<Value>,
}

impl ApiError {
    /// `status` with one message.
    #[must_use]
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            errors: vec![msg.into()],
            data: None,
        }
    }

    /// 400 with a message.
    #[must_use]
    pub fn bad(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    /// The one mapping of engine errors to HTTP.
    #[must_use]
    pub fn from_engine(e: EngineError) -> Self {
        match &e {
            EngineError::Sealed | EngineError::NotInitialized => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed")
            }
            EngineError::Store(_) | EngineError::Internal(_) | EngineError::Integrity(_) => {
                // Details go to the server's stderr, not to the caller.
                eprintln!("lockbox: internal error: {e}");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
            EngineError::KeyNotFound(_) => Self::bad("encryption key not found"),
            EngineError::PermissionDenied(_) => Self::new(StatusCode::FORBIDDEN, e.to_string()),
            EngineError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            EngineError::Crypto(c) => Self::bad(crypto_message(c)),
            _ => Self::bad(e.to_string()),
        }
    }
}

/// Vault's wording for format errors where it has one.
fn crypto_message(e: &lockbox_core::Error) -> String {
    match e {
        lockbox_core::Error::AuthenticationFailed => "cipher: message authentication failed".into(),
        other => lockbox_core::vault::vault_error_message(
            other,
            lockbox_core::vault::VaultKeyType::Aes256Gcm96,
        ),
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::from_engine(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.data {
            Some(data) => envelope(data),
            None => json!({ "errors": self.errors }),
        };
        json_response(self.status, &body)
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

fn json_response(status: StatusCode, v: &Value) -> Response {
    raw_json_response(status, v.to_string())
}

/// A response whose body is already JSON text.
pub(crate) fn raw_json_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

pub(crate) fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| new_request_id())
}

/// Vault's envelope for token answers: the `auth` block, no `data`.
pub(crate) fn envelope_auth(auth: Value) -> Value {
    json!({
        "request_id": request_id(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": null,
        "wrap_info": null,
        "warnings": null,
        "auth": auth,
    })
}

fn envelope(data: Value) -> Value {
    json!({
        "request_id": request_id(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
    })
}

/// 200 with `data` in Vault's envelope.
pub(crate) fn ok(data: Value) -> ApiResult {
    Ok(json_response(StatusCode::OK, &envelope(data)))
}

/// `status` with `data` in the envelope (batches with partial failures).
pub(crate) fn ok_status(status: StatusCode, data: Value) -> ApiResult {
    Ok(json_response(status, &envelope(data)))
}

/// A plain JSON body (the sys endpoints answer without the envelope).
pub(crate) fn plain(status: StatusCode, v: Value) -> ApiResult {
    Ok(json_response(status, &v))
}

/// 204, empty body.
pub(crate) fn no_content() -> ApiResult {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

/// A request as it is taken apart: the path first, then (once the token
/// and the path are authorized) the body.
pub(crate) struct Req {
    pub(crate) method: Method,
    /// The decoded path segments after `/v1/` ([`routes::decode_path`]).
    pub(crate) segments: Vec<String>,
    /// Whether the verb is LIST.
    pub(crate) list: bool,
    /// The JSON body (empty until read).
    pub(crate) body: Map<String, Value>,
    /// Who is asking (set once the token is checked).
    pub(crate) authz: Option<auth::Authz>,
    /// The keys named in the body (or in its ciphertexts) that were
    /// authorized: the handler uses no other.
    pub(crate) keys: Vec<String>,
    /// Whether every authorization check passed and checked something (a
    /// native decrypt naming no key checks nothing): only then do its
    /// failures count towards the decryption-failure alert.
    pub(crate) authorized: bool,
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

impl Req {
    /// The keys a request's body (or its ciphertexts) named and that were
    /// authorized: recorded in audit entries and metrics.
    pub(crate) fn named_key(&self) -> Option<String> {
        // Only keys that were authorized: a refused request's body names
        // whatever its sender wishes (not evidence, and no metric label).
        (!self.keys.is_empty()).then(|| self.keys.join(","))
    }

    /// The request's path and verb, before anything else is read.
    fn head(method: Method, uri: &Uri) -> Result<Req, ApiError> {
        let segments = routes::decode_path(uri.path())?;
        let list = method.as_str() == "LIST"
            || (method == Method::GET && routes::query_lists(uri.query()));
        Ok(Req {
            method,
            segments,
            list,
            body: Map::new(),
            authz: None,
            keys: Vec::new(),
            authorized: false,
        })
    }

    /// Parses the body: empty, `null` (Vault's Go client sends it for
    /// body-less writes) or a JSON object no deeper than the limit.
    fn parse_body(&mut self, cfg: &ServerConfig, body: &[u8]) -> Result<(), ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad(format!("failed to parse JSON input: {e}")))?;
        if depth(&v) > cfg.max_json_depth {
            return Err(ApiError::bad(format!(
                "JSON input is nested deeper than {} levels",
                cfg.max_json_depth
            )));
        }
        match v {
            Value::Object(m) => self.body = m,
            Value::Null => {}
            _ => return Err(ApiError::bad("JSON input must be an object")),
        }
        Ok(())
    }

    /// Whether `key` was authorized for this request (the root token's
    /// requests: every key).
    pub(crate) fn key_authorized(&self, key: &str) -> bool {
        self.authz.as_ref().is_some_and(|z| z.acl.is_none()) || self.keys.iter().any(|k| k == key)
    }

    /// A string field (absent or null: `None`).
    pub(crate) fn str_field(&self, name: &str) -> Result<Option<String>, ApiError> {
        field_str(&self.body, name)
    }

    /// A boolean field, accepting Vault's string forms.
    pub(crate) fn bool_field(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "1" => Ok(Some(true)),
            Some(Value::String(s)) if s == "false" || s == "0" => Ok(Some(false)),
            Some(_) => Err(ApiError::bad(format!("field {name} must be a boolean"))),
        }
    }

    /// A non-negative integer field (number or numeric string).
    pub(crate) fn u32_field(&self, name: &str) -> Result<Option<u32>, ApiError> {
        field_u32(&self.body, name)
    }
}

pub(crate) fn field_str(m: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad(format!("field {name} must be a string"))),
    }
}

pub(crate) fn field_u32(m: &Map<String, Value>, name: &str) -> Result<Option<u32>, ApiError> {
    let bad = || ApiError::bad(format!("field {name} must be a non-negative integer"));
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.parse::<u32>().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// Decode a base64 field (standard alphabet; Vault's).
pub(crate) fn b64_field(m: &Map<String, Value>, name: &str) -> Result<Option<Vec<u8>>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        // Borrowed: a large plaintext is decoded straight from the parsed body.
        Some(Value::String(s)) => lockbox_core::encoding::b64_decode(s)
            .map(Some)
            .map_err(|_| ApiError::bad(format!("failed to base64-decode {name}"))),
        Some(_) => Err(ApiError::bad(format!("field {name} must be a string"))),
    }
}

tokio::task_local! {
    /// The id of the request being handled (responses and audit entries).
    static REQUEST_ID: String;
}

fn new_request_id() -> String {
    let mut b = [0u8; 16];
    let _ = lockbox_core::fill_random(&mut b);
    let h = lockbox_core::encoding::hex_encode(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

async fn handle(State(st): State<AppState>, req: Request) -> Response {
    let t0 = std::time::Instant::now();
    let rid = new_request_id();
    REQUEST_ID
        .scope(rid.clone(), async move {
            let (parts, body) = req.into_parts();
            let (resp, r) = match Req::head(parts.method.clone(), &parts.uri) {
                Err(e) => (e.into_response(), None),
                Ok(mut r) => {
                    let resp = serve_request(&st, &mut r, &parts, body)
                        .await
                        .unwrap_or_else(IntoResponse::into_response);
                    (resp, Some(r))
                }
            };
            finish(
                &st,
                resp,
                r.as_ref(),
                &parts.method,
                parts.uri.path(),
                t0,
                &rid,
            )
            .await
        })
        .await
}

/// The largest body of an unauthenticated request (init, unseal).
const PUBLIC_BODY_LIMIT: usize = 64 << 10;

async fn read_body(
    r: &mut Req,
    cfg: &ServerConfig,
    body: Body,
    limit: usize,
) -> Result<(), ApiError> {
    // Bounded in time too: a handler left to finish after the request
    // timeout must not wait forever on a client that stopped sending.
    let bytes = tokio::time::timeout(cfg.request_timeout, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            )
        })?
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {limit} bytes"),
            )
        })?;
    r.parse_body(cfg, &bytes)
}

/// One request, in the order that keeps unauthorized work cheap: the
/// public probes; the token, from the headers alone; the route and its
/// path-level ACL check; only then the body, the keys it names, and the
/// work.
async fn serve_request(
    st: &AppState,
    r: &mut Req,
    parts: &axum::http::request::Parts,
    body: Body,
) -> ApiResult {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(p) = Public::of(&r.segments, &r.method, r.list) {
        // The probes are free; init and unseal (writes, audited) and the
        // OpenAPI document (180 KB) are charged like any request without
        // a token.
        if p == Public::OpenApi || matches!(r.method, Method::PUT | Method::POST) {
            auth::charge_unauthenticated(st, peer)?;
        }
        read_body(r, &st.cfg, body, PUBLIC_BODY_LIMIT).await?;
        return dispatch_public(st, r, p).await;
    }
    if st.engine.is_sealed() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Vault is sealed",
        ));
    }
    let z = auth::authenticate(st, auth::token_of(&parts.headers), peer).await?;
    r.authz = Some(z.clone());
    let m =
        routes::find(&r.segments, routes::Verb::of(&r.method, r.list)).map_err(|e| e.error())?;
    if let Some(mount) = &m.mount {
        if !mounts::is_transit(st, mount).await? {
            return Err(routes::NoRoute::Path.error());
        }
    }
    auth::authorize_route(&z, &r.segments, &m)?;
    read_body(r, &st.cfg, body, st.cfg.max_body_bytes).await?;
    r.keys = auth::authorize_body(st, &z, r, &m).await?;
    // A native decrypt whose ciphertexts name no key was checked against
    // nothing: what it fails at is no evidence of failing decryptions.
    r.authorized = m.route.body_keys != routes::BodyKeys::Ciphertexts || !r.keys.is_empty();
    dispatch(st, r).await
}

/// The endpoints that need no token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Public {
    Health,
    SealStatus,
    Init,
    Unseal,
    OpenApi,
}

impl Public {
    /// The endpoint a request reaches without a token, on the methods it
    /// answers; any other method on these paths is an authenticated
    /// request like the rest (403 without a valid token, then no route).
    fn of(seg: &[String], m: &Method, list: bool) -> Option<Public> {
        let read = *m == Method::GET && !list;
        let write = matches!(*m, Method::PUT | Method::POST);
        let p = match seg {
            [a] if a == "openapi.json" => Public::OpenApi,
            [a, b] if a == "sys" => match b.as_str() {
                "health" => Public::Health,
                "seal-status" => Public::SealStatus,
                "init" => Public::Init,
                "unseal" => Public::Unseal,
                _ => return None,
            },
            _ => return None,
        };
        let answers = match p {
            Public::Health => read || *m == Method::HEAD,
            Public::SealStatus | Public::OpenApi => read,
            Public::Init => read || write,
            Public::Unseal => write,
        };
        answers.then_some(p)
    }
}

async fn dispatch_public(st: &AppState, r: &Req, p: Public) -> ApiResult {
    match p {
        Public::Health => sys_health(st).await,
        Public::SealStatus => sys_seal_status(st).await,
        Public::Init => sys_init(st, r).await,
        Public::Unseal => sys_unseal(st, r).await,
        Public::OpenApi => {
            let mut resp = Response::new(Body::from(OPENAPI));
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            Ok(resp)
        }
    }
}

/// Whether a request is audited: not the health and status probes, and
/// only while unsealed (the audit key is sealed with everything else).
fn audited(st: &AppState, seg: &[String]) -> bool {
    let probe = match seg {
        [a] => a == "openapi.json",
        [a, b] => a == "sys" && (b == "health" || b == "seal-status"),
        _ => false,
    };
    !probe && !st.engine.is_sealed()
}

/// The longest text an audit entry keeps of a caller-chosen name or path.
const AUDIT_TEXT_MAX: usize = 256;

/// `text`, or if longer than [`AUDIT_TEXT_MAX`] its first 128 bytes, `…`
/// and the first 16 hex digits of its SHA-256: an entry's size stays
/// bounded whatever a caller sends, and equal long names still compare.
fn bounded(text: &str) -> String {
    if text.len() <= AUDIT_TEXT_MAX {
        return text.to_owned();
    }
    let mut cut = 128;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let hex = lockbox_core::encoding::hex_encode(sum.as_ref());
    format!("{}…{}", &text[..cut], &hex[..16])
}

/// The audit entry of a request. Never plaintext, ciphertext, tokens or key
/// material: the token is named by its accessor, the context is HMAC'd.
async fn audit_entry(
    a: &audit::Auditor,
    r: Option<&Req>,
    op: &metrics::Op,
    method: &Method,
    status: StatusCode,
    t0: std::time::Instant,
    rid: &str,
) -> audit::RequestEntry {
    let class = metrics::error_class(status);
    let mut e = audit::RequestEntry {
        kind: "request",
        time: lockbox_engine::now(),
        request_id: rid.to_owned(),
        // A method is whatever the client sends (any length): the known
        // ones as they are, any other as OTHER.
        method: match method.as_str() {
            m @ ("GET" | "POST" | "PUT" | "DELETE" | "LIST" | "HEAD" | "PATCH" | "OPTIONS") => {
                m.to_owned()
            }
            _ => "OTHER".to_owned(),
        },
        operation: bounded(&op.operation),
        mount: op.mount.as_deref().map(bounded),
        key: op.key.as_deref().map(bounded),
        status: status.as_u16(),
        outcome: if class.is_some() { "error" } else { "ok" },
        error_class: class,
        duration_us: u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
        items: 1,
        ..audit::RequestEntry::default()
    };
    if let Some(r) = r {
        e.path = Some(bounded(&r.segments.join("/")));
        if let Some(z) = &r.authz {
            e.accessor = Some(z.token.accessor.clone());
            e.role = Some(z.token.role());
        }
        let b = &r.body;
        if let Some(Value::Array(list)) = b.get("batch_input") {
            e.items = list.len() as u64;
        }
        e.key_version = b
            .get("ciphertext")
            .and_then(Value::as_str)
            .and_then(|c| c.strip_prefix("vault:v"))
            .and_then(|c| c.split(':').next())
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| b.get("key_version").and_then(Value::as_u64));
        e.tenant = b.get("tenant").and_then(Value::as_str).map(bounded);
        if let Some(c) = b.get("context").and_then(Value::as_str) {
            e.context_hmac = a.hash(c.as_bytes()).await.ok();
        }
    }
    e
}

/// After a request: metrics, the audit entry (refusing the answer if it
/// cannot be written and the policy is fail-closed), security headers.
async fn finish(
    st: &AppState,
    mut resp: Response,
    r: Option<&Req>,
    method: &Method,
    path: &str,
    t0: std::time::Instant,
    rid: &str,
) -> Response {
    let unparsed: Vec<String>;
    let seg: &[String] = match r {
        Some(r) => &r.segments,
        None => {
            unparsed = path
                .trim_start_matches("/v1/")
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            &unparsed
        }
    };
    let key_in_body = r.and_then(Req::named_key);
    let mut op = metrics::classify(seg, method.as_str(), key_in_body.as_deref());
    op.authorized = r.is_some_and(|r| r.authorized);
    let status = resp.status();
    let items = r
        .and_then(|r| r.body.get("batch_input"))
        .and_then(Value::as_array)
        .map_or(1, |a| a.len() as u64);
    let alert = st.metrics.observe(
        &op,
        status,
        items,
        t0.elapsed().as_secs_f64(),
        lockbox_engine::now(),
    );
    if let Some((failures, total)) = alert {
        let ev = st.events.clone();
        tokio::spawn(async move {
            ev.emit(
                "DECRYPTION_FAILURE_RATE_HIGH",
                json!({"failures": failures, "decryptions": total, "window_seconds": 300}),
            )
            .await;
        });
    }
    if let Some(a) = &st.audit {
        // A request turned away by the per-address limit on unauthenticated
        // requests leaves no entry: that flood must cost next to nothing.
        let flood =
            status == StatusCode::TOO_MANY_REQUESTS && r.map_or(true, |r| r.authz.is_none());
        // Nor does a path that cannot even be decoded (no token is looked
        // at for it, so it would be an unlimited, unauthenticated write).
        if audited(st, seg) && !flood && r.is_some() {
            let entry = audit_entry(a, r, &op, method, status, t0, rid).await;
            if !a.record(entry).await && !a.fail_open() {
                resp = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the audit log cannot be written: request refused",
                )
                .into_response();
            }
        }
    }
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(rid) {
        h.insert("x-request-id", v);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if st.cfg.tls {
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    resp
}

fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation")
}

/// An authorized request (see [`serve_request`]) to its handler.
async fn dispatch(st: &AppState, r: &Req) -> ApiResult {
    let seg: Vec<&str> = r.segments.iter().map(String::as_str).collect();
    // Fail closed: while the audit log is failing, a request is
    // first recorded, and refused before any work if that fails.
    if let Some(a) = &st.audit {
        if !a.fail_open() && !a.healthy() {
            let op = metrics::classify(&r.segments, r.method.as_str(), None);
            let mut e = audit_entry(
                a,
                Some(r),
                &op,
                &r.method,
                StatusCode::ACCEPTED,
                std::time::Instant::now(),
                &request_id(),
            )
            .await;
            e.kind = "request-pending";
            if !a.record(e).await {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the audit log cannot be written: request refused",
                ));
            }
        }
    }
    match seg.as_slice() {
        ["sys", "seal"] => {
            if !matches!(r.method, Method::PUT | Method::POST) {
                return Err(method_not_allowed());
            }
            st.engine.seal().await?;
            if let Some(a) = &st.audit {
                a.forget();
            }
            no_content()
        }
        ["sys", "audit", rest @ ..] => audit::endpoint(st, r, rest).await,
        ["sys", "audit-hash"] if matches!(r.method, Method::POST | Method::PUT) => {
            let input = r
                .str_field("input")?
                .ok_or_else(|| ApiError::bad("missing input"))?;
            let Some(a) = &st.audit else {
                return Err(ApiError::bad("no audit log is configured"));
            };
            ok(json!({ "hash": a.hash(input.as_bytes()).await? }))
        }
        ["sys", "metrics"] if r.method == Method::GET => {
            let failures = st.audit.as_ref().map_or(0, |a| {
                a.core.failures.load(std::sync::atomic::Ordering::Relaxed)
            });
            let text = st.metrics.render(&st.engine, failures).await;
            let mut resp = Response::new(Body::from(text));
            resp.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(resp)
        }
        ["sys", "events"] if matches!(r.method, Method::POST | Method::PUT) => {
            let kind = match r.str_field("event")?.as_deref() {
                Some("REENCRYPTION_STARTED") => "REENCRYPTION_STARTED",
                Some("REENCRYPTION_COMPLETED") => "REENCRYPTION_COMPLETED",
                _ => {
                    return Err(ApiError::bad(
                        "event must be REENCRYPTION_STARTED or REENCRYPTION_COMPLETED",
                    ))
                }
            };
            let mut data = match r.body.get("data") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(m)) => event_data(m)?,
                Some(_) => return Err(ApiError::bad("data must be an object")),
            };
            // Who reported it: the entry cannot pass for another's.
            if let Some(z) = &r.authz {
                data.insert("reported_by".into(), Value::from(z.token.accessor.clone()));
            }
            st.events.emit(kind, Value::Object(data)).await;
            no_content()
        }
        ["auth", "token", rest @ ..] => auth::token(st, r, rest).await,
        ["sys", "policies", "acl"] | ["sys", "policy"] => auth::policies(st, r, None).await,
        ["sys", "policies", "acl", name] | ["sys", "policy", name] => {
            auth::policies(st, r, Some(name)).await
        }
        ["sys", "mounts"] => mounts::list(st, r).await,
        ["sys", "mounts", path @ ..] if !path.is_empty() => {
            mounts::change(st, r, &path.join("/")).await
        }
        [mount, rest @ ..] if mounts::is_transit(st, mount).await? => {
            transit::dispatch_mount(st, r, mount, rest).await
        }
        ["lockbox", "records", rest @ ..] if matches!(r.method, Method::POST | Method::PUT) => {
            records::dispatch(st, r, rest).await
        }
        ["lockbox", "envelope", rest @ ..] => envelope::dispatch(st, r, rest).await,
        ["lockbox", rest @ ..] => transit::native(st, r, rest).await,
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "unsupported path")),
    }
}

/// A caller's event data as it may enter the audit log: at most 16
/// fields of short names whose values are scalars, null or lists of
/// scalars (4 KiB in all), none of the names that say who or where an
/// entry is (`accessor`, `role`, `request_id`, `reported_by`, the chain's
/// own fields).
fn event_data(m: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    const RESERVED: [&str; 10] = [
        "type",
        "event",
        "time",
        "seq",
        "seg",
        "mac",
        "accessor",
        "role",
        "request_id",
        "reported_by",
    ];
    let bad = || {
        ApiError::bad(
            "data: at most 16 fields, names of 1 to 64 characters (not type, event, time, seq, seg, mac, accessor, role, request_id or reported_by), values strings, numbers, booleans, null or lists of those, 4096 bytes in all",
        )
    };
    if m.len() > 16 || serde_json::to_vec(m).map_or(true, |b| b.len() > 4096) {
        return Err(bad());
    }
    let scalar = |v: &Value| !matches!(v, Value::Array(_) | Value::Object(_));
    for (k, v) in m {
        let ok = match v {
            Value::Array(a) => a.iter().all(scalar),
            v => scalar(v),
        };
        if k.is_empty() || k.len() > 64 || RESERVED.contains(&k.as_str()) || !ok {
            return Err(bad());
        }
    }
    Ok(m.clone())
}

fn now_rfc3339() -> String {
    let secs = lockbox_engine::now();
    rfc3339(secs)
}

/// Unix seconds as RFC 3339 UTC (civil-from-days, no time crate needed).
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

async fn seal_status_json(st: &AppState) -> Result<Value, ApiError> {
    let s = st.engine.status().await?;
    Ok(json!({
        "type": if s.seal_type.is_empty() { "shamir".to_owned() } else { s.seal_type.clone() },
        "initialized": s.initialized,
        "sealed": s.sealed,
        "t": s.t,
        "n": s.n,
        "progress": s.progress,
        "nonce": "",
        "version": concat!("lockbox-", env!("CARGO_PKG_VERSION")),
        "build_date": "",
        "migration": false,
        "recovery_seal": false,
        "storage_type": s.storage_type,
    }))
}

async fn sys_health(st: &AppState) -> ApiResult {
    let s = st.engine.status().await?;
    let status = if !s.initialized {
        StatusCode::NOT_IMPLEMENTED
    } else if s.sealed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    plain(
        status,
        json!({
            "initialized": s.initialized,
            "sealed": s.sealed,
            "standby": false,
            "performance_standby": false,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": lockbox_engine::now(),
            "version": concat!("lockbox-", env!("CARGO_PKG_VERSION")),
            "cluster_name": "lockbox",
            "cluster_id": "",
            "dev_mode": st.cfg.dev_mode,
            "time": now_rfc3339(),
        }),
    )
}

async fn sys_seal_status(st: &AppState) -> ApiResult {
    plain(StatusCode::OK, seal_status_json(st).await?)
}

async fn sys_init(st: &AppState, r: &Req) -> ApiResult {
    match r.method {
        Method::GET => {
            let s = st.engine.status().await?;
            plain(StatusCode::OK, json!({ "initialized": s.initialized }))
        }
        Method::PUT | Method::POST => {
            let shares = r
                .u32_field("secret_shares")?
                .ok_or_else(|| ApiError::bad("secret_shares is required"))?;
            let threshold = r
                .u32_field("secret_threshold")?
                .ok_or_else(|| ApiError::bad("secret_threshold is required"))?;
            let (shares, threshold) = match (u8::try_from(shares), u8::try_from(threshold)) {
                (Ok(s), Ok(t)) => (s, t),
                _ => {
                    return Err(ApiError::bad(
                        "secret_shares and secret_threshold must be at most 255",
                    ))
                }
            };
            let out = st
                .engine
                .init(shares, threshold)
                .await
                .map_err(|e| match e {
                    EngineError::Crypto(c) => ApiError::bad(c.to_string()),
                    other => ApiError::from_engine(other),
                })?;
            plain(
                StatusCode::OK,
                json!({
                    "keys": out.shares,
                    "keys_base64": out.shares,
                    "root_token": out.root_token,
                }),
            )
        }
        _ => Err(method_not_allowed()),
    }
}

async fn sys_unseal(st: &AppState, r: &Req) -> ApiResult {
    if !matches!(r.method, Method::PUT | Method::POST) {
        return Err(method_not_allowed());
    }
    if r.bool_field("reset")? == Some(true) {
        st.engine.reset_unseal()?;
    } else {
        let key = r
            .str_field("key")?
            .ok_or_else(|| ApiError::bad("missing required 'key' parameter"))?;
        st.engine.submit_share(&key).await?;
    }
    plain(StatusCode::OK, seal_status_json(st).await?)
}
