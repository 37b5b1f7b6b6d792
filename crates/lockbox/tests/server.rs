//! `lockbox serve` as a real process, driven by the `lockbox` CLI over HTTP
//! and by a local store: dev mode, Shamir init/unseal, sealing, the key
//! lifecycle, production checks, and two servers on one PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lockbox")
}

fn unique() -> String {
    let mut b = [0u8; 6];
    lockbox::fill_random(&mut b).unwrap();
    hex::encode(b)
}

fn tmpdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("lockbox-srv-test-{}", unique()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

use common::{clean_env, cli, drop_schema, start};

fn ok(env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> String {
    let o = cli(env, args, stdin);
    assert_eq!(o.code, 0, "{args:?} failed: {}", o.stderr);
    o.stdout
}

fn fails(env: &[(&str, &str)], args: &[&str], stdin: &[u8], needle: &str) -> String {
    let o = cli(env, args, stdin);
    assert_eq!(o.code, 1, "{args:?} should fail: {}", o.stdout);
    assert!(
        o.stdout.is_empty(),
        "nothing on stdout on failure: {}",
        o.stdout
    );
    assert!(
        o.stderr.contains(needle),
        "{args:?}: expected {needle:?} in {}",
        o.stderr
    );
    o.stderr
}

fn http(method: &str, url: &str, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let mut r = c.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        if let Some(t) = token {
            r = r.header("X-Vault-Token", t);
        }
        let resp = r.body(body.to_owned()).send().await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(
            resp.headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            if status == 204 {
                String::new()
            } else {
                "application/json".to_owned()
            },
            "{method} {url}"
        );
        let text = resp.text().await.unwrap();
        (
            status,
            if text.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&text).unwrap()
            },
        )
    })
}

