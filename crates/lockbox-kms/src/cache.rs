//! The data-key cache, after the AWS Encryption SDK's caching
//! cryptographic materials manager.
//!
//! Encrypt side: a data key is reused for at most `max_age`,
//! `max_messages` messages and `max_bytes` plaintext bytes, in one
//! partition: (tenant, canonical context, provider set). A key is never
//! shared across tenants or contexts. Decrypt side: unwrapped data keys,
//! keyed by (tenant, the envelope header's context and wrapped keys), under
//! the same bounds. Both hold at most `capacity` entries (the oldest is
//! evicted first). Keys are [`SecretBytes`], wiped when evicted or dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lockbox_core::SecretBytes;

use crate::error::{KmsError, Result};
use crate::WrappedKey;

/// The bounds of a cache. All are mandatory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheLimits {
    /// A data key is used for at most this long after it was made or unwrapped.
    pub max_age: Duration,
    /// ... for at most this many messages (at most 2³²).
    pub max_messages: u64,
    /// ... for at most this many plaintext bytes.
    pub max_bytes: u64,
    /// Entries per side (encrypt, decrypt).
    pub capacity: usize,
}

impl CacheLimits {
    /// Checked bounds.
    ///
    /// # Errors
    /// [`KmsError::Config`] for a zero bound or more than 2³² messages.
    pub fn new(
        max_age: Duration,
        max_messages: u64,
        max_bytes: u64,
        capacity: usize,
    ) -> Result<Self> {
        if max_age.is_zero() || max_messages == 0 || max_bytes == 0 || capacity == 0 {
            return Err(KmsError::Config(
                "cache limits max_age, max_messages, max_bytes and capacity must all be > 0".into(),
            ));
        }
        if max_messages > 1 << 32 {
            return Err(KmsError::Config(
                "max_messages is at most 2^32 (random 96-bit nonces under one data key)".into(),
            ));
        }
        Ok(CacheLimits {
            max_age,
            max_messages,
            max_bytes,
            capacity,
        })
    }
}

/// Counters of a cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Encryptions served with a cached data key.
    pub encrypt_hits: u64,
    /// Encryptions that needed a new data key.
    pub encrypt_misses: u64,
    /// Decryptions served with a cached unwrapped data key.
    pub decrypt_hits: u64,
    /// Decryptions that needed an unwrap.
    pub decrypt_misses: u64,
    /// Entries removed for age, usage, capacity or a tenant purge.
    pub evictions: u64,
}

