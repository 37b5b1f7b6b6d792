//! Access-control policies in HashiCorp Vault's form.
//!
//! A policy is a list of path rules, written in HCL:
//!
//! ```text
//! # Applications may encrypt and decrypt with the billing keys.
//! path "transit/encrypt/billing-*" {
//!   capabilities = ["update"]
//! }
//! path "transit/decrypt/billing-*" { capabilities = ["update"] }
//! ```
//!
//! or in JSON: `{"path": {"transit/encrypt/billing-*": {"capabilities": ["update"]}}}`.
//!
//! Patterns follow Vault: a trailing `*` matches any suffix, `+` matches
//! exactly one path segment. When several patterns match a path, the most
//! specific one decides (Vault's priority: the longest literal prefix before
//! the first wildcard, then no trailing `*` over a trailing `*`, then fewer
//! `+` segments, then the longer pattern). Rules with the same pattern in
//! several policies are united; `deny` anywhere in that union denies
//! everything on it.

use serde_json::Value;

use crate::error::{Error, Result};

/// A set of capabilities (a bit set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Caps(u8);

impl Caps {
    /// Create (write to a path that does not exist yet).
    pub const CREATE: Caps = Caps(1);
    /// Read.
    pub const READ: Caps = Caps(2);
    /// Update (write; most Transit operations are updates).
    pub const UPDATE: Caps = Caps(4);
    /// Delete.
    pub const DELETE: Caps = Caps(8);
    /// List.
    pub const LIST: Caps = Caps(16);
    /// Privileged operations (in addition to the verb's capability).
    pub const SUDO: Caps = Caps(32);
    /// Deny: overrides every other capability on the path.
    pub const DENY: Caps = Caps(64);
    /// Nothing.
    pub const NONE: Caps = Caps(0);
    const NAMES: [(&'static str, Caps); 7] = [
        ("create", Caps::CREATE),
        ("read", Caps::READ),
        ("update", Caps::UPDATE),
        ("delete", Caps::DELETE),
        ("list", Caps::LIST),
        ("sudo", Caps::SUDO),
        ("deny", Caps::DENY),
    ];

    /// The capability called `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown name.
    pub fn parse(name: &str) -> Result<Caps> {
        Caps::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown capability {name:?} (expected create, read, update, delete, list, sudo or deny)"
                ))
            })
    }

    /// Whether every capability of `other` is in `self`.
    #[must_use]
    pub fn contains(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union.
    #[must_use]
    pub fn union(self, other: Caps) -> Caps {
        Caps(self.0 | other.0)
    }

    /// The capability names, in a fixed order.
    #[must_use]
    pub fn names(self) -> Vec<&'static str> {
        Caps::NAMES
            .iter()
            .filter(|(_, c)| self.contains(*c) && c.0 != 0)
            .map(|(n, _)| *n)
            .collect()
    }
}

/// One rule: a path pattern and its capabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// The pattern (`transit/encrypt/app-*`, `+/keys/+`...).
    pub pattern: String,
    /// What the rule grants (or `deny`).
    pub caps: Caps,
}

fn check_pattern(p: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidArgument(format!("path {p:?}: {why}")));
    if p.len() > 512 {
        return bad("longer than 512 bytes");
    }
    if p.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if let Some(i) = p.find('*') {
        if i + 1 != p.len() {
            return bad("'*' is only allowed at the end");
        }
    }
    for seg in p.split('/') {
        if seg.contains('+') && seg != "+" {
            return bad("'+' must be a whole path segment");
        }
    }
    Ok(())
}

/// Parses a policy in HCL or JSON (JSON if it starts with `{` and parses).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the line (HCL) or the field (JSON)
/// that is wrong: unknown capability, unknown attribute, misplaced wildcard,
/// syntax error, or no rules at all.
pub fn parse_policy(text: &str) -> Result<Vec<PathRule>> {
    let trimmed = text.trim_start();
    let rules = if trimmed.starts_with('{') {
        parse_json(trimmed)?
    } else {
        Hcl::new(text).policy()?
    };
    if rules.is_empty() {
        return Err(Error::InvalidArgument(
            "the policy has no path rules".into(),
        ));
    }
    Ok(rules)
}

