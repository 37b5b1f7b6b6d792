//! Tenants: a KEK per tenant, isolation, crypto-shredding.
//!
//! Each tenant's data keys are wrapped by the tenant's own KEK: the Lockbox
//! key `tenant-<id>` (created on first use), or a KMS key the tenant brings
//! (BYOK, e.g. an [`crate::AwsKmsProvider`] on the tenant's key). The tenant
//! id is also added to every context as `lockbox:tenant`, so a ciphertext
//! moved to another tenant fails even before any KEK is asked.
//!
//! Crypto-shredding destroys the tenant's Lockbox key (the engine deletes
//! every version's material), purges the tenant's cache partition so no
//! cached data key outlives it, and reports a `TENANT_KEY_DESTROYED` event
//! through the [`AuditHook`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lockbox_engine::{ConfigUpdate, CreateOptions, Engine};
use serde_json::{json, Value};

use crate::cache::CachingMaterials;
use crate::envelope::Envelope;
use crate::error::{KmsError, Result};
use crate::local::LocalProvider;
use crate::{Context, Provider};

/// The context key that carries the tenant id.
pub const TENANT_CONTEXT_KEY: &str = "lockbox:tenant";

/// A security event for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsEvent {
    /// `TENANT_KEY_DESTROYED`.
    pub kind: &'static str,
    /// Tenant id.
    pub tenant: String,
    /// The destroyed key (`local:tenant-<id>`).
    pub key: String,
    /// Who asked.
    pub by: String,
    /// When (Unix seconds).
    pub at: i64,
    /// Cached data keys wiped.
    pub purged_cache_entries: usize,
}

impl KmsEvent {
    /// The event as a JSON object (for an audit chain entry).
    #[must_use]
    pub fn to_json(&self) -> Value {
        json!({
            "event": self.kind,
            "tenant": self.tenant,
            "key": self.key,
            "by": self.by,
            "at": self.at,
            "purged_cache_entries": self.purged_cache_entries,
        })
    }
}

/// Where security events go (the server's audit log).
pub type AuditHook = Arc<dyn Fn(&KmsEvent) + Send + Sync>;

/// Per-tenant envelope encryption over one engine and one shared cache.
pub struct Tenants {
    engine: Engine,
    cache: Option<Arc<CachingMaterials>>,
    byok: Mutex<HashMap<String, Arc<dyn Provider>>>,
    envelopes: Mutex<HashMap<String, Arc<Envelope>>>,
    hook: Option<AuditHook>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Check a tenant id: 1 to 64 of `[A-Za-z0-9_.-]`.
///
/// # Errors
/// [`KmsError::Config`] otherwise.
pub fn check_tenant(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(KmsError::Config(format!(
            "invalid tenant id {id:?}: 1 to 64 of A-Z a-z 0-9 _ - ."
        )));
    }
    Ok(())
}

impl Tenants {
    /// Tenants over `engine`, optionally sharing `cache`.
    #[must_use]
    pub fn new(engine: Engine, cache: Option<Arc<CachingMaterials>>) -> Self {
        Tenants {
            engine,
            cache,
            byok: Mutex::new(HashMap::new()),
            envelopes: Mutex::new(HashMap::new()),
            hook: None,
        }
    }

