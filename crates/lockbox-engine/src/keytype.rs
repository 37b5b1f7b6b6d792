//! Key types a named key can have, and how their material is made.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use lockbox_core::vault::VaultKeyType;
use lockbox_core::{Algorithm, SecretBytes};

use crate::error::{EngineError, Result};

/// The type of a named key (Vault's names, plus Lockbox's).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// AES-256-GCM, 96-bit nonce (the default).
    Aes256Gcm96,
    /// AES-128-GCM, 96-bit nonce.
    Aes128Gcm96,
    /// ChaCha20-Poly1305.
    ChaCha20Poly1305,
    /// XChaCha20-Poly1305 (Lockbox).
    XChaCha20Poly1305,
    /// AES-256-GCM-SIV (Lockbox).
    Aes256GcmSiv,
    /// Fernet (AES-128-CBC + HMAC-SHA256), for imported Fernet keys.
    Fernet,
    /// HMAC key (256 bits).
    Hmac,
    /// Ed25519 signing key.
    Ed25519,
    /// ECDSA P-256 signing key.
    EcdsaP256,
    /// ECDSA P-384 signing key.
    EcdsaP384,
    /// RSA 2048 signing key.
    Rsa2048,
    /// RSA 3072 signing key.
    Rsa3072,
    /// RSA 4096 signing key.
    Rsa4096,
}

