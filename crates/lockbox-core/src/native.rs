//! The native Lockbox ciphertext format (version 1).
//!
//! Binary form: `"LBX" 0x01 ‖ body`; text form: `"lbx1:" ‖ base64url(body)`
//! (no padding). The body is
//!
//! ```text
//! alg u8 ‖ flags u8 ‖ key_id u32be ‖ key_version u32be ‖ commitment [32]
//!   ‖ [timestamp u64be]            (flags & 0x02)
//!   ‖ [ctx_len u16be ‖ ctx]        (flags & 0x01)
//!   ‖ nonce [alg.nonce_len] ‖ ciphertext ‖ tag [16]
//! ```
//!
//! The associated data of the AEAD is `"LBX" 0x01 ‖ body-up-to-the-nonce ‖
//! context`, so every header field and the caller's context are
//! authenticated. The full specification, with test vectors, is
//! docs/FORMAT.md.

use crate::aead::{Algorithm, TAG_LEN};
use crate::encoding::b64url_encode_into;
use crate::error::{Error, Result};
use crate::keyset::{Keyset, COMMITMENT_LEN};
use crate::secret::{ct_eq, fill_random};

/// Prefix of the text form.
pub const TEXT_PREFIX: &str = "lbx1:";
/// Magic and version that start the binary form.
pub const BINARY_MAGIC: [u8; 4] = [b'L', b'B', b'X', 0x01];
/// Flag: the context is stored in the header.
pub const FLAG_CONTEXT: u8 = 0x01;
/// Flag: a creation timestamp is stored in the header.
pub const FLAG_TIMESTAMP: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_CONTEXT | FLAG_TIMESTAMP;
/// Fixed header bytes after the magic: alg, flags, key id, version, commitment.
pub const FIXED_HEADER_LEN: usize = 1 + 1 + 4 + 4 + COMMITMENT_LEN;

/// Options for encryption.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncryptOptions<'a> {
    /// Caller's context (tenant, table, column, row id...), bound as associated data.
    pub context: &'a [u8],
    /// Also store the context in the header (in clear). Off by default.
    pub store_context: bool,
    /// Store a creation timestamp (seconds since the Unix epoch).
    pub timestamp: Option<u64>,
}

impl<'a> EncryptOptions<'a> {
    /// Bind `context`, store nothing extra.
    #[must_use]
    pub fn with_context(context: &'a [u8]) -> Self {
        EncryptOptions {
            context,
            store_context: false,
            timestamp: None,
        }
    }
}

/// What a header says, read without any key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// AEAD algorithm.
    pub algorithm: Algorithm,
    /// Key id of the keyset.
    pub key_id: u32,
    /// Key version.
    pub key_version: u32,
    /// Key commitment.
    pub commitment: [u8; COMMITMENT_LEN],
    /// Creation timestamp, if stored.
    pub timestamp: Option<u64>,
    /// The context, if stored.
    pub context: Option<Vec<u8>>,
}

/// Offsets of a parsed binary ciphertext (magic included at offset 0).
struct Layout {
    header: Header,
    /// End of the authenticated header (start of the nonce).
    header_end: usize,
    nonce_end: usize,
    tag_start: usize,
}

