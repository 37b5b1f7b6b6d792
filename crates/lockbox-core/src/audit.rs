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
use crate::kdf::{hmac_sha256, hmac_sha256_parts, hmac_sha256_parts_and};
use crate::secret::{ct_eq, SecretBytes};

const MAC_LABEL: &[u8] = b"lockbox/v1/audit";

fn b64url_encode_into_vec(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b64url_encode(data).as_bytes());
}
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

    /// The MAC of the last entry appended (base64url; zeros before any).
    #[must_use]
    pub fn head(&self) -> String {
        b64url_encode(&self.prev)
    }

    /// Seal an entry given as its canonical JSON: an object, compact, keys
    /// sorted, `seq` equal to [`AuditChain::next_seq`], no `mac` (what a
    /// `#[derive(Serialize)]` struct with fields in alphabetical order
    /// produces). Returns the line with `mac` added last. This is the fast
    /// path of [`AuditChain::append`]; verifiers re-canonicalize, so a body
    /// that is not canonical fails verification at this entry.
    ///
    /// # Errors
    /// [`Error::Malformed`] if `body` is not a JSON object's text.
    pub fn append_canonical(&mut self, body: Vec<u8>) -> Result<String> {
        let mut out = Vec::with_capacity(body.len() + 56);
        self.seal_into(&body, &mut out)?;
        String::from_utf8(out).map_err(|_| Error::Malformed("audit entry is not UTF-8"))
    }

    /// As [`AuditChain::append_canonical`], appending the sealed line
    /// (without a newline) to `out` (no allocation when `out` has room).
    ///
    /// # Errors
    /// [`Error::Malformed`] if `body` is not a JSON object's text.
    pub fn seal_into(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.seal_parts_into(&[body], out)
    }

    /// As [`AuditChain::seal_into`], with the body given as consecutive
    /// parts (their concatenation is the canonical JSON): a writer can put
    /// fields into a serialized entry without copying it.
    ///
    /// # Errors
    /// [`Error::Malformed`] if the parts are not a JSON object's text.
    pub fn seal_parts_into(&mut self, body: &[&[u8]], out: &mut Vec<u8>) -> Result<()> {
        let first = body.iter().find_map(|p| p.first());
        let last = body.iter().rev().find_map(|p| p.last());
        let len: usize = body.iter().map(|p| p.len()).sum();
        if first != Some(&b'{') || last != Some(&b'}') || len < 2 {
            return Err(Error::Malformed("audit entry is not a JSON object"));
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(body.len() + 2);
        parts.push(MAC_LABEL);
        parts.push(&self.prev);
        parts.extend_from_slice(body);
        let (mac, mut next) = hmac_sha256_parts_and(&self.key, &parts, RATCHET_LABEL);
        out.reserve(len + 56);
        for p in body {
            out.extend_from_slice(p);
        }
        out.pop();
        if len > 2 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"mac\":\"");
        b64url_encode_into_vec(&mac, out);
        out.extend_from_slice(b"\"}");
        self.key.copy_from_slice(&next);
        next.zeroize();
        self.prev = mac;
        self.seq += 1;
        Ok(())
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
        // serde_json's Map keeps keys sorted: this is the canonical form.
        let body = serde_json::to_vec(&Value::Object(m))
            .map_err(|_| Error::Malformed("audit entry does not serialize"))?;
        self.append_canonical(body)
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
        let (expect, mut next) =
            hmac_sha256_parts_and(&chain.key, &[MAC_LABEL, &chain.prev, &body], RATCHET_LABEL);
        if !ct_eq(&expect, &mac) {
            next.zeroize();
            return Err(fail(
                n,
                "MAC does not verify (the entry or one before it was modified)",
            ));
        }
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

/// One verified segment of a trail (a segment is one writer's run: each
/// server start, and each recovery from a failed write, begins a new one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentReport {
    /// Segment id (the entries' `seg`).
    pub segment: String,
    /// Entries verified in it.
    pub entries: u64,
    /// MAC of its last entry (base64url).
    pub head: String,
    /// Where it starts (`file:line`).
    pub starts_at: String,
}

