//! Tokens and ACL policies (Vault's token store and `sys/policies/acl`).
//!
//! A token is 32 random bytes (`lbs.` + base64url). Only a keyed hash is
//! stored (HMAC-SHA256 under the root-derived MAC key, the same as the root
//! token), under `token/<hex hash>` in the store's meta table, with the
//! token's accessor, policies, TTL and metadata; `accessor/<accessor>` points
//! at the hash so a token can be looked up or revoked by accessor without
//! knowing it. Lookups are cached for [`TOKEN_CACHE`]; a revocation is seen
//! at once on the server that made it and within that time on others.
//!
//! Tokens follow Vault's token semantics. A token made by another token is
//! its child and records its parent's accessor ([`TokenInfo::parent`]); the
//! root token's children record [`ROOT_ACCESSOR`]; orphans record none. A
//! child never expires after its parent, and a token is alive only while
//! every ancestor is: revoking a token revokes its descendants. Every token
//! but the root token expires: its TTL and renewals are bounded by the
//! system maximum ([`EngineConfig::max_token_ttl_secs`](crate::EngineConfig))
//! and its own `explicit_max_ttl`, counted from its creation.
//!
//! Policies are stored under `policy/<name>` as the text the user wrote
//! (HCL or JSON), checked by [`lockbox_core::acl::parse_policy`]. The
//! built-in policies (`root`, `admin`, `operator`, `auditor`, `app`) come
//! from role templates ([`role_policy`]) and cannot be changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lockbox_core::acl::{self, Acl, PathRule};
use lockbox_core::encoding::{b64url_encode, hex_decode, hex_encode};
use lockbox_core::kdf::hmac_sha256;
use lockbox_core::{fill_random, SecretBytes};
use serde::{Deserialize, Serialize};

use crate::{lock_err, now, Engine, EngineError, Result};

/// How long a server trusts a cached token or policy.
pub const TOKEN_CACHE: Duration = Duration::from_secs(10);

/// The parent recorded for tokens made by the root token (the root token's
/// accessor); the root token never expires and is never revoked this way.
pub const ROOT_ACCESSOR: &str = "root";

/// The default system maximum TTL of tokens: 32 days (Vault's default
/// `max_lease_ttl`, 768h).
pub const DEFAULT_MAX_TOKEN_TTL: i64 = 32 * 86_400;

/// The longest chain of parents a token may have (a guard: every lookup
/// walks the chain).
pub const MAX_TOKEN_DEPTH: usize = 64;

/// The built-in roles, least privilege first.
pub const ROLES: [&str; 4] = ["app", "operator", "auditor", "admin"];

/// What a token is (never the token itself).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenInfo {
    /// The accessor: names the token in logs and for lookup/revoke.
    pub accessor: String,
    /// Policy names.
    pub policies: Vec<String>,
    /// A label for people.
    pub display_name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds. Every token made now has one; a token stored without
    /// one (by an older version) expires at `created_at` plus the system
    /// maximum TTL.
    pub expire_at: Option<i64>,
    /// The TTL it was created (or last renewed) with, seconds (0 = none).
    pub ttl: i64,
    /// Whether `renew` may extend it.
    pub renewable: bool,
    /// Hard limit from creation, seconds (0 = none).
    pub explicit_max_ttl: i64,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// Requests per second this token may make (0 = the server's default).
    #[serde(default)]
    pub rate_limit: u32,
    /// The accessor of the token that made it ([`ROOT_ACCESSOR`] for the
    /// root token's children); `None` for an orphan, and for tokens stored
    /// before parents were recorded. Never shown to callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The rate-limited ancestors whose budgets this token's requests also
    /// draw from: (accessor, requests per second as enforced on it). So
    /// children share their parent's rate rather than multiply it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_limits: Vec<(String, u32)>,
}

impl TokenInfo {
    /// Whether this is the root token.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    /// Seconds left (0 if it never expires or has expired).
    #[must_use]
    pub fn ttl_left(&self, at: i64) -> i64 {
        self.expire_at.map_or(0, |e| e.saturating_sub(at).max(0))
    }

    /// Whether it has no parent (Vault's `orphan`): made by
    /// `create-orphan` or with `no_parent`, or the root token itself.
    #[must_use]
    pub fn is_orphan(&self) -> bool {
        self.parent.is_none()
    }

