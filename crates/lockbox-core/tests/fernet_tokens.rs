#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Fernet token handling: round trips, TTL and clock-skew edges, strict
//! base64, structure errors, `is_fernet_token`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use lockbox_core::fernet::{is_fernet_token, Fernet, FernetKey, MAX_CLOCK_SKEW, MIN_TOKEN_LEN};
use lockbox_core::Error;

const T0: u64 = 1_700_000_000;

fn fernet() -> Fernet {
    Fernet::new(FernetKey::generate().unwrap())
}

/// Re-encode decoded token bytes (to build structurally odd tokens).
fn reencode(bytes: &[u8]) -> String {
    URL_SAFE.encode(bytes)
}

#[test]
fn round_trip_sizes_and_token_lengths() {
    let f = fernet();
    for n in [0usize, 1, 15, 16, 17, 31, 32, 33, 255, 4096, 100_001] {
        let pt: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let t = f.encrypt_at_time(&pt, T0).unwrap();
        let raw = URL_SAFE.decode(&t).unwrap();
        // version + timestamp + IV + padded ciphertext + HMAC
        assert_eq!(raw.len(), 1 + 8 + 16 + (n / 16 + 1) * 16 + 32, "n = {n}");
        assert_eq!(raw[0], 0x80);
        assert_eq!(u64::from_be_bytes(raw[1..9].try_into().unwrap()), T0);
        assert!(is_fernet_token(&t));
        assert_eq!(f.decrypt_at_time(&t, None, T0).unwrap(), pt);
    }
}

#[test]
fn random_ivs_differ_and_real_clock_is_used() {
    let f = fernet();
    let a = f.encrypt(b"same").unwrap();
    let b = f.encrypt(b"same").unwrap();
    assert_ne!(a, b);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts = f.extract_timestamp(&a).unwrap();
    assert!(ts.abs_diff(now) < 5);
    assert_eq!(f.decrypt(&a, Some(60)).unwrap(), b"same");
    assert_eq!(f.decrypt(&a, None).unwrap(), b"same");
}

#[test]
fn encrypt_with_parts_is_deterministic() {
    let k = FernetKey::generate().unwrap();
    let f = Fernet::new(k.clone());
    let g = Fernet::new(k);
    let a = f.encrypt_with_parts(b"x", T0, [9; 16]).unwrap();
    assert_eq!(a, g.encrypt_with_parts(b"x", T0, [9; 16]).unwrap());
    assert_ne!(a, f.encrypt_with_parts(b"x", T0, [8; 16]).unwrap());
    assert_ne!(a, f.encrypt_with_parts(b"x", T0 + 1, [9; 16]).unwrap());
}

#[test]
fn ttl_and_skew_edges() {
    let f = fernet();
    let t = f.encrypt_at_time(b"x", T0).unwrap();
    // Expired only strictly after timestamp + ttl.
    assert!(f.decrypt_at_time(&t, Some(0), T0).is_ok());
    assert_eq!(
        f.decrypt_at_time(&t, Some(0), T0 + 1),
        Err(Error::TokenExpired)
    );
    assert!(f.decrypt_at_time(&t, Some(100), T0 + 100).is_ok());
    assert_eq!(
        f.decrypt_at_time(&t, Some(100), T0 + 101),
        Err(Error::TokenExpired)
    );
    assert!(f.decrypt_at_time(&t, Some(u64::MAX), u64::MAX).is_ok());
    // No TTL: never expires.
    assert!(f.decrypt_at_time(&t, None, u64::MAX).is_ok());
    // Future: up to 60 s ahead is fine, more is refused, with or without TTL.
    assert!(f.decrypt_at_time(&t, None, T0 - MAX_CLOCK_SKEW).is_ok());
    assert!(f.decrypt_at_time(&t, Some(5), T0 - MAX_CLOCK_SKEW).is_ok());
    assert_eq!(
        f.decrypt_at_time(&t, None, T0 - MAX_CLOCK_SKEW - 1),
        Err(Error::TokenFromFuture)
    );
    assert_eq!(
        f.decrypt_at_time(&t, Some(5), T0 - MAX_CLOCK_SKEW - 1),
        Err(Error::TokenFromFuture)
    );
    // Far-future timestamps with the real clock.
    let far = f.encrypt_at_time(b"x", u64::MAX).unwrap();
    assert_eq!(f.decrypt(&far, None), Err(Error::TokenFromFuture));
    assert_eq!(f.extract_timestamp(&far).unwrap(), u64::MAX);
    // Timestamp zero is fine without a TTL.
    let zero = f.encrypt_at_time(b"x", 0).unwrap();
    assert_eq!(f.decrypt(&zero, None).unwrap(), b"x");
    assert_eq!(f.decrypt(&zero, Some(1_000)), Err(Error::TokenExpired));
}

