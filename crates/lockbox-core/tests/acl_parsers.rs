//! The ACL's two parsers against arbitrary input (the same properties the
//! `acl_path` and `policy` fuzz targets check, on every test run): the
//! request-path decoder the router and the ACL share, and the policy parser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lockbox_core::acl::{parse_policy, request_segments, to_hcl, Acl, Caps};
use proptest::prelude::*;

/// Percent-encodes every byte of `s`.
fn encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn path_decoder_never_panics_and_yields_clean_segments(s in "\\PC{0,64}|[a-z%/.2F5]{0,32}") {
        if let Ok(segs) = request_segments(&s) {
            for seg in &segs {
                prop_assert!(!seg.is_empty() && !seg.contains('/'));
                prop_assert!(seg != "." && seg != "..");
            }
        }
    }

    /// However a path's separators and letters are spelled (`/`, `%2F`,
    /// `%2f`, doubled slashes, each byte escaped), it decodes to the same
    /// segments: the router and the ACL cannot be shown two paths.
    #[test]
    fn every_spelling_of_a_path_decodes_alike(
        segs in prop::collection::vec("[A-Za-z0-9_.+*-]{1,12}", 1..6)
            .prop_filter("no dot segments", |v| v.iter().all(|s| s != "." && s != "..")),
        seps in prop::collection::vec(prop::sample::select(vec!["/", "%2F", "%2f", "//", "/%2F"]), 6),
        escape in prop::collection::vec(any::<bool>(), 6),
    ) {
        let mut path = String::new();
        for (i, s) in segs.iter().enumerate() {
            if i > 0 {
                path.push_str(seps[i]);
            }
            if escape[i] {
                path.push_str(&encode_all(s));
            } else {
                path.push_str(s);
            }
        }
        prop_assert_eq!(request_segments(&path).unwrap(), segs);
    }

    #[test]
    fn policy_parser_never_panics(s in "\\PC{0,200}") {
        if let Ok(rules) = parse_policy(&s) {
            let _ = Acl::new([rules.as_slice()]).capabilities("transit/encrypt/a");
        }
    }

    /// A policy made of valid rules parses, and its HCL form parses back to
    /// the same rules.
    #[test]
    fn generated_policies_round_trip(
        rules in prop::collection::vec(
            (
                "[a-z+*]{1,6}(/[a-z0-9+._-]{1,8}){0,3}\\*?",
                prop::collection::vec(prop::sample::select(vec![
                    "create", "read", "update", "delete", "list", "sudo", "deny",
                ]), 1..4),
            ),
            1..5,
        )
    ) {
        let text: String = rules
            .iter()
            .map(|(p, caps)| {
                let caps: Vec<String> = caps.iter().map(|c| format!("\"{c}\"")).collect();
                format!("path \"{p}\" {{ capabilities = [{}] }}\n", caps.join(", "))
            })
            .collect();
        match parse_policy(&text) {
            Ok(parsed) => {
                let again = parse_policy(&to_hcl(&parsed)).unwrap();
                prop_assert_eq!(again, parsed);
            }
            // Wildcards in the middle of a pattern are refused, clearly.
            Err(e) => prop_assert!(e.to_string().contains("path"), "{}", e),
        }
    }
}

#[test]
fn a_pattern_cannot_be_smuggled_past_a_deny_with_an_encoded_slash() {
    let rules = parse_policy(
        r#"path "+/keys/*" { capabilities = ["update"] }
           path "lockbox/keys/+/backup" { capabilities = ["deny"] }"#,
    )
    .unwrap();
    let acl = Acl::new([rules.as_slice()]);
    let path = request_segments("lockbox/keys/m2%2Fk/backup")
        .unwrap()
        .join("/");
    // The decoded path has five segments: no route serves it (404), and the
    // ACL would see exactly those five — never a name with a slash inside.
    assert_eq!(path, "lockbox/keys/m2/k/backup");
    let denied = request_segments("lockbox/keys/k/backup").unwrap().join("/");
    assert!(!acl.capabilities(&denied).contains(Caps::UPDATE));
    assert!(acl
        .capabilities("lockbox/keys/k/rotate")
        .contains(Caps::UPDATE));
}
