#![no_main]
//! Fernet token and key parsers.
use libfuzzer_sys::fuzz_target;
use lockbox_core::fernet::{self, Fernet, FernetKey};
use std::sync::OnceLock;

static F: OnceLock<Fernet> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let f = F.get_or_init(|| Fernet::new(Fernet::generate_key().unwrap()));
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = fernet::is_fernet_token(s);
        let _ = f.decrypt(s, Some(60));
        let _ = f.decrypt_at_time(s, Some(60), 1_700_000_000);
        let _ = FernetKey::from_base64(s);
    }
});