impl KeyType {
    /// Every type.
    pub const ALL: [KeyType; 13] = [
        KeyType::Aes256Gcm96,
        KeyType::Aes128Gcm96,
        KeyType::ChaCha20Poly1305,
        KeyType::XChaCha20Poly1305,
        KeyType::Aes256GcmSiv,
        KeyType::Fernet,
        KeyType::Hmac,
        KeyType::Ed25519,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// The name used by the API and the CLI.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            KeyType::Aes256Gcm96 => "aes256-gcm96",
            KeyType::Aes128Gcm96 => "aes128-gcm96",
            KeyType::ChaCha20Poly1305 => "chacha20-poly1305",
            KeyType::XChaCha20Poly1305 => "xchacha20-poly1305",
            KeyType::Aes256GcmSiv => "aes256-gcm-siv",
            KeyType::Fernet => "fernet",
            KeyType::Hmac => "hmac",
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// The Vault Transit ciphertext flavour, for the encryption types.
    #[must_use]
    pub const fn vault_type(self) -> Option<VaultKeyType> {
        match self {
            KeyType::Aes256Gcm96 => Some(VaultKeyType::Aes256Gcm96),
            KeyType::Aes128Gcm96 => Some(VaultKeyType::Aes128Gcm96),
            KeyType::ChaCha20Poly1305 => Some(VaultKeyType::ChaCha20Poly1305),
            KeyType::XChaCha20Poly1305 => Some(VaultKeyType::XChaCha20Poly1305),
            KeyType::Aes256GcmSiv => Some(VaultKeyType::Aes256GcmSiv),
            _ => None,
        }
    }

    /// The AEAD algorithm (native format), for the encryption types.
    #[must_use]
    pub const fn algorithm(self) -> Option<Algorithm> {
        match self.vault_type() {
            Some(v) => Some(v.algorithm()),
            None => None,
        }
    }

    /// Whether the type encrypts and decrypts.
    #[must_use]
    pub const fn supports_encryption(self) -> bool {
        self.vault_type().is_some() || matches!(self, KeyType::Fernet)
    }

    /// Whether the type supports key derivation (`derived`).
    #[must_use]
    pub const fn supports_derivation(self) -> bool {
        self.vault_type().is_some()
    }

    /// Whether the type signs.
    #[must_use]
    pub const fn supports_signing(self) -> bool {
        matches!(
            self,
            KeyType::Ed25519
                | KeyType::EcdsaP256
                | KeyType::EcdsaP384
                | KeyType::Rsa2048
                | KeyType::Rsa3072
                | KeyType::Rsa4096
        )
    }

    /// Whether raw material has a fixed length (symmetric types), and which.
    #[must_use]
    pub const fn symmetric_len(self) -> Option<usize> {
        match self {
            KeyType::Aes128Gcm96 => Some(16),
            KeyType::Aes256Gcm96
            | KeyType::ChaCha20Poly1305
            | KeyType::XChaCha20Poly1305
            | KeyType::Aes256GcmSiv
            | KeyType::Fernet
            | KeyType::Hmac => Some(32),
            _ => None,
        }
    }

    /// Fresh key material: raw bytes for symmetric types, PKCS#8 DER for
    /// signing types.
    ///
    /// # Errors
    /// [`EngineError::Internal`] if the generator fails.
    pub fn generate(self) -> Result<SecretBytes> {
        if let Some(n) = self.symmetric_len() {
            return SecretBytes::random(n).map_err(EngineError::from);
        }
        let rng = SystemRandom::new();
        let fail = |_| EngineError::Internal("key generation failed".into());
        let der: Vec<u8> = match self {
            KeyType::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            KeyType::EcdsaP256 => EcdsaKeyPair::generate_pkcs8(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &rng,
            )
            .map_err(fail)?
            .as_ref()
            .to_vec(),
            KeyType::EcdsaP384 => EcdsaKeyPair::generate_pkcs8(
                &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                &rng,
            )
            .map_err(fail)?
            .as_ref()
            .to_vec(),
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                let size = match self {
                    KeyType::Rsa2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                    KeyType::Rsa3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                    _ => aws_lc_rs::rsa::KeySize::Rsa4096,
                };
                let kp = aws_lc_rs::rsa::KeyPair::generate(size).map_err(fail)?;
                let doc =
                    aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp)
                        .map_err(fail)?;
                doc.as_ref().to_vec()
            }
            _ => return Err(EngineError::Internal("no generator for key type".into())),
        };
        Ok(SecretBytes::new(der))
    }

    /// Check imported material: exact length for symmetric types, and not
    /// one byte value repeated (all zeros...); a parseable PKCS#8 private key
    /// of the right kind for signing types. Every way key material enters
    /// the engine (import of raw, Fernet or Vault-exported keys, backup
    /// restore) goes through it.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] naming the problem (never the bytes).
    pub fn validate(self, material: &[u8]) -> Result<()> {
        if let Some(n) = self.symmetric_len() {
            if material.len() != n {
                return Err(EngineError::BadRequest(format!(
                    "invalid key size {} bytes for key type {}; expected {n} bytes",
                    material.len(),
                    self.name()
                )));
            }
            if lockbox_core::is_repeated_byte(material) {
                return Err(EngineError::BadRequest(format!(
                    "the {} key material is one byte value repeated (e.g. all zeros), not a key: \
                     import the real key",
                    self.name()
                )));
            }
            return Ok(());
        }
        let ok = match self {
            KeyType::Ed25519 => Ed25519KeyPair::from_pkcs8(material)
                .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(material))
                .is_ok(),
            KeyType::EcdsaP256 => EcdsaKeyPair::from_pkcs8(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                material,
            )
            .is_ok(),
            KeyType::EcdsaP384 => EcdsaKeyPair::from_pkcs8(
                &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                material,
            )
            .is_ok(),
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                match aws_lc_rs::rsa::KeyPair::from_pkcs8(material) {
                    Ok(kp) => {
                        let bits = kp.public_modulus_len() * 8;
                        bits == match self {
                            KeyType::Rsa2048 => 2048,
                            KeyType::Rsa3072 => 3072,
                            _ => 4096,
                        }
                    }
                    Err(_) => false,
                }
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(EngineError::BadRequest(format!(
                "key material is not a PKCS#8 {} private key",
                self.name()
            )))
        }
    }

    /// The public key (DER SubjectPublicKeyInfo for ECDSA/RSA, raw 32 bytes
    /// for Ed25519) of signing material.
    #[must_use]
    pub fn public_key(self, material: &[u8]) -> Option<Vec<u8>> {
        match self {
            KeyType::Ed25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(material)
                .ok()
                .map(|k| k.public_key().as_ref().to_vec()),
            KeyType::EcdsaP256 => EcdsaKeyPair::from_pkcs8(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                material,
            )
            .ok()
            .map(|k| k.public_key().as_ref().to_vec()),
            KeyType::EcdsaP384 => EcdsaKeyPair::from_pkcs8(
                &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                material,
            )
            .ok()
            .map(|k| k.public_key().as_ref().to_vec()),
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
                aws_lc_rs::rsa::KeyPair::from_pkcs8(material)
                    .ok()
                    .map(|k| k.public_key().as_ref().to_vec())
            }
            _ => None,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        KeyType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| EngineError::BadRequest(format!("unknown key type {s}")))
    }
}
