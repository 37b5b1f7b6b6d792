//! An independent reference model of the server's authorization, written
//! from the specification of the authorization fix (paths, routes, verbs
//! and ACL checks) and docs/API.md, not from the server's code.
//!
//! [`evaluate`] tells, for one HTTP request, what the server may answer as
//! far as authorization goes: 403 (denied), or anything but 403 (allowed,
//! or refused before authorization with 400/404/405). Where the
//! specification leaves a choice open, the model tries every reading (a
//! [`Chooser`] enumerates the choice points a request touches) and accepts
//! the union of their answers; each choice point has a name, so a run can
//! say how often the server relied on one.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use serde_json::Value;

// ---------------------------------------------------------------- capabilities

pub const CREATE: u8 = 1;
pub const READ: u8 = 2;
pub const UPDATE: u8 = 4;
pub const DELETE: u8 = 8;
pub const LIST: u8 = 16;
pub const SUDO: u8 = 32;
pub const DENY: u8 = 64;

pub const CAP_NAMES: [(&str, u8); 7] = [
    ("create", CREATE),
    ("read", READ),
    ("update", UPDATE),
    ("delete", DELETE),
    ("list", LIST),
    ("sudo", SUDO),
    ("deny", DENY),
];

pub fn cap_names(c: u8) -> Vec<&'static str> {
    CAP_NAMES
        .iter()
        .filter(|(_, b)| c & b != 0)
        .map(|(n, _)| *n)
        .collect()
}

/// One path rule of a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub pattern: String,
    pub caps: u8,
}

/// The policy as HCL.
pub fn to_hcl(rules: &[Rule]) -> String {
    let mut s = String::new();
    for r in rules {
        let caps: Vec<String> = cap_names(r.caps)
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect();
        s.push_str(&format!(
            "path \"{}\" {{\n  capabilities = [{}]\n}}\n",
            r.pattern,
            caps.join(", ")
        ));
    }
    s
}

/// The policy as Vault's JSON form.
pub fn to_json(rules: &[Rule]) -> String {
    let mut paths = serde_json::Map::new();
    for r in rules {
        paths.insert(
            r.pattern.clone(),
            serde_json::json!({"capabilities": cap_names(r.caps)}),
        );
    }
    serde_json::json!({ "path": paths }).to_string()
}

/// Parses a policy text (the subset of HCL the server prints for roles:
/// `path "P" { capabilities = ["a", ...] }` blocks and `#` comments, or
/// Vault's JSON form).
pub fn parse_policy(text: &str) -> Result<Vec<Rule>, String> {
    let t = text.trim_start();
    if t.starts_with('{') {
        let v: Value = serde_json::from_str(t).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for (p, body) in v["path"].as_object().ok_or("no path object")? {
            out.push(Rule {
                pattern: p.clone(),
                caps: caps_of(&body["capabilities"])?,
            });
        }
        return Ok(out);
    }
    // Tokenize: strings, identifiers and punctuation, dropping comments.
    let mut toks: Vec<String> = Vec::new();
    let cs: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c == '#' || (c == '/' && cs.get(i + 1) == Some(&'/')) {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if c.is_whitespace() || c == ',' {
            i += 1;
        } else if c == '"' {
            let mut s = String::from("\"");
            i += 1;
            while i < cs.len() && cs[i] != '"' {
                if cs[i] == '\\' && i + 1 < cs.len() {
                    i += 1;
                }
                s.push(cs[i]);
                i += 1;
            }
            i += 1;
            toks.push(s);
        } else if "{}[]=".contains(c) {
            toks.push(c.to_string());
            i += 1;
        } else {
            let mut s = String::new();
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                s.push(cs[i]);
                i += 1;
            }
            if s.is_empty() {
                return Err(format!("unexpected {c:?}"));
            }
            toks.push(s);
        }
    }
    let mut out = Vec::new();
    let mut k = 0;
    let at = |k: usize| toks.get(k).cloned().unwrap_or_default();
    while k < toks.len() {
        if at(k) != "path" || !at(k + 1).starts_with('"') || at(k + 2) != "{" {
            return Err(format!("expected path block at token {k}: {:?}", at(k)));
        }
        let pattern = at(k + 1)[1..].to_owned();
        k += 3;
        let mut caps = 0;
        while at(k) != "}" {
            if k >= toks.len() {
                return Err("unterminated block".into());
            }
            if at(k) == "capabilities" && at(k + 1) == "=" && at(k + 2) == "[" {
                k += 3;
                while at(k) != "]" {
                    let name = at(k);
                    let name = name.strip_prefix('"').ok_or("capability not a string")?;
                    caps |= cap_bit(name)?;
                    k += 1;
                }
                k += 1;
            } else {
                return Err(format!("unexpected {:?} in block", at(k)));
            }
        }
        k += 1;
        out.push(Rule { pattern, caps });
    }
    Ok(out)
}

fn cap_bit(name: &str) -> Result<u8, String> {
    CAP_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .ok_or_else(|| format!("unknown capability {name}"))
}