#[test]
fn dev_server_key_lifecycle_over_http() {
    let s = start(&["--dev", "--dev-root-token", "t0ken"], &[]);
    let env = [
        ("LOCKBOX_ADDR", s.addr.as_str()),
        ("LOCKBOX_TOKEN", "t0ken"),
    ];
    let env = &env[..];
    ok(env, &["keys", "create", "orders"], b"");
    assert!(ok(env, &["keys", "list"], b"").contains("orders"));
    let native = ok(
        env,
        &["encrypt", "--key", "orders", "--context", "row=7"],
        b"4111 1111",
    );
    assert!(native.starts_with("lbx1:"));
    // Native ciphertexts name their key: no --key needed to decrypt.
    assert_eq!(
        ok(
            env,
            &["decrypt", "--remote", "--context", "row=7"],
            native.as_bytes()
        ),
        "4111 1111"
    );
    fails(
        env,
        &["decrypt", "--remote", "--context", "row=8"],
        native.as_bytes(),
        "authentication failed",
    );
    let vault = ok(
        env,
        &["encrypt", "--key", "orders", "--vault-format"],
        b"v1 data",
    );
    assert!(vault.starts_with("vault:v1:"));
    ok(env, &["keys", "rotate", "orders"], b"");
    let rewrapped = ok(env, &["rewrap", "--key", "orders"], vault.as_bytes());
    assert!(rewrapped.starts_with("vault:v2:"));
    assert_eq!(
        ok(env, &["decrypt", "--key", "orders"], rewrapped.as_bytes()),
        "v1 data"
    );
    let show: serde_json::Value =
        serde_json::from_str(&ok(env, &["--json", "keys", "show", "orders"], b"")).unwrap();
    assert_eq!(show["latest_version"], 2);
    ok(
        env,
        &["keys", "config", "orders", "--min-decryption-version", "2"],
        b"",
    );
    fails(
        env,
        &["decrypt", "--key", "orders"],
        vault.as_bytes(),
        "disallowed by policy",
    );
    ok(
        env,
        &["keys", "trim", "orders", "--min-available-version", "2"],
        b"",
    );
    fails(
        env,
        &["keys", "delete", "orders"],
        b"",
        "deletion is not allowed",
    );
    ok(
        env,
        &["keys", "config", "orders", "--deletion-allowed", "true"],
        b"",
    );
    ok(env, &["keys", "delete", "orders"], b"");
    fails(env, &["encrypt", "--key", "orders"], b"x", "deleted");
    ok(env, &["keys", "restore", "orders"], b"");
    ok(env, &["keys", "destroy", "orders", "--yes"], b"");
    fails(
        env,
        &["decrypt", "--key", "orders"],
        rewrapped.as_bytes(),
        "destroyed",
    );

    // Export, backup and import over HTTP.
    ok(
        env,
        &[
            "keys",
            "create",
            "exp",
            "--exportable",
            "--allow-plaintext-backup",
        ],
        b"",
    );
    let ct = ok(
        env,
        &["encrypt", "--key", "exp", "--vault-format"],
        b"payload",
    );
    let export = ok(env, &["keys", "export", "exp"], b"");
    let d = tmpdir();
    std::fs::write(d.join("export.json"), &export).unwrap();
    ok(
        env,
        &[
            "keys",
            "import",
            "exp-copy",
            "--vault-export",
            d.join("export.json").to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(
        ok(env, &["decrypt", "--key", "exp-copy"], ct.as_bytes()),
        "payload"
    );
    std::fs::write(d.join("pass"), "a long enough passphrase\n").unwrap();
    let backup = ok(
        env,
        &[
            "keys",
            "backup",
            "exp",
            "--passphrase-file",
            d.join("pass").to_str().unwrap(),
        ],
        b"",
    );
    assert!(backup.starts_with("lbxbak1:"));
    std::fs::write(d.join("exp.bak"), &backup).unwrap();
    ok(
        env,
        &[
            "keys",
            "import",
            "exp-restored",
            "--backup",
            d.join("exp.bak").to_str().unwrap(),
            "--passphrase-file",
            d.join("pass").to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(
        ok(env, &["decrypt", "--key", "exp-restored"], ct.as_bytes()),
        "payload"
    );

    // Wrong token, no token: 403 with a hint.
    fails(
        &[("LOCKBOX_ADDR", s.addr.as_str()), ("LOCKBOX_TOKEN", "nope")],
        &["keys", "list"],
        b"",
        "permission denied",
    );
    let (code, body) = http(
        "POST",
        &format!("{}/v1/transit/encrypt/exp", s.addr),
        None,
        "{\"plaintext\":\"aGk=\"}",
    );
    assert_eq!(
        (code, body["errors"][0].as_str()),
        (403, Some("permission denied"))
    );
    // Malformed requests: 4xx JSON, never 5xx.
    for (body, needle) in [
        ("{not json", "failed to parse JSON"),
        ("[1,2]", "must be an object"),
        ("{\"plaintext\": 5}", "must be a string"),
        ("{\"plaintext\": \"***\"}", "base64"),
        ("{\"batch_input\": 3}", "must be a list"),
    ] {
        let (code, v) = http(
            "POST",
            &format!("{}/v1/transit/encrypt/exp", s.addr),
            Some("t0ken"),
            body,
        );
        assert_eq!(code, 400, "{body}");
        assert!(
            v["errors"][0].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
    assert_eq!(
        http(
            "POST",
            &format!("{}/v1/transit/encrypt/exp", s.addr),
            Some("t0ken"),
            &deep
        )
        .0,
        400
    );
    let big = format!("{{\"plaintext\":\"{}\"}}", "A".repeat(33 << 20));
    assert_eq!(
        http(
            "POST",
            &format!("{}/v1/transit/encrypt/exp", s.addr),
            Some("t0ken"),
            &big
        )
        .0,
        413
    );
    // Batch: order kept, per-item errors, references echoed, 400 with data.
    let (code, v) = http(
        "POST",
        &format!("{}/v1/transit/encrypt/exp", s.addr),
        Some("t0ken"),
        r#"{"batch_input":[{"plaintext":"aGk=","reference":"a"},{"plaintext":"!!","reference":"b"}]}"#,
    );
    assert_eq!(code, 400);
    assert_eq!(v["data"]["batch_results"][0]["reference"], "a");
    assert!(v["data"]["batch_results"][0]["ciphertext"]
        .as_str()
        .unwrap()
        .starts_with("vault:v1:"));
    assert_eq!(v["data"]["batch_results"][1]["reference"], "b");
    assert!(v["data"]["batch_results"][1]["error"].as_str().is_some());
    // partial_failure_response_code, numeric and object references echoed as given.
    let (code, v) = http(
        "POST",
        &format!("{}/v1/transit/encrypt/exp", s.addr),
        Some("t0ken"),
        r#"{"batch_input":[{"plaintext":"aGk=","reference":7},{"plaintext":"!!","reference":{"row":2}}],"partial_failure_response_code":207}"#,
    );
    assert_eq!(code, 207, "{v}");
    assert_eq!(v["data"]["batch_results"][0]["reference"], 7);
    assert_eq!(v["data"]["batch_results"][1]["reference"]["row"], 2);
    assert!(v["request_id"].as_str().unwrap().len() == 36);
    // Only 2xx and 4xx codes: a 5xx (or 3xx) would say the server failed.
    for bad in [566, 302, 99] {
        let (code, v) = http(
            "POST",
            &format!("{}/v1/transit/encrypt/exp", s.addr),
            Some("t0ken"),
            &format!(
                r#"{{"batch_input":[{{"plaintext":"aGk="}},{{"plaintext":"!!"}}],"partial_failure_response_code":{bad}}}"#
            ),
        );
        assert_eq!(code, 400, "{bad}: {v}");
    }
    // Context in all items or none.
    let (code, _) = http(
        "POST",
        &format!("{}/v1/transit/encrypt/exp", s.addr),
        Some("t0ken"),
        r#"{"batch_input":[{"plaintext":"aGk=","context":"YQ=="},{"plaintext":"aGk="}]}"#,
    );
    assert_eq!(code, 400);

    // Seal: every key operation answers 503 until unsealed (dev servers keep no shares).
    ok(env, &["seal"], b"");
    fails(env, &["encrypt", "--key", "exp"], b"x", "sealed");
    let (code, _) = http("GET", &format!("{}/v1/sys/health", s.addr), None, "");
    assert_eq!(code, 503);
}

#[test]
fn shamir_init_unseal_and_restart() {
    let d = tmpdir();
    let store = format!("sqlite://{}", d.join("lockbox.db").display());
    let s = start(&["--store", &store], &[]);
    let addr = [("LOCKBOX_ADDR", s.addr.as_str())];
    let (code, _) = http("GET", &format!("{}/v1/sys/health", s.addr), None, "");
    assert_eq!(code, 501, "not initialized");
    let init: serde_json::Value = serde_json::from_str(&ok(
        &addr,
        &["--json", "init", "--shares", "5", "--threshold", "3"],
        b"",
    ))
    .unwrap();
    let shares: Vec<String> = init["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let token = init["root_token"].as_str().unwrap().to_owned();
    assert_eq!(shares.len(), 5);
    fails(&addr, &["init"], b"", "already initialized");
    // Sealed: 503 for key operations.
    let env = [
        ("LOCKBOX_ADDR", s.addr.as_str()),
        ("LOCKBOX_TOKEN", token.as_str()),
    ];
    fails(&env, &["keys", "list"], b"", "sealed");
    // A corrupt share is refused without counting.
    let mut bad = shares[0].clone().into_bytes();
    let i = bad.len() - 12;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    fails(
        &addr,
        &["unseal", std::str::from_utf8(&bad).unwrap()],
        b"",
        "corrupt",
    );
    assert!(ok(&addr, &["unseal", &shares[4]], b"").contains("1/3"));
    fails(&addr, &["unseal", &shares[4]], b"", "already given");
    // The share may come on stdin (keeps it out of the shell history).
    assert!(ok(&addr, &["unseal"], shares[2].as_bytes()).contains("2/3"));
    assert!(ok(&addr, &["unseal", &shares[0]], b"").contains("sealed: false"));
    ok(&env, &["keys", "create", "k"], b"");
    let ct = ok(&env, &["encrypt", "--key", "k"], b"kept across restarts");
    drop(s);

    // Restart: sealed again; shares of another init are refused; the right ones unseal.
    let other = tmpdir();
    let s2 = start(
        &[
            "--store",
            &format!("sqlite://{}", other.join("o.db").display()),
        ],
        &[],
    );
    let other_init: serde_json::Value = serde_json::from_str(&ok(
        &[("LOCKBOX_ADDR", s2.addr.as_str())],
        &["--json", "init", "--shares", "3", "--threshold", "2"],
        b"",
    ))
    .unwrap();
    drop(s2);
    let s = start(&["--store", &store], &[]);
    let addr = [("LOCKBOX_ADDR", s.addr.as_str())];
    let env = [
        ("LOCKBOX_ADDR", s.addr.as_str()),
        ("LOCKBOX_TOKEN", token.as_str()),
    ];
    ok(&addr, &["unseal", &shares[1]], b"");
    fails(
        &addr,
        &["unseal", other_init["keys"][0].as_str().unwrap()],
        b"",
        "different init",
    );
    ok(&addr, &["unseal", &shares[3]], b"");
    ok(&addr, &["unseal", &shares[4]], b"");
    assert_eq!(
        ok(&env, &["decrypt", "--key", "k"], ct.as_bytes()),
        "kept across restarts"
    );
}

#[test]
fn local_store_with_master_key() {
    let d = tmpdir();
    let store = format!("sqlite://{}", d.join("local.db").display());
    let key = ok(&[], &["keygen-master"], b"");
    let env = [
        ("LOCKBOX_STORE", store.as_str()),
        ("LOCKBOX_MASTER_KEY", key.trim()),
    ];
    ok(
        &env,
        &["keys", "create", "local", "--type", "chacha20-poly1305"],
        b"",
    );
    let ct = ok(
        &env,
        &["encrypt", "--key", "local", "--context", "t=1"],
        b"local secret",
    );
    assert_eq!(
        ok(
            &env,
            &["decrypt", "--context", "t=1", "--remote"],
            ct.as_bytes()
        ),
        "local secret"
    );
    // A wrong master key is refused by name.
    let wrong = ok(&[], &["keygen-master"], b"");
    fails(
        &[
            ("LOCKBOX_STORE", store.as_str()),
            ("LOCKBOX_MASTER_KEY", wrong.trim()),
        ],
        &["keys", "list"],
        b"",
        "wrong master key",
    );
    fails(
        &[
            ("LOCKBOX_STORE", store.as_str()),
            ("LOCKBOX_MASTER_KEY", "short"),
        ],
        &["keys", "list"],
        b"",
        "LOCKBOX_MASTER_KEY",
    );
    // Fernet key import: Fernet tokens decrypt with the named key.
    let fk = ok(&[], &["fernet", "generate-key"], b"");
    let token = ok(
        &[],
        &["fernet", "encrypt", "--key", fk.trim()],
        b"legacy value",
    );
    ok(
        &env,
        &["keys", "import", "legacy", "--fernet-key", fk.trim()],
        b"",
    );
    assert_eq!(
        ok(&env, &["decrypt", "--key", "legacy"], token.as_bytes()),
        "legacy value"
    );
    fails(
        &env,
        &[
            "keys",
            "import",
            "raw",
            "--raw",
            d.join("missing").to_str().unwrap(),
        ],
        b"",
        "cannot read",
    );
    std::fs::write(d.join("raw16"), lockbox::encoding::b64_encode(&[7u8; 16])).unwrap();
    fails(
        &env,
        &[
            "keys",
            "import",
            "raw",
            "--raw",
            d.join("raw16").to_str().unwrap(),
        ],
        b"",
        "invalid key size 16",
    );
    fails(&env, &["keys", "show", "nope"], b"", "not found");
    fails(&[], &["keys", "list"], b"", "no Lockbox to talk to");
}

#[test]
fn production_mode_refuses_insecure_settings() {
    let d = tmpdir();
    let store = format!("sqlite://{}", d.join("p.db").display());
    let key = ok(&[], &["keygen-master"], b"");
    // A server that should refuse to start but does not is killed after a
    // while, so the test fails instead of hanging.
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(bin());
        clean_env(&mut c)
            .arg("serve")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // Keys an operator made up rather than generated, written in forms the
    // parser accepts (base64 or hex of 32 bytes): refused in production.
    let pattern = lockbox::encoding::b64_encode("ab".repeat(16).as_bytes());
    let pattern_hex = hex::encode("ab".repeat(16));
    let password = lockbox::encoding::b64_encode(b"password1234password1234password");
    let passphrase = lockbox::encoding::b64_encode(b"correct horse battery staple!!42");
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--production", "--store", &store],
            vec![("LOCKBOX_MASTER_KEY", pattern.as_str())],
            "production check failed: master-key-strength: LOCKBOX_MASTER_KEY is not a random key: it repeats a 2-byte pattern",
        ),
        (
            vec!["--production", "--store", &store],
            vec![("LOCKBOX_MASTER_KEY", pattern_hex.as_str())],
            "it repeats a 2-byte pattern",
        ),
        (
            vec!["--production", "--store", &store],
            vec![("LOCKBOX_MASTER_KEY", password.as_str())],
            "LOCKBOX_MASTER_KEY is not a random key: it repeats a 12-byte pattern",
        ),
        (
            vec!["--production", "--store", &store],
            vec![("LOCKBOX_MASTER_KEY", passphrase.as_str())],
            "production check failed: master-key-strength: LOCKBOX_MASTER_KEY is not a random key: its bytes are all printable text",
        ),
        (
            vec!["--production", "--store", "sqlite::memory:"],
            vec![("LOCKBOX_MASTER_KEY", key.trim())],
            "production check failed: store: sqlite::memory: is an in-memory store",
        ),
        (
            vec!["--production", "--store", "sqlite://:memory:"],
            vec![("LOCKBOX_MASTER_KEY", key.trim())],
            "is an in-memory store",
        ),
        (
            vec!["--production", "--store", &store],
            vec![],
            "production check failed: master-key: no master key",
        ),
        (
            vec!["--store", &store],
            vec![
                ("LOCKBOX_ENV", "production"),
                ("LOCKBOX_MASTER_KEY", "dGlueQ=="),
            ],
            "production check failed: master-key",
        ),
        (
            vec!["--production", "--dev"],
            vec![],
            "production check failed: no-dev-mode",
        ),
        (
            vec!["--production"],
            vec![("LOCKBOX_MASTER_KEY", key.trim())],
            "production check failed: store",
        ),
        (
            vec!["--production", "--store", &store, "--listen", "0.0.0.0:0"],
            vec![("LOCKBOX_MASTER_KEY", key.trim())],
            "production check failed: tls",
        ),
    ];
    for (args, env, needle) in cases {
        let (code, err) = run(&args, &env);
        assert_eq!(code, 1, "{args:?} should refuse to start");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let kf = d.join("master.key");
    std::fs::write(&kf, key.trim()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, err) = run(
            &[
                "--production",
                "--store",
                &store,
                "--master-key-file",
                kf.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, 1);
        assert!(
            err.contains("production check failed: master-key-file-permissions"),
            "{err}"
        );
        std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // A made-up key in a key file: refused too, naming the file and the fix.
    let weak = d.join("weak.key");
    std::fs::write(&weak, &passphrase).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&weak, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (code, err) = run(
        &[
            "--production",
            "--store",
            &store,
            "--master-key-file",
            weak.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("production check failed: master-key-strength: the master key file")
            && err.contains("lockbox keygen-master"),
        "{err}"
    );
    // With everything right, it starts and serves.
    let s = start(
        &[
            "--production",
            "--store",
            &store,
            "--master-key-file",
            kf.to_str().unwrap(),
        ],
        &[],
    );
    let (code, v) = http("GET", &format!("{}/v1/sys/health", s.addr), None, "");
    assert_eq!((code, v["sealed"].as_bool()), (200, Some(false)));
}

#[test]
fn two_servers_one_postgres_see_rotation_at_once() {
    let schema = format!("lbx_cli_{}", unique());
    let url = common::pg_schema_url(&schema);
    let key = ok(&[], &["keygen-master"], b"");
    let env = [("LOCKBOX_MASTER_KEY", key.trim())];
    let a = start(&["--store", &url], &env);
    let b = start(&["--store", &url], &env);
    // Both servers share the root token made at first start.
    let token = {
        // The token is only printed by init/dev; in master-key mode set one through a local store.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = lockbox_store::Store::connect(&url).await.unwrap();
            let e = lockbox_engine::Engine::open(store, lockbox_engine::EngineConfig::default())
                .await
                .unwrap();
            e.unseal_with_master_key(
                lockbox::rootkey::RootKey::parse_master_key(key.trim()).unwrap(),
            )
            .await
            .unwrap();
            e.reset_root_token(Some("shared-root")).await.unwrap()
        })
    };
    let ea = [
        ("LOCKBOX_ADDR", a.addr.as_str()),
        ("LOCKBOX_TOKEN", token.as_str()),
    ];
    let eb = [
        ("LOCKBOX_ADDR", b.addr.as_str()),
        ("LOCKBOX_TOKEN", token.as_str()),
    ];
    ok(&ea, &["keys", "create", "shared"], b"");
    // B learns of the new key.
    let c0 = ok(
        &eb,
        &["encrypt", "--key", "shared", "--vault-format"],
        b"zero",
    );
    assert!(c0.starts_with("vault:v1:"));
    for round in 2..=4 {
        ok(&ea, &["keys", "rotate", "shared"], b"");
        let ca = ok(
            &ea,
            &["encrypt", "--key", "shared", "--vault-format"],
            b"from A",
        );
        assert!(ca.starts_with(&format!("vault:v{round}:")), "{ca}");
        // Immediately: B decrypts A's new-version ciphertext...
        assert_eq!(
            ok(&eb, &["decrypt", "--key", "shared"], ca.as_bytes()),
            "from A"
        );
        // ...and, once the NOTIFY arrives (milliseconds), encrypts with it too.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let cb = ok(
                &eb,
                &["encrypt", "--key", "shared", "--vault-format"],
                b"from B",
            );
            if cb.starts_with(&format!("vault:v{round}:")) {
                assert_eq!(
                    ok(&ea, &["decrypt", "--key", "shared"], cb.as_bytes()),
                    "from B"
                );
                break;
            }
            assert!(Instant::now() < deadline, "B never saw version {round}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(a);
    drop(b);
    drop_schema(&schema);
}

#[test]
fn record_api_round_trip_isolation_and_search() {
    let s = start(&["--dev", "--dev-root-token", "rt"], &[]);
    let url = |p: &str| format!("{}/v1/{p}", s.addr);
    assert_eq!(
        http("POST", &url("transit/keys/crm"), Some("rt"), "").0,
        200
    );
    let tmpl = "tenant={tenant};table=contacts;column={field};row={id}";
    let req = |tenant: &str, record: &serde_json::Value| {
        serde_json::json!({
            "key": "crm", "tenant": tenant, "context_template": tmpl,
            "fields": ["email", "ssn", "score", "tags"], "blind_index": ["email"],
            "record": record,
        })
        .to_string()
    };
    let rec = serde_json::json!({"id": 42, "name": "Jane", "email": "Jane@Example.com", "ssn": "123-45-6789", "score": 97, "tags": ["a", "b"], "note": null});
    let (code, enc) = http(
        "POST",
        &url("lockbox/records/encrypt"),
        Some("rt"),
        &req("acme", &rec),
    );
    assert_eq!(code, 200, "{enc}");
    let out = &enc["data"]["record"];
    for f in ["email", "ssn", "score", "tags"] {
        assert!(out[f].as_str().unwrap().starts_with("lbx1:"), "{f}");
    }
    assert_eq!(out["name"], "Jane");
    assert!(out["note"].is_null());
    let bi = enc["data"]["blind_indexes"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(bi.starts_with("bi1:v1:"));
    // Decrypt gives back the exact record, types included.
    let (code, dec) = http(
        "POST",
        &url("lockbox/records/decrypt"),
        Some("rt"),
        &req("acme", out),
    );
    assert_eq!(code, 200, "{dec}");
    assert_eq!(dec["data"]["record"], rec);
    // The same ciphertexts under another tenant, or moved to another row, fail.
    let (code, _) = http(
        "POST",
        &url("lockbox/records/decrypt"),
        Some("rt"),
        &req("globex", out),
    );
    assert_eq!(code, 400);
    let mut moved = out.clone();
    moved["id"] = serde_json::json!(43);
    assert_eq!(
        http(
            "POST",
            &url("lockbox/records/decrypt"),
            Some("rt"),
            &req("acme", &moved)
        )
        .0,
        400
    );
    let mut swapped = out.clone();
    swapped["email"] = out["ssn"].clone();
    assert_eq!(
        http(
            "POST",
            &url("lockbox/records/decrypt"),
            Some("rt"),
            &req("acme", &swapped)
        )
        .0,
        400
    );
    // Search: normalized term finds the stored index; other tenants' indexes differ.
    let search = |tenant: &str, value: &str| {
        let body =
            serde_json::json!({"key": "crm", "tenant": tenant, "field": "email", "value": value})
                .to_string();
        http("POST", &url("lockbox/records/search"), Some("rt"), &body).1["data"]["terms"].clone()
    };
    assert_eq!(
        search("acme", "  jane@example.COM "),
        serde_json::json!([bi])
    );
    assert_ne!(
        search("globex", "jane@example.com"),
        serde_json::json!([bi])
    );
    // After a rotation the search spans both versions, newest first.
    assert_eq!(
        http("POST", &url("transit/keys/crm/rotate"), Some("rt"), "").0,
        200
    );
    let terms = search("acme", "jane@example.com");
    assert_eq!(terms.as_array().unwrap().len(), 2);
    assert!(terms[0].as_str().unwrap().starts_with("bi1:v2:"));
    assert_eq!(terms[1], serde_json::json!(bi));
    // Bad specs are 400s that say what is wrong.
    let (code, v) = http(
        "POST",
        &url("lockbox/records/encrypt"),
        Some("rt"),
        r#"{"key":"crm","fields":["x"],"record":{"x":1},"context_template":"{missing}"}"#,
    );
    assert_eq!(code, 400);
    assert!(v["errors"][0].as_str().unwrap().contains("missing"), "{v}");
    let (code, _) = http(
        "POST",
        &url("lockbox/records/encrypt"),
        Some("rt"),
        r#"{"key":"crm","fields":["x"],"record":[1]}"#,
    );
    assert_eq!(code, 400);
}

#[test]
fn import_refuses_key_material_of_one_repeated_byte() {
    let s = start(&["--dev", "--dev-root-token", "imp"], &[]);
    let import = |name: &str, kind: &str, key: &[u8]| {
        let body = serde_json::json!({
            "type": kind,
            "keys": {"1": lockbox::encoding::b64_encode(key)},
        });
        http(
            "POST",
            &format!("{}/v1/lockbox/keys/{name}/import", s.addr),
            Some("imp"),
            &body.to_string(),
        )
    };
    for (name, kind, key) in [
        ("zero", "aes256-gcm96", vec![0u8; 32]),
        ("ones", "aes256-gcm96", vec![0xff; 32]),
        ("zero128", "aes128-gcm96", vec![0; 16]),
        ("fern", "fernet", vec![0; 32]),
    ] {
        let (code, v) = import(name, kind, &key);
        assert_eq!(code, 400, "{name}: {v}");
        assert!(
            v["errors"][0]
                .as_str()
                .unwrap()
                .contains("one byte value repeated"),
            "{name}: {v}"
        );
        let url = format!("{}/v1/transit/keys/{name}", s.addr);
        assert_ne!(
            http("GET", &url, Some("imp"), "").0,
            200,
            "{name} was created"
        );
    }
    let mut real = [0u8; 32];
    lockbox::fill_random(&mut real).unwrap();
    assert_eq!(import("real", "aes256-gcm96", &real).0, 204);
}

#[test]
fn limits_are_configurable() {
    let s = start(
        &[
            "--dev",
            "--dev-root-token",
            "lim",
            "--max-body-bytes",
            "1000",
            "--max-batch-items",
            "2",
            "--max-json-depth",
            "3",
        ],
        &[],
    );
    let url = format!("{}/v1/transit/encrypt/lim", s.addr);
    let big = format!("{{\"plaintext\":\"{}\"}}", "A".repeat(2000));
    assert_eq!(http("POST", &url, Some("lim"), &big).0, 413);
    let three =
        r#"{"batch_input":[{"plaintext":"aGk="},{"plaintext":"aGk="},{"plaintext":"aGk="}]}"#;
    let (code, v) = http("POST", &url, Some("lim"), three);
    assert_eq!(code, 400);
    assert!(
        v["errors"][0].as_str().unwrap().contains("limit is 2"),
        "{v}"
    );
    assert_eq!(
        http("POST", &url, Some("lim"), r#"{"a":{"b":{"c":{"d":1}}}}"#).0,
        400
    );
    assert_eq!(
        http("POST", &url, Some("lim"), r#"{"plaintext":"aGk="}"#).0,
        200
    );
}