    /// The role shown in audit entries: the most privileged built-in role
    /// among the policies, else `custom`.
    #[must_use]
    pub fn role(&self) -> &'static str {
        if self.is_root() {
            return "root";
        }
        for r in ROLES.iter().rev() {
            if self.policies.iter().any(|p| p == r) {
                return r;
            }
        }
        "custom"
    }
}

/// What to create.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    /// Policy names (must exist).
    pub policies: Vec<String>,
    /// Seconds (0 = the default: the maximum allowed). Capped by the
    /// system maximum, `explicit_max_ttl` and the parent's expiry.
    pub ttl: i64,
    /// Whether it may be renewed.
    pub renewable: bool,
    /// Hard limit, seconds (0 = none).
    pub explicit_max_ttl: i64,
    /// Label.
    pub display_name: String,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// Requests per second (0 = server default).
    pub rate_limit: u32,
}

/// The token a new token is made by (see [`Engine::create_token_under`]).
#[derive(Clone, Copy, Debug)]
pub struct Parent<'a> {
    /// The parent (the caller), as looked up for this request.
    pub token: &'a TokenInfo,
    /// The parent's request rate as the server enforces it: its own
    /// `rate_limit`, else the server's default; 0 = unlimited.
    pub rate_limit: u32,
}

/// A new token: shown once.
#[derive(Debug)]
pub struct CreatedToken {
    /// The token itself.
    pub token: String,
    /// What was stored.
    pub info: TokenInfo,
    /// What was changed from the request (a TTL capped), for the answer's
    /// `warnings`.
    pub warnings: Vec<String>,
}

/// What a token's ancestors allow: how deep it is and the earliest expiry
/// among them (`None`: no bound, the root token's children and orphans).
struct Lineage {
    depth: usize,
    expire_at: Option<i64>,
}

/// Caches of tokens and parsed policies (cleared when sealed).
#[derive(Default)]
pub(crate) struct AuthCache {
    tokens: RwLock<HashMap<Vec<u8>, Cached<MaybeToken>>>,
    /// Accessor → token hash, for walking parent chains. A mapping never
    /// changes while it exists (accessors are random and never reused), so
    /// it is kept without expiry; a revoked parent is seen through its
    /// token entry, which expires.
    accessors: RwLock<HashMap<String, Vec<u8>>>,
    policies: RwLock<HashMap<String, Cached<Arc<Vec<PathRule>>>>>,
    /// What the root token is (the same for every lookup).
    root: std::sync::OnceLock<Arc<TokenInfo>>,
}

/// A token's information, or a remembered miss.
type MaybeToken = Option<Arc<TokenInfo>>;

/// A cached value and when it was read.
type Cached<T> = (T, Instant);

impl AuthCache {
    pub(crate) fn clear(&self) -> Result<()> {
        self.tokens.write().map_err(lock_err)?.clear();
        self.accessors.write().map_err(lock_err)?.clear();
        self.policies.write().map_err(lock_err)?.clear();
        Ok(())
    }
}

/// The policy text of a built-in role over keys matching `keys` (a glob
/// such as `billing-*`; `*` for all).
///
/// # Errors
/// [`EngineError::BadRequest`] for an unknown role or a bad glob.
pub fn role_policy(role: &str, keys: &str) -> Result<String> {
    let ok = !keys.is_empty()
        && keys.len() <= 128
        && keys
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'))
        && keys.find('*').map_or(true, |i| i + 1 == keys.len());
    if !ok {
        return Err(EngineError::BadRequest(format!(
            "key pattern {keys:?}: letters, digits, - _ . and one trailing *"
        )));
    }
    let k = keys;
    let rule = |p: String, caps: &str| format!("path \"{p}\" {{ capabilities = [{caps}] }}\n");
    let mut out = format!("# Built-in role {role:?} over keys {k:?}.\n");
    match role {
        "app" => {
            for op in ["encrypt", "decrypt", "rewrap"] {
                out += &rule(format!("+/{op}/{k}"), "\"create\", \"update\"");
            }
            out += &rule(format!("+/datakey/+/{k}"), "\"update\"");
            out += &rule(format!("lockbox/records/+/{k}"), "\"update\"");
            out += &rule(format!("lockbox/envelope/+/{k}"), "\"update\"");
        }
        "operator" => {
            out += &rule("+/keys".into(), "\"list\"");
            // A trailing `*` also covers the key's rotate, config and trim.
            out += &rule(format!("+/keys/{k}"), "\"create\", \"read\", \"update\"");
            if !k.ends_with('*') {
                for op in ["rotate", "config", "trim"] {
                    out += &rule(format!("+/keys/{k}/{op}"), "\"update\"");
                }
            }
            // Never key material: no backups (exports and decryption are
            // simply not granted).
            out += &rule("lockbox/keys/+/backup".into(), "\"deny\"");
            out += &rule("sys/mounts".into(), "\"read\"");
            out += &rule("sys/metrics".into(), "\"read\"");
        }
        "auditor" => {
            out += &rule("sys/audit".into(), "\"read\", \"list\"");
            out += &rule("sys/audit/*".into(), "\"read\", \"update\"");
            out += &rule("sys/audit-hash".into(), "\"update\"");
            out += &rule("sys/metrics".into(), "\"read\"");
        }
        // Everything, sudo included, cannot be limited to some keys (it
        // could grant itself the rest): a scoped admin is refused.
        "admin" if k != "*" => {
            return Err(EngineError::BadRequest(format!(
                "the admin role covers every path and cannot be scoped to keys {k:?}: use keys \"*\", or the operator role for some keys"
            )))
        }
        "admin" => {
            out += &rule(
                "*".into(),
                "\"create\", \"read\", \"update\", \"delete\", \"list\", \"sudo\"",
            );
        }
        _ => {
            return Err(EngineError::BadRequest(format!(
                "unknown role {role:?} (expected one of {})",
                ROLES.join(", ")
            )))
        }
    }
    Ok(out)
}

