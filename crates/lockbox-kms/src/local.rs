//! Local providers: a named Lockbox key in the engine, or a raw root key.

use lockbox_core::envelope::DATA_KEY_LEN;
use lockbox_core::{AeadKey, Algorithm, SecretBytes};
use lockbox_engine::Engine;

use crate::error::{KmsError, Result};
use crate::{bound_context, BoxFuture, Context, Provider, WrappedKey};

/// A named Lockbox key as KEK: the data key is encrypted by the engine in
/// the Vault Transit format (`vault:vN:...`), with the bound context as
/// associated data. With [`LocalProvider::derived`], the context is also the
/// key-derivation context of a `derived` key, so every context (tenant) has
/// its own derived KEK.
///
/// Rotating the Lockbox key needs nothing here: old data keys unwrap under
/// their version; new ones are wrapped under the latest.
#[derive(Clone)]
pub struct LocalProvider {
    engine: Engine,
    name: String,
    derived: bool,
}

impl LocalProvider {
    /// The Lockbox key `name` (created beforehand, e.g. `aes256-gcm96`).
    #[must_use]
    pub fn new(engine: Engine, name: &str) -> Self {
        LocalProvider {
            engine,
            name: name.to_owned(),
            derived: false,
        }
    }

    /// The Lockbox key `name`, created with `derived: true`: a KEK derived
    /// per encryption context.
    #[must_use]
    pub fn derived(engine: Engine, name: &str) -> Self {
        LocalProvider {
            engine,
            name: name.to_owned(),
            derived: true,
        }
    }
}

impl Provider for LocalProvider {
    fn provider_id(&self) -> &str {
        "local"
    }

    fn key_id(&self) -> &str {
        &self.name
    }

    fn wrap<'a>(
        &'a self,
        key: &'a SecretBytes,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<WrappedKey>> {
        Box::pin(async move {
            let aad = bound_context(ctx)?;
            let derivation: &[u8] = if self.derived { &aad } else { &[] };
            let ct = self
                .engine
                .encrypt(&self.name, key.expose_secret(), derivation, &aad, None)
                .await?;
            Ok(WrappedKey {
                provider: self.provider_id().to_owned(),
                key_id: self.name.clone(),
                wrapped: ct.into_bytes(),
            })
        })
    }

    fn unwrap<'a>(
        &'a self,
        w: &'a WrappedKey,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<SecretBytes>> {
        Box::pin(async move {
            let aad = bound_context(ctx)?;
            let derivation: &[u8] = if self.derived { &aad } else { &[] };
            let ct = std::str::from_utf8(&w.wrapped).map_err(|_| KmsError::AuthenticationFailed)?;
            let pt = self
                .engine
                .decrypt(&self.name, ct, derivation, &aad)
                .await?;
            if pt.len() != DATA_KEY_LEN {
                return Err(KmsError::AuthenticationFailed);
            }
            Ok(SecretBytes::new(pt))
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let info = self.engine.read_key(&self.name).await?;
            if info.derived != self.derived {
                return Err(KmsError::Config(format!(
                    "Lockbox key {} is {}derived; use LocalProvider::{}",
                    self.name,
                    if info.derived { "" } else { "not " },
                    if info.derived { "derived" } else { "new" }
                )));
            }
            Ok(())
        })
    }
}

/// A raw 256-bit root key as KEK (AES-256-GCM, random nonce, the bound
/// context as associated data). For a root key held outside Lockbox's
/// store, e.g. the key a deployment's `LOCKBOX_MASTER_KEY` already carries.
pub struct RootKeyProvider {
    key: AeadKey,
    key_id: String,
}

impl RootKeyProvider {
    /// `key` (32 bytes) named `key_id` in envelopes.
    ///
    /// # Errors
    /// [`KmsError::Format`] for a key that is not 32 bytes.
    pub fn new(key: &SecretBytes, key_id: &str) -> Result<Self> {
        if key_id.is_empty() {
            return Err(KmsError::Config(
                "a root key needs a non-empty key id".into(),
            ));
        }
        Ok(RootKeyProvider {
            key: AeadKey::new(Algorithm::Aes256Gcm, key.expose_secret())?,
            key_id: key_id.to_owned(),
        })
    }
}

impl Provider for RootKeyProvider {
    fn provider_id(&self) -> &str {
        "local-root"
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn wrap<'a>(
        &'a self,
        key: &'a SecretBytes,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<WrappedKey>> {
        Box::pin(async move {
            let aad = bound_context(ctx)?;
            Ok(WrappedKey {
                provider: self.provider_id().to_owned(),
                key_id: self.key_id.clone(),
                wrapped: self.key.seal_random_nonce(&aad, key.expose_secret())?,
            })
        })
    }

    fn unwrap<'a>(
        &'a self,
        w: &'a WrappedKey,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<SecretBytes>> {
        Box::pin(async move {
            let aad = bound_context(ctx)?;
            let pt = self.key.open_with_nonce_prefix(&aad, &w.wrapped)?;
            if pt.len() != DATA_KEY_LEN {
                return Err(KmsError::AuthenticationFailed);
            }
            Ok(SecretBytes::new(pt))
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}
