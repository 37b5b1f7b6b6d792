//! Key derivation: HKDF (RFC 5869) with SHA-256 / SHA-512, PBKDF2-HMAC-SHA512
//! and Argon2id (RFC 9106) for passphrase-derived keys, and HMAC-SHA256.

use aws_lc_rs::{hkdf, hmac, pbkdf2};

use crate::error::{Error, Result};
use crate::secret::SecretBytes;

/// Hash function for HKDF.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HkdfHash {
    /// HKDF-SHA256 (output at most 8160 bytes).
    Sha256,
    /// HKDF-SHA512 (output at most 16320 bytes).
    Sha512,
}

struct OutLen(usize);
impl hkdf::KeyType for OutLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF extract-then-expand: `len` bytes from `ikm`, `salt` (empty means the
/// RFC's all-zero salt) and `info`.
///
/// # Errors
/// [`Error::InvalidArgument`] if `len` is 0 or more than 255 hash lengths.
pub fn hkdf(
    hash: HkdfHash,
    ikm: &[u8],
    salt: &[u8],
    info: &[u8],
    len: usize,
) -> Result<SecretBytes> {
    let (alg, hash_len) = match hash {
        HkdfHash::Sha256 => (hkdf::HKDF_SHA256, 32),
        HkdfHash::Sha512 => (hkdf::HKDF_SHA512, 64),
    };
    if len == 0 || len > 255 * hash_len {
        return Err(Error::InvalidArgument(format!(
            "HKDF output must be 1..={} bytes, asked for {len}",
            255 * hash_len
        )));
    }
    let prk = hkdf::Salt::new(alg, salt).extract(ikm);
    let info = [info];
    let okm = prk
        .expand(&info, OutLen(len))
        .map_err(|_| Error::Crypto("hkdf expand"))?;
    let mut out = vec![0u8; len];
    okm.fill(&mut out).map_err(|_| Error::Crypto("hkdf fill"))?;
    Ok(SecretBytes::new(out))
}

/// HKDF-SHA256, the common case.
///
/// # Errors
/// As [`hkdf()`].
pub fn hkdf_sha256(ikm: &[u8], salt: &[u8], info: &[u8], len: usize) -> Result<SecretBytes> {
    hkdf(HkdfHash::Sha256, ikm, salt, info, len)
}

/// HMAC-SHA256 over the concatenation of `parts`, under a key already set up.
fn sign_parts(k: &hmac::Key, parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(k);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// HMAC-SHA256 of `data` under `key`.
#[must_use]
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    hmac_sha256_parts(key, &[data])
}

/// Two HMAC-SHA256 tags under one key, set up once: over the concatenation
/// of `parts`, and over `other` (a chain's entry MAC and its key ratchet).
#[must_use]
pub fn hmac_sha256_parts_and(key: &[u8], parts: &[&[u8]], other: &[u8]) -> ([u8; 32], [u8; 32]) {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    (sign_parts(&k, parts), sign_parts(&k, &[other]))
}

/// HMAC-SHA256 over the concatenation of `parts` (no copying).
#[must_use]
pub fn hmac_sha256_parts(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    sign_parts(&hmac::Key::new(hmac::HMAC_SHA256, key), parts)
}

/// Verify an HMAC-SHA256 tag (full 32 bytes, or a truncation of at least
/// 16 bytes) in constant time.
///
/// # Errors
/// [`Error::AuthenticationFailed`] on mismatch, [`Error::InvalidArgument`] for a
/// tag shorter than 16 or longer than 32 bytes.
pub fn hmac_sha256_verify(key: &[u8], data: &[u8], tag: &[u8]) -> Result<()> {
    if !(16..=32).contains(&tag.len()) {
        return Err(Error::InvalidArgument(format!(
            "HMAC-SHA256 tags are 16..=32 bytes, got {}",
            tag.len()
        )));
    }
    let full = hmac_sha256(key, data);
    if crate::secret::ct_eq(&full[..tag.len()], tag) {
        Ok(())
    } else {
        Err(Error::AuthenticationFailed)
    }
}

/// The smallest PBKDF2 iteration count accepted for passphrase-derived keys.
pub const PBKDF2_MIN_ITERATIONS: u32 = 100_000;
/// The default PBKDF2-HMAC-SHA512 iteration count (OWASP 2023 guidance).
pub const PBKDF2_DEFAULT_ITERATIONS: u32 = 210_000;

/// PBKDF2-HMAC-SHA512 for a passphrase-derived key. Refuses fewer than
/// [`PBKDF2_MIN_ITERATIONS`] iterations and salts shorter than 16 bytes.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the parameter that is too weak.
pub fn pbkdf2_sha512(
    passphrase: &[u8],
    salt: &[u8],
    iterations: u32,
    len: usize,
) -> Result<SecretBytes> {
    if iterations < PBKDF2_MIN_ITERATIONS {
        return Err(Error::InvalidArgument(format!(
            "PBKDF2 needs at least {PBKDF2_MIN_ITERATIONS} iterations, got {iterations}"
        )));
    }
    if salt.len() < 16 {
        return Err(Error::InvalidArgument(format!(
            "PBKDF2 salt must be at least 16 bytes, got {}",
            salt.len()
        )));
    }
    pbkdf2_sha512_raw(passphrase, salt, iterations, len)
}

/// PBKDF2-HMAC-SHA512 with no policy checks (for interoperability and test
/// vectors). Prefer [`pbkdf2_sha512`].
///
/// # Errors
/// [`Error::InvalidArgument`] for zero iterations or an output length of 0.
pub fn pbkdf2_sha512_raw(
    passphrase: &[u8],
    salt: &[u8],
    iterations: u32,
    len: usize,
) -> Result<SecretBytes> {
    let iters = std::num::NonZeroU32::new(iterations)
        .ok_or_else(|| Error::InvalidArgument("PBKDF2 iterations must be at least 1".into()))?;
    if len == 0 {
        return Err(Error::InvalidArgument(
            "PBKDF2 output length must be at least 1".into(),
        ));
    }
    let mut out = vec![0u8; len];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iters,
        salt,
        passphrase,
        &mut out,
    );
    Ok(SecretBytes::new(out))
}

