#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! External AEAD test vectors run through Lockbox's own API ([`AeadKey`]):
//! Wycheproof (AES-GCM, ChaCha20-Poly1305, XChaCha20-Poly1305, AES-GCM-SIV,
//! AES-SIV-CMAC with 512-bit keys) and the OpenSSL / BoringSSL files shipped in
//! `cryptography-vectors`. Origins and licences: tests/vectors/README.md.
//!
//! For every case whose key, nonce and tag sizes Lockbox supports, a valid
//! case must seal to exactly the expected `ciphertext ‖ tag` and open again;
//! an invalid case must fail to open with [`Error::AuthenticationFailed`].
//! Every case with a size Lockbox does not support must be refused:
//! [`AeadKey::new`] fails with [`Error::InvalidKey`], or seal / open fail with
//! [`Error::InvalidArgument`]. Each test counts what it did and fails if it
//! checked nothing, if a case was unaccounted for, or (where the file has
//! unsupported sizes) if nothing was refused.

mod common;
mod kat;

use kat::{hexf, is_valid, Tally};
use lockbox_core::aead::TAG_LEN;
use lockbox_core::{AeadKey, Algorithm, Error};

/// The algorithm of `family` whose key length is `key_len`.
fn pick(family: &[Algorithm], key_len: usize) -> Option<Algorithm> {
    family.iter().copied().find(|a| a.key_len() == key_len)
}

/// Show that no algorithm of `family` accepts `key`.
fn assert_key_refused(family: &[Algorithm], key: &[u8], what: &str) {
    for &alg in family {
        match AeadKey::new(alg, key) {
            Err(Error::InvalidKey(_)) => {}
            Err(e) => panic!(
                "{what}: {alg} refused a {}-byte key with the wrong error {e:?}",
                key.len()
            ),
            Ok(_) => panic!("{what}: {alg} accepted a {}-byte key", key.len()),
        }
    }
}

/// Show that `k` refuses `nonce` (wrong size) for both sealing and opening.
fn assert_nonce_refused(
    k: &AeadKey,
    nonce: &[u8],
    aad: &[u8],
    msg: &[u8],
    ct: &[u8],
    tag: &[u8],
    what: &str,
) {
    match k.seal(nonce, aad, msg) {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!(
            "{what}: seal with a {}-byte nonce gave {other:?}",
            nonce.len()
        ),
    }
    // With a tag of the right size, so that only the nonce can be the reason.
    let tag = if tag.len() == TAG_LEN {
        tag
    } else {
        &[0u8; TAG_LEN][..]
    };
    let mut buf = ct.to_vec();
    match k.open_in_place(nonce, aad, &mut buf, tag) {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!(
            "{what}: open with a {}-byte nonce gave {other:?}",
            nonce.len()
        ),
    }
}

/// Show that `k` refuses a tag of the wrong size when opening.
fn assert_tag_refused(k: &AeadKey, nonce: &[u8], aad: &[u8], ct: &[u8], tag: &[u8], what: &str) {
    let mut buf = ct.to_vec();
    match k.open_in_place(nonce, aad, &mut buf, tag) {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("{what}: open with a {}-byte tag gave {other:?}", tag.len()),
    }
}

/// One AEAD case in a supported configuration: a valid case must reproduce
/// `ct ‖ tag` and decrypt to `msg`; an invalid one must not open.
#[allow(clippy::too_many_arguments)]
fn check_case(
    t: &mut Tally,
    k: &AeadKey,
    nonce: &[u8],
    aad: &[u8],
    msg: &[u8],
    ct: &[u8],
    tag: &[u8],
    valid: bool,
    what: &str,
) {
    let mut expected = ct.to_vec();
    expected.extend_from_slice(tag);
    if valid {
        let sealed = k
            .seal(nonce, aad, msg)
            .unwrap_or_else(|e| panic!("{what}: seal: {e:?}"));
        assert_eq!(hex::encode(&sealed), hex::encode(&expected), "{what}: seal");
        let opened = k
            .open(nonce, aad, &expected)
            .unwrap_or_else(|e| panic!("{what}: open of a valid case: {e:?}"));
        assert_eq!(opened, msg, "{what}: open");
        t.valid += 1;
    } else {
        match k.open(nonce, aad, &expected) {
            Err(Error::AuthenticationFailed) => {}
            other => panic!("{what}: invalid case opened or failed oddly: {other:?}"),
        }
        // Sealing the message must not produce the forged output either.
        let sealed = k.seal(nonce, aad, msg).unwrap();
        assert_ne!(
            sealed, expected,
            "{what}: seal produced the invalid ciphertext"
        );
        t.invalid += 1;
    }
}

