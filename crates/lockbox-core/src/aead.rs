//! Authenticated encryption with associated data.
//!
//! AES-256-GCM (the default), AES-128-GCM (Vault `aes128-gcm96` only),
//! ChaCha20-Poly1305 and AES-256-GCM-SIV come from AWS-LC (`aws-lc-rs`);
//! XChaCha20-Poly1305, which AWS-LC lacks, from RustCrypto's
//! `chacha20poly1305`. All use 128-bit tags and the algorithm's standard nonce
//! size; other sizes are refused.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::aead as awsaead;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;

use crate::error::{Error, Result};
use crate::secret::fill_random;

/// Length of every tag produced here.
pub const TAG_LEN: usize = 16;
/// Longest nonce of any algorithm here (XChaCha20-Poly1305).
pub const MAX_NONCE_LEN: usize = 24;

/// An AEAD algorithm.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES-256 in Galois/Counter Mode, 96-bit random nonce. The default.
    Aes256Gcm,
    /// AES-128-GCM (kept for Vault `aes128-gcm96` compatibility).
    Aes128Gcm,
    /// ChaCha20-Poly1305 (RFC 8439), 96-bit nonce.
    ChaCha20Poly1305,
    /// XChaCha20-Poly1305, 192-bit nonce.
    XChaCha20Poly1305,
    /// AES-256-GCM-SIV (RFC 8452): nonce-misuse resistant.
    Aes256GcmSiv,
    /// AES-SIV (RFC 5297) with a 512-bit key (two AES-256 keys), no nonce:
    /// **deterministic** — the same plaintext and associated data always give
    /// the same ciphertext, which is what equality lookups need and all they
    /// reveal. The construction Tink uses for `DeterministicAead`.
    Aes256Siv,
}

impl Algorithm {
    /// Every algorithm, in identifier order.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Aes256Gcm,
        Algorithm::Aes128Gcm,
        Algorithm::ChaCha20Poly1305,
        Algorithm::XChaCha20Poly1305,
        Algorithm::Aes256GcmSiv,
        Algorithm::Aes256Siv,
    ];

    /// Whether encryption is deterministic (no nonce).
    #[must_use]
    pub const fn is_deterministic(self) -> bool {
        matches!(self, Algorithm::Aes256Siv)
    }

    /// Key length in bytes.
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            Algorithm::Aes128Gcm => 16,
            Algorithm::Aes256Siv => 64,
            _ => 32,
        }
    }

    /// Nonce length in bytes.
    #[must_use]
    pub const fn nonce_len(self) -> usize {
        match self {
            Algorithm::XChaCha20Poly1305 => 24,
            Algorithm::Aes256Siv => 0,
            _ => 12,
        }
    }

    /// Tag length in bytes (always 16).
    #[must_use]
    pub const fn tag_len(self) -> usize {
        TAG_LEN
    }

    /// The one-byte identifier used in the native ciphertext header.
    #[must_use]
    pub const fn id(self) -> u8 {
        match self {
            Algorithm::Aes256Gcm => 1,
            Algorithm::Aes128Gcm => 2,
            Algorithm::ChaCha20Poly1305 => 3,
            Algorithm::XChaCha20Poly1305 => 4,
            Algorithm::Aes256GcmSiv => 5,
            Algorithm::Aes256Siv => 6,
        }
    }

    /// The algorithm with header identifier `id`.
    ///
    /// # Errors
    /// [`Error::UnknownAlgorithm`] for an unassigned identifier.
    pub fn from_id(id: u8) -> Result<Self> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.id() == id)
            .ok_or_else(|| Error::UnknownAlgorithm(format!("id {id}")))
    }

    /// The name used in keyset files, the CLI and the API.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "aes256-gcm",
            Algorithm::Aes128Gcm => "aes128-gcm",
            Algorithm::ChaCha20Poly1305 => "chacha20-poly1305",
            Algorithm::XChaCha20Poly1305 => "xchacha20-poly1305",
            Algorithm::Aes256GcmSiv => "aes256-gcm-siv",
            Algorithm::Aes256Siv => "aes256-siv",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Accepts the names of [`Algorithm::name`] and Vault's spellings
    /// (`aes256-gcm96`, `aes128-gcm96`).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "aes256-gcm" | "aes256-gcm96" | "aes-256-gcm" => Ok(Algorithm::Aes256Gcm),
            "aes128-gcm" | "aes128-gcm96" | "aes-128-gcm" => Ok(Algorithm::Aes128Gcm),
            "chacha20-poly1305" => Ok(Algorithm::ChaCha20Poly1305),
            "xchacha20-poly1305" => Ok(Algorithm::XChaCha20Poly1305),
            "aes256-gcm-siv" | "aes-256-gcm-siv" => Ok(Algorithm::Aes256GcmSiv),
            "aes256-siv" | "aes-256-siv" | "aes-siv" => Ok(Algorithm::Aes256Siv),
            _ => Err(Error::UnknownAlgorithm(s.to_owned())),
        }
    }
}

