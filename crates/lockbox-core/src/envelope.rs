//! The envelope ciphertext format (version 1): one data key per message,
//! wrapped by one or more key-encryption keys (KEKs).
//!
//! Binary form: `"LBXE" 0x01 ‖ body`; text form: `"lbxe1:" ‖ base64url(body)`
//! (no padding). The body is
//!
//! ```text
//! alg u8 ‖ commitment [32]
//! ‖ ctx_count u16be   ‖ ctx_count × (klen u16be ‖ key ‖ vlen u16be ‖ value)   (sorted by key, unique, UTF-8)
//! ‖ wrap_count u8     ‖ wrap_count × (plen u8 ‖ provider ‖ kidlen u16be ‖ key_id ‖ wlen u16be ‖ wrapped)
//! ‖ nonce [alg.nonce_len] ‖ ciphertext ‖ tag [16]
//! ```
//!
//! The associated data of the AEAD is the whole header, `"LBXE" 0x01`
//! through the last wrapped key (everything before the nonce): the
//! algorithm, the encryption context and every wrapped data key are
//! authenticated, so changing, adding or removing any of them makes
//! decryption fail. The context is stored in clear (it is not secret; it
//! says what the data is, like the AWS Encryption SDK's encryption
//! context). The commitment, `HMAC-SHA256(data_key,
//! "lockbox/v1/envelope-commitment" ‖ alg)`, makes envelopes key-committing:
//! one envelope opens under exactly one data key, so two KEK holders cannot
//! be shown two different plaintexts. The full specification, with
//! vectors, is docs/FORMAT.md.
//!
//! This module is pure: it seals and opens with a data key the caller
//! already has. Getting and unwrapping data keys (KMS providers, caching)
//! lives in `lockbox-kms`.

use std::collections::BTreeMap;

use crate::aead::{AeadKey, Algorithm, TAG_LEN};
use crate::encoding::b64url_encode_into;
use crate::error::{Error, Result};
use crate::kdf::hmac_sha256_parts;
use crate::secret::ct_eq;

/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "lbxe1:";
/// Magic and version that start the binary form.
pub const BINARY_MAGIC: [u8; 5] = [b'L', b'B', b'X', b'E', 0x01];
/// Most context pairs in one header.
pub const MAX_CONTEXT_PAIRS: usize = 256;
/// Most wrapped keys in one header.
pub const MAX_WRAPPED_KEYS: usize = 16;
/// Length of every data key (all envelope algorithms take 256-bit keys).
pub const DATA_KEY_LEN: usize = 32;
/// Length of the key commitment.
pub const COMMITMENT_LEN: usize = 32;
const COMMITMENT_LABEL: &[u8] = b"lockbox/v1/envelope-commitment";

/// The commitment to `data_key` for `alg` written in the header.
#[must_use]
pub fn commitment(alg: Algorithm, data_key: &[u8]) -> [u8; COMMITMENT_LEN] {
    hmac_sha256_parts(data_key, &[COMMITMENT_LABEL, &[alg.id()]])
}

/// An encryption context: non-secret key/value pairs that say what the data
/// is (tenant, table, row id...). Sorted by key, so its encoding is canonical.
pub type Context = BTreeMap<String, String>;

/// A data key wrapped by one KEK.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WrappedKey {
    /// Which kind of provider wrapped it (`local`, `aws-kms`, `vault-transit`).
    pub provider: String,
    /// The KEK's id at that provider (key name, key ARN...).
    pub key_id: String,
    /// The provider's wrapped form of the data key (opaque bytes).
    pub wrapped: Vec<u8>,
}

/// What a header says, read without any key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// AEAD algorithm of the body.
    pub algorithm: Algorithm,
    /// Commitment to the data key.
    pub commitment: [u8; COMMITMENT_LEN],
    /// The encryption context (authenticated, in clear).
    pub context: Context,
    /// The data key, wrapped by each KEK (any one suffices to decrypt).
    pub wrapped_keys: Vec<WrappedKey>,
}

