#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Fernet specification's own vectors (tests/vectors/fernet, see
//! tests/vectors/README.md for their origin and licence).

mod common;

use lockbox_core::fernet::{is_fernet_token, Fernet, FernetKey};
use lockbox_core::Error;
use serde_json::Value;

fn load(name: &str) -> Vec<Value> {
    let path = common::vectors_dir().join("fernet").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v.as_array().unwrap().clone()
}

/// Days from 1970-01-01 to the proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds of an RFC 3339 time like `1985-10-26T01:20:00-07:00`.
fn rfc3339(s: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| -> i64 { s[r].parse().unwrap() };
    assert_eq!(s.len(), 25, "unexpected time format {s}");
    let (y, mo, d, h, mi, se) = (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16), n(17..19));
    let sign = match &s[19..20] {
        "+" => 1,
        "-" => -1,
        other => panic!("bad offset sign {other}"),
    };
    let offset = sign * (n(20..22) * 3600 + n(23..25) * 60);
    let local = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(local - offset).unwrap()
}

fn fernet(case: &Value) -> Fernet {
    Fernet::new(FernetKey::from_base64(case["secret"].as_str().unwrap()).unwrap())
}

#[test]
fn time_parser() {
    assert_eq!(rfc3339("1970-01-01T00:00:00+00:00"), 0);
    assert_eq!(rfc3339("1985-10-26T01:20:00-07:00"), 499_162_800);
    assert_eq!(rfc3339("2000-03-01T00:00:00+01:00"), 951_865_200);
}

#[test]
fn generate_reproduces_tokens_exactly() {
    let cases = load("generate.json");
    assert!(!cases.is_empty());
    for case in &cases {
        let f = fernet(case);
        let now = rfc3339(case["now"].as_str().unwrap());
        let iv: Vec<u8> = case["iv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
            .collect();
        let iv: [u8; 16] = iv.try_into().unwrap();
        let src = case["src"].as_str().unwrap();
        let token = f.encrypt_with_parts(src.as_bytes(), now, iv).unwrap();
        assert_eq!(token, case["token"].as_str().unwrap());
        assert!(is_fernet_token(&token));
        assert_eq!(f.extract_timestamp(&token).unwrap(), now);
        assert_eq!(
            f.decrypt_at_time(&token, None, now).unwrap(),
            src.as_bytes()
        );
    }
}

#[test]
fn verify_decrypts_at_the_given_time_with_the_ttl() {
    let cases = load("verify.json");
    assert!(!cases.is_empty());
    for case in &cases {
        let f = fernet(case);
        let now = rfc3339(case["now"].as_str().unwrap());
        let ttl = case["ttl_sec"].as_u64().unwrap();
        let token = case["token"].as_str().unwrap();
        let src = case["src"].as_str().unwrap();
        assert!(is_fernet_token(token));
        assert_eq!(
            f.decrypt_at_time(token, Some(ttl), now).unwrap(),
            src.as_bytes()
        );
        // The boundary is inclusive: still valid at exactly timestamp + ttl.
        let ts = f.extract_timestamp(token).unwrap();
        assert_eq!(
            f.decrypt_at_time(token, Some(ttl), ts + ttl).unwrap(),
            src.as_bytes()
        );
        assert_eq!(
            f.decrypt_at_time(token, Some(ttl), ts + ttl + 1),
            Err(Error::TokenExpired)
        );
    }
}

#[test]
fn every_invalid_case_fails_with_the_expected_error() {
    let cases = load("invalid.json");
    assert_eq!(cases.len(), 8);
    for case in &cases {
        let desc = case["desc"].as_str().unwrap();
        let f = fernet(case);
        let now = rfc3339(case["now"].as_str().unwrap());
        let ttl = case["ttl_sec"].as_u64().unwrap();
        let token = case["token"].as_str().unwrap();
        let got = f.decrypt_at_time(token, Some(ttl), now);
        let expected = match desc {
            "incorrect mac" => Error::AuthenticationFailed,
            "too short" => Error::Truncated {
                what: "fernet token",
            },
            "invalid base64" => {
                Error::Encoding("fernet token contains characters outside URL-safe base64")
            }
            // 72 bytes: shorter than the smallest token (73), whatever the cause.
            "payload size not multiple of block size" => Error::Truncated {
                what: "fernet token",
            },
            "payload padding error" | "incorrect IV (causes padding error)" => {
                Error::AuthenticationFailed
            }
            "far-future TS (unacceptable clock skew)" => Error::TokenFromFuture,
            "expired TTL" => Error::TokenExpired,
            other => panic!("unknown invalid case {other:?}"),
        };
        assert_eq!(got, Err(expected), "case {desc:?}");
        // Without a TTL only the expiry case becomes valid (the others are
        // broken tokens or from the future, which is always refused).
        let no_ttl = f.decrypt_at_time(token, None, now);
        if desc == "expired TTL" {
            assert!(no_ttl.is_ok(), "case {desc:?} without TTL: {no_ttl:?}");
        } else {
            assert!(no_ttl.is_err(), "case {desc:?} without TTL");
        }
    }
}
