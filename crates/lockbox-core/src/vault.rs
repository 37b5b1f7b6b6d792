//! HashiCorp Vault / OpenBao Transit ciphertexts (`vault:v<N>:<base64>`),
//! byte-compatible with the Transit secrets engine for its symmetric key
//! types `aes128-gcm96`, `aes256-gcm96` and `chacha20-poly1305`.
//!
//! # Format
//!
//! ```text
//! vault:v<N>:<standard padded base64 of nonce(12) ‖ ciphertext ‖ tag(16)>
//! ```
//!
//! `<N>` is the decimal key version (1, 2, ...). The AEAD is AES-GCM with a
//! 16- or 32-byte key, or ChaCha20-Poly1305 with a 32-byte key; the request's
//! `associated_data` is the AEAD's associated data. This follows
//! `sdk/helper/keysutil/policy.go` (`EncryptWithFactory`,
//! `SymmetricEncryptRaw`, `DecryptWithFactory`, `SymmetricDecryptRaw`).
//!
//! # Key derivation (`derived = true`)
//!
//! Every request must carry a non-empty `context`; the version key is never
//! used directly. The encryption key is
//! `HKDF-SHA256(ikm = version key, salt = none, info = context)` truncated to
//! the key length (Vault's `GetKey` / `DeriveKey` with `kdf = hkdf_sha256`,
//! the KDF Vault gives the derived keys it creates). Without a context the
//! error is Vault's: "missing 'context' for key derivation; ...". For keys
//! that are not derived, the context is ignored, exactly as Vault ignores it.
//!
//! # Convergent encryption (`convergent = true`, requires `derived`)
//!
//! Vault's convergent version 3: HKDF produces `key length + 32` bytes; the
//! first part is the encryption key, the last 32 bytes an HMAC key `H`, and
//! the nonce is `HMAC-SHA256(H, plaintext)[..12]`. The same plaintext under
//! the same context therefore always gives the same ciphertext. The nonce is
//! stored in the ciphertext as usual, so decryption needs nothing special.
//!
//! ## Lockbox difference: associated data in the convergent nonce
//!
//! Vault computes the convergent nonce from the plaintext **only**. Two
//! encryptions of the same plaintext with *different* associated data under
//! the same key and context therefore reuse a nonce with different AEAD
//! inputs — for GCM this leaks the GHASH authentication key (allowing
//! forgeries) and, for different plaintexts sharing a nonce, their XOR;
//! ChaCha20-Poly1305 fares no better. Lockbox does not reproduce that:
//!
//! - with **empty** associated data the nonce is exactly Vault's
//!   (`HMAC-SHA256(H, plaintext)[..12]`), so ciphertexts are byte-identical
//!   to Vault's;
//! - with **non-empty** associated data the nonce is
//!   `HMAC-SHA256(K', be64(len(aad)) ‖ aad ‖ plaintext)[..12]` where
//!   `K' = HMAC-SHA256(H, "lockbox/v1/convergent-aad-nonce-key")`. `K'` is a
//!   different key from `H`, so no input to this PRF can collide with Vault's
//!   plaintext-only nonce, and the length prefix makes `(aad, plaintext)`
//!   uniquely decodable.
//!
//! Such ciphertexts are still valid Transit ciphertexts — Vault decrypts them
//! (it reads the nonce from the ciphertext) — they just differ from the bytes
//! Vault itself would have produced. Encryption stays deterministic for the
//! same `(context, associated data, plaintext)`.
//!
//! # Versions
//!
//! Like a Transit key, a [`VaultKey`] has `latest_version`,
//! `min_decryption_version` (ciphertexts of older versions are refused with
//! Vault's "ciphertext or signature version is disallowed by policy (too
//! old)") and `min_encryption_version` (0 means any version may encrypt when
//! asked for explicitly — Vault's code, whatever its field description says;
//! with no version requested the latest is used). A ciphertext `vault:v0:` is
//! read as version 1, as Vault does (keys were numbered from 0 before Vault
//! 0.3).
//!
//! # Errors and Vault's wording
//!
//! Failures map onto [`Error`] variants; where Vault has a message, the
//! variant carries it (see [`messages`]) or [`vault_error_message`] renders
//! it:
//!
//! | failure | variant | Vault's message |
//! |---|---|---|
//! | no `vault:v` prefix | [`Error::UnknownPrefix`] | invalid ciphertext: no prefix |
//! | no `:` after the version | [`Error::Malformed`] | invalid ciphertext: wrong number of fields |
//! | version not a number | [`Error::Malformed`] | invalid ciphertext: version number could not be decoded |
//! | version above `latest_version` | [`Error::UnknownKeyVersion`] | invalid ciphertext: version is too new |
//! | version below `min_decryption_version` | [`Error::KeyVersionUnusable`] | ciphertext or signature version is disallowed by policy (too old) |
//! | body not base64 | [`Error::Encoding`] | invalid ciphertext: could not decode base64 |
//! | body shorter than a nonce | [`Error::Malformed`] | invalid ciphertext length |
//! | derived key, no context | [`Error::InvalidArgument`] | missing 'context' for key derivation; ... |
//! | tag does not verify (or body shorter than nonce + tag) | [`Error::AuthenticationFailed`] | cipher: message authentication failed (`chacha20poly1305: ...` for ChaCha) |
//! | encrypt: version above latest / below `min_encryption_version` | [`Error::InvalidArgument`] | requested version for encryption is higher than the latest key version / ... less than the minimum encryption key version |
//! | encrypt: version below `min_decryption_version` (archived) | [`Error::KeyVersionUnusable`] | no such key version |
//!
//! Checks run in Vault's order (prefix, fields, version number, too new, too
//! old, base64, context, length, tag).
//!
//! # Known divergences from Vault
//!
//! None of these affect ciphertexts Vault produces:
//!
//! - base64 decoding is strict (canonical padding and trailing bits, no line
//!   breaks); Go's decoder also accepts non-canonical trailing bits and skips
//!   `\r`/`\n`;
//! - the version is ASCII digits only; Go's `strconv.Atoi` also accepts a
//!   sign (`+1`, `-1`), and versions beyond `u32` are "could not be decoded"
//!   here rather than "too new";
//! - only the default version template (`vault:v{{version}}:`), only the
//!   `hkdf_sha256` KDF (not the legacy `hmac_sha256_counter`), and only
//!   convergent version 3 for encryption (version-2 ciphertexts decrypt, as
//!   the nonce is stored; version-1 ciphertexts, which omit it, do not);
//! - Vault's `rewrap` has no `associated_data` parameter; [`VaultKey::rewrap`]
//!   takes one (pass empty for Vault's behaviour).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use zeroize::{Zeroize, Zeroizing};

