//! Shamir secret sharing of the root key (unseal shares), k of n, over
//! GF(256) (the `blahaj` crate), with a text form that detects typos.
//!
//! Security: fewer than `threshold` shares reveal nothing about the root key
//! (information-theoretic). The checksum in each share's text catches
//! accidents (a mistyped or truncated character) at parse time; it is not a
//! defence against someone who holds shares and forges one. That case, and
//! any combination that does not reconstruct the root key, is caught by the
//! store's check value in [`Unsealer::combine_and_verify`] — Lockbox never
//! continues with a silently wrong root key.
//!
//! Text form: `lbxs1.<set id, 16 hex>.<threshold>.<x>.<base64url(y)>.<checksum, 8 hex>`,
//! where the set id is random per split (so shares of different inits are
//! told apart) and the checksum is the first 4 bytes of SHA-256 of
//! everything before it.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

use crate::encoding::{b64url_decode, b64url_encode};
use crate::error::{Error, Result};
use crate::rootkey::{RootKey, ROOT_KEY_LEN};

const PREFIX: &str = "lbxs1";

/// What identifies one split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitInfo {
    /// Random id shared by every share of this split.
    pub set_id: [u8; 8],
    /// Shares needed.
    pub threshold: u8,
    /// Shares made.
    pub shares: u8,
}

/// One unseal share. Secret: zeroized on drop, redacted in `Debug`.
pub struct Share {
    set_id: [u8; 8],
    threshold: u8,
    x: u8,
    y: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Share {{ index: {}, y: [REDACTED] }}", self.x)
    }
}

use crate::encoding::hex_encode as hex;

fn checksum(body: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body.as_bytes());
    hex(&d.as_ref()[..4])
}

impl Share {
    /// The share's index (1..=255).
    #[must_use]
    pub fn index(&self) -> u8 {
        self.x
    }

    /// The split this share belongs to.
    #[must_use]
    pub fn set_id(&self) -> [u8; 8] {
        self.set_id
    }

    /// The text form. **Secret**: print it once, to its holder.
    #[must_use]
    pub fn expose_text(&self) -> String {
        let body = format!(
            "{PREFIX}.{}.{}.{}.{}",
            hex(&self.set_id),
            self.threshold,
            self.x,
            b64url_encode(&self.y)
        );
        let c = checksum(&body);
        format!("{body}.{c}")
    }

    /// Parse the text form.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] saying what is wrong: not a share, a
    /// corrupt share (checksum mismatch), bad fields.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let bad = |why: &str| Error::InvalidArgument(format!("not a valid unseal share: {why}"));
        if !t.starts_with(PREFIX) {
            return Err(bad("it does not start with lbxs1."));
        }
        let (body, sum) = t.rsplit_once('.').ok_or_else(|| bad("missing fields"))?;
        if !crate::secret::ct_eq(checksum(body).as_bytes(), sum.as_bytes()) {
            return Err(Error::InvalidArgument(
                "unseal share is corrupt (checksum mismatch): check it was copied exactly".into(),
            ));
        }
        let parts: Vec<&str> = body.split('.').collect();
        let [_, set, th, x, y] = parts.as_slice() else {
            return Err(bad("wrong number of fields"));
        };
        if set.len() != 16 {
            return Err(bad("bad set id"));
        }
        let mut set_id = [0u8; 8];
        for (i, b) in set_id.iter_mut().enumerate() {
            *b = set
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("bad set id"))?;
        }
        let threshold: u8 = th.parse().map_err(|_| bad("bad threshold"))?;
        let x: u8 = x.parse().map_err(|_| bad("bad index"))?;
        if threshold == 0 || x == 0 {
            return Err(bad("index and threshold start at 1"));
        }
        let y = Zeroizing::new(b64url_decode(y).map_err(|_| bad("bad share value"))?);
        if y.len() != ROOT_KEY_LEN {
            return Err(bad("share value has the wrong length"));
        }
        Ok(Share {
            set_id,
            threshold,
            x,
            y,
        })
    }
}

