//! Secret byte strings: generated from the OS CSPRNG, zeroized on drop,
//! redacted in `Debug`, compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// Fill `buf` from the operating system's CSPRNG (through AWS-LC's DRBG,
/// which is seeded and reseeded from the OS).
///
/// # Errors
/// [`Error::Random`] if the generator fails.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    aws_lc_rs::rand::fill(buf).map_err(|_| Error::Random)
}

/// A random `u32` (used for key ids).
///
/// # Errors
/// [`Error::Random`] if the generator fails.
pub fn random_u32() -> Result<u32> {
    let mut b = [0u8; 4];
    fill_random(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Secret bytes: key material, derived keys, passphrase output.
///
/// The bytes are wiped when the value is dropped, are never printed by
/// `Debug`, and are reachable only through the loudly named
/// [`SecretBytes::expose_secret`].
pub struct SecretBytes(Box<[u8]>);

impl SecretBytes {
    /// Take ownership of `bytes` (the vector's buffer is reused, not copied).
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes.into_boxed_slice())
    }

    /// Copy `bytes` into a new secret. The caller remains responsible for its copy.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Self {
        SecretBytes(bytes.to_vec().into_boxed_slice())
    }

    /// `len` fresh bytes from the CSPRNG.
    ///
    /// # Errors
    /// [`Error::Random`] if the generator fails.
    pub fn random(len: usize) -> Result<Self> {
        let mut v = vec![0u8; len];
        fill_random(&mut v)?;
        Ok(SecretBytes::new(v))
    }

    /// The secret bytes. **Never** log, print or return them to a caller that
    /// has not asked for key material explicitly.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Clone for SecretBytes {
    fn clone(&self) -> Self {
        SecretBytes::from_slice(&self.0)
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.0.len())
    }
}

impl PartialEq for SecretBytes {
    /// Constant-time in the contents (the lengths are not secret).
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SecretBytes {}

/// Constant-time equality of two byte strings (lengths are not secret).
#[must_use]
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Whether key material is one byte value repeated (all zeros, all `0xff`,
/// ...): a placeholder or a bug, never a generated key (16 random bytes are
/// one repeated value with probability 2^-120). Refused wherever raw key
/// material is brought in. Not constant time in the value, which a key that
/// is refused does not need.
#[must_use]
pub fn is_repeated_byte(key: &[u8]) -> bool {
    key.split_first()
        .is_some_and(|(first, rest)| !rest.is_empty() && rest.iter().all(|b| b == first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_byte_keys() {
        assert!(is_repeated_byte(&[0; 32]));
        assert!(is_repeated_byte(&[0xff; 16]));
        let mut k = [0u8; 32];
        k[31] = 1;
        assert!(!is_repeated_byte(&k));
        assert!(!is_repeated_byte(&[]));
        assert!(!is_repeated_byte(&[7]));
    }

    #[test]
    fn debug_is_redacted() {
        let s = SecretBytes::from_slice(b"hunter2-hunter2");
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("REDACTED"));
    }

    #[test]
    fn random_is_random_and_eq_is_by_content() {
        let a = SecretBytes::random(32).unwrap();
        let b = SecretBytes::random(32).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
