#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! AEAD interoperability with Python `cryptography` (tests/interop/aesgcm_peer.py):
//! AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305 and AES-256-GCM-SIV, with
//! associated data, both directions, and tampering refused on both sides.

mod common;

use lockbox_core::{fill_random, AeadKey, Algorithm, Error};
use serde_json::{json, Value};

const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::Aes256Gcm,
    Algorithm::Aes128Gcm,
    Algorithm::ChaCha20Poly1305,
    Algorithm::Aes256GcmSiv,
];

/// (plaintext length, AAD length) pairs.
const SHAPES: [(usize, usize); 8] = [
    (0, 0),
    (0, 13),
    (1, 0),
    (15, 1),
    (16, 16),
    (17, 33),
    (1000, 1000),
    (65_537, 7),
];

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    fill_random(&mut v).unwrap();
    v
}

struct Case {
    alg: Algorithm,
    key: Vec<u8>,
    nonce: Vec<u8>,
    aad: Vec<u8>,
    pt: Vec<u8>,
}

impl Case {
    fn aead(&self) -> AeadKey {
        AeadKey::new(self.alg, &self.key).unwrap()
    }

    fn op(&self, op: &str, data_field: &str, data: &[u8]) -> Value {
        json!({
            "op": op,
            "alg": self.alg.name(),
            "key": hex::encode(&self.key),
            "nonce": hex::encode(&self.nonce),
            "aad": hex::encode(&self.aad),
            data_field: hex::encode(data),
        })
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for alg in ALGORITHMS {
        for (pt_len, aad_len) in SHAPES {
            out.push(Case {
                alg,
                key: random(alg.key_len()),
                nonce: random(alg.nonce_len()),
                aad: random(aad_len),
                pt: random(pt_len),
            });
        }
    }
    out
}

fn peer(ops: Vec<Value>) -> Vec<Value> {
    let n = ops.len();
    let out = common::run_python("aesgcm_peer.py", &json!({ "ops": ops }));
    let results = out["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), n);
    results
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

#[test]
fn python_ciphertexts_open_here_and_match_ours() {
    let cases = cases();
    let results = peer(cases.iter().map(|c| c.op("seal", "pt", &c.pt)).collect());
    for (c, r) in cases.iter().zip(results) {
        let what = format!("{} pt {} aad {}", c.alg, c.pt.len(), c.aad.len());
        let theirs = unhex(&r["ct"]);
        assert_eq!(theirs.len(), c.pt.len() + 16, "{what}");
        let key = c.aead();
        assert_eq!(key.open(&c.nonce, &c.aad, &theirs).unwrap(), c.pt, "{what}");
        // Same key, nonce and inputs: byte-identical output.
        assert_eq!(key.seal(&c.nonce, &c.aad, &c.pt).unwrap(), theirs, "{what}");
    }
}

#[test]
fn our_ciphertexts_open_in_python() {
    let cases = cases();
    let sealed: Vec<Vec<u8>> = cases
        .iter()
        .map(|c| c.aead().seal(&c.nonce, &c.aad, &c.pt).unwrap())
        .collect();
    let ops = cases
        .iter()
        .zip(&sealed)
        .map(|(c, ct)| c.op("open", "ct", ct))
        .collect();
    for ((c, r), ct) in cases.iter().zip(peer(ops)).zip(&sealed) {
        let what = format!("{} pt {} aad {}", c.alg, c.pt.len(), c.aad.len());
        assert_eq!(r["ok"], true, "{what}: {r}");
        assert_eq!(unhex(&r["pt"]), c.pt, "{what}");
        // The nonce-prefixed form opens here too (it is nonce ‖ the same bytes).
        let mut prefixed = c.nonce.clone();
        prefixed.extend_from_slice(ct);
        assert_eq!(
            c.aead().open_with_nonce_prefix(&c.aad, &prefixed).unwrap(),
            c.pt
        );
    }
}

/// Ways to break a sealed message: (description, key, nonce, aad, ct).
type Variant = (String, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

fn tampered(c: &Case, ct: &[u8]) -> Vec<Variant> {
    let mut v: Vec<Variant> = Vec::new();
    let base = |d: &str| {
        (
            d.to_owned(),
            c.key.clone(),
            c.nonce.clone(),
            c.aad.clone(),
            ct.to_vec(),
        )
    };
    // A bit flipped in the ciphertext body (when there is one) and in the tag.
    if ct.len() > 16 {
        let mut x = base("ciphertext bit");
        x.4[0] ^= 0x01;
        v.push(x);
    }
    let mut x = base("tag bit");
    let last = x.4.len() - 1;
    x.4[last] ^= 0x80;
    v.push(x);
    // Different associated data: one more byte, or a flipped bit.
    let mut x = base("aad appended");
    x.3.push(0);
    v.push(x);
    if !c.aad.is_empty() {
        let mut x = base("aad bit");
        x.3[0] ^= 0x01;
        v.push(x);
    }
    let mut x = base("nonce bit");
    x.2[0] ^= 0x01;
    v.push(x);
    let mut x = base("wrong key");
    x.1[0] ^= 0x01;
    v.push(x);
    let mut x = base("last byte dropped");
    x.4.pop();
    v.push(x);
    let mut x = base("byte appended");
    x.4.push(0);
    v.push(x);
    v
}

/// What opening a tampered message must give here: shorter than a tag is a
/// structural error, anything else an authentication failure.
fn expected_error(bad: &[u8]) -> Result<Vec<u8>, Error> {
    if bad.len() < 16 {
        Err(Error::Truncated { what: "tag" })
    } else {
        Err(Error::AuthenticationFailed)
    }
}

#[test]
fn tampered_ciphertexts_fail_on_both_sides() {
    let cases = cases();
    let mut ops = Vec::new();
    let mut labels = Vec::new();
    for c in &cases {
        // Ours, tampered, must fail in Python; the same tampering of the same
        // (byte-identical) ciphertext must fail here.
        let ct = c.aead().seal(&c.nonce, &c.aad, &c.pt).unwrap();
        for (desc, key, nonce, aad, bad) in tampered(c, &ct) {
            let what = format!("{} pt {} aad {}: {desc}", c.alg, c.pt.len(), c.aad.len());
            let k = AeadKey::new(c.alg, &key).unwrap();
            assert_eq!(k.open(&nonce, &aad, &bad), expected_error(&bad), "{what}");
            ops.push(json!({
                "op": "open",
                "alg": c.alg.name(),
                "key": hex::encode(&key),
                "nonce": hex::encode(&nonce),
                "aad": hex::encode(&aad),
                "ct": hex::encode(&bad),
            }));
            labels.push(what);
        }
    }
    for (r, what) in peer(ops).iter().zip(&labels) {
        assert_eq!(r["ok"], false, "{what}: Python accepted it");
        assert_eq!(r["error"], "InvalidTag", "{what}");
    }
}

#[test]
fn python_ciphertexts_tampered_fail_here() {
    let cases = cases();
    let results = peer(cases.iter().map(|c| c.op("seal", "pt", &c.pt)).collect());
    for (c, r) in cases.iter().zip(results) {
        let theirs = unhex(&r["ct"]);
        for (desc, key, nonce, aad, bad) in tampered(c, &theirs) {
            let k = AeadKey::new(c.alg, &key).unwrap();
            assert_eq!(
                k.open(&nonce, &aad, &bad),
                expected_error(&bad),
                "{} pt {} aad {}: {desc}",
                c.alg,
                c.pt.len(),
                c.aad.len()
            );
        }
        // Shorter than a tag: a structural error here, InvalidTag in Python.
        assert_eq!(
            c.aead().open(&c.nonce, &c.aad, &theirs[..15]),
            Err(Error::Truncated { what: "tag" })
        );
    }
}
