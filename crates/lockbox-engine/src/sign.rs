//! HMAC, signatures and their verification for named keys (Vault's
//! `transit/hmac`, `sign`, `verify`). Output: `vault:v<N>:<base64>`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, UnparsedPublicKey};
use lockbox_core::encoding::{b64_decode, b64_encode, b64url_decode, b64url_encode};
use lockbox_core::kdf::hkdf_sha256;
use lockbox_core::SecretBytes;

use crate::error::{EngineError, Result};
use crate::keytype::KeyType;

/// Options of a signature (Vault's parameter names and defaults).
#[derive(Clone, Debug, Default)]
pub struct SignOptions {
    /// `sha2-256` (default), `sha2-384`, `sha2-512` where the key type allows.
    pub hash_algorithm: Option<String>,
    /// RSA: `pss` (default) or `pkcs1v15`.
    pub signature_algorithm: Option<String>,
    /// ECDSA: `asn1` (default) or `jws` (fixed r‖s, base64url).
    pub marshaling_algorithm: Option<String>,
    /// Version to sign with (default: latest).
    pub key_version: Option<u32>,
}

fn bad(m: impl Into<String>) -> EngineError {
    EngineError::BadRequest(m.into())
}

/// The HMAC key of a version: the material for `hmac` keys; for encryption
/// keys a key derived from the version's material (never the AEAD key itself).
pub(crate) fn hmac_key(kt: KeyType, material: &SecretBytes) -> Result<SecretBytes> {
    match kt {
        KeyType::Hmac => Ok(material.clone()),
        t if t.supports_encryption() => Ok(hkdf_sha256(
            material.expose_secret(),
            &[],
            b"lockbox/v1/transit-hmac-key",
            32,
        )?),
        t => Err(bad(format!("HMAC is not supported for key type {t}"))),
    }
}

fn hmac_alg(name: &str) -> Result<aws_lc_rs::hmac::Algorithm> {
    match name {
        "sha2-224" => Ok(aws_lc_rs::hmac::HMAC_SHA224),
        "sha2-256" => Ok(aws_lc_rs::hmac::HMAC_SHA256),
        "sha2-384" => Ok(aws_lc_rs::hmac::HMAC_SHA384),
        "sha2-512" => Ok(aws_lc_rs::hmac::HMAC_SHA512),
        other => Err(bad(format!("unsupported algorithm {other}"))),
    }
}

pub(crate) fn hmac(
    key: &SecretBytes,
    algorithm: &str,
    input: &[u8],
    version: u32,
) -> Result<String> {
    let k = aws_lc_rs::hmac::Key::new(hmac_alg(algorithm)?, key.expose_secret());
    let tag = aws_lc_rs::hmac::sign(&k, input);
    Ok(format!("vault:v{version}:{}", b64_encode(tag.as_ref())))
}

pub(crate) fn verify_hmac(
    key: &SecretBytes,
    algorithm: &str,
    input: &[u8],
    mac: &[u8],
) -> Result<bool> {
    let k = aws_lc_rs::hmac::Key::new(hmac_alg(algorithm)?, key.expose_secret());
    Ok(aws_lc_rs::hmac::verify(&k, input, mac).is_ok())
}

/// Split `vault:v<N>:<sig>` into the version and the raw bytes
/// (base64, or base64url for JWS marshaling).
pub(crate) fn parse_tagged(s: &str, jws: bool) -> Result<(u32, Vec<u8>)> {
    let rest = s
        .strip_prefix("vault:v")
        .ok_or_else(|| bad("invalid signature or hmac: no prefix"))?;
    let (v, body) = rest
        .split_once(':')
        .ok_or_else(|| bad("invalid signature or hmac: wrong number of fields"))?;
    let version: u32 = v
        .parse()
        .map_err(|_| bad("invalid signature or hmac: version number could not be decoded"))?;
    let raw = if jws {
        b64url_decode(body.trim_end_matches('='))
    } else {
        b64_decode(body)
    }
    .map_err(|_| bad("invalid signature or hmac: not base64"))?;
    Ok((version, raw))
}

fn hash_for(kt: KeyType, opts: &SignOptions) -> Result<String> {
    let default = match kt {
        KeyType::EcdsaP384 => "sha2-384",
        _ => "sha2-256",
    };
    Ok(opts
        .hash_algorithm
        .clone()
        .unwrap_or_else(|| default.to_owned()))
}

fn jws(opts: &SignOptions) -> Result<bool> {
    match opts.marshaling_algorithm.as_deref().unwrap_or("asn1") {
        "asn1" => Ok(false),
        "jws" => Ok(true),
        other => Err(bad(format!("unsupported marshaling type {other}"))),
    }
}

fn unsupported_hash(kt: KeyType, h: &str) -> EngineError {
    bad(format!(
        "hash_algorithm {h} is not supported for key type {kt}"
    ))
}