fn caps_of(v: &Value) -> Result<u8, String> {
    let mut c = 0;
    for n in v.as_array().ok_or("capabilities not a list")? {
        c |= cap_bit(n.as_str().ok_or("capability not a string")?)?;
    }
    Ok(c)
}

// ---------------------------------------------------------------- patterns

/// Whether a Vault pattern matches a canonical path (no empty segments):
/// a trailing `*` matches any suffix, a `+` segment exactly one segment.
pub fn pattern_matches(pattern: &str, path: &str) -> bool {
    let (body, glob) = match pattern.strip_suffix('*') {
        Some(b) => (b, true),
        None => (pattern, false),
    };
    if !body.split('/').any(|s| s == "+") {
        return if glob {
            path.starts_with(body)
        } else {
            path == body
        };
    }
    let pat: Vec<&str> = body.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    if (glob && segs.len() < pat.len()) || (!glob && segs.len() != pat.len()) {
        return false;
    }
    for (i, p) in pat.iter().enumerate() {
        let s = segs[i];
        if *p == "+" {
            if s.is_empty() {
                return false;
            }
        } else if glob && i + 1 == pat.len() {
            if !s.starts_with(p) {
                return false;
            }
        } else if s != *p {
            return false;
        }
    }
    true
}

/// Vault's priority of a pattern, highest wins, without the last tie-break
/// (Vault's rule 5, lexicographic order, which acl.rs does not state):
/// later first wildcard, then no trailing `*`, then fewer `+` segments,
/// then longer.
pub fn priority(pattern: &str) -> (usize, bool, isize, usize) {
    let star = pattern.find('*');
    let mut plus = None;
    let mut off = 0;
    let mut nplus = 0;
    for seg in pattern.split('/') {
        if seg == "+" {
            nplus += 1;
            plus.get_or_insert(off);
        }
        off += seg.len() + 1;
    }
    let first = match (star, plus) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => pattern.len(),
    };
    (first, !pattern.ends_with('*'), -nplus, pattern.len())
}

// ---------------------------------------------------------------- choices

/// Enumerates the readings of a request: every open question of the
/// specification the evaluation meets is a numbered choice.
#[derive(Default)]
pub struct Chooser {
    script: Vec<usize>,
    trace: Vec<(usize, usize, &'static str)>,
}

impl Chooser {
    pub fn choose(&mut self, n: usize, why: &'static str) -> usize {
        let i = self.trace.len();
        let c = self.script.get(i).copied().unwrap_or(0).min(n - 1);
        self.trace.push((c, n, why));
        c
    }

    /// Prepares the next reading; false when all were tried.
    fn advance(&mut self) -> bool {
        while let Some((c, n, _)) = self.trace.pop() {
            if c + 1 < n {
                self.script = self.trace.iter().map(|t| t.0).collect();
                self.script.push(c + 1);
                self.trace.clear();
                return true;
            }
        }
        false
    }
}

// ---------------------------------------------------------------- world

/// What a token is, for the model.
#[derive(Clone, Debug)]
pub enum Who {
    Root,
    Policies(Vec<String>),
}

/// A role policy as docs/API.md describes it: `role` over keys `keys`
/// (a glob with a trailing `*`, or every key).
#[derive(Clone, Debug)]
pub struct RoleDef {
    pub role: String,
    pub keys: Option<String>,
}

/// Everything the model knows about the server's state.
#[derive(Default)]
pub struct World {
    /// Transit mounts (case-sensitive names).
    pub mounts: Vec<String>,
    /// Policy name -> rules (role policies: the text the server prints).
    pub policies: HashMap<String, Vec<Rule>>,
    /// Role policies: name -> role and keys.
    pub roles: HashMap<String, RoleDef>,
    /// Valid token -> who.
    pub tokens: HashMap<String, Who>,
    /// lbx1 key id -> key name.
    pub key_ids: HashMap<[u8; 4], String>,
}

// ---------------------------------------------------------------- requests

#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    /// The raw path after `/v1/`.
    pub path: String,
    /// The raw query, without `?`.
    pub query: Option<String>,
    pub x_vault_token: Option<String>,
    pub bearer: Option<String>,
    pub body: Option<Value>,
}

/// One reading's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Out {
    /// 403.
    Deny,
    /// Authorized: the work is done (any status but 403).
    Allow,
    /// A definite answer other than 403 that does no work (400, 404, 405).
    Status(u16),
}

/// What the server may answer, over all readings.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    pub deny: bool,
    pub allow: bool,
    pub statuses: BTreeSet<u16>,
    /// Names of the choice points met (empty: one reading).
    pub choices: BTreeSet<&'static str>,
    /// The first reading, explained.
    pub explain: String,
    /// The route's kind (for grouping differences).
    pub kind: String,
    /// The docs' role table contradicted the role's policy text here.
    pub role_doc_conflict: bool,
}

impl Expect {
    /// Whether `status` is an answer the model accepts.
    pub fn accepts(&self, status: u16) -> bool {
        if status == 403 {
            return self.deny;
        }
        if status == 429 || status >= 500 {
            return false;
        }
        !self.deny || self.allow || self.statuses.contains(&status)
    }

