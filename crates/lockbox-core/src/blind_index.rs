//! Blind indexes: searchable fingerprints for equality lookups on encrypted
//! columns.
//!
//! A blind index value is a truncated HMAC-SHA256 of a (normalized) plaintext
//! under a key that is specific to one index key version, one tenant and one
//! column. Store it in a plain, indexed column beside the ciphertext; to find
//! rows whose encrypted column equals `x`, compute the index of `x` and look it
//! up. The database never sees `x`.
//!
//! # Derivation
//!
//! For each lookup the per-(tenant, column) key is
//!
//! ```text
//! k_tc = HKDF-SHA256(ikm  = index key (one version),
//!                    salt = "" (RFC 5869's all-zero salt),
//!                    info = "lockbox/v1/blind-index" ‖ 0x00
//!                           ‖ normalization flags u8 ‖ truncation u8
//!                           ‖ len(tenant) u32be ‖ tenant
//!                           ‖ len(column) u32be ‖ column,
//!                    L    = 32)
//! value = HMAC-SHA256(k_tc, normalize(plaintext))[..truncation]
//! ```
//!
//! Every variable-length field is length-prefixed, so no two different
//! (tenant, column) pairs share an `info` string; the normalization flags and
//! the truncation length are part of it too, so indexes built with different
//! settings are unrelated (one is never a prefix of the other, and a
//! case-insensitive index never matches a case-sensitive one by accident).
//!
//! # Text form
//!
//! `bi1:v<version>:<base64url(value), no padding>`, e.g.
//! `bi1:v3:q83vEjRWeJA_yK7N3q2-7w`. The key version is part of the value, so
//! during a key rotation a lookup can ask for the index under every active
//! version at once ([`BlindIndexer::search_terms`]) and rows can be re-indexed
//! lazily.
//!
//! # What a blind index reveals
//!
//! Within one tenant and column, equal (normalized) values have equal
//! indexes: an observer of the index column learns which rows share a value
//! and how often each value occurs, and can confirm a guess only with the key.
//! For low-entropy columns (booleans, a handful of states, birth years)
//! frequency analysis can recover values; do not index such columns. Different
//! tenants and different columns use unrelated keys, so equal values are not
//! linkable across them.
//!
//! # Truncation
//!
//! The index keeps the first `truncation` bytes of the HMAC, 8 to 32 (default
//! 16). The trade-off:
//!
//! - **False positives.** Two distinct values collide with probability
//!   2<sup>-8·t</sup> for `t` bytes; a lookup in a column of `N` distinct
//!   values returns a wrong row with probability about `N / 2^(8t)`, and the
//!   whole column contains a colliding pair with probability about
//!   `N² / 2^(8t+1)`. At 8 bytes and a million distinct values that is about
//!   3·10<sup>-8</sup>; at the default 16 bytes it is negligible for any real
//!   table. Callers must still decrypt and compare the rows a lookup returns.
//! - **Leakage.** Shorter values would merge some distinct values into one
//!   bucket and so hide a little equality information, but only at
//!   truncations far below the 8-byte minimum (a few bits, as some designs do
//!   to get deliberate collisions). Within 8..=32 bytes collisions are
//!   practically absent, so **every allowed truncation leaks full equality**;
//!   choose it for storage size, not for privacy.
//! - **Storage.** Text values are 4 + `len("v<version>:")` + ⌈4t/3⌉ bytes.
//!
//! # Normalization
//!
//! Each option is off by default and they combine freely
//! ([`Normalization`]): trimming Unicode whitespace, lowercasing with
//! [`str::to_lowercase`] (the Unicode *default lowercase mapping* — not full
//! Unicode case folding, so e.g. `"Straße"` and `"STRASSE"` stay different),
//! and Unicode NFC (canonically equivalent spellings such as a precomposed `é`
//! and `e` + U+0301 become the same string). The normalization must match
//! between indexing and lookup; because it is part of the derivation, a
//! mismatch yields no matches rather than wrong ones.

use std::fmt;
use std::str::FromStr;

use unicode_normalization::UnicodeNormalization;

use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Error, Result};
use crate::kdf::{hkdf_sha256, hmac_sha256};
use crate::secret::SecretBytes;

