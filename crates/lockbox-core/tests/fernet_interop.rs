#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Fernet interoperability with Python `cryptography` (tests/interop/fernet_peer.py),
//! both directions.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lockbox_core::fernet::{is_fernet_token, Fernet, FernetKey, MultiFernet};
use lockbox_core::Error;
use serde_json::{json, Value};

const T0: u64 = 1_600_000_000;

/// Plaintext sizes: empty, around the block size, and about 1 MiB.
const SIZES: [usize; 9] = [0, 1, 15, 16, 17, 31, 32, 1000, (1 << 20) + 3];

fn plaintext(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

fn unb64(v: &Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap()).unwrap()
}

/// Run a batch of ops in the Python peer; one result per op.
fn peer(ops: Vec<Value>) -> Vec<Value> {
    let n = ops.len();
    let out = common::run_python("fernet_peer.py", &json!({ "ops": ops }));
    let results = out["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), n);
    results
}

fn new_key() -> FernetKey {
    FernetKey::generate().unwrap()
}

#[test]
fn python_tokens_decrypt_here() {
    // A key made by Python, parsed here.
    let key_text = peer(vec![json!({"op": "generate_key"})])[0]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = FernetKey::from_base64(&key_text).unwrap();
    assert_eq!(key.expose_base64(), key_text);
    let f = Fernet::new(key);

    let ops = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            json!({"op": "encrypt", "key": key_text, "pt": b64(&plaintext(n, i as u8)),
                   "time": T0 + i as u64})
        })
        .collect();
    let results = peer(ops);
    for (i, (&n, r)) in SIZES.iter().zip(&results).enumerate() {
        let token = r["token"].as_str().unwrap();
        let ts = T0 + i as u64;
        assert!(is_fernet_token(token), "size {n}");
        assert_eq!(f.extract_timestamp(token).unwrap(), ts);
        assert_eq!(
            f.decrypt_at_time(token, Some(60), ts + 60).unwrap(),
            plaintext(n, i as u8),
            "size {n}"
        );
        assert_eq!(
            f.decrypt_at_time(token, Some(60), ts + 61),
            Err(Error::TokenExpired)
        );
    }
}

#[test]
fn our_tokens_decrypt_in_python() {
    let key = new_key();
    let key_text = key.expose_base64();
    let f = Fernet::new(key);
    let tokens: Vec<String> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            f.encrypt_at_time(&plaintext(n, i as u8), T0 + i as u64)
                .unwrap()
        })
        .collect();
    let mut ops = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let ts = T0 + i as u64;
        ops.push(
            json!({"op": "decrypt", "keys": [key_text], "token": t, "ttl": 60, "now": ts + 60}),
        );
        ops.push(json!({"op": "extract_timestamp", "keys": [key_text], "token": t}));
    }
    let results = peer(ops);
    for (i, &n) in SIZES.iter().enumerate() {
        let dec = &results[2 * i];
        assert_eq!(dec["ok"], true, "size {n}: {dec}");
        assert_eq!(unb64(&dec["pt"]), plaintext(n, i as u8), "size {n}");
        assert_eq!(results[2 * i + 1]["timestamp"], T0 + i as u64);
    }
}

#[test]
fn tokens_are_byte_identical_with_fixed_ivs() {
    let key = new_key();
    let key_text = key.expose_base64();
    let f = Fernet::new(key);
    let cases: Vec<(Vec<u8>, u64, [u8; 16])> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let iv: [u8; 16] = std::array::from_fn(|j| (i * 16 + j) as u8);
            (plaintext(n, 7), T0 - i as u64, iv)
        })
        .chain([
            (b"edge".to_vec(), 0, [0xff; 16]),
            (b"max".to_vec(), u64::MAX, [0; 16]),
        ])
        .collect();
    let ops = cases
        .iter()
        .map(|(pt, t, iv)| {
            json!({"op": "encrypt_parts", "key": key_text, "pt": b64(pt), "time": t,
                   "iv": hex::encode(iv)})
        })
        .collect();
    for ((pt, t, iv), r) in cases.iter().zip(peer(ops)) {
        let ours = f.encrypt_with_parts(pt, *t, *iv).unwrap();
        assert_eq!(
            ours,
            r["token"].as_str().unwrap(),
            "{} bytes at {t}",
            pt.len()
        );
    }
}

