//! The envelope format (`lbxe1:`): checked-in vector file (made by this
//! code, see docs/FORMAT.md), negative vectors, an independent Python
//! parser as peer, and property tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use lockbox_core::encoding::{b64_decode, b64_encode, b64url_decode, b64url_encode};
use lockbox_core::envelope::{self, Context, WrappedKey};
use lockbox_core::Algorithm;
use proptest::prelude::*;
use serde_json::{json, Value};

const VECTOR_FILE: &str = "lockbox/envelope_v1.json";

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn ctx(pairs: &[(&str, &str)]) -> Context {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn wrapped(n: usize, seed: u8) -> Vec<WrappedKey> {
    let kinds = [
        (
            "aws-kms",
            "arn:aws:kms:us-east-1:123456789012:key/0b6c1f3e-1111-2222-3333-444455556666",
        ),
        ("local", "tenant-acme"),
        ("vault-transit", "transit/envelope"),
    ];
    (0..n)
        .map(|i| WrappedKey {
            provider: kinds[i % 3].0.into(),
            key_id: kinds[i % 3].1.into(),
            wrapped: pattern(40 + 20 * i, seed.wrapping_add(i as u8)),
        })
        .collect()
}

fn wk_json(w: &[WrappedKey]) -> Value {
    Value::Array(
        w.iter()
            .map(|w| json!({"provider": w.provider, "key_id": w.key_id, "wrapped": b64_encode(&w.wrapped)}))
            .collect(),
    )
}

fn make_vectors() -> Value {
    let mut cases = Vec::new();
    let mut seed = 11u8;
    let algs = [
        Algorithm::Aes256Gcm,
        Algorithm::ChaCha20Poly1305,
        Algorithm::XChaCha20Poly1305,
        Algorithm::Aes256GcmSiv,
    ];
    for alg in algs {
        for (name, pt, c, n) in [
            (
                "empty plaintext, empty context, one KEK",
                vec![],
                ctx(&[]),
                1,
            ),
            (
                "row field, tenant context, two KEKs",
                b"123-45-6789".to_vec(),
                ctx(&[
                    ("lockbox:tenant", "acme"),
                    ("table", "users"),
                    ("column", "ssn"),
                    ("row", "42"),
                ]),
                2,
            ),
            (
                "1000 bytes, three KEKs, UTF-8 context",
                pattern(1000, 3),
                ctx(&[("fichier", "été.pdf")]),
                3,
            ),
        ] {
            seed = seed.wrapping_add(23);
            let dk = pattern(32, seed);
            let nonce = pattern(alg.nonce_len(), seed.wrapping_add(1));
            let w = wrapped(n, seed.wrapping_add(2));
            let ct =
                envelope::seal_text_with_nonce_for_vectors(alg, &dk, &c, &w, &pt, &nonce).unwrap();
            cases.push(json!({
                "comment": format!("{alg}: {name}"),
                "algorithm": alg.name(),
                "data_key": b64_encode(&dk),
                "context": c,
                "wrapped_keys": wk_json(&w),
                "nonce": b64_encode(&nonce),
                "plaintext": b64_encode(&pt),
                "ciphertext": ct,
            }));
        }
    }
    json!({
        "format": "lockbox envelope v1",
        "note": "Made by lockbox-core (tests/envelope_format.rs, LOCKBOX_WRITE_VECTORS=1). Data keys, wrapped keys and plaintexts are fixed patterns (the wrapped keys are opaque to the format); nonces are fixed only so the ciphertexts are reproducible.",
        "cases": cases,
        "invalid": invalid_vectors(),
    })
}

fn invalid_vectors() -> Value {
    let dk = pattern(32, 99);
    let c = ctx(&[("row", "7"), ("tenant", "a")]);
    let good = envelope::seal_text_with_nonce_for_vectors(
        Algorithm::Aes256Gcm,
        &dk,
        &c,
        &wrapped(1, 5),
        b"the plaintext",
        &pattern(12, 5),
    )
    .unwrap();
    let body = b64url_decode(&good[6..]).unwrap();
    let with_body = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = body.clone();
        f(&mut b);
        format!("lbxe1:{}", b64url_encode(&b))
    };
    // Offsets in the body: alg 0, commitment 1..33, context count 33..35,
    // "row"="7" 35..43 (key at 37..40, value at 42), "tenant"="a" 43..54
    // (key at 45..51), wrapped count 54, provider 56..63, key id 65..138,
    // wrapped key 140..180.
    let mut v = vec![
        ("wrong prefix", "lbx1:AAAA".to_owned(), "unknown-prefix"),
        (
            "future version",
            format!("lbxe2:{}", &good[6..]),
            "unsupported-version",
        ),
        ("not base64url", "lbxe1:@@@@".to_owned(), "encoding"),
        ("empty body", "lbxe1:".to_owned(), "truncated"),
        (
            "unknown algorithm",
            with_body(&|b| b[0] = 0xee),
            "unknown-algorithm",
        ),
        (
            "deterministic algorithm refused",
            with_body(&|b| b[0] = Algorithm::Aes256Siv.id()),
            "malformed",
        ),
        (
            "context keys out of order",
            with_body(&|b| {
                // "row", "tenant" become "tow", "renant"
                b[37] = b't';
                b[45] = b'r';
            }),
            "malformed",
        ),
        ("zero wrapped keys", with_body(&|b| b[54] = 0), "malformed"),
        (
            "commitment changed",
            with_body(&|b| b[5] ^= 1),
            "authentication-failed",
        ),
        (
            "truncated in the tag",
            with_body(&|b| b.truncate(b.len() - 20)),
            "truncated",
        ),
        (
            "context value changed",
            with_body(&|b| b[42] = b'8'),
            "authentication-failed",
        ),
        (
            "key id changed",
            with_body(&|b| b[100] ^= 1),
            "authentication-failed",
        ),
        (
            "wrapped key changed",
            with_body(&|b| b[150] ^= 1),
            "authentication-failed",
        ),
        (
            "ciphertext changed",
            with_body(&|b| {
                let n = b.len();
                b[n - 20] ^= 1;
            }),
            "authentication-failed",
        ),
        (
            "tag changed",
            with_body(&|b| {
                let n = b.len();
                b[n - 1] ^= 1;
            }),
            "authentication-failed",
        ),
    ];
    v.push((
        "last byte removed",
        with_body(&|b| {
            b.pop();
        }),
        "authentication-failed",
    ));
    Value::Array(
        v.into_iter()
            .map(|(name, ct, err)| {
                json!({"comment": name, "data_key": b64_encode(&dk), "ciphertext": ct, "error": err})
            })
            .collect(),
    )
}

