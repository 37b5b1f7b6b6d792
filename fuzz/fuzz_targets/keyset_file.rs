#![no_main]
//! Keyset file parser: parse, and if it parses, serialize and parse again
//! to the same metadata.
use libfuzzer_sys::fuzz_target;
use lockbox_core::Keyset;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(ks) = Keyset::from_json(s) {
            let again = Keyset::from_json(&ks.to_json().unwrap()).unwrap();
            assert_eq!(again.key_id(), ks.key_id());
            assert_eq!(again.primary_version(), ks.primary_version());
        }
    }
});