fn check_policy_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "policy name {name:?}: 1 to 128 of A-Z a-z 0-9 - _ ."
        )))
    }
}

fn builtin(name: &str) -> Option<String> {
    match name {
        "root" => Some("# The root policy: everything (not expressible as rules).\n".into()),
        r if ROLES.contains(&r) => role_policy(r, "*").ok(),
        _ => None,
    }
}

fn corrupt(what: &str) -> EngineError {
    EngineError::Integrity(format!("stored {what} does not parse"))
}

impl Engine {
    fn token_hash(&self, token: &str) -> Result<Vec<u8>> {
        let u = self.unsealed()?;
        Ok(hmac_sha256(u.mac_key.expose_secret(), token.as_bytes()).to_vec())
    }

    /// The server's audit key (32 random bytes made on first use, sealed
    /// under the root key in the store): it keys the audit chains and the
    /// HMACs of sensitive values in audit entries.
    ///
    /// # Errors
    /// [`EngineError::Sealed`]; [`EngineError::Store`]; [`EngineError::Integrity`].
    pub async fn audit_key(&self) -> Result<SecretBytes> {
        const AAD: &[u8] = b"lockbox/v1/audit-key";
        let u = self.unsealed()?;
        let store = self.store();
        if store.meta_get("audit_key").await?.is_none() {
            let k = SecretBytes::random(32)?;
            let sealed = u.root.seal(k.expose_secret(), AAD)?;
            store.meta_put_if_absent("audit_key", &sealed).await?;
        }
        let sealed = store
            .meta_get("audit_key")
            .await?
            .ok_or_else(|| EngineError::Internal("audit key vanished".into()))?;
        u.root
            .unseal(&sealed, AAD)
            .map_err(|_| EngineError::Integrity("the audit key does not unseal".into()))
    }

    /// The system maximum TTL of tokens, seconds (never 0).
    fn max_token_ttl(&self) -> i64 {
        match self.inner.cfg.max_token_ttl_secs {
            m if m > 0 => m,
            _ => DEFAULT_MAX_TOKEN_TTL,
        }
    }

    /// When a stored token expires: its `expire_at`, or for a token stored
    /// without one (older versions made tokens that never expired) its
    /// creation plus the system maximum TTL.
    fn expiry_of(&self, i: &TokenInfo) -> i64 {
        i.expire_at
            .unwrap_or_else(|| i.created_at.saturating_add(self.max_token_ttl()))
    }

    /// Creates an orphan token (no parent: the local CLI's tokens, made with
    /// the master key). The caller checks that it may grant the policies.
    ///
    /// # Errors
    /// As [`Engine::create_token_under`].
    pub async fn create_token(&self, req: &TokenRequest) -> Result<(String, TokenInfo)> {
        let c = self.create_token_under(req, None).await?;
        Ok((c.token, c.info))
    }

