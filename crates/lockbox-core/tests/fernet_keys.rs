#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Fernet key parsing: every malformed key is refused with a message that
//! says what is wrong and never repeats the key.

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use lockbox_core::fernet::{Fernet, FernetKey};
use lockbox_core::Error;

/// The spec's key (`cw_0x...`: it has both '-'/'_' characters in it).
const SPEC_KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";

/// Key bytes whose URL-safe and standard encodings differ (contain '-'/'_').
fn bytes_with_special_chars() -> Vec<u8> {
    loop {
        let k = FernetKey::generate().unwrap();
        let s = k.expose_base64();
        if s.contains('-') && s.contains('_') {
            return URL_SAFE.decode(s).unwrap();
        }
    }
}

/// The message of the `InvalidKey` error for `text`.
fn message(text: &str) -> String {
    match FernetKey::from_base64(text) {
        Err(Error::InvalidKey(m)) => m,
        Err(other) => panic!("expected InvalidKey, got {other:?}"),
        Ok(_) => panic!("key accepted"),
    }
}

/// Assert that `text` is refused, that the message mentions every one of
/// `hints`, and that it leaks neither the key nor any 6-character run of it.
fn refused(text: &str, hints: &[&str]) -> String {
    let m = message(text);
    for hint in hints {
        assert!(
            m.to_lowercase().contains(&hint.to_lowercase()),
            "message for a bad key should mention {hint:?}: {m}"
        );
    }
    let core: String = text.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    if !core.is_empty() {
        assert!(!m.contains(text), "message repeats the key: {m}");
    }
    let chars: Vec<char> = text.chars().collect();
    for w in chars.windows(6) {
        let w: String = w.iter().collect();
        if w.chars().filter(char::is_ascii_alphanumeric).count() >= 5 {
            assert!(
                !m.contains(&w),
                "message leaks part of the key ({w:?}): {m}"
            );
        }
    }
    // Display goes through the same message.
    let shown = FernetKey::from_base64(text).err().unwrap().to_string();
    assert!(shown.starts_with("invalid key: "), "{shown}");
    m
}

#[test]
fn good_keys_round_trip() {
    let k = FernetKey::from_base64(SPEC_KEY).unwrap();
    assert_eq!(k.expose_base64(), SPEC_KEY);
    for _ in 0..50 {
        let k = Fernet::generate_key().unwrap();
        let s = k.expose_base64();
        assert_eq!(s.len(), 44);
        assert!(s.ends_with('=') && !s.ends_with("=="));
        let again = FernetKey::from_base64(&s).unwrap();
        assert_eq!(again.expose_base64(), s);
        assert_eq!(k.clone().expose_base64(), s);
    }
    let raw = bytes_with_special_chars();
    let k = FernetKey::from_bytes(&raw).unwrap();
    assert_eq!(URL_SAFE.decode(k.expose_base64()).unwrap(), raw);
}

#[test]
fn debug_is_redacted() {
    let k = FernetKey::from_base64(SPEC_KEY).unwrap();
    let d = format!("{k:?}");
    assert!(d.contains("REDACTED"), "{d}");
    assert!(!d.contains("cw_0x"), "{d}");
    let f = Fernet::new(k.clone());
    let d = format!("{f:?}");
    assert!(!d.contains("cw_0x"), "{d}");
    let m = lockbox_core::fernet::MultiFernet::new(vec![k.clone(), k]).unwrap();
    let d = format!("{m:?}");
    assert!(d.contains("keys: 2") && !d.contains("cw_0x"), "{d}");
}

#[test]
fn empty() {
    refused("", &["empty", "44 characters"]);
}

#[test]
fn whitespace() {
    refused(&format!("{SPEC_KEY}\n"), &["whitespace", "line break"]);
    refused(&format!(" {SPEC_KEY}"), &["whitespace"]);
    refused(&format!("{SPEC_KEY}\r\n"), &["whitespace"]);
    let mid = format!("{} {}", &SPEC_KEY[..20], &SPEC_KEY[20..]);
    refused(&mid, &["whitespace", "character 21"]);
    let tab = format!("{}\t{}", &SPEC_KEY[..10], &SPEC_KEY[10..]);
    refused(&tab, &["whitespace", "character 11"]);
}

