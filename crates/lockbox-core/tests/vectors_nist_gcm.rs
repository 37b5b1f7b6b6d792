#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! NIST CAVP GCMVS AES-256-GCM vectors (`gcmEncryptExtIV256.rsp`,
//! `gcmDecrypt256.rsp`) run through [`AeadKey`] with
//! [`Algorithm::Aes256Gcm`]. Origin and licence: tests/vectors/README.md.
//!
//! The groups with `[IVlen = 96]` and `[Taglen = 128]` are the sizes Lockbox
//! supports: encryption must reproduce `CT ‖ Tag`, decryption must return `PT`
//! or, for cases marked `FAIL`, fail to authenticate. Every other group must
//! be refused: another IV length by seal and open (`InvalidArgument`), a
//! truncated tag by open (`InvalidArgument`).

mod common;
mod kat;

use kat::{Record, Tally};
use lockbox_core::{AeadKey, Algorithm, Error};

const ALG: Algorithm = Algorithm::Aes256Gcm;

struct Case {
    key: Vec<u8>,
    iv: Vec<u8>,
    aad: Vec<u8>,
    pt: Option<Vec<u8>>,
    ct: Vec<u8>,
    tag: Vec<u8>,
    fail: bool,
    what: String,
}

fn case(file: &str, r: &Record) -> Case {
    let what = format!("{file} line {}", r.line);
    assert_eq!(r.section_num("Keylen"), 256, "{what}");
    let c = Case {
        key: r.bytes("Key"),
        iv: r.bytes("IV"),
        aad: r.bytes("AAD"),
        pt: r.has("PT").then(|| r.bytes("PT")),
        ct: r.bytes("CT"),
        tag: r.bytes("Tag"),
        fail: r.flags.iter().any(|f| f == "FAIL"),
        what,
    };
    // The data must have the sizes its group header announces.
    assert_eq!(c.iv.len() as u64 * 8, r.section_num("IVlen"), "{}", c.what);
    assert_eq!(
        c.tag.len() as u64 * 8,
        r.section_num("Taglen"),
        "{}",
        c.what
    );
    assert_eq!(c.ct.len() as u64 * 8, r.section_num("PTlen"), "{}", c.what);
    assert_eq!(
        c.aad.len() as u64 * 8,
        r.section_num("AADlen"),
        "{}",
        c.what
    );
    assert!(
        c.fail || c.pt.is_some(),
        "{}: neither a plaintext nor FAIL",
        c.what
    );
    assert!(!(c.fail && c.pt.is_some()), "{}: both PT and FAIL", c.what);
    c
}

/// Check that an unsupported size is refused; returns false if the case has
/// the supported sizes.
fn refused(k: &AeadKey, c: &Case) -> bool {
    if c.iv.len() != ALG.nonce_len() {
        match k.seal(&c.iv, &c.aad, c.pt.as_deref().unwrap_or(&[])) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!(
                "{}: seal with a {}-byte IV gave {other:?}",
                c.what,
                c.iv.len()
            ),
        }
        let mut buf = c.ct.clone();
        match k.open_in_place(&c.iv, &c.aad, &mut buf, &c.tag) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!(
                "{}: open with a {}-byte IV gave {other:?}",
                c.what,
                c.iv.len()
            ),
        }
        return true;
    }
    if c.tag.len() != ALG.tag_len() {
        let mut buf = c.ct.clone();
        match k.open_in_place(&c.iv, &c.aad, &mut buf, &c.tag) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!(
                "{}: open with a {}-byte tag gave {other:?}",
                c.what,
                c.tag.len()
            ),
        }
        return true;
    }
    false
}

#[test]
fn nist_gcm_encrypt_ext_iv_256() {
    let file = "gcmEncryptExtIV256.rsp";
    let recs = kat::records(&kat::read(&format!("nist/{file}")), "Count");
    let mut tally = Tally::new(file);
    let mut truncated_tag_prefixes = 0;
    for r in &recs {
        let c = case(file, r);
        assert!(!c.fail, "{}: FAIL in an encryption file", c.what);
        let pt = c.pt.clone().unwrap();
        let k = AeadKey::new(ALG, &c.key).unwrap();
        if refused(&k, &c) {
            tally.refused += 1;
            // A truncated GCM tag is a prefix of the full one: where the IV is
            // supported, show that the refusal is a policy, not a different
            // computation.
            if c.iv.len() == ALG.nonce_len() {
                let sealed = k.seal(&c.iv, &c.aad, &pt).unwrap();
                let (ct, tag) = sealed.split_at(pt.len());
                assert_eq!(ct, &c.ct[..], "{}", c.what);
                assert_eq!(&tag[..c.tag.len()], &c.tag[..], "{}", c.what);
                truncated_tag_prefixes += 1;
            }
            continue;
        }
        let mut expected = c.ct.clone();
        expected.extend_from_slice(&c.tag);
        let sealed = k.seal(&c.iv, &c.aad, &pt).unwrap();
        assert_eq!(hex::encode(&sealed), hex::encode(&expected), "{}", c.what);
        assert_eq!(k.open(&c.iv, &c.aad, &expected).unwrap(), pt, "{}", c.what);
        tally.valid += 1;
    }
    tally.finish(recs.len(), true);
    assert!(truncated_tag_prefixes > 0);
    eprintln!(
        "{file}: {truncated_tag_prefixes} truncated-tag cases matched as prefixes of the full tag"
    );
}

#[test]
fn nist_gcm_decrypt_256() {
    let file = "gcmDecrypt256.rsp";
    let recs = kat::records(&kat::read(&format!("nist/{file}")), "Count");
    let mut tally = Tally::new(file);
    for r in &recs {
        let c = case(file, r);
        let k = AeadKey::new(ALG, &c.key).unwrap();
        if refused(&k, &c) {
            tally.refused += 1;
            continue;
        }
        let mut input = c.ct.clone();
        input.extend_from_slice(&c.tag);
        match (k.open(&c.iv, &c.aad, &input), &c.pt) {
            (Err(Error::AuthenticationFailed), None) => tally.invalid += 1,
            (Ok(got), Some(pt)) => {
                assert_eq!(&got, pt, "{}", c.what);
                tally.valid += 1;
            }
            (other, _) => panic!(
                "{}: expected {}, got {other:?}",
                c.what,
                if c.fail { "FAIL" } else { "PT" }
            ),
        }
    }
    tally.finish(recs.len(), true);
    assert!(tally.invalid > 0, "no FAIL case was checked");
}