/// Where and why a trail stopped verifying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrailFailure {
    /// `file:line` of the first bad entry (or of the end, for truncation).
    pub at: String,
    /// The entry's `seq`, when it has one.
    pub seq: Option<u64>,
    /// What is wrong there.
    pub reason: String,
}

impl std::fmt::Display for TrailFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(s) => write!(
                f,
                "audit trail broken at {} (seq {s}): {}",
                self.at, self.reason
            ),
            None => write!(f, "audit trail broken at {}: {}", self.at, self.reason),
        }
    }
}

/// The key a segment's chain starts from, derived from the server's audit
/// key: `HMAC-SHA256(audit_key, "lockbox/v1/audit/segment/" ‖ segment)`.
#[must_use]
pub fn segment_key(audit_key: &SecretBytes, segment: &str) -> SecretBytes {
    SecretBytes::new(
        hmac_sha256_parts(
            audit_key.expose_secret(),
            &[b"lockbox/v1/audit/segment/", segment.as_bytes()],
        )
        .to_vec(),
    )
}

/// A segment's latest state, kept apart from the trail (in the store) to
/// catch truncation: count of entries and head MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// Segment id.
    pub segment: String,
    /// Entries written in it.
    pub entries: u64,
    /// MAC of its last entry (base64url).
    pub head: String,
}