fn caps_of(list: &[Value], pattern: &str) -> Result<Caps> {
    let mut caps = Caps::NONE;
    for c in list {
        let Some(name) = c.as_str() else {
            return Err(Error::InvalidArgument(format!(
                "path {pattern:?}: capabilities must be strings"
            )));
        };
        caps = caps.union(Caps::parse(name)?);
    }
    Ok(caps)
}

fn parse_json(text: &str) -> Result<Vec<PathRule>> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("policy JSON: {e}")))?;
    let paths = v
        .as_object()
        .and_then(|o| {
            if o.keys().all(|k| k == "path") {
                o.get("path")
            } else {
                None
            }
        })
        .and_then(Value::as_object)
        .ok_or_else(|| {
            Error::InvalidArgument(
                "policy JSON must be {\"path\": {PATTERN: {\"capabilities\": [...]}}}".into(),
            )
        })?;
    let mut rules = Vec::new();
    for (pattern, body) in paths {
        check_pattern(pattern)?;
        let obj = body.as_object().ok_or_else(|| {
            Error::InvalidArgument(format!("path {pattern:?}: expected an object"))
        })?;
        if let Some(k) = obj.keys().find(|k| *k != "capabilities") {
            return Err(Error::InvalidArgument(format!(
                "path {pattern:?}: unsupported attribute {k:?}"
            )));
        }
        let list = obj
            .get("capabilities")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("path {pattern:?}: capabilities must be a list"))
            })?;
        rules.push(PathRule {
            pattern: pattern.clone(),
            caps: caps_of(list, pattern)?,
        });
    }
    Ok(rules)
}

/// A tiny reader for the HCL subset policies use: `path "P" { capabilities = [...] }`,
/// with `#`, `//` and `/* */` comments.
struct Hcl<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
}

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(u8),
    End,
}

impl<'a> Hcl<'a> {
    fn new(text: &'a str) -> Self {
        Hcl {
            s: text.as_bytes(),
            i: 0,
            line: 1,
        }
    }

    fn err<T>(&self, why: impl std::fmt::Display) -> Result<T> {
        Err(Error::InvalidArgument(format!(
            "policy line {}: {why}",
            self.line
        )))
    }