/// Split `secret` into `shares` shares, any `threshold` of which rebuild it.
///
/// # Errors
/// [`Error::InvalidArgument`] unless `1 <= threshold <= shares <= 255`, and
/// `threshold >= 2` when `shares > 1` (as Vault requires).
pub fn split(secret: &RootKey, shares: u8, threshold: u8) -> Result<(SplitInfo, Vec<Share>)> {
    if shares == 0 || threshold == 0 || threshold > shares {
        return Err(Error::InvalidArgument(format!(
            "need 1 <= threshold <= shares <= 255, got {threshold} of {shares}"
        )));
    }
    if shares > 1 && threshold < 2 {
        return Err(Error::InvalidArgument(
            "threshold must be at least 2 when there is more than one share".into(),
        ));
    }
    let mut set_id = [0u8; 8];
    crate::secret::fill_random(&mut set_id)?;
    let dealer = blahaj::Sharks(threshold).dealer(secret.expose_secret().expose_secret());
    let out: Vec<Share> = dealer
        .take(usize::from(shares))
        .map(|s| {
            let bytes = Zeroizing::new(Vec::<u8>::from(&s));
            Share {
                set_id,
                threshold,
                x: bytes.first().copied().unwrap_or(0),
                y: Zeroizing::new(bytes.get(1..).unwrap_or_default().to_vec()),
            }
        })
        .collect();
    if out.len() != usize::from(shares) || out.iter().any(|s| s.x == 0) {
        return Err(Error::Crypto("share generation failed"));
    }
    Ok((
        SplitInfo {
            set_id,
            threshold,
            shares,
        },
        out,
    ))
}

/// How far an unseal has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Shares given.
    pub have: u8,
    /// Shares needed.
    pub need: u8,
}

/// Collects shares one at a time (`lockbox unseal`), then rebuilds the key.
#[derive(Default)]
pub struct Unsealer {
    set_id: Option<[u8; 8]>,
    threshold: u8,
    shares: BTreeMap<u8, Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for Unsealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Unsealer {{ have: {}, need: {} }}",
            self.shares.len(),
            self.threshold
        )
    }
}

impl Unsealer {
    /// No shares yet.
    #[must_use]
    pub fn new() -> Self {
        Unsealer::default()
    }

    /// Shares given and needed.
    #[must_use]
    pub fn progress(&self) -> Progress {
        Progress {
            have: u8::try_from(self.shares.len()).unwrap_or(u8::MAX),
            need: self.threshold,
        }
    }

    /// Add a share.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a share of another init, a repeated
    /// share, or an inconsistent threshold.
    pub fn add(&mut self, share: Share) -> Result<Progress> {
        match self.set_id {
            Some(id) if id != share.set_id => {
                return Err(Error::InvalidArgument(
                    "this share belongs to a different init (another set of shares)".into(),
                ))
            }
            Some(_) if share.threshold != self.threshold => {
                return Err(Error::InvalidArgument(
                    "this share's threshold differs from the others'".into(),
                ))
            }
            _ => {}
        }
        if self.shares.contains_key(&share.x) {
            return Err(Error::InvalidArgument(format!(
                "share {} was already given",
                share.x
            )));
        }
        self.set_id = Some(share.set_id);
        self.threshold = share.threshold;
        let Share { x, y, .. } = share;
        self.shares.insert(x, y);
        Ok(self.progress())
    }

    /// Forget every share given.
    pub fn reset(&mut self) {
        *self = Unsealer::default();
    }

    /// Rebuild the root key (needs `threshold` shares). Does not verify it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] "need K more shares".
    pub fn try_combine(&self) -> Result<RootKey> {
        let p = self.progress();
        if p.have == 0 || p.have < p.need {
            return Err(Error::InvalidArgument(format!(
                "need {} more share(s) to unseal",
                p.need.saturating_sub(p.have).max(1)
            )));
        }
        let shares: Vec<blahaj::Share> = self
            .shares
            .iter()
            .take(usize::from(self.threshold))
            .filter_map(|(x, y)| {
                let mut b = Zeroizing::new(Vec::with_capacity(1 + y.len()));
                b.push(*x);
                b.extend_from_slice(y);
                blahaj::Share::try_from(b.as_slice()).ok()
            })
            .collect();
        let secret = Zeroizing::new(
            blahaj::Sharks(self.threshold)
                .recover(&shares)
                .map_err(|e| Error::InvalidArgument(format!("cannot combine shares: {e}")))?,
        );
        RootKey::from_bytes(&secret)
    }

    /// Rebuild the root key and check it against the store's check value.
    ///
    /// # Errors
    /// As [`Unsealer::try_combine`]; [`Error::InvalidArgument`] "the shares
    /// do not reconstruct the root key" on a mismatch.
    pub fn combine_and_verify(&self, check_value: &[u8]) -> Result<RootKey> {
        let wrong = || {
            Error::InvalidArgument(
                "the shares do not reconstruct the root key (a share is wrong or was altered)"
                    .into(),
            )
        };
        let key = self.try_combine().map_err(|e| match e {
            Error::InvalidKey(_) => wrong(),
            other => other,
        })?;
        key.verify_check_value(check_value).map_err(|_| wrong())?;
        Ok(key)
    }
}