    pub fn describe(&self) -> String {
        match (self.deny, self.allow || !self.statuses.is_empty()) {
            (true, false) => "deny (403)".into(),
            (false, _) => "allow (not 403)".into(),
            (true, true) if self.allow => "either (ambiguous)".into(),
            (true, true) => format!("403 or {:?}", self.statuses),
        }
    }
}

/// The model's verdict on one request.
pub fn evaluate(world: &World, req: &Req) -> Expect {
    let mut ch = Chooser::default();
    let mut e = Expect::default();
    let mut first = true;
    for _ in 0..256 {
        let mut cx = Cx {
            w: world,
            ch: &mut ch,
            log: String::new(),
            kind: String::from("?"),
            role_doc_conflict: false,
        };
        let out = cx.eval(req);
        let (log, kind, rdc) = (cx.log, cx.kind, cx.role_doc_conflict);
        if first {
            e.explain = log;
            e.kind = kind;
            first = false;
        }
        e.role_doc_conflict |= rdc;
        match out {
            Out::Deny => e.deny = true,
            Out::Allow => e.allow = true,
            Out::Status(s) => {
                e.statuses.insert(s);
            }
        }
        for t in &ch.trace {
            e.choices.insert(t.2);
        }
        if !ch.advance() {
            break;
        }
    }
    e
}

// ---------------------------------------------------------------- paths

/// Percent-decodes the raw path as a whole; None for a bad `%` or non-UTF-8.
pub fn decode_path(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = |c: u8| (c as char).to_digit(16);
            let hi = b.get(i + 1).copied().and_then(h)?;
            let lo = b.get(i + 2).copied().and_then(h)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The canonical segments, or None for a path error (400).
pub fn segments(raw: &str) -> Option<Vec<String>> {
    let d = decode_path(raw)?;
    let segs: Vec<String> = d
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if segs.iter().any(|s| s == "." || s == "..") {
        return None;
    }
    Some(segs)
}

/// 1-128 of A-Z a-z 0-9 - _ .
pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

fn form_decode(s: &str) -> String {
    decode_path(&s.replace('+', " ")).unwrap_or_else(|| s.to_owned())
}

const TRUE_VALUES: [&str; 6] = ["1", "t", "T", "TRUE", "true", "True"];

// ---------------------------------------------------------------- routes

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Verb {
    Read,
    Update,
    Delete,
    List,
}

/// What a check is about, for the docs' role table.
#[derive(Clone, Debug)]
struct Op {
    name: &'static str,
    /// The Transit mount (None for the native API and sys/auth).
    mount: Option<String>,
    key: Option<String>,
}

fn op(name: &'static str, mount: Option<&str>, key: Option<&str>) -> Op {
    Op {
        name,
        mount: mount.map(str::to_owned),
        key: key.map(str::to_owned),
    }
}

/// A matched route.
enum Route {
    Public(&'static [&'static str]),
    SelfService(&'static [&'static str]),
    /// verbs with sudo; path keys to validate; the ACL path; the op.
    Plain {
        verbs: Vec<(Verb, bool)>,
        keys: Vec<String>,
        acl: String,
        op: Op,
        /// Names that are not key names but are checked like them?
        names: Vec<String>,
    },
    NativeDecrypt,
    Records(&'static str),
    Envelope(&'static str),
}

struct Cx<'a> {
    w: &'a World,
    ch: &'a mut Chooser,
    log: String,
    kind: String,
    role_doc_conflict: bool,
}

const U: (Verb, bool) = (Verb::Update, false);
const US: (Verb, bool) = (Verb::Update, true);
const R: (Verb, bool) = (Verb::Read, false);
const L: (Verb, bool) = (Verb::List, false);
const D: (Verb, bool) = (Verb::Delete, false);
const DS: (Verb, bool) = (Verb::Delete, true);