#[test]
fn hmac_is_checked_before_time_and_padding() {
    let f = fernet();
    let other = fernet();
    let t = other.encrypt_at_time(b"x", T0).unwrap();
    // Expired and from-the-future tokens under the wrong key are just
    // unauthenticated: their timestamps are not trusted.
    assert_eq!(
        f.decrypt_at_time(&t, Some(1), T0 + 100),
        Err(Error::AuthenticationFailed)
    );
    assert_eq!(
        f.decrypt_at_time(&t, None, 0),
        Err(Error::AuthenticationFailed)
    );
    assert_eq!(f.extract_timestamp(&t), Err(Error::AuthenticationFailed));
}

#[test]
fn strict_base64() {
    let f = fernet();
    let t = f.encrypt_at_time(b"hello", T0).unwrap();
    let raw = URL_SAFE.decode(&t).unwrap();

    // Whitespace, as pasted from a terminal or a file.
    assert_eq!(
        f.decrypt_at_time(&format!("{t}\n"), None, T0),
        Err(Error::Encoding(
            "fernet token contains whitespace or a line break"
        ))
    );
    assert!(matches!(
        f.decrypt_at_time(&format!(" {t}"), None, T0),
        Err(Error::Encoding(_))
    ));
    // Missing padding. 73 + 16 = 89 bytes: 89 % 3 == 2, so one '='.
    let unpadded = URL_SAFE_NO_PAD.encode(&raw);
    assert_ne!(unpadded.len(), t.len());
    assert!(matches!(
        f.decrypt_at_time(&unpadded, None, T0),
        Err(Error::Encoding(m)) if m.contains("padding")
    ));
    // Standard alphabet: find a token that has '-' or '_' in it.
    let t2 = loop {
        let c = f.encrypt_at_time(b"hello", T0).unwrap();
        if c.contains(['-', '_']) {
            break c;
        }
    };
    let std_form = STANDARD.encode(URL_SAFE.decode(&t2).unwrap());
    assert!(matches!(
        f.decrypt_at_time(&std_form, None, T0),
        Err(Error::Encoding(m)) if m.contains("standard")
    ));
    // Non-zero unused bits in the last character before '='.
    let last_data = t.trim_end_matches('=').len() - 1;
    let mut bytes = t.clone().into_bytes();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet
        .iter()
        .position(|&c| c == bytes[last_data])
        .unwrap();
    bytes[last_data] = alphabet[idx | 1];
    let noncanon = String::from_utf8(bytes).unwrap();
    assert_ne!(noncanon, t);
    assert!(matches!(
        f.decrypt_at_time(&noncanon, None, T0),
        Err(Error::Encoding(m)) if m.contains("canonical")
    ));
    assert!(!is_fernet_token(&noncanon));
    assert!(!is_fernet_token(&format!("{t}\n")));
}

