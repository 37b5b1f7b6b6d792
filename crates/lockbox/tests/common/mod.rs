//! Shared by the CLI's integration tests: `lockbox serve` as a real process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `lockbox serve`, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `127.0.0.1:PORT`, for raw sockets.
    pub fn host(&self) -> &str {
        self.addr.trim_start_matches("http://")
    }

    /// Open file descriptors of the server process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }
}

/// Variables a test's environment must not leak into the processes it starts.
pub const LOCKBOX_VARS: [&str; 15] = [
    "LOCKBOX_MAX_CONNECTIONS_PER_ADDRESS",
    "LOCKBOX_MAX_TOKEN_TTL",
    "LOCKBOX_UNAUTHENTICATED_RATE_LIMIT",
    "LOCKBOX_ADDR",
    "LOCKBOX_TOKEN",
    "LOCKBOX_STORE",
    "LOCKBOX_MASTER_KEY",
    "LOCKBOX_ENV",
    "LOCKBOX_SEAL",
    "LOCKBOX_UNSEAL_SHARES",
    "LOCKBOX_LISTEN",
    "LOCKBOX_KEYSET",
    "LOCKBOX_FERNET_KEY",
    "LOCKBOX_FERNET_KEYS",
    "LOCKBOX_CACERT",
];

/// `cmd` without any inherited `LOCKBOX_*` setting.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for v in LOCKBOX_VARS {
        cmd.env_remove(v);
    }
    cmd
}

/// `lockbox ARGS` in a clean environment plus `env`, with `stdin` written
/// to it. A command may exit before it reads its input (a missing key, a
/// bad flag); the failed write is then ignored, since the exit code and
/// the output are what the test checks.
pub fn run(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockbox"));
    clean_env(&mut c).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// What a CLI run gave, as text.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// [`run`] with `env` and `args`, its output as text.
pub fn cli(env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Out {
    let o = run(args, env, stdin);
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Start `lockbox serve ARGS` on a free loopback port with `env`, and wait
/// until it accepts connections.
pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut c = Command::new(env!("CARGO_BIN_EXE_lockbox"));
    clean_env(&mut c)
        .arg("serve")
        .args(args)
        .args(["--listen", &listen]);
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server {
        child,
        addr: format!("http://{listen}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "server did not start on {listen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

/// `lockbox serve --dev` with the root token `root`, `extra` flags and
/// `env`.
pub fn dev(root: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut args = vec!["--dev", "--dev-root-token", root];
    args.extend_from_slice(extra);
    start(&args, env)
}

/// Root of the workspace.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The test venv's Python (made by scripts/test); fails, never skips.
pub fn python() -> PathBuf {
    let p = std::env::var_os("LOCKBOX_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "Python test peer not found at {}: run ./scripts/test",
        p.display()
    );
    p
}

/// The test PostgreSQL database (`LOCKBOX_TEST_PG_URL`, set by `scripts/test`).
pub fn pg_url() -> String {
    std::env::var("LOCKBOX_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The test PostgreSQL database with a store schema of its own.
pub fn pg_schema_url(schema: &str) -> String {
    let base = pg_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema={schema}")
}

/// Runs SQL on the test PostgreSQL database (from a synchronous test).
pub fn pg_exec(sql: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&pg_url())
            .await
            .unwrap();
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    });
}

/// Drops a test's PostgreSQL store schema and everything in it.
pub fn drop_schema(schema: &str) {
    pg_exec(&format!(r#"DROP SCHEMA IF EXISTS "{schema}" CASCADE"#));
}

/// A fresh directory under the system's temporary directory.
pub fn tmpdir(prefix: &str) -> PathBuf {
    let mut b = [0u8; 6];
    lockbox::fill_random(&mut b).unwrap();
    let d = std::env::temp_dir().join(format!("{prefix}-{}", hex::encode(b)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A JSON client for a server's `/v1/` API.
pub struct Api {
    pub http: reqwest::Client,
    pub addr: String,
    /// The token `root` calls with.
    pub root_token: String,
}

impl Api {
    pub fn new(addr: &str, root_token: &str) -> Self {
        Api {
            http: reqwest::Client::new(),
            addr: addr.to_owned(),
            root_token: root_token.to_owned(),
        }
    }

    /// `method /v1/path` with `token` and a JSON `body` (none if null):
    /// the status and the answer (JSON, or the text as a JSON string).
    pub async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, format!("{}/v1/{path}", self.addr));
        if let Some(t) = token {
            r = r.header("X-Vault-Token", t);
        }
        if !body.is_null() {
            r = r.json(&body);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, v)
    }

    /// As [`Api::call`] with the root token, asserting success.
    pub async fn root(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let (s, v) = self
            .call(Some(&self.root_token.clone()), method, path, body)
            .await;
        assert!(s < 300, "{method} {path}: {s} {v}");
        v
    }

    /// A token with `policies`, for an hour.
    pub async fn token(&self, policies: &[&str]) -> String {
        let v = self
            .root(
                "POST",
                "auth/token/create",
                serde_json::json!({"policies": policies, "ttl": "1h"}),
            )
            .await;
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}
