//! The Python `hvac` client (pinned in tests/requirements.txt) against real
//! `lockbox serve` processes: every method of hvac's Transit class and the
//! sys calls it makes (tests/interop/hvac_suite.py).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn hvac_transit_and_sys() {
    let mut b = [0u8; 12];
    lockbox::fill_random(&mut b).unwrap();
    let token = hex::encode(b);
    let dev = common::start(&["--dev", "--dev-root-token", &token], &[]);
    let dir = std::env::temp_dir().join(format!("lockbox-hvac-{token}"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("fresh.db").display());
    let fresh = common::start(&["--store", &store], &[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/hvac_suite.py");
    let out = Command::new(common::python())
        .arg(&script)
        .env("VAULT_ADDR", &dev.addr)
        .env("VAULT_TOKEN", &token)
        .env("VAULT_ADDR_UNINITIALIZED", &fresh.addr)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hvac suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