fn read<'a>(buf: &'a [u8], pos: &mut usize, n: usize, what: &'static str) -> Result<&'a [u8]> {
    let end = pos.checked_add(n).ok_or(Error::Truncated { what })?;
    let s = buf.get(*pos..end).ok_or(Error::Truncated { what })?;
    *pos = end;
    Ok(s)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

/// Parse a binary ciphertext (starting with [`BINARY_MAGIC`]).
fn parse(buf: &[u8]) -> Result<Layout> {
    let mut pos = 0usize;
    let magic = read(buf, &mut pos, 4, "magic")?;
    if magic[..3] != BINARY_MAGIC[..3] {
        return Err(Error::UnknownPrefix { format: "lockbox" });
    }
    if magic[3] != BINARY_MAGIC[3] {
        return Err(Error::UnsupportedVersion {
            format: "lockbox",
            version: u32::from(magic[3]),
        });
    }
    let fixed = read(buf, &mut pos, FIXED_HEADER_LEN, "header")?;
    let algorithm = Algorithm::from_id(fixed[0])?;
    let flags = fixed[1];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(Error::Malformed("unknown header flags"));
    }
    let key_id = be_u32(&fixed[2..6]);
    let key_version = be_u32(&fixed[6..10]);
    if key_version == 0 {
        return Err(Error::Malformed("key version 0"));
    }
    let mut commitment = [0u8; COMMITMENT_LEN];
    commitment.copy_from_slice(&fixed[10..10 + COMMITMENT_LEN]);
    let timestamp = if flags & FLAG_TIMESTAMP != 0 {
        let t = read(buf, &mut pos, 8, "timestamp")?;
        let mut a = [0u8; 8];
        a.copy_from_slice(t);
        Some(u64::from_be_bytes(a))
    } else {
        None
    };
    let context = if flags & FLAG_CONTEXT != 0 {
        let l = read(buf, &mut pos, 2, "context length")?;
        let n = usize::from(u16::from_be_bytes([l[0], l[1]]));
        Some(read(buf, &mut pos, n, "context")?.to_vec())
    } else {
        None
    };
    let header_end = pos;
    read(buf, &mut pos, algorithm.nonce_len(), "nonce")?;
    let nonce_end = pos;
    let tag_start = buf
        .len()
        .checked_sub(TAG_LEN)
        .filter(|t| *t >= nonce_end)
        .ok_or(Error::Truncated { what: "tag" })?;
    Ok(Layout {
        header: Header {
            algorithm,
            key_id,
            key_version,
            commitment,
            timestamp,
            context,
        },
        header_end,
        nonce_end,
        tag_start,
    })
}

/// Decode the text form into the binary form (magic included).
fn text_to_binary(text: &str) -> Result<Vec<u8>> {
    decode_text(
        text,
        TEXT_PREFIX,
        &BINARY_MAGIC,
        "lockbox",
        "not valid URL-safe base64 (unpadded) after lbx1:",
    )
}

/// Decode a text form `prefix` + base64url into `magic` + the bytes (the
/// native and envelope formats). A value with the same stem and another
/// version digit (`lbx2:`, `lbxe2:`) is a future version of `format`, not
/// a foreign value.
pub(crate) fn decode_text(
    text: &str,
    prefix: &str,
    magic: &[u8],
    format: &'static str,
    bad_base64: &'static str,
) -> Result<Vec<u8>> {
    let Some(b64) = text.strip_prefix(prefix) else {
        let stem = &prefix.as_bytes()[..prefix.len() - 2];
        let b = text.as_bytes();
        let n = stem.len();
        if b.len() > n + 1 && b.starts_with(stem) && b[n].is_ascii_digit() && b[n + 1] == b':' {
            return Err(Error::UnsupportedVersion {
                format,
                version: u32::from(b[n] - b'0'),
            });
        }
        return Err(Error::UnknownPrefix { format });
    };
    let mut buf = Vec::with_capacity(magic.len() + b64.len() * 3 / 4 + 3);
    buf.extend_from_slice(magic);
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_vec(b64, &mut buf)
        .map_err(|_| Error::Encoding(bad_base64))?;
    Ok(buf)
}

/// Read the header of a text ciphertext without a key.
///
/// # Errors
/// The structural errors of [`decrypt_text`].
pub fn inspect_text(text: &str) -> Result<Header> {
    Ok(parse(&text_to_binary(text)?)?.header)
}

/// Read the header of a binary ciphertext without a key.
///
/// # Errors
/// The structural errors of [`decrypt_binary`].
pub fn inspect_binary(bytes: &[u8]) -> Result<Header> {
    Ok(parse(bytes)?.header)
}

/// Whether `value` is a native text ciphertext: it has the `lbx1:` prefix and
/// a well-formed header. Needs no key; says nothing about authenticity.
#[must_use]
pub fn is_encrypted(value: &str) -> bool {
    inspect_text(value).is_ok()
}

