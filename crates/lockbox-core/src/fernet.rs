//! Fernet tokens (<https://github.com/fernet/spec>), byte-compatible with
//! Python `cryptography`'s `Fernet` and `MultiFernet`.
//!
//! A token is URL-safe base64 (padded) of
//!
//! ```text
//! 0x80 ‖ timestamp (u64, big-endian seconds) ‖ IV (16) ‖ AES-128-CBC-PKCS7 ciphertext ‖ HMAC-SHA256 (32)
//! ```
//!
//! where the HMAC covers everything before it and the 32-byte key is
//! `signing key (16) ‖ encryption key (16)`. Decryption verifies the HMAC (in
//! constant time) **before** anything is decrypted or any timestamp is trusted.
//!
//! # Differences from Python `cryptography`
//!
//! - **Base64 is strict.** Tokens and keys must be canonical URL-safe base64
//!   with `=` padding: no whitespace, no `+`/`/`, no missing padding, no
//!   non-zero unused bits. Python's `urlsafe_b64decode` silently skips
//!   characters outside the alphabet and accepts the standard alphabet and
//!   non-canonical final characters, so several strings decode to the same
//!   token there. Every encoder (Python's included) produces the canonical
//!   form, so no real token is lost; the strictness only removes that
//!   malleability and makes copy/paste damage visible
//!   ([`Error::Encoding`] names the problem).
//! - **Future timestamps are always refused.** A token stamped more than
//!   [`MAX_CLOCK_SKEW`] seconds after "now" fails with
//!   [`Error::TokenFromFuture`] even without a TTL. Python applies the skew
//!   check only when a TTL is given. [`MultiFernet::rotate`], like Python's,
//!   does no time check at all (it keeps the timestamp, so it cannot make a
//!   token more or less acceptable).
//! - **Errors are typed.** Where Python raises one `InvalidToken`, this
//!   module distinguishes structure ([`Error::Encoding`], [`Error::Truncated`],
//!   [`Error::UnknownPrefix`]), authenticity ([`Error::AuthenticationFailed`]:
//!   wrong key, modified token, bad padding) and time ([`Error::TokenExpired`],
//!   [`Error::TokenFromFuture`]). The time errors are only reported for tokens
//!   whose HMAC verified, so an attacker cannot learn anything from them.
//!
//! Otherwise the semantics are Python's: a token is expired when
//! `timestamp + ttl < now` (so a token is still valid at exactly
//! `timestamp + ttl`), and too new when `now + 60 < timestamp`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::cipher::{
    DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey, AES_128,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::secret::{fill_random, SecretBytes};

/// Length of a Fernet key in bytes (signing key ‖ encryption key).
pub const KEY_LEN: usize = 32;
/// Length of a Fernet key in URL-safe base64 characters (with one `=`).
pub const KEY_B64_LEN: usize = 44;
/// The version byte every Fernet token starts with.
pub const VERSION: u8 = 0x80;
/// How far in the future (seconds) a token's timestamp may be; Python's
/// `_MAX_CLOCK_SKEW`.
pub const MAX_CLOCK_SKEW: u64 = 60;
/// The shortest possible token in bytes (before base64): version, timestamp,
/// IV, one AES block, HMAC.
pub const MIN_TOKEN_LEN: usize = HEADER_LEN + BLOCK_LEN + TAG_LEN;

const HALF_KEY_LEN: usize = 16;
const BLOCK_LEN: usize = 16;
const IV_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 8 + IV_LEN;
const TAG_LEN: usize = 32;

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// A 32-byte Fernet key: the first 16 bytes sign (HMAC-SHA256), the last 16
/// encrypt (AES-128-CBC).
///
/// The bytes are wiped on drop and never printed by `Debug`.
pub struct FernetKey(SecretBytes);

impl FernetKey {
    /// A fresh random key from the CSPRNG.
    ///
    /// # Errors
    /// [`Error::Random`] if the generator fails.
    pub fn generate() -> Result<Self> {
        Ok(FernetKey(SecretBytes::random(KEY_LEN)?))
    }