use crate::aead::{AeadKey, Algorithm};
use crate::encoding::{b64_decode, b64_encode};
use crate::error::{Error, Result};
use crate::kdf::{hkdf_sha256, hmac_sha256, hmac_sha256_parts};
use crate::secret::{fill_random, SecretBytes};

/// The fixed part of every Vault ciphertext, before the version number.
pub const PREFIX: &str = "vault:v";
/// Nonce length of every Vault symmetric key type.
pub const NONCE_LEN: usize = 12;
/// Tag length of every Vault symmetric key type.
pub const TAG_LEN: usize = 16;
/// The convergent-encryption scheme version implemented (Vault's current one).
pub const CONVERGENT_VERSION: u32 = 3;
/// Length of the HMAC key derived alongside the encryption key (convergent only).
const HMAC_KEY_LEN: usize = 32;
/// Label of the Lockbox-only nonce key used when convergent encryption has
/// associated data (see the module documentation).
const CONVERGENT_AAD_NONCE_LABEL: &[u8] = b"lockbox/v1/convergent-aad-nonce-key";

/// Vault's error messages, verbatim from `sdk/helper/keysutil/policy.go`,
/// `builtin/logical/transit` and the Go AEAD implementations.
pub mod messages {
    /// The ciphertext does not start with `vault:v`.
    pub const NO_PREFIX: &str = "invalid ciphertext: no prefix";
    /// No `:` between the version and the body.
    pub const WRONG_NUMBER_OF_FIELDS: &str = "invalid ciphertext: wrong number of fields";
    /// The version is not a number.
    pub const BAD_VERSION_NUMBER: &str = "invalid ciphertext: version number could not be decoded";
    /// The version is above the key's latest version.
    pub const VERSION_TOO_NEW: &str = "invalid ciphertext: version is too new";
    /// The version is below the key's `min_decryption_version` (Vault's `ErrTooOld`).
    pub const TOO_OLD: &str = "ciphertext or signature version is disallowed by policy (too old)";
    /// The body is not base64.
    pub const BAD_BASE64: &str = "invalid ciphertext: could not decode base64";
    /// The body is shorter than a nonce.
    pub const BAD_LENGTH: &str = "invalid ciphertext length";
    /// A derived key was used without a context.
    pub const MISSING_CONTEXT: &str = "missing 'context' for key derivation; the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key";
    /// The key version is not loaded (archived below `min_decryption_version`).
    pub const NO_SUCH_KEY_VERSION: &str = "no such key version";
    /// `key_version` above the latest version.
    pub const ENCRYPT_VERSION_TOO_HIGH: &str =
        "requested version for encryption is higher than the latest key version";
    /// `key_version` below `min_encryption_version`.
    pub const ENCRYPT_VERSION_TOO_LOW: &str =
        "requested version for encryption is less than the minimum encryption key version";
    /// Convergent encryption asked for on a key that is not derived.
    pub const CONVERGENT_REQUIRES_DERIVATION: &str =
        "convergent encryption requires derivation to be enabled";
    /// `min_decryption_version` below the oldest version present (Vault's
    /// spelling, "then" included).
    pub const MIN_DECRYPTION_BELOW_AVAILABLE: &str =
        "min decryption version should not be less then min available version";
    /// AES-GCM tag mismatch (Go's `crypto/cipher`).
    pub const GCM_AUTH_FAILED: &str = "cipher: message authentication failed";
    /// ChaCha20-Poly1305 tag mismatch (Go's `x/crypto/chacha20poly1305`).
    pub const CHACHA_AUTH_FAILED: &str = "chacha20poly1305: message authentication failed";
}

