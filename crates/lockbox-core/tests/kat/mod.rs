//! Readers for the external known-answer test files in tests/vectors
//! (Wycheproof JSON, NIST CAVP `.rsp`, and the `KEY = value` text files of
//! `cryptography-vectors`), and a tally that makes each vector test prove it
//! checked something.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// Path of a file under tests/vectors.
pub fn path(rel: &str) -> PathBuf {
    super::common::vectors_dir().join(rel)
}

/// Read a file under tests/vectors as text.
pub fn read(rel: &str) -> String {
    let p = path(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Parse a JSON file under tests/vectors.
pub fn json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: bad JSON: {e}"))
}

/// Hex-decode a JSON string field of a Wycheproof test.
pub fn hexf(t: &Value, field: &str) -> Vec<u8> {
    let s = t[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} missing in {t}"));
    hex::decode(s).unwrap_or_else(|e| panic!("field {field}: bad hex: {e}"))
}

/// An integer field.
pub fn uint(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field} missing or not an integer in {v}"))
}

/// Every (group, test) of a Wycheproof file, and the declared number of tests.
pub fn wycheproof_tests(doc: &Value) -> (Vec<(&Value, &Value)>, u64) {
    let mut out = Vec::new();
    for g in doc["testGroups"].as_array().expect("testGroups") {
        for t in g["tests"].as_array().expect("tests") {
            out.push((g, t));
        }
    }
    let declared = uint(doc, "numberOfTests");
    assert_eq!(
        out.len() as u64,
        declared,
        "numberOfTests does not match the tests present"
    );
    (out, declared)
}

/// The Wycheproof `result` of a test: `true` for `valid`, `false` for
/// `invalid`. (`acceptable` does not occur in the files used here.)
pub fn is_valid(t: &Value) -> bool {
    match t["result"].as_str() {
        Some("valid") => true,
        Some("invalid") => false,
        other => panic!("unexpected result {other:?} in tcId {}", t["tcId"]),
    }
}

/// One record of a `KEY = value` text file.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// `[Name = value]` section headers in force (NIST `.rsp`).
    pub section: BTreeMap<String, String>,
    /// `Name = value` lines, keys as written.
    pub fields: BTreeMap<String, String>,
    /// Bare words on their own line (NIST's `FAIL`).
    pub flags: Vec<String>,
    /// 1-based line where the record starts (for messages).
    pub line: usize,
}

impl Record {
    /// Whether the field is present.
    pub fn has(&self, k: &str) -> bool {
        self.fields.contains_key(k)
    }

    /// The raw text of a field.
    pub fn raw(&self, k: &str) -> &str {
        self.fields
            .get(k)
            .unwrap_or_else(|| panic!("line {}: field {k} missing", self.line))
    }

    /// As [`Record::bytes`], but a missing field is empty.
    pub fn bytes_or_empty(&self, k: &str) -> Vec<u8> {
        if self.has(k) {
            self.bytes(k)
        } else {
            Vec::new()
        }
    }

    /// A field as bytes: hex, or a `"quoted string"` taken literally.
    pub fn bytes(&self, k: &str) -> Vec<u8> {
        let v = self.raw(k);
        if let Some(inner) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            inner.as_bytes().to_vec()
        } else {
            hex::decode(v).unwrap_or_else(|e| panic!("line {}: {k}: bad hex: {e}", self.line))
        }
    }

    /// A decimal field.
    pub fn num(&self, k: &str) -> u64 {
        self.raw(k)
            .parse()
            .unwrap_or_else(|e| panic!("line {}: {k}: not a number: {e}", self.line))
    }

    /// A decimal section header (`[IVlen = 96]`).
    pub fn section_num(&self, k: &str) -> u64 {
        self.section
            .get(k)
            .unwrap_or_else(|| panic!("line {}: section {k} missing", self.line))
            .parse()
            .unwrap_or_else(|e| panic!("line {}: section {k}: {e}", self.line))
    }
}

/// Parse a `KEY = value` file into records; a record starts at each line whose
/// key is `start` (compared case-insensitively). Comment (`#`) and blank lines
/// are skipped, `[K = v]` lines set section values for the records after them.
pub fn records(text: &str, start: &str) -> Vec<Record> {
    let mut out = Vec::new();
    let mut section = BTreeMap::new();
    let mut cur: Option<Record> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if let Some(r) = cur.take() {
                out.push(r);
            }
            let (k, v) = inner
                .split_once('=')
                .unwrap_or_else(|| panic!("line {}: bad section header", i + 1));
            section.insert(k.trim().to_owned(), v.trim().to_owned());
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case(start) {
                if let Some(r) = cur.take() {
                    out.push(r);
                }
                cur = Some(Record {
                    section: section.clone(),
                    line: i + 1,
                    ..Record::default()
                });
            }
            let r = cur
                .as_mut()
                .unwrap_or_else(|| panic!("line {}: field before the first {start}", i + 1));
            assert!(
                r.fields.insert(k.to_owned(), v.to_owned()).is_none(),
                "line {}: field {k} repeated in one record",
                i + 1
            );
        } else {
            let r = cur
                .as_mut()
                .unwrap_or_else(|| panic!("line {}: bare word before the first record", i + 1));
            r.flags.push(line.to_owned());
        }
    }
    if let Some(r) = cur {
        out.push(r);
    }
    out
}

/// What a vector test did with each case.
#[derive(Debug, Default)]
pub struct Tally {
    /// Name of the vector file.
    pub file: &'static str,
    /// Valid cases reproduced exactly (and, for AEADs, decrypted).
    pub valid: usize,
    /// Invalid cases that the API rejected as it should (authentication failure).
    pub invalid: usize,
    /// Cases with sizes the API does not support, shown refused.
    pub refused: usize,
    /// Cases skipped for a documented reason.
    pub skipped: usize,
}

impl Tally {
    /// A tally for `file`.
    pub fn new(file: &'static str) -> Self {
        Tally {
            file,
            ..Tally::default()
        }
    }

    /// Cases checked against the expected answer.
    pub fn checked(&self) -> usize {
        self.valid + self.invalid
    }

    /// Print the counts (visible with `--nocapture`) and assert that cases
    /// were checked, that `total` cases were all accounted for, and (if
    /// `expect_refused`) that some were refused.
    pub fn finish(&self, total: usize, expect_refused: bool) {
        eprintln!(
            "{}: {} checked ({} valid, {} invalid), {} refused, {} skipped, of {}",
            self.file,
            self.checked(),
            self.valid,
            self.invalid,
            self.refused,
            self.skipped,
            total
        );
        assert!(self.checked() > 0, "{}: no case was checked", self.file);
        assert_eq!(
            self.checked() + self.refused + self.skipped,
            total,
            "{}: some cases were neither checked, refused nor skipped",
            self.file
        );
        if expect_refused {
            assert!(
                self.refused > 0,
                "{}: no unsupported size was refused",
                self.file
            );
        }
    }
}