    fn skip_space(&mut self) -> Result<()> {
        while self.i < self.s.len() {
            let c = self.s[self.i];
            let next = self.s.get(self.i + 1).copied();
            if c == b'\n' {
                self.line += 1;
                self.i += 1;
            } else if c.is_ascii_whitespace() {
                self.i += 1;
            } else if c == b'#' || (c == b'/' && next == Some(b'/')) {
                while self.i < self.s.len() && self.s[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if c == b'/' && next == Some(b'*') {
                self.i += 2;
                loop {
                    if self.i + 1 >= self.s.len() {
                        return self.err("unterminated /* comment");
                    }
                    if self.s[self.i] == b'\n' {
                        self.line += 1;
                    }
                    if self.s[self.i] == b'*' && self.s[self.i + 1] == b'/' {
                        self.i += 2;
                        break;
                    }
                    self.i += 1;
                }
            } else {
                break;
            }
        }
        Ok(())
    }

    fn next(&mut self) -> Result<Tok> {
        self.skip_space()?;
        let Some(&c) = self.s.get(self.i) else {
            return Ok(Tok::End);
        };
        if c == b'"' {
            self.i += 1;
            let mut out = Vec::new();
            loop {
                let Some(&c) = self.s.get(self.i) else {
                    return self.err("unterminated string");
                };
                self.i += 1;
                match c {
                    b'"' => break,
                    b'\n' => return self.err("newline in a string"),
                    b'\\' => {
                        let Some(&e) = self.s.get(self.i) else {
                            return self.err("unterminated string");
                        };
                        self.i += 1;
                        match e {
                            b'"' | b'\\' | b'/' => out.push(e),
                            b'n' => out.push(b'\n'),
                            b't' => out.push(b'\t'),
                            _ => return self.err("unsupported escape in a string"),
                        }
                    }
                    _ => out.push(c),
                }
            }
            return match String::from_utf8(out) {
                Ok(s) => Ok(Tok::Str(s)),
                Err(_) => self.err("a string is not UTF-8"),
            };
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = self.i;
            while self
                .s
                .get(self.i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
            {
                self.i += 1;
            }
            let word = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
            return Ok(Tok::Ident(word));
        }
        if matches!(c, b'{' | b'}' | b'[' | b']' | b'=' | b',') {
            self.i += 1;
            return Ok(Tok::Punct(c));
        }
        self.err(format!("unexpected character {:?}", char::from(c)))
    }

    fn expect(&mut self, p: u8) -> Result<()> {
        match self.next()? {
            Tok::Punct(c) if c == p => Ok(()),
            t => self.err(format!("expected '{}', found {t:?}", char::from(p))),
        }
    }

    fn policy(&mut self) -> Result<Vec<PathRule>> {
        let mut rules = Vec::new();
        loop {
            match self.next()? {
                Tok::End => return Ok(rules),
                Tok::Ident(w) if w == "path" => {}
                t => return self.err(format!("expected 'path', found {t:?}")),
            }
            let pattern = match self.next()? {
                Tok::Str(s) => s,
                t => return self.err(format!("expected a quoted path, found {t:?}")),
            };
            if let Err(e) = check_pattern(&pattern) {
                return self.err(e);
            }
            self.expect(b'{')?;
            let mut caps = None;
            loop {
                match self.next()? {
                    Tok::Punct(b'}') => break,
                    Tok::Ident(w) if w == "capabilities" => {
                        self.expect(b'=')?;
                        self.expect(b'[')?;
                        let mut c = Caps::NONE;
                        loop {
                            match self.next()? {
                                Tok::Punct(b']') => break,
                                Tok::Punct(b',') => {}
                                Tok::Str(s) => match Caps::parse(&s) {
                                    Ok(x) => c = c.union(x),
                                    Err(e) => return self.err(e),
                                },
                                t => {
                                    return self.err(format!("expected a capability, found {t:?}"))
                                }
                            }
                        }
                        caps = Some(c);
                    }
                    Tok::Ident(w) => {
                        return self.err(format!("unsupported attribute {w:?} in path {pattern:?}"))
                    }
                    t => return self.err(format!("unexpected {t:?} in path {pattern:?}")),
                }
            }
            let Some(caps) = caps else {
                return self.err(format!("path {pattern:?} has no capabilities"));
            };
            rules.push(PathRule { pattern, caps });
        }
    }
}

/// Renders rules as HCL (what `policy read` shows for built-in policies).
#[must_use]
pub fn to_hcl(rules: &[PathRule]) -> String {
    let mut out = String::new();
    for r in rules {
        let caps: Vec<String> = r.caps.names().iter().map(|n| format!("{n:?}")).collect();
        out.push_str(&format!(
            "path {:?} {{\n  capabilities = [{}]\n}}\n",
            r.pattern,
            caps.join(", ")
        ));
    }
    out
}

/// The rules of several policies, merged for checking requests.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    rules: Vec<PathRule>,
}

/// Sort key of a pattern: larger is more specific.
fn specificity(p: &str) -> (usize, bool, std::cmp::Reverse<usize>, usize) {
    let literal = p.find(['*', '+']).unwrap_or(p.len());
    let plus = p.split('/').filter(|s| *s == "+").count();
    (literal, !p.ends_with('*'), std::cmp::Reverse(plus), p.len())
}

fn matches(pattern: &str, path: &str) -> bool {
    let (pat, glob) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    if !pat.contains('+') {
        return if glob {
            path.starts_with(pat)
        } else {
            path == pat
        };
    }
    // Segment-wise with `+`; the last pattern segment may be a prefix (glob).
    let psegs: Vec<&str> = pat.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() < psegs.len() || (!glob && segs.len() != psegs.len()) {
        return false;
    }
    for (i, p) in psegs.iter().enumerate() {
        let s = segs[i];
        let last = i + 1 == psegs.len();
        let ok = if *p == "+" {
            !s.is_empty() || (glob && last)
        } else if last && glob {
            s.starts_with(p)
        } else {
            s == *p
        };
        if !ok {
            return false;
        }
        if last && !glob && segs.len() != psegs.len() {
            return false;
        }
    }
    // With a glob, anything after the last pattern segment is allowed only
    // when the last segment was matched as a prefix (Vault's `a/+/*`).
    glob || segs.len() == psegs.len()
}

impl Acl {
    /// Merges policies (rules with the same pattern are united).
    #[must_use]
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a [PathRule]>) -> Self {
        let mut rules: Vec<PathRule> = Vec::new();
        for p in policies {
            for r in p {
                match rules.iter_mut().find(|x| x.pattern == r.pattern) {
                    Some(x) => x.caps = x.caps.union(r.caps),
                    None => rules.push(r.clone()),
                }
            }
        }
        // Most specific first: the first match decides.
        rules.sort_by_key(|r| std::cmp::Reverse(specificity(&r.pattern)));
        Acl { rules }
    }

    /// The capabilities on `path` (no leading `/`, no `v1/`): those of the
    /// most specific matching rule, or none; `deny` clears them.
    #[must_use]
    pub fn capabilities(&self, path: &str) -> Caps {
        match self.rules.iter().find(|r| matches(&r.pattern, path)) {
            Some(r) if r.caps.contains(Caps::DENY) => Caps::NONE,
            Some(r) => r.caps,
            None => Caps::NONE,
        }
    }

    /// Whether `needed` is granted on `path`.
    #[must_use]
    pub fn allows(&self, path: &str, needed: Caps) -> bool {
        let have = self.capabilities(path);
        needed != Caps::NONE && have.contains(needed)
    }
}

/// Why a request path cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in the path")]
    Percent,
    /// The decoded path is not UTF-8.
    #[error("the path is not UTF-8")]
    Utf8,
    /// A `.` or `..` segment.
    #[error("the path has a '.' or '..' segment")]
    DotSegment,
}