/// Prefix of the text form of a blind index value.
pub const TEXT_PREFIX: &str = "bi1:";
/// Smallest allowed truncation, in bytes.
pub const MIN_TRUNCATION: usize = 8;
/// Largest allowed truncation, in bytes (the full HMAC-SHA256 output).
pub const MAX_TRUNCATION: usize = 32;
/// Default truncation, in bytes.
pub const DEFAULT_TRUNCATION: usize = 16;
/// Shortest index key accepted, in bytes. [`BlindIndexKey::generate`] makes 32.
pub const MIN_KEY_LEN: usize = 16;
/// Length of keys made by [`BlindIndexKey::generate`].
pub const GENERATED_KEY_LEN: usize = 32;

const DERIVE_LABEL: &[u8] = b"lockbox/v1/blind-index";
/// Version of the derivation layout (the byte after the label).
const DERIVE_LAYOUT: u8 = 0;

const FLAG_TRIM: u8 = 0x01;
const FLAG_CASE_FOLD: u8 = 0x02;
const FLAG_NFC: u8 = 0x04;

/// How values are normalized before they are indexed.
///
/// The options are applied in this order: trim, NFC, lowercase, NFC again
/// (lowercasing can undo composition, so the result of a normalization with
/// `nfc` set is always in NFC). Normalization is idempotent.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Normalization {
    /// Remove leading and trailing Unicode whitespace (`White_Space`
    /// property, as [`str::trim`]).
    pub trim: bool,
    /// Lowercase with [`str::to_lowercase`]: the Unicode default lowercase
    /// mapping (context-sensitive final sigma included). This is **not** full
    /// Unicode case folding: `ß` stays `ß` (so `"Straße"` ≠ `"STRASSE"`), and
    /// no locale rules (Turkish dotless i) apply.
    pub case_fold: bool,
    /// Unicode Normalization Form C (canonical composition, UAX #15).
    pub nfc: bool,
}

impl Normalization {
    /// No normalization: exact byte equality of the UTF-8 text.
    pub const NONE: Normalization = Normalization {
        trim: false,
        case_fold: false,
        nfc: false,
    };

    /// Every option: trim, lowercase and NFC — case-insensitive matching of
    /// human-entered text such as e-mail addresses or names.
    pub const ALL: Normalization = Normalization {
        trim: true,
        case_fold: true,
        nfc: true,
    };

    /// This normalization with trimming switched on.
    #[must_use]
    pub const fn with_trim(mut self) -> Self {
        self.trim = true;
        self
    }

    /// This normalization with lowercasing switched on.
    #[must_use]
    pub const fn with_case_fold(mut self) -> Self {
        self.case_fold = true;
        self
    }

    /// This normalization with NFC switched on.
    #[must_use]
    pub const fn with_nfc(mut self) -> Self {
        self.nfc = true;
        self
    }

    /// The flag byte that enters the key derivation.
    const fn flags(self) -> u8 {
        let mut f = 0;
        if self.trim {
            f |= FLAG_TRIM;
        }
        if self.case_fold {
            f |= FLAG_CASE_FOLD;
        }
        if self.nfc {
            f |= FLAG_NFC;
        }
        f
    }

    /// Normalize `value`.
    #[must_use]
    pub fn apply(self, value: &str) -> String {
        let mut s: String = if self.trim {
            value.trim().to_owned()
        } else {
            value.to_owned()
        };
        if self.nfc {
            s = s.nfc().collect();
        }
        if self.case_fold {
            s = s.to_lowercase();
            if self.nfc {
                s = s.nfc().collect();
            }
        }
        s
    }
}

/// Settings of a blind index: normalization and truncation.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlindIndexConfig {
    normalization: Normalization,
    truncation: usize,
}

impl Default for BlindIndexConfig {
    /// No normalization, [`DEFAULT_TRUNCATION`] bytes.
    fn default() -> Self {
        BlindIndexConfig {
            normalization: Normalization::NONE,
            truncation: DEFAULT_TRUNCATION,
        }
    }
}

impl BlindIndexConfig {
    /// A configuration with `normalization` and `truncation` bytes of output.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `truncation` is outside
    /// [`MIN_TRUNCATION`]`..=`[`MAX_TRUNCATION`].
    pub fn new(normalization: Normalization, truncation: usize) -> Result<Self> {
        check_truncation(truncation)?;
        Ok(BlindIndexConfig {
            normalization,
            truncation,
        })
    }

    /// The normalization.
    #[must_use]
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    /// The truncation, in bytes.
    #[must_use]
    pub fn truncation(&self) -> usize {
        self.truncation
    }
}

fn check_truncation(truncation: usize) -> Result<()> {
    if (MIN_TRUNCATION..=MAX_TRUNCATION).contains(&truncation) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "blind index truncation must be {MIN_TRUNCATION}..={MAX_TRUNCATION} bytes, got {truncation}"
        )))
    }
}