enum Inner {
    Aws(awsaead::LessSafeKey),
    XChaCha(Box<XChaCha20Poly1305>),
    // `Siv` needs `&mut self` to run, so keep the key and build it per call.
    Siv(crate::secret::SecretBytes),
}

fn siv_cipher(key: &crate::secret::SecretBytes) -> Result<aes_siv::siv::Aes256Siv> {
    aes_siv::siv::Aes256Siv::new_from_slice(key.expose_secret())
        .map_err(|_| Error::InvalidKey("AES-SIV needs a 64-byte key".into()))
}

/// A ready-to-use AEAD key: the key schedule is computed once, at construction.
///
/// The underlying libraries wipe their key state on drop (AWS-LC cleanses its
/// AEAD context; RustCrypto's ciphers implement `ZeroizeOnDrop`).
pub struct AeadKey {
    alg: Algorithm,
    inner: Inner,
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadKey")
            .field("algorithm", &self.alg)
            .finish_non_exhaustive()
    }
}

impl AeadKey {
    /// Prepare `key` for `alg`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if `key` is not exactly [`Algorithm::key_len`] bytes.
    pub fn new(alg: Algorithm, key: &[u8]) -> Result<Self> {
        if key.len() != alg.key_len() {
            return Err(Error::InvalidKey(format!(
                "{alg} needs a {}-byte key, got {} bytes",
                alg.key_len(),
                key.len()
            )));
        }
        let aws_alg = match alg {
            Algorithm::Aes256Gcm => &awsaead::AES_256_GCM,
            Algorithm::Aes128Gcm => &awsaead::AES_128_GCM,
            Algorithm::ChaCha20Poly1305 => &awsaead::CHACHA20_POLY1305,
            Algorithm::Aes256GcmSiv => &awsaead::AES_256_GCM_SIV,
            Algorithm::Aes256Siv => {
                return Ok(AeadKey {
                    alg,
                    inner: Inner::Siv(crate::secret::SecretBytes::from_slice(key)),
                });
            }
            Algorithm::XChaCha20Poly1305 => {
                let k = XChaCha20Poly1305::new_from_slice(key)
                    .map_err(|_| Error::InvalidKey("bad XChaCha20-Poly1305 key length".into()))?;
                return Ok(AeadKey {
                    alg,
                    inner: Inner::XChaCha(Box::new(k)),
                });
            }
        };
        let unbound = awsaead::UnboundKey::new(aws_alg, key)
            .map_err(|_| Error::InvalidKey(format!("{alg} rejected the key")))?;
        Ok(AeadKey {
            alg,
            inner: Inner::Aws(awsaead::LessSafeKey::new(unbound)),
        })
    }

