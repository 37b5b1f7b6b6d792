//! Errors of the key engine. Each maps to one HTTP status in the server.

use std::fmt;

use lockbox_store::StoreError;

/// Result alias.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What can go wrong in the engine.
#[derive(Debug)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine is sealed: unseal first (HTTP 503).
    Sealed,
    /// The store has not been initialized (`lockbox init`) (HTTP 400).
    NotInitialized,
    /// The store is already initialized (HTTP 400).
    AlreadyInitialized,
    /// No key of that name (HTTP 400 for operations, 404 for reads).
    KeyNotFound(String),
    /// The key is soft-deleted; restore it first.
    KeyDeleted(String),
    /// The key was destroyed (crypto-shredded): who and when. The message
    /// says when but not who: callers must not learn other principals (the
    /// key's metadata and the `KEY_DESTROYED` event keep who).
    KeyDestroyed {
        /// Key name.
        name: String,
        /// When (Unix seconds).
        at: i64,
        /// Who (not part of the message).
        by: String,
    },
    /// A request that cannot be honoured as asked; the message says why.
    BadRequest(String),
    /// Not allowed (HTTP 403); the message says what was refused.
    PermissionDenied(String),
    /// No such token, accessor or policy (HTTP 404).
    NotFound(String),
    /// A cryptographic or format error from `lockbox-core`.
    Crypto(lockbox_core::Error),
    /// Unseal failed: wrong, corrupt, mixed or too few shares, wrong master key.
    Unseal(String),
    /// Stored data failed its integrity check (tampered or corrupt row).
    Integrity(String),
    /// Concurrent modification kept winning; try again.
    Conflict,
    /// The store failed.
    Store(StoreError),
    /// Unexpected internal failure.
    Internal(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Sealed => f.write_str("Lockbox is sealed"),
            EngineError::NotInitialized => f.write_str(
                "Lockbox is not initialized: run `lockbox init` (or set LOCKBOX_MASTER_KEY)",
            ),
            EngineError::AlreadyInitialized => f.write_str("Lockbox is already initialized"),
            EngineError::KeyNotFound(n) => write!(f, "encryption key not found: {n}"),
            EngineError::KeyDeleted(n) => {
                write!(
                    f,
                    "key {n} is deleted; restore it with `lockbox keys restore {n}`"
                )
            }
            EngineError::KeyDestroyed { name, at, .. } => {
                write!(
                    f,
                    "key {name} was destroyed at {at}; its data is unrecoverable"
                )
            }
            EngineError::BadRequest(m) => f.write_str(m),
            EngineError::PermissionDenied(m) => write!(f, "permission denied: {m}"),
            EngineError::NotFound(m) => write!(f, "not found: {m}"),
            EngineError::Crypto(e) => write!(f, "{e}"),
            EngineError::Unseal(m) => f.write_str(m),
            EngineError::Integrity(m) => write!(f, "integrity check failed: {m}"),
            EngineError::Conflict => f.write_str("the key was modified concurrently; try again"),
            EngineError::Store(e) => write!(f, "store: {e}"),
            EngineError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<lockbox_core::Error> for EngineError {
    fn from(e: lockbox_core::Error) -> Self {
        EngineError::Crypto(e)
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => EngineError::Conflict,
            other => EngineError::Store(other),
        }
    }
}

impl EngineError {
    /// Whether the caller (not the server) is at fault: HTTP 4xx.
    #[must_use]
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            EngineError::Sealed
                | EngineError::Store(_)
                | EngineError::Internal(_)
                | EngineError::Integrity(_)
        )
    }
}