/// The `state` of [`Error::KeyVersionUnusable`] for versions below `min_decryption_version`.
const BELOW_MIN_DECRYPTION: &str = "below min_decryption_version";

/// A Transit symmetric key type.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VaultKeyType {
    /// `aes128-gcm96`: AES-128-GCM, 96-bit nonce.
    Aes128Gcm96,
    /// `aes256-gcm96`: AES-256-GCM, 96-bit nonce (Vault's default).
    Aes256Gcm96,
    /// `chacha20-poly1305`: ChaCha20-Poly1305 (RFC 8439).
    ChaCha20Poly1305,
    /// `xchacha20-poly1305` (Lockbox extension, not in Vault): 192-bit nonce.
    XChaCha20Poly1305,
    /// `aes256-gcm-siv` (Lockbox extension, not in Vault): AES-256-GCM-SIV, 96-bit nonce.
    Aes256GcmSiv,
}

impl VaultKeyType {
    /// Every supported key type.
    pub const ALL: [VaultKeyType; 3] = [
        VaultKeyType::Aes128Gcm96,
        VaultKeyType::Aes256Gcm96,
        VaultKeyType::ChaCha20Poly1305,
    ];

    /// Key types Lockbox adds to Vault's, in the same ciphertext format with
    /// the algorithm's own nonce size.
    pub const LOCKBOX_EXTENSIONS: [VaultKeyType; 2] =
        [VaultKeyType::XChaCha20Poly1305, VaultKeyType::Aes256GcmSiv];

    /// Nonce length in bytes.
    #[must_use]
    pub const fn nonce_len(self) -> usize {
        self.algorithm().nonce_len()
    }