struct Entry {
    key: SecretBytes,
    wrapped: Vec<WrappedKey>,
    created: Instant,
    messages: u64,
    bytes: u64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Slot {
    tenant: String,
    id: Vec<u8>,
}

/// The data-key cache (both sides). Share one per process with `Arc`.
pub struct CachingMaterials {
    limits: CacheLimits,
    enc: Mutex<HashMap<Slot, Entry>>,
    dec: Mutex<HashMap<Slot, Entry>>,
    encrypt_hits: AtomicU64,
    encrypt_misses: AtomicU64,
    decrypt_hits: AtomicU64,
    decrypt_misses: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for CachingMaterials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingMaterials")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of
    // counters; the map itself is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CachingMaterials {
    /// An empty cache with `limits`.
    #[must_use]
    pub fn new(limits: CacheLimits) -> Self {
        CachingMaterials {
            limits,
            enc: Mutex::new(HashMap::new()),
            dec: Mutex::new(HashMap::new()),
            encrypt_hits: AtomicU64::new(0),
            encrypt_misses: AtomicU64::new(0),
            decrypt_hits: AtomicU64::new(0),
            decrypt_misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// The limits.
    #[must_use]
    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            encrypt_hits: self.encrypt_hits.load(Ordering::Relaxed),
            encrypt_misses: self.encrypt_misses.load(Ordering::Relaxed),
            decrypt_hits: self.decrypt_hits.load(Ordering::Relaxed),
            decrypt_misses: self.decrypt_misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// Entries held (encrypt side, decrypt side).
    #[must_use]
    pub fn len(&self) -> (usize, usize) {
        (lock(&self.enc).len(), lock(&self.dec).len())
    }

    /// Whether both sides are empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    /// Take one use of the entry at `slot` for `n` bytes, if it stays within
    /// the bounds; an entry past them is evicted.
    fn take(
        &self,
        map: &Mutex<HashMap<Slot, Entry>>,
        slot: &Slot,
        n: u64,
    ) -> Option<(SecretBytes, Vec<WrappedKey>)> {
        let mut m = lock(map);
        let e = m.get_mut(slot)?;
        let l = &self.limits;
        let fits = e.created.elapsed() < l.max_age
            && e.messages < l.max_messages
            && e.bytes.saturating_add(n) <= l.max_bytes;
        if !fits {
            m.remove(slot);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        e.messages += 1;
        e.bytes += n;
        Some((e.key.clone(), e.wrapped.clone()))
    }

    fn put(
        &self,
        map: &Mutex<HashMap<Slot, Entry>>,
        slot: Slot,
        key: &SecretBytes,
        wrapped: &[WrappedKey],
        n: u64,
    ) {
        if n > self.limits.max_bytes || self.limits.max_messages < 1 {
            return;
        }
        let mut m = lock(map);
        let max_age = self.limits.max_age;
        let before = m.len();
        m.retain(|_, e| e.created.elapsed() < max_age);
        let mut evicted = before - m.len();
        while m.len() >= self.limits.capacity {
            let oldest = m
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    m.remove(&k);
                    evicted += 1;
                }
                None => break,
            }
        }
        self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        m.insert(
            slot,
            Entry {
                key: key.clone(),
                wrapped: wrapped.to_vec(),
                created: Instant::now(),
                messages: 1,
                bytes: n,
            },
        );
    }

    /// A cached data key (and its wrapped forms) for one more message of
    /// `n` bytes in this partition, or `None` (a miss).
    pub(crate) fn get_encrypt(
        &self,
        tenant: &str,
        partition: &[u8],
        n: usize,
    ) -> Option<(SecretBytes, Vec<WrappedKey>)> {
        let slot = Slot {
            tenant: tenant.to_owned(),
            id: partition.to_vec(),
        };
        let r = self.take(&self.enc, &slot, n as u64);
        let c = if r.is_some() {
            &self.encrypt_hits
        } else {
            &self.encrypt_misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Cache a new data key, its first message of `n` bytes counted.
    pub(crate) fn put_encrypt(
        &self,
        tenant: &str,
        partition: &[u8],
        key: &SecretBytes,
        wrapped: &[WrappedKey],
        n: usize,
    ) {
        let slot = Slot {
            tenant: tenant.to_owned(),
            id: partition.to_vec(),
        };
        self.put(&self.enc, slot, key, wrapped, n as u64);
    }

    /// A cached unwrapped data key for the envelope header `id`.
    pub(crate) fn get_decrypt(&self, tenant: &str, id: &[u8], n: usize) -> Option<SecretBytes> {
        let slot = Slot {
            tenant: tenant.to_owned(),
            id: id.to_vec(),
        };
        let r = self.take(&self.dec, &slot, n as u64).map(|(k, _)| k);
        let c = if r.is_some() {
            &self.decrypt_hits
        } else {
            &self.decrypt_misses
        };
        c.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Cache an unwrapped data key for header `id`.
    pub(crate) fn put_decrypt(&self, tenant: &str, id: &[u8], key: &SecretBytes, n: usize) {
        let slot = Slot {
            tenant: tenant.to_owned(),
            id: id.to_vec(),
        };
        self.put(&self.dec, slot, key, &[], n as u64);
    }

    /// Drop (and wipe) every entry of `tenant`, both sides. Returns how
    /// many were dropped. Crypto-shredding calls this after destroying the
    /// tenant's KEK, so no cached data key outlives it.
    pub fn purge_tenant(&self, tenant: &str) -> usize {
        let mut n = 0;
        for map in [&self.enc, &self.dec] {
            let mut m = lock(map);
            let before = m.len();
            m.retain(|s, _| s.tenant != tenant);
            n += before - m.len();
        }
        self.evictions.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Drop (and wipe) everything.
    pub fn clear(&self) {
        let mut n = 0;
        for map in [&self.enc, &self.dec] {
            let mut m = lock(map);
            n += m.len();
            m.clear();
        }
        self.evictions.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wk() -> Vec<WrappedKey> {
        vec![WrappedKey {
            provider: "p".into(),
            key_id: "k".into(),
            wrapped: vec![1],
        }]
    }

    #[test]
    fn limits_are_mandatory() {
        assert!(CacheLimits::new(Duration::ZERO, 1, 1, 1).is_err());
        assert!(CacheLimits::new(Duration::from_secs(1), 0, 1, 1).is_err());
        assert!(CacheLimits::new(Duration::from_secs(1), 1, 0, 1).is_err());
        assert!(CacheLimits::new(Duration::from_secs(1), 1, 1, 0).is_err());
        assert!(CacheLimits::new(Duration::from_secs(1), (1 << 32) + 1, 1, 1).is_err());
    }

    #[test]
    fn message_byte_and_age_bounds() {
        let c =
            CachingMaterials::new(CacheLimits::new(Duration::from_millis(200), 3, 100, 4).unwrap());
        let k = SecretBytes::random(32).unwrap();
        assert!(c.get_encrypt("t", b"ctx", 10).is_none());
        c.put_encrypt("t", b"ctx", &k, &wk(), 10);
        // 2 more messages fit (3 in all), the 4th does not.
        assert_eq!(c.get_encrypt("t", b"ctx", 10).unwrap().0, k);
        assert_eq!(c.get_encrypt("t", b"ctx", 10).unwrap().0, k);
        assert!(c.get_encrypt("t", b"ctx", 10).is_none());
        // Bytes: 95 + 10 > 100.
        c.put_encrypt("t", b"ctx", &k, &wk(), 95);
        assert!(c.get_encrypt("t", b"ctx", 10).is_none());
        // Too big to cache at all.
        c.put_encrypt("t", b"ctx", &k, &wk(), 101);
        assert!(c.get_encrypt("t", b"ctx", 1).is_none());
        // Partitions: another tenant or context never sees the key.
        c.put_encrypt("t", b"ctx", &k, &wk(), 1);
        assert!(c.get_encrypt("u", b"ctx", 1).is_none());
        assert!(c.get_encrypt("t", b"ctx2", 1).is_none());
        assert!(c.get_encrypt("t", b"ctx", 1).is_some());
        // Age.
        std::thread::sleep(Duration::from_millis(250));
        assert!(c.get_encrypt("t", b"ctx", 1).is_none());
    }

    #[test]
    fn capacity_and_purge() {
        let c =
            CachingMaterials::new(CacheLimits::new(Duration::from_secs(60), 100, 1000, 2).unwrap());
        let k = SecretBytes::random(32).unwrap();
        c.put_encrypt("a", b"1", &k, &wk(), 1);
        std::thread::sleep(Duration::from_millis(2));
        c.put_encrypt("a", b"2", &k, &wk(), 1);
        std::thread::sleep(Duration::from_millis(2));
        c.put_encrypt("b", b"3", &k, &wk(), 1);
        assert_eq!(c.len().0, 2);
        assert!(c.get_encrypt("a", b"1", 1).is_none(), "oldest evicted");
        c.put_decrypt("a", b"h", &k, 1);
        assert_eq!(c.get_decrypt("a", b"h", 1).unwrap(), k);
        assert_eq!(c.purge_tenant("a"), 2);
        assert!(c.get_decrypt("a", b"h", 1).is_none());
        assert!(c.get_encrypt("b", b"3", 1).is_some());
        let s = c.stats();
        assert_eq!(s.decrypt_hits, 1);
        assert_eq!(s.decrypt_misses, 1);
        assert!(s.evictions >= 3);
    }
}
