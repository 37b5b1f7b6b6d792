//! Runs every `sh` block of docs/CLI.md with the freshly built binary, so the
//! documented examples keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn cli_doc_examples_run() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/CLI.md")).unwrap();
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_lockbox"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut blocks = 0;
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```sh\n") {
        let body = &rest[start + 6..];
        let end = body.find("```").unwrap();
        // A line `! cmd` documents a command that must fail; bash's `!` alone
        // would not stop the script if it succeeded, so make it strict.
        let script: String = body[..end]
            .lines()
            .map(|l| match l.strip_prefix("! ") {
                Some(cmd) => {
                    let cmd = cmd.split("  #").next().unwrap_or(cmd).trim_end();
                    format!(
                        "if {cmd}; then echo 'expected to fail: {}' >&2; exit 1; fi\n",
                        cmd.replace('\'', "")
                    )
                }
                None => format!("{l}\n"),
            })
            .collect();
        rest = &body[end + 3..];
        blocks += 1;
        let mut b = [0u8; 8];
        lockbox::fill_random(&mut b).unwrap();
        let dir = std::env::temp_dir().join(format!("lockbox-doc-{}", hex::encode(b)));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&dir)
            .env("PATH", &path)
            .env_remove("LOCKBOX_KEYSET")
            .env_remove("LOCKBOX_FERNET_KEY")
            .env_remove("LOCKBOX_FERNET_KEYS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docs/CLI.md block {blocks} failed:\n{script}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        blocks >= 6,
        "expected the documented examples, found {blocks} blocks"
    );
}
