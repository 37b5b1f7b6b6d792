#![no_main]
//! Vault Transit `vault:vN:` parser and decryption.
use libfuzzer_sys::fuzz_target;
use lockbox_core::vault::{self, VaultKey, VaultKeyType};
use std::sync::OnceLock;

static KEY: OnceLock<VaultKey> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let key = KEY.get_or_init(|| VaultKey::generate(VaultKeyType::Aes256Gcm96, false, false).unwrap());
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = vault::parse(s);
        let _ = vault::is_vault_ciphertext(s);
        let _ = key.decrypt(s, b"", b"");
        let _ = key.decrypt(&format!("vault:v1:{s}"), b"", b"");
    }
});