/// The segments of a request path (the part after the API prefix, without
/// the query): percent-decoded as a whole, once, then split on `/` with
/// empty segments dropped. So `%2F` separates segments exactly as `/`
/// does, and a double-encoded `%252F` is a literal `%2F` inside one
/// segment. The ACL path of a request is these segments joined with `/`:
/// whoever routes a request and whoever checks it see the same path.
///
/// # Errors
/// [`PathError`]: a bad `%` escape, non-UTF-8 bytes, a `.` or `..` segment.
pub fn request_segments(path: &str) -> std::result::Result<Vec<String>, PathError> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                return Err(PathError::Percent);
            };
            // Two hex digits: at most 0xff.
            out.push(u8::try_from(hi * 16 + lo).map_err(|_| PathError::Percent)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| PathError::Utf8)?;
    let segments: Vec<String> = text
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if segments.iter().any(|s| s == "." || s == "..") {
        return Err(PathError::DotSegment);
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_segments_decode_once_then_split() {
        let segs = |p: &str| request_segments(p).unwrap_or_default();
        assert_eq!(
            segs("lockbox/keys/m%2Fk/backup"),
            ["lockbox", "keys", "m", "k", "backup"]
        );
        assert_eq!(
            segs("transit//encrypt/%61pp"),
            ["transit", "encrypt", "app"]
        );
        assert_eq!(segs("transit/keys/a%252Fb"), ["transit", "keys", "a%2Fb"]);
        assert_eq!(
            request_segments("transit/keys/%2e%2e"),
            Err(PathError::DotSegment)
        );
        assert_eq!(request_segments("a/./b"), Err(PathError::DotSegment));
        assert_eq!(request_segments("a/%zz"), Err(PathError::Percent));
        assert_eq!(request_segments("a/%+1"), Err(PathError::Percent));
        assert_eq!(request_segments("a/%4"), Err(PathError::Percent));
        assert_eq!(request_segments("a/%ff"), Err(PathError::Utf8));
    }

    use super::*;

    fn acl(text: &str) -> Acl {
        let rules = parse_policy(text).unwrap();
        Acl::new([rules.as_slice()])
    }

    #[test]
    fn hcl_and_json_forms_agree() {
        let hcl = r#"
            # comment
            path "transit/encrypt/app-*" {
              capabilities = ["update", "create"] // trailing
            }
            /* block
               comment */
            path "transit/keys" { capabilities = ["list"] }
        "#;
        let json = r#"{"path": {"transit/encrypt/app-*": {"capabilities": ["create", "update"]},
                       "transit/keys": {"capabilities": ["list"]}}}"#;
        let mut a = parse_policy(hcl).unwrap();
        let mut b = parse_policy(json).unwrap();
        a.sort_by(|x, y| x.pattern.cmp(&y.pattern));
        b.sort_by(|x, y| x.pattern.cmp(&y.pattern));
        assert_eq!(a, b);
        assert_eq!(parse_policy(&to_hcl(&a)).unwrap(), a);
    }

    #[test]
    fn bad_policies_name_the_problem() {
        for (text, needle) in [
            (
                "path \"a\" { capabilities = [\"fly\"] }",
                "unknown capability",
            ),
            (
                "path \"a*b\" { capabilities = [\"read\"] }",
                "only allowed at the end",
            ),
            (
                "path \"a/b+/c\" { capabilities = [\"read\"] }",
                "whole path segment",
            ),
            (
                "path \"a\" { allowed_parameters = {} }",
                "unsupported attribute",
            ),
            ("path \"a\" { capabilities = [\"read\"]", "expected"),
            ("path \"a { }", "unterminated string"),
            ("", "no path rules"),
            (
                "{\"path\": {\"a\": {\"capabilities\": \"read\"}}}",
                "must be a list",
            ),
            ("{\"paths\": {}}", "policy JSON must be"),
            ("path \"a\" { capabilities = [] }\n\n%", "line 3"),
        ] {
            let e = parse_policy(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn globs_and_plus_segments() {
        assert!(matches("transit/encrypt/*", "transit/encrypt/k"));
        assert!(matches("transit/encrypt/a*", "transit/encrypt/abc"));
        assert!(!matches("transit/encrypt/a*", "transit/decrypt/abc"));
        assert!(matches("transit/keys", "transit/keys"));
        assert!(!matches("transit/keys", "transit/keys/k"));
        assert!(matches("+/encrypt/k", "other/encrypt/k"));
        assert!(!matches("+/encrypt/k", "a/b/encrypt/k"));
        assert!(matches("+/keys/+", "transit/keys/k"));
        assert!(!matches("+/keys/+", "transit/keys/k/rotate"));
        assert!(matches("+/keys/+/*", "transit/keys/k/rotate"));
        assert!(matches("+/keys/app-*", "transit/keys/app-1"));
        assert!(!matches("+/keys/app-*", "transit/keys/db-1"));
        assert!(matches("*", "anything/at/all"));
    }

    #[test]
    fn most_specific_rule_wins_and_deny_overrides() {
        let a = acl(r#"
            path "transit/*" { capabilities = ["read", "update"] }
            path "transit/decrypt/*" { capabilities = ["deny"] }
            path "transit/decrypt/ok" { capabilities = ["update"] }
        "#);
        assert!(a.allows("transit/encrypt/x", Caps::UPDATE));
        assert!(!a.allows("transit/decrypt/x", Caps::UPDATE));
        assert!(a.allows("transit/decrypt/ok", Caps::UPDATE));
        assert!(!a.allows("sys/mounts", Caps::READ));
        assert!(!a.allows("transit/encrypt/x", Caps::NONE));

        // Same pattern in two policies: united, and deny wins.
        let p1 = parse_policy(r#"path "k/*" { capabilities = ["read"] }"#).unwrap();
        let p2 = parse_policy(r#"path "k/*" { capabilities = ["update"] }"#).unwrap();
        let p3 = parse_policy(r#"path "k/*" { capabilities = ["deny"] }"#).unwrap();
        let both = Acl::new([p1.as_slice(), p2.as_slice()]);
        assert!(both.allows("k/x", Caps::READ) && both.allows("k/x", Caps::UPDATE));
        let denied = Acl::new([p1.as_slice(), p3.as_slice()]);
        assert_eq!(denied.capabilities("k/x"), Caps::NONE);
    }
}