fn parse_ctx(v: &Value) -> Context {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn vector_file_matches_code() {
    let path = common::vectors_dir().join(VECTOR_FILE);
    let made = make_vectors();
    if std::env::var_os("LOCKBOX_WRITE_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&made).unwrap() + "\n").unwrap();
    }
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        file, made,
        "envelope vectors changed: the format must not change silently"
    );
}

#[test]
fn vector_file_decrypts() {
    let path = common::vectors_dir().join(VECTOR_FILE);
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = file["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    assert_eq!(file["invalid"].as_array().unwrap().len(), 16);
    for case in cases {
        let p = envelope::parse_text(case["ciphertext"].as_str().unwrap()).unwrap();
        let c = parse_ctx(&case["context"]);
        assert_eq!(p.header.context, c);
        assert_eq!(
            p.header.algorithm.name(),
            case["algorithm"].as_str().unwrap()
        );
        assert_eq!(wk_json(&p.header.wrapped_keys), case["wrapped_keys"]);
        let dk = b64_decode(case["data_key"].as_str().unwrap()).unwrap();
        let pt = p.open(&dk, Some(&c)).unwrap();
        assert_eq!(
            b64_encode(&pt),
            case["plaintext"].as_str().unwrap(),
            "{}",
            case["comment"]
        );
    }
    for case in file["invalid"].as_array().unwrap() {
        let dk = b64_decode(case["data_key"].as_str().unwrap()).unwrap();
        let r = envelope::parse_text(case["ciphertext"].as_str().unwrap())
            .and_then(|p| p.open(&dk, None));
        let e = r.expect_err(case["comment"].as_str().unwrap());
        assert_eq!(
            common::class(&e),
            case["error"].as_str().unwrap(),
            "{}: {e}",
            case["comment"]
        );
    }
}

/// An independent parser (Python, from docs/FORMAT.md alone) decrypts every
/// vector with `cryptography` given the data key, and rejects the invalid ones.
#[test]
fn python_peer_decrypts_vectors() {
    let path = common::vectors_dir().join(VECTOR_FILE);
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let out = common::run_python("envelope_peer.py", &file);
    let results = out["results"].as_array().unwrap();
    let cases = file["cases"].as_array().unwrap();
    assert_eq!(results.len(), cases.len());
    for (r, c) in results.iter().zip(cases) {
        assert_eq!(r["plaintext"], c["plaintext"], "{}", c["comment"]);
        assert_eq!(r["context"], c["context"], "{}", c["comment"]);
        assert_eq!(r["wrapped_keys"], c["wrapped_keys"], "{}", c["comment"]);
    }
    let rejected = out["rejected"].as_array().unwrap();
    let invalid = file["invalid"].as_array().unwrap();
    assert_eq!(rejected.len(), invalid.len());
    assert!(
        rejected.iter().all(|r| r.as_bool() == Some(true)),
        "{rejected:?}"
    );
}

proptest! {
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut b = envelope::BINARY_MAGIC.to_vec();
        b.extend_from_slice(&bytes);
        let _ = envelope::parse_binary(b).map(|p| p.open(&[0u8; 32], None));
        let _ = envelope::parse_binary(bytes);
    }

    #[test]
    fn round_trip(pt in proptest::collection::vec(any::<u8>(), 0..200),
                  k in "[a-z]{1,8}", v in ".{0,12}") {
        let dk = [9u8; 32];
        let c = ctx(&[(&k, &v)]);
        let ct = envelope::seal_text(Algorithm::Aes256Gcm, &dk, &c, &wrapped(2, 1), &pt).unwrap();
        let p = envelope::parse_text(&ct).unwrap();
        prop_assert_eq!(&p.header.context, &c);
        prop_assert_eq!(p.open(&dk, Some(&c)).unwrap(), pt);
    }
}