    /// A key from its 32 raw bytes.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if `bytes` is not exactly 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "a Fernet key is {KEY_LEN} bytes, got {} bytes",
                bytes.len()
            )));
        }
        Ok(FernetKey(SecretBytes::from_slice(bytes)))
    }

    /// Parse the usual text form: 32 bytes as URL-safe base64 with padding
    /// (44 characters, the last one `=`), as made by Python's
    /// `Fernet.generate_key()`.
    ///
    /// Parsing is strict (see the [module documentation](self)).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] with a message naming what is wrong (length in
    /// characters or bytes, whitespace, quotes, standard alphabet, missing or
    /// misplaced padding, hex instead of base64, non-canonical final
    /// character). The message never contains the key or any part of it.
    pub fn from_base64(s: &str) -> Result<Self> {
        diagnose_key_text(s).map_err(Error::InvalidKey)?;
        let mut buf = [0u8; 48];
        let decoded = URL_SAFE.decode_slice(s.as_bytes(), &mut buf);
        let result = match decoded {
            Ok(KEY_LEN) => Ok(FernetKey(SecretBytes::from_slice(
                buf.get(..KEY_LEN).unwrap_or_default(),
            ))),
            Ok(n) => Err(Error::InvalidKey(format!(
                "the key decodes to {n} bytes; a Fernet key is exactly {KEY_LEN} bytes"
            ))),
            Err(_) => Err(Error::InvalidKey(
                "the key is not canonical URL-safe base64: the character before '=' has \
                 non-zero unused bits (the key was altered or mistyped)"
                    .into(),
            )),
        };
        buf.zeroize();
        result
    }

    /// The key as URL-safe padded base64 (the form [`FernetKey::from_base64`]
    /// and Python's `Fernet(key)` accept).
    ///
    /// **This is the secret key.** Show or store it only when the user asked
    /// for key material; the returned `String` is not wiped on drop.
    #[must_use]
    pub fn expose_base64(&self) -> String {
        URL_SAFE.encode(self.0.expose_secret())
    }

    fn signing_key(&self) -> &[u8] {
        self.0
            .expose_secret()
            .get(..HALF_KEY_LEN)
            .unwrap_or_default()
    }

    fn encryption_key(&self) -> &[u8] {
        self.0
            .expose_secret()
            .get(HALF_KEY_LEN..)
            .unwrap_or_default()
    }
}

impl Clone for FernetKey {
    fn clone(&self) -> Self {
        FernetKey(self.0.clone())
    }
}

impl fmt::Debug for FernetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FernetKey([REDACTED])")
    }
}

/// Explain why `s` is not the text form of a Fernet key, without quoting it.
/// `Ok` means the shape is right (44 URL-safe characters ending in exactly one
/// `=`); decoding can then fail only on non-canonical unused bits.
fn diagnose_key_text(s: &str) -> std::result::Result<(), String> {
    const EXPECT: &str =
        "a Fernet key is 44 characters of URL-safe base64 (32 bytes, ending in '=')";
    if s.is_empty() {
        return Err(format!("the key is empty; {EXPECT}"));
    }
    if s.trim() != s {
        return Err(format!(
            "the key has leading or trailing whitespace or a line break; remove it ({EXPECT})"
        ));
    }
    if let Some(pos) = s.chars().position(char::is_whitespace) {
        return Err(format!(
            "the key contains whitespace at character {}; remove it ({EXPECT})",
            pos + 1
        ));
    }
    if s.starts_with("b'") || s.starts_with("b\"") {
        return Err(
            "the key looks like a Python bytes literal (b'...'); use only the text between \
             the quotes"
                .into(),
        );
    }
    if s.starts_with(['\'', '"']) || s.ends_with(['\'', '"']) {
        return Err(format!(
            "the key is wrapped in quotes; remove them ({EXPECT})"
        ));
    }
    if s.contains(['+', '/']) {
        return Err(
            "the key uses the standard base64 alphabet ('+' or '/'); Fernet keys use the \
             URL-safe alphabet: replace '+' with '-' and '/' with '_'"
                .into(),
        );
    }
    if let Some(pos) = s
        .chars()
        .position(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '='))
    {
        return Err(format!(
            "the key contains a character that is not URL-safe base64 at character {} \
             ({EXPECT})",
            pos + 1
        ));
    }
    // From here on `s` is ASCII, so byte and character counts agree.
    let n = s.len();
    if n == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "the key is 64 hexadecimal characters; {EXPECT}, not hex (re-encode the 32 bytes \
             as URL-safe base64)"
        ));
    }
    let data = s.trim_end_matches('=');
    let pad = n - data.len();
    if data.contains('=') {
        return Err(format!("the key has '=' padding before its end; {EXPECT}"));
    }
    if n != KEY_B64_LEN {
        if n == KEY_B64_LEN - 1 && pad == 0 {
            return Err(format!(
                "the key is missing its '=' padding (43 characters); {EXPECT}"
            ));
        }
        // Whole bytes the data characters would carry.
        let approx = data.len() * 6 / 8;
        return Err(format!(
            "the key is {n} characters long (about {approx} bytes); {EXPECT}"
        ));
    }
    match pad {
        1 => Ok(()),
        0 => Err(format!(
            "the key has no '=' padding and would decode to 33 bytes; {EXPECT}"
        )),
        2 => Err(format!("the key decodes to 31 bytes; {EXPECT}")),
        _ => Err(format!("the key has too much '=' padding; {EXPECT}")),
    }
}

