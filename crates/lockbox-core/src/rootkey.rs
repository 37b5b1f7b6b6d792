//! The root key: the key-encryption key of a whole Lockbox store.
//!
//! It never encrypts data directly. Three purpose-separated keys are derived
//! from it with HKDF-SHA256: the seal key (AES-256-GCM, seals every key
//! version at rest), the MAC key (authenticates key metadata rows) and a
//! check value (stored in the clear so a wrong root key is detected at
//! unseal time instead of producing garbage).

use std::fmt;

use crate::aead::{AeadKey, Algorithm};
use crate::encoding::{b64_decode, b64url_decode};
use crate::error::{Error, Result};
use crate::kdf::hkdf_sha256;
use crate::secret::{ct_eq, SecretBytes};

/// Root key length in bytes.
pub const ROOT_KEY_LEN: usize = 32;

const SEAL_LABEL: &[u8] = b"lockbox/v1/root/seal-key";
const MAC_LABEL: &[u8] = b"lockbox/v1/root/mac-key";
const CHECK_LABEL: &[u8] = b"lockbox/v1/root/check-value";

/// The root key. Zeroized on drop, redacted in `Debug`, not `Clone`.
pub struct RootKey {
    key: SecretBytes,
    seal: AeadKey,
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey([REDACTED])")
    }
}

impl RootKey {
    /// A fresh random root key.
    ///
    /// # Errors
    /// [`Error::Random`].
    pub fn generate() -> Result<Self> {
        Self::from_secret(SecretBytes::random(ROOT_KEY_LEN)?)
    }

    /// A root key from exactly 32 bytes.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for another length or a weak key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_secret(SecretBytes::from_slice(bytes))
    }

    fn from_secret(key: SecretBytes) -> Result<Self> {
        if key.len() != ROOT_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "the master key must be {ROOT_KEY_LEN} bytes, got {} bytes",
                key.len()
            )));
        }
        let b = key.expose_secret();
        if b.iter().all(|x| *x == b[0]) {
            return Err(Error::InvalidKey(
                "the master key is a single repeated byte (e.g. all zeros): generate a random one"
                    .into(),
            ));
        }
        let seal_bytes = hkdf_sha256(b, &[], SEAL_LABEL, 32)?;
        let seal = AeadKey::new(Algorithm::Aes256Gcm, seal_bytes.expose_secret())?;
        Ok(RootKey { key, seal })
    }

    /// Parse a master key as an operator writes it in `LOCKBOX_MASTER_KEY`
    /// or a key file: base64 (standard or URL-safe, padded or not) of 32
    /// bytes, or 64 hex digits; surrounding whitespace is ignored.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] naming what is wrong (never echoing the key).
    pub fn parse_master_key(text: &str) -> Result<Self> {
        let t = text.trim();
        if t.is_empty() {
            return Err(Error::InvalidKey("the master key is empty".into()));
        }
        if t.chars().any(char::is_whitespace) {
            return Err(Error::InvalidKey(
                "the master key contains whitespace inside it".into(),
            ));
        }
        let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| {
                    t.get(2 * i..2 * i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| Error::InvalidKey("the master key is not valid hex".into()))
                })
                .collect::<Result<Vec<u8>>>()?
        } else {
            let std = if t.contains(['-', '_']) {
                None
            } else {
                b64_decode(t).ok().or_else(|| b64_decode(&pad(t)).ok())
            };
            match std.or_else(|| b64url_decode(t.trim_end_matches('=')).ok()) {
                Some(b) => b,
                None => {
                    return Err(Error::InvalidKey(format!(
                        "the master key is neither base64 nor 64 hex digits ({} characters)",
                        t.len()
                    )))
                }
            }
        };
        let n = bytes.len();
        let secret = SecretBytes::new(bytes);
        if n != ROOT_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "the master key decodes to {n} bytes; it must be {ROOT_KEY_LEN} bytes (e.g. `lockbox keygen-master`)"
            )));
        }
        Self::from_secret(secret)
    }

    /// The raw root key. **Never** log it; shown once in dev mode only.
    #[must_use]
    pub fn expose_secret(&self) -> &SecretBytes {
        &self.key
    }

    /// The key that authenticates metadata rows.
    ///
    /// # Errors
    /// [`Error::Crypto`] only if HKDF fails.
    pub fn mac_key(&self) -> Result<SecretBytes> {
        hkdf_sha256(self.key.expose_secret(), &[], MAC_LABEL, 32)
    }

    /// The check value stored beside the sealed keys.
    ///
    /// # Errors
    /// [`Error::Crypto`] only if HKDF fails.
    pub fn check_value(&self) -> Result<Vec<u8>> {
        Ok(hkdf_sha256(self.key.expose_secret(), &[], CHECK_LABEL, 32)?
            .expose_secret()
            .to_vec())
    }

    /// Whether `stored` is this key's check value (constant time).
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] if it is not.
    pub fn verify_check_value(&self, stored: &[u8]) -> Result<()> {
        if ct_eq(&self.check_value()?, stored) {
            Ok(())
        } else {
            Err(Error::AuthenticationFailed)
        }
    }

    /// Seal `plaintext` (key material) with associated data `aad`:
    /// `nonce(12) ‖ ciphertext ‖ tag(16)`, AES-256-GCM under the seal key.
    ///
    /// # Errors
    /// [`Error::Random`].
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        self.seal.seal_random_nonce(aad, plaintext)
    }

    /// Open what [`RootKey::seal`] made with the same `aad`.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] for another key, other `aad`, or a
    /// modified blob; [`Error::Truncated`].
    pub fn unseal(&self, sealed: &[u8], aad: &[u8]) -> Result<SecretBytes> {
        self.seal
            .open_with_nonce_prefix(aad, sealed)
            .map(SecretBytes::new)
    }
}

