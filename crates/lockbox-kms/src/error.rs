//! The one error type of `lockbox-kms`.

use std::fmt;

/// Result alias.
pub type Result<T, E = KmsError> = std::result::Result<T, E>;

/// What can go wrong with a key-encryption provider, an envelope or the cache.
///
/// Unwrap and decryption failures are coarse on purpose
/// ([`KmsError::AuthenticationFailed`]); availability and configuration
/// errors name the provider and what to fix. No variant carries key bytes.
#[derive(Debug)]
#[non_exhaustive]
pub enum KmsError {
    /// The provider could not be reached, timed out, or kept failing with
    /// retryable errors (5xx, throttling) after every allowed attempt.
    Unavailable {
        /// Provider id and key (`aws-kms alias/x`).
        provider: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The provider refused the request (4xx other than throttling): wrong
    /// key id, missing permission, disabled key...
    Rejected {
        /// Provider id and key.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The provider's error type and message.
        message: String,
    },
    /// The provider answered with something that is not its protocol.
    Protocol {
        /// Provider id and key.
        provider: String,
        /// What was wrong.
        message: String,
    },
    /// Wrong key, wrong context or a modified ciphertext. Says nothing more.
    AuthenticationFailed,
    /// None of the configured providers can unwrap any of the envelope's data keys.
    NoProvider {
        /// The `provider:key` pairs of the envelope's wrapped keys.
        wrapped_by: Vec<String>,
    },
    /// The KEK was destroyed (crypto-shredded): the data is unrecoverable.
    KeyDestroyed(String),
    /// Invalid configuration or argument; the message says what to fix.
    Config(String),
    /// A format or cryptographic error from `lockbox-core`.
    Format(lockbox_core::Error),
    /// An error of the local key engine.
    Engine(lockbox_engine::EngineError),
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmsError::Unavailable {
                provider,
                attempts,
                last,
            } => write!(
                f,
                "key provider {provider} is unavailable after {attempts} attempt(s): {last}"
            ),
            KmsError::Rejected {
                provider,
                status,
                message,
            } => write!(
                f,
                "key provider {provider} refused the request (HTTP {status}): {message}"
            ),
            KmsError::Protocol { provider, message } => {
                write!(f, "key provider {provider} sent an invalid answer: {message}")
            }
            KmsError::AuthenticationFailed => f.write_str("authentication failed"),
            KmsError::NoProvider { wrapped_by } => write!(
                f,
                "no configured key provider can unwrap this envelope (its data key is wrapped by: {})",
                wrapped_by.join(", ")
            ),
            KmsError::KeyDestroyed(k) => {
                write!(f, "key {k} was destroyed; its data is unrecoverable")
            }
            KmsError::Config(m) => write!(f, "invalid configuration: {m}"),
            KmsError::Format(e) => e.fmt(f),
            KmsError::Engine(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for KmsError {}

impl From<lockbox_core::Error> for KmsError {
    fn from(e: lockbox_core::Error) -> Self {
        match e {
            lockbox_core::Error::AuthenticationFailed => KmsError::AuthenticationFailed,
            other => KmsError::Format(other),
        }
    }
}

impl From<lockbox_engine::EngineError> for KmsError {
    fn from(e: lockbox_engine::EngineError) -> Self {
        use lockbox_engine::EngineError as E;
        match e {
            E::KeyDestroyed { name, .. } => KmsError::KeyDestroyed(name),
            E::Crypto(lockbox_core::Error::AuthenticationFailed) => KmsError::AuthenticationFailed,
            other => KmsError::Engine(other),
        }
    }
}