/// The ECDSA signing and verification algorithms for a key type, hash and encoding.
fn ecdsa_algs(
    kt: KeyType,
    h: &str,
    jws: bool,
) -> Result<(
    &'static signature::EcdsaSigningAlgorithm,
    &'static dyn signature::VerificationAlgorithm,
)> {
    Ok(match (kt, h, jws) {
        (KeyType::EcdsaP256, "sha2-256", false) => (
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &signature::ECDSA_P256_SHA256_ASN1,
        ),
        (KeyType::EcdsaP256, "sha2-256", true) => (
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &signature::ECDSA_P256_SHA256_FIXED,
        ),
        (KeyType::EcdsaP384, "sha2-384", false) => (
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            &signature::ECDSA_P384_SHA384_ASN1,
        ),
        (KeyType::EcdsaP384, "sha2-384", true) => (
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &signature::ECDSA_P384_SHA384_FIXED,
        ),
        _ => return Err(unsupported_hash(kt, h)),
    })
}

/// The RSA signing padding and verification algorithm for a hash and scheme
/// (`pss`, the default, or `pkcs1v15`).
fn rsa_algs(
    kt: KeyType,
    h: &str,
    opts: &SignOptions,
) -> Result<(
    &'static dyn signature::RsaEncoding,
    &'static dyn signature::VerificationAlgorithm,
)> {
    let pss = match opts.signature_algorithm.as_deref().unwrap_or("pss") {
        "pss" => true,
        "pkcs1v15" => false,
        other => return Err(bad(format!("unsupported rsa signature algorithm {other}"))),
    };
    Ok(match (h, pss) {
        ("sha2-256", true) => (
            &signature::RSA_PSS_SHA256,
            &signature::RSA_PSS_2048_8192_SHA256,
        ),
        ("sha2-384", true) => (
            &signature::RSA_PSS_SHA384,
            &signature::RSA_PSS_2048_8192_SHA384,
        ),
        ("sha2-512", true) => (
            &signature::RSA_PSS_SHA512,
            &signature::RSA_PSS_2048_8192_SHA512,
        ),
        ("sha2-256", false) => (
            &signature::RSA_PKCS1_SHA256,
            &signature::RSA_PKCS1_2048_8192_SHA256,
        ),
        ("sha2-384", false) => (
            &signature::RSA_PKCS1_SHA384,
            &signature::RSA_PKCS1_2048_8192_SHA384,
        ),
        ("sha2-512", false) => (
            &signature::RSA_PKCS1_SHA512,
            &signature::RSA_PKCS1_2048_8192_SHA512,
        ),
        _ => return Err(unsupported_hash(kt, h)),
    })
}

pub(crate) fn sign(
    kt: KeyType,
    material: &SecretBytes,
    input: &[u8],
    opts: &SignOptions,
    version: u32,
) -> Result<String> {
    let rng = SystemRandom::new();
    let fail = |_| EngineError::Internal("signing failed".into());
    let jws = jws(opts)?;
    let sig: Vec<u8> = match kt {
        KeyType::Ed25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(material.expose_secret())
            .map_err(|_| EngineError::Integrity("ed25519 key does not parse".into()))?
            .sign(input)
            .as_ref()
            .to_vec(),
        KeyType::EcdsaP256 | KeyType::EcdsaP384 => {
            let alg = ecdsa_algs(kt, &hash_for(kt, opts)?, jws)?.0;
            EcdsaKeyPair::from_pkcs8(alg, material.expose_secret())
                .map_err(|_| EngineError::Integrity("ecdsa key does not parse".into()))?
                .sign(&rng, input)
                .map_err(fail)?
                .as_ref()
                .to_vec()
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let alg = rsa_algs(kt, &hash_for(kt, opts)?, opts)?.0;
            let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(material.expose_secret())
                .map_err(|_| EngineError::Integrity("rsa key does not parse".into()))?;
            let mut sig = vec![0u8; kp.public_modulus_len()];
            kp.sign(alg, &rng, input, &mut sig).map_err(fail)?;
            sig
        }
        t => return Err(bad(format!("key type {t} does not support signing"))),
    };
    let body = if jws {
        b64url_encode(&sig)
    } else {
        b64_encode(&sig)
    };
    Ok(format!("vault:v{version}:{body}"))
}

pub(crate) fn verify(
    kt: KeyType,
    material: &SecretBytes,
    input: &[u8],
    sig: &[u8],
    opts: &SignOptions,
) -> Result<bool> {
    let jws = jws(opts)?;
    let public = kt
        .public_key(material.expose_secret())
        .ok_or_else(|| EngineError::Integrity("signing key does not parse".into()))?;
    let alg: &'static dyn signature::VerificationAlgorithm = match kt {
        KeyType::Ed25519 => &signature::ED25519,
        KeyType::EcdsaP256 | KeyType::EcdsaP384 => ecdsa_algs(kt, &hash_for(kt, opts)?, jws)?.1,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            rsa_algs(kt, &hash_for(kt, opts)?, opts)?.1
        }
        t => return Err(bad(format!("key type {t} does not support verification"))),
    };
    Ok(UnparsedPublicKey::new(alg, &public)
        .verify(input, sig)
        .is_ok())
}
