#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! External KDF and MAC test vectors run through [`lockbox_core::kdf`]:
//! Wycheproof HKDF-SHA256, HMAC-SHA256 and PBKDF2-HMAC-SHA512; RFC 5869
//! (HKDF), RFC 4231 (HMAC) and Argon2id KATs from `cryptography-vectors`.
//! Origins and licences: tests/vectors/README.md.

mod common;
mod kat;

use kat::{hexf, is_valid, Tally};
use lockbox_core::kdf::{self, Argon2Params};
use lockbox_core::Error;

fn assert_invalid_argument<T: std::fmt::Debug>(r: lockbox_core::Result<T>, what: &str) {
    match r {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

/// Wycheproof HKDF-SHA256. Valid cases must reproduce `okm`; the invalid
/// ones ask for more than 255·32 bytes and must be refused.
#[test]
fn wycheproof_hkdf_sha256() {
    let file = "hkdf_sha256_test.json";
    let doc = kat::json(&format!("wycheproof/{file}"));
    assert_eq!(doc["schema"], "hkdf_test_schema_v1.json");
    let (tests, total) = kat::wycheproof_tests(&doc);
    let mut tally = Tally::new(file);
    for (_, t) in tests {
        let what = format!("{file} tcId {} ({})", t["tcId"], t["comment"]);
        let (ikm, salt, info) = (hexf(t, "ikm"), hexf(t, "salt"), hexf(t, "info"));
        let size = kat::uint(t, "size") as usize;
        let got = kdf::hkdf_sha256(&ikm, &salt, &info, size);
        if is_valid(t) {
            let okm = hexf(t, "okm");
            assert_eq!(okm.len(), size, "{what}");
            let got = got.unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(
                hex::encode(got.expose_secret()),
                hex::encode(&okm),
                "{what}"
            );
            tally.valid += 1;
        } else {
            assert!(
                size > 255 * 32,
                "{what}: an invalid case that is not about size"
            );
            assert_invalid_argument(got, &what);
            tally.refused += 1;
        }
    }
    tally.finish(total as usize, true);
    // And the other end of the range.
    assert_invalid_argument(kdf::hkdf_sha256(b"ikm", b"", b"", 0), "HKDF L = 0");
}

/// Wycheproof HMAC-SHA256, full (256-bit) and truncated (128-bit) tags.
/// `hmac_sha256` must give the tag (or its prefix); `hmac_sha256_verify` must
/// accept valid tags of 16 and 32 bytes and reject the modified ones. Shorter
/// truncations of every valid tag must be refused, not verified.
#[test]
fn wycheproof_hmac_sha256() {
    let file = "hmac_sha256_test.json";
    let doc = kat::json(&format!("wycheproof/{file}"));
    assert_eq!(doc["schema"], "mac_test_schema_v1.json");
    let (tests, total) = kat::wycheproof_tests(&doc);
    let mut tally = Tally::new(file);
    let mut truncated_tags = 0;
    let mut short_refused = 0;
    for (g, t) in tests {
        let what = format!("{file} tcId {} ({})", t["tcId"], t["comment"]);
        let (key, msg, tag) = (hexf(t, "key"), hexf(t, "msg"), hexf(t, "tag"));
        assert_eq!(tag.len() * 8, kat::uint(g, "tagSize") as usize, "{what}");
        assert!(
            (16..=32).contains(&tag.len()),
            "{what}: a tag size outside 16..=32"
        );
        let full = kdf::hmac_sha256(&key, &msg);
        if is_valid(t) {
            assert_eq!(hex::encode(&full[..tag.len()]), hex::encode(&tag), "{what}");
            kdf::hmac_sha256_verify(&key, &msg, &tag).unwrap_or_else(|e| panic!("{what}: {e:?}"));
            if tag.len() < 32 {
                truncated_tags += 1;
            }
            // Truncations below 16 bytes are refused, even though they are
            // prefixes of the right tag.
            for len in [15usize, 12, 8, 1, 0] {
                assert_invalid_argument(kdf::hmac_sha256_verify(&key, &msg, &tag[..len]), &what);
                short_refused += 1;
            }
            tally.valid += 1;
        } else {
            assert_ne!(&full[..tag.len()], &tag[..], "{what}");
            match kdf::hmac_sha256_verify(&key, &msg, &tag) {
                Err(Error::AuthenticationFailed) => {}
                other => panic!("{what}: invalid tag gave {other:?}"),
            }
            tally.invalid += 1;
        }
    }
    tally.finish(total as usize, false);
    assert!(truncated_tags > 0, "no truncated tag was verified");
    assert!(short_refused > 0);
    // Longer than the MAC is refused too.
    let mut long = kdf::hmac_sha256(b"k", b"m").to_vec();
    long.push(0);
    assert_invalid_argument(kdf::hmac_sha256_verify(b"k", b"m", &long), "33-byte tag");
    eprintln!("{file}: {truncated_tags} 16-byte truncated tags verified, {short_refused} shorter truncations refused");
}

/// Wycheproof PBKDF2-HMAC-SHA512 (all 4096 iterations): `pbkdf2_sha512_raw`
/// must reproduce `dk`; the policy-checked `pbkdf2_sha512` must refuse every
/// case because 4096 < `PBKDF2_MIN_ITERATIONS` (100 000).
#[test]
fn wycheproof_pbkdf2_hmacsha512() {
    let file = "pbkdf2_hmacsha512_test.json";
    let doc = kat::json(&format!("wycheproof/{file}"));
    assert_eq!(doc["schema"], "pbkdf_test_schema.json");
    let (tests, total) = kat::wycheproof_tests(&doc);
    let mut tally = Tally::new(file);
    let mut policy_refused = 0;
    for (_, t) in tests {
        let what = format!("{file} tcId {} ({})", t["tcId"], t["comment"]);
        let (password, salt, dk) = (hexf(t, "password"), hexf(t, "salt"), hexf(t, "dk"));
        let iterations = u32::try_from(kat::uint(t, "iterationCount")).unwrap();
        let len = kat::uint(t, "dkLen") as usize;
        assert!(is_valid(t), "{what}: the file has only valid cases");
        let got = kdf::pbkdf2_sha512_raw(&password, &salt, iterations, len)
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(hex::encode(got.expose_secret()), hex::encode(&dk), "{what}");
        tally.valid += 1;
        assert!(iterations < kdf::PBKDF2_MIN_ITERATIONS, "{what}");
        match kdf::pbkdf2_sha512(&password, &salt, iterations, len) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("iterations"), "{what}: {m}"),
            other => panic!("{what}: policy check gave {other:?}"),
        }
        policy_refused += 1;
    }
    tally.finish(total as usize, false);
    assert_eq!(policy_refused, tally.valid);
    eprintln!("{file}: pbkdf2_sha512 refused all {policy_refused} cases (iterations < 100000)");
}