#[test]
fn multifernet_rotate_both_ways() {
    let old = new_key();
    let new = new_key();
    let (old_text, new_text) = (old.expose_base64(), new.expose_base64());
    let ts = T0 - 3600;

    // Ours -> Python rotates -> ours decrypts under the new key only.
    let ours = Fernet::new(old.clone())
        .encrypt_at_time(b"rotate me", ts)
        .unwrap();
    // Python-made token under the old key, for the other direction.
    let r = peer(vec![
        json!({"op": "rotate", "keys": [new_text, old_text], "token": ours}),
        json!({"op": "encrypt", "key": old_text, "pt": b64(b"and me"), "time": ts}),
        // Python's MultiFernet decrypts with any key, including ours.
        json!({"op": "decrypt", "keys": [new_text, old_text], "token": ours, "ttl": null}),
    ]);
    let rotated_by_python = r[0]["token"].as_str().unwrap();
    let new_f = Fernet::new(new.clone());
    assert_eq!(new_f.extract_timestamp(rotated_by_python).unwrap(), ts);
    assert_eq!(
        new_f.decrypt_at_time(rotated_by_python, None, ts).unwrap(),
        b"rotate me"
    );
    assert_eq!(
        Fernet::new(old.clone()).decrypt_at_time(rotated_by_python, None, ts),
        Err(Error::AuthenticationFailed)
    );
    assert_eq!(unb64(&r[2]["pt"]), b"rotate me");

    // Python -> we rotate -> Python decrypts under the new key only.
    let theirs = r[1]["token"].as_str().unwrap();
    let m = MultiFernet::new(vec![new.clone(), old.clone()]).unwrap();
    assert_eq!(m.decrypt_at_time(theirs, None, ts).unwrap(), b"and me");
    let rotated_here = m.rotate(theirs).unwrap();
    let r = peer(vec![
        json!({"op": "decrypt", "keys": [new_text], "token": rotated_here, "ttl": null}),
        json!({"op": "extract_timestamp", "keys": [new_text], "token": rotated_here}),
        json!({"op": "decrypt", "keys": [old_text], "token": rotated_here, "ttl": null}),
        // A token no key opens cannot be rotated, there either.
        json!({"op": "rotate", "keys": [old_text], "token": rotated_here}),
    ]);
    assert_eq!(unb64(&r[0]["pt"]), b"and me");
    assert_eq!(r[1]["timestamp"], ts);
    assert_eq!(r[2]["ok"], false);
    assert_eq!(r[3]["ok"], false);
    let only_old = MultiFernet::new(vec![old]).unwrap();
    assert_eq!(
        only_old.rotate(&rotated_here),
        Err(Error::AuthenticationFailed)
    );
}

#[test]
fn ttl_behaviour_agrees() {
    let key = new_key();
    let key_text = key.expose_base64();
    let f = Fernet::new(key);
    let ts = T0;
    let token = f.encrypt_at_time(b"ttl", ts).unwrap();

    // (ttl, now): around expiry and around the 60 s clock-skew limit.
    let mut cases = Vec::new();
    for ttl in [0u64, 1, 59, 60, 61, 3600] {
        for now in [
            ts - 120,
            ts - 61,
            ts - 60,
            ts - 59,
            ts,
            ts + 1,
            ts + ttl - 1,
            ts + ttl,
            ts + ttl + 1,
            ts + 10 * ttl + 100,
        ] {
            cases.push((ttl, now));
        }
    }
    let ops = cases
        .iter()
        .map(|(ttl, now)| json!({"op": "decrypt", "keys": [key_text], "token": token, "ttl": ttl, "now": now}))
        .collect();
    for ((ttl, now), r) in cases.iter().zip(peer(ops)) {
        let ours = f.decrypt_at_time(&token, Some(*ttl), *now);
        let python_ok = r["ok"].as_bool().unwrap();
        assert_eq!(
            ours.is_ok(),
            python_ok,
            "ttl {ttl}, now {now}: ours {ours:?}, python {r}"
        );
        if let Err(e) = ours {
            let expected = if ts + ttl < *now {
                Error::TokenExpired
            } else {
                Error::TokenFromFuture
            };
            assert_eq!(e, expected, "ttl {ttl}, now {now}");
        }
    }

    // Python-made token, same rules here.
    let theirs = peer(vec![
        json!({"op": "encrypt", "key": key_text, "pt": b64(b"p"), "time": ts}),
    ]);
    let theirs = theirs[0]["token"].as_str().unwrap();
    assert!(f.decrypt_at_time(theirs, Some(10), ts + 10).is_ok());
    assert_eq!(
        f.decrypt_at_time(theirs, Some(10), ts + 11),
        Err(Error::TokenExpired)
    );
    assert_eq!(
        f.decrypt_at_time(theirs, Some(10), ts - 61),
        Err(Error::TokenFromFuture)
    );

    // The one deliberate difference: without a TTL Python does no time check
    // at all, so it accepts a token from the far future; we refuse it.
    let future = f.encrypt_at_time(b"future", u64::MAX / 2).unwrap();
    let r = peer(vec![
        json!({"op": "decrypt", "keys": [key_text], "token": future, "ttl": null}),
    ]);
    assert_eq!(r[0]["ok"], true);
    assert_eq!(f.decrypt(&future, None), Err(Error::TokenFromFuture));
}

#[test]
fn tampered_tokens_fail_on_both_sides() {
    let key = new_key();
    let key_text = key.expose_base64();
    let f = Fernet::new(key);
    let theirs = peer(vec![
        json!({"op": "encrypt", "key": key_text, "pt": b64(b"tamper"), "time": T0}),
    ]);
    let theirs = theirs[0]["token"].as_str().unwrap().to_owned();
    let ours = f.encrypt_at_time(b"tamper", T0).unwrap();

    let flip = |t: &str, i: usize| -> String {
        let mut raw = base64::engine::general_purpose::URL_SAFE.decode(t).unwrap();
        raw[i] ^= 0x04;
        base64::engine::general_purpose::URL_SAFE.encode(raw)
    };
    // Timestamp, IV, ciphertext and HMAC bytes.
    let positions = [3usize, 12, 30, 45, 60, 72];
    let mut ops = Vec::new();
    for &i in &positions {
        ops.push(
            json!({"op": "decrypt", "keys": [key_text], "token": flip(&ours, i), "ttl": null}),
        );
        assert_eq!(
            f.decrypt_at_time(&flip(&theirs, i), None, T0),
            Err(Error::AuthenticationFailed),
            "byte {i}"
        );
    }
    // A different key fails in Python too.
    let other = new_key().expose_base64();
    ops.push(json!({"op": "decrypt", "keys": [other], "token": ours, "ttl": null}));
    for r in peer(ops) {
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["error"], "InvalidToken");
    }
}
