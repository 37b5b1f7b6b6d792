#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Blind indexes: derivation, separation, normalization, truncation, version
//! tagging, rotation and error handling.

use lockbox_core::blind_index::{
    BlindIndexConfig, BlindIndexKey, BlindIndexValue, BlindIndexer, Normalization,
    DEFAULT_TRUNCATION, MAX_TRUNCATION, MIN_TRUNCATION,
};
use lockbox_core::{Error, SecretBytes};
use proptest::prelude::*;

fn key(version: u32, seed: u8) -> BlindIndexKey {
    BlindIndexKey::new(
        version,
        SecretBytes::new((0..32).map(|i| seed.wrapping_add(i)).collect()),
    )
    .unwrap()
}

fn indexer(norm: Normalization, truncation: usize) -> BlindIndexer {
    BlindIndexer::new(
        BlindIndexConfig::new(norm, truncation).unwrap(),
        vec![key(1, 0)],
        1,
    )
    .unwrap()
}

fn mac_len(s: &str) -> usize {
    BlindIndexValue::parse(s).unwrap().mac().len()
}

/// Values computed independently (Python `hmac`/`hashlib`) from the
/// derivation documented in `blind_index.rs`; they pin the format.
#[test]
fn known_answers() {
    let k = || key(1, 0); // bytes 00..1f
    let all = BlindIndexer::new(
        BlindIndexConfig::new(Normalization::ALL, 16).unwrap(),
        vec![k()],
        1,
    )
    .unwrap();
    assert_eq!(
        all.compute("  Alice@Example.COM ", "tenant-a", "users.email")
            .unwrap(),
        "bi1:v1:CiteFKbwdZbgd8LK-Ou1rw"
    );
    let none = BlindIndexer::new(BlindIndexConfig::default(), vec![k()], 1).unwrap();
    assert_eq!(
        none.compute("  Alice@Example.COM ", "tenant-a", "users.email")
            .unwrap(),
        "bi1:v1:QEy8_fqH5LpbFZPLRmOZsg"
    );
    let v2 = BlindIndexer::new(
        BlindIndexConfig::new(Normalization::NONE, 8).unwrap(),
        vec![BlindIndexKey::new(2, SecretBytes::new((0..32).collect())).unwrap()],
        2,
    )
    .unwrap();
    assert_eq!(v2.compute("x", "", "c").unwrap(), "bi1:v2:67ptjtn0wN0");
    let v3 = BlindIndexer::new(
        BlindIndexConfig::new(Normalization::NONE.with_trim().with_nfc(), 32).unwrap(),
        vec![BlindIndexKey::new(3, SecretBytes::new((0..32).collect())).unwrap()],
        3,
    )
    .unwrap();
    assert_eq!(
        v3.compute("Jose\u{301}", "t", "users.name").unwrap(),
        "bi1:v3:WPqdfzxOMXcIi5CEMSG9zim4tx4ASFKoJpbEoi_LmzE"
    );
}

#[test]
fn deterministic() {
    let a = indexer(Normalization::NONE, 16);
    let b = indexer(Normalization::NONE, 16); // same key material, separately built
    let x = a.compute("4111 1111 1111 1111", "t1", "cards.pan").unwrap();
    assert_eq!(
        x,
        a.compute("4111 1111 1111 1111", "t1", "cards.pan").unwrap()
    );
    assert_eq!(
        x,
        b.compute("4111 1111 1111 1111", "t1", "cards.pan").unwrap()
    );
    assert_ne!(
        x,
        a.compute("4111 1111 1111 1112", "t1", "cards.pan").unwrap()
    );
    // A different key gives unrelated values.
    let c = BlindIndexer::new(BlindIndexConfig::default(), vec![key(1, 99)], 1).unwrap();
    assert_ne!(
        x,
        c.compute("4111 1111 1111 1111", "t1", "cards.pan").unwrap()
    );
    assert!(a
        .matches("4111 1111 1111 1111", "t1", "cards.pan", &x)
        .unwrap());
    assert!(!a
        .matches("4111 1111 1111 1112", "t1", "cards.pan", &x)
        .unwrap());
}

