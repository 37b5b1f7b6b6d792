//! The one error type of `lockbox-core`.
//!
//! Decryption failures are deliberately coarse ([`Error::AuthenticationFailed`]
//! says nothing about *why* a tag did not verify); structural and configuration
//! errors say exactly what is wrong. No variant ever carries key bytes or
//! plaintext.

use std::fmt;

/// Result alias used throughout `lockbox-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `lockbox-core`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input does not start with a prefix this parser knows.
    UnknownPrefix {
        /// Which format was expected (`"lockbox"`, `"vault"`, `"fernet"`).
        format: &'static str,
    },
    /// The format version in the header is not supported by this build.
    UnsupportedVersion {
        /// Which format.
        format: &'static str,
        /// The version found.
        version: u32,
    },
    /// The algorithm identifier or name is unknown.
    UnknownAlgorithm(String),
    /// The input ends before a complete structure was read.
    Truncated {
        /// What was being read when the input ran out.
        what: &'static str,
    },
    /// The input is structurally invalid (bad flags, bad length, trailing bytes...).
    Malformed(&'static str),
    /// Text that should be base64 (or hex) is not.
    Encoding(&'static str),
    /// The ciphertext names a key id other than the keyset's.
    WrongKeyId {
        /// The key id in the ciphertext header.
        found: u32,
        /// The key id of the keyset used.
        expected: u32,
    },
    /// The ciphertext names a key version the keyset does not have.
    UnknownKeyVersion(u32),
    /// The key version exists but its state forbids the operation.
    KeyVersionUnusable {
        /// The version.
        version: u32,
        /// Its state (`disabled`, `destroyed`, ...).
        state: &'static str,
        /// What was attempted (`encrypt`, `decrypt`).
        operation: &'static str,
    },
    /// Authentication failed: wrong key, wrong context, or a modified ciphertext.
    /// Deliberately says nothing more.
    AuthenticationFailed,
    /// A Fernet token is older than the TTL allows.
    TokenExpired,
    /// A Fernet token's timestamp is more than the permitted skew in the future.
    TokenFromFuture,
    /// Key material is invalid; the message names what is wrong (never the bytes).
    InvalidKey(String),
    /// An argument is out of range or inconsistent; the message says which.
    InvalidArgument(String),
    /// A keyset document could not be read; the message says what is wrong.
    Keyset(String),
    /// The operating system's random generator failed.
    Random,
    /// An unexpected failure inside a cryptographic library.
    Crypto(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownPrefix { format } => {
                write!(f, "not a {format} ciphertext: unknown prefix")
            }
            Error::UnsupportedVersion { format, version } => {
                write!(f, "unsupported {format} format version {version}")
            }
            Error::UnknownAlgorithm(a) => write!(f, "unknown algorithm {a:?}"),
            Error::Truncated { what } => write!(f, "input is truncated (while reading {what})"),
            Error::Malformed(what) => write!(f, "malformed input: {what}"),
            Error::Encoding(what) => write!(f, "invalid encoding: {what}"),
            Error::WrongKeyId { found, expected } => write!(
                f,
                "ciphertext was made with key id {found:08x}, but this keyset is {expected:08x}"
            ),
            Error::UnknownKeyVersion(v) => write!(f, "unknown key version {v}"),
            Error::KeyVersionUnusable {
                version,
                state,
                operation,
            } => write!(f, "key version {version} is {state}: it cannot {operation}"),
            Error::AuthenticationFailed => f.write_str("authentication failed"),
            Error::TokenExpired => f.write_str("token has expired (older than the TTL)"),
            Error::TokenFromFuture => {
                f.write_str("token timestamp is too far in the future (clock skew)")
            }
            Error::InvalidKey(why) => write!(f, "invalid key: {why}"),
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::Keyset(why) => write!(f, "invalid keyset: {why}"),
            Error::Random => f.write_str("the operating system random generator failed"),
            Error::Crypto(what) => write!(f, "internal cryptographic error: {what}"),
        }
    }
}

impl std::error::Error for Error {}
