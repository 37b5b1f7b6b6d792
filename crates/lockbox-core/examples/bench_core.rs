//! In-process throughput of lockbox-core, printed as JSON for bench/core.sh.
//!
//! Each figure is the median of `REPEATS` timed runs of about `RUN_MS`
//! milliseconds each, single thread.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use lockbox_core::fernet::Fernet;
use lockbox_core::vault::{VaultKey, VaultKeyType};
use lockbox_core::{Algorithm, EncryptOptions, Keyset};

const REPEATS: usize = 7;

fn run_ms() -> u64 {
    std::env::var("BENCH_RUN_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// Median operations per second of `f`.
fn ops_per_sec(mut f: impl FnMut()) -> f64 {
    // Warm up and size a batch to ~1 ms.
    let mut batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        if t.elapsed() >= Duration::from_millis(1) {
            break;
        }
        batch *= 2;
    }
    let mut rates: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let target = Duration::from_millis(run_ms());
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < target {
                for _ in 0..batch {
                    f();
                }
                n += batch;
            }
            n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    rates[REPEATS / 2]
}

fn main() {
    let field = [0x42u8; 32];
    let mib = vec![0x17u8; 1 << 20];
    let ctx = b"tenant=acme;table=users;column=ssn;row=42";
    let mut out = serde_json::Map::new();
    let mut put = |k: &str, v: f64| {
        eprintln!("{k:40} {v:>14.0}");
        out.insert(k.to_owned(), serde_json::json!(v));
    };

    for alg in [
        Algorithm::Aes256Gcm,
        Algorithm::ChaCha20Poly1305,
        Algorithm::XChaCha20Poly1305,
        Algorithm::Aes256GcmSiv,
        Algorithm::Aes256Siv,
    ] {
        let ks = Keyset::generate("bench", alg).unwrap();
        let opts = EncryptOptions::with_context(ctx);
        let text = ks.encrypt_with(&field, &opts).unwrap();
        let bin = ks.encrypt_binary(&field, &opts).unwrap();
        put(
            &format!("native_{alg}_encrypt_32_text"),
            ops_per_sec(|| {
                black_box(ks.encrypt_with(black_box(&field), &opts).unwrap());
            }),
        );
        put(
            &format!("native_{alg}_decrypt_32_text"),
            ops_per_sec(|| {
                black_box(ks.decrypt(black_box(&text), ctx).unwrap());
            }),
        );
        put(
            &format!("native_{alg}_encrypt_32_binary"),
            ops_per_sec(|| {
                black_box(ks.encrypt_binary(black_box(&field), &opts).unwrap());
            }),
        );
        put(
            &format!("native_{alg}_decrypt_32_binary"),
            ops_per_sec(|| {
                black_box(ks.decrypt_binary(black_box(&bin), ctx).unwrap());
            }),
        );
        let big = ks.encrypt_binary(&mib, &opts).unwrap();
        put(
            &format!("native_{alg}_encrypt_1mib_bytes_per_sec"),
            (1 << 20) as f64
                * ops_per_sec(|| {
                    black_box(ks.encrypt_binary(black_box(&mib), &opts).unwrap());
                }),
        );
        put(
            &format!("native_{alg}_decrypt_1mib_bytes_per_sec"),
            (1 << 20) as f64
                * ops_per_sec(|| {
                    black_box(ks.decrypt_binary(black_box(&big), ctx).unwrap());
                }),
        );
    }

    let f = Fernet::new(Fernet::generate_key().unwrap());
    let tok = f.encrypt(&field).unwrap();
    put(
        "fernet_encrypt_32",
        ops_per_sec(|| {
            black_box(f.encrypt(black_box(&field)).unwrap());
        }),
    );
    put(
        "fernet_decrypt_32",
        ops_per_sec(|| {
            black_box(f.decrypt(black_box(&tok), None).unwrap());
        }),
    );

    let vk = VaultKey::generate(VaultKeyType::Aes256Gcm96, false, false).unwrap();
    let vt = vk.encrypt(&field, b"", b"", None).unwrap();
    put(
        "vault_encrypt_32",
        ops_per_sec(|| {
            black_box(vk.encrypt(black_box(&field), b"", b"", None).unwrap());
        }),
    );
    put(
        "vault_decrypt_32",
        ops_per_sec(|| {
            black_box(vk.decrypt(black_box(&vt), b"", b"").unwrap());
        }),
    );

    println!("{}", serde_json::Value::Object(out));
}