/// RFC 5869 appendix A, the SHA-256 cases. Lockbox exposes extract-then-expand
/// only, so `PRK` is not compared separately; `OKM` depends on it. An empty
/// salt is the RFC's "not provided" (HashLen zero bytes), as in Lockbox.
#[test]
fn pyca_rfc5869_hkdf_sha256() {
    let file = "rfc-5869-HKDF-SHA256.txt";
    let recs = kat::records(&kat::read(&format!("pyca-extra/{file}")), "COUNT");
    let mut tally = Tally::new(file);
    for r in &recs {
        let what = format!("{file} COUNT {}", r.raw("COUNT"));
        assert_eq!(r.raw("Hash"), "SHA-256", "{what}");
        let len = r.num("L") as usize;
        let got =
            kdf::hkdf_sha256(&r.bytes("IKM"), &r.bytes("salt"), &r.bytes("info"), len).unwrap();
        assert_eq!(hex::encode(got.expose_secret()), r.raw("OKM"), "{what}");
        tally.valid += 1;
    }
    tally.finish(recs.len(), false);
}

/// RFC 4231 HMAC-SHA256 cases (the file leaves out the RFC's 128-bit
/// truncation case 5; truncation is checked here on every case instead).
#[test]
fn pyca_rfc4231_hmac_sha256() {
    let file = "rfc-4231-sha256.txt";
    let recs = kat::records(&kat::read(&format!("pyca-extra/{file}")), "Len");
    let mut tally = Tally::new(file);
    for r in &recs {
        let what = format!("{file} line {}", r.line);
        let (key, msg, md) = (r.bytes("Key"), r.bytes("Msg"), r.bytes("MD"));
        assert_eq!(md.len(), 32, "{what}");
        assert_eq!(
            hex::encode(kdf::hmac_sha256(&key, &msg)),
            hex::encode(&md),
            "{what}"
        );
        assert_eq!(
            kdf::hmac_sha256_parts(&key, &[&msg[..msg.len() / 2], &msg[msg.len() / 2..]]),
            kdf::hmac_sha256(&key, &msg)
        );
        kdf::hmac_sha256_verify(&key, &msg, &md).unwrap();
        kdf::hmac_sha256_verify(&key, &msg, &md[..16]).unwrap();
        assert_invalid_argument(kdf::hmac_sha256_verify(&key, &msg, &md[..15]), &what);
        let mut bad = md.clone();
        bad[31] ^= 1;
        assert_eq!(
            kdf::hmac_sha256_verify(&key, &msg, &bad),
            Err(Error::AuthenticationFailed),
            "{what}"
        );
        tally.valid += 1;
    }
    tally.finish(recs.len(), false);
}

/// Argon2id KATs (RFC 9106 §5.3 with secret and associated data, and the
/// argon2 CLI), through `argon2id_with_secret`. All parameters are within
/// what the API accepts (memory ≥ 8·lanes KiB, output ≥ 4 bytes), so no case
/// is skipped; the largest uses 128 MiB.
#[test]
fn pyca_argon2id() {
    let file = "argon2id.txt";
    let recs = kat::records(&kat::read(&format!("pyca-extra/{file}")), "COUNT");
    let mut tally = Tally::new(file);
    for r in &recs {
        let what = format!("{file} COUNT {}", r.raw("COUNT"));
        let params = Argon2Params {
            memory_kib: u32::try_from(r.num("memcost")).unwrap(),
            iterations: u32::try_from(r.num("iter")).unwrap(),
            parallelism: u32::try_from(r.num("lanes")).unwrap(),
        };
        let len = r.num("length") as usize;
        let got = kdf::argon2id_with_secret(
            &r.bytes_or_empty("pass"),
            &r.bytes("salt"),
            &r.bytes_or_empty("secret"),
            &r.bytes_or_empty("ad"),
            params,
            len,
        )
        .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(hex::encode(got.expose_secret()), r.raw("output"), "{what}");
        tally.valid += 1;
        // Without the secret (where there is one) the output must differ.
        if r.has("secret") {
            let other = kdf::argon2id_with_secret(
                &r.bytes_or_empty("pass"),
                &r.bytes("salt"),
                &[],
                &r.bytes_or_empty("ad"),
                params,
                len,
            )
            .unwrap();
            assert_ne!(other.expose_secret(), got.expose_secret(), "{what}");
        }
    }
    tally.finish(recs.len(), false);
}
