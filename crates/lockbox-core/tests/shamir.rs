//! Unseal shares: every k-subset works, fewer refuse, corruption and
//! mixing are caught, a forged share never yields a silently wrong key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lockbox_core::rootkey::RootKey;
use lockbox_core::shamir::{split, Share, Unsealer};
use proptest::prelude::*;

fn combos(n: usize, k: usize) -> Vec<Vec<usize>> {
    if k == 0 {
        return vec![vec![]];
    }
    if n < k {
        return vec![];
    }
    let mut out = combos(n - 1, k);
    for mut c in combos(n - 1, k - 1) {
        c.push(n - 1);
        out.push(c);
    }
    out
}

#[test]
fn every_three_of_five_reconstructs_in_any_order() {
    let root = RootKey::generate().unwrap();
    let check = root.check_value().unwrap();
    let (info, shares) = split(&root, 5, 3).unwrap();
    assert_eq!((info.shares, info.threshold), (5, 3));
    let texts: Vec<String> = shares.iter().map(Share::expose_text).collect();
    let sets = combos(5, 3);
    assert_eq!(sets.len(), 10);
    for set in sets {
        for order in [set.clone(), set.iter().rev().copied().collect()] {
            let mut u = Unsealer::new();
            for (i, idx) in order.iter().enumerate() {
                let p = u.add(Share::parse(&texts[*idx]).unwrap()).unwrap();
                assert_eq!((p.have as usize, p.need), (i + 1, 3));
            }
            let k = u.combine_and_verify(&check).unwrap();
            assert_eq!(k.expose_secret(), root.expose_secret());
        }
    }
    // Two shares are not enough.
    let mut u = Unsealer::new();
    u.add(Share::parse(&texts[0]).unwrap()).unwrap();
    u.add(Share::parse(&texts[3]).unwrap()).unwrap();
    let e = u.combine_and_verify(&check).unwrap_err().to_string();
    assert!(e.contains("need 1 more"), "{e}");
}

#[test]
fn corruption_anywhere_is_detected() {
    let root = RootKey::generate().unwrap();
    let (_, shares) = split(&root, 3, 2).unwrap();
    let t = shares[0].expose_text();
    for i in 0..t.len() {
        let mut b = t.clone().into_bytes();
        b[i] = if b[i] == b'a' { b'b' } else { b'a' };
        let s = String::from_utf8(b).unwrap();
        if s == t {
            continue;
        }
        assert!(Share::parse(&s).is_err(), "corruption at {i} not detected");
    }
    let e = Share::parse(&t[..t.len() - 3]).unwrap_err().to_string();
    assert!(e.contains("corrupt") || e.contains("not a valid"), "{e}");
    assert!(
        Share::parse(&format!("  {t}\n")).is_ok(),
        "surrounding whitespace is fine"
    );
}

#[test]
fn mixing_duplicates_and_forgeries_are_refused() {
    let root = RootKey::generate().unwrap();
    let check = root.check_value().unwrap();
    let (_, a) = split(&root, 5, 3).unwrap();
    let (_, b) = split(&root, 5, 3).unwrap();
    let mut u = Unsealer::new();
    u.add(Share::parse(&a[0].expose_text()).unwrap()).unwrap();
    let e = u
        .add(Share::parse(&b[1].expose_text()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("different init"), "{e}");
    let e = u
        .add(Share::parse(&a[0].expose_text()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("already given"), "{e}");
    // A forged share (valid checksum, altered value) combines to a wrong key:
    // the check value catches it.
    let t = a[2].expose_text();
    let parts: Vec<&str> = t.rsplitn(2, '.').collect();
    let body = parts[1];
    let (head, y) = body.rsplit_once('.').unwrap();
    let mut yb = lockbox_core::encoding::b64url_decode(y).unwrap();
    yb[0] ^= 1;
    let forged_body = format!("{head}.{}", lockbox_core::encoding::b64url_encode(&yb));
    let sum: String = aws_lc_rs_sum(&forged_body);
    let forged = Share::parse(&format!("{forged_body}.{sum}")).unwrap();
    u.add(forged).unwrap();
    u.add(Share::parse(&a[3].expose_text()).unwrap()).unwrap();
    let e = u.combine_and_verify(&check).unwrap_err().to_string();
    assert!(e.contains("do not reconstruct"), "{e}");
    // Bad parameters.
    assert!(split(&root, 0, 0).is_err());
    assert!(split(&root, 3, 4).is_err());
    assert!(split(&root, 3, 1).is_err());
    assert!(split(&root, 1, 1).is_ok());
    assert!(format!("{:?}", a[0]).contains("REDACTED"));
}

/// The share checksum as documented: first 4 bytes of SHA-256, hex.
fn aws_lc_rs_sum(body: &str) -> String {
    use sha256_reference::sha256;
    sha256(body.as_bytes())[..4]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// An independent SHA-256 (FIPS 180-4), so the test does not reuse the
/// checksum code it checks.
mod sha256_reference {
    pub fn sha256(data: &[u8]) -> [u8; 32] {
        const K: [u32; 64] = [
            0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
            0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
            0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
            0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
            0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
            0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
            0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
            0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
            0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
            0xc67178f2,
        ];
        let mut h: [u32; 8] = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
            0x5be0cd19,
        ];
        let mut msg = data.to_vec();
        let bits = (data.len() as u64) * 8;
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bits.to_be_bytes());
        for chunk in msg.chunks(64) {
            let mut w = [0u32; 64];
            for i in 0..16 {
                w[i] = u32::from_be_bytes([
                    chunk[4 * i],
                    chunk[4 * i + 1],
                    chunk[4 * i + 2],
                    chunk[4 * i + 3],
                ]);
            }
            for i in 16..64 {
                let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
                let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16]
                    .wrapping_add(s0)
                    .wrapping_add(w[i - 7])
                    .wrapping_add(s1);
            }
            let mut v = h;
            for i in 0..64 {
                let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
                let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
                let t1 = v[7]
                    .wrapping_add(s1)
                    .wrapping_add(ch)
                    .wrapping_add(K[i])
                    .wrapping_add(w[i]);
                let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
                let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
                let t2 = s0.wrapping_add(maj);
                v = [
                    t1.wrapping_add(t2),
                    v[0],
                    v[1],
                    v[2],
                    v[3].wrapping_add(t1),
                    v[4],
                    v[5],
                    v[6],
                ];
            }
            for i in 0..8 {
                h[i] = h[i].wrapping_add(v[i]);
            }
        }
        let mut out = [0u8; 32];
        for i in 0..8 {
            out[4 * i..4 * i + 4].copy_from_slice(&h[i].to_be_bytes());
        }
        out
    }
}

proptest! {
    #[test]
    fn parse_never_panics(s in ".{0,120}", bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = Share::parse(&s);
        let _ = Share::parse(&format!("lbxs1.{s}"));
        let _ = Share::parse(&String::from_utf8_lossy(&bytes));
        let _ = RootKey::parse_master_key(&s);
    }
}