#[test]
fn tenant_and_column_separation() {
    let ix = indexer(Normalization::NONE, 16);
    let base = ix.compute("v", "tenant-a", "col").unwrap();
    assert_ne!(base, ix.compute("v", "tenant-b", "col").unwrap());
    assert_ne!(base, ix.compute("v", "tenant-a", "col2").unwrap());
    assert_ne!(base, ix.compute("v", "", "col").unwrap());
    // Length prefixes: moving bytes between tenant and column changes the key.
    assert_ne!(
        ix.compute("v", "ab", "c").unwrap(),
        ix.compute("v", "a", "bc").unwrap()
    );
    assert_ne!(
        ix.compute("v", "a\0\0\0\x01b", "c").unwrap(),
        ix.compute("v", "a", "b\0\0\0\x01c").unwrap()
    );
    assert!(!ix.matches("v", "tenant-b", "col", &base).unwrap());
}

#[test]
fn normalization_effects() {
    let t = "t";
    let c = "c";
    let none = indexer(Normalization::NONE, 16);
    let trim = indexer(Normalization::NONE.with_trim(), 16);
    let fold = indexer(Normalization::NONE.with_case_fold(), 16);
    let nfc = indexer(Normalization::NONE.with_nfc(), 16);
    let all = indexer(Normalization::ALL, 16);

    assert_ne!(
        none.compute(" alice ", t, c).unwrap(),
        none.compute("alice", t, c).unwrap()
    );
    assert_eq!(
        trim.compute(" \t\u{3000}alice\u{a0}\n", t, c).unwrap(),
        trim.compute("alice", t, c).unwrap()
    );
    assert_ne!(
        trim.compute("a lice", t, c).unwrap(),
        trim.compute("alice", t, c).unwrap()
    );

    assert_ne!(
        none.compute("ALICE", t, c).unwrap(),
        none.compute("alice", t, c).unwrap()
    );
    assert_eq!(
        fold.compute("ÀLICE", t, c).unwrap(),
        fold.compute("àlice", t, c).unwrap()
    );
    // Final sigma: Σ at the end of a word lowercases to ς, elsewhere to σ.
    assert_eq!(
        fold.compute("\u{39f}\u{394}\u{39f}\u{3a3}", t, c).unwrap(),
        fold.compute("\u{3bf}\u{3b4}\u{3bf}\u{3c2}", t, c).unwrap()
    );
    assert_eq!(
        fold.compute("\u{3a3}\u{391}", t, c).unwrap(),
        fold.compute("\u{3c3}\u{3b1}", t, c).unwrap()
    );
    // Default lowercase mapping, not full case folding: ß is not "ss".
    assert_ne!(
        fold.compute("Straße", t, c).unwrap(),
        fold.compute("STRASSE", t, c).unwrap()
    );

    let composed = "\u{e9}cole"; // é
    let decomposed = "e\u{301}cole"; // e + combining acute
    assert_ne!(
        none.compute(composed, t, c).unwrap(),
        none.compute(decomposed, t, c).unwrap()
    );
    assert_eq!(
        nfc.compute(composed, t, c).unwrap(),
        nfc.compute(decomposed, t, c).unwrap()
    );
    // Angstrom sign vs Å: canonically equivalent.
    assert_eq!(
        nfc.compute("\u{212b}", t, c).unwrap(),
        nfc.compute("\u{c5}", t, c).unwrap()
    );

    assert_eq!(
        all.compute("  \u{c9}COLE \n", t, c).unwrap(),
        all.compute(decomposed, t, c).unwrap()
    );
    assert_eq!(Normalization::ALL.apply("  \u{c9}COLE \n"), "\u{e9}cole");
    assert_eq!(Normalization::NONE.apply(" X\u{301} "), " X\u{301} ");

    // The normalization set is part of the derivation: an input that every
    // setting leaves unchanged still indexes differently under each.
    let mut seen = std::collections::BTreeSet::new();
    for trim in [false, true] {
        for case_fold in [false, true] {
            for nfc in [false, true] {
                let n = Normalization {
                    trim,
                    case_fold,
                    nfc,
                };
                assert_eq!(n.apply("alice"), "alice");
                assert!(seen.insert(indexer(n, 16).compute("alice", t, c).unwrap()));
            }
        }
    }
}

