//! TLS against a real `lockbox serve --tls-cert ...`, with the OpenSSL
//! command-line client and curl as peers: protocol versions and suites,
//! mutual TLS, certificate reload without restart, security headers,
//! `lockbox tls check`, and the certificate expiry metric and event.
//! Certificates are made at test time with `openssl req`/`openssl x509`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lockbox")
}

fn tmpdir() -> PathBuf {
    let mut b = [0u8; 6];
    lockbox::fill_random(&mut b).unwrap();
    let d = std::env::temp_dir().join(format!("lockbox-tls-test-{}", hex::encode(b)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(dir: &Path, cmd: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn openssl(dir: &Path, args: &[&str]) {
    let (ok, out) = run(dir, "openssl", args);
    assert!(ok, "openssl {args:?}: {out}");
}

/// A CA (`{ca}.pem/.key`) and a leaf signed by it (`{name}.pem/.key`).
fn ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "365",
            "-subj",
            &format!("/CN={ca}"),
        ],
    );
}

fn leaf(dir: &Path, ca: &str, name: &str, cn: &str, days: u32, rsa: bool, client: bool) {
    let key = if rsa { "rsa:2048" } else { "ec" };
    let mut args = vec!["req", "-newkey", key];
    if !rsa {
        args.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
    }
    let (k, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let subj = format!("/CN={cn}");
    args.extend(["-nodes", "-keyout", &k, "-out", &csr, "-subj", &subj]);
    openssl(dir, &args);
    let ext = format!("{name}.ext");
    let usage = if client { "clientAuth" } else { "serverAuth" };
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"),
    )
    .unwrap();
    let days = days.to_string();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            &days,
            "-extfile",
            &ext,
        ],
    );
}

struct Srv {
    child: std::process::Child,
    port: u16,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, extra: &[&str]) -> Srv {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut c = Command::new(bin());
    common::clean_env(&mut c)
        .args([
            "serve",
            "--dev",
            "--dev-root-token",
            "tls-root",
            "--listen",
            &listen,
        ])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Srv { child, port }
}

/// `openssl s_client` with `args`; returns (handshake completed, output).
fn s_client(dir: &Path, port: u16, args: &[&str]) -> (bool, String) {
    let connect = format!("127.0.0.1:{port}");
    let mut c = Command::new("openssl");
    c.args([
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "localhost",
        "-ign_eof",
    ])
    .args(args)
    .current_dir(dir)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    // A request, so TLS 1.3 post-handshake alerts (client certificate
    // required) are read before the connection closes.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let done = out.contains("HTTP/1.1 200 OK");
    (done, out)
}

