//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Root of the workspace.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Directory of the vector files copied into this crate.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// The Python interpreter of the test venv (made by `scripts/test`).
/// Fails loudly rather than skipping: interop is part of the suite.
pub fn python() -> PathBuf {
    let p = std::env::var_os("LOCKBOX_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "Python test peer not found at {}: run ./scripts/test (it creates .venv)",
        p.display()
    );
    p
}

/// Run `script` (relative to tests/interop) with the venv's Python, feeding
/// `input` as JSON on stdin; returns parsed JSON from stdout.
pub fn run_python(script: &str, input: &serde_json::Value) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let mut child = Command::new(python())
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// A stable name for an error, as written in the vector files (native and
/// envelope formats).
pub fn class(e: &lockbox_core::Error) -> &'static str {
    use lockbox_core::Error;
    match e {
        Error::UnknownPrefix { .. } => "unknown-prefix",
        Error::UnsupportedVersion { .. } => "unsupported-version",
        Error::UnknownAlgorithm(_) => "unknown-algorithm",
        Error::Truncated { .. } => "truncated",
        Error::Malformed(_) => "malformed",
        Error::Encoding(_) => "encoding",
        Error::WrongKeyId { .. } => "wrong-key-id",
        Error::UnknownKeyVersion(_) => "unknown-key-version",
        Error::KeyVersionUnusable { .. } => "key-version-unusable",
        Error::AuthenticationFailed => "authentication-failed",
        _ => "other",
    }
}