/// One version of a blind index key. The key material is zeroized on drop
/// and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct BlindIndexKey {
    version: u32,
    key: SecretBytes,
}

impl fmt::Debug for BlindIndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlindIndexKey")
            .field("version", &self.version)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

impl BlindIndexKey {
    /// Wrap existing key material as `version`.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if `key` is shorter than [`MIN_KEY_LEN`] bytes;
    /// [`Error::InvalidArgument`] if `version` is 0 (versions start at 1).
    pub fn new(version: u32, key: SecretBytes) -> Result<Self> {
        if version == 0 {
            return Err(Error::InvalidArgument(
                "blind index key versions start at 1".into(),
            ));
        }
        if key.len() < MIN_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "a blind index key needs at least {MIN_KEY_LEN} bytes, got {}",
                key.len()
            )));
        }
        Ok(BlindIndexKey { version, key })
    }

    /// A fresh random key of [`GENERATED_KEY_LEN`] bytes as `version`.
    ///
    /// # Errors
    /// [`Error::Random`] if the generator fails; [`Error::InvalidArgument`]
    /// if `version` is 0.
    pub fn generate(version: u32) -> Result<Self> {
        BlindIndexKey::new(version, SecretBytes::random(GENERATED_KEY_LEN)?)
    }

    /// The version number.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The key material (for storing it in a keyset). Handle with care.
    #[must_use]
    pub fn key_material(&self) -> &SecretBytes {
        &self.key
    }

    /// The truncated HMAC of the already-normalized `normalized` value.
    fn mac(
        &self,
        config: &BlindIndexConfig,
        normalized: &str,
        tenant: &str,
        column: &str,
    ) -> Result<Vec<u8>> {
        let info = derivation_info(config, tenant, column)?;
        let k = hkdf_sha256(self.key.expose_secret(), &[], &info, 32)?;
        let full = hmac_sha256(k.expose_secret(), normalized.as_bytes());
        full.get(..config.truncation)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::InvalidArgument("blind index truncation out of range".into()))
    }
}

fn length_prefixed(out: &mut Vec<u8>, what: &str, field: &[u8]) -> Result<()> {
    let len = u32::try_from(field.len())
        .map_err(|_| Error::InvalidArgument(format!("blind index {what} is too long")))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

fn derivation_info(config: &BlindIndexConfig, tenant: &str, column: &str) -> Result<Vec<u8>> {
    if column.is_empty() {
        return Err(Error::InvalidArgument(
            "blind index column name must not be empty".into(),
        ));
    }
    let truncation = u8::try_from(config.truncation)
        .map_err(|_| Error::InvalidArgument("blind index truncation out of range".into()))?;
    let mut info = Vec::with_capacity(DERIVE_LABEL.len() + 3 + 8 + tenant.len() + column.len());
    info.extend_from_slice(DERIVE_LABEL);
    info.push(DERIVE_LAYOUT);
    info.push(config.normalization.flags());
    info.push(truncation);
    length_prefixed(&mut info, "tenant", tenant.as_bytes())?;
    length_prefixed(&mut info, "column", column.as_bytes())?;
    Ok(info)
}

/// A parsed blind index value: the key version and the truncated HMAC.
///
/// `Display` gives the text form `bi1:v<version>:<base64url>`; [`FromStr`]
/// (and [`BlindIndexValue::parse`]) read it back, strictly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BlindIndexValue {
    version: u32,
    mac: Vec<u8>,
}

impl BlindIndexValue {
    /// Parse the text form `bi1:v<version>:<base64url>`.
    ///
    /// # Errors
    /// [`Error::UnknownPrefix`] without the `bi1:` prefix; [`Error::Malformed`]
    /// for a missing or non-canonical version (`v` then decimal digits, no
    /// leading zeros, at least 1, fits in `u32`) or a value that is not 8 to 32
    /// bytes; [`Error::Encoding`] if the value is not canonical unpadded
    /// base64url.
    pub fn parse(s: &str) -> Result<Self> {
        let rest = s.strip_prefix(TEXT_PREFIX).ok_or(Error::UnknownPrefix {
            format: "blind-index",
        })?;
        let rest = rest
            .strip_prefix('v')
            .ok_or(Error::Malformed("blind index: expected 'v<version>:'"))?;
        let (digits, b64) = rest.split_once(':').ok_or(Error::Malformed(
            "blind index: expected ':' after the version",
        ))?;
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return Err(Error::Malformed(
                "blind index: version is not a canonical number",
            ));
        }
        let version: u32 = digits
            .parse()
            .map_err(|_| Error::Malformed("blind index: version does not fit in 32 bits"))?;
        if version == 0 {
            return Err(Error::Malformed("blind index: versions start at 1"));
        }
        let mac = b64url_decode(b64)?;
        if !(MIN_TRUNCATION..=MAX_TRUNCATION).contains(&mac.len()) {
            return Err(Error::Malformed("blind index: value must be 8 to 32 bytes"));
        }
        Ok(BlindIndexValue { version, mac })
    }

    /// The key version that produced this value.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The truncated HMAC bytes.
    #[must_use]
    pub fn mac(&self) -> &[u8] {
        &self.mac
    }
}