#[test]
fn truncation_lengths() {
    let mut values = Vec::new();
    for t in MIN_TRUNCATION..=MAX_TRUNCATION {
        let v = indexer(Normalization::NONE, t)
            .compute("value", "t", "c")
            .unwrap();
        assert_eq!(mac_len(&v), t, "{v}");
        values.push(BlindIndexValue::parse(&v).unwrap().mac().to_vec());
    }
    // The truncation is part of the derivation: no value is a prefix of a
    // longer one (which would link indexes built with different settings).
    for (i, a) in values.iter().enumerate() {
        for b in &values[i + 1..] {
            assert_ne!(&b[..a.len()], &a[..]);
        }
    }
    assert_eq!(BlindIndexConfig::default().truncation(), DEFAULT_TRUNCATION);
    assert_eq!(
        mac_len(
            &BlindIndexer::new(BlindIndexConfig::default(), vec![key(1, 0)], 1)
                .unwrap()
                .compute("v", "t", "c")
                .unwrap()
        ),
        16
    );
    for bad in [0usize, 1, 7, 33, 64, usize::MAX] {
        match BlindIndexConfig::new(Normalization::NONE, bad) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("truncation"), "{m}"),
            other => panic!("truncation {bad}: {other:?}"),
        }
    }
}

#[test]
fn version_tagging_and_parsing() {
    let ix = BlindIndexer::new(BlindIndexConfig::default(), vec![key(42, 3)], 42).unwrap();
    let s = ix.compute("v", "t", "c").unwrap();
    assert!(s.starts_with("bi1:v42:"), "{s}");
    let p = BlindIndexValue::parse(&s).unwrap();
    assert_eq!(p.version(), 42);
    assert_eq!(p.to_string(), s);
    assert_eq!(s.parse::<BlindIndexValue>().unwrap(), p);
    assert_eq!(BlindIndexer::version_of(&s).unwrap(), 42);
    assert_eq!(ix.compute_value("v", "t", "c").unwrap(), p);

    let mac16 = "AAAAAAAAAAAAAAAAAAAAAA"; // 16 zero bytes
    assert!(BlindIndexValue::parse(&format!("bi1:v1:{mac16}")).is_ok());
    assert!(BlindIndexValue::parse(&format!("bi1:v4294967295:{mac16}")).is_ok());
    let unknown_prefix = [
        format!("bi2:v1:{mac16}"),
        format!("lbx1:v1:{mac16}"),
        String::new(),
    ];
    for s in &unknown_prefix {
        assert!(
            matches!(BlindIndexValue::parse(s), Err(Error::UnknownPrefix { .. })),
            "{s:?}"
        );
    }
    let malformed = [
        format!("bi1:1:{mac16}"),
        format!("bi1:v:{mac16}"),
        format!("bi1:v01:{mac16}"),
        format!("bi1:v0:{mac16}"),
        format!("bi1:v+1:{mac16}"),
        format!("bi1:v-1:{mac16}"),
        format!("bi1:v4294967296:{mac16}"),
        format!("bi1:v1{mac16}"),
        "bi1:v1:AAAAAAAAAA".to_owned(),       // 7 bytes
        format!("bi1:v1:{}", "A".repeat(44)), // 33 bytes
        "bi1:v1:".to_owned(),
    ];
    for s in &malformed {
        assert!(
            matches!(BlindIndexValue::parse(s), Err(Error::Malformed(_))),
            "{s:?}"
        );
    }
    let bad_encoding = [
        format!("bi1:v1:{mac16}=="),
        "bi1:v1:AAAAAAAAAAAAAAAAAAAAA+".to_owned(),
        "bi1:v1:AAAAAAAAAAAAAAAAAAAAA/".to_owned(),
        "bi1:v1:AAAAAAAAAAAAAAAAAAAAAB".to_owned(), // non-canonical trailing bits
        format!("bi1:v1: {mac16}"),
    ];
    for s in &bad_encoding {
        assert!(
            matches!(BlindIndexValue::parse(s), Err(Error::Encoding(_))),
            "{s:?}"
        );
    }
}