    /// Vault's name for the type (`aes256-gcm96`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            VaultKeyType::Aes128Gcm96 => "aes128-gcm96",
            VaultKeyType::Aes256Gcm96 => "aes256-gcm96",
            VaultKeyType::ChaCha20Poly1305 => "chacha20-poly1305",
            VaultKeyType::XChaCha20Poly1305 => "xchacha20-poly1305",
            VaultKeyType::Aes256GcmSiv => "aes256-gcm-siv",
        }
    }

    /// Key length in bytes (16 for `aes128-gcm96`, otherwise 32).
    #[must_use]
    pub const fn key_len(self) -> usize {
        match self {
            VaultKeyType::Aes128Gcm96 => 16,
            _ => 32,
        }
    }

    /// The AEAD algorithm.
    #[must_use]
    pub const fn algorithm(self) -> Algorithm {
        match self {
            VaultKeyType::Aes128Gcm96 => Algorithm::Aes128Gcm,
            VaultKeyType::Aes256Gcm96 => Algorithm::Aes256Gcm,
            VaultKeyType::ChaCha20Poly1305 => Algorithm::ChaCha20Poly1305,
            VaultKeyType::XChaCha20Poly1305 => Algorithm::XChaCha20Poly1305,
            VaultKeyType::Aes256GcmSiv => Algorithm::Aes256GcmSiv,
        }
    }

    /// What Vault says when a tag does not verify with this key type.
    #[must_use]
    pub const fn auth_failure_message(self) -> &'static str {
        match self {
            VaultKeyType::Aes128Gcm96 | VaultKeyType::Aes256Gcm96 | VaultKeyType::Aes256GcmSiv => {
                messages::GCM_AUTH_FAILED
            }
            VaultKeyType::ChaCha20Poly1305 | VaultKeyType::XChaCha20Poly1305 => {
                messages::CHACHA_AUTH_FAILED
            }
        }
    }
}

impl fmt::Display for VaultKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for VaultKeyType {
    type Err = Error;

    /// Vault's names, exactly: `aes128-gcm96`, `aes256-gcm96`,
    /// `chacha20-poly1305`, and Lockbox's `xchacha20-poly1305`, `aes256-gcm-siv`.
    fn from_str(s: &str) -> Result<Self> {
        VaultKeyType::ALL
            .into_iter()
            .chain(VaultKeyType::LOCKBOX_EXTENSIONS)
            .find(|t| t.name() == s)
            .ok_or_else(|| Error::UnknownAlgorithm(s.to_owned()))
    }
}

/// One key version: its material and, for keys that are not derived, the
/// prepared AEAD key.
struct VersionEntry {
    material: SecretBytes,
    prepared: Option<AeadKey>,
}

/// The encryption key for one operation: prepared once (not derived) or
/// derived for this request.
enum OpKey<'a> {
    Prepared(&'a AeadKey),
    Derived(AeadKey),
}

impl OpKey<'_> {
    fn aead(&self) -> &AeadKey {
        match self {
            OpKey::Prepared(k) => k,
            OpKey::Derived(k) => k,
        }
    }
}

/// A Transit encryption key: numbered versions plus Vault's policy settings.
///
/// Holds the versions `min_available_version..=latest_version` (all of them
/// for a generated key; those exported by Vault for an imported one).
/// `Debug` never shows key material.
pub struct VaultKey {
    key_type: VaultKeyType,
    derived: bool,
    convergent: bool,
    versions: BTreeMap<u32, VersionEntry>,
    latest_version: u32,
    min_decryption_version: u32,
    min_encryption_version: u32,
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKey")
            .field("key_type", &self.key_type)
            .field("derived", &self.derived)
            .field("convergent", &self.convergent)
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .field("latest_version", &self.latest_version)
            .field("min_decryption_version", &self.min_decryption_version)
            .field("min_encryption_version", &self.min_encryption_version)
            .finish_non_exhaustive()
    }
}

impl VaultKey {
    /// A new key with one fresh random version (version 1), like
    /// `POST /transit/keys/:name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] ("convergent encryption requires derivation
    /// to be enabled") if `convergent` without `derived`; [`Error::Random`].
    pub fn generate(key_type: VaultKeyType, derived: bool, convergent: bool) -> Result<Self> {
        let material = SecretBytes::random(key_type.key_len())?;
        Self::from_versions(key_type, derived, convergent, vec![(1, material)])
    }