impl fmt::Display for BlindIndexValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TEXT_PREFIX}v{}:{}",
            self.version,
            b64url_encode(&self.mac)
        )
    }
}

impl FromStr for BlindIndexValue {
    type Err = Error;

    /// As [`BlindIndexValue::parse`].
    fn from_str(s: &str) -> Result<Self> {
        BlindIndexValue::parse(s)
    }
}

/// Computes blind indexes: a configuration, the current key version and every
/// other version that is still active (searched during a rotation).
///
/// ```
/// use lockbox_core::blind_index::{BlindIndexConfig, BlindIndexKey, BlindIndexer, Normalization};
///
/// let config = BlindIndexConfig::new(Normalization::ALL, 16)?;
/// let indexer = BlindIndexer::new(config, vec![BlindIndexKey::generate(1)?], 1)?;
/// let stored = indexer.compute("  Alice@Example.com ", "tenant-a", "users.email")?;
/// assert!(stored.starts_with("bi1:v1:"));
/// let terms = indexer.search_terms("alice@example.com", "tenant-a", "users.email")?;
/// assert_eq!(terms, vec![stored]);
/// # Ok::<(), lockbox_core::Error>(())
/// ```
#[derive(Clone)]
pub struct BlindIndexer {
    config: BlindIndexConfig,
    /// Sorted by version, highest first.
    keys: Vec<BlindIndexKey>,
    current: u32,
}

impl fmt::Debug for BlindIndexer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlindIndexer")
            .field("config", &self.config)
            .field("current", &self.current)
            .field("versions", &self.versions())
            .finish_non_exhaustive()
    }
}