    /// Creates a token: a child of `parent`, or an orphan with `None` (the
    /// caller checks that it may make orphans, and may grant the policies).
    ///
    /// The TTL (0 = the default, the most allowed) is capped by the system
    /// maximum and `explicit_max_ttl`, and for a child by its parent's
    /// expiry (unless the parent is the root token); each cap adds a
    /// warning. A child of a rate-limited parent gets the parent's limit
    /// unless it asks for a lower one; a higher one is refused.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for an unknown policy, a negative TTL,
    /// `root` in the list, a rate limit above the parent's or a chain of
    /// parents deeper than [`MAX_TOKEN_DEPTH`]; [`EngineError::PermissionDenied`]
    /// if the parent is no longer valid; [`EngineError::Sealed`]; [`EngineError::Store`].
    pub async fn create_token_under(
        &self,
        req: &TokenRequest,
        parent: Option<Parent<'_>>,
    ) -> Result<CreatedToken> {
        if req.ttl < 0 || req.explicit_max_ttl < 0 {
            return Err(EngineError::BadRequest("ttl must not be negative".into()));
        }
        if req.policies.is_empty() {
            return Err(EngineError::BadRequest(
                "a token needs at least one policy".into(),
            ));
        }
        for p in &req.policies {
            if p == "root" {
                return Err(EngineError::BadRequest(
                    "root tokens are made by init only".into(),
                ));
            }
            if self.policy_rules(p).await?.is_none() {
                return Err(EngineError::BadRequest(format!("unknown policy {p:?}")));
            }
        }
        let at = now();
        let mut warnings = Vec::new();
        // Vault's CalculateTTL: the default TTL is the most allowed, and a
        // longer request is capped to it.
        let sys_max = self.max_token_ttl();
        let max_ttl = match req.explicit_max_ttl {
            e if e > 0 && e < sys_max => e,
            _ => sys_max,
        };
        let mut ttl = if req.ttl > 0 { req.ttl } else { max_ttl };
        if ttl > max_ttl {
            warnings.push(format!(
                "ttl of {ttl}s exceeded the effective max_ttl of {max_ttl}s; ttl value is capped accordingly"
            ));
            ttl = max_ttl;
        }
        let mut expire = at.saturating_add(ttl);
        // Stored as it applies: never above the system maximum, nor (below)
        // past the parent's expiry.
        let mut explicit_max_ttl = req.explicit_max_ttl.min(sys_max);
        let mut rate_limit = req.rate_limit;
        let mut shared_limits = Vec::new();
        let parent_accessor = match parent {
            None => None,
            Some(p) => {
                if !p.token.is_root() {
                    // The parent as stored now (the caller's copy may be a
                    // revocation or a renewal old), and its chain.
                    let (cur, lineage) =
                        self.live_parent(&p.token.accessor).await?.ok_or_else(|| {
                            EngineError::PermissionDenied(
                                "the parent token is no longer valid".into(),
                            )
                        })?;
                    if lineage.depth >= MAX_TOKEN_DEPTH {
                        return Err(EngineError::BadRequest(format!(
                            "a token may have at most {MAX_TOKEN_DEPTH} ancestors; make an orphan instead"
                        )));
                    }
                    let own = self.expiry_of(&cur);
                    let bound = lineage.expire_at.map_or(own, |e| e.min(own));
                    if explicit_max_ttl > 0 {
                        explicit_max_ttl = explicit_max_ttl.min(bound.saturating_sub(at));
                    }
                    if expire > bound {
                        warnings.push(format!(
                            "ttl of {ttl}s exceeded the parent token's remaining {}s; ttl value is capped accordingly",
                            bound.saturating_sub(at)
                        ));
                        expire = bound;
                    }
                }
                if p.rate_limit > 0 && !p.token.is_root() {
                    shared_limits.clone_from(&p.token.shared_limits);
                    shared_limits.push((p.token.accessor.clone(), p.rate_limit));
                }
                if p.rate_limit > 0 {
                    if rate_limit == 0 {
                        // The parent's own limit, or (0) the server's default,
                        // which is the parent's limit.
                        rate_limit = p.token.rate_limit;
                    } else if rate_limit > p.rate_limit {
                        return Err(EngineError::BadRequest(format!(
                            "rate_limit {rate_limit} is above the parent token's {} requests per second; a child token's rate_limit must be at most its parent's",
                            p.rate_limit
                        )));
                    }
                }
                Some(if p.token.is_root() {
                    ROOT_ACCESSOR.to_owned()
                } else {
                    p.token.accessor.clone()
                })
            }
        };
        let raw = SecretBytes::random(32)?;
        let token = format!("lbs.{}", b64url_encode(raw.expose_secret()));
        // An accessor is typed on command lines: one starting with `-`
        // would read as a flag (`--accessor -nX...`), so draw again (1 in
        // 64 draws; base64url's other characters are all safe).
        let accessor = loop {
            let mut acc = [0u8; 18];
            fill_random(&mut acc)?;
            let a = b64url_encode(&acc);
            if !a.starts_with('-') {
                break a;
            }
        };
        let mut policies = req.policies.clone();
        policies.sort();
        policies.dedup();
        let info = TokenInfo {
            accessor,
            policies,
            display_name: if req.display_name.is_empty() {
                "token".into()
            } else {
                req.display_name.chars().take(128).collect()
            },
            created_at: at,
            expire_at: Some(expire),
            ttl: expire.saturating_sub(at),
            renewable: req.renewable,
            explicit_max_ttl,
            meta: req.meta.clone(),
            rate_limit,
            parent: parent_accessor,
            shared_limits,
        };
        let h = hex_encode(&self.token_hash(&token)?);
        let body = serde_json::to_vec(&info).map_err(|e| EngineError::Internal(e.to_string()))?;
        let store = self.store();
        store
            .meta_put(&format!("accessor/{}", info.accessor), h.as_bytes())
            .await?;
        store.meta_put(&format!("token/{h}"), &body).await?;
        Ok(CreatedToken {
            token,
            info,
            warnings,
        })
    }