    /// Send security events to `hook`.
    #[must_use]
    pub fn with_audit_hook(mut self, hook: AuditHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The Lockbox key name of a tenant's KEK.
    #[must_use]
    pub fn key_name(tenant: &str) -> String {
        format!("tenant-{tenant}")
    }

    /// Use the tenant's own KMS key (BYOK) instead of a Lockbox key.
    ///
    /// # Errors
    /// [`KmsError::Config`] for an invalid tenant id.
    pub fn set_byok(&self, tenant: &str, provider: Arc<dyn Provider>) -> Result<()> {
        check_tenant(tenant)?;
        lock(&self.byok).insert(tenant.to_owned(), provider);
        lock(&self.envelopes).remove(tenant);
        Ok(())
    }

    async fn envelope(&self, tenant: &str) -> Result<Arc<Envelope>> {
        check_tenant(tenant)?;
        if let Some(e) = lock(&self.envelopes).get(tenant) {
            return Ok(e.clone());
        }
        let byok = lock(&self.byok).get(tenant).cloned();
        let provider: Arc<dyn Provider> = match byok {
            Some(p) => p,
            None => {
                let name = Self::key_name(tenant);
                self.engine
                    .create_key(&name, &CreateOptions::default())
                    .await?;
                Arc::new(LocalProvider::new(self.engine.clone(), &name))
            }
        };
        let mut env = Envelope::new(vec![provider])?;
        if let Some(c) = &self.cache {
            env = env.with_cache(c.clone());
        }
        let env = Arc::new(env);
        lock(&self.envelopes).insert(tenant.to_owned(), env.clone());
        Ok(env)
    }

    fn tenant_context(tenant: &str, ctx: &Context) -> Result<Context> {
        if ctx.contains_key(TENANT_CONTEXT_KEY) {
            return Err(KmsError::Config(format!(
                "the context key {TENANT_CONTEXT_KEY} is reserved"
            )));
        }
        let mut c = ctx.clone();
        c.insert(TENANT_CONTEXT_KEY.to_owned(), tenant.to_owned());
        Ok(c)
    }

    /// Encrypt for `tenant` (its KEK is created on first use).
    ///
    /// # Errors
    /// As [`Envelope::encrypt`]; [`KmsError::KeyDestroyed`] after shredding.
    pub async fn encrypt(&self, tenant: &str, ctx: &Context, plaintext: &[u8]) -> Result<String> {
        let c = Self::tenant_context(tenant, ctx)?;
        self.envelope(tenant)
            .await?
            .encrypt(tenant, &c, plaintext)
            .await
    }

    /// Decrypt `tenant`'s envelope; `ctx` must be the context it was
    /// encrypted with (without the tenant key, which is added).
    ///
    /// # Errors
    /// [`KmsError::AuthenticationFailed`] for another tenant's or row's
    /// ciphertext; [`KmsError::KeyDestroyed`] after shredding.
    pub async fn decrypt(&self, tenant: &str, ciphertext: &str, ctx: &Context) -> Result<Vec<u8>> {
        let c = Self::tenant_context(tenant, ctx)?;
        Ok(self
            .envelope(tenant)
            .await?
            .decrypt(tenant, ciphertext, Some(&c))
            .await?
            .0)
    }

    /// Crypto-shred `tenant`: destroy its Lockbox KEK, wipe its cached data
    /// keys, and report `TENANT_KEY_DESTROYED`. Afterwards every envelope
    /// of the tenant fails with [`KmsError::KeyDestroyed`]. For a BYOK
    /// tenant, shredding is the tenant's own act at their KMS (schedule key
    /// deletion); this call then only wipes the cache.
    ///
    /// # Errors
    /// The engine's error if the key cannot be destroyed.
    pub async fn shred(&self, tenant: &str, by: &str) -> Result<KmsEvent> {
        check_tenant(tenant)?;
        let byok = lock(&self.byok).get(tenant).map(|p| p.describe());
        let key = match byok {
            Some(d) => d,
            None => {
                let name = Self::key_name(tenant);
                self.engine
                    .configure(
                        &name,
                        &ConfigUpdate {
                            deletion_allowed: Some(true),
                            ..ConfigUpdate::default()
                        },
                    )
                    .await?;
                self.engine.destroy(&name, by).await?;
                format!("local:{name}")
            }
        };
        lock(&self.envelopes).remove(tenant);
        let purged = self
            .cache
            .as_ref()
            .map(|c| c.purge_tenant(tenant))
            .unwrap_or(0);
        let ev = KmsEvent {
            kind: "TENANT_KEY_DESTROYED",
            tenant: tenant.to_owned(),
            key,
            by: by.to_owned(),
            at: lockbox_engine::now(),
            purged_cache_entries: purged,
        };
        if let Some(h) = &self.hook {
            h(&ev);
        }
        Ok(ev)
    }
}