impl BlindIndexer {
    /// An indexer over `keys` (all active for search) that computes new
    /// values with version `current`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `keys` is empty or two keys share a
    /// version; [`Error::UnknownKeyVersion`] if no key has version `current`.
    pub fn new(
        config: BlindIndexConfig,
        mut keys: Vec<BlindIndexKey>,
        current: u32,
    ) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::InvalidArgument(
                "a blind indexer needs at least one key".into(),
            ));
        }
        keys.sort_by_key(|k| std::cmp::Reverse(k.version));
        if keys
            .windows(2)
            .any(|w| matches!(w, [a, b] if a.version == b.version))
        {
            return Err(Error::InvalidArgument(
                "two blind index keys have the same version".into(),
            ));
        }
        if !keys.iter().any(|k| k.version == current) {
            return Err(Error::UnknownKeyVersion(current));
        }
        Ok(BlindIndexer {
            config,
            keys,
            current,
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &BlindIndexConfig {
        &self.config
    }

    /// The version used by [`BlindIndexer::compute`].
    #[must_use]
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// Every active version, highest first.
    #[must_use]
    pub fn versions(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.version).collect()
    }

    fn key(&self, version: u32) -> Result<&BlindIndexKey> {
        self.keys
            .iter()
            .find(|k| k.version == version)
            .ok_or(Error::UnknownKeyVersion(version))
    }

    /// The index of `value` in `tenant`'s `column` under `version`.
    ///
    /// # Errors
    /// [`Error::UnknownKeyVersion`] if the indexer has no such version;
    /// [`Error::InvalidArgument`] for an empty column name or a tenant or
    /// column longer than `u32::MAX` bytes.
    pub fn compute_value_with_version(
        &self,
        value: &str,
        tenant: &str,
        column: &str,
        version: u32,
    ) -> Result<BlindIndexValue> {
        let key = self.key(version)?;
        let normalized = self.config.normalization.apply(value);
        let mac = key.mac(&self.config, &normalized, tenant, column)?;
        Ok(BlindIndexValue { version, mac })
    }

    /// The index of `value` in `tenant`'s `column` under the current version.
    /// An empty `tenant` is allowed (single-tenant use).
    ///
    /// # Errors
    /// As [`BlindIndexer::compute_value_with_version`].
    pub fn compute_value(
        &self,
        value: &str,
        tenant: &str,
        column: &str,
    ) -> Result<BlindIndexValue> {
        self.compute_value_with_version(value, tenant, column, self.current)
    }

    /// The text form (`bi1:v<version>:<base64url>`) of the index of `value`
    /// under the current version: what to store beside the ciphertext.
    ///
    /// # Errors
    /// As [`BlindIndexer::compute_value_with_version`].
    pub fn compute(&self, value: &str, tenant: &str, column: &str) -> Result<String> {
        Ok(self.compute_value(value, tenant, column)?.to_string())
    }

    /// The text form of the index of `value` under every active version,
    /// current version first, then the others from the highest down: query
    /// with `index_column IN (...)` to find rows indexed under any of them.
    ///
    /// # Errors
    /// As [`BlindIndexer::compute_value_with_version`].
    pub fn search_terms(&self, value: &str, tenant: &str, column: &str) -> Result<Vec<String>> {
        let normalized = self.config.normalization.apply(value);
        let mut order: Vec<&BlindIndexKey> = Vec::with_capacity(self.keys.len());
        order.extend(self.keys.iter().filter(|k| k.version == self.current));
        order.extend(self.keys.iter().filter(|k| k.version != self.current));
        order
            .into_iter()
            .map(|k| {
                let mac = k.mac(&self.config, &normalized, tenant, column)?;
                Ok(BlindIndexValue {
                    version: k.version,
                    mac,
                }
                .to_string())
            })
            .collect()
    }

    /// Whether `stored` (a text-form index value) is the index of `value` in
    /// `tenant`'s `column`, under the version it names. Compares in constant
    /// time.
    ///
    /// # Errors
    /// As [`BlindIndexValue::parse`] for a malformed `stored`;
    /// [`Error::UnknownKeyVersion`] if its version is not active here;
    /// otherwise as [`BlindIndexer::compute_value_with_version`].
    pub fn matches(&self, value: &str, tenant: &str, column: &str, stored: &str) -> Result<bool> {
        let parsed = BlindIndexValue::parse(stored)?;
        let ours = self.compute_value_with_version(value, tenant, column, parsed.version)?;
        Ok(crate::secret::ct_eq(&ours.mac, &parsed.mac))
    }

    /// The version named by a stored index value (to find rows still indexed
    /// under an old version during a rotation).
    ///
    /// # Errors
    /// As [`BlindIndexValue::parse`].
    pub fn version_of(stored: &str) -> Result<u32> {
        Ok(BlindIndexValue::parse(stored)?.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: u32, byte: u8) -> BlindIndexKey {
        BlindIndexKey::new(version, SecretBytes::new(vec![byte; 32])).unwrap()
    }

    #[test]
    fn info_is_unambiguous() {
        let c = BlindIndexConfig::default();
        // ("ab", "c") and ("a", "bc") must not share an info string.
        assert_ne!(
            derivation_info(&c, "ab", "c").unwrap(),
            derivation_info(&c, "a", "bc").unwrap()
        );
        let n = BlindIndexConfig::new(Normalization::NONE.with_trim(), 16).unwrap();
        assert_ne!(
            derivation_info(&c, "t", "c").unwrap(),
            derivation_info(&n, "t", "c").unwrap()
        );
        let t = BlindIndexConfig::new(Normalization::NONE, 17).unwrap();
        assert_ne!(
            derivation_info(&c, "t", "c").unwrap(),
            derivation_info(&t, "t", "c").unwrap()
        );
    }

    #[test]
    fn flags_are_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for trim in [false, true] {
            for case_fold in [false, true] {
                for nfc in [false, true] {
                    assert!(seen.insert(
                        Normalization {
                            trim,
                            case_fold,
                            nfc
                        }
                        .flags()
                    ));
                }
            }
        }
    }

    #[test]
    fn text_form_round_trips() {
        let ix = BlindIndexer::new(BlindIndexConfig::default(), vec![key(7, 1)], 7).unwrap();
        let v = ix.compute_value("x", "t", "c").unwrap();
        let s = v.to_string();
        assert!(s.starts_with("bi1:v7:"), "{s}");
        assert_eq!(BlindIndexValue::parse(&s).unwrap(), v);
        assert_eq!(s.parse::<BlindIndexValue>().unwrap().to_string(), s);
    }
}