impl Cx<'_> {
    fn note(&mut self, s: &str) {
        self.log.push_str(s);
        self.log.push_str("; ");
    }

    fn eval(&mut self, req: &Req) -> Out {
        let Some(segs) = segments(&req.path) else {
            self.kind = if decode_path(&req.path).is_none() {
                "path error (bad escape or not UTF-8)".into()
            } else {
                "path error (dot segment)".into()
            };
            self.note("path error");
            return Out::Status(400);
        };
        let canon = segs.join("/");
        self.note(&format!("path {canon:?}"));
        // The verb: GET with a true `list` parameter is LIST.
        let via_query = req.method == "GET" && self.list_param(req.query.as_deref());
        let method: &str = if via_query { "LIST" } else { &req.method };
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        // Public routes.
        let route = self.route(&s);
        if let Some(Route::Public(ms)) = &route {
            let m = if via_query && self.ch.choose(2, "public route with GET ?list") == 1 {
                "GET"
            } else {
                method
            };
            if ms.contains(&m) {
                self.kind = format!("public {canon}");
                return Out::Allow;
            }
        }
        // The token.
        let tok = self.token(req);
        let who = match tok.and_then(|t| self.w.tokens.get(t)) {
            Some(w) => w.clone(),
            None => {
                self.kind = "no valid token".into();
                self.note("no valid token");
                return Out::Deny;
            }
        };
        let Some(route) = route else {
            self.kind = format!("no route {}", shape(&s));
            self.note("no route");
            return Out::Status(404);
        };
        let verb = match method {
            "GET" => Verb::Read,
            "POST" | "PUT" => Verb::Update,
            "DELETE" => Verb::Delete,
            "LIST" => Verb::List,
            _ => {
                self.kind = format!("method {method}");
                return Out::Status(405);
            }
        };
        match route {
            Route::Public(ms) => {
                self.kind = format!("public-route other method {canon}");
                let _ = ms;
                Out::Status(405)
            }
            Route::SelfService(ms) => {
                self.kind = format!("self {}", s[2]);
                // GET ?list on lookup-self: 405 as LIST, or served as GET.
                if ms.contains(&method) || (via_query && ms.contains(&"GET")) {
                    Out::Allow
                } else {
                    Out::Status(405)
                }
            }
            Route::Plain {
                verbs,
                keys,
                acl,
                op,
                names,
            } => {
                self.kind = format!("{} {:?}", op.name, verb);
                let mut v = verbs.iter().find(|(x, _)| *x == verb).copied();
                if v.is_none() && verb == Verb::List {
                    // A LIST of a route without LIST: 405, or (a reading
                    // some servers take) served as the GET it came from,
                    // with GET's check.
                    if let Some(r) = verbs.iter().find(|(x, _)| *x == Verb::Read) {
                        if self
                            .ch
                            .choose(2, "LIST on a route without LIST: 405 or GET")
                            == 1
                        {
                            v = Some(*r);
                        }
                    }
                }
                let Some((verb, sudo)) = v else {
                    self.note("method not allowed");
                    return Out::Status(405);
                };
                if keys.iter().any(|k| !valid_key(k)) {
                    self.note("invalid key name");
                    return Out::Status(400);
                }
                if names.iter().any(|k| !valid_key(k))
                    && self.ch.choose(2, "invalid policy/mount name: 400 first") == 0
                {
                    return Out::Status(400);
                }
                let cap = match verb {
                    Verb::Read => READ,
                    Verb::Update => UPDATE,
                    Verb::Delete => DELETE,
                    Verb::List => LIST,
                };
                if !self.allowed(&who, &acl, cap, sudo, &op) {
                    return Out::Deny;
                }
                if op.name == "token-create" {
                    return self.token_create(&who, req.body.as_ref());
                }
                Out::Allow
            }
            Route::NativeDecrypt => {
                self.kind = "lockbox/decrypt".into();
                if verb != Verb::Update {
                    return Out::Status(405);
                }
                self.native_decrypt(&who, req.body.as_ref())
            }
            Route::Records(o) => {
                self.kind = format!("records/{o}");
                if verb != Verb::Update {
                    return Out::Status(405);
                }
                let b = req.body.as_ref();
                let Some(key) = b.and_then(|b| b.get("key")).and_then(Value::as_str) else {
                    return Out::Status(400);
                };
                let idx = b.and_then(|b| b.get("index_key"));
                let idx = match idx {
                    None => None,
                    Some(Value::String(s)) => Some(s.as_str()),
                    Some(_) => return Out::Status(400),
                };
                if !valid_key(key) || idx.is_some_and(|k| !valid_key(k)) {
                    self.note("invalid key name in body");
                    return Out::Status(400);
                }
                let name = match o {
                    "encrypt" => "records-encrypt",
                    "decrypt" => "records-decrypt",
                    _ => "records-search",
                };
                for k in std::iter::once(key).chain(idx) {
                    let path = format!("lockbox/records/{o}/{k}");
                    if !self.allowed(&who, &path, UPDATE, false, &op(name, None, Some(k))) {
                        return Out::Deny;
                    }
                }
                Out::Allow
            }
            Route::Envelope(o) => {
                self.kind = format!("envelope/{o}");
                if verb != Verb::Update {
                    return Out::Status(405);
                }
                let b = req.body.as_ref();
                let key = b.and_then(|b| b.get("key"));
                let tenant = b.and_then(|b| b.get("tenant"));
                let k = match (key, tenant) {
                    (Some(Value::String(k)), None) => k.clone(),
                    (None, Some(Value::String(t))) => format!("tenant-{t}"),
                    _ => {
                        self.note("key xor tenant");
                        return Out::Status(400);
                    }
                };
                if !valid_key(&k) {
                    self.note("invalid key name in body");
                    return Out::Status(400);
                }
                let path = format!("lockbox/envelope/{o}/{k}");
                let name = if o == "encrypt" {
                    "envelope-encrypt"
                } else {
                    "envelope-decrypt"
                };
                if self.allowed(&who, &path, UPDATE, false, &op(name, None, Some(&k))) {
                    Out::Allow
                } else {
                    Out::Deny
                }
            }
        }
    }

    fn list_param(&mut self, query: Option<&str>) -> bool {
        let Some(q) = query else { return false };
        let mut raw_vals: Vec<(String, String)> = Vec::new();
        for part in q.split('&') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            raw_vals.push((k.to_owned(), v.to_owned()));
        }
        let encoded = raw_vals
            .iter()
            .any(|(k, v)| k.contains(['%', '+']) || (k == "list" && v.contains(['%', '+'])));
        let decode = !encoded || self.ch.choose(2, "percent-encoded list parameter") == 0;
        let vals: Vec<String> = raw_vals
            .iter()
            .filter_map(|(k, v)| {
                let (k, v) = if decode {
                    (form_decode(k), form_decode(v))
                } else {
                    (k.clone(), v.clone())
                };
                (k == "list").then_some(v)
            })
            .collect();
        let v = match vals.len() {
            0 => return false,
            1 => &vals[0],
            n => {
                let distinct = vals
                    .iter()
                    .map(|v| TRUE_VALUES.contains(&v.as_str()))
                    .collect::<BTreeSet<_>>()
                    .len();
                if distinct > 1 && self.ch.choose(2, "repeated list parameter") == 1 {
                    &vals[n - 1]
                } else {
                    &vals[0]
                }
            }
        };
        TRUE_VALUES.contains(&v.as_str())
    }

    fn token<'r>(&mut self, req: &'r Req) -> Option<&'r str> {
        let x = req.x_vault_token.as_deref().filter(|t| !t.is_empty());
        let b = req.bearer.as_deref().filter(|t| !t.is_empty());
        match (x, b) {
            (Some(x), Some(b)) if x != b => {
                if self.ch.choose(2, "both token headers") == 0 {
                    Some(x)
                } else {
                    Some(b)
                }
            }
            (Some(x), _) => Some(x),
            (None, b) => b,
        }
    }

    /// The route of the segments, or None (404).
    fn route(&mut self, s: &[&str]) -> Option<Route> {
        let plain = |verbs: Vec<(Verb, bool)>, keys: Vec<&str>, acl: String, op: Op| Route::Plain {
            verbs,
            keys: keys.into_iter().map(str::to_owned).collect(),
            acl,
            op,
            names: Vec::new(),
        };
        let canon = s.join("/");
        let r = match s {
            ["sys", "health"] | ["sys", "seal-status"] | ["openapi.json"] => {
                Route::Public(&["GET"])
            }
            ["sys", "init"] => Route::Public(&["GET", "PUT", "POST"]),
            ["sys", "unseal"] => Route::Public(&["PUT", "POST"]),
            ["auth", "token", "lookup-self"] => Route::SelfService(&["GET", "POST"]),
            ["auth", "token", "renew-self" | "revoke-self"] => Route::SelfService(&["POST"]),
            ["sys", "seal"] => plain(vec![US], vec![], canon, op("seal", None, None)),
            ["sys", "audit"] => plain(vec![R], vec![], canon, op("audit-read", None, None)),
            ["sys", "audit", "verify"] => {
                plain(vec![U], vec![], canon, op("audit-verify", None, None))
            }
            ["sys", "audit", "query"] => {
                plain(vec![R, U], vec![], canon, op("audit-query", None, None))
            }
            ["sys", "audit-hash"] => plain(vec![U], vec![], canon, op("audit-hash", None, None)),
            ["sys", "metrics"] => plain(vec![R], vec![], canon, op("metrics", None, None)),
            ["sys", "events"] => plain(vec![U], vec![], canon, op("events", None, None)),
            ["auth", "token", t @ ("create" | "lookup" | "lookup-accessor" | "renew" | "renew-accessor"
            | "revoke" | "revoke-accessor")] => {
                let name = if *t == "create" {
                    "token-create"
                } else {
                    "token-admin"
                };
                plain(vec![U], vec![], canon, op(name, None, None))
            }
            ["auth", "token", "create-orphan" | "revoke-orphan"] => {
                plain(vec![US], vec![], canon, op("token-sudo", None, None))
            }
            ["sys", "policies", "acl"] => {
                plain(vec![L, R], vec![], canon, op("policies-read", None, None))
            }
            ["sys", "policy"] => plain(vec![R], vec![], canon, op("policies-read", None, None)),
            ["sys", "policies", "acl", n] | ["sys", "policy", n] => Route::Plain {
                verbs: vec![R, US, DS],
                keys: vec![],
                acl: canon,
                op: op("policy-write", None, None),
                names: vec![(*n).to_owned()],
            },
            ["sys", "mounts"] => plain(vec![R], vec![], canon, op("mounts-read", None, None)),
            ["sys", "mounts", p] => Route::Plain {
                verbs: vec![US, DS],
                keys: vec![],
                acl: canon,
                op: op("mount-write", None, None),
                names: vec![(*p).to_owned()],
            },
            ["lockbox", "encrypt", k] => {
                plain(vec![U], vec![k], canon, op("encrypt", None, Some(k)))
            }
            ["lockbox", "keys", k, "backup"] => {
                plain(vec![U], vec![k], canon, op("backup", None, Some(k)))
            }
            ["lockbox", "keys", k, o @ ("destroy" | "import" | "restore")] => {
                let name = match *o {
                    "destroy" => "destroy",
                    "import" => "import",
                    _ => "undelete",
                };
                plain(vec![US], vec![k], canon, op(name, None, Some(k)))
            }
            ["lockbox", "restore"] => plain(vec![US], vec![], canon, op("restore", None, None)),
            ["lockbox", "restore", k] => {
                plain(vec![US], vec![k], canon, op("restore", None, Some(k)))
            }
            ["lockbox", "decrypt"] => Route::NativeDecrypt,
            ["lockbox", "records", "encrypt"] => Route::Records("encrypt"),
            ["lockbox", "records", "decrypt"] => Route::Records("decrypt"),
            ["lockbox", "records", "search"] => Route::Records("search"),
            ["lockbox", "envelope", "encrypt"] => Route::Envelope("encrypt"),
            ["lockbox", "envelope", "decrypt"] => Route::Envelope("decrypt"),
            [m, rest @ ..] if !rest.is_empty() => {
                let mount = if self.w.mounts.iter().any(|x| x == m) {
                    (*m).to_owned()
                } else {
                    let lower = m.to_ascii_lowercase();
                    if self.w.mounts.contains(&lower)
                        && self.ch.choose(2, "mount name in another case") == 1
                    {
                        lower
                    } else {
                        return None;
                    }
                };
                let mut segs = vec![mount.as_str()];
                segs.extend_from_slice(rest);
                let canon = segs.join("/");
                return transit_route(&mount, rest, canon);
            }
            _ => return None,
        };
        Some(r)
    }

    /// Whether the token passes one ACL check.
    fn allowed(&mut self, who: &Who, path: &str, cap: u8, sudo: bool, op: &Op) -> bool {
        let pols = match who {
            Who::Root => {
                self.note(&format!("root: {path}"));
                return true;
            }
            Who::Policies(p) => p,
        };
        let by_text = self.acl(pols, path, cap, sudo);
        // A token made only of role policies: the docs' table decides where
        // it is clear; the role's policy text elsewhere.
        if !pols.is_empty() && pols.iter().all(|p| self.w.roles.contains_key(p)) {
            let mut any_yes = false;
            let mut all_no = true;
            for p in pols {
                let r = &self.w.roles[p];
                match role_table(&r.role, r.keys.as_deref(), op, cap) {
                    Some(true) => {
                        any_yes = true;
                        all_no = false;
                    }
                    Some(false) => {}
                    None => all_no = false,
                }
            }
            let doc = if any_yes {
                Some(true)
            } else if all_no {
                Some(false)
            } else {
                None
            };
            if let Some(d) = doc {
                if d != by_text {
                    self.role_doc_conflict = true;
                    self.note(&format!(
                        "ROLE TABLE says {} but the role text says {} for {path}",
                        if d { "allow" } else { "deny" },
                        if by_text { "allow" } else { "deny" }
                    ));
                }
                return d;
            }
        }
        by_text
    }

    /// The ACL check on the policies' rules.
    fn acl(&mut self, pols: &[String], path: &str, cap: u8, sudo: bool) -> bool {
        let mut merged: Vec<(&str, u8)> = Vec::new();
        for p in pols {
            for r in self.w.policies.get(p).map(Vec::as_slice).unwrap_or(&[]) {
                if pattern_matches(&r.pattern, path) {
                    match merged.iter_mut().find(|(q, _)| *q == r.pattern) {
                        Some(m) => m.1 |= r.caps,
                        None => merged.push((&r.pattern, r.caps)),
                    }
                }
            }
        }
        let Some(best) = merged.iter().map(|(p, _)| priority(p)).max() else {
            self.note(&format!("{path}: no rule"));
            return false;
        };
        let mut top: Vec<(&str, u8)> = merged
            .into_iter()
            .filter(|(p, _)| priority(p) == best)
            .collect();
        // Vault's last tie-break: the lexicographically greatest.
        top.sort_by(|a, b| b.0.cmp(a.0));
        let decide = |caps: u8| {
            caps & DENY == 0
                && (if cap == UPDATE {
                    caps & (CREATE | UPDATE) != 0
                } else {
                    caps & cap != 0
                })
                && (!sudo || caps & SUDO != 0)
        };
        let pick = if top.len() > 1 && top.iter().any(|t| decide(t.1) != decide(top[0].1)) {
            self.ch
                .choose(top.len(), "tie between patterns of equal priority")
        } else {
            0
        };
        let (pat, caps) = top[pick];
        let ok = decide(caps);
        self.note(&format!(
            "{path} needs {}{} -> {pat:?} {:?} -> {}",
            cap_names(cap).join(""),
            if sudo { "+sudo" } else { "" },
            cap_names(caps),
            if ok { "ok" } else { "DENIED" }
        ));
        ok
    }

    fn token_create(&mut self, who: &Who, body: Option<&Value>) -> Out {
        let pols: Vec<String> = body
            .and_then(|b| b.get("policies"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let exist = pols
            .iter()
            .all(|p| p != "root" && self.w.policies.contains_key(p));
        let own: Vec<String> = match who {
            Who::Root => return Out::Allow,
            Who::Policies(p) => p.clone(),
        };
        let sudo = self.acl(&own, "auth/token/create", UPDATE, true);
        if sudo {
            return if exist { Out::Allow } else { Out::Status(400) };
        }
        // Without a ttl a child gets the default, capped at its parent's
        // expiry (docs: every token expires).
        if exist && !pols.is_empty() && pols.iter().all(|p| own.contains(p)) {
            return Out::Allow;
        }
        // Handing out a policy one does not hold: Vault says 403, a 400
        // is as safe; the token must not be made.
        if self
            .ch
            .choose(2, "token create beyond own policies: 400 or 403")
            == 0
        {
            Out::Status(400)
        } else {
            Out::Deny
        }
    }

    fn native_decrypt(&mut self, who: &Who, body: Option<&Value>) -> Out {
        let Some(b) = body.filter(|b| b.is_object()) else {
            return Out::Status(400);
        };
        let single: Vec<&Value> = b.get("ciphertext").into_iter().collect();
        let batch: Vec<&Value> = b
            .get("batch_input")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|it| it.get("ciphertext"))
            .collect();
        let both = !single.is_empty() && b.get("batch_input").is_some();
        // Both forms at once (the specification does not say): refused
        // (400), or every item checked, or only one form used (then the
        // answer must decrypt nothing of the other: checked separately on
        // the response by the test).
        let items: Vec<&Value> = if both {
            self.note("both ciphertext and batch_input");
            match self.ch.choose(4, "both ciphertext and batch_input") {
                0 => single.iter().chain(batch.iter()).copied().collect(),
                1 => return Out::Status(400),
                2 => batch,
                _ => single,
            }
        } else {
            single.into_iter().chain(batch).collect()
        };
        let mut denied = false;
        for c in items {
            let Some(s) = c.as_str() else { continue };
            let Some(kid) = lbx1_key_id(s) else { continue };
            let name = match self.w.key_ids.get(&kid) {
                Some(n) => n.clone(),
                None => {
                    if self.ch.choose(2, "lbx1 item of an unknown key id") == 1 {
                        denied = true;
                    }
                    continue;
                }
            };
            let path = format!("lockbox/decrypt/{name}");
            if !self.allowed(who, &path, UPDATE, false, &op("decrypt", None, Some(&name))) {
                denied = true;
            }
        }
        if denied {
            Out::Deny
        } else {
            Out::Allow
        }
    }
}

