//! Envelope encryption with AWS KMS (a moto_server endpoint) as KEK, with
//! and without the data-key cache. Used by bench/envelope.sh.
//!
//! `bench_envelope ENDPOINT KEY_ARN [N]` prints one JSON object.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use lockbox_kms::{
    AwsCredentials, AwsKmsConfig, AwsKmsProvider, CacheLimits, CachingMaterials, Context, Envelope,
    Provider, RetryPolicy,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `n` encryptions in 5 chunks; returns (median chunk rate, total seconds).
async fn run(env: &Envelope, n: usize, ctx: &Context) -> (f64, f64) {
    let pt = [7u8; 64];
    let chunk = n / 5;
    let mut rates = Vec::new();
    let t_all = Instant::now();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..chunk {
            std::hint::black_box(env.encrypt_binary("bench", ctx, &pt).await.unwrap());
        }
        rates.push(chunk as f64 / t.elapsed().as_secs_f64());
    }
    (median(rates), t_all.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = &args[1];
    let key = &args[2];
    let n: usize = args.get(3).map_or(100_000, |s| s.parse().unwrap());
    let provider: Arc<dyn Provider> = Arc::new(
        AwsKmsProvider::new(AwsKmsConfig {
            key_id: key.clone(),
            region: "us-east-1".into(),
            endpoint: Some(endpoint.clone()),
            credentials: AwsCredentials::new("testing", "testing", None),
            retry: RetryPolicy::default(),
        })
        .unwrap(),
    );
    let ctx: Context = [("tenant", "acme"), ("table", "orders")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let limits = CacheLimits::new(Duration::from_secs(300), 1000, 1 << 30, 64).unwrap();
    let cached = Envelope::new(vec![provider.clone()])
        .unwrap()
        .with_cache(Arc::new(CachingMaterials::new(limits)));
    let (c_rate, c_secs) = run(&cached, n, &ctx).await;
    let uncached = Envelope::new(vec![provider]).unwrap();
    let (u_rate, u_secs) = run(&uncached, n, &ctx).await;
    let cs = cached.stats();
    println!(
        "{}",
        serde_json::json!({
            "n": n,
            "cache_max_messages": limits.max_messages,
            "cached_encrypts_per_sec_median": c_rate,
            "cached_total_secs": c_secs,
            "cached_provider_calls": cs.provider_calls,
            "cached_hits": cs.cache.encrypt_hits,
            "cached_misses": cs.cache.encrypt_misses,
            "uncached_encrypts_per_sec_median": u_rate,
            "uncached_total_secs": u_secs,
            "uncached_provider_calls": uncached.stats().provider_calls,
        })
    );
}
