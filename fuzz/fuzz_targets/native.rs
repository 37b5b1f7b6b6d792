#![no_main]
//! Native format parser: text and binary, header inspection and decryption.
use libfuzzer_sys::fuzz_target;
use lockbox_core::{native, Algorithm, Keyset};
use std::sync::OnceLock;

static KS: OnceLock<Keyset> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let ks = KS.get_or_init(|| Keyset::generate("fuzz", Algorithm::Aes256Gcm).unwrap());
    let _ = native::inspect_binary(data);
    let _ = ks.decrypt_binary(data, b"ctx");
    let mut b = native::BINARY_MAGIC.to_vec();
    b.extend_from_slice(data);
    let _ = ks.decrypt_binary(&b, b"");
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = native::inspect_text(s);
        let _ = ks.decrypt(s, b"");
        let _ = ks.decrypt(&format!("lbx1:{s}"), b"");
    }
});
