//! `lockbox-core`: the pure cryptographic heart of Lockbox.
//!
//! No I/O, no async, no global state. Everything here is deterministic given
//! its inputs and the CSPRNG.
//!
//! The public interface is:
//! - secrets: [`SecretBytes`] (zeroized, redacted, constant-time equality);
//! - AEAD: [`Algorithm`], [`AeadKey`];
//! - keysets: [`Keyset`], [`KeyVersion`], [`KeyState`] and their JSON file form;
//! - the native ciphertext format: [`native`] (`lbx1:` text, `LBX\x01` binary),
//!   [`is_encrypted`];
//! - the envelope format: [`envelope`] (`lbxe1:`: a data key per message,
//!   wrapped by one or more KEKs, the encryption context authenticated);
//! - foreign formats: [`vault`] (Transit `vault:vN:`), [`fernet`];
//! - derivation: [`kdf`] (HKDF, PBKDF2-HMAC-SHA512, Argon2id, HMAC);
//! - searchable encryption: [`blind_index`], and deterministic encryption
//!   ([`Algorithm::Aes256Siv`], RFC 5297 AES-SIV) through the same keysets.

pub mod acl;
pub mod aead;
pub mod audit;
pub mod blind_index;
pub mod encoding;
pub mod envelope;
mod error;
pub mod fernet;
pub mod kdf;
pub mod keyset;
pub mod native;
pub mod rootkey;
mod secret;
pub mod shamir;
pub mod vault;
pub mod webhook;

pub use aead::{AeadKey, Algorithm};
pub use error::{Error, Result};
pub use keyset::{KeyState, KeyVersion, Keyset};
pub use native::{is_encrypted, EncryptOptions};
pub use secret::{ct_eq, fill_random, is_repeated_byte, random_u32, SecretBytes};