/// Whether the token of `req` passes the ACL check of `path` (first
/// reading where patterns tie; the docs' role table as in [`evaluate`]).
/// None if the request carries no valid token.
pub fn token_may(
    world: &World,
    req: &Req,
    path: &str,
    cap: u8,
    name: &'static str,
    key: &str,
) -> Option<bool> {
    let mut ch = Chooser::default();
    let mut cx = Cx {
        w: world,
        ch: &mut ch,
        log: String::new(),
        kind: String::new(),
        role_doc_conflict: false,
    };
    let who = cx.token(req).and_then(|t| world.tokens.get(t))?.clone();
    Some(cx.allowed(&who, path, cap, false, &op(name, None, Some(key))))
}

/// Route words kept as they are in a path's shape; other segments become `K`.
const VOCAB: [&str; 52] = [
    "transit",
    "m2",
    "sys",
    "auth",
    "token",
    "lockbox",
    "keys",
    "encrypt",
    "decrypt",
    "rewrap",
    "datakey",
    "plaintext",
    "wrapped",
    "hmac",
    "sign",
    "verify",
    "random",
    "hash",
    "cache-config",
    "export",
    "backup",
    "restore",
    "records",
    "search",
    "envelope",
    "destroy",
    "import",
    "config",
    "rotate",
    "trim",
    "policies",
    "acl",
    "policy",
    "mounts",
    "audit",
    "query",
    "audit-hash",
    "metrics",
    "events",
    "seal",
    "health",
    "seal-status",
    "init",
    "unseal",
    "create",
    "lookup",
    "lookup-self",
    "renew-self",
    "openapi.json",
    "nope",
    "encryption-key",
    "extra",
];

