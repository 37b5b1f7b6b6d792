//! Crash safety: a worker process loops over rotate, import, backup
//! restore and trim, logging every ciphertext it writes (after the call
//! returned); the test kills it with SIGKILL at random moments, at least 50
//! times per backend, and after each kill checks that the store opens and
//! every logged ciphertext still decrypts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{backends, Backend};
use lockbox_core::rootkey::RootKey;
use lockbox_core::SecretBytes;
use lockbox_engine::{ConfigUpdate, CreateOptions, Engine, EngineConfig, ImportSpec, KeyType};
use lockbox_store::Store;

const KILLS: usize = 50;
const ENV_URL: &str = "LOCKBOX_CRASH_URL";
const ENV_KEY: &str = "LOCKBOX_CRASH_ROOT";
const ENV_LOG: &str = "LOCKBOX_CRASH_LOG";

async fn open(url: &str, root_b64: &str) -> Engine {
    let store = Store::connect(url).await.unwrap();
    let e = Engine::open(store, EngineConfig::default()).await.unwrap();
    let root = RootKey::from_bytes(&lockbox_core::encoding::b64_decode(root_b64).unwrap()).unwrap();
    e.unseal_with_master_key(root).await.unwrap();
    e
}

fn log_line(f: &mut std::fs::File, key: &str, pt: &str, ct: &str) {
    // One write per line, so a kill cannot leave half a line mid-file.
    // The final `.` field marks a complete line.
    f.write_all(format!("{key}\t{pt}\t{ct}\t.\n").as_bytes())
        .unwrap();
    f.sync_data().unwrap();
}

/// The worker: runs until killed. Only entered in the child process.
#[test]
#[ignore = "entered only by the crash test's child process"]
fn crash_worker() {
    let (Ok(url), Ok(root), Ok(log)) = (
        std::env::var(ENV_URL),
        std::env::var(ENV_KEY),
        std::env::var(ENV_LOG),
    ) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let e = open(&url, &root).await;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // A previous worker killed mid-line: end its partial line here, so
        // it stays the only bad line and is reported as such.
        let text = std::fs::read(&log).unwrap_or_default();
        if text.last().is_some_and(|b| *b != b'\n') {
            f.write_all(b"\n").unwrap();
        }
        let mut i: u64 = 0;
        let run = std::process::id();
        loop {
            i += 1;
            // Rotate the data key, encrypt with the new version, log.
            e.rotate("data").await.unwrap();
            let pt = format!("{run}-{i}");
            let ct = e
                .encrypt("data", pt.as_bytes(), b"", b"", None)
                .await
                .unwrap();
            log_line(&mut f, "data", &pt, &ct);
            let nt = e
                .encrypt_native("data", pt.as_bytes(), b"ctx")
                .await
                .unwrap();
            log_line(&mut f, "data", &pt, &nt);
            // Import a key with known material and use it.
            let name = format!("imp-{run}-{i}");
            let material = SecretBytes::random(32).unwrap();
            e.import(
                &name,
                ImportSpec {
                    key_type: KeyType::Aes256Gcm96,
                    versions: vec![(1, material)],
                    derived: false,
                    convergent_encryption: false,
                    exportable: false,
                    allow_plaintext_backup: true,
                },
            )
            .await
            .unwrap();
            let ct = e
                .encrypt(&name, pt.as_bytes(), b"", b"", None)
                .await
                .unwrap();
            log_line(&mut f, &name, &pt, &ct);
            // Restore a backup of it under another name and use that.
            let backup = e.backup(&name, None).await.unwrap();
            let rname = format!("rst-{run}-{i}");
            e.restore_backup(&backup, None, Some(&rname), false)
                .await
                .unwrap();
            let ct = e
                .encrypt(&rname, pt.as_bytes(), b"", b"", None)
                .await
                .unwrap();
            log_line(&mut f, &rname, &pt, &ct);
            // Rotate and trim a scratch key that never encrypts data.
            let v = e.rotate("scratch").await.unwrap();
            e.configure(
                "scratch",
                &ConfigUpdate {
                    min_decryption_version: Some(v),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            e.trim("scratch", v).await.unwrap();
        }
    });
}

fn check(url: &str, root_b64: &str, log: &Path) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let e = open(url, root_b64).await; // the whole store loads: every row verifies and unseals
        let f = std::fs::File::open(log).unwrap();
        let lines: Vec<String> = std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .collect();
        let last = lines.len().saturating_sub(1);
        let mut n = 0;
        for (idx, line) in lines.iter().enumerate() {
            let parts: Vec<&str> = line.split('\t').collect();
            // A worker may die in the middle of writing a line: only lines
            // with the final `.` are complete.
            if parts.len() != 4
                || parts[3] != "."
                || !(parts[2].starts_with("vault:v") || parts[2].starts_with("lbx1:"))
            {
                continue;
            }
            let pt = if parts[2].starts_with("lbx1:") {
                e.decrypt_native(parts[2], b"ctx").await.map(|x| x.1)
            } else {
                e.decrypt(parts[0], parts[2], b"", b"").await
            };
            match pt {
                Ok(p) => assert_eq!(p, parts[1].as_bytes(), "wrong plaintext for {}", parts[0]),
                // Only the last line can have been cut short by the kill.
                Err(_) if idx == last => continue,
                Err(err) => panic!(
                    "ciphertext of {} no longer decrypts after a crash: {err}",
                    parts[0]
                ),
            }
            n += 1;
        }
        n
    })
}

fn crash_loop(b: Backend) {
    let guard_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (e, root, guard) = guard_rt.block_on(common::engine_on(&b));
    let root_b64 = lockbox_core::encoding::b64_encode(root.expose_secret().expose_secret());
    guard_rt.block_on(async {
        e.create_key("data", &CreateOptions::default())
            .await
            .unwrap();
        e.create_key("scratch", &CreateOptions::default())
            .await
            .unwrap();
    });
    drop(e);
    let log: PathBuf = std::env::temp_dir().join(format!("lockbox-crash-{}.log", common::unique()));
    let exe = std::env::current_exe().unwrap();
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let mut checked = 0;
    for round in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_worker",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_URL, &guard.url)
            .env(ENV_KEY, &root_b64)
            .env(ENV_LOG, &log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // xorshift: kill after 150..650 ms, i.e. at a random point of the loop
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "worker exited early in round {round}"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        checked = check(&guard.url, &root_b64, &log);
    }
    assert!(
        checked > KILLS,
        "the worker should have written data: {checked} ciphertexts"
    );
    eprintln!("{KILLS} kills, {checked} ciphertexts all decrypt");
    let _ = std::fs::remove_file(&log);
    drop(guard);
}

#[test]
fn kill9_sqlite() {
    crash_loop(backends::sqlite());
}

#[test]
fn kill9_postgres() {
    crash_loop(backends::postgres());
}