    async fn token_by_hash(&self, hash: &[u8]) -> Result<Option<Arc<TokenInfo>>> {
        if let Some((info, at)) = self.inner.auth.tokens.read().map_err(lock_err)?.get(hash) {
            if at.elapsed() < TOKEN_CACHE {
                return Ok(info.clone());
            }
        }
        self.token_from_store(hash).await
    }

    /// Reads a token's row (skipping the cache) and caches it.
    async fn token_from_store(&self, hash: &[u8]) -> Result<Option<Arc<TokenInfo>>> {
        let info = match self
            .store()
            .meta_get(&format!("token/{}", hex_encode(hash)))
            .await?
        {
            Some(b) => Some(Arc::new(
                serde_json::from_slice::<TokenInfo>(&b).map_err(|_| corrupt("token"))?,
            )),
            None => None,
        };
        self.cache_token(hash, info.clone())?;
        Ok(info)
    }

    fn cache_token(&self, hash: &[u8], info: MaybeToken) -> Result<()> {
        let mut cache = self.inner.auth.tokens.write().map_err(lock_err)?;
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(hash.to_vec(), (info, Instant::now()));
        Ok(())
    }

    /// The token hash of an accessor (cached), or `None` if there is none.
    async fn accessor_hash(&self, accessor: &str) -> Result<Option<Vec<u8>>> {
        if let Some(h) = self
            .inner
            .auth
            .accessors
            .read()
            .map_err(lock_err)?
            .get(accessor)
        {
            return Ok(Some(h.clone()));
        }
        let h = match self.hash_of_accessor(accessor).await {
            Ok(h) => h,
            Err(EngineError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut m = self.inner.auth.accessors.write().map_err(lock_err)?;
        if m.len() > 100_000 {
            m.clear();
        }
        m.insert(accessor.to_owned(), h.clone());
        Ok(Some(h))
    }

    /// Walks a token's parents: `None` if one of them is gone (revoked,
    /// expired, or the chain is too deep), else the depth and the earliest
    /// expiry among them.
    ///
    /// Why parents are checked at lookup rather than children deleted at
    /// revocation: a revocation stays one delete of one row, so it is
    /// complete the moment it commits — no crash half-way through a tree, no
    /// child created during the sweep left behind — and it holds for every
    /// server of a shared store: each ancestor's entry is cached for at most
    /// [`TOKEN_CACHE`] (and dropped at once on the revoking server), so a
    /// revoked parent kills its descendants within the same window as its
    /// own revocation. The walk costs cache reads only (accessor → hash is
    /// cached for good). Rows of descendants stay, inert like expired ones.
    async fn lineage(&self, info: &TokenInfo, at: i64) -> Result<Option<Lineage>> {
        let mut lineage = Lineage {
            depth: 0,
            expire_at: None,
        };
        let mut next = info.parent.clone();
        while let Some(acc) = next {
            if acc == ROOT_ACCESSOR {
                break;
            }
            lineage.depth += 1;
            if lineage.depth > MAX_TOKEN_DEPTH {
                return Ok(None);
            }
            let Some(h) = self.accessor_hash(&acc).await? else {
                return Ok(None);
            };
            let Some(p) = self.token_by_hash(&h).await? else {
                return Ok(None);
            };
            let e = self.expiry_of(&p);
            if e <= at {
                return Ok(None);
            }
            lineage.expire_at = Some(lineage.expire_at.map_or(e, |b| b.min(e)));
            next = p.parent.clone();
        }
        Ok(Some(lineage))
    }

    /// The token with this accessor, if it and its ancestors are alive (as
    /// [`Engine::live_token`] judges every token).
    async fn live_parent(&self, accessor: &str) -> Result<Option<(Arc<TokenInfo>, Lineage)>> {
        match self.accessor_hash(accessor).await? {
            Some(h) => self.live_token(&h).await,
            None => Ok(None),
        }
    }

    /// The token stored under `hash` if it is alive: not expired, and every
    /// ancestor alive. Returns it with its lineage.
    async fn live_token(&self, hash: &[u8]) -> Result<Option<(Arc<TokenInfo>, Lineage)>> {
        let at = now();
        let Some(info) = self.token_by_hash(hash).await? else {
            return Ok(None);
        };
        if self.expiry_of(&info) <= at {
            return Ok(None);
        }
        if let Some(l) = self.lineage(&info, at).await? {
            return Ok(Some((info, l)));
        }
        // An ancestor is gone. The cached row may predate a `revoke-orphan`
        // (on another server) that made this token an orphan: read it again
        // once; if it is still a descendant of a revoked token, remember the
        // miss.
        let Some(fresh) = self.token_from_store(hash).await? else {
            return Ok(None);
        };
        if fresh.parent != info.parent && self.expiry_of(&fresh) > at {
            if let Some(l) = self.lineage(&fresh, at).await? {
                return Ok(Some((fresh, l)));
            }
        }
        self.cache_token(hash, None)?;
        Ok(None)
    }

    /// The token's information, or `None` if it is unknown, revoked,
    /// expired, or a descendant of a revoked or expired token. The root
    /// token is reported with the `root` policy.
    ///
    /// # Errors
    /// [`EngineError::Sealed`], [`EngineError::Store`].
    pub async fn lookup_token(&self, token: &str) -> Result<Option<Arc<TokenInfo>>> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        // One keyed hash per lookup, compared with the root token's first.
        let h = self.token_hash(token)?;
        if self.is_root_hash(&h).await? {
            let root = self.inner.auth.root.get_or_init(|| {
                Arc::new(TokenInfo {
                    accessor: ROOT_ACCESSOR.into(),
                    policies: vec!["root".into()],
                    display_name: "root".into(),
                    created_at: 0,
                    expire_at: None,
                    ttl: 0,
                    renewable: false,
                    explicit_max_ttl: 0,
                    meta: BTreeMap::new(),
                    rate_limit: 0,
                    parent: None,
                    shared_limits: Vec::new(),
                })
            });
            return Ok(Some(root.clone()));
        }
        Ok(self.live_token(&h).await?.map(|(i, _)| i))
    }

    async fn hash_of_accessor(&self, accessor: &str) -> Result<Vec<u8>> {
        let nf = || EngineError::NotFound("no token with that accessor".into());
        if accessor.is_empty() || accessor.len() > 64 || accessor.contains('/') {
            return Err(nf());
        }
        let h = self
            .store()
            .meta_get(&format!("accessor/{accessor}"))
            .await?
            .ok_or_else(nf)?;
        std::str::from_utf8(&h)
            .ok()
            .and_then(|h| hex_decode(h).ok())
            .ok_or_else(|| corrupt("accessor"))
    }

    /// The token with this accessor.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] if none (or expired, or a descendant of a
    /// revoked token).
    pub async fn lookup_accessor(&self, accessor: &str) -> Result<Arc<TokenInfo>> {
        let h = self.hash_of_accessor(accessor).await?;
        self.live_token(&h)
            .await?
            .map(|(i, _)| i)
            .ok_or_else(|| EngineError::NotFound("no token with that accessor".into()))
    }

    /// Revokes the token with this accessor, and with it every token it
    /// made, recursively (they are alive only while their parents are; see
    /// [`Engine::lookup_token`]). Idempotent on this server.
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown accessor.
    pub async fn revoke_accessor(&self, accessor: &str) -> Result<()> {
        let h = self.hash_of_accessor(accessor).await?;
        let key = format!("token/{}", hex_encode(&h));
        let store = self.store();
        store.meta_delete(&key).await?;
        store.meta_delete(&format!("accessor/{accessor}")).await?;
        // Again, after the accessor is gone: a renewal that read the token
        // before the first delete may have written it back (renewals check
        // the accessor after writing; see `renew_accessor`).
        store.meta_delete(&key).await?;
        self.inner
            .auth
            .accessors
            .write()
            .map_err(lock_err)?
            .remove(accessor);
        self.cache_token(&h, None)?;
        Ok(())
    }

    /// Revokes the token with this accessor but not the tokens it made:
    /// its children become orphans (Vault's `revoke-orphan`). A child made
    /// while this runs may be revoked with it (never left with a dead
    /// parent and alive).
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown accessor; [`EngineError::Store`].
    pub async fn revoke_orphan_accessor(&self, accessor: &str) -> Result<()> {
        // Known first, so an unknown accessor is refused before any write.
        self.hash_of_accessor(accessor).await?;
        let store = self.store();
        for (key, body) in store.meta_list("token/").await? {
            let Ok(mut child) = serde_json::from_slice::<TokenInfo>(&body) else {
                continue;
            };
            if child.parent.as_deref() != Some(accessor) {
                continue;
            }
            child.parent = None;
            let b = serde_json::to_vec(&child).map_err(|e| EngineError::Internal(e.to_string()))?;
            store.meta_put(&key, &b).await?;
            let h = key.strip_prefix("token/").and_then(|x| hex_decode(x).ok());
            // A child revoked between the list and the write must stay
            // revoked: its accessor is gone then, so delete it again (as
            // `renew_accessor` does; `revoke_accessor` deletes twice).
            if store
                .meta_get(&format!("accessor/{}", child.accessor))
                .await?
                .is_none()
            {
                store.meta_delete(&key).await?;
                if let Some(h) = h {
                    self.cache_token(&h, None)?;
                }
                continue;
            }
            if let Some(h) = h {
                self.cache_token(&h, Some(Arc::new(child)))?;
            }
        }
        self.revoke_accessor(accessor).await
    }

    /// Extends a renewable token by `increment` seconds (or its TTL), never
    /// past `created_at` plus the smaller of its explicit maximum and the
    /// system maximum, nor past its parent's expiry.
    ///
    /// # Errors
    /// [`EngineError::NotFound`]; [`EngineError::BadRequest`] if it is not
    /// renewable or is already at its maximum.
    pub async fn renew_accessor(&self, accessor: &str, increment: i64) -> Result<TokenInfo> {
        let nf = || EngineError::NotFound("no token with that accessor".into());
        let h = self.hash_of_accessor(accessor).await?;
        let (info, lineage) = self.live_token(&h).await?.ok_or_else(nf)?;
        let mut info = (*info).clone();
        if !info.renewable {
            return Err(EngineError::BadRequest("token is not renewable".into()));
        }
        if increment < 0 {
            return Err(EngineError::BadRequest(
                "increment must not be negative".into(),
            ));
        }
        let at = now();
        let sys_max = self.max_token_ttl();
        let max_ttl = match info.explicit_max_ttl {
            e if e > 0 && e < sys_max => e,
            _ => sys_max,
        };
        let inc = match (increment, info.ttl) {
            (i, _) if i > 0 => i,
            (_, t) if t > 0 => t,
            _ => max_ttl,
        };
        let mut expire = at
            .saturating_add(inc)
            .min(info.created_at.saturating_add(max_ttl));
        if let Some(p) = lineage.expire_at {
            expire = expire.min(p);
        }
        if expire <= at {
            return Err(EngineError::BadRequest(
                "the token is past its maximum TTL and cannot be renewed".into(),
            ));
        }
        info.expire_at = Some(expire);
        info.ttl = expire.saturating_sub(at);
        let body = serde_json::to_vec(&info).map_err(|e| EngineError::Internal(e.to_string()))?;
        let key = format!("token/{}", hex_encode(&h));
        let store = self.store();
        store.meta_put(&key, &body).await?;
        // A revocation between the read and the write must not be undone:
        // if the accessor is gone now, the token was revoked; delete it again.
        if store
            .meta_get(&format!("accessor/{accessor}"))
            .await?
            .is_none()
        {
            store.meta_delete(&key).await?;
            self.cache_token(&h, None)?;
            return Err(nf());
        }
        self.cache_token(&h, Some(Arc::new(info.clone())))?;
        Ok(info)
    }

    /// The parsed rules of a policy (built-in or stored), cached briefly.
    ///
    /// # Errors
    /// [`EngineError::Store`]; [`EngineError::Integrity`] for a stored policy that no longer parses.
    pub async fn policy_rules(&self, name: &str) -> Result<Option<Arc<Vec<PathRule>>>> {
        if let Some((r, at)) = self.inner.auth.policies.read().map_err(lock_err)?.get(name) {
            if at.elapsed() < TOKEN_CACHE {
                return Ok(Some(r.clone()));
            }
        }
        let Some(text) = self.policy_text(name).await? else {
            return Ok(None);
        };
        let rules = if name == "root" {
            Vec::new()
        } else {
            acl::parse_policy(&text).map_err(|_| corrupt("policy"))?
        };
        let rules = Arc::new(rules);
        self.inner
            .auth
            .policies
            .write()
            .map_err(lock_err)?
            .insert(name.to_owned(), (rules.clone(), Instant::now()));
        Ok(Some(rules))
    }

    /// The ACL of a list of policies (unknown names contribute nothing).
    ///
    /// # Errors
    /// As [`Engine::policy_rules`].
    pub async fn acl_for(&self, policies: &[String]) -> Result<Acl> {
        let mut all = Vec::with_capacity(policies.len());
        for p in policies {
            if let Some(r) = self.policy_rules(p).await? {
                all.push(r);
            }
        }
        Ok(Acl::new(all.iter().map(|r| r.as_slice())))
    }

    /// A policy's text.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for a bad name; [`EngineError::Store`].
    pub async fn policy_text(&self, name: &str) -> Result<Option<String>> {
        check_policy_name(name)?;
        if let Some(t) = builtin(name) {
            return Ok(Some(t));
        }
        match self.store().meta_get(&format!("policy/{name}")).await? {
            Some(b) => Ok(Some(String::from_utf8(b).map_err(|_| corrupt("policy"))?)),
            None => Ok(None),
        }
    }

    /// Writes a policy (checked first).
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for a built-in name or a policy that does not parse.
    pub async fn policy_put(&self, name: &str, text: &str) -> Result<()> {
        check_policy_name(name)?;
        if builtin(name).is_some() {
            return Err(EngineError::BadRequest(format!(
                "{name} is a built-in policy and cannot be changed"
            )));
        }
        if text.len() > 64 * 1024 {
            return Err(EngineError::BadRequest("a policy is at most 64 KiB".into()));
        }
        acl::parse_policy(text).map_err(|e| EngineError::BadRequest(e.to_string()))?;
        self.store()
            .meta_put(&format!("policy/{name}"), text.as_bytes())
            .await?;
        self.inner
            .auth
            .policies
            .write()
            .map_err(lock_err)?
            .remove(name);
        Ok(())
    }

    /// Deletes a policy (tokens naming it lose its rules).
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for a built-in; [`EngineError::NotFound`].
    pub async fn policy_delete(&self, name: &str) -> Result<()> {
        check_policy_name(name)?;
        if builtin(name).is_some() {
            return Err(EngineError::BadRequest(format!(
                "{name} is a built-in policy and cannot be deleted"
            )));
        }
        if !self.store().meta_delete(&format!("policy/{name}")).await? {
            return Err(EngineError::NotFound(format!("policy {name}")));
        }
        self.inner
            .auth
            .policies
            .write()
            .map_err(lock_err)?
            .remove(name);
        Ok(())
    }

    /// Every policy name (built-in ones first).
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub async fn policy_list(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = std::iter::once("root")
            .chain(ROLES)
            .map(str::to_owned)
            .collect();
        for (n, _) in self.store().meta_list("policy/").await? {
            if let Some(p) = n.strip_prefix("policy/") {
                out.push(p.to_owned());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_template_parses_for_exact_and_glob_keys() {
        for role in ROLES {
            for keys in ["*", "billing-*", "billing-1"] {
                if role == "admin" && keys != "*" {
                    // Everything cannot be scoped to some keys.
                    assert!(role_policy(role, keys).is_err());
                    continue;
                }
                let text = role_policy(role, keys).unwrap();
                acl::parse_policy(&text).unwrap_or_else(|e| panic!("{role} {keys}: {e}\n{text}"));
            }
        }
        assert!(role_policy("root", "*").is_err());
        assert!(role_policy("app", "a*b").is_err());
        assert!(role_policy("app", "").is_err());
    }
}
