//! Lockbox: application-level encryption and key management.
//!
//! This crate is the facade Rust programs depend on; today it re-exports
//! [`lockbox_core`] (keys, AEAD, the native, Vault Transit and Fernet
//! formats, derivation, blind indexes). Later layers (stores, KMS providers,
//! the server) are added beside it.
//!
//! ```
//! use lockbox::{Algorithm, Keyset};
//!
//! let keyset = Keyset::generate("customers", Algorithm::Aes256Gcm)?;
//! let token = keyset.encrypt(b"4111 1111 1111 1111", b"tenant=acme;table=cards;row=42")?;
//! assert!(lockbox::is_encrypted(&token));
//! let plain = keyset.decrypt(&token, b"tenant=acme;table=cards;row=42")?;
//! assert_eq!(plain, b"4111 1111 1111 1111");
//! # Ok::<(), lockbox::Error>(())
//! ```

pub use lockbox_core::*;
/// Key-encryption providers (local, AWS KMS, Vault Transit), envelope
/// encryption, the data-key cache and tenants.
pub use lockbox_kms as kms;