// ---------------------------------------------------------------------------
// Token structure
// ---------------------------------------------------------------------------

/// A decoded token, split into its parts. Nothing here is authenticated yet.
struct TokenView<'a> {
    /// Everything the HMAC covers.
    signed: &'a [u8],
    tag: &'a [u8],
    timestamp: u64,
    iv: [u8; IV_LEN],
    ciphertext: &'a [u8],
}

/// Why a string is not canonical URL-safe padded base64 (static, for
/// [`Error::Encoding`]).
fn diagnose_token_text(s: &str) -> &'static str {
    if s.contains(char::is_whitespace) {
        "fernet token contains whitespace or a line break"
    } else if s.contains(['+', '/']) {
        "fernet token uses the standard base64 alphabet ('+' or '/'), not the URL-safe one"
    } else if !s.is_ascii()
        || s.bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'='))
    {
        "fernet token contains characters outside URL-safe base64"
    } else if s.len() % 4 != 0 {
        "fernet token is not a whole number of base64 quads (missing '=' padding or cut short)"
    } else {
        "fernet token is not canonical URL-safe base64 (misplaced padding or non-zero unused bits)"
    }
}

/// Decode `token` strictly (canonical URL-safe base64 with padding).
fn decode_token(token: &str) -> Result<Vec<u8>> {
    if token.is_empty() {
        return Err(Error::Truncated {
            what: "fernet token",
        });
    }
    URL_SAFE
        .decode(token)
        .map_err(|_| Error::Encoding(diagnose_token_text(token)))
}

/// Check the structure of decoded token bytes and split them.
fn view(data: &[u8]) -> Result<TokenView<'_>> {
    match data.first() {
        Some(&VERSION) => {}
        Some(_) => return Err(Error::UnknownPrefix { format: "fernet" }),
        None => {
            return Err(Error::Truncated {
                what: "fernet token",
            })
        }
    }
    if data.len() < MIN_TOKEN_LEN {
        return Err(Error::Truncated {
            what: "fernet token",
        });
    }
    let (signed, tag) = data
        .split_at_checked(data.len() - TAG_LEN)
        .ok_or(Error::Truncated {
            what: "fernet HMAC",
        })?;
    let (header, ciphertext) = signed
        .split_at_checked(HEADER_LEN)
        .ok_or(Error::Truncated {
            what: "fernet header",
        })?;
    if ciphertext.is_empty() || ciphertext.len() % BLOCK_LEN != 0 {
        return Err(Error::Truncated {
            what: "fernet ciphertext (a partial 16-byte AES block)",
        });
    }
    let ts: [u8; 8] = header
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .ok_or(Error::Truncated {
            what: "fernet timestamp",
        })?;
    let iv: [u8; IV_LEN] = header
        .get(9..HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(Error::Truncated { what: "fernet IV" })?;
    Ok(TokenView {
        signed,
        tag,
        timestamp: u64::from_be_bytes(ts),
        iv,
        ciphertext,
    })
}

/// Whether `s` has the structure of a Fernet token: canonical URL-safe padded
/// base64 of `0x80 ‖ timestamp ‖ IV ‖ whole AES blocks (at least one) ‖ HMAC`.
///
/// Structural only: nothing is verified, so `true` does not mean any key will
/// accept it. Never fails and never panics.
#[must_use]
pub fn is_fernet_token(s: &str) -> bool {
    // 0x80 in the first byte makes the first base64 character 'g'; the
    // shortest token (73 bytes) is 100 characters.
    if !s.starts_with('g') || s.len() < 100 {
        return false;
    }
    match URL_SAFE.decode(s) {
        Ok(data) => view(&data).is_ok(),
        Err(_) => false,
    }
}