#[test]
fn search_across_two_versions() {
    let cfg = BlindIndexConfig::new(Normalization::ALL, 16).unwrap();
    // Before the rotation: only version 1.
    let old = BlindIndexer::new(cfg, vec![key(1, 10)], 1).unwrap();
    let stored_v1 = old.compute("Bob@Example.com", "t", "users.email").unwrap();
    assert_eq!(
        old.search_terms("bob@example.com", "t", "users.email")
            .unwrap(),
        vec![stored_v1.clone()]
    );

    // During the rotation: version 2 is current, version 1 still searched.
    let mid = BlindIndexer::new(cfg, vec![key(1, 10), key(2, 20)], 2).unwrap();
    assert_eq!(mid.current_version(), 2);
    assert_eq!(mid.versions(), vec![2, 1]);
    let stored_v2 = mid.compute("bob@example.com ", "t", "users.email").unwrap();
    assert!(stored_v2.starts_with("bi1:v2:"));
    let terms = mid
        .search_terms("BOB@example.com", "t", "users.email")
        .unwrap();
    assert_eq!(terms, vec![stored_v2.clone(), stored_v1.clone()]);
    assert!(mid
        .matches("bob@example.com", "t", "users.email", &stored_v1)
        .unwrap());
    assert!(mid
        .matches("bob@example.com", "t", "users.email", &stored_v2)
        .unwrap());
    assert_eq!(
        mid.compute_value_with_version("bob@example.com", "t", "users.email", 1)
            .unwrap()
            .to_string(),
        stored_v1
    );

    // Current version first even when it is not the highest (rollback).
    let back = BlindIndexer::new(cfg, vec![key(2, 20), key(1, 10), key(3, 30)], 1).unwrap();
    let terms = back
        .search_terms("bob@example.com", "t", "users.email")
        .unwrap();
    let versions: Vec<u32> = terms
        .iter()
        .map(|s| BlindIndexer::version_of(s).unwrap())
        .collect();
    assert_eq!(versions, vec![1, 3, 2]);
    assert_eq!(terms[0], stored_v1);

    // After the rotation: version 1 retired, its values no longer match.
    let new = BlindIndexer::new(cfg, vec![key(2, 20)], 2).unwrap();
    assert_eq!(
        new.search_terms("bob@example.com", "t", "users.email")
            .unwrap(),
        vec![stored_v2]
    );
    assert_eq!(
        new.matches("bob@example.com", "t", "users.email", &stored_v1),
        Err(Error::UnknownKeyVersion(1))
    );
}

