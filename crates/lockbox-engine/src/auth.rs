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
    /// Unix seconds; `None` never expires.
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
        self.expire_at.map_or(0, |e| (e - at).max(0))
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
    /// Seconds (0 = no expiry; only allowed to root and sudo callers).
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

/// Caches of tokens and parsed policies (cleared when sealed).
#[derive(Default)]
pub(crate) struct AuthCache {
    tokens: RwLock<HashMap<Vec<u8>, Cached<MaybeToken>>>,
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

    /// Creates a token. The caller checks that it may grant the policies.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for an unknown policy, a negative TTL or
    /// `root` in the list; [`EngineError::Sealed`]; [`EngineError::Store`].
    pub async fn create_token(&self, req: &TokenRequest) -> Result<(String, TokenInfo)> {
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
        let raw = SecretBytes::random(32)?;
        let token = format!("lbs.{}", b64url_encode(raw.expose_secret()));
        let mut acc = [0u8; 18];
        fill_random(&mut acc)?;
        let at = now();
        let mut ttl = req.ttl;
        if req.explicit_max_ttl > 0 && (ttl == 0 || ttl > req.explicit_max_ttl) {
            ttl = req.explicit_max_ttl;
        }
        let mut policies = req.policies.clone();
        policies.sort();
        policies.dedup();
        let info = TokenInfo {
            accessor: b64url_encode(&acc),
            policies,
            display_name: if req.display_name.is_empty() {
                "token".into()
            } else {
                req.display_name.chars().take(128).collect()
            },
            created_at: at,
            expire_at: (ttl > 0).then_some(at + ttl),
            ttl,
            renewable: req.renewable,
            explicit_max_ttl: req.explicit_max_ttl,
            meta: req.meta.clone(),
            rate_limit: req.rate_limit,
        };
        let h = hex_encode(&self.token_hash(&token)?);
        let body = serde_json::to_vec(&info).map_err(|e| EngineError::Internal(e.to_string()))?;
        let store = self.store();
        store
            .meta_put(&format!("accessor/{}", info.accessor), h.as_bytes())
            .await?;
        store.meta_put(&format!("token/{h}"), &body).await?;
        Ok((token, info))
    }

    async fn token_by_hash(&self, hash: &[u8]) -> Result<Option<Arc<TokenInfo>>> {
        if let Some((info, at)) = self.inner.auth.tokens.read().map_err(lock_err)?.get(hash) {
            if at.elapsed() < TOKEN_CACHE {
                return Ok(info.clone());
            }
        }
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
        let mut cache = self.inner.auth.tokens.write().map_err(lock_err)?;
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(hash.to_vec(), (info.clone(), Instant::now()));
        Ok(info)
    }

    /// The token's information, or `None` if it is unknown, revoked or
    /// expired. The root token is reported with the `root` policy.
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
                    accessor: "root".into(),
                    policies: vec!["root".into()],
                    display_name: "root".into(),
                    created_at: 0,
                    expire_at: None,
                    ttl: 0,
                    renewable: false,
                    explicit_max_ttl: 0,
                    meta: BTreeMap::new(),
                    rate_limit: 0,
                })
            });
            return Ok(Some(root.clone()));
        }
        let info = self.token_by_hash(&h).await?;
        Ok(info.filter(|i| i.expire_at.map_or(true, |e| e > now())))
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
    /// [`EngineError::NotFound`] if none (or expired).
    pub async fn lookup_accessor(&self, accessor: &str) -> Result<Arc<TokenInfo>> {
        let h = self.hash_of_accessor(accessor).await?;
        self.token_by_hash(&h)
            .await?
            .filter(|i| i.expire_at.map_or(true, |e| e > now()))
            .ok_or_else(|| EngineError::NotFound("no token with that accessor".into()))
    }

    /// Revokes the token with this accessor (idempotent on this server).
    ///
    /// # Errors
    /// [`EngineError::NotFound`] for an unknown accessor.
    pub async fn revoke_accessor(&self, accessor: &str) -> Result<()> {
        let h = self.hash_of_accessor(accessor).await?;
        let store = self.store();
        store
            .meta_delete(&format!("token/{}", hex_encode(&h)))
            .await?;
        store.meta_delete(&format!("accessor/{accessor}")).await?;
        self.inner
            .auth
            .tokens
            .write()
            .map_err(lock_err)?
            .insert(h, (None, Instant::now()));
        Ok(())
    }

    /// Extends a renewable token by `increment` seconds (or its TTL), never
    /// past its explicit maximum.
    ///
    /// # Errors
    /// [`EngineError::NotFound`]; [`EngineError::BadRequest`] if it is not renewable.
    pub async fn renew_accessor(&self, accessor: &str, increment: i64) -> Result<TokenInfo> {
        let h = self.hash_of_accessor(accessor).await?;
        let mut info = (*self
            .token_by_hash(&h)
            .await?
            .filter(|i| i.expire_at.map_or(true, |e| e > now()))
            .ok_or_else(|| EngineError::NotFound("no token with that accessor".into()))?)
        .clone();
        if !info.renewable {
            return Err(EngineError::BadRequest("token is not renewable".into()));
        }
        if increment < 0 {
            return Err(EngineError::BadRequest(
                "increment must not be negative".into(),
            ));
        }
        let at = now();
        let inc = if increment > 0 { increment } else { info.ttl };
        let mut expire = at + inc;
        if info.explicit_max_ttl > 0 {
            expire = expire.min(info.created_at + info.explicit_max_ttl);
        }
        if inc > 0 {
            info.expire_at = Some(expire);
            info.ttl = expire - at;
        }
        let body = serde_json::to_vec(&info).map_err(|e| EngineError::Internal(e.to_string()))?;
        self.store()
            .meta_put(&format!("token/{}", hex_encode(&h)), &body)
            .await?;
        self.inner
            .auth
            .tokens
            .write()
            .map_err(lock_err)?
            .insert(h, (Some(Arc::new(info.clone())), Instant::now()));
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
                let text = role_policy(role, keys).unwrap();
                acl::parse_policy(&text).unwrap_or_else(|e| panic!("{role} {keys}: {e}\n{text}"));
            }
        }
        assert!(role_policy("root", "*").is_err());
        assert!(role_policy("app", "a*b").is_err());
        assert!(role_policy("app", "").is_err());
    }
}