#[test]
fn structure_errors() {
    let f = fernet();
    let t = f.encrypt_at_time(b"hello", T0).unwrap();
    let raw = URL_SAFE.decode(&t).unwrap();

    assert_eq!(
        f.decrypt_at_time("", None, T0),
        Err(Error::Truncated {
            what: "fernet token"
        })
    );
    // Wrong version byte.
    let mut v = raw.clone();
    v[0] = 0x81;
    assert_eq!(
        f.decrypt_at_time(&reencode(&v), None, T0),
        Err(Error::UnknownPrefix { format: "fernet" })
    );
    assert!(!is_fernet_token(&reencode(&v)));
    // Native Lockbox text is not Fernet.
    assert!(f.decrypt_at_time("lbx1:AAAA", None, T0).is_err());
    // Every length below the minimum is truncated.
    for n in 1..MIN_TOKEN_LEN {
        assert_eq!(
            f.decrypt_at_time(&reencode(&raw[..n]), None, T0),
            Err(Error::Truncated {
                what: "fernet token"
            }),
            "n = {n}"
        );
        assert!(!is_fernet_token(&reencode(&raw[..n])));
    }
    // A partial AES block (length above the minimum, not 57 + 16k).
    let mut longer = raw.clone();
    longer.insert(40, 0);
    assert!(matches!(
        f.decrypt_at_time(&reencode(&longer), None, T0),
        Err(Error::Truncated { what }) if what.contains("block")
    ));
    assert!(!is_fernet_token(&reencode(&longer)));
    // Whole extra blocks are structurally fine but fail the HMAC.
    let mut extra = raw.clone();
    extra.splice(41..41, [0u8; 16]);
    assert!(is_fernet_token(&reencode(&extra)));
    assert_eq!(
        f.decrypt_at_time(&reencode(&extra), None, T0),
        Err(Error::AuthenticationFailed)
    );
}

#[test]
fn bad_padding_under_a_valid_hmac_is_an_authentication_failure() {
    // Build a token whose HMAC is right but whose plaintext padding is wrong
    // (only a key holder can): encrypt 32 bytes, then drop the padding block
    // and re-sign. The spec's "payload padding error" vector is this case.
    let key = FernetKey::generate().unwrap();
    let f = Fernet::new(key.clone());
    let t = f.encrypt_with_parts(&[0x41; 32], T0, [3; 16]).unwrap();
    let raw = URL_SAFE.decode(&t).unwrap();
    let body = &raw[..raw.len() - 32 - 16]; // version..first two blocks
    let k = URL_SAFE.decode(key.expose_base64()).unwrap();
    let tag = lockbox_core::kdf::hmac_sha256(&k[..16], body);
    let forged = reencode(&[body, &tag].concat());
    assert!(is_fernet_token(&forged));
    assert_eq!(f.extract_timestamp(&forged).unwrap(), T0);
    assert_eq!(
        f.decrypt_at_time(&forged, None, T0),
        Err(Error::AuthenticationFailed)
    );
}

#[test]
fn is_fernet_token_examples() {
    let f = fernet();
    assert!(is_fernet_token(&f.encrypt(b"").unwrap()));
    assert!(is_fernet_token(
        "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA=="
    ));
    for s in [
        "",
        "g",
        "gAAAAA",
        "lbx1:abc",
        "vault:v1:abc",
        "hello world",
        "gAAAAA===",
    ] {
        assert!(!is_fernet_token(s), "{s:?}");
    }
}

#[test]
fn tampering_any_byte_fails() {
    let f = fernet();
    let t = f.encrypt_at_time(b"attack at dawn", T0).unwrap();
    let raw = URL_SAFE.decode(&t).unwrap();
    for i in 0..raw.len() {
        for bit in [0x01u8, 0x80] {
            let mut m = raw.clone();
            m[i] ^= bit;
            let got = f.decrypt_at_time(&reencode(&m), None, T0);
            if i == 0 {
                assert_eq!(got, Err(Error::UnknownPrefix { format: "fernet" }));
            } else {
                assert_eq!(
                    got,
                    Err(Error::AuthenticationFailed),
                    "byte {i} bit {bit:#x}"
                );
            }
        }
    }
}