    /// A key made of existing versions, e.g. the raw keys Vault returns from
    /// `GET /transit/export/encryption-key/:name` (base64-decoded), so that
    /// Lockbox can decrypt and produce Vault ciphertexts for them.
    ///
    /// The versions must be consecutive (Vault exports
    /// `min_decryption_version..=latest_version`); the oldest becomes
    /// `min_decryption_version` and the newest `latest_version`;
    /// `min_encryption_version` is 0. The order of `versions` does not matter.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no versions, version 0, a repeated or
    /// missing version, or `convergent` without `derived`;
    /// [`Error::InvalidKey`] ("invalid key size N bytes for key type T") for
    /// material of the wrong length.
    pub fn from_versions(
        key_type: VaultKeyType,
        derived: bool,
        convergent: bool,
        versions: Vec<(u32, SecretBytes)>,
    ) -> Result<Self> {
        if convergent && !derived {
            return Err(Error::InvalidArgument(
                messages::CONVERGENT_REQUIRES_DERIVATION.to_owned(),
            ));
        }
        let mut map = BTreeMap::new();
        for (version, material) in versions {
            if version == 0 {
                return Err(Error::InvalidArgument("key versions start at 1".to_owned()));
            }
            let entry = Self::entry(key_type, derived, material)?;
            if map.insert(version, entry).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "key version {version} appears twice"
                )));
            }
        }
        let (first, last) = match (map.keys().next(), map.keys().next_back()) {
            (Some(&first), Some(&last)) => (first, last),
            _ => {
                return Err(Error::InvalidArgument(
                    "a key needs at least one version".to_owned(),
                ))
            }
        };
        // Consecutive iff the count matches the span.
        let span = u64::from(last) - u64::from(first) + 1;
        if u64::try_from(map.len()).ok() != Some(span) {
            let missing = (first..=last)
                .find(|v| !map.contains_key(v))
                .unwrap_or(first);
            return Err(Error::InvalidArgument(format!(
                "key versions must be consecutive: version {missing} is missing"
            )));
        }
        Ok(VaultKey {
            key_type,
            derived,
            convergent,
            versions: map,
            latest_version: last,
            min_decryption_version: first,
            min_encryption_version: 0,
        })
    }

    fn entry(key_type: VaultKeyType, derived: bool, material: SecretBytes) -> Result<VersionEntry> {
        if material.len() != key_type.key_len() {
            return Err(Error::InvalidKey(format!(
                "invalid key size {} bytes for key type {key_type}",
                material.len()
            )));
        }
        let prepared = if derived {
            None
        } else {
            Some(AeadKey::new(
                key_type.algorithm(),
                material.expose_secret(),
            )?)
        };
        Ok(VersionEntry { material, prepared })
    }

    /// Add a fresh random version and make it the latest, like
    /// `POST /transit/keys/:name/rotate`. The minimum versions are unchanged.
    ///
    /// # Errors
    /// [`Error::Random`]; [`Error::InvalidArgument`] past `u32::MAX` versions.
    pub fn rotate(&mut self) -> Result<u32> {
        let next = self
            .latest_version
            .checked_add(1)
            .ok_or_else(|| Error::InvalidArgument("too many key versions".to_owned()))?;
        let material = SecretBytes::random(self.key_type.key_len())?;
        let entry = Self::entry(self.key_type, self.derived, material)?;
        self.versions.insert(next, entry);
        self.latest_version = next;
        Ok(next)
    }

    /// Set `min_decryption_version` (0 means 1, as in Vault).
    ///
    /// # Errors
    /// As [`VaultKey::set_min_versions`].
    pub fn set_min_decryption_version(&mut self, version: u32) -> Result<()> {
        self.set_min_versions(Some(version), None)
    }

    /// Set `min_encryption_version` (0 allows every version).
    ///
    /// # Errors
    /// As [`VaultKey::set_min_versions`].
    pub fn set_min_encryption_version(&mut self, version: u32) -> Result<()> {
        self.set_min_versions(None, Some(version))
    }

    /// Set either or both minimum versions at once, with the checks of
    /// `POST /transit/keys/:name/config`; on error nothing changes. Setting
    /// both together allows raising them past each other in one step.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] with Vault's message: "cannot set min
    /// decryption version of D, latest key version is L", "cannot set min
    /// encryption version of E, latest key version is L", "cannot set min
    /// encryption/decryption values; min encryption version of E must be
    /// greater than or equal to min decryption version of D", or "min
    /// decryption version should not be less then min available version".
    pub fn set_min_versions(
        &mut self,
        min_decryption_version: Option<u32>,
        min_encryption_version: Option<u32>,
    ) -> Result<()> {
        let latest = self.latest_version;
        let mut dec = self.min_decryption_version;
        let mut enc = self.min_encryption_version;
        if let Some(d) = min_decryption_version {
            let d = d.max(1);
            if d != dec {
                if d > latest {
                    return Err(Error::InvalidArgument(format!(
                        "cannot set min decryption version of {d}, latest key version is {latest}"
                    )));
                }
                dec = d;
            }
        }
        if let Some(e) = min_encryption_version {
            if e != enc {
                if e > latest {
                    return Err(Error::InvalidArgument(format!(
                        "cannot set min encryption version of {e}, latest key version is {latest}"
                    )));
                }
                enc = e;
            }
        }
        if enc > 0 && enc < dec {
            return Err(Error::InvalidArgument(format!(
                "cannot set min encryption/decryption values; min encryption version of {enc} must be greater than or equal to min decryption version of {dec}"
            )));
        }
        if dec < self.min_available_version() {
            return Err(Error::InvalidArgument(
                messages::MIN_DECRYPTION_BELOW_AVAILABLE.to_owned(),
            ));
        }
        self.min_decryption_version = dec;
        self.min_encryption_version = enc;
        Ok(())
    }

    /// The key type.
    #[must_use]
    pub fn key_type(&self) -> VaultKeyType {
        self.key_type
    }

    /// Whether keys are derived per request from a context.
    #[must_use]
    pub fn is_derived(&self) -> bool {
        self.derived
    }

    /// Whether encryption is convergent (deterministic).
    #[must_use]
    pub fn is_convergent(&self) -> bool {
        self.convergent
    }

    /// The newest version (the one used when no version is requested).
    #[must_use]
    pub fn latest_version(&self) -> u32 {
        self.latest_version
    }

    /// Ciphertexts of older versions are refused.
    #[must_use]
    pub fn min_decryption_version(&self) -> u32 {
        self.min_decryption_version
    }

    /// Older versions may not encrypt (0: no limit).
    #[must_use]
    pub fn min_encryption_version(&self) -> u32 {
        self.min_encryption_version
    }

    /// The oldest version whose material this key holds.
    #[must_use]
    pub fn min_available_version(&self) -> u32 {
        self.versions.keys().next().copied().unwrap_or(1)
    }

    /// The version numbers held, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.versions.keys().copied()
    }

    /// The raw key of `version` (what Vault's `export/encryption-key` returns,
    /// before base64). **Never** log it; export paths only.
    #[must_use]
    pub fn expose_version_key(&self, version: u32) -> Option<&SecretBytes> {
        self.versions.get(&version).map(|e| &e.material)
    }

    /// The encryption key of `version` for this request, and the convergent
    /// HMAC key when `with_hmac`. Vault's `GetKey`: context is checked first
    /// (derived keys only), then that the version is loaded.
    fn op_key(
        &self,
        version: u32,
        context: &[u8],
        with_hmac: bool,
        operation: &'static str,
    ) -> Result<(OpKey<'_>, Option<SecretBytes>)> {
        if self.derived && context.is_empty() {
            return Err(Error::InvalidArgument(messages::MISSING_CONTEXT.to_owned()));
        }
        let entry = match self.versions.get(&version) {
            Some(e) if version >= self.min_decryption_version => e,
            _ => {
                return Err(Error::KeyVersionUnusable {
                    version,
                    state: BELOW_MIN_DECRYPTION,
                    operation,
                })
            }
        };
        if !self.derived {
            return match &entry.prepared {
                Some(k) => Ok((OpKey::Prepared(k), None)),
                None => Err(Error::Crypto("vault key version not prepared")),
            };
        }
        let enc_len = self.key_type.key_len();
        let hmac_len = if with_hmac { HMAC_KEY_LEN } else { 0 };
        let okm = hkdf_sha256(
            entry.material.expose_secret(),
            &[],
            context,
            enc_len + hmac_len,
        )?;
        let (enc, hmac) = okm
            .expose_secret()
            .split_at_checked(enc_len)
            .ok_or(Error::Crypto("hkdf output too short"))?;
        let aead = AeadKey::new(self.key_type.algorithm(), enc)?;
        let hmac = with_hmac.then(|| SecretBytes::from_slice(hmac));
        Ok((OpKey::Derived(aead), hmac))
    }

    /// Encrypt `plaintext` into a Vault ciphertext, like
    /// `POST /transit/encrypt/:name`. `key_version` `None` or `Some(0)` means
    /// the latest version. `context` is required for derived keys (and
    /// ignored otherwise); `associated_data` is authenticated, not stored.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] with Vault's message for a version above the
    /// latest or below `min_encryption_version`, or a missing context;
    /// [`Error::KeyVersionUnusable`] for a version below
    /// `min_decryption_version`; [`Error::Random`].
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        context: &[u8],
        associated_data: &[u8],
        key_version: Option<u32>,
    ) -> Result<String> {
        let version = match key_version {
            None | Some(0) => self.latest_version,
            Some(v) if v > self.latest_version => {
                return Err(Error::InvalidArgument(
                    messages::ENCRYPT_VERSION_TOO_HIGH.to_owned(),
                ))
            }
            Some(v) if v < self.min_encryption_version => {
                return Err(Error::InvalidArgument(
                    messages::ENCRYPT_VERSION_TOO_LOW.to_owned(),
                ))
            }
            Some(v) => v,
        };
        let (key, hmac_key) = self.op_key(version, context, self.convergent, "encrypt")?;
        let nl = self.key_type.nonce_len();
        let mut nonce = [0u8; 32];
        match &hmac_key {
            Some(h) => nonce = convergent_nonce(h.expose_secret(), plaintext, associated_data),
            None => fill_random(&mut nonce[..nl])?,
        }
        let nonce = &nonce[..nl];
        let sealed = key.aead().seal(nonce, associated_data, plaintext)?;
        let mut body = Vec::with_capacity(nl + sealed.len());
        body.extend_from_slice(nonce);
        body.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{version}:{}", b64_encode(&body)))
    }

    /// Decrypt a Vault ciphertext, like `POST /transit/decrypt/:name`, with
    /// the same `context` and `associated_data` as at encryption.
    ///
    /// # Errors
    /// In Vault's order: [`Error::UnknownPrefix`], [`Error::Malformed`]
    /// (fields, version number), [`Error::UnknownKeyVersion`] (too new),
    /// [`Error::KeyVersionUnusable`] (too old), [`Error::Encoding`],
    /// [`Error::InvalidArgument`] (missing context), [`Error::Malformed`]
    /// (shorter than a nonce), [`Error::AuthenticationFailed`]. See the
    /// module documentation for Vault's messages.
    pub fn decrypt(
        &self,
        ciphertext: &str,
        context: &[u8],
        associated_data: &[u8],
    ) -> Result<Vec<u8>> {
        let (version, body) = split(ciphertext)?;
        if version > self.latest_version {
            return Err(Error::UnknownKeyVersion(version));
        }
        if version < self.min_decryption_version {
            return Err(Error::KeyVersionUnusable {
                version,
                state: BELOW_MIN_DECRYPTION,
                operation: "decrypt",
            });
        }
        let data = decode_body(body)?;
        let (key, _) = self.op_key(version, context, false, "decrypt")?;
        let (nonce, sealed) = data
            .split_at_checked(self.key_type.nonce_len())
            .ok_or(Error::Malformed(messages::BAD_LENGTH))?;
        // Go's AEADs report a body too short for a tag as an authentication
        // failure, not as a length error.
        if sealed.len() < TAG_LEN {
            return Err(Error::AuthenticationFailed);
        }
        key.aead().open(nonce, associated_data, sealed)
    }

    /// Decrypt `ciphertext` and encrypt the plaintext again under
    /// `key_version` (`None` or `Some(0)`: the latest), like
    /// `POST /transit/rewrap/:name`. The plaintext never leaves this call and
    /// is wiped. Vault's rewrap has no associated data: pass empty to match it.
    ///
    /// # Errors
    /// As [`VaultKey::decrypt`], then as [`VaultKey::encrypt`].
    pub fn rewrap(
        &self,
        ciphertext: &str,
        context: &[u8],
        associated_data: &[u8],
        key_version: Option<u32>,
    ) -> Result<String> {
        let plaintext = Zeroizing::new(self.decrypt(ciphertext, context, associated_data)?);
        self.encrypt(&plaintext, context, associated_data, key_version)
    }
}

