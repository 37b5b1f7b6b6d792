//! `lockbox-kms`: key-encryption providers, envelope encryption, the
//! data-key cache and tenants.
//!
//! The public interface is:
//! - the provider contract: [`Provider`], [`DataKey`], [`WrappedKey`];
//! - providers: [`LocalProvider`] (a named Lockbox key), [`RootKeyProvider`]
//!   (a raw root key), [`AwsKmsProvider`] (AWS KMS over its JSON protocol,
//!   SigV4-signed), [`VaultTransitProvider`] (Vault's or Lockbox's Transit);
//! - [`RetryPolicy`]: bounded retries with backoff and jitter;
//! - [`Envelope`]: one-call `encrypt` / `decrypt` of `lbxe1:` envelopes under
//!   one or more providers, optionally through a [`CachingMaterials`] cache;
//! - [`Tenants`]: a KEK per tenant (or the tenant's own KMS key),
//!   isolation through the context, and crypto-shredding.
//!
//! The envelope format itself is pure and lives in `lockbox_core::envelope`.

use std::future::Future;
use std::pin::Pin;

pub use lockbox_core::envelope::{Context, WrappedKey};
use lockbox_core::SecretBytes;

mod aws;
mod cache;
mod envelope;
mod error;
pub mod http;
mod local;
mod retry;
mod tenants;
mod transit;

pub use aws::{AwsCredentials, AwsKmsConfig, AwsKmsProvider};
pub use cache::{CacheLimits, CacheStats, CachingMaterials};
pub use envelope::{Envelope, EnvelopeStats};
pub use error::{KmsError, Result};
pub use local::{LocalProvider, RootKeyProvider};
pub use retry::{Attempt, RetryPolicy};
pub use tenants::{check_tenant, AuditHook, KmsEvent, Tenants, TENANT_CONTEXT_KEY};
pub use transit::{VaultTransitConfig, VaultTransitProvider};

/// A boxed future, so [`Provider`] can be used as `dyn Provider`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A fresh data key: its plaintext (zeroized on drop) and its wrapped form.
#[derive(Debug)]
pub struct DataKey {
    /// The data key. **Never** store or log it.
    pub plaintext: SecretBytes,
    /// The data key wrapped by the provider's KEK.
    pub wrapped: WrappedKey,
}

/// A key-encryption key (KEK) at some provider.
///
/// Every call binds the encryption context: a wrapped key unwraps only with
/// the context it was wrapped with (the providers pass it as associated
/// data, AWS KMS's `EncryptionContext`, or Transit's derivation `context`).
pub trait Provider: Send + Sync {
    /// The kind of provider, recorded in envelopes (`local`, `aws-kms`, ...).
    fn provider_id(&self) -> &str;
    /// The KEK's id at the provider, recorded in envelopes.
    fn key_id(&self) -> &str;
    /// Whether this provider should try to unwrap `w`.
    fn can_unwrap(&self, w: &WrappedKey) -> bool {
        w.provider == self.provider_id() && w.key_id == self.key_id()
    }
    /// A new 256-bit data key, and the same key wrapped by this KEK. By
    /// default a random key and [`Provider::wrap`]; providers with a native
    /// call (KMS `GenerateDataKey`, Transit `datakey`) override it.
    fn generate_data_key<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<DataKey>> {
        Box::pin(async move {
            let plaintext = SecretBytes::random(lockbox_core::envelope::DATA_KEY_LEN)?;
            let wrapped = self.wrap(&plaintext, ctx).await?;
            Ok(DataKey { plaintext, wrapped })
        })
    }
    /// Wrap an existing data key (to add this KEK to an envelope).
    fn wrap<'a>(
        &'a self,
        key: &'a SecretBytes,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<WrappedKey>>;
    /// Unwrap a data key wrapped by this KEK with this context.
    fn unwrap<'a>(
        &'a self,
        w: &'a WrappedKey,
        ctx: &'a Context,
    ) -> BoxFuture<'a, Result<SecretBytes>>;
    /// Whether the provider is reachable and the KEK usable.
    fn health(&self) -> BoxFuture<'_, Result<()>>;
    /// `provider key` for messages.
    fn describe(&self) -> String {
        format!("{} {}", self.provider_id(), self.key_id())
    }
}

/// Context bytes a provider binds: a domain-separation label then the
/// canonical context (never empty, which Transit's derived keys require).
pub(crate) fn bound_context(ctx: &Context) -> Result<Vec<u8>> {
    let mut out = b"lockbox-envelope-v1\0".to_vec();
    out.extend_from_slice(&lockbox_core::envelope::canonical_context(ctx)?);
    Ok(out)
}