/// Argon2id cost parameters.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes.
    fn default() -> Self {
        Argon2Params {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 4,
        }
    }
}

/// Argon2id (version 0x13) of `passphrase` with `salt` (at least 8 bytes).
///
/// # Errors
/// [`Error::InvalidArgument`] if the parameters or lengths are out of Argon2's range.
pub fn argon2id(
    passphrase: &[u8],
    salt: &[u8],
    params: Argon2Params,
    len: usize,
) -> Result<SecretBytes> {
    argon2id_with_secret(passphrase, salt, &[], &[], params, len)
}

/// Argon2id with an optional secret (pepper) and associated data.
///
/// # Errors
/// As [`argon2id`].
pub fn argon2id_with_secret(
    passphrase: &[u8],
    salt: &[u8],
    secret: &[u8],
    associated_data: &[u8],
    params: Argon2Params,
    len: usize,
) -> Result<SecretBytes> {
    let p = argon2::ParamsBuilder::new()
        .m_cost(params.memory_kib)
        .t_cost(params.iterations)
        .p_cost(params.parallelism)
        .output_len(len)
        .data(
            argon2::AssociatedData::new(associated_data)
                .map_err(|e| Error::InvalidArgument(format!("argon2 associated data: {e}")))?,
        )
        .build()
        .map_err(|e| Error::InvalidArgument(format!("argon2 parameters: {e}")))?;
    let a = if secret.is_empty() {
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p)
    } else {
        argon2::Argon2::new_with_secret(
            secret,
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            p,
        )
        .map_err(|e| Error::InvalidArgument(format!("argon2 secret: {e}")))?
    };
    let mut out = vec![0u8; len];
    a.hash_password_into(passphrase, salt, &mut out)
        .map_err(|e| Error::InvalidArgument(format!("argon2: {e}")))?;
    Ok(SecretBytes::new(out))
}