/// The current Unix time in seconds.
fn now() -> Result<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| Error::InvalidArgument("the system clock is set before 1970-01-01".into()))
}

/// Python's TTL and clock-skew rules, except that the skew check also applies
/// without a TTL.
fn check_time(timestamp: u64, ttl: Option<u64>, current_time: u64) -> Result<()> {
    if let Some(ttl) = ttl {
        if timestamp.saturating_add(ttl) < current_time {
            return Err(Error::TokenExpired);
        }
    }
    if current_time.saturating_add(MAX_CLOCK_SKEW) < timestamp {
        return Err(Error::TokenFromFuture);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Fernet
// ---------------------------------------------------------------------------

/// Encrypts and decrypts Fernet tokens under one key.
///
/// The HMAC key and the AES key schedules are prepared once, in
/// [`Fernet::new`]; AWS-LC wipes them on drop.
pub struct Fernet {
    signing: hmac::Key,
    // `None` only if AWS-LC refused a 16-byte AES-128 key, which it does not;
    // kept fallible rather than panicking.
    enc: Option<PaddedBlockEncryptingKey>,
    dec: Option<PaddedBlockDecryptingKey>,
}

impl fmt::Debug for Fernet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fernet").finish_non_exhaustive()
    }
}

impl Fernet {
    /// Prepare `key` for use.
    #[must_use]
    pub fn new(key: FernetKey) -> Self {
        let signing = hmac::Key::new(hmac::HMAC_SHA256, key.signing_key());
        let enc = UnboundCipherKey::new(&AES_128, key.encryption_key())
            .ok()
            .and_then(|k| PaddedBlockEncryptingKey::cbc_pkcs7(k).ok());
        let dec = UnboundCipherKey::new(&AES_128, key.encryption_key())
            .ok()
            .and_then(|k| PaddedBlockDecryptingKey::cbc_pkcs7(k).ok());
        Fernet { signing, enc, dec }
    }

    /// A fresh random key (same as [`FernetKey::generate`]).
    ///
    /// # Errors
    /// [`Error::Random`] if the generator fails.
    pub fn generate_key() -> Result<FernetKey> {
        FernetKey::generate()
    }

