//! The CLI's contract: stdout only on success (exactly the plaintext for
//! decrypt, one line for encrypt), errors on stderr with exit code 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

struct Out {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

fn lockbox(args: &[&str], stdin: &[u8]) -> Out {
    let o = common::run(args, &[], stdin);
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: o.stdout,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let o = lockbox(args, stdin);
    assert_eq!(o.code, 0, "{args:?} failed: {}", o.stderr);
    o.stdout
}

/// Fails with exit 1, nothing on stdout, and stderr containing `needle`.
fn fails(args: &[&str], stdin: &[u8], needle: &str) -> String {
    let o = lockbox(args, stdin);
    assert_eq!(o.code, 1, "{args:?} should fail; stderr: {}", o.stderr);
    assert!(o.stdout.is_empty(), "stdout must be empty on failure");
    assert!(
        o.stderr.contains(needle),
        "stderr of {args:?} lacks {needle:?}: {}",
        o.stderr
    );
    o.stderr
}

fn tmpdir(tag: &str) -> PathBuf {
    let mut b = [0u8; 8];
    lockbox::fill_random(&mut b).unwrap();
    let d = std::env::temp_dir().join(format!("lockbox-cli-{tag}-{}", hex::encode(b)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

#[test]
fn keyset_encrypt_decrypt_round_trip_exact_bytes() {
    let d = tmpdir("rt");
    let ks = d.join("k.json");
    let ksp = ks.to_str().unwrap();
    ok(&["keygen", "--out", ksp, "--name", "cards"], b"");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ks).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "keyset file must be private");
    }
    // Binary plaintext with no trailing newline comes back byte for byte.
    let plain: Vec<u8> = (0u8..=255).chain([b'\n', 0, b'\n']).collect();
    let token = s(ok(
        &["encrypt", "--keyset", ksp, "--context", "row=1"],
        &plain,
    ));
    assert!(token.starts_with("lbx1:") && token.ends_with('\n'));
    assert_eq!(token.matches('\n').count(), 1, "one line");
    let back = ok(
        &["decrypt", "--keyset", ksp, "--context", "row=1"],
        token.as_bytes(),
    );
    assert_eq!(back, plain);
    // Wrong context: coarse error, hint, nothing on stdout.
    fails(
        &["decrypt", "--keyset", ksp, "--context", "row=2"],
        token.as_bytes(),
        "authentication failed",
    );
    // Empty plaintext works.
    let t = s(ok(&["encrypt", "--keyset", ksp], b""));
    assert!(ok(&["decrypt", "--keyset", ksp], t.as_bytes()).is_empty());
    // Never overwrite a keyset.
    fails(&["keygen", "--out", ksp], b"", "refusing to overwrite");
}

#[test]
fn rotation_keeps_old_tokens_readable() {
    let d = tmpdir("rot");
    let ks = d.join("k.json");
    let ksp = ks.to_str().unwrap();
    ok(&["keygen", "--out", ksp], b"");
    let t1 = s(ok(&["encrypt", "--keyset", ksp], b"one"));
    let meta: serde_json::Value =
        serde_json::from_slice(&ok(&["keyset", "rotate", "--keyset", ksp], b"")).unwrap();
    assert_eq!(meta["primary_version"], 2);
    let t2 = s(ok(&["encrypt", "--keyset", ksp], b"two"));
    let i1: serde_json::Value = serde_json::from_slice(&ok(&["inspect"], t1.as_bytes())).unwrap();
    let i2: serde_json::Value = serde_json::from_slice(&ok(&["inspect"], t2.as_bytes())).unwrap();
    assert_eq!(
        (i1["key_version"].as_u64(), i2["key_version"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(ok(&["decrypt", "--keyset", ksp], t1.as_bytes()), b"one");
    // Disable v1: its tokens stop decrypting, with a message that names the state.
    ok(
        &[
            "keyset",
            "set-state",
            "--keyset",
            ksp,
            "--version",
            "1",
            "--state",
            "disabled",
        ],
        b"",
    );
    fails(&["decrypt", "--keyset", ksp], t1.as_bytes(), "disabled");
    ok(
        &[
            "keyset",
            "set-state",
            "--keyset",
            ksp,
            "--version",
            "1",
            "--state",
            "destroyed",
        ],
        b"",
    );
    fails(
        &[
            "keyset",
            "set-state",
            "--keyset",
            ksp,
            "--version",
            "1",
            "--state",
            "active",
        ],
        b"",
        "cannot be undone",
    );
    assert_eq!(ok(&["decrypt", "--keyset", ksp], t2.as_bytes()), b"two");
    // show never prints key material
    let shown = s(ok(&["keyset", "show", "--keyset", ksp], b""));
    let file = std::fs::read_to_string(&ks).unwrap();
    let v: serde_json::Value = serde_json::from_str(&file).unwrap();
    let k2 = v["versions"][1]["key"].as_str().unwrap();
    assert!(!shown.contains(k2));
}

#[test]
fn keyset_errors_are_clear() {
    let d = tmpdir("err");
    fails(
        &[
            "encrypt",
            "--keyset",
            d.join("missing.json").to_str().unwrap(),
        ],
        b"x",
        "cannot read keyset file",
    );
    let bad = d.join("bad.json");
    std::fs::write(&bad, "{\"nope\": 1}").unwrap();
    fails(
        &["encrypt", "--keyset", bad.to_str().unwrap()],
        b"x",
        "not a Lockbox keyset file",
    );
    let ks = d.join("k.json");
    let ksp = ks.to_str().unwrap();
    ok(&["keygen", "--out", ksp], b"");
    fails(&["decrypt", "--keyset", ksp], b"", "stdin is empty");
    fails(&["decrypt", "--keyset", ksp], b"hello", "unknown prefix");
    fails(&["decrypt", "--keyset", ksp], b"lbx1:!!!", "base64");
    fails(&["decrypt", "--keyset", ksp], b"lbx2:AAAA", "version 2");
    fails(&["decrypt", "--keyset", ksp], b"lbx1:AQ", "truncated");
    fails(
        &[
            "keygen",
            "--out",
            d.join("x.json").to_str().unwrap(),
            "--algorithm",
            "des",
        ],
        b"",
        "unknown algorithm",
    );
    // A token from another keyset names the key ids.
    let other = d.join("o.json");
    ok(&["keygen", "--out", other.to_str().unwrap()], b"");
    let t = s(ok(&["encrypt", "--keyset", other.to_str().unwrap()], b"x"));
    fails(&["decrypt", "--keyset", ksp], t.as_bytes(), "key id");
}

#[test]
fn fernet_commands() {
    let key = s(ok(&["fernet", "generate-key"], b""));
    let key = key.trim();
    assert_eq!(key.len(), 44);
    let token = s(ok(&["fernet", "encrypt", "--key", key], b"secret\x00bytes"));
    assert!(token.starts_with("gAAAAA"));
    assert_eq!(
        ok(&["fernet", "decrypt", "--key", key], token.as_bytes()),
        b"secret\x00bytes"
    );
    assert_eq!(
        ok(
            &["fernet", "decrypt", "--key", key, "--ttl", "60"],
            token.as_bytes()
        ),
        b"secret\x00bytes"
    );
    // MultiFernet: a new key first, the old one still decrypts; rotate moves to the new key.
    let new = s(ok(&["fernet", "generate-key"], b""));
    let new = new.trim();
    let keys = format!("{new},{key}");
    assert_eq!(
        ok(&["fernet", "decrypt", "--key", &keys], token.as_bytes()),
        b"secret\x00bytes"
    );
    let rotated = s(ok(
        &["fernet", "rotate", "--key", new, "--key", key],
        token.as_bytes(),
    ));
    assert_eq!(
        ok(&["fernet", "decrypt", "--key", new], rotated.as_bytes()),
        b"secret\x00bytes"
    );
    fails(
        &["fernet", "decrypt", "--key", key],
        rotated.as_bytes(),
        "authentication failed",
    );
    // Bad keys: the message names the problem and never echoes the key.
    let e = fails(
        &["fernet", "encrypt", "--key", "short"],
        b"x",
        "invalid key",
    );
    assert!(!e.contains("short"), "{e}");
    let std_alphabet = key.replace('-', "+").replace('_', "/");
    if std_alphabet != key {
        fails(
            &["fernet", "encrypt", "--key", &std_alphabet],
            b"x",
            "invalid key",
        );
    }
    fails(&["fernet", "decrypt", "--key", key], b"not-a-token", "");
}

#[test]
fn inspect_recognises_formats() {
    let key = s(ok(&["fernet", "generate-key"], b""));
    let token = s(ok(&["fernet", "encrypt", "--key", key.trim()], b"x"));
    let v: serde_json::Value = serde_json::from_slice(&ok(&["inspect"], token.as_bytes())).unwrap();
    assert_eq!(v["format"], "fernet");
    fails(&["inspect"], b"plain text", "not a recognised ciphertext");
}
