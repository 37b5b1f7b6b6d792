//! The audit chain detects every kind of tampering, at the right entry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use lockbox_core::audit::{verify, verify_with_anchor, AuditChain};
use lockbox_core::SecretBytes;
use serde_json::json;

fn trail(n: usize) -> (SecretBytes, Vec<String>) {
    let k = SecretBytes::random(32).unwrap();
    let mut c = AuditChain::new(&k).unwrap();
    let lines = (0..n)
        .map(|i| c.append(json!({"op": "encrypt", "key": format!("k{}", i % 3), "outcome": "ok", "time": 1_764_000_000 + i})).unwrap())
        .collect();
    (k, lines)
}

fn check(k: &SecretBytes, lines: &[String]) -> Result<u64, usize> {
    verify(k, lines.iter().map(String::as_str))
        .map(|r| r.entries)
        .map_err(|f| f.line)
}

#[test]
fn intact_trail_verifies() {
    let (k, lines) = trail(20);
    assert_eq!(check(&k, &lines), Ok(20));
    let other = SecretBytes::random(32).unwrap();
    assert_eq!(check(&other, &lines), Err(1), "another key fails at once");
}

#[test]
fn every_tampering_is_caught_at_the_right_entry() {
    let (k, lines) = trail(12);
    // Edit entry 5 (line 6): changing a field.
    let mut edited = lines.clone();
    edited[5] = edited[5].replace("\"outcome\":\"ok\"", "\"outcome\":\"error\"");
    assert_ne!(edited[5], lines[5]);
    assert_eq!(check(&k, &edited), Err(6));
    // Delete entry 5: the next one is out of sequence.
    let mut deleted = lines.clone();
    deleted.remove(5);
    assert_eq!(check(&k, &deleted), Err(6));
    // Insert a forged entry (right seq, wrong MAC) after entry 4.
    let mut inserted = lines.clone();
    let mut forged: serde_json::Value = serde_json::from_str(&lines[5]).unwrap();
    forged["key"] = json!("stolen");
    inserted.insert(5, forged.to_string());
    assert_eq!(check(&k, &inserted), Err(6));
    // Reorder entries 7 and 8.
    let mut reordered = lines.clone();
    reordered.swap(7, 8);
    assert_eq!(check(&k, &reordered), Err(8));
    // Renumber after a deletion to hide it: the MAC chain still breaks.
    let mut renumbered = deleted.clone();
    for (i, l) in renumbered.iter_mut().enumerate().skip(5) {
        let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
        v["seq"] = json!(i);
        *l = v.to_string();
    }
    assert_eq!(check(&k, &renumbered), Err(6));
    // Truncation leaves a valid prefix, caught by the anchor.
    let full = verify(&k, lines.iter().map(String::as_str)).unwrap();
    let truncated = &lines[..9];
    assert_eq!(check(&k, truncated), Ok(9));
    let f = verify_with_anchor(
        &k,
        truncated.iter().map(String::as_str),
        full.entries,
        &full.head,
    )
    .unwrap_err();
    assert!(f.reason.contains("truncated"), "{f}");
    assert_eq!(f.line, 10);
    verify_with_anchor(
        &k,
        lines.iter().map(String::as_str),
        full.entries,
        &full.head,
    )
    .unwrap();
    // Garbage lines are named, not panicked on.
    let mut garbage = lines.clone();
    garbage[3] = "{not json".into();
    assert_eq!(check(&k, &garbage), Err(4));
}

#[test]
fn a_chain_continues_across_files() {
    // Rotation: the writer keeps its state; the verifier reads the files in order.
    let k = SecretBytes::random(32).unwrap();
    let mut c = AuditChain::new(&k).unwrap();
    let file1: Vec<String> = (0..5).map(|i| c.append(json!({"n": i})).unwrap()).collect();
    let file2: Vec<String> = (5..9).map(|i| c.append(json!({"n": i})).unwrap()).collect();
    let all: Vec<&str> = file1.iter().chain(&file2).map(String::as_str).collect();
    assert_eq!(verify(&k, all).unwrap().entries, 9);
    // Dropping a whole middle file is caught where the next file starts.
    assert_eq!(check(&k, &file2), Err(1));
}

#[test]
fn sealing_in_parts_is_sealing_the_whole() {
    // The server seals a serialized entry with `seg`/`seq` spliced in as
    // separate parts: the line and the chain must be those of the whole
    // body, and verify.
    let k = SecretBytes::random(32).unwrap();
    let mut whole = AuditChain::new(&k).unwrap();
    let mut parts = AuditChain::new(&k).unwrap();
    let mut lines = Vec::new();
    for i in 0..5u64 {
        let body = format!(r#"{{"op":"encrypt","seg":"s1","seq":{i},"time":7}}"#);
        let a = whole.append_canonical(body.clone().into_bytes()).unwrap();
        let (left, right) = body.split_at(body.find(r#","seq""#).unwrap());
        let seq = format!(r#","seq":{i}"#);
        let rest = &right[seq.len()..];
        let mut out = b"previous line\n".to_vec();
        parts
            .seal_parts_into(
                &[left.as_bytes(), seq.as_bytes(), rest.as_bytes()],
                &mut out,
            )
            .unwrap();
        assert_eq!(&out[14..], a.as_bytes());
        assert_eq!(parts.head(), whole.head());
        lines.push(a);
    }
    assert_eq!(check(&k, &lines), Ok(5));
    // Not an object's text, whole or in parts: refused, chain untouched.
    let head = parts.head();
    let mut out = Vec::new();
    assert!(parts
        .seal_parts_into(&[b"{", b"\"a\":1"], &mut out)
        .is_err());
    assert!(parts.seal_parts_into(&[b"", b"}"], &mut out).is_err());
    assert!(parts.seal_parts_into(&[], &mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(parts.head(), head);
    assert_eq!(parts.next_seq(), 5);
    // The smallest object gets only the mac.
    parts.seal_parts_into(&[b"{", b"}"], &mut out).unwrap();
    assert!(
        out.starts_with(b"{\"mac\":\""),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
