#![no_main]
//! Envelope format parser: text and binary, then opening with a fixed data key.
use libfuzzer_sys::fuzz_target;
use lockbox_core::envelope;

fuzz_target!(|data: &[u8]| {
    let _ = envelope::parse_binary(data.to_vec()).map(|p| p.open(&[7u8; 32], None));
    let mut b = envelope::BINARY_MAGIC.to_vec();
    b.extend_from_slice(data);
    if let Ok(p) = envelope::parse_binary(b) {
        let ctx = p.header.context.clone();
        let _ = p.open(&[7u8; 32], Some(&ctx));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = envelope::is_envelope(s);
        let _ = envelope::parse_text(&format!("lbxe1:{s}"));
    }
});
