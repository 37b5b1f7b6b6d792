//! Runs every `sh` block of docs/CLI.md with the freshly built binary, so the
//! documented examples keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

/// A dev server for the examples, killed on drop.
struct DevServer(std::process::Child, String);

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dev_server() -> DevServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_lockbox"))
        .args([
            "serve",
            "--dev",
            "--dev-root-token",
            "root",
            "--listen",
            &listen,
            "--audit-store",
        ])
        .env_remove("LOCKBOX_ADDR")
        .env_remove("LOCKBOX_STORE")
        .env_remove("LOCKBOX_MASTER_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "dev server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    DevServer(child, format!("http://{listen}"))
}

#[test]
fn cli_doc_examples_run() {
    run_doc("docs/CLI.md", 6);
}

#[test]
fn api_doc_examples_run() {
    run_doc("docs/API.md", 6);
}

fn run_doc(file: &str, min_blocks: usize) {
    let server = dev_server();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let doc = std::fs::read_to_string(root.join(file)).unwrap();
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
            .env("LOCKBOX_ADDR", &server.1)
            .env("LOCKBOX_TOKEN", "root")
            .env_remove("LOCKBOX_STORE")
            .env_remove("LOCKBOX_MASTER_KEY")
            .env_remove("LOCKBOX_KEYSET")
            .env_remove("LOCKBOX_FERNET_KEY")
            .env_remove("LOCKBOX_FERNET_KEYS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file} block {blocks} failed:\n{script}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        blocks >= min_blocks,
        "expected the documented examples in {file}, found {blocks} blocks"
    );
}