#[test]
fn bad_inputs_give_typed_errors() {
    assert!(matches!(
        BlindIndexKey::new(1, SecretBytes::new(Vec::new())),
        Err(Error::InvalidKey(_))
    ));
    assert!(matches!(
        BlindIndexKey::new(1, SecretBytes::new(vec![1; 15])),
        Err(Error::InvalidKey(_))
    ));
    assert!(BlindIndexKey::new(1, SecretBytes::new(vec![1; 16])).is_ok());
    assert!(matches!(
        BlindIndexKey::new(0, SecretBytes::new(vec![1; 32])),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        BlindIndexKey::generate(0),
        Err(Error::InvalidArgument(_))
    ));
    let g = BlindIndexKey::generate(5).unwrap();
    assert_eq!((g.version(), g.key_material().len()), (5, 32));

    let cfg = BlindIndexConfig::default();
    assert!(matches!(
        BlindIndexer::new(cfg, vec![], 1),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        BlindIndexer::new(cfg, vec![key(1, 0), key(1, 1)], 1),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        BlindIndexer::new(cfg, vec![key(1, 0)], 2).unwrap_err(),
        Error::UnknownKeyVersion(2)
    );
    let ix = BlindIndexer::new(cfg, vec![key(1, 0)], 1).unwrap();
    assert!(matches!(
        ix.compute("v", "t", ""),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ix.search_terms("v", "t", ""),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        ix.compute_value_with_version("v", "t", "c", 9).unwrap_err(),
        Error::UnknownKeyVersion(9)
    );
    assert!(matches!(
        ix.matches("v", "t", "c", "nope"),
        Err(Error::UnknownPrefix { .. })
    ));
    // Empty values are fine (an empty string is a value).
    assert!(ix.compute("", "t", "c").is_ok());
}

#[test]
fn key_material_is_redacted() {
    let material: Vec<u8> = b"super-secret-index-key-material!".to_vec();
    let k = BlindIndexKey::new(7, SecretBytes::from_slice(&material)).unwrap();
    let ix = BlindIndexer::new(BlindIndexConfig::default(), vec![k.clone()], 7).unwrap();
    for d in [
        format!("{k:?}"),
        format!("{k:#?}"),
        format!("{ix:?}"),
        format!("{ix:#?}"),
    ] {
        assert!(!d.contains("super-secret"), "{d}");
        assert!(!d.contains(&hex::encode(&material)), "{d}");
        assert!(!d.contains("115, 117, 112"), "{d}"); // "sup" as a byte list
    }
    assert!(format!("{k:?}").contains("REDACTED"));
    assert!(format!("{ix:?}").contains("versions"));
}

/// Strings rich in what normalization acts on: whitespace of several kinds,
/// combining marks, letters with special lowercase mappings, precomposed and
/// compatibility characters.
fn tricky_string() -> impl Strategy<Value = String> {
    let tricky = prop::sample::select(vec![
        ' ', '\t', '\n', '\u{a0}', '\u{2000}', '\u{2001}', '\u{3000}', '\u{85}', '\u{200b}',
        '\u{301}', '\u{308}', '\u{323}', '\u{345}', '\u{307}', '\u{130}', '\u{131}', 'I', 'i',
        '\u{3a3}', '\u{3c2}', '\u{df}', '\u{1e9e}', '\u{212b}', '\u{212a}', '\u{c5}', '\u{e5}',
        '\u{e9}', 'e', 'E', 'A', 'a', '\u{1f88}', '\u{1f80}', '\u{390}', '\u{fb01}', '\u{2126}',
        '\u{3a9}', '\u{1100}', '\u{1161}', '\u{ac00}', '\u{fb2a}', '.', 'z',
    ]);
    prop_oneof![
        prop::collection::vec(tricky, 0..12).prop_map(|v| v.into_iter().collect()),
        any::<String>(),
    ]
}

fn normalization() -> impl Strategy<Value = Normalization> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(trim, case_fold, nfc)| Normalization {
        trim,
        case_fold,
        nfc,
    })
}

proptest! {
    #[test]
    fn normalization_is_idempotent(s in tricky_string(), n in normalization()) {
        let once = n.apply(&s);
        prop_assert_eq!(n.apply(&once), once.clone());
        // And the index agrees: normalizing first changes nothing.
        let ix = indexer(n, 8);
        prop_assert_eq!(ix.compute(&s, "t", "c").unwrap(), ix.compute(&once, "t", "c").unwrap());
    }

    #[test]
    fn distinct_tenants_never_share_values(
        value in tricky_string(),
        t1 in "[a-z0-9-]{0,12}",
        t2 in "[a-z0-9-]{0,12}",
        n in normalization(),
    ) {
        prop_assume!(t1 != t2);
        let ix = indexer(n, MIN_TRUNCATION);
        let a = ix.compute(&value, &t1, "users.email").unwrap();
        let b = ix.compute(&value, &t2, "users.email").unwrap();
        prop_assert_ne!(a, b);
        // Nor do distinct columns of one tenant.
        let c = ix.compute(&value, &t1, "users.name").unwrap();
        prop_assert_ne!(ix.compute(&value, &t1, "users.email").unwrap(), c);
    }
}