/// Run a Wycheproof `AeadTest` file through `family` (the Lockbox algorithms
/// that implement it, one per supported key size).
fn wycheproof_aead(file: &'static str, family: &[Algorithm]) -> Tally {
    let doc = kat::json(&format!("wycheproof/{file}"));
    assert_eq!(doc["schema"], "aead_test_schema_v1.json", "{file}");
    let (tests, total) = kat::wycheproof_tests(&doc);
    let mut tally = Tally::new(file);
    for (g, t) in tests {
        let what = format!("{file} tcId {} ({})", t["tcId"], t["comment"]);
        let (key, iv, aad, msg, ct, tag) = (
            hexf(t, "key"),
            hexf(t, "iv"),
            hexf(t, "aad"),
            hexf(t, "msg"),
            hexf(t, "ct"),
            hexf(t, "tag"),
        );
        // Sizes in the test itself must agree with its group.
        assert_eq!(key.len() * 8, kat::uint(g, "keySize") as usize, "{what}");
        assert_eq!(iv.len() * 8, kat::uint(g, "ivSize") as usize, "{what}");
        // (The InvalidNonceSize cases carry no tag at all.)
        let no_tag = tag.is_empty()
            && t["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "InvalidNonceSize");
        assert!(
            no_tag || tag.len() * 8 == kat::uint(g, "tagSize") as usize,
            "{what}"
        );
        let valid = is_valid(t);
        let Some(alg) = pick(family, key.len()) else {
            assert_key_refused(family, &key, &what);
            tally.refused += 1;
            continue;
        };
        let k = AeadKey::new(alg, &key).unwrap();
        if iv.len() != alg.nonce_len() {
            assert_nonce_refused(&k, &iv, &aad, &msg, &ct, &tag, &what);
            tally.refused += 1;
        } else if tag.len() != alg.tag_len() {
            assert_tag_refused(&k, &iv, &aad, &ct, &tag, &what);
            tally.refused += 1;
        } else {
            check_case(&mut tally, &k, &iv, &aad, &msg, &ct, &tag, valid, &what);
        }
    }
    tally.finish(total as usize, true);
    tally
}

#[test]
fn wycheproof_aes_gcm() {
    // AES-128-GCM and AES-256-GCM are supported, AES-192-GCM is not; only
    // 96-bit nonces are accepted.
    let t = wycheproof_aead(
        "aes_gcm_test.json",
        &[Algorithm::Aes128Gcm, Algorithm::Aes256Gcm],
    );
    assert!(t.invalid > 0);
}

#[test]
fn wycheproof_chacha20_poly1305() {
    let t = wycheproof_aead(
        "chacha20_poly1305_test.json",
        &[Algorithm::ChaCha20Poly1305],
    );
    assert!(t.invalid > 0);
}

#[test]
fn wycheproof_xchacha20_poly1305() {
    let t = wycheproof_aead(
        "xchacha20_poly1305_test.json",
        &[Algorithm::XChaCha20Poly1305],
    );
    assert!(t.invalid > 0);
}

#[test]
fn wycheproof_aes_gcm_siv() {
    // Only AES-256-GCM-SIV: the 128-bit-key groups must be refused.
    let t = wycheproof_aead("aes_gcm_siv_test.json", &[Algorithm::Aes256GcmSiv]);
    assert!(t.invalid > 0);
}

/// Wycheproof AES-SIV-CMAC (RFC 5297), the 512-bit-key group only (the file in
/// tests/vectors holds only that group; see the README). Lockbox's
/// `aes256-siv` uses exactly one associated-data header and no nonce. RFC 5297
/// writes `V ‖ C` (the synthetic IV, which is the tag, first); `AeadKey::seal`
/// returns `C ‖ V`, so the expected output is reordered before comparing.
#[test]
fn wycheproof_aes_siv_cmac_512() {
    let file = "aes_siv_cmac_512_test.json";
    let doc = kat::json(&format!("wycheproof/{file}"));
    assert_eq!(doc["schema"], "daead_test_schema_v1.json");
    let (tests, total) = kat::wycheproof_tests(&doc);
    let alg = Algorithm::Aes256Siv;
    let mut tally = Tally::new(file);
    for (g, t) in tests {
        let what = format!("{file} tcId {} ({})", t["tcId"], t["comment"]);
        assert_eq!(kat::uint(g, "keySize"), 512, "{what}");
        let (key, aad, msg, rfc_out) = (
            hexf(t, "key"),
            hexf(t, "aad"),
            hexf(t, "msg"),
            hexf(t, "ct"),
        );
        assert!(rfc_out.len() >= 16, "{what}: output shorter than the SIV");
        let (siv, body) = rfc_out.split_at(16);
        let k = AeadKey::new(alg, &key).unwrap();
        check_case(
            &mut tally,
            &k,
            &[],
            &aad,
            &msg,
            body,
            siv,
            is_valid(t),
            &what,
        );
        // Deterministic: sealing twice gives the same output.
        assert_eq!(
            k.seal(&[], &aad, &msg).unwrap(),
            k.seal(&[], &aad, &msg).unwrap()
        );
    }
    tally.finish(total as usize, false);

    // Refusals this API owes beyond the file: the 256- and 384-bit AES-SIV
    // keys of Wycheproof's other groups, and any nonce (AES-SIV here has none).
    let mut refused = 0;
    for len in [32usize, 48, 0, 63, 65] {
        assert_key_refused(&[alg], &vec![7u8; len], "aes256-siv key size");
        refused += 1;
    }
    let k = AeadKey::new(alg, &[1u8; 64]).unwrap();
    for nlen in [1usize, 12, 16, 24] {
        let nonce = vec![0u8; nlen];
        assert_nonce_refused(
            &k,
            &nonce,
            b"ad",
            b"msg",
            b"ct!",
            &[0u8; 16],
            "aes256-siv nonce",
        );
        refused += 1;
    }
    eprintln!("{file}: {refused} extra size refusals (key sizes, nonces)");
}

/// Run a `cryptography-vectors` AEAD text file through `family`; `names` are
/// the file's field names for key, nonce, associated data, plaintext,
/// ciphertext and tag.
fn text_aead_file(
    file: &'static str,
    family: &[Algorithm],
    names: (&str, &str, &str, &str, &str, &str),
    expect_refused: bool,
) -> Tally {
    let (kname, nname, aname, pname, cname, tname) = names;
    let recs = kat::records(&kat::read(&format!("pyca-extra/{file}")), "COUNT");
    let mut tally = Tally::new(file);
    for r in &recs {
        let what = format!("{file} line {} (COUNT {})", r.line, r.raw("COUNT"));
        let key = r.bytes(kname);
        let nonce = r.bytes(nname);
        let aad = r.bytes_or_empty(aname);
        let msg = r.bytes_or_empty(pname);
        let ct = r.bytes_or_empty(cname);
        let tag = r.bytes(tname);
        // OpenSSL's files mark a case that must fail with `Result = ...`.
        let valid = match r.fields.get("Result").map(String::as_str) {
            None => true,
            Some("CIPHERFINAL_ERROR") => false,
            Some(other) => panic!("{what}: unknown Result {other}"),
        };
        let Some(alg) = pick(family, key.len()) else {
            assert_key_refused(family, &key, &what);
            tally.refused += 1;
            continue;
        };
        let k = AeadKey::new(alg, &key).unwrap();
        if nonce.len() != alg.nonce_len() {
            assert_nonce_refused(&k, &nonce, &aad, &msg, &ct, &tag, &what);
            tally.refused += 1;
        } else if tag.len() != alg.tag_len() {
            assert_tag_refused(&k, &nonce, &aad, &ct, &tag, &what);
            tally.refused += 1;
        } else {
            check_case(&mut tally, &k, &nonce, &aad, &msg, &ct, &tag, valid, &what);
        }
    }
    tally.finish(recs.len(), expect_refused);
    tally
}

/// RFC 8452 AES-GCM-SIV vectors (OpenSSL's evpciph file): the AES-128 ones
/// must be refused, the AES-256 ones reproduced.
#[test]
fn pyca_aes_gcm_siv_openssl() {
    let recs = kat::records(&kat::read("pyca-extra/aes-gcm-siv-openssl.txt"), "COUNT");
    let t = text_aead_file(
        "aes-gcm-siv-openssl.txt",
        &[Algorithm::Aes256GcmSiv],
        ("Key", "IV", "AAD", "Plaintext", "Ciphertext", "Tag"),
        true,
    );
    // Every 32-byte-key case was checked, every 16-byte one refused.
    let k256 = recs.iter().filter(|r| r.bytes("Key").len() == 32).count();
    assert_eq!(t.valid, k256);
    assert_eq!(t.refused, recs.len() - k256);
}

/// ChaCha20-Poly1305 from BoringSSL's test file (RFC 7539 and edge cases; some
/// values are quoted strings rather than hex).
#[test]
fn pyca_chacha20_poly1305_boringssl() {
    text_aead_file(
        "chacha20poly1305-boringssl.txt",
        &[Algorithm::ChaCha20Poly1305],
        ("KEY", "NONCE", "AD", "IN", "CT", "TAG"),
        false,
    );
}

/// ChaCha20-Poly1305 from OpenSSL's evpciph file (one case with a bad tag).
#[test]
fn pyca_chacha20_poly1305_openssl() {
    let t = text_aead_file(
        "chacha20poly1305-openssl.txt",
        &[Algorithm::ChaCha20Poly1305],
        ("Key", "IV", "AAD", "Plaintext", "Ciphertext", "Tag"),
        false,
    );
    assert!(t.invalid > 0);
}
