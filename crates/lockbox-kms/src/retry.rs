//! Bounded retries with exponential backoff and full jitter, and a
//! per-attempt timeout, for every remote provider call.

use std::future::Future;
use std::time::Duration;

use crate::error::{KmsError, Result};

/// How a remote call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled each time (before jitter).
    pub base_delay: Duration,
    /// Cap of one backoff.
    pub max_delay: Duration,
    /// Limit of one attempt (connect, send, answer).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 50 ms doubling to at most 1 s, 5 s per attempt.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The outcome of one failed attempt.
#[derive(Debug)]
pub enum Attempt {
    /// Worth retrying (network error, timeout, 5xx, throttling); the reason.
    Retry(String),
    /// Final: retrying cannot help.
    Fail(KmsError),
}

impl RetryPolicy {
    /// The backoff before attempt `n + 1` (n ≥ 1): uniform in
    /// `[0, min(max_delay, base_delay · 2^(n-1))]` ("full jitter").
    #[must_use]
    pub fn backoff(&self, n: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << n.saturating_sub(1).min(20))
            .min(self.max_delay);
        let r = f64::from(lockbox_core::random_u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
        exp.mul_f64(r)
    }

    /// Run `call` until it succeeds, fails finally, or the attempts run out.
    ///
    /// # Errors
    /// The final error, or [`KmsError::Unavailable`] naming `provider`, the
    /// attempts made and the last reason.
    pub async fn run<T, F, Fut>(&self, provider: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Attempt>>,
    {
        let attempts = self.max_attempts.max(1);
        let mut last = String::new();
        for n in 1..=attempts {
            match tokio::time::timeout(self.timeout, call()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(Attempt::Fail(e))) => return Err(e),
                Ok(Err(Attempt::Retry(why))) => last = why,
                Err(_) => last = format!("no answer within {:?}", self.timeout),
            }
            if n < attempts {
                tokio::time::sleep(self.backoff(n)).await;
            }
        }
        Err(KmsError::Unavailable {
            provider: provider.to_owned(),
            attempts,
            last,
        })
    }
}

/// Classify an HTTP transport error (always retryable: the request may not
/// have arrived, and every provider call here is idempotent or harmless to repeat).
pub(crate) fn transport(e: &reqwest::Error) -> Attempt {
    let what = if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "transport error"
    };
    Attempt::Retry(format!("{what}: {}", without_url(e)))
}

/// A reqwest error's text without the URL (which may carry a query string).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(x) = src {
        s = x.to_string();
        src = x.source();
    }
    if s.is_empty() {
        "request failed".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(35),
            timeout: Duration::from_secs(1),
        };
        for n in 1..40 {
            assert!(p.backoff(n) <= Duration::from_millis(35));
        }
        assert!(p.backoff(1) <= Duration::from_millis(10));
    }

    #[tokio::test]
    async fn retries_then_reports() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            timeout: Duration::from_secs(1),
        };
        let mut calls = 0;
        let r: Result<()> = p
            .run("test", || {
                calls += 1;
                async { Err(Attempt::Retry("boom".into())) }
            })
            .await;
        assert_eq!(calls, 3);
        assert!(matches!(r, Err(KmsError::Unavailable { attempts: 3, .. })));
        let mut calls = 0;
        let r: Result<u8> = p
            .run("test", || {
                calls += 1;
                let c = calls;
                async move {
                    if c < 2 {
                        Err(Attempt::Retry("x".into()))
                    } else {
                        Ok(7)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 7);
    }
}
