//! Store-backed engine speed against raw lockbox-core, and start-up time
//! with many keys. Used by bench/engine.sh; prints JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use lockbox_core::rootkey::RootKey;
use lockbox_core::vault::{VaultKey, VaultKeyType};
use lockbox_core::{Algorithm, EncryptOptions, Keyset};
use lockbox_engine::{CreateOptions, Engine, EngineConfig};
use lockbox_store::Store;

const REPEATS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn rate_async<F, Fut>(mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..2000 {
        f().await;
    }
    let mut rates = Vec::new();
    for _ in 0..REPEATS {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            for _ in 0..256 {
                f().await;
            }
            n += 256;
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    median(rates)
}

fn rate(mut f: impl FnMut()) -> f64 {
    for _ in 0..2000 {
        f();
    }
    let mut rates = Vec::new();
    for _ in 0..REPEATS {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < Duration::from_millis(300) {
            for _ in 0..256 {
                f();
            }
            n += 256;
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    median(rates)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let keys: usize = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let versions: u32 = std::env::var("BENCH_VERSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let url = std::env::var("BENCH_STORE").unwrap_or_else(|_| {
        let dir = std::env::temp_dir().join(format!("lockbox-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        format!("sqlite://{}", dir.join("bench.db").display())
    });
    let root = RootKey::generate().unwrap();
    let root_bytes = root.expose_secret().expose_secret().to_vec();
    let field = [0x42u8; 32];
    let mut out = serde_json::Map::new();

    // Warm cache: engine vs core on the same operation.
    let e = Engine::open(Store::connect(&url).await.unwrap(), EngineConfig::default())
        .await
        .unwrap();
    e.unseal_with_master_key(root).await.unwrap();
    e.create_key("bench", &CreateOptions::default())
        .await
        .unwrap();
    let vk = VaultKey::generate(VaultKeyType::Aes256Gcm96, false, false).unwrap();
    let ks = Keyset::generate("bench", Algorithm::Aes256Gcm).unwrap();
    let core_vault = rate(|| {
        black_box(vk.encrypt(black_box(&field), b"", b"", None).unwrap());
    });
    let engine_vault = rate_async(|| {
        let e = e.clone();
        async move {
            black_box(
                e.encrypt("bench", black_box(&field), b"", b"", None)
                    .await
                    .unwrap(),
            );
        }
    })
    .await;
    let opts = EncryptOptions::with_context(b"row=1");
    let core_native = rate(|| {
        black_box(ks.encrypt_with(black_box(&field), &opts).unwrap());
    });
    let engine_native = rate_async(|| {
        let e = e.clone();
        async move {
            black_box(
                e.encrypt_native("bench", black_box(&field), b"row=1")
                    .await
                    .unwrap(),
            );
        }
    })
    .await;
    out.insert("core_vault_encrypt_32".into(), core_vault.into());
    out.insert("engine_vault_encrypt_32".into(), engine_vault.into());
    out.insert("core_native_encrypt_32".into(), core_native.into());
    out.insert("engine_native_encrypt_32".into(), engine_native.into());

    // Start-up: create keys x versions, then time open + unseal (load all).
    let t = Instant::now();
    for i in 0..keys {
        let name = format!("k{i:05}");
        e.create_key(
            &name,
            &CreateOptions {
                auto_rotate_period: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for _ in 1..versions {
            e.rotate(&name).await.unwrap();
        }
    }
    out.insert("setup_seconds".into(), t.elapsed().as_secs_f64().into());
    drop(e);
    let mut startups = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let e = Engine::open(Store::connect(&url).await.unwrap(), EngineConfig::default())
            .await
            .unwrap();
        e.unseal_with_master_key(RootKey::from_bytes(&root_bytes).unwrap())
            .await
            .unwrap();
        startups.push(t.elapsed().as_secs_f64());
        assert_eq!(e.list_keys(false).await.unwrap().len(), keys + 1);
    }
    out.insert("keys".into(), keys.into());
    out.insert("versions_per_key".into(), versions.into());
    out.insert("startup_seconds_median".into(), median(startups).into());
    println!("{}", serde_json::Value::Object(out));
}