/// The convergent nonce: Vault's `HMAC-SHA256(H, plaintext)[..12]` with empty
/// associated data, otherwise Lockbox's
/// `HMAC-SHA256(HMAC-SHA256(H, label), be64(len(aad)) ‖ aad ‖ plaintext)[..12]`.
/// Returns the whole HMAC; the caller keeps the nonce-length prefix.
fn convergent_nonce(hmac_key: &[u8], plaintext: &[u8], associated_data: &[u8]) -> [u8; 32] {
    let mut mac = if associated_data.is_empty() {
        hmac_sha256(hmac_key, plaintext)
    } else {
        let aad_key = Zeroizing::new(hmac_sha256(hmac_key, CONVERGENT_AAD_NONCE_LABEL));
        let aad_len = u64::try_from(associated_data.len()).unwrap_or(u64::MAX);
        hmac_sha256_parts(
            aad_key.as_ref(),
            &[&aad_len.to_be_bytes(), associated_data, plaintext],
        )
    };
    let nonce = mac;
    mac.zeroize();
    nonce
}

/// Split `vault:v<N>:<body>` into the version (0 read as 1) and the body.
fn split(ciphertext: &str) -> Result<(u32, &str)> {
    let rest = ciphertext
        .strip_prefix(PREFIX)
        .ok_or(Error::UnknownPrefix { format: "vault" })?;
    let (version, body) = rest
        .split_once(':')
        .ok_or(Error::Malformed(messages::WRONG_NUMBER_OF_FIELDS))?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Malformed(messages::BAD_VERSION_NUMBER));
    }
    let version: u32 = version
        .parse()
        .map_err(|_| Error::Malformed(messages::BAD_VERSION_NUMBER))?;
    // Compatibility with Vault before 0.3, where key versions started at 0.
    Ok((version.max(1), body))
}