#[test]
fn standard_alphabet() {
    let raw = bytes_with_special_chars();
    let std_key = STANDARD.encode(&raw);
    assert!(std_key.contains(['+', '/']));
    let m = refused(&std_key, &["standard", "URL-safe", "'+'", "'-'"]);
    assert!(m.contains("'_'"), "{m}");
}

#[test]
fn missing_padding() {
    let unpadded = URL_SAFE_NO_PAD.encode(bytes_with_special_chars());
    assert_eq!(unpadded.len(), 43);
    refused(&unpadded, &["missing", "padding", "43 characters"]);
}

#[test]
fn wrong_length_in_characters() {
    for n in [16usize, 24, 31, 33, 48, 64] {
        let raw: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
        let text = URL_SAFE.encode(&raw);
        let m = refused(
            &text,
            &[&format!("{} characters", text.len()), "44 characters"],
        );
        assert!(m.contains(&format!("{n} bytes")), "{n}: {m}");
    }
    // Cut short / too long without any padding.
    refused(&SPEC_KEY[..40], &["40 characters", "32 bytes"]);
    refused(&format!("{}AAAA=", &SPEC_KEY[..43]), &["48 characters"]);
    // Two keys pasted together: the first one's '=' is in the middle.
    refused(
        &format!("{SPEC_KEY}{SPEC_KEY}"),
        &["'=' padding before its end"],
    );
}

#[test]
fn wrong_length_in_bytes_with_44_characters() {
    // 44 characters but 31 bytes ("==") or 33 bytes (no '=').
    let k31 = URL_SAFE.encode([7u8; 31]);
    assert_eq!(k31.len(), 44);
    refused(&k31, &["31 bytes", "32 bytes"]);
    let k33 = URL_SAFE.encode([7u8; 33]);
    assert_eq!(k33.len(), 44);
    refused(&k33, &["33 bytes", "'='"]);
}

#[test]
fn misplaced_padding() {
    let mut s = SPEC_KEY.to_owned();
    s.replace_range(10..11, "=");
    refused(&s, &["'=' padding before its end"]);
}

#[test]
fn non_canonical_final_character() {
    // The last data character, '4' (56 = 0b111000), carries the key's last 4
    // bits plus 2 unused zero bits; '5' (57) sets an unused bit. Python would
    // accept it (and decode the same bytes); we refuse the non-canonical
    // spelling.
    let bad = SPEC_KEY.replace("4e4=", "4e5=");
    assert_ne!(bad, SPEC_KEY);
    refused(&bad, &["not canonical", "unused bits"]);
}

#[test]
fn hex_instead_of_base64() {
    let hex_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    refused(hex_key, &["hexadecimal", "URL-safe base64"]);
}

#[test]
fn other_characters() {
    let mut s = SPEC_KEY.to_owned();
    s.replace_range(5..6, "*");
    refused(&s, &["not URL-safe base64", "character 6"]);
    let mut s = SPEC_KEY.to_owned();
    s.replace_range(3..4, "é");
    refused(&s, &["not URL-safe base64", "character 4"]);
}

#[test]
fn quotes_and_python_bytes_literals() {
    refused(&format!("b'{SPEC_KEY}'"), &["Python bytes literal"]);
    refused(&format!("\"{SPEC_KEY}\""), &["quotes"]);
    refused(&format!("'{SPEC_KEY}'"), &["quotes"]);
}

#[test]
fn raw_bytes_of_the_wrong_length() {
    for n in [0usize, 16, 31, 33, 64] {
        match FernetKey::from_bytes(&vec![1u8; n]) {
            Err(Error::InvalidKey(m)) => assert!(m.contains(&format!("got {n} bytes")), "{m}"),
            other => panic!("{n} bytes: {other:?}"),
        }
    }
}
