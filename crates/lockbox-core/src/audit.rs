//! Tamper-evident audit trails: a forward-secure HMAC chain.
//!
//! Every entry is a JSON object carrying `seq` (0, 1, 2, ...) and `mac`:
//!
//! ```text
//! mac_i = HMAC-SHA256(k_i, "lockbox/v1/audit" ‖ mac_{i-1} ‖ canonical(entry_i without "mac"))
//! k_{i+1} = HMAC-SHA256(k_i, "lockbox/v1/audit/ratchet")      (k_i is then wiped)
//! ```
//!
//! with `mac_{-1}` = 32 zero bytes and `canonical` = compact JSON with keys
//! sorted. Because each entry's MAC covers the previous MAC, editing,
//! deleting, inserting or reordering any entry breaks the chain at that
//! point, and [`verify`] names the first entry that does not verify. Because
//! the key ratchets forward and old keys are wiped, someone who steals the
//! writer's *current* key cannot rewrite earlier entries (forward security,
//! as in Acra's and Schneier–Kelsey's secure logs). The verifier holds the
//! initial key `k_0`.
//!
//! Truncation at the end leaves a valid prefix; it is detected by comparing
//! the verified head (count and last MAC) with an anchor kept elsewhere (the
//! store, a monitoring system): [`VerifyReport`] gives both, and
//! [`verify_with_anchor`] checks them.

use serde_json::{Map, Value};
use zeroize::Zeroize;

use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Error, Result};
use crate::kdf::{hmac_sha256, hmac_sha256_parts};
use crate::secret::{ct_eq, SecretBytes};

const MAC_LABEL: &[u8] = b"lockbox/v1/audit";
const RATCHET_LABEL: &[u8] = b"lockbox/v1/audit/ratchet";

/// The writer's side of a chain: the current key, the next sequence number
/// and the previous MAC. Key material is wiped as the chain moves on.
pub struct AuditChain {
    key: [u8; 32],
    seq: u64,
    prev: [u8; 32],
}

impl std::fmt::Debug for AuditChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditChain")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Drop for AuditChain {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

fn canonical(entry: &Map<String, Value>) -> Result<Vec<u8>> {
    let mut m = entry.clone();
    m.remove("mac");
    // serde_json's Map keeps keys sorted (no `preserve_order`), so this is canonical.
    serde_json::to_vec(&Value::Object(m))
        .map_err(|_| Error::Malformed("audit entry does not serialize"))
}

impl AuditChain {
    /// A new chain from the initial key `k_0` (at least 32 bytes).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a short key.
    pub fn new(initial_key: &SecretBytes) -> Result<Self> {
        if initial_key.len() < 32 {
            return Err(Error::InvalidKey(
                "the audit key must be at least 32 bytes".into(),
            ));
        }
        Ok(AuditChain {
            key: hmac_sha256(initial_key.expose_secret(), b"lockbox/v1/audit/k0"),
            seq: 0,
            prev: [0u8; 32],
        })
    }

    /// The next sequence number.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Seal `entry` (a JSON object; `seq` and `mac` are set here) and return
    /// it as one JSON line, without the newline. The key then ratchets.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `entry` is not an object.
    pub fn append(&mut self, entry: Value) -> Result<String> {
        let Value::Object(mut m) = entry else {
            return Err(Error::InvalidArgument(
                "an audit entry must be a JSON object".into(),
            ));
        };
        m.insert("seq".into(), Value::from(self.seq));
        m.remove("mac");
        let body = canonical(&m)?;
        let mac = hmac_sha256_parts(&self.key, &[MAC_LABEL, &self.prev, &body]);
        m.insert("mac".into(), Value::from(b64url_encode(&mac)));
        let line = serde_json::to_string(&Value::Object(m))
            .map_err(|_| Error::Malformed("audit entry does not serialize"))?;
        let mut next = hmac_sha256(&self.key, RATCHET_LABEL);
        self.key.copy_from_slice(&next);
        next.zeroize();
        self.prev = mac;
        self.seq += 1;
        Ok(line)
    }
}

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries verified.
    pub entries: u64,
    /// MAC of the last entry (base64url), the chain head.
    pub head: String,
}

/// Where and why a chain stopped verifying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    /// 1-based line number of the first bad entry.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audit trail broken at line {}: {}",
            self.line, self.reason
        )
    }
}

/// Verify a chain of JSON lines (empty lines are skipped) from the initial key.
///
/// # Errors
/// [`VerifyFailure`] naming the first entry that was edited, inserted,
/// deleted before, reordered or malformed.
pub fn verify<'a>(
    initial_key: &SecretBytes,
    lines: impl IntoIterator<Item = &'a str>,
) -> std::result::Result<VerifyReport, VerifyFailure> {
    let fail = |line: usize, reason: &str| VerifyFailure {
        line,
        reason: reason.to_owned(),
    };
    let mut chain = AuditChain::new(initial_key).map_err(|e| fail(0, &e.to_string()))?;
    let mut head = String::new();
    for (i, line) in lines.into_iter().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|_| fail(n, "not a JSON object"))?;
        let Value::Object(m) = v else {
            return Err(fail(n, "not a JSON object"));
        };
        let seq = m
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| fail(n, "no seq"))?;
        if seq != chain.seq {
            return Err(fail(
                n,
                &format!("sequence {seq} where {} was expected (an entry was deleted, inserted or moved)", chain.seq),
            ));
        }
        let mac = m
            .get("mac")
            .and_then(Value::as_str)
            .and_then(|s| b64url_decode(s).ok())
            .ok_or_else(|| fail(n, "no valid mac"))?;
        let body = canonical(&m).map_err(|_| fail(n, "cannot canonicalize"))?;
        let expect = hmac_sha256_parts(&chain.key, &[MAC_LABEL, &chain.prev, &body]);
        if !ct_eq(&expect, &mac) {
            return Err(fail(
                n,
                "MAC does not verify (the entry or one before it was modified)",
            ));
        }
        let mut next = hmac_sha256(&chain.key, RATCHET_LABEL);
        chain.key.copy_from_slice(&next);
        next.zeroize();
        chain.prev = expect;
        chain.seq += 1;
        head = b64url_encode(&expect);
    }
    Ok(VerifyReport {
        entries: chain.seq,
        head,
    })
}

/// [`verify`], then check the result against an anchor (entry count and
/// head kept elsewhere): catches truncation at the end.
///
/// # Errors
/// As [`verify`], plus a failure if fewer entries or another head are found.
pub fn verify_with_anchor<'a>(
    initial_key: &SecretBytes,
    lines: impl IntoIterator<Item = &'a str>,
    anchor_entries: u64,
    anchor_head: &str,
) -> std::result::Result<VerifyReport, VerifyFailure> {
    let r = verify(initial_key, lines)?;
    if r.entries < anchor_entries {
        return Err(VerifyFailure {
            line: usize::try_from(r.entries)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
            reason: format!(
                "truncated: {} entries where the anchor records {anchor_entries}",
                r.entries
            ),
        });
    }
    if r.entries == anchor_entries && !ct_eq(r.head.as_bytes(), anchor_head.as_bytes()) {
        return Err(VerifyFailure {
            line: usize::try_from(r.entries).unwrap_or(usize::MAX),
            reason: "the last entry differs from the anchor".into(),
        });
    }
    Ok(r)
}