fn cipher_of(out: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.split_once(", Cipher is ")
                .map(|(_, c)| c.trim().to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn protocols_and_suites_as_seen_by_openssl() {
    let dir = tmpdir();
    ca(&dir, "ca");
    leaf(&dir, "ca", "ec", "localhost", 90, false, false);
    leaf(&dir, "ca", "rsa", "localhost", 90, true, false);
    let ec = start(&dir, &["--tls-cert", "ec.pem", "--tls-key", "ec.key"]);
    let rsa = start(&dir, &["--tls-cert", "rsa.pem", "--tls-key", "rsa.key"]);

    // TLS 1.3 negotiates TLS_AES_256_GCM_SHA384 (the server's first choice).
    let (ok, out) = s_client(&dir, ec.port, &["-tls1_3", "-CAfile", "ca.pem"]);
    assert!(ok, "{out}");
    assert_eq!(cipher_of(&out), "TLS_AES_256_GCM_SHA384", "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    // Even when the client prefers another suite.
    let (ok, out) = s_client(
        &dir,
        ec.port,
        &[
            "-tls1_3",
            "-ciphersuites",
            "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
        ],
    );
    assert!(ok && cipher_of(&out) == "TLS_AES_256_GCM_SHA384", "{out}");
    // TLS 1.2: only ECDHE with AES-GCM, ECDSA or RSA by certificate.
    let (ok, out) = s_client(&dir, ec.port, &["-tls1_2"]);
    assert!(
        ok && cipher_of(&out) == "ECDHE-ECDSA-AES256-GCM-SHA384",
        "{out}"
    );
    let (ok, out) = s_client(&dir, rsa.port, &["-tls1_2"]);
    assert!(
        ok && cipher_of(&out) == "ECDHE-RSA-AES256-GCM-SHA384",
        "{out}"
    );
    let (ok, out) = s_client(
        &dir,
        rsa.port,
        &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
    );
    assert!(
        ok && cipher_of(&out) == "ECDHE-RSA-AES128-GCM-SHA256",
        "{out}"
    );
    // Refused: TLS 1.0 and 1.1 (offered by the client at security level 0,
    // so the refusal is the server's), CBC suites, static RSA, ChaCha on TLS 1.2.
    for (what, args) in [
        ("TLS 1.0", vec!["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
        ("TLS 1.1", vec!["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
        (
            "CBC",
            vec![
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA",
            ],
        ),
        (
            "static RSA",
            vec!["-tls1_2", "-cipher", "AES256-GCM-SHA384"],
        ),
        (
            "CHACHA on 1.2",
            vec!["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
        ),
    ] {
        let (ok, out) = s_client(&dir, ec.port, &args);
        assert!(!ok, "{what} was accepted:\n{out}");
        assert!(
            out.contains("alert")
                || out.contains("no protocols available")
                || out.contains("Cipher is (NONE)"),
            "{what}: {out}"
        );
    }
    // Security headers, HSTS included, over HTTPS.
    let (ok, out) = run(
        &dir,
        "curl",
        &[
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "--cacert",
            "ca.pem",
            &format!("https://127.0.0.1:{}/v1/sys/health", ec.port),
        ],
    );
    assert!(ok, "{out}");
    for h in [
        "strict-transport-security: max-age=63072000; includeSubDomains",
        "x-content-type-options: nosniff",
        "x-frame-options: DENY",
        "content-security-policy: default-src 'none'",
    ] {
        assert!(out.contains(h), "{h} missing:\n{out}");
    }
    // `lockbox tls check`.
    let o = Command::new(bin())
        .args([
            "tls",
            "check",
            &format!("127.0.0.1:{}", ec.port),
            "--ca-file",
        ])
        .arg(dir.join("ca.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    for want in [
        "protocol: TLSv1_3",
        "suite: TLS13_AES_256_GCM_SHA384",
        "CN=localhost",
        "issuer: CN=ca",
        "chain: verified",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // 90 days from issue, give or take the seconds the test took.
    assert!(
        text.contains("expires in: 89 days") || text.contains("expires in: 90 days"),
        "{text}"
    );
    // The CLI over HTTPS: trusts LOCKBOX_CACERT (as Vault's VAULT_CACERT);
    // without it the private CA is unknown and the call fails.
    let https = format!("https://127.0.0.1:{}", ec.port);
    let cli = |cacert: Option<&Path>, args: &[&str]| {
        let mut c = Command::new(bin());
        common::clean_env(&mut c)
            .args(["--addr", &https, "--token", "tls-root"])
            .args(args)
            .env_remove("LOCKBOX_CACERT");
        if let Some(p) = cacert {
            c.env("LOCKBOX_CACERT", p);
        }
        c.output().unwrap()
    };
    let o = cli(Some(&dir.join("ca.pem")), &["keys", "create", "over-tls"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cli(Some(&dir.join("ca.pem")), &["keys", "list"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("over-tls"));
    let o = cli(None, &["keys", "list"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot reach"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = cli(Some(&dir.join("ec.key")), &["keys", "list"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("LOCKBOX_CACERT"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Against another CA: reported and a failure.
    ca(&dir, "other");
    let o = Command::new(bin())
        .args([
            "tls",
            "check",
            &format!("127.0.0.1:{}", ec.port),
            "--ca-file",
        ])
        .arg(dir.join("other.pem"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not verify"));
    drop((ec, rsa));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mutual_tls_required_and_optional() {
    let dir = tmpdir();
    ca(&dir, "ca");
    ca(&dir, "rogue");
    leaf(&dir, "ca", "server", "localhost", 90, false, false);
    leaf(&dir, "ca", "client", "app1", 30, false, true);
    leaf(&dir, "rogue", "intruder", "app1", 30, false, true);
    let req = start(
        &dir,
        &[
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--tls-client-ca",
            "ca.pem",
        ],
    );
    let (ok, out) = s_client(&dir, req.port, &["-tls1_3"]);
    assert!(!ok, "no client certificate was accepted:\n{out}");
    assert!(
        out.contains("certificate required") || out.contains("alert"),
        "{out}"
    );
    let (ok, out) = s_client(&dir, req.port, &["-tls1_2"]);
    assert!(
        !ok,
        "TLS 1.2 without a client certificate was accepted:\n{out}"
    );
    let (ok, out) = s_client(
        &dir,
        req.port,
        &["-tls1_3", "-cert", "client.pem", "-key", "client.key"],
    );
    assert!(ok, "{out}");
    let (ok, out) = s_client(
        &dir,
        req.port,
        &["-tls1_3", "-cert", "intruder.pem", "-key", "intruder.key"],
    );
    assert!(!ok, "a certificate from another CA was accepted:\n{out}");
    // curl with and without a certificate.
    let url = format!("https://127.0.0.1:{}/v1/sys/health", req.port);
    let (ok, _) = run(
        &dir,
        "curl",
        &[
            "-sSf",
            "--cacert",
            "ca.pem",
            "--cert",
            "client.pem",
            "--key",
            "client.key",
            &url,
        ],
    );
    assert!(ok);
    let (ok, _) = run(&dir, "curl", &["-sSf", "--cacert", "ca.pem", &url]);
    assert!(!ok);

    let opt = start(
        &dir,
        &[
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--tls-client-ca",
            "ca.pem",
            "--tls-client-auth",
            "optional",
        ],
    );
    let (ok, out) = s_client(&dir, opt.port, &["-tls1_3"]);
    assert!(
        ok,
        "optional mode refused a client without a certificate:\n{out}"
    );
    let (ok, _) = s_client(
        &dir,
        opt.port,
        &["-tls1_3", "-cert", "client.pem", "-key", "client.key"],
    );
    assert!(ok);
    let (ok, out) = s_client(
        &dir,
        opt.port,
        &["-tls1_3", "-cert", "intruder.pem", "-key", "intruder.key"],
    );
    assert!(!ok, "optional mode accepted a bad certificate:\n{out}");
    // A bad setting is a clear startup error.
    let o = Command::new(bin())
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:1",
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "client.key",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("do not go together"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    drop((req, opt));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tls_check(port: u16, ca: &Path) -> String {
    let o = Command::new(bin())
        .args(["tls", "check", &format!("127.0.0.1:{port}"), "--ca-file"])
        .arg(ca)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn certificate_reloads_without_restart_and_expiry_is_watched() {
    let dir = tmpdir();
    ca(&dir, "ca");
    leaf(&dir, "ca", "first", "first.example", 20, false, false);
    leaf(&dir, "ca", "second", "second.example", 200, false, false);
    leaf(&dir, "ca", "third", "third.example", 300, false, false);
    std::fs::copy(dir.join("first.pem"), dir.join("live.pem")).unwrap();
    std::fs::copy(dir.join("first.key"), dir.join("live.key")).unwrap();
    let srv = start(
        &dir,
        &[
            "--tls-cert",
            "live.pem",
            "--tls-key",
            "live.key",
            "--audit-file",
            "audit.log",
        ],
    );
    assert!(tls_check(srv.port, &dir.join("ca.pem")).contains("CN=first.example"));
    // The 20-day certificate raises CERTIFICATE_EXPIRING and the metric.
    let url = format!(
        "https://127.0.0.1:{}/v1/sys/metrics?format=prometheus",
        srv.port
    );
    let (ok, m) = run(
        &dir,
        "curl",
        &[
            "-sSf",
            "--cacert",
            "ca.pem",
            "-H",
            "X-Vault-Token: tls-root",
            &url,
        ],
    );
    assert!(ok, "{m}");
    let secs: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("certificate_expiry_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((19 * 86_400..=20 * 86_400).contains(&secs), "{secs}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = std::fs::read_to_string(dir.join("audit.log")).unwrap_or_default();
        if a.contains("\"event\":\"CERTIFICATE_EXPIRING\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CERTIFICATE_EXPIRING in the audit log"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Replace the files: picked up by the file watch, no restart.
    std::fs::copy(dir.join("second.key"), dir.join("live.key")).unwrap();
    std::fs::copy(dir.join("second.pem"), dir.join("live.pem")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !tls_check(srv.port, &dir.join("ca.pem")).contains("CN=second.example") {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not loaded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A broken replacement keeps the working certificate.
    std::fs::write(dir.join("live.pem"), "not a certificate").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(tls_check(srv.port, &dir.join("ca.pem")).contains("CN=second.example"));
    // SIGHUP reloads at once.
    std::fs::copy(dir.join("third.key"), dir.join("live.key")).unwrap();
    std::fs::copy(dir.join("third.pem"), dir.join("live.pem")).unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &srv.child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !tls_check(srv.port, &dir.join("ca.pem")).contains("CN=third.example") {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(srv);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A blocking rustls client connection to the test server, past its
/// handshake (None if the server closed it first).
fn tls_connect(port: u16, ca: &Path) -> Option<(rustls::ClientConnection, std::net::TcpStream)> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).ok()?;
    }
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    Some((conn, tcp))
}

/// Whether the server closes `tcp` (TLS records read and dropped) within `limit`.
fn tls_closed_within(
    conn: &mut rustls::ClientConnection,
    tcp: &mut std::net::TcpStream,
    limit: Duration,
) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        match conn.read_tls(tcp) {
            Ok(0) => return true,
            Ok(_) => {
                if conn.process_new_packets().is_err() {
                    return true;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// `GET /v1/sys/health` over TLS: the status, or None if not answered.
fn tls_health(port: u16, ca: &Path) -> Option<u16> {
    use std::io::Read;
    let (mut conn, mut tcp) = tls_connect(port, ca)?;
    let mut s = rustls::Stream::new(&mut conn, &mut tcp);
    s.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out)
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn connection_limit_and_timeouts_hold_over_tls() {
    let dir = tmpdir();
    ca(&dir, "ca");
    leaf(&dir, "ca", "server", "localhost", 90, false, false);
    let srv = start(
        &dir,
        &[
            "--tls-cert",
            "server.pem",
            "--tls-key",
            "server.key",
            "--max-connections",
            "20",
            "--header-read-timeout",
            "1s",
            "--idle-timeout",
            "1s",
            "--tls-handshake-timeout",
            "1s",
        ],
    );
    let ca_pem = dir.join("ca.pem");
    assert_eq!(tls_health(srv.port, &ca_pem), Some(200));
    std::thread::sleep(Duration::from_millis(200));
    let pid = srv.child.id();
    let before = fds(pid);
    // Twenty connections past their handshake, then silent; sixty more
    // plain TCP connections beyond the limit.
    let mut held: Vec<_> = (0..20)
        .filter_map(|_| tls_connect(srv.port, &ca_pem))
        .collect();
    assert!(held.len() >= 18, "only {} handshakes", held.len());
    let extra: Vec<_> = (0..60)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap())
        .collect();
    let mut peak = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(600) {
        peak = peak.max(fds(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        peak <= before + 20 + 8,
        "server holds {peak} descriptors (started with {before}, limit 20)"
    );
    // The silent ones are closed after the header-read timeout, though
    // their handshake was done.
    for (conn, tcp) in &mut held {
        assert!(
            tls_closed_within(conn, tcp, Duration::from_secs(5)),
            "a silent TLS connection outlived the timeouts"
        );
    }
    drop(extra);
    let t0 = Instant::now();
    while tls_health(srv.port, &ca_pem) != Some(200) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "health not answered over TLS"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A client that never starts its handshake is dropped after the
    // handshake timeout.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let r = std::io::Read::read(&mut silent, &mut buf);
    assert!(
        matches!(r, Ok(0) | Err(_)) && t0.elapsed() < Duration::from_secs(4),
        "{r:?} after {:?}",
        t0.elapsed()
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert!(fds(pid) <= before + 8, "descriptors not released");
    drop(srv);
    std::fs::remove_dir_all(&dir).unwrap();
}