/// Whether `value` is a native binary ciphertext (magic and well-formed header).
#[must_use]
pub fn is_encrypted_binary(value: &[u8]) -> bool {
    parse(value).is_ok()
}

fn seal_into(
    ks: &Keyset,
    plaintext: &[u8],
    opts: &EncryptOptions<'_>,
    fixed_nonce: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let kv = ks.primary()?;
    let aead = kv.aead_for("encrypt")?;
    let alg = kv.algorithm();
    let mut flags = 0u8;
    let mut extra = 0usize;
    if opts.timestamp.is_some() {
        flags |= FLAG_TIMESTAMP;
        extra += 8;
    }
    let stored_ctx_len = if opts.store_context {
        let n = u16::try_from(opts.context.len()).map_err(|_| {
            Error::InvalidArgument("a stored context is at most 65535 bytes".into())
        })?;
        flags |= FLAG_CONTEXT;
        extra += 2 + opts.context.len();
        Some(n)
    } else {
        None
    };
    let nl = alg.nonce_len();
    let mut buf = Vec::with_capacity(4 + FIXED_HEADER_LEN + extra + nl + plaintext.len() + TAG_LEN);
    buf.extend_from_slice(&BINARY_MAGIC);
    buf.push(alg.id());
    buf.push(flags);
    buf.extend_from_slice(&ks.key_id().to_be_bytes());
    buf.extend_from_slice(&kv.version().to_be_bytes());
    buf.extend_from_slice(kv.commitment());
    if let Some(t) = opts.timestamp {
        buf.extend_from_slice(&t.to_be_bytes());
    }
    if let Some(n) = stored_ctx_len {
        buf.extend_from_slice(&n.to_be_bytes());
        buf.extend_from_slice(opts.context);
    }
    let header_end = buf.len();
    push_nonce(&mut buf, alg, fixed_nonce)?;
    buf.extend_from_slice(plaintext);
    let (head, rest) = buf.split_at_mut(header_end);
    let (nonce, body) = rest.split_at_mut(nl);
    let tag = if opts.context.is_empty() {
        aead.seal_in_place(nonce, head, body)?
    } else {
        let mut aad = Vec::with_capacity(head.len() + opts.context.len());
        aad.extend_from_slice(head);
        aad.extend_from_slice(opts.context);
        aead.seal_in_place(nonce, &aad, body)?
    };
    buf.extend_from_slice(&tag);
    Ok(buf)
}

/// Encrypt to the binary form under the keyset's primary version.
///
/// # Errors
/// [`Error::KeyVersionUnusable`], [`Error::InvalidArgument`], [`Error::Random`].
pub fn encrypt_binary(ks: &Keyset, plaintext: &[u8], opts: &EncryptOptions<'_>) -> Result<Vec<u8>> {
    seal_into(ks, plaintext, opts, None)
}

fn to_text(bin: &[u8]) -> String {
    let body = &bin[BINARY_MAGIC.len()..];
    let mut out = String::with_capacity(TEXT_PREFIX.len() + body.len().div_ceil(3) * 4);
    out.push_str(TEXT_PREFIX);
    b64url_encode_into(body, &mut out);
    out
}

/// Encrypt to the text form with a caller-chosen nonce. **For test vectors
/// only**: a nonce repeated under the same key destroys GCM and ChaCha20's
/// security. Production code uses [`encrypt_text`].
///
/// # Errors
/// As [`encrypt_binary`], and [`Error::InvalidArgument`] for a nonce of the wrong size.
#[doc(hidden)]
pub fn encrypt_text_with_nonce_for_vectors(
    ks: &Keyset,
    plaintext: &[u8],
    opts: &EncryptOptions<'_>,
    nonce: &[u8],
) -> Result<String> {
    Ok(to_text(&seal_into(ks, plaintext, opts, Some(nonce))?))
}

/// Encrypt to the text form under the keyset's primary version.
///
/// # Errors
/// As [`encrypt_binary`].
pub fn encrypt_text(ks: &Keyset, plaintext: &[u8], opts: &EncryptOptions<'_>) -> Result<String> {
    Ok(to_text(&seal_into(ks, plaintext, opts, None)?))
}