    /// The algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    fn check_nonce(&self, nonce: &[u8]) -> Result<()> {
        if nonce.len() == self.alg.nonce_len() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{} needs a {}-byte nonce, got {} bytes",
                self.alg,
                self.alg.nonce_len(),
                nonce.len()
            )))
        }
    }

    /// Encrypt `in_out` in place and return the tag.
    ///
    /// `nonce` **must never** repeat under the same key (except with
    /// AES-256-GCM-SIV, where a repeat reveals only equality of messages).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a nonce of the wrong size.
    pub fn seal_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        self.check_nonce(nonce)?;
        let mut tag = [0u8; TAG_LEN];
        match &self.inner {
            Inner::Aws(k) => {
                let n = awsaead::Nonce::try_assume_unique_for_key(nonce)
                    .map_err(|_| Error::InvalidArgument("bad nonce".into()))?;
                let t = k
                    .seal_in_place_separate_tag(n, awsaead::Aad::from(aad), in_out)
                    .map_err(|_| Error::Crypto("seal failed"))?;
                tag.copy_from_slice(t.as_ref());
            }
            Inner::XChaCha(k) => {
                let t = k
                    .encrypt_in_place_detached(nonce.into(), aad, in_out)
                    .map_err(|_| Error::Crypto("seal failed"))?;
                tag.copy_from_slice(&t);
            }
            Inner::Siv(k) => {
                let mut k = siv_cipher(k)?;
                let t = k
                    .encrypt_in_place_detached([aad], in_out)
                    .map_err(|_| Error::Crypto("seal failed"))?;
                tag.copy_from_slice(&t);
            }
        }
        Ok(tag)
    }

    /// Verify `tag` and decrypt `in_out` in place. On failure the contents of
    /// `in_out` are unspecified and **must not** be used.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] if the tag does not verify;
    /// [`Error::InvalidArgument`] for a nonce or tag of the wrong size.
    pub fn open_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8],
    ) -> Result<()> {
        self.check_nonce(nonce)?;
        if tag.len() != TAG_LEN {
            return Err(Error::InvalidArgument(format!(
                "tags are {TAG_LEN} bytes, got {}",
                tag.len()
            )));
        }
        match &self.inner {
            Inner::Aws(k) => {
                let n = awsaead::Nonce::try_assume_unique_for_key(nonce)
                    .map_err(|_| Error::InvalidArgument("bad nonce".into()))?;
                k.open_in_place_separate_tag(n, awsaead::Aad::from(aad), tag, in_out)
                    .map_err(|_| Error::AuthenticationFailed)?;
            }
            Inner::XChaCha(k) => {
                k.decrypt_in_place_detached(nonce.into(), aad, in_out, tag.into())
                    .map_err(|_| Error::AuthenticationFailed)?;
            }
            Inner::Siv(k) => {
                let mut k = siv_cipher(k)?;
                k.decrypt_in_place_detached([aad], in_out, tag.into())
                    .map_err(|_| Error::AuthenticationFailed)?;
            }
        }
        Ok(())
    }

    /// Encrypt `plaintext`, returning `ciphertext ‖ tag`.
    ///
    /// # Errors
    /// As [`AeadKey::seal_in_place`].
    pub fn seal(&self, nonce: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        let tag = self.seal_in_place(nonce, aad, &mut out)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Verify and decrypt `ciphertext ‖ tag`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if shorter than a tag; otherwise as
    /// [`AeadKey::open_in_place`].
    pub fn open(&self, nonce: &[u8], aad: &[u8], ciphertext_and_tag: &[u8]) -> Result<Vec<u8>> {
        let split = ciphertext_and_tag
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(Error::Truncated { what: "tag" })?;
        let (ct, tag) = ciphertext_and_tag.split_at(split);
        let mut out = ct.to_vec();
        match self.open_in_place(nonce, aad, &mut out, tag) {
            Ok(()) => Ok(out),
            Err(e) => {
                zeroize::Zeroize::zeroize(&mut out);
                Err(e)
            }
        }
    }

    /// Encrypt with a fresh random nonce; returns `nonce ‖ ciphertext ‖ tag`.
    ///
    /// # Errors
    /// [`Error::Random`] if the generator fails.
    pub fn seal_random_nonce(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let nl = self.alg.nonce_len();
        let mut out = Vec::with_capacity(nl + plaintext.len() + TAG_LEN);
        out.resize(nl, 0);
        fill_random(&mut out)?;
        out.extend_from_slice(plaintext);
        let (nonce, body) = out.split_at_mut(nl);
        let tag = self.seal_in_place(nonce, aad, body)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Open `nonce ‖ ciphertext ‖ tag` as made by [`AeadKey::seal_random_nonce`].
    ///
    /// # Errors
    /// [`Error::Truncated`] if too short; otherwise as [`AeadKey::open_in_place`].
    pub fn open_with_nonce_prefix(&self, aad: &[u8], data: &[u8]) -> Result<Vec<u8>> {
        let nl = self.alg.nonce_len();
        if data.len() < nl + TAG_LEN {
            return Err(Error::Truncated {
                what: "nonce and tag",
            });
        }
        let (nonce, rest) = data.split_at(nl);
        self.open(nonce, aad, rest)
    }
}
