//! What one client can hold open on a real `lockbox serve` (plain HTTP; the
//! TLS counterpart is in tls.rs): the header-read timeout (slowloris), the
//! idle timeout of kept-alive connections, the connection limit with the
//! server's file descriptors counted, and the request timeout. Raw sockets
//! on loopback, every wait bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A `lockbox serve --dev` with `extra`, once it answers (a bare connect
/// could be closed at a limit).
fn start(extra: &[&str]) -> common::Server {
    let mut args = vec!["--dev", "--dev-root-token", "lim-root"];
    args.extend_from_slice(extra);
    let s = common::start(&args, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(s.host()).is_none() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// What a read found: bytes, the peer's close, or nothing yet.
enum Got {
    Data(usize),
    Closed,
    Nothing,
}

fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> Got {
    match s.read(buf) {
        Ok(0) => Got::Closed,
        Ok(n) => Got::Data(n),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Got::Nothing,
        Err(_) => Got::Closed,
    }
}

/// One HTTP/1.1 answer read off `s` within `limit`: (status, head, body).
/// None if the connection closed first.
fn read_response(s: &mut TcpStream, limit: Duration) -> Option<(u16, String, String)> {
    let deadline = Instant::now() + limit;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        assert!(Instant::now() < deadline, "no answer within {limit:?}");
        match read_some(s, &mut buf) {
            Got::Data(n) => data.extend_from_slice(&buf[..n]),
            Got::Closed => return None,
            Got::Nothing => continue,
        }
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        if data.len() >= end + 4 + len {
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            let body = String::from_utf8_lossy(&data[end + 4..end + 4 + len]).into_owned();
            return Some((status, head, body));
        }
    }
}

/// `GET /v1/sys/health` on a new connection: the status, or None if the
/// connection was refused or closed without an answer.
fn health(addr: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(100))).ok()?;
    s.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: lockbox\r\nConnection: close\r\n\r\n")
        .ok()?;
    read_response(&mut s, Duration::from_secs(10)).map(|r| r.0)
}

/// Waits until the peer closes `s`, at most `limit`; returns when.
fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    while t0.elapsed() < limit {
        if let Got::Closed = read_some(s, &mut buf) {
            return Some(t0.elapsed());
        }
    }
    None
}

#[test]
fn a_client_trickling_its_headers_is_cut_off() {
    let s = start(&["--header-read-timeout", "1s", "--idle-timeout", "30s"]);
    let mut c = connect(s.host());
    c.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: lockbox\r\n")
        .unwrap();
    // One header byte every 200 ms: never a complete head.
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "a trickling client still connected after 8 s"
        );
        if c.write_all(b"X").is_err() {
            break t0.elapsed();
        }
        match read_some(&mut c, &mut buf) {
            Got::Closed => break t0.elapsed(),
            Got::Data(_) | Got::Nothing => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        closed >= Duration::from_millis(700),
        "cut off before the timeout: {closed:?}"
    );
    // The server itself is fine.
    assert_eq!(health(s.host()), Some(200));
}

#[test]
fn an_idle_kept_alive_connection_is_closed() {
    let s = start(&["--idle-timeout", "1s", "--header-read-timeout", "10s"]);
    let mut c = connect(s.host());
    for _ in 0..2 {
        c.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: lockbox\r\n\r\n")
            .unwrap();
        let (status, head, _) = read_response(&mut c, Duration::from_secs(5)).unwrap();
        assert_eq!(status, 200);
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        // Quiet for less than the idle timeout: still open.
        std::thread::sleep(Duration::from_millis(400));
    }
    let after = closed_within(&mut c, Duration::from_secs(8))
        .expect("an idle keep-alive connection still open after 8 s");
    assert!(after < Duration::from_secs(3), "closed late: {after:?}");
}

