//! Envelope encryption over providers: a data key per message (or per
//! cache window), wrapped by every configured KEK; decryption succeeds if
//! any one of them can unwrap it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lockbox_core::envelope::{self as fmt, canonical_context};
use lockbox_core::{Algorithm, SecretBytes};

use crate::cache::{CacheStats, CachingMaterials};
use crate::error::{KmsError, Result};
use crate::{Context, Provider, WrappedKey};

/// Counters of an [`Envelope`]: the cache's, plus calls made to providers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeStats {
    /// Cache counters (all zero without a cache).
    pub cache: CacheStats,
    /// Calls to providers (generate, wrap, unwrap), successful or not.
    pub provider_calls: u64,
}

/// Envelope encryption under one or more KEKs.
///
/// The first provider generates each data key; every other provider wraps
/// it too. Every KEK wraps with the message's encryption context bound, and
/// the context is authenticated in the envelope header.
pub struct Envelope {
    providers: Vec<Arc<dyn Provider>>,
    algorithm: Algorithm,
    cache: Option<Arc<CachingMaterials>>,
    provider_set: Vec<u8>,
    calls: AtomicU64,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field(
                "providers",
                &self
                    .providers
                    .iter()
                    .map(|p| p.describe())
                    .collect::<Vec<_>>(),
            )
            .field("algorithm", &self.algorithm)
            .field("cached", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl Envelope {
    /// Envelopes under `providers` (1 to 16), AES-256-GCM, no cache.
    ///
    /// # Errors
    /// [`KmsError::Config`] for no or too many providers.
    pub fn new(providers: Vec<Arc<dyn Provider>>) -> Result<Self> {
        if providers.is_empty() || providers.len() > fmt::MAX_WRAPPED_KEYS {
            return Err(KmsError::Config(format!(
                "an envelope needs 1 to {} key providers",
                fmt::MAX_WRAPPED_KEYS
            )));
        }
        let mut provider_set = Vec::new();
        for p in &providers {
            for part in [p.provider_id(), p.key_id()] {
                provider_set.extend_from_slice(&(part.len() as u64).to_be_bytes());
                provider_set.extend_from_slice(part.as_bytes());
            }
        }
        Ok(Envelope {
            providers,
            algorithm: Algorithm::Aes256Gcm,
            cache: None,
            provider_set,
            calls: AtomicU64::new(0),
        })
    }

    /// Use `cache` for data keys (it may be shared by many envelopes: its
    /// partitions include the provider set).
    #[must_use]
    pub fn with_cache(mut self, cache: Arc<CachingMaterials>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Body algorithm (AES-256-GCM by default; ChaCha20-Poly1305,
    /// XChaCha20-Poly1305 and AES-256-GCM-SIV are also accepted).
    ///
    /// # Errors
    /// [`KmsError::Config`] for an algorithm envelopes cannot use.
    pub fn with_algorithm(mut self, alg: Algorithm) -> Result<Self> {
        if alg.is_deterministic() || alg.key_len() != fmt::DATA_KEY_LEN {
            return Err(KmsError::Config(format!("{alg} cannot encrypt envelopes")));
        }
        self.algorithm = alg;
        Ok(self)
    }

    /// The cache, if any.
    #[must_use]
    pub fn cache(&self) -> Option<&Arc<CachingMaterials>> {
        self.cache.as_ref()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> EnvelopeStats {
        EnvelopeStats {
            cache: self.cache.as_ref().map(|c| c.stats()).unwrap_or_default(),
            provider_calls: self.calls.load(Ordering::Relaxed),
        }
    }

    async fn fresh_key(&self, ctx: &Context) -> Result<(SecretBytes, Vec<WrappedKey>)> {
        let (first, rest) = self
            .providers
            .split_first()
            .ok_or_else(|| KmsError::Config("no key provider".into()))?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let dk = first.generate_data_key(ctx).await?;
        let mut wrapped = vec![dk.wrapped];
        for p in rest {
            self.calls.fetch_add(1, Ordering::Relaxed);
            wrapped.push(p.wrap(&dk.plaintext, ctx).await?);
        }
        Ok((dk.plaintext, wrapped))
    }

    /// Encrypt `plaintext` for `tenant` with context `ctx`, binary form.
    /// `tenant` partitions the cache (use `""` when there are no tenants).
    /// Nothing is returned (or written) unless every KEK wrapped the key.
    ///
    /// # Errors
    /// Any provider's error (unavailable, rejected...); [`KmsError::Format`]
    /// for a context too large.
    pub async fn encrypt_binary(
        &self,
        tenant: &str,
        ctx: &Context,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let n = plaintext.len();
        let (key, wrapped) = match &self.cache {
            None => self.fresh_key(ctx).await?,
            Some(cache) => {
                let mut partition = self.provider_set.clone();
                partition.extend_from_slice(&canonical_context(ctx)?);
                match cache.get_encrypt(tenant, &partition, n) {
                    Some(hit) => hit,
                    None => {
                        let (k, w) = self.fresh_key(ctx).await?;
                        cache.put_encrypt(tenant, &partition, &k, &w, n);
                        (k, w)
                    }
                }
            }
        };
        Ok(fmt::seal_binary(
            self.algorithm,
            key.expose_secret(),
            ctx,
            &wrapped,
            plaintext,
        )?)
    }

    /// As [`Envelope::encrypt_binary`], text form (`lbxe1:`).
    ///
    /// # Errors
    /// As [`Envelope::encrypt_binary`].
    pub async fn encrypt(&self, tenant: &str, ctx: &Context, plaintext: &[u8]) -> Result<String> {
        let bin = self.encrypt_binary(tenant, ctx, plaintext).await?;
        let mut out = String::with_capacity(fmt::TEXT_PREFIX.len() + bin.len() * 4 / 3 + 4);
        out.push_str(fmt::TEXT_PREFIX);
        lockbox_core::encoding::b64url_encode_into(&bin[fmt::BINARY_MAGIC.len()..], &mut out);
        Ok(out)
    }

    /// Decrypt an envelope (text form). With `expected`, the stored context
    /// must equal it (a ciphertext moved to another row or tenant fails).
    /// Returns the plaintext and the stored context.
    ///
    /// # Errors
    /// Structural: [`KmsError::Format`]; [`KmsError::NoProvider`] when no
    /// configured provider matches a wrapped key; a provider's error when
    /// the matching ones fail; [`KmsError::AuthenticationFailed`].
    pub async fn decrypt(
        &self,
        tenant: &str,
        ciphertext: &str,
        expected: Option<&Context>,
    ) -> Result<(Vec<u8>, Context)> {
        self.open(tenant, fmt::parse_text(ciphertext)?, expected)
            .await
    }

    /// As [`Envelope::decrypt`], binary form.
    ///
    /// # Errors
    /// As [`Envelope::decrypt`].
    pub async fn decrypt_binary(
        &self,
        tenant: &str,
        ciphertext: &[u8],
        expected: Option<&Context>,
    ) -> Result<(Vec<u8>, Context)> {
        self.open(tenant, fmt::parse_binary(ciphertext.to_vec())?, expected)
            .await
    }

    async fn open(
        &self,
        tenant: &str,
        parsed: fmt::Parsed,
        expected: Option<&Context>,
    ) -> Result<(Vec<u8>, Context)> {
        if let Some(e) = expected {
            if *e != parsed.header.context {
                return Err(KmsError::AuthenticationFailed);
            }
        }
        let ctx = parsed.header.context.clone();
        let n = parsed.as_bytes().len();
        let id = parsed.header_bytes().to_vec();
        if let Some(cache) = &self.cache {
            if let Some(k) = cache.get_decrypt(tenant, &id, n) {
                let pt = parsed.open(k.expose_secret(), None)?;
                return Ok((pt, ctx));
            }
        }
        let key = self.unwrap_any(&parsed.header.wrapped_keys, &ctx).await?;
        let pt = parsed.open(key.expose_secret(), None)?;
        // Cached only once the body authenticated with it.
        if let Some(cache) = &self.cache {
            cache.put_decrypt(tenant, &id, &key, n);
        }
        Ok((pt, ctx))
    }

    async fn unwrap_any(&self, wrapped: &[WrappedKey], ctx: &Context) -> Result<SecretBytes> {
        let mut last: Option<KmsError> = None;
        for w in wrapped {
            for p in self.providers.iter().filter(|p| p.can_unwrap(w)) {
                self.calls.fetch_add(1, Ordering::Relaxed);
                match p.unwrap(w, ctx).await {
                    Ok(k) => return Ok(k),
                    // Prefer reporting an availability problem over a refusal.
                    Err(e) => {
                        if !matches!(last, Some(KmsError::Unavailable { .. }))
                            || matches!(e, KmsError::Unavailable { .. })
                        {
                            last = Some(e);
                        }
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| KmsError::NoProvider {
            wrapped_by: wrapped
                .iter()
                .map(|w| format!("{}:{}", w.provider, w.key_id))
                .collect(),
        }))
    }
}