fn pad(s: &str) -> String {
    let mut p = s.to_owned();
    while p.len() % 4 != 0 {
        p.push('=');
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let k = RootKey::generate().unwrap();
        let b = k.expose_secret().expose_secret().to_vec();
        let std = crate::encoding::b64_encode(&b);
        let url = crate::encoding::b64url_encode(&b);
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        for form in [
            std.clone(),
            std.trim_end_matches('=').to_owned(),
            url,
            hex,
            format!("  {std}\n"),
        ] {
            let p = RootKey::parse_master_key(&form).unwrap();
            assert_eq!(p.expose_secret(), k.expose_secret());
        }
        let bad = [
            ("", "empty"),
            ("abc def", "whitespace"),
            ("!!!!", "neither base64"),
            ("AAAA", "decodes to 3 bytes"),
            (&"00".repeat(32)[..], "single repeated byte"),
        ];
        for (text, needle) in bad {
            let e = RootKey::parse_master_key(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
        let e = RootKey::parse_master_key(&std[..20])
            .unwrap_err()
            .to_string();
        assert!(!e.contains(&std[..20]), "never echo the key: {e}");
        assert!(format!("{k:?}").contains("REDACTED"));
    }

    #[test]
    fn seal_check_and_separation() {
        let k = RootKey::generate().unwrap();
        let s = k.seal(b"key material", b"name=a;v=1").unwrap();
        assert_eq!(
            k.unseal(&s, b"name=a;v=1").unwrap().expose_secret(),
            b"key material"
        );
        assert!(k.unseal(&s, b"name=b;v=1").is_err());
        let other = RootKey::generate().unwrap();
        assert!(other.unseal(&s, b"name=a;v=1").is_err());
        k.verify_check_value(&k.check_value().unwrap()).unwrap();
        assert!(other.verify_check_value(&k.check_value().unwrap()).is_err());
        assert_ne!(
            k.mac_key().unwrap().expose_secret(),
            &k.check_value().unwrap()[..]
        );
    }
}