struct Verifier {
    segment: String,
    key: [u8; 32],
    prev: [u8; 32],
    seq: u64,
    starts_at: String,
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// Verifies a trail of segments: JSON lines given as `(file, line, text)`
/// in order (rotated files oldest first). Every entry has `seg` and `seq`;
/// a segment's first entry (`seq` 0, `type` `segment`) names the previous
/// segment's last entry in `prev`, so segments are chained too. Then every
/// anchor must be matched: a missing segment, or fewer entries than its
/// anchor records, is truncation. Without `check_links` (a store shared by
/// several servers), segments are verified each on its own.
///
/// # Errors
/// [`TrailFailure`] naming the first entry (file and line) that was edited,
/// deleted, inserted, reordered or malformed, or the truncation.
pub fn verify_trail<'a>(
    audit_key: &SecretBytes,
    lines: impl IntoIterator<Item = (&'a str, usize, &'a str)>,
    anchors: &[Anchor],
    check_links: bool,
) -> std::result::Result<Vec<SegmentReport>, TrailFailure> {
    let mut done: Vec<SegmentReport> = Vec::new();
    let mut cur: Option<Verifier> = None;
    let mut last_at = String::from("start");
    for (file, n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{file}:{n}");
        last_at.clone_from(&at);
        let fail = |seq: Option<u64>, reason: String| TrailFailure {
            at: at.clone(),
            seq,
            reason,
        };
        let m = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => m,
            _ => return Err(fail(None, "not a JSON object".into())),
        };
        let seq = m.get("seq").and_then(Value::as_u64);
        let Some(seq) = seq else {
            return Err(fail(None, "no seq".into()));
        };
        let Some(seg) = m.get("seg").and_then(Value::as_str) else {
            return Err(fail(Some(seq), "no seg".into()));
        };
        if cur.as_ref().map_or(true, |c| c.segment != seg) {
            if let Some(c) = cur.take() {
                done.push(SegmentReport {
                    segment: c.segment.clone(),
                    entries: c.seq,
                    head: b64url_encode(&c.prev),
                    starts_at: c.starts_at.clone(),
                });
            }
            if seq != 0 {
                return Err(fail(
                    Some(seq),
                    format!("segment {seg} starts at seq {seq}, not 0 (its earlier entries were deleted)"),
                ));
            }
            if m.get("type").and_then(Value::as_str) != Some("segment") {
                return Err(fail(
                    Some(seq),
                    "a segment must start with its segment entry".into(),
                ));
            }
            if done.iter().any(|d| d.segment == seg) {
                return Err(fail(
                    Some(seq),
                    format!("segment {seg} appears twice (entries were moved)"),
                ));
            }
            if let Some(last) = done.last().filter(|_| check_links) {
                let link = m.get("prev");
                let ok = link.and_then(|l| l.get("seg")).and_then(Value::as_str)
                    == Some(last.segment.as_str())
                    && link.and_then(|l| l.get("seq")).and_then(Value::as_u64)
                        == last.entries.checked_sub(1)
                    && link.and_then(|l| l.get("mac")).and_then(Value::as_str)
                        == Some(last.head.as_str());
                if !ok {
                    return Err(fail(
                        Some(seq),
                        format!(
                            "segment {seg} does not follow segment {} (entries between them were deleted or reordered)",
                            last.segment
                        ),
                    ));
                }
            }
            let k0 = segment_key(audit_key, seg);
            cur = Some(Verifier {
                segment: seg.to_owned(),
                key: hmac_sha256(k0.expose_secret(), b"lockbox/v1/audit/k0"),
                prev: [0u8; 32],
                seq: 0,
                starts_at: at.clone(),
            });
        }
        let Some(c) = cur.as_mut() else {
            return Err(fail(Some(seq), "internal: no segment".into()));
        };
        if seq != c.seq {
            return Err(fail(
                Some(seq),
                format!(
                    "sequence {seq} where {} was expected (an entry was deleted, inserted or moved)",
                    c.seq
                ),
            ));
        }
        let mac = m
            .get("mac")
            .and_then(Value::as_str)
            .and_then(|s| b64url_decode(s).ok())
            .ok_or_else(|| fail(Some(seq), "no valid mac".into()))?;
        let body = canonical(&m).map_err(|_| fail(Some(seq), "cannot canonicalize".into()))?;
        let expect = hmac_sha256_parts(&c.key, &[MAC_LABEL, &c.prev, &body]);
        if !ct_eq(&expect, &mac) {
            return Err(fail(
                Some(seq),
                "MAC does not verify (this entry was modified, or one before it)".into(),
            ));
        }
        let mut next = hmac_sha256(&c.key, RATCHET_LABEL);
        c.key.copy_from_slice(&next);
        next.zeroize();
        c.prev = expect;
        c.seq += 1;
    }
    if let Some(c) = cur.take() {
        done.push(SegmentReport {
            segment: c.segment.clone(),
            entries: c.seq,
            head: b64url_encode(&c.prev),
            starts_at: c.starts_at.clone(),
        });
    }
    for a in anchors {
        let end = |reason: String| TrailFailure {
            at: last_at.clone(),
            seq: None,
            reason,
        };
        match done.iter().find(|d| d.segment == a.segment) {
            None => {
                return Err(end(format!(
                    "segment {} ({} entries by the anchor) is missing: the trail was truncated",
                    a.segment, a.entries
                )))
            }
            Some(d) if d.entries < a.entries => {
                return Err(end(format!(
                "segment {} has {} entries where the anchor records {}: the trail was truncated",
                a.segment, d.entries, a.entries
            )))
            }
            Some(d) if d.entries == a.entries && !ct_eq(d.head.as_bytes(), a.head.as_bytes()) => {
                return Err(end(format!(
                    "segment {}'s last entry differs from the anchor",
                    a.segment
                )))
            }
            Some(_) => {}
        }
    }
    Ok(done)
}

/// Starts a segment: the writer's chain and the segment entry to write
/// first (`type` `segment`, linking to the previous segment's last entry).
///
/// # Errors
/// As [`AuditChain::new`].
pub fn start_segment(
    audit_key: &SecretBytes,
    segment: &str,
    prev: Option<(&str, u64, &str)>,
    time: i64,
) -> Result<(AuditChain, Value)> {
    let chain = AuditChain::new(&segment_key(audit_key, segment))?;
    let link = match prev {
        Some((seg, seq, mac)) => serde_json::json!({ "seg": seg, "seq": seq, "mac": mac }),
        None => Value::Null,
    };
    let entry = serde_json::json!({
        "type": "segment",
        "seg": segment,
        "time": time,
        "prev": link,
    });
    Ok((chain, entry))
}
