//! Base64 helpers with typed errors. Decoding is strict: canonical padding
//! and trailing bits, no whitespace.

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

use crate::error::{Error, Result};

/// Standard alphabet, padded (Vault, JSON APIs).
#[must_use]
pub fn b64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decode standard padded base64.
///
/// # Errors
/// [`Error::Encoding`] if `s` is not canonical standard base64.
pub fn b64_decode(s: &str) -> Result<Vec<u8>> {
    STANDARD
        .decode(s)
        .map_err(|_| Error::Encoding("not valid base64 (standard alphabet, padded)"))
}

/// URL-safe alphabet, padded (Fernet tokens and keys).
#[must_use]
pub fn b64url_pad_encode(data: &[u8]) -> String {
    URL_SAFE.encode(data)
}

/// Decode URL-safe padded base64.
///
/// # Errors
/// [`Error::Encoding`] if `s` is not canonical URL-safe padded base64.
pub fn b64url_pad_decode(s: &str) -> Result<Vec<u8>> {
    URL_SAFE
        .decode(s)
        .map_err(|_| Error::Encoding("not valid URL-safe base64 (padded)"))
}

/// URL-safe alphabet without padding (the native text form).
#[must_use]
pub fn b64url_encode(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Append URL-safe unpadded base64 of `data` to `out`.
pub fn b64url_encode_into(data: &[u8], out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(data, out);
}

/// Decode URL-safe unpadded base64.
///
/// # Errors
/// [`Error::Encoding`] if `s` is not canonical URL-safe unpadded base64.
pub fn b64url_decode(s: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| Error::Encoding("not valid URL-safe base64 (unpadded)"))
}

/// Lowercase hex.
#[must_use]
pub fn hex_encode(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Hex (either case) to bytes.
///
/// # Errors
/// [`crate::Error::Encoding`] for odd length or a non-hex digit.
pub fn hex_decode(s: &str) -> Result<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return Err(crate::Error::Encoding("hex has an odd length"));
    }
    let val = |c: u8| -> Result<u8> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(crate::Error::Encoding("not hex")),
        }
    };
    b.chunks(2)
        .map(|p| Ok(val(p[0])? << 4 | val(p[1])?))
        .collect()
}