/// A path's shape, for grouping: route words kept, names as `K`.
pub fn shape(s: &[&str]) -> String {
    let v: Vec<&str> = s
        .iter()
        .map(|x| if VOCAB.contains(x) { *x } else { "K" })
        .collect();
    if v.is_empty() {
        "(empty)".into()
    } else {
        v.join("/")
    }
}

fn transit_route(mount: &str, rest: &[&str], canon: String) -> Option<Route> {
    let m = Some(mount);
    let plain = |verbs: Vec<(Verb, bool)>, keys: Vec<&str>, op: Op| Route::Plain {
        verbs,
        keys: keys.into_iter().map(str::to_owned).collect(),
        acl: canon.clone(),
        op,
        names: Vec::new(),
    };
    let r = match rest {
        ["keys"] => plain(vec![L, R], vec![], op("keys-list", m, None)),
        ["keys", k] => Route::Plain {
            verbs: vec![R, U, D],
            keys: vec![(*k).to_owned()],
            acl: canon.clone(),
            op: op("key", m, Some(k)),
            names: vec![],
        },
        ["keys", k, "config"] => plain(vec![U], vec![k], op("key-config", m, Some(k))),
        ["keys", k, "rotate"] => plain(vec![U], vec![k], op("key-rotate", m, Some(k))),
        ["keys", k, "trim"] => plain(vec![US], vec![k], op("key-trim", m, Some(k))),
        [o @ ("encrypt" | "decrypt" | "rewrap"), k] => {
            let name = match *o {
                "encrypt" => "encrypt",
                "decrypt" => "decrypt",
                _ => "rewrap",
            };
            plain(vec![U], vec![k], op(name, m, Some(k)))
        }
        ["datakey", "plaintext" | "wrapped", k] => {
            plain(vec![U], vec![k], op("datakey", m, Some(k)))
        }
        [o @ ("hmac" | "sign" | "verify"), k] | [o @ ("hmac" | "sign" | "verify"), k, _] => {
            let name = match *o {
                "hmac" => "hmac",
                "sign" => "sign",
                _ => "verify",
            };
            plain(vec![U], vec![k], op(name, m, Some(k)))
        }
        ["random"] | ["random", _] | ["random", _, _] => {
            plain(vec![U], vec![], op("random", m, None))
        }
        ["hash"] | ["hash", _] => plain(vec![U], vec![], op("hash", m, None)),
        ["cache-config"] => plain(vec![R, U], vec![], op("cache-config", m, None)),
        ["export", _, k] | ["export", _, k, _] => plain(vec![R], vec![k], op("export", m, Some(k))),
        ["backup", k] => plain(vec![R], vec![k], op("backup", m, Some(k))),
        ["restore"] => plain(vec![US], vec![], op("restore", m, None)),
        ["restore", k] => plain(vec![US], vec![k], op("restore", m, Some(k))),
        _ => return None,
    };
    Some(r)
}