fn decode_body(body: &str) -> Result<Vec<u8>> {
    b64_decode(body).map_err(|_| Error::Encoding(messages::BAD_BASE64))
}

/// Split a Vault ciphertext into its key version (`v0` read as 1) and its
/// decoded body (`nonce ‖ ciphertext ‖ tag`). Checks only the structure: no
/// key is involved and the body's length is not checked.
///
/// # Errors
/// [`Error::UnknownPrefix`], [`Error::Malformed`] (fields, version number)
/// or [`Error::Encoding`], with Vault's messages.
pub fn parse(ciphertext: &str) -> Result<(u32, Vec<u8>)> {
    let (version, body) = split(ciphertext)?;
    Ok((version, decode_body(body)?))
}

/// Whether `s` is structurally a Vault ciphertext (see [`parse`]).
#[must_use]
pub fn is_vault_ciphertext(s: &str) -> bool {
    parse(s).is_ok()
}

/// The message Vault would give for `err`, returned by an operation of this
/// module on a key of type `key_type` (for the HTTP API's `errors` field).
/// Errors this module does not produce are rendered with their `Display`.
#[must_use]
pub fn vault_error_message(err: &Error, key_type: VaultKeyType) -> String {
    match err {
        Error::UnknownPrefix { .. } => messages::NO_PREFIX.to_owned(),
        Error::Malformed(m) | Error::Encoding(m) => (*m).to_owned(),
        Error::UnknownKeyVersion(_) => messages::VERSION_TOO_NEW.to_owned(),
        Error::KeyVersionUnusable {
            operation: "encrypt",
            ..
        } => messages::NO_SUCH_KEY_VERSION.to_owned(),
        Error::KeyVersionUnusable { .. } => messages::TOO_OLD.to_owned(),
        Error::AuthenticationFailed => key_type.auth_failure_message().to_owned(),
        Error::InvalidArgument(m) => m.clone(),
        Error::UnknownAlgorithm(t) => format!("unknown key type {t}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reads_vault_versions() {
        assert_eq!(split("vault:v1:abc").unwrap(), (1, "abc"));
        assert_eq!(split("vault:v0:").unwrap(), (1, ""));
        assert_eq!(split("vault:v007:x:y").unwrap(), (7, "x:y"));
        assert!(split("vault:v+1:x").is_err());
        assert!(split("vault:v4294967296:x").is_err());
    }

    #[test]
    fn convergent_nonce_with_empty_aad_is_vaults() {
        let h = [7u8; 32];
        let full = hmac_sha256(&h, b"pt");
        assert_eq!(
            convergent_nonce(&h, b"pt", b"")[..NONCE_LEN],
            full[..NONCE_LEN]
        );
        assert_ne!(
            convergent_nonce(&h, b"pt", b"a")[..NONCE_LEN],
            full[..NONCE_LEN]
        );
    }
}