/// A parsed binary envelope.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The header fields.
    pub header: Header,
    bytes: Vec<u8>,
    header_end: usize,
    nonce_end: usize,
}

fn check_algorithm(alg: Algorithm) -> Result<()> {
    if alg.is_deterministic() || alg.key_len() != DATA_KEY_LEN {
        return Err(Error::InvalidArgument(format!(
            "{alg} cannot be used for envelopes (a randomized AEAD with a 256-bit key is needed)"
        )));
    }
    Ok(())
}

fn u16_len(n: usize, what: &str) -> Result<u16> {
    u16::try_from(n)
        .map_err(|_| Error::InvalidArgument(format!("{what} is longer than 65535 bytes")))
}

/// The canonical encoding of a context: `count u16be ‖ (klen u16be ‖ key ‖
/// vlen u16be ‖ value)*`, sorted by key. This is the header's context
/// section, and what KEK providers bind as their own associated data.
///
/// # Errors
/// [`Error::InvalidArgument`] for more than [`MAX_CONTEXT_PAIRS`] pairs or a
/// key or value longer than 65535 bytes.
pub fn canonical_context(ctx: &Context) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    write_context(ctx, &mut out)?;
    Ok(out)
}

fn write_context(ctx: &Context, out: &mut Vec<u8>) -> Result<()> {
    if ctx.len() > MAX_CONTEXT_PAIRS {
        return Err(Error::InvalidArgument(format!(
            "an encryption context has at most {MAX_CONTEXT_PAIRS} pairs"
        )));
    }
    out.extend_from_slice(&u16_len(ctx.len(), "context")?.to_be_bytes());
    for (k, v) in ctx {
        if k.is_empty() {
            return Err(Error::InvalidArgument(
                "encryption context keys must not be empty".into(),
            ));
        }
        out.extend_from_slice(&u16_len(k.len(), "a context key")?.to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&u16_len(v.len(), "a context value")?.to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    Ok(())
}

/// The header bytes (magic included) for these fields.
///
/// # Errors
/// [`Error::InvalidArgument`] for an algorithm that cannot be used, no or
/// too many wrapped keys, or a field too long for its length prefix.
pub fn encode_header(
    alg: Algorithm,
    commitment: &[u8; COMMITMENT_LEN],
    ctx: &Context,
    wrapped: &[WrappedKey],
) -> Result<Vec<u8>> {
    check_algorithm(alg)?;
    if wrapped.is_empty() || wrapped.len() > MAX_WRAPPED_KEYS {
        return Err(Error::InvalidArgument(format!(
            "an envelope needs 1 to {MAX_WRAPPED_KEYS} wrapped keys, got {}",
            wrapped.len()
        )));
    }
    let mut out =
        Vec::with_capacity(64 + wrapped.iter().map(|w| w.wrapped.len() + 64).sum::<usize>());
    out.extend_from_slice(&BINARY_MAGIC);
    out.push(alg.id());
    out.extend_from_slice(commitment);
    write_context(ctx, &mut out)?;
    out.push(
        u8::try_from(wrapped.len())
            .map_err(|_| Error::InvalidArgument("too many wrapped keys".into()))?,
    );
    for w in wrapped {
        if w.provider.is_empty() || w.provider.len() > 255 {
            return Err(Error::InvalidArgument(
                "a provider id is 1 to 255 bytes".into(),
            ));
        }
        out.push(
            u8::try_from(w.provider.len())
                .map_err(|_| Error::InvalidArgument("provider id too long".into()))?,
        );
        out.extend_from_slice(w.provider.as_bytes());
        out.extend_from_slice(&u16_len(w.key_id.len(), "a key id")?.to_be_bytes());
        out.extend_from_slice(w.key_id.as_bytes());
        out.extend_from_slice(&u16_len(w.wrapped.len(), "a wrapped key")?.to_be_bytes());
        out.extend_from_slice(&w.wrapped);
    }
    Ok(out)
}

fn read<'a>(buf: &'a [u8], pos: &mut usize, n: usize, what: &'static str) -> Result<&'a [u8]> {
    let end = pos.checked_add(n).ok_or(Error::Truncated { what })?;
    let s = buf.get(*pos..end).ok_or(Error::Truncated { what })?;
    *pos = end;
    Ok(s)
}

fn read_u16(buf: &[u8], pos: &mut usize, what: &'static str) -> Result<usize> {
    let b = read(buf, pos, 2, what)?;
    Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
}

fn read_str(buf: &[u8], pos: &mut usize, n: usize, what: &'static str) -> Result<String> {
    let b = read(buf, pos, n, what)?;
    String::from_utf8(b.to_vec()).map_err(|_| Error::Malformed("header text is not UTF-8"))
}

/// Parse a binary envelope (starting with [`BINARY_MAGIC`]).
///
/// # Errors
/// [`Error::UnknownPrefix`], [`Error::UnsupportedVersion`],
/// [`Error::UnknownAlgorithm`], [`Error::Truncated`], [`Error::Malformed`].
pub fn parse_binary(bytes: Vec<u8>) -> Result<Parsed> {
    let buf = &bytes;
    let mut pos = 0usize;
    let magic = read(buf, &mut pos, BINARY_MAGIC.len(), "magic")?;
    if magic[..4] != BINARY_MAGIC[..4] {
        return Err(Error::UnknownPrefix { format: "envelope" });
    }
    if magic[4] != BINARY_MAGIC[4] {
        return Err(Error::UnsupportedVersion {
            format: "envelope",
            version: u32::from(magic[4]),
        });
    }
    let algorithm = Algorithm::from_id(read(buf, &mut pos, 1, "algorithm")?[0])?;
    check_algorithm(algorithm)
        .map_err(|_| Error::Malformed("algorithm not allowed in envelopes"))?;
    let mut commitment = [0u8; COMMITMENT_LEN];
    commitment.copy_from_slice(read(buf, &mut pos, COMMITMENT_LEN, "commitment")?);
    let n = read_u16(buf, &mut pos, "context count")?;
    if n > MAX_CONTEXT_PAIRS {
        return Err(Error::Malformed("too many context pairs"));
    }
    let mut context = Context::new();
    let mut last: Option<String> = None;
    for _ in 0..n {
        let kl = read_u16(buf, &mut pos, "context key length")?;
        let k = read_str(buf, &mut pos, kl, "context key")?;
        let vl = read_u16(buf, &mut pos, "context value length")?;
        let v = read_str(buf, &mut pos, vl, "context value")?;
        // Strictly increasing keys: the encoding is canonical, one per context.
        if k.is_empty() || last.as_ref().is_some_and(|l| *l >= k) {
            return Err(Error::Malformed(
                "context keys not sorted, unique and non-empty",
            ));
        }
        last = Some(k.clone());
        context.insert(k, v);
    }
    let wn = usize::from(read(buf, &mut pos, 1, "wrapped key count")?[0]);
    if wn == 0 || wn > MAX_WRAPPED_KEYS {
        return Err(Error::Malformed("wrapped key count out of range"));
    }
    let mut wrapped_keys = Vec::with_capacity(wn);
    for _ in 0..wn {
        let pl = usize::from(read(buf, &mut pos, 1, "provider length")?[0]);
        if pl == 0 {
            return Err(Error::Malformed("empty provider id"));
        }
        let provider = read_str(buf, &mut pos, pl, "provider")?;
        let kl = read_u16(buf, &mut pos, "key id length")?;
        let key_id = read_str(buf, &mut pos, kl, "key id")?;
        let wl = read_u16(buf, &mut pos, "wrapped key length")?;
        let wrapped = read(buf, &mut pos, wl, "wrapped key")?.to_vec();
        wrapped_keys.push(WrappedKey {
            provider,
            key_id,
            wrapped,
        });
    }
    let header_end = pos;
    read(buf, &mut pos, algorithm.nonce_len(), "nonce")?;
    let nonce_end = pos;
    if buf.len() < nonce_end + TAG_LEN {
        return Err(Error::Truncated { what: "tag" });
    }
    Ok(Parsed {
        header: Header {
            algorithm,
            commitment,
            context,
            wrapped_keys,
        },
        header_end,
        nonce_end,
        bytes,
    })
}

/// Parse the text form.
///
/// # Errors
/// As [`parse_binary`], plus [`Error::Encoding`] for bad base64.
pub fn parse_text(text: &str) -> Result<Parsed> {
    parse_binary(crate::native::decode_text(
        text,
        TEXT_PREFIX,
        &BINARY_MAGIC,
        "envelope",
        "not valid URL-safe base64 (unpadded) after lbxe1:",
    )?)
}

/// Whether `value` is an envelope in text form with a well-formed header.
/// Needs no key; says nothing about authenticity.
#[must_use]
pub fn is_envelope(value: &str) -> bool {
    parse_text(value).is_ok()
}

fn seal_inner(
    alg: Algorithm,
    data_key: &[u8],
    ctx: &Context,
    wrapped: &[WrappedKey],
    plaintext: &[u8],
    fixed_nonce: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let aead = AeadKey::new(alg, data_key)?;
    let mut buf = encode_header(alg, &commitment(alg, data_key), ctx, wrapped)?;
    let header_end = buf.len();
    let nl = alg.nonce_len();
    buf.reserve(nl + plaintext.len() + TAG_LEN);
    crate::native::push_nonce(&mut buf, alg, fixed_nonce)?;
    buf.extend_from_slice(plaintext);
    let (head, rest) = buf.split_at_mut(header_end);
    let (nonce, body) = rest.split_at_mut(nl);
    let tag = aead.seal_in_place(nonce, head, body)?;
    buf.extend_from_slice(&tag);
    Ok(buf)
}

/// Encrypt `plaintext` under `data_key` to the binary form, recording the
/// context and the wrapped data keys in the authenticated header.
///
/// A data key **must not** encrypt more than 2³² messages (random 96-bit
/// nonces); the data-key cache in `lockbox-kms` enforces far lower limits.
///
/// # Errors
/// [`Error::InvalidKey`] for a data key of the wrong size; as [`encode_header`].
pub fn seal_binary(
    alg: Algorithm,
    data_key: &[u8],
    ctx: &Context,
    wrapped: &[WrappedKey],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    seal_inner(alg, data_key, ctx, wrapped, plaintext, None)
}

fn to_text(bin: &[u8]) -> String {
    let body = &bin[BINARY_MAGIC.len()..];
    let mut out = String::with_capacity(TEXT_PREFIX.len() + body.len().div_ceil(3) * 4);
    out.push_str(TEXT_PREFIX);
    b64url_encode_into(body, &mut out);
    out
}

/// As [`seal_binary`], text form.
///
/// # Errors
/// As [`seal_binary`].
pub fn seal_text(
    alg: Algorithm,
    data_key: &[u8],
    ctx: &Context,
    wrapped: &[WrappedKey],
    plaintext: &[u8],
) -> Result<String> {
    Ok(to_text(&seal_binary(
        alg, data_key, ctx, wrapped, plaintext,
    )?))
}

/// Text form with a caller-chosen nonce. **For test vectors only**: a
/// repeated nonce under one data key destroys GCM's security.
///
/// # Errors
/// As [`seal_binary`], and [`Error::InvalidArgument`] for a nonce of the wrong size.
#[doc(hidden)]
pub fn seal_text_with_nonce_for_vectors(
    alg: Algorithm,
    data_key: &[u8],
    ctx: &Context,
    wrapped: &[WrappedKey],
    plaintext: &[u8],
    nonce: &[u8],
) -> Result<String> {
    Ok(to_text(&seal_inner(
        alg,
        data_key,
        ctx,
        wrapped,
        plaintext,
        Some(nonce),
    )?))
}

impl Parsed {
    /// The authenticated header bytes (the AEAD's associated data).
    #[must_use]
    pub fn header_bytes(&self) -> &[u8] {
        &self.bytes[..self.header_end]
    }

    /// The whole binary envelope.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Decrypt the body with an unwrapped data key. When `expected` is
    /// given, the stored context must equal it exactly (a row or tenant
    /// swap is caught even before the tag is checked); the stored context is
    /// authenticated by the tag either way.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a data key of the wrong size;
    /// [`Error::AuthenticationFailed`] for a wrong key, a context other than
    /// `expected`, or any modified byte.
    pub fn open(self, data_key: &[u8], expected: Option<&Context>) -> Result<Vec<u8>> {
        if let Some(e) = expected {
            if *e != self.header.context {
                return Err(Error::AuthenticationFailed);
            }
        }
        let aead = AeadKey::new(self.header.algorithm, data_key)?;
        // Key commitment first: only the committed data key may open it.
        if !ct_eq(
            &commitment(self.header.algorithm, data_key),
            &self.header.commitment,
        ) {
            return Err(Error::AuthenticationFailed);
        }
        let Parsed {
            mut bytes,
            header_end,
            nonce_end,
            ..
        } = self;
        let tag_start = bytes.len() - TAG_LEN;
        let (head, rest) = bytes.split_at_mut(header_end);
        let (nonce, rest) = rest.split_at_mut(nonce_end - header_end);
        let (ct, tag) = rest.split_at_mut(tag_start - nonce_end);
        if let Err(e) = aead.open_in_place(nonce, head, ct, tag) {
            zeroize::Zeroize::zeroize(&mut bytes);
            return Err(e);
        }
        bytes.truncate(tag_start);
        bytes.drain(..nonce_end);
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        [("tenant", "a"), ("row", "7")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn wk() -> Vec<WrappedKey> {
        vec![WrappedKey {
            provider: "local".into(),
            key_id: "k".into(),
            wrapped: vec![1, 2, 3],
        }]
    }

    #[test]
    fn round_trip_and_tamper() {
        let dk = [7u8; 32];
        let t = seal_text(Algorithm::Aes256Gcm, &dk, &ctx(), &wk(), b"hello").unwrap();
        let p = parse_text(&t).unwrap();
        assert_eq!(p.header.context, ctx());
        assert_eq!(p.clone().open(&dk, Some(&ctx())).unwrap(), b"hello");
        assert_eq!(p.clone().open(&dk, None).unwrap(), b"hello");
        let mut other = ctx();
        other.insert("row".into(), "8".into());
        assert_eq!(
            p.clone().open(&dk, Some(&other)).unwrap_err(),
            Error::AuthenticationFailed
        );
        assert_eq!(
            p.open(&[8u8; 32], None).unwrap_err(),
            Error::AuthenticationFailed
        );
        let bin = seal_binary(Algorithm::Aes256Gcm, &dk, &ctx(), &wk(), b"hello").unwrap();
        for i in 0..bin.len() {
            let mut b = bin.clone();
            b[i] ^= 0x01;
            let r = parse_binary(b).and_then(|p| p.open(&dk, None));
            assert!(r.is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn refuses_bad_parameters() {
        let dk = [7u8; 32];
        assert!(seal_text(Algorithm::Aes256Siv, &[0; 64], &ctx(), &wk(), b"x").is_err());
        assert!(seal_text(Algorithm::Aes128Gcm, &[0; 16], &ctx(), &wk(), b"x").is_err());
        assert!(seal_text(Algorithm::Aes256Gcm, &dk, &ctx(), &[], b"x").is_err());
        assert!(seal_text(Algorithm::Aes256Gcm, &[0; 16], &ctx(), &wk(), b"x").is_err());
        let mut c = Context::new();
        c.insert(String::new(), "v".into());
        assert!(seal_text(Algorithm::Aes256Gcm, &dk, &c, &wk(), b"x").is_err());
        assert!(matches!(
            parse_text("lbxe2:AAAA").unwrap_err(),
            Error::UnsupportedVersion { .. }
        ));
        assert!(matches!(
            parse_text("lbx1:AAAA").unwrap_err(),
            Error::UnknownPrefix { .. }
        ));
        assert!(matches!(
            parse_text("lbxe1:!!").unwrap_err(),
            Error::Encoding(_)
        ));
    }
}