/// The key id named by an lbx1 text ciphertext whose header parses.
pub fn lbx1_key_id(s: &str) -> Option<[u8; 4]> {
    let b64 = s.strip_prefix("lbx1:")?;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64)
        .ok()?;
    let alg = *b.first()?;
    let flags = *b.get(1)?;
    let nonce = match alg {
        1 | 2 | 3 | 5 => 12,
        4 => 24,
        6 => 0,
        _ => return None,
    };
    if flags & !3 != 0 {
        return None;
    }
    let kid: [u8; 4] = b.get(2..6)?.try_into().ok()?;
    let version = u32::from_be_bytes(b.get(6..10)?.try_into().ok()?);
    if version == 0 {
        return None;
    }
    let mut off = 10 + 32;
    if flags & 2 != 0 {
        off += 8;
    }
    if flags & 1 != 0 {
        let n = u16::from_be_bytes(b.get(off..off + 2)?.try_into().ok()?) as usize;
        off += 2 + n;
    }
    if b.len() < off + nonce + 16 {
        return None;
    }
    Some(kid)
}

fn glob_match(glob: Option<&str>, key: &str) -> bool {
    match glob {
        None => true,
        Some(g) => match g.strip_suffix('*') {
            Some(p) => key.starts_with(p),
            None => key == g,
        },
    }
}

