//! Shared by lockbox-kms's integration tests: a local engine, a real
//! `moto_server` as the AWS KMS endpoint, boto3 as an independent peer,
//! and a tiny fault-injecting HTTP server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockbox_core::rootkey::RootKey;
use lockbox_engine::{Engine, EngineConfig};
use lockbox_kms::{AwsCredentials, AwsKmsConfig, AwsKmsProvider, Context, RetryPolicy};
use lockbox_store::Store;

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn unique() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn ctx(pairs: &[(&str, &str)]) -> Context {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A fresh unsealed engine on a temporary SQLite file (removed on drop).
pub struct TestEngine {
    pub engine: Engine,
    dir: PathBuf,
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn engine() -> TestEngine {
    let dir = std::env::temp_dir().join(format!("lockbox-kms-test-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("lockbox.db").display());
    let store = Store::connect(&url).await.unwrap();
    let engine = Engine::open(store, EngineConfig::default()).await.unwrap();
    engine
        .unseal_with_master_key(RootKey::generate().unwrap())
        .await
        .unwrap();
    TestEngine { engine, dir }
}

/// The test venv's Python (made by scripts/test); fails, never skips.
pub fn python() -> PathBuf {
    let p = std::env::var_os("LOCKBOX_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
        });
    assert!(
        p.exists(),
        "Python test peer not found at {}: run ./scripts/test (it creates .venv)",
        p.display()
    );
    p
}

/// A running `moto_server` on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start moto_server (from the venv, next to its python) and wait for it.
pub fn moto() -> Moto {
    let bin = python().parent().unwrap().join("moto_server");
    assert!(
        bin.exists(),
        "moto_server not found at {}: run ./scripts/test (tests/requirements.txt has moto[server])",
        bin.display()
    );
    let port = free_port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let m = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            // Ready once it answers HTTP.
            let _ = s.write_all(b"GET /moto-api/ HTTP/1.0\r\n\r\n");
            let mut buf = [0u8; 12];
            if std::io::Read::read(&mut s, &mut buf).unwrap_or(0) > 0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    m
}

pub const REGION: &str = "us-east-1";

/// Run tests/interop/kms_peer.py (boto3) with `input`; returns its JSON.
pub fn boto(input: &serde_json::Value) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/kms_peer.py");
    let mut child = Command::new(python())
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kms_peer.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Create a KMS key at moto through boto3; returns its ARN.
pub fn create_key(endpoint: &str) -> String {
    boto(&serde_json::json!({ "op": "create_key", "endpoint": endpoint }))["arn"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        timeout: Duration::from_millis(800),
    }
}

pub fn aws(endpoint: &str, key_id: &str) -> AwsKmsProvider {
    AwsKmsProvider::new(AwsKmsConfig {
        key_id: key_id.to_owned(),
        region: REGION.into(),
        endpoint: Some(endpoint.to_owned()),
        credentials: AwsCredentials::new("testing", "testing", None),
        retry: fast_retry(),
    })
    .unwrap()
}

/// What the fault server does with each request.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answer HTTP `status` with a JSON error body.
    Status(u16),
    /// Wait this long, then answer 500.
    Slow(Duration),
}

/// A loopback HTTP server that fails every request as told, counting them.
pub struct FaultServer {
    pub addr: String,
    pub hits: Arc<AtomicUsize>,
    pub last_request: Arc<std::sync::Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn fault_server(fault: Fault) -> FaultServer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (h, lr) = (hits.clone(), last.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (h, lr) = (h.clone(), lr.clone());
            tokio::spawn(async move {
                // Read one request: headers, then Content-Length bytes.
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut tmp).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                *lr.lock().unwrap() = buf;
                let status = match fault {
                    Fault::Status(s) => s,
                    Fault::Slow(d) => {
                        tokio::time::sleep(d).await;
                        500
                    }
                };
                let kind = if status >= 500 {
                    "KMSInternalException"
                } else {
                    "AccessDeniedException"
                };
                let body = format!(
                    r#"{{"__type":"{kind}","message":"injected fault","errors":["injected fault"]}}"#
                );
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    FaultServer {
        addr,
        hits,
        last_request: last,
        task,
    }
}
