//! The one error type of `lockbox-store`.
//!
//! No variant carries sealed key material, MACs or database passwords:
//! messages name what failed (a table, a column, a key name, a host), never
//! the secret bytes, and connection errors are passed through
//! [`redact`] before they are stored.

use std::fmt;

/// Everything that can go wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// A key with this name already exists (`key_insert`).
    AlreadyExists,
    /// A concurrent change won: the stored generation was not the expected
    /// one, or a version being added already exists. Nothing was written;
    /// reload and retry.
    Conflict,
    /// The key does not exist (`key_update` of an unknown name).
    NotFound,
    /// An argument is invalid (a bad URL, a generation that does not follow,
    /// a value out of range); the message says which.
    Invalid(String),
    /// The database cannot be reached or failed (connection, I/O, lock
    /// timeout). The message never contains a password.
    Unavailable(String),
    /// A stored row cannot be decoded (a value out of range, a wrong type,
    /// an orphan row); the message names the row and column, never secret bytes.
    Corrupt(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::AlreadyExists => f.write_str("a key with this name already exists"),
            StoreError::Conflict => {
                f.write_str("the key was modified concurrently (conflict); reload and retry")
            }
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Invalid(why) => write!(f, "invalid store request: {why}"),
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::Corrupt(why) => write!(f, "corrupt store data: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Maps a driver error to a [`StoreError`].
///
/// Unique violations become [`StoreError::Conflict`] (callers that mean
/// something else, like `key_insert`, check for them first); PostgreSQL
/// serialization failures and deadlocks too, as they mean "retry".
pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(d) => {
            if d.is_unique_violation() {
                return StoreError::Conflict;
            }
            if matches!(d.code().as_deref(), Some("40001" | "40P01")) {
                return StoreError::Conflict;
            }
            StoreError::Unavailable(format!("database error: {}", d.message()))
        }
        sqlx::Error::Configuration(e) => StoreError::Invalid(format!("configuration: {e}")),
        sqlx::Error::InvalidArgument(m) => StoreError::Invalid(m),
        sqlx::Error::Encode(e) => StoreError::Invalid(format!("cannot encode a value: {e}")),
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::RowNotFound) => StoreError::Corrupt(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// True if `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Replaces every occurrence of `secret` (as written, and percent-decoded)
/// in `msg` with `***`. An empty secret changes nothing.
pub(crate) fn redact(msg: &str, secret: Option<&str>) -> String {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return msg.to_owned();
    };
    let mut out = msg.replace(secret, "***");
    let decoded = percent_decode(secret);
    if !decoded.is_empty() && decoded != secret {
        out = out.replace(&decoded, "***");
    }
    out
}

/// Decodes `%XX` escapes (invalid escapes are kept as written).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or_default();
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_raw_and_decoded_password() {
        assert_eq!(redact("x p%40ss y p@ss", Some("p%40ss")), "x *** y ***");
        assert_eq!(redact("nothing here", None), "nothing here");
        assert_eq!(redact("nothing here", Some("")), "nothing here");
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
    }
}