/// docs/API.md's table of built-in roles, read narrowly: Some(true) where
/// the table says the role may, Some(false) where it says it may not (or
/// the key is not the role's), None where the table does not say.
fn role_table(role: &str, keys: Option<&str>, op: &Op, cap: u8) -> Option<bool> {
    let key_op = op.key.is_some() || op.mount.is_some();
    if let Some(k) = &op.key {
        if !glob_match(keys, k) {
            return Some(false);
        }
    }
    // "over all keys": the transit mount's for sure; other mounts are not said.
    let on_transit = match op.mount.as_deref() {
        None => true,
        Some(m) => m == "transit",
    };
    let scoped = keys.is_some();
    let n = op.name;
    match role {
        "admin" => (key_op || !scoped).then_some(true),
        "app" => match n {
            "encrypt" | "decrypt" | "rewrap" | "datakey" | "records-encrypt"
            | "records-decrypt" | "records-search" => on_transit.then_some(true),
            "keys-list" | "key" | "key-config" | "key-rotate" | "key-trim" | "destroy"
            | "import" | "undelete" | "export" | "backup" | "restore" => Some(false),
            "seal" | "audit-read" | "audit-verify" | "audit-query" | "audit-hash" | "metrics"
            | "events" | "policies-read" | "policy-write" | "mounts-read" | "mount-write" => {
                Some(false)
            }
            _ => None,
        },
        "operator" => match n {
            // list, read, create (not delete), rotate, config keys.
            "key" if cap == DELETE => Some(false),
            "key" | "key-config" | "key-rotate" => on_transit.then_some(true),
            // "list keys": LIST; a GET of the collection is not said.
            "keys-list" => (on_transit && !scoped && cap == LIST).then_some(true),
            "decrypt" | "rewrap" | "records-decrypt" | "envelope-decrypt" | "export" | "backup"
            | "restore" | "destroy" | "undelete" | "key-trim" | "policy-write"
            | "policies-read" => Some(false),
            "mounts-read" | "metrics" => (!scoped).then_some(true),
            _ => None,
        },
        "auditor" => match n {
            "audit-read" | "audit-verify" | "audit-query" | "audit-hash" | "metrics" => {
                (!scoped).then_some(true)
            }
            _ if key_op => Some(false),
            _ => None,
        },
        _ => None,
    }
}
