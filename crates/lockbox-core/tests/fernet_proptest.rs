#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property tests for Fernet: arbitrary input never panics and only yields
//! the documented errors; round trips work; any single-bit change is refused.

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use lockbox_core::fernet::{is_fernet_token, Fernet, FernetKey, MultiFernet};
use lockbox_core::Error;
use proptest::prelude::*;

const SPEC_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";

fn spec() -> Fernet {
    Fernet::new(FernetKey::from_base64(SPEC_KEY).unwrap())
}

fn is_structural(e: &Error) -> bool {
    matches!(
        e,
        Error::Encoding(_) | Error::Truncated { .. } | Error::UnknownPrefix { format: "fernet" }
    )
}

/// Every way decrypting untrusted input may fail.
fn is_documented(e: &Error) -> bool {
    is_structural(e)
        || matches!(
            e,
            Error::AuthenticationFailed | Error::TokenExpired | Error::TokenFromFuture
        )
}

/// Decrypt `s` every way there is and check the errors; returns whether
/// `Fernet::decrypt_at_time` succeeded.
fn check_untrusted(s: &str, ttl: Option<u64>, now: u64) -> bool {
    let f = spec();
    let structural_ok = is_fernet_token(s);
    let got = f.decrypt_at_time(s, ttl, now);
    if let Err(e) = &got {
        assert!(is_documented(e), "undocumented error {e:?}");
        // `is_fernet_token` agrees exactly with the structural errors.
        assert_eq!(structural_ok, !is_structural(e), "{e:?}");
    } else {
        assert!(structural_ok);
    }
    if let Err(e) = f.extract_timestamp(s) {
        assert!(is_documented(&e) && !matches!(e, Error::TokenExpired | Error::TokenFromFuture));
    }
    let m = MultiFernet::new(vec![FernetKey::generate().unwrap()]).unwrap();
    if let Err(e) = m.decrypt_at_time(s, ttl, now) {
        assert!(is_documented(&e), "{e:?}");
    }
    if let Err(e) = m.rotate(s) {
        assert!(is_documented(&e), "{e:?}");
    }
    got.is_ok()
}

proptest! {
    #[test]
    fn arbitrary_strings(s in ".{0,300}", ttl in proptest::option::of(any::<u64>()), now in any::<u64>()) {
        prop_assert!(!check_untrusted(&s, ttl, now));
    }

    #[test]
    fn arbitrary_base64_alphabet_strings(s in "g[A-Za-z0-9_=-]{0,200}", now in any::<u64>()) {
        prop_assert!(!check_untrusted(&s, None, now));
    }

    #[test]
    fn arbitrary_bytes_as_tokens(bytes in proptest::collection::vec(any::<u8>(), 0..300), now in any::<u64>()) {
        prop_assert!(!check_untrusted(&URL_SAFE.encode(&bytes), Some(60), now));
    }

    #[test]
    fn arbitrary_bytes_after_the_version_byte(rest in proptest::collection::vec(any::<u8>(), 0..200), now in any::<u64>()) {
        let mut bytes = vec![0x80u8];
        bytes.extend_from_slice(&rest);
        prop_assert!(!check_untrusted(&URL_SAFE.encode(&bytes), None, now));
    }

    #[test]
    fn arbitrary_key_text_never_panics(s in ".{0,80}") {
        match FernetKey::from_base64(&s) {
            Ok(k) => prop_assert_eq!(k.expose_base64(), s),
            Err(Error::InvalidKey(m)) => {
                if s.chars().count() >= 8 {
                    prop_assert!(!m.contains(&s));
                }
            }
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }

    #[test]
    fn round_trip(pt in proptest::collection::vec(any::<u8>(), 0..2048), ts in any::<u64>(), ttl in any::<u64>()) {
        let f = Fernet::new(FernetKey::generate().unwrap());
        let t = f.encrypt_at_time(&pt, ts).unwrap();
        prop_assert!(is_fernet_token(&t));
        prop_assert_eq!(f.extract_timestamp(&t).unwrap(), ts);
        prop_assert_eq!(f.decrypt_at_time(&t, Some(ttl), ts).unwrap(), pt.clone());
        prop_assert_eq!(f.decrypt_at_time(&t, None, ts).unwrap(), pt);
    }

    #[test]
    fn any_single_bit_flip_is_refused(
        pt in proptest::collection::vec(any::<u8>(), 0..100),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let f = Fernet::new(FernetKey::generate().unwrap());
        let t = f.encrypt_at_time(&pt, 1_700_000_000).unwrap();
        let mut raw = URL_SAFE.decode(&t).unwrap();
        let i = pos.index(raw.len());
        raw[i] ^= 1 << bit;
        let got = f.decrypt_at_time(&URL_SAFE.encode(&raw), None, 1_700_000_000);
        if i == 0 {
            prop_assert_eq!(got, Err(Error::UnknownPrefix { format: "fernet" }));
        } else {
            prop_assert_eq!(got, Err(Error::AuthenticationFailed));
        }
    }

    #[test]
    fn any_changed_character_is_refused(
        pt in proptest::collection::vec(any::<u8>(), 0..100),
        pos in any::<prop::sample::Index>(),
        c in "[A-Za-z0-9_=+/ -]",
    ) {
        let f = Fernet::new(FernetKey::generate().unwrap());
        let t = f.encrypt_at_time(&pt, 1_700_000_000).unwrap();
        let i = pos.index(t.len());
        let mut s = t.clone();
        s.replace_range(i..=i, &c);
        prop_assume!(s != t);
        prop_assert!(f.decrypt_at_time(&s, None, 1_700_000_000).is_err());
    }
}
