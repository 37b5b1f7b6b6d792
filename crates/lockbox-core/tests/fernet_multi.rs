#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! MultiFernet: encrypt with the first key, decrypt with any, rotate to the
//! first key keeping the timestamp.

use lockbox_core::fernet::{Fernet, FernetKey, MultiFernet};
use lockbox_core::Error;

const T0: u64 = 1_700_000_000;

fn keys(n: usize) -> Vec<FernetKey> {
    (0..n).map(|_| FernetKey::generate().unwrap()).collect()
}

#[test]
fn empty_key_list_is_refused() {
    match MultiFernet::new(Vec::new()) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("at least one key"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn encrypts_with_the_first_key() {
    let ks = keys(3);
    let m = MultiFernet::new(ks.clone()).unwrap();
    let token = m.encrypt_at_time(b"secret", T0).unwrap();
    let first = Fernet::new(ks[0].clone());
    assert_eq!(first.decrypt_at_time(&token, None, T0).unwrap(), b"secret");
    for k in &ks[1..] {
        assert_eq!(
            Fernet::new(k.clone()).decrypt_at_time(&token, None, T0),
            Err(Error::AuthenticationFailed)
        );
    }
    // encrypt() uses the current time, also with the first key.
    let token = m.encrypt(b"now").unwrap();
    assert_eq!(first.decrypt(&token, Some(60)).unwrap(), b"now");
}

#[test]
fn decrypts_with_any_key() {
    let ks = keys(4);
    let m = MultiFernet::new(ks.clone()).unwrap();
    for (i, k) in ks.iter().enumerate() {
        let msg = format!("message under key {i}");
        let token = Fernet::new(k.clone())
            .encrypt_at_time(msg.as_bytes(), T0)
            .unwrap();
        assert_eq!(m.decrypt_at_time(&token, None, T0).unwrap(), msg.as_bytes());
        assert_eq!(
            m.decrypt_at_time(&token, Some(10), T0 + 10).unwrap(),
            msg.as_bytes()
        );
        assert_eq!(m.extract_timestamp(&token).unwrap(), T0);
        // TTL and skew apply whichever key opens the token.
        assert_eq!(
            m.decrypt_at_time(&token, Some(10), T0 + 11),
            Err(Error::TokenExpired)
        );
        assert_eq!(
            m.decrypt_at_time(&token, None, T0 - 61),
            Err(Error::TokenFromFuture)
        );
        // decrypt() uses the real clock: T0 is in the past, so no TTL or a long one.
        assert_eq!(m.decrypt(&token, None).unwrap(), msg.as_bytes());
        assert_eq!(m.decrypt(&token, Some(1)), Err(Error::TokenExpired));
    }
}

#[test]
fn unknown_key_fails() {
    let m = MultiFernet::new(keys(2)).unwrap();
    let stranger = Fernet::new(FernetKey::generate().unwrap());
    let token = stranger.encrypt_at_time(b"x", T0).unwrap();
    assert_eq!(
        m.decrypt_at_time(&token, None, T0),
        Err(Error::AuthenticationFailed)
    );
    assert_eq!(
        m.extract_timestamp(&token),
        Err(Error::AuthenticationFailed)
    );
    // An unauthenticated token says nothing about its time, even if expired
    // or from the future.
    assert_eq!(
        m.decrypt_at_time(&token, Some(1), T0 + 1000),
        Err(Error::AuthenticationFailed)
    );
    assert_eq!(
        m.decrypt_at_time(&token, None, 0),
        Err(Error::AuthenticationFailed)
    );
}

#[test]
fn rotate_keeps_the_timestamp_and_switches_to_the_first_key() {
    let old = FernetKey::generate().unwrap();
    let new = FernetKey::generate().unwrap();
    let old_f = Fernet::new(old.clone());
    let new_f = Fernet::new(new.clone());
    let ts = T0 - 86_400 * 365; // a year old: rotate does no TTL check
    let token = old_f.encrypt_at_time(b"payload", ts).unwrap();

    let m = MultiFernet::new(vec![new.clone(), old.clone()]).unwrap();
    let rotated = m.rotate(&token).unwrap();
    assert_ne!(rotated, token);
    assert_eq!(new_f.extract_timestamp(&rotated).unwrap(), ts);
    assert_eq!(
        new_f.decrypt_at_time(&rotated, None, ts).unwrap(),
        b"payload"
    );
    assert_eq!(
        old_f.decrypt_at_time(&rotated, None, ts),
        Err(Error::AuthenticationFailed)
    );

    // Rotating again (already under the first key) re-encrypts with a fresh IV.
    let again = m.rotate(&rotated).unwrap();
    assert_ne!(again, rotated);
    assert_eq!(new_f.extract_timestamp(&again).unwrap(), ts);
    assert_eq!(new_f.decrypt_at_time(&again, None, ts).unwrap(), b"payload");

    // A token from the future is rotated as-is (no time checks), keeping its
    // timestamp, and is still refused by decrypt afterwards.
    let future = old_f.encrypt_at_time(b"later", u64::MAX).unwrap();
    let r = m.rotate(&future).unwrap();
    assert_eq!(new_f.extract_timestamp(&r).unwrap(), u64::MAX);
    assert_eq!(new_f.decrypt(&r, None), Err(Error::TokenFromFuture));
}

#[test]
fn rotate_of_a_token_no_key_opens_fails() {
    let m = MultiFernet::new(keys(3)).unwrap();
    let stranger = Fernet::new(FernetKey::generate().unwrap());
    let token = stranger.encrypt_at_time(b"x", T0).unwrap();
    assert_eq!(m.rotate(&token), Err(Error::AuthenticationFailed));
    // Structural failures keep their structural errors.
    assert!(matches!(m.rotate("not a token"), Err(Error::Encoding(_))));
    assert_eq!(
        m.rotate(""),
        Err(Error::Truncated {
            what: "fernet token"
        })
    );
    // A modified token under a known key fails too.
    let mine = m.encrypt_at_time(b"x", T0).unwrap();
    let mut bytes = mine.into_bytes();
    bytes[60] = if bytes[60] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    assert_eq!(m.rotate(&tampered), Err(Error::AuthenticationFailed));
}

#[test]
fn single_key_multifernet_matches_fernet() {
    let k = FernetKey::generate().unwrap();
    let m = MultiFernet::new(vec![k.clone()]).unwrap();
    let f = Fernet::new(k);
    let t = f.encrypt_at_time(b"abc", T0).unwrap();
    assert_eq!(m.decrypt_at_time(&t, Some(5), T0).unwrap(), b"abc");
    let t = m.encrypt_at_time(b"def", T0).unwrap();
    assert_eq!(f.decrypt_at_time(&t, Some(5), T0).unwrap(), b"def");
}