    /// Encrypt `plaintext`, stamped with the current time, under a random IV.
    ///
    /// # Errors
    /// [`Error::Random`] if the generator fails; [`Error::InvalidArgument`] if
    /// the system clock is before 1970.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String> {
        self.encrypt_at_time(plaintext, now()?)
    }

    /// Encrypt `plaintext` stamped with `current_time` (Unix seconds), under a
    /// random IV.
    ///
    /// # Errors
    /// [`Error::Random`] if the generator fails.
    pub fn encrypt_at_time(&self, plaintext: &[u8], current_time: u64) -> Result<String> {
        let mut iv = [0u8; IV_LEN];
        fill_random(&mut iv)?;
        self.encrypt_with_parts(plaintext, current_time, iv)
    }

    /// Encrypt with a caller-chosen timestamp **and IV**.
    ///
    /// **For test vectors and interoperability tests only.** Reusing an IV
    /// under the same key reveals which tokens share a plaintext prefix; use
    /// [`Fernet::encrypt`] or [`Fernet::encrypt_at_time`], which draw a random
    /// IV, for real data. (Python's equivalent is the private
    /// `Fernet._encrypt_from_parts`.)
    ///
    /// # Errors
    /// [`Error::Crypto`] if AWS-LC fails (it does not for valid keys).
    pub fn encrypt_with_parts(
        &self,
        plaintext: &[u8],
        current_time: u64,
        iv: [u8; 16],
    ) -> Result<String> {
        let enc = self
            .enc
            .as_ref()
            .ok_or(Error::Crypto("AES-128 key setup failed"))?;
        // Room for the padding up front, so the plaintext copy is never
        // reallocated (which would leave an unwiped copy behind).
        let mut body = Vec::with_capacity(plaintext.len().saturating_add(BLOCK_LEN));
        body.extend_from_slice(plaintext);
        if enc
            .less_safe_encrypt(&mut body, EncryptionContext::Iv128(FixedLength::from(iv)))
            .is_err()
        {
            body.zeroize();
            return Err(Error::Crypto("AES-128-CBC encryption failed"));
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&current_time.to_be_bytes());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&body);
        let tag = hmac::sign(&self.signing, &out);
        out.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE.encode(&out))
    }

    /// Verify and decrypt `token`. With `ttl = Some(seconds)`, tokens older
    /// than that are refused; tokens stamped more than [`MAX_CLOCK_SKEW`]
    /// seconds in the future are always refused.
    ///
    /// # Errors
    /// As [`Fernet::decrypt_at_time`]; also [`Error::InvalidArgument`] if the
    /// system clock is before 1970.
    pub fn decrypt(&self, token: &str, ttl: Option<u64>) -> Result<Vec<u8>> {
        self.decrypt_at_time(token, ttl, now()?)
    }

    /// Verify and decrypt `token` as if the time were `current_time` (Unix
    /// seconds). Unlike Python's `decrypt_at_time`, `ttl` may be `None` (no
    /// expiry; the future-timestamp check still applies).
    ///
    /// # Errors
    /// - [`Error::Encoding`] if `token` is not canonical URL-safe padded base64;
    /// - [`Error::UnknownPrefix`] if the version byte is not `0x80`;
    /// - [`Error::Truncated`] if the token is too short or its ciphertext is
    ///   not whole AES blocks;
    /// - [`Error::AuthenticationFailed`] if the HMAC does not verify (wrong key
    ///   or modified token) or the padding is invalid;
    /// - [`Error::TokenExpired`] if `timestamp + ttl < current_time`;
    /// - [`Error::TokenFromFuture`] if `current_time + 60 < timestamp`.
    pub fn decrypt_at_time(
        &self,
        token: &str,
        ttl: Option<u64>,
        current_time: u64,
    ) -> Result<Vec<u8>> {
        let data = decode_token(token)?;
        let v = view(&data)?;
        self.verify(&v)?;
        check_time(v.timestamp, ttl, current_time)?;
        self.decrypt_verified(&v)
    }

    /// The timestamp of `token`, after verifying its HMAC. No time checks.
    ///
    /// # Errors
    /// As [`Fernet::decrypt_at_time`], except for the time errors.
    pub fn extract_timestamp(&self, token: &str) -> Result<u64> {
        let data = decode_token(token)?;
        let v = view(&data)?;
        self.verify(&v)?;
        Ok(v.timestamp)
    }

    /// Constant-time HMAC check.
    fn verify(&self, v: &TokenView<'_>) -> Result<()> {
        hmac::verify(&self.signing, v.signed, v.tag).map_err(|_| Error::AuthenticationFailed)
    }

    /// Decrypt a token whose HMAC has been verified with this key.
    fn decrypt_verified(&self, v: &TokenView<'_>) -> Result<Vec<u8>> {
        let dec = self
            .dec
            .as_ref()
            .ok_or(Error::Crypto("AES-128 key setup failed"))?;
        let mut buf = v.ciphertext.to_vec();
        let len = match dec.decrypt(&mut buf, DecryptionContext::Iv128(FixedLength::from(v.iv))) {
            Ok(pt) => pt.len(),
            Err(_) => {
                buf.zeroize();
                return Err(Error::AuthenticationFailed);
            }
        };
        // Wipe the padding before dropping it.
        if let Some(tail) = buf.get_mut(len..) {
            tail.zeroize();
        }
        buf.truncate(len);
        Ok(buf)
    }
}

// ---------------------------------------------------------------------------
// MultiFernet
// ---------------------------------------------------------------------------

/// Several Fernet keys for rotation: encrypts with the first, decrypts with
/// whichever verifies, and [`MultiFernet::rotate`] re-encrypts under the first.
pub struct MultiFernet {
    primary: Fernet,
    others: Vec<Fernet>,
}

impl fmt::Debug for MultiFernet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiFernet")
            .field("keys", &(1 + self.others.len()))
            .finish_non_exhaustive()
    }
}

impl MultiFernet {
    /// Keys in priority order: the first encrypts, all decrypt.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `keys` is empty.
    pub fn new(keys: Vec<FernetKey>) -> Result<Self> {
        let mut it = keys.into_iter().map(Fernet::new);
        let primary = it
            .next()
            .ok_or_else(|| Error::InvalidArgument("MultiFernet needs at least one key".into()))?;
        Ok(MultiFernet {
            primary,
            others: it.collect(),
        })
    }

    fn all(&self) -> impl Iterator<Item = &Fernet> {
        std::iter::once(&self.primary).chain(self.others.iter())
    }

    /// Encrypt under the first key, stamped with the current time.
    ///
    /// # Errors
    /// As [`Fernet::encrypt`].
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String> {
        self.primary.encrypt(plaintext)
    }