fn open_binary(ks: &Keyset, mut buf: Vec<u8>, context: &[u8]) -> Result<Vec<u8>> {
    let layout = parse(&buf)?;
    let h = &layout.header;
    if h.key_id != ks.key_id() {
        return Err(Error::WrongKeyId {
            found: h.key_id,
            expected: ks.key_id(),
        });
    }
    let kv = ks
        .version(h.key_version)
        .ok_or(Error::UnknownKeyVersion(h.key_version))?;
    let aead = kv.aead_for("decrypt")?;
    // Key commitment: only the key whose commitment is in the header may open it.
    if kv.algorithm() != h.algorithm || !ct_eq(kv.commitment(), &h.commitment) {
        return Err(Error::AuthenticationFailed);
    }
    // With a stored context, the caller's must match it (or be empty: use the stored one).
    let ctx: &[u8] = match &h.context {
        Some(stored) if context.is_empty() || context == stored.as_slice() => stored,
        Some(_) => return Err(Error::AuthenticationFailed),
        None => context,
    };
    let (head, rest) = buf.split_at_mut(layout.header_end);
    let (nonce, rest) = rest.split_at_mut(layout.nonce_end - layout.header_end);
    let (ct, tag) = rest.split_at_mut(layout.tag_start - layout.nonce_end);
    let res = if ctx.is_empty() {
        aead.open_in_place(nonce, head, ct, tag)
    } else {
        let mut aad = Vec::with_capacity(head.len() + ctx.len());
        aad.extend_from_slice(head);
        aad.extend_from_slice(ctx);
        aead.open_in_place(nonce, &aad, ct, tag)
    };
    if let Err(e) = res {
        zeroize::Zeroize::zeroize(&mut buf);
        return Err(e);
    }
    buf.truncate(layout.tag_start);
    buf.drain(..layout.nonce_end);
    Ok(buf)
}

/// Decrypt the binary form. The key version is taken from the header.
///
/// # Errors
/// Structural: [`Error::UnknownPrefix`], [`Error::UnsupportedVersion`],
/// [`Error::UnknownAlgorithm`], [`Error::Truncated`], [`Error::Malformed`];
/// key selection: [`Error::WrongKeyId`], [`Error::UnknownKeyVersion`],
/// [`Error::KeyVersionUnusable`]; anything else: [`Error::AuthenticationFailed`].
pub fn decrypt_binary(ks: &Keyset, ciphertext: &[u8], context: &[u8]) -> Result<Vec<u8>> {
    open_binary(ks, ciphertext.to_vec(), context)
}

/// Decrypt the text form.
///
/// # Errors
/// As [`decrypt_binary`], plus [`Error::Encoding`] for bad base64.
pub fn decrypt_text(ks: &Keyset, ciphertext: &str, context: &[u8]) -> Result<Vec<u8>> {
    open_binary(ks, text_to_binary(ciphertext)?, context)
}

/// Bytes a ciphertext adds to a plaintext, binary form.
#[must_use]
pub fn binary_overhead(alg: Algorithm, opts: &EncryptOptions<'_>) -> usize {
    4 + FIXED_HEADER_LEN
        + alg.nonce_len()
        + TAG_LEN
        + if opts.timestamp.is_some() { 8 } else { 0 }
        + if opts.store_context {
            2 + opts.context.len()
        } else {
            0
        }
}

/// Appends the nonce of a new ciphertext to `buf`: random, or the fixed one
/// given for test vectors (which must have the algorithm's length). Shared
/// by the native and envelope formats.
pub(crate) fn push_nonce(buf: &mut Vec<u8>, alg: Algorithm, fixed: Option<&[u8]>) -> Result<()> {
    let nl = alg.nonce_len();
    match fixed {
        None => {
            let start = buf.len();
            buf.resize(start + nl, 0);
            fill_random(&mut buf[start..])
        }
        Some(n) if n.len() == nl => {
            buf.extend_from_slice(n);
            Ok(())
        }
        Some(n) => Err(Error::InvalidArgument(format!(
            "{alg} needs a {nl}-byte nonce, got {}",
            n.len()
        ))),
    }
}
