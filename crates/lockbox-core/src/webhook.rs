//! Signed webhook deliveries (Lockbox's events: key rotation, failures...).
//!
//! A delivery carries three headers:
//!
//! ```text
//! X-Lockbox-Delivery:  <delivery id>
//! X-Lockbox-Timestamp: <unix seconds>
//! X-Lockbox-Signature: v1=<hex HMAC-SHA256(secret, timestamp "." delivery id "." body)>
//! ```
//!
//! A receiver checks the MAC in constant time, refuses timestamps outside a
//! tolerance (stale or future deliveries) and refuses a delivery id it has
//! already accepted within that window (replays): [`Verifier`].

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::kdf::hmac_sha256_parts;
use crate::secret::{ct_eq, SecretBytes};

/// The `X-Lockbox-Signature` value for a delivery.
#[must_use]
pub fn sign(secret: &[u8], timestamp: i64, delivery_id: &str, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256_parts(
        secret,
        &[ts.as_bytes(), b".", delivery_id.as_bytes(), b".", body],
    );
    format!("v1={}", crate::encoding::hex_encode(&mac))
}

/// Checks deliveries: signature, freshness, and no replay.
pub struct Verifier {
    secret: SecretBytes,
    tolerance: i64,
    seen: HashMap<String, i64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `secret` accepting timestamps within `tolerance`
    /// seconds of now (300 is usual).
    #[must_use]
    pub fn new(secret: SecretBytes, tolerance: i64) -> Self {
        Verifier {
            secret,
            tolerance: tolerance.max(1),
            seen: HashMap::new(),
        }
    }

    /// Remembers delivery ids already accepted (e.g. loaded from disk).
    pub fn remember(&mut self, delivery_id: &str, timestamp: i64) {
        self.seen.insert(delivery_id.to_owned(), timestamp);
    }

    /// The delivery ids accepted within the window (to persist them).
    #[must_use]
    pub fn seen(&self) -> Vec<(String, i64)> {
        self.seen.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Verifies one delivery at time `now`; on success remembers its id.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed header;
    /// [`Error::AuthenticationFailed`] for a wrong signature;
    /// [`Error::Expired`]-style refusals as [`Error::InvalidArgument`] naming
    /// "stale", "from the future" or "replayed".
    pub fn verify(
        &mut self,
        signature: &str,
        timestamp: &str,
        delivery_id: &str,
        body: &[u8],
        now: i64,
    ) -> Result<()> {
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| Error::InvalidArgument("the timestamp is not a number".into()))?;
        let given = signature
            .trim()
            .strip_prefix("v1=")
            .and_then(|h| crate::encoding::hex_decode(h).ok())
            .ok_or_else(|| Error::InvalidArgument("the signature is not v1=<hex>".into()))?;
        if delivery_id.is_empty() || delivery_id.len() > 128 {
            return Err(Error::InvalidArgument("bad delivery id".into()));
        }
        let ts_s = ts.to_string();
        let mac = hmac_sha256_parts(
            self.secret.expose_secret(),
            &[ts_s.as_bytes(), b".", delivery_id.as_bytes(), b".", body],
        );
        if !ct_eq(&mac, &given) {
            return Err(Error::AuthenticationFailed);
        }
        if now - ts > self.tolerance {
            return Err(Error::InvalidArgument(format!(
                "stale delivery: signed {}s ago (tolerance {}s)",
                now - ts,
                self.tolerance
            )));
        }
        if ts - now > self.tolerance {
            return Err(Error::InvalidArgument(
                "delivery from the future (check clocks)".into(),
            ));
        }
        let horizon = now - 2 * self.tolerance;
        self.seen.retain(|_, t| *t >= horizon);
        if self.seen.contains_key(delivery_id) {
            return Err(Error::InvalidArgument(format!(
                "replayed delivery {delivery_id}"
            )));
        }
        self.seen.insert(delivery_id.to_owned(), ts);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_stale_future_tampered_and_replayed_deliveries() {
        let secret = b"whsec-test-secret-0123456789abcdef";
        let body = br#"{"event":"KEY_ROTATION","key":"k"}"#;
        let now = 1_800_000_000;
        let sig = sign(secret, now, "d1", body);
        let mut v = Verifier::new(SecretBytes::from_slice(secret), 300);
        v.verify(&sig, &now.to_string(), "d1", body, now + 10)
            .unwrap();
        // Replay of the same delivery.
        let e = v
            .verify(&sig, &now.to_string(), "d1", body, now + 20)
            .unwrap_err();
        assert!(e.to_string().contains("replayed"), "{e}");
        // Tampered body, id or timestamp.
        let sig2 = sign(secret, now, "d2", body);
        assert_eq!(
            v.verify(&sig2, &now.to_string(), "d2", b"{}", now),
            Err(Error::AuthenticationFailed)
        );
        assert_eq!(
            v.verify(&sig2, &now.to_string(), "d3", body, now),
            Err(Error::AuthenticationFailed)
        );
        assert_eq!(
            v.verify(&sig2, &(now + 1).to_string(), "d2", body, now),
            Err(Error::AuthenticationFailed)
        );
        // Stale and future.
        let old = sign(secret, now - 1000, "d4", body);
        let e = v
            .verify(&old, &(now - 1000).to_string(), "d4", body, now)
            .unwrap_err();
        assert!(e.to_string().contains("stale"), "{e}");
        let fut = sign(secret, now + 1000, "d5", body);
        let e = v
            .verify(&fut, &(now + 1000).to_string(), "d5", body, now)
            .unwrap_err();
        assert!(e.to_string().contains("future"), "{e}");
        // Wrong secret; malformed headers.
        let other = sign(b"another-secret", now, "d6", body);
        assert_eq!(
            v.verify(&other, &now.to_string(), "d6", body, now),
            Err(Error::AuthenticationFailed)
        );
        assert!(v
            .verify("v2=00", &now.to_string(), "d7", body, now)
            .is_err());
        assert!(v.verify(&sig2, "yesterday", "d2", body, now).is_err());
    }
}