    /// Encrypt under the first key, stamped with `current_time`.
    ///
    /// # Errors
    /// As [`Fernet::encrypt_at_time`].
    pub fn encrypt_at_time(&self, plaintext: &[u8], current_time: u64) -> Result<String> {
        self.primary.encrypt_at_time(plaintext, current_time)
    }

    /// Decrypt with whichever key verifies the token (same rules as
    /// [`Fernet::decrypt`]).
    ///
    /// # Errors
    /// As [`MultiFernet::decrypt_at_time`]; also [`Error::InvalidArgument`] if
    /// the system clock is before 1970.
    pub fn decrypt(&self, token: &str, ttl: Option<u64>) -> Result<Vec<u8>> {
        self.decrypt_at_time(token, ttl, now()?)
    }

    /// Decrypt with whichever key verifies the token, as if the time were
    /// `current_time`.
    ///
    /// # Errors
    /// As [`Fernet::decrypt_at_time`]; [`Error::AuthenticationFailed`] when no
    /// key opens the token.
    pub fn decrypt_at_time(
        &self,
        token: &str,
        ttl: Option<u64>,
        current_time: u64,
    ) -> Result<Vec<u8>> {
        let data = decode_token(token)?;
        let v = view(&data)?;
        for f in self.all() {
            if f.verify(&v).is_ok() {
                // The timestamp does not depend on the key: decide once.
                check_time(v.timestamp, ttl, current_time)?;
                if let Ok(pt) = f.decrypt_verified(&v) {
                    return Ok(pt);
                }
            }
        }
        Err(Error::AuthenticationFailed)
    }

    /// The timestamp of `token`, after verifying its HMAC with any key.
    ///
    /// # Errors
    /// As [`Fernet::extract_timestamp`].
    pub fn extract_timestamp(&self, token: &str) -> Result<u64> {
        let data = decode_token(token)?;
        let v = view(&data)?;
        if self.all().any(|f| f.verify(&v).is_ok()) {
            Ok(v.timestamp)
        } else {
            Err(Error::AuthenticationFailed)
        }
    }

    /// Decrypt `token` with any key and re-encrypt it under the first key,
    /// keeping its original timestamp (fresh random IV). No TTL or clock-skew
    /// check is made, as in Python.
    ///
    /// # Errors
    /// As [`Fernet::decrypt_at_time`] for structure and authenticity
    /// ([`Error::AuthenticationFailed`] when no key opens the token);
    /// [`Error::Random`] if the generator fails.
    pub fn rotate(&self, token: &str) -> Result<String> {
        let data = decode_token(token)?;
        let v = view(&data)?;
        for f in self.all() {
            if f.verify(&v).is_ok() {
                if let Ok(mut pt) = f.decrypt_verified(&v) {
                    let out = self.primary.encrypt_at_time(&pt, v.timestamp);
                    pt.zeroize();
                    return out;
                }
            }
        }
        Err(Error::AuthenticationFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FernetKey>();
        assert_send_sync::<Fernet>();
        assert_send_sync::<MultiFernet>();
    }

    #[test]
    fn constants_are_consistent() {
        assert_eq!(MIN_TOKEN_LEN, 73);
        assert_eq!(URL_SAFE.encode([0u8; KEY_LEN]).len(), KEY_B64_LEN);
        assert!(URL_SAFE.encode([VERSION]).starts_with('g'));
        assert_eq!(URL_SAFE.encode([0u8; MIN_TOKEN_LEN]).len(), 100);
    }

    #[test]
    fn key_halves() {
        let bytes: Vec<u8> = (0..32).collect();
        let k = FernetKey::from_bytes(&bytes).unwrap();
        assert_eq!(k.signing_key(), &bytes[..16]);
        assert_eq!(k.encryption_key(), &bytes[16..]);
        assert_eq!(format!("{k:?}"), "FernetKey([REDACTED])");
    }

    #[test]
    fn time_rules() {
        assert_eq!(check_time(100, Some(10), 110), Ok(()));
        assert_eq!(check_time(100, Some(10), 111), Err(Error::TokenExpired));
        assert_eq!(check_time(160, None, 100), Ok(()));
        assert_eq!(check_time(161, None, 100), Err(Error::TokenFromFuture));
        assert_eq!(check_time(u64::MAX, Some(u64::MAX), u64::MAX), Ok(()));
        assert_eq!(check_time(u64::MAX, None, 0), Err(Error::TokenFromFuture));
    }
}
