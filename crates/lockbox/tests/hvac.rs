//! The Python `hvac` client (pinned in tests/requirements.txt) against real
//! `lockbox serve` processes: every method of hvac's Transit class and the
//! sys calls it makes (tests/interop/hvac_suite.py).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str]) -> (Server, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_lockbox"))
        .arg("serve")
        .args(args)
        .args(["--listen", &listen])
        .env_remove("LOCKBOX_ADDR")
        .env_remove("LOCKBOX_STORE")
        .env_remove("LOCKBOX_MASTER_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Server(child), format!("http://{listen}"))
}

fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = std::env::var_os("LOCKBOX_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    assert!(
        p.exists(),
        "Python test peer not found at {}: run ./scripts/test",
        p.display()
    );
    p
}

#[test]
fn hvac_transit_and_sys() {
    let mut b = [0u8; 12];
    lockbox::fill_random(&mut b).unwrap();
    let token = hex::encode(b);
    let (_dev, addr) = start(&["--dev", "--dev-root-token", &token]);
    let dir = std::env::temp_dir().join(format!("lockbox-hvac-{token}"));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!("sqlite://{}", dir.join("fresh.db").display());
    let (_fresh, fresh_addr) = start(&["--store", &store]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/hvac_suite.py");
    let out = Command::new(python())
        .arg(&script)
        .env("VAULT_ADDR", &addr)
        .env("VAULT_TOKEN", &token)
        .env("VAULT_ADDR_UNINITIALIZED", &fresh_addr)
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