#[test]
fn connections_beyond_the_limit_are_refused_and_fds_stay_bounded() {
    let s = start(&[
        "--max-connections",
        "50",
        "--header-read-timeout",
        "1s",
        "--idle-timeout",
        "1s",
    ]);
    let before = s.fds();
    let mut idle: Vec<TcpStream> = (0..200).map(|_| connect(s.host())).collect();
    // While they are open: never more descriptors than the limit allows
    // (a little slack for the store and the runtime).
    let mut peak = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(600) {
        peak = peak.max(s.fds());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        peak <= before + 50 + 8,
        "server holds {peak} descriptors (started with {before}, limit 50)"
    );
    // Those over the limit were closed at once, before any timeout.
    let mut buf = [0u8; 16];
    let mut refused = 0;
    for c in &mut idle {
        if let Got::Closed = read_some(c, &mut buf) {
            refused += 1;
        }
    }
    assert!(refused >= 120, "only {refused} of 200 closed at once");
    // Once the idle ones time out, a health check gets through.
    let t0 = Instant::now();
    let answered = loop {
        if let Some(code) = health(s.host()) {
            break code;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "health not answered within 10 s of the idle connections"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(answered, 200);
    for c in &mut idle {
        assert!(
            closed_within(c, Duration::from_secs(5)).is_some(),
            "an idle connection outlived the timeouts"
        );
    }
    drop(idle);
    assert!(s.fds() <= before + 8, "descriptors not released");
}

#[test]
fn a_request_slower_than_the_request_timeout_gets_a_json_error() {
    let s = start(&[
        "--request-timeout",
        "1s",
        "--header-read-timeout",
        "1s",
        "--idle-timeout",
        "1s",
    ]);
    // The head arrives at once, the body one byte every 100 ms.
    let mut c = connect(s.host());
    c.write_all(
        b"PUT /v1/sys/unseal HTTP/1.1\r\nHost: lockbox\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
    )
    .unwrap();
    let t0 = Instant::now();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "no answer to a slow request after 8 s"
        );
        let _ = c.write_all(b" ");
        match read_some(&mut c, &mut buf) {
            Got::Data(n) => data.extend_from_slice(&buf[..n]),
            Got::Closed => break,
            Got::Nothing => {}
        }
        if data.windows(4).any(|w| w == b"\r\n\r\n") && data.ends_with(b"}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&data).into_owned();
    // The request timeout (503) and the body's own deadline (408) are the
    // same length: whichever answers first, it is a JSON error.
    assert!(
        text.starts_with("HTTP/1.1 503") || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let msg = v["errors"][0].as_str().unwrap();
    assert!(
        msg.contains("not handled within") || msg.contains("did not arrive in time"),
        "{v}"
    );
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // A large body sent at a steady pace takes longer than the header and
    // idle timeouts, and is served.
    let s = start(&[
        "--request-timeout",
        "20s",
        "--header-read-timeout",
        "1s",
        "--idle-timeout",
        "1s",
    ]);
    let mut c = connect(s.host());
    c.write_all(
        b"POST /v1/transit/keys/up HTTP/1.1\r\nHost: lockbox\r\nX-Vault-Token: lim-root\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let created = read_response(&mut c, Duration::from_secs(5)).unwrap();
    assert!(created.0 < 300, "{created:?}");
    let plaintext = lockbox::encoding::b64_encode(&vec![7u8; 3 << 20]);
    let body = format!("{{\"plaintext\":\"{plaintext}\"}}");
    let head = format!(
        "POST /v1/transit/encrypt/up HTTP/1.1\r\nHost: lockbox\r\nX-Vault-Token: lim-root\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    let t0 = Instant::now();
    for chunk in body.as_bytes().chunks(body.len() / 15 + 1) {
        c.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t0.elapsed() > Duration::from_millis(1400));
    let (status, _, answer) = read_response(&mut c, Duration::from_secs(20)).unwrap();
    assert_eq!(status, 200, "{answer:.300}");
    assert!(answer.contains("vault:v1:"), "{answer:.300}");
}

/// `GET /v1/sys/health` from the client address `from` (in 127.0.0.0/8).
fn health_from(from: &str, addr: &str) -> Option<u16> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let tcp = rt.block_on(sock.connect(addr.parse().unwrap())).ok()?;
    let mut s = tcp.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).ok()?;
    s.write_all(b"GET /v1/sys/health HTTP/1.1\r\nHost: lockbox\r\nConnection: close\r\n\r\n")
        .ok()?;
    read_response(&mut s, Duration::from_secs(10)).map(|r| r.0)
}

/// Found by the attack on this code (F7): one client holding every
/// connection locked everyone out. Each address has its own cap: one
/// that holds all of its connections idle leaves the rest to others.
#[test]
fn one_address_cannot_take_every_connection() {
    let srv = start(&[
        "--max-connections",
        "50",
        "--max-connections-per-address",
        "10",
        "--idle-timeout",
        "60s",
    ]);
    let idle: Vec<TcpStream> = (0..60).map(|_| connect(srv.host())).collect();
    std::thread::sleep(Duration::from_millis(300));
    // 127.0.0.1 is at its cap, yet 127.0.0.2 is served at once...
    assert_eq!(health_from("127.0.0.2", srv.host()), Some(200));
    // ...and the server keeps only the capped ones open.
    assert!(srv.fds() < 10 + 30, "{} descriptors", srv.fds());
    drop(idle);
}

/// Found by the second attack: a request whose body never completes was
/// answered at the request timeout, but its handler went on waiting for
/// the body and kept the connection's slot for good — enough of them
/// locked every client out. The body read is bounded by the request
/// timeout as well, so the slots come back.
#[test]
fn stalled_bodies_give_their_slots_back() {
    let s = start(&[
        "--max-connections",
        "20",
        "--request-timeout",
        "1s",
        "--idle-timeout",
        "60s",
    ]);
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut c = connect(s.host());
            c.write_all(
                b"POST /v1/sys/unseal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            )
            .unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(4000));
    // The stalled clients still hold their sockets open; the server has
    // let them go, so a newcomer is served.
    assert_eq!(health(s.host()), Some(200));
    drop(stalled);
}
