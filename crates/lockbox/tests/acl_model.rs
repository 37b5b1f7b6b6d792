//! The server's authorization against an independent model of it.
//!
//! `server_matches_acl_model` generates ACL policies, tokens and requests
//! (every route and method of the authorization specification, with path
//! encodings, `list` query parameters, body keys and native ciphertexts of
//! other keys) and checks, for each request, that the in-process server
//! answers 403 exactly when the model (tests/acl_model/model.rs, written
//! from the specification and docs/API.md, not from the server's code)
//! denies it; a 429 or a 5xx is a failure too. It collects every
//! difference and fails at the end with their count, their classes and
//! the first 20.
//!
//! Settings (environment):
//! - `LOCKBOX_ACL_CASES`: requests to generate (default 100 000);
//! - `LOCKBOX_ACL_SEED`: the generator's seed (default fixed, printed);
//! - `LOCKBOX_ACL_ONLY`: comma-separated request numbers to run alone
//!   (with the same seed and count), to replay a difference.
//!
//! The plain tests at the end are regressions for an outside review's
//! findings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "acl_model/model.rs"]
mod model;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use base64::Engine as _;
use lockbox::rootkey::RootKey;
use lockbox_engine::{Engine, EngineConfig};
use lockbox_server::ServerConfig;
use model::{Expect, Req, RoleDef, Rule, Who, World};
use serde_json::{json, Value};
use tower::ServiceExt;

const ROOT: &str = "root-token-for-acl-model";
const DEFAULT_SEED: u64 = 0x1bad_5eed_ac10_0001;
const DEFAULT_CASES: usize = 100_000;

// ---------------------------------------------------------------- random

/// SplitMix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn pick_str<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    /// Picks by weight.
    fn weighted<'a, T>(&mut self, xs: &'a [(u32, T)]) -> &'a T {
        let total: u32 = xs.iter().map(|x| x.0).sum();
        let mut r = self.below(total as usize) as u32;
        for (w, x) in xs {
            if r < *w {
                return x;
            }
            r -= w;
        }
        &xs[0].1
    }
}

// ---------------------------------------------------------------- server

/// An in-process server on an in-memory store, unsealed, with a root token.
struct Srv {
    router: Router,
    engine: Engine,
    root_key: Vec<u8>,
}

impl Srv {
    async fn start() -> Srv {
        let store = lockbox_store::Store::connect("sqlite::memory:")
            .await
            .unwrap();
        let engine = Engine::open(store, EngineConfig::default()).await.unwrap();
        let root = RootKey::generate().unwrap();
        let root_key = root.expose_secret().expose_secret().to_vec();
        engine.unseal_with_master_key(root).await.unwrap();
        engine.reset_root_token(Some(ROOT)).await.unwrap();
        let router = lockbox_server::router(engine.clone(), ServerConfig::default());
        Srv {
            router,
            engine,
            root_key,
        }
    }

    /// One request; `target` is what follows `/v1/` (path and query).
    async fn raw(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<(u16, String), String> {
        let m = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut b = Request::builder().method(m).uri(format!("/v1/{target}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b
            .body(body.map_or_else(Body::empty, Body::from))
            .map_err(|e| e.to_string())?;
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        target: &str,
        body: Value,
    ) -> (u16, Value) {
        let h: Vec<(&str, &str)> = token.map(|t| ("x-vault-token", t)).into_iter().collect();
        let body = (!body.is_null()).then(|| body.to_string());
        let (s, text) = self.raw(method, target, &h, body).await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (s, v)
    }

    async fn root(&self, method: &str, target: &str, body: Value) -> Value {
        let (s, v) = self.call(Some(ROOT), method, target, body).await;
        assert!(s < 300, "{method} {target}: {s} {v}");
        v
    }

    async fn token(&self, policies: &[&str]) -> String {
        let v = self
            .root(
                "POST",
                "auth/token/create",
                json!({"policies": policies, "ttl": "2h"}),
            )
            .await;
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    async fn policy(&self, name: &str, rules: &[Rule], hcl: bool) {
        let text = if hcl {
            model::to_hcl(rules)
        } else {
            model::to_json(rules)
        };
        self.root(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            json!({ "policy": text }),
        )
        .await;
    }

    async fn unseal_again(&self) {
        if self.engine.is_sealed() {
            let k = RootKey::from_bytes(&self.root_key).unwrap();
            self.engine.unseal_with_master_key(k).await.unwrap();
        }
    }
}

fn ct_of(v: &Value) -> String {
    v["data"]["ciphertext"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------- the world

/// Keys created on `transit` (ed25519 `sig-1` signs; the others encrypt).
const TRANSIT_KEYS: [&str; 7] = [
    "app-1",
    "app-2",
    "db-1",
    "billing-a",
    "billing-b",
    "a.b",
    "...",
];
/// Key names requests use: real ones, missing ones, odd but valid ones.
const KEY_POOL: [&str; 14] = [
    "app-1",
    "app-2",
    "db-1",
    "sig-1",
    "billing-a",
    "billing-b",
    "tenant-acme",
    "tenant-globex",
    "m2-k",
    "missing-1",
    "App-1",
    "a.b",
    "...",
    "x_y",
];
/// Key names that are not valid (or not one segment), for paths and bodies.
const BAD_KEYS: [&str; 10] = [
    "m2/app-1",
    "transit/app-1",
    "app-1/backup",
    "app%2F1",
    "app%1",
    "a b",
    "é",
    "",
    "app-*",
    "app+1",
];
const TENANTS: [&str; 6] = ["acme", "globex", "a/b", "acme/../globex", "x.y", "db"];
const MOUNTS: [(u32, &str); 8] = [
    (12, "transit"),
    (5, "m2"),
    (1, "m3"),
    (1, "Transit"),
    (1, "TRANSIT"),
    (1, "M2"),
    (1, "sys"),
    (1, "lockbox"),
];
/// Policies a request may create, overwrite or delete: no token uses them.
const SCRATCH_POLICIES: [&str; 3] = ["scratch-1", "scratch-2", "no-such-policy"];
const ROLE_POLICIES: [(&str, Option<(&str, &str)>); 8] = [
    ("app", None),
    ("operator", None),
    ("auditor", None),
    ("admin", None),
    ("app-own", Some(("app", "app-*"))),
    ("billing-ops", Some(("operator", "billing-*"))),
    ("acme-app", Some(("app", "tenant-acme"))),
    ("db-ops", Some(("operator", "db-*"))),
];

struct Tok {
    label: String,
    token: String,
}

/// Everything generated requests draw from.
struct Pools {
    /// Items for `lockbox/decrypt`: valid lbx1 ciphertexts of several keys,
    /// altered ones (same key id), unknown key ids, unparseable ones.
    lbx: Vec<Value>,
    vault_ct: Vec<String>,
    /// Encrypted records and the key of their fields.
    records: Vec<(String, Value)>,
    /// Envelopes and the key that wraps their data key.
    envelopes: Vec<(String, String)>,
    tokens: Vec<Tok>,
    all_policies: Vec<String>,
    gen_policies: Vec<String>,
}

struct Setup {
    srv: Srv,
    world: World,
    pools: Pools,
}

fn lbx_bytes(ct: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(ct.strip_prefix("lbx1:").unwrap())
        .unwrap()
}

fn lbx_text(b: &[u8]) -> String {
    format!(
        "lbx1:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

async fn setup(rng: &mut Rng, n_policies: usize, n_tokens: usize) -> Setup {
    let srv = Srv::start().await;
    let mut world = World {
        mounts: vec!["transit".into(), "m2".into()],
        ..World::default()
    };
    srv.root("POST", "sys/mounts/m2", json!({"type": "transit"}))
        .await;
    for k in TRANSIT_KEYS {
        srv.root(
            "POST",
            &format!("transit/keys/{k}"),
            json!({"exportable": true, "allow_plaintext_backup": true}),
        )
        .await;
    }
    srv.root("POST", "transit/keys/sig-1", json!({"type": "ed25519"}))
        .await;
    for k in ["app-1", "m2-k"] {
        srv.root("POST", &format!("m2/keys/{k}"), json!({})).await;
    }
    // Native ciphertexts, with and without a context, and their key ids.
    let mut lbx = Vec::new();
    for k in ["app-1", "app-2", "db-1", "billing-a", "billing-b", "a.b"] {
        for ctx in [None, Some("Y3R4")] {
            let mut b = json!({"plaintext": "aGk="});
            if let Some(c) = ctx {
                b["context"] = json!(c);
            }
            let ct = ct_of(&srv.root("POST", &format!("lockbox/encrypt/{k}"), b).await);
            let kid = model::lbx1_key_id(&ct).unwrap();
            world.key_ids.insert(kid, k.to_owned());
            lbx.push(json!(ct));
        }
    }
    // Altered ones keep their key id (and so must be checked); others
    // name no key or do not parse (never a 403).
    for i in 0..lbx.len() {
        let mut b = lbx_bytes(lbx[i].as_str().unwrap());
        let last = b.len() - 1;
        b[last] ^= 1;
        lbx.push(json!(lbx_text(&b)));
    }
    let base = lbx_bytes(lbx[0].as_str().unwrap());
    let mut unknown = base.clone();
    unknown[2] ^= 0x5a;
    lbx.push(json!(lbx_text(&unknown)));
    let mut bad_alg = base.clone();
    bad_alg[0] = 9;
    lbx.push(json!(lbx_text(&bad_alg)));
    lbx.push(json!(lbx_text(&base[..20])));
    lbx.push(json!("lbx1:!!not-base64!!"));
    lbx.push(json!("lbx2:AQAaKzxN"));
    lbx.push(json!(5));
    // Transit (vault:) ciphertexts.
    let mut vault_ct = Vec::new();
    for k in ["app-1", "db-1", "billing-a"] {
        vault_ct.push(ct_of(
            &srv.root(
                "POST",
                &format!("transit/encrypt/{k}"),
                json!({"plaintext": "aGk="}),
            )
            .await,
        ));
        lbx.push(json!(vault_ct.last().unwrap()));
    }
    // Records and envelopes of several keys and tenants.
    let mut records = Vec::new();
    for k in ["billing-a", "billing-b", "db-1"] {
        let v = srv
            .root(
                "POST",
                "lockbox/records/encrypt",
                json!({"key": k, "tenant": "t1", "fields": ["ssn"], "record": {"id": 1, "ssn": "123-45"}}),
            )
            .await;
        records.push((k.to_owned(), v["data"]["record"].clone()));
    }
    let mut envelopes = Vec::new();
    for (k, b) in [
        ("app-1", json!({"key": "app-1"})),
        ("db-1", json!({"key": "db-1"})),
        ("tenant-acme", json!({"tenant": "acme"})),
        ("tenant-globex", json!({"tenant": "globex"})),
    ] {
        let mut b = b;
        b["plaintext"] = json!("aGk=");
        let ct = ct_of(&srv.root("POST", "lockbox/envelope/encrypt", b).await);
        envelopes.push((k.to_owned(), ct));
    }
    // Role policies: built-in and custom ones; the model reads their text.
    for (name, custom) in ROLE_POLICIES {
        if let Some((role, keys)) = custom {
            srv.root(
                "PUT",
                &format!("sys/policies/acl/{name}"),
                json!({"role": role, "keys": keys}),
            )
            .await;
        }
        let v = srv
            .root("GET", &format!("sys/policies/acl/{name}"), Value::Null)
            .await;
        let text = v["data"]["policy"].as_str().unwrap_or_default().to_owned();
        let rules = model::parse_policy(&text)
            .unwrap_or_else(|e| panic!("role policy {name}: {e}\n{text}"));
        world.policies.insert(name.into(), rules);
        world.roles.insert(
            name.into(),
            RoleDef {
                role: custom.map_or(name, |c| c.0).to_owned(),
                keys: custom.map(|c| c.1.to_owned()),
            },
        );
    }
    // Generated policies.
    let mut gen_policies = Vec::new();
    let listonly = vec![Rule {
        pattern: "transit/*".into(),
        caps: model::LIST,
    }];
    srv.policy("listonly", &listonly, true).await;
    world.policies.insert("listonly".into(), listonly);
    gen_policies.push("listonly".to_owned());
    for i in 0..n_policies {
        let name = format!("gp-{i}");
        let rules = gen_policy(rng, &world);
        srv.policy(&name, &rules, rng.chance(0.7)).await;
        world.policies.insert(name.clone(), rules);
        gen_policies.push(name);
    }
    // Tokens.
    let mut tokens = Vec::new();
    world.tokens.insert(ROOT.into(), Who::Root);
    tokens.push(Tok {
        label: "root".into(),
        token: ROOT.into(),
    });
    for (name, _) in ROLE_POLICIES {
        let t = srv.token(&[name]).await;
        world
            .tokens
            .insert(t.clone(), Who::Policies(vec![name.into()]));
        tokens.push(Tok {
            label: format!("role {name}"),
            token: t,
        });
    }
    for i in 0..n_tokens {
        let n = 1 + rng.below(4);
        let mut pols: Vec<String> = Vec::new();
        for _ in 0..n {
            let p = if rng.chance(0.12) {
                ROLE_POLICIES[rng.below(ROLE_POLICIES.len())].0.to_owned()
            } else {
                rng.pick(&gen_policies).clone()
            };
            if !pols.contains(&p) {
                pols.push(p);
            }
        }
        let refs: Vec<&str> = pols.iter().map(String::as_str).collect();
        let t = srv.token(&refs).await;
        world.tokens.insert(t.clone(), Who::Policies(pols.clone()));
        tokens.push(Tok {
            label: format!("tok-{i} {pols:?}"),
            token: t,
        });
    }
    // Tokens that are not valid: unknown, revoked, expired.
    tokens.push(Tok {
        label: "unknown token".into(),
        token: "lbs.AAAAAAAAAAAAAAAAAAAAAAAA".into(),
    });
    let v = srv
        .root(
            "POST",
            "auth/token/create",
            json!({"policies": ["admin"], "ttl": "1h"}),
        )
        .await;
    srv.root(
        "POST",
        "auth/token/revoke-accessor",
        json!({"accessor": v["auth"]["accessor"]}),
    )
    .await;
    tokens.push(Tok {
        label: "revoked admin token".into(),
        token: v["auth"]["client_token"].as_str().unwrap().to_owned(),
    });
    let v = srv
        .root(
            "POST",
            "auth/token/create",
            json!({"policies": ["admin"], "ttl": 1, "renewable": false}),
        )
        .await;
    tokens.push(Tok {
        label: "expired admin token".into(),
        token: v["auth"]["client_token"].as_str().unwrap().to_owned(),
    });
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut all_policies: Vec<String> = world.policies.keys().cloned().collect();
    all_policies.sort();
    Setup {
        srv,
        world,
        pools: Pools {
            lbx,
            vault_ct,
            records,
            envelopes,
            tokens,
            all_policies,
            gen_policies,
        },
    }
}

// ---------------------------------------------------------------- policies

fn gen_caps(rng: &mut Rng) -> u8 {
    if rng.chance(0.1) {
        return model::DENY;
    }
    let mut c = 0;
    for b in [
        model::CREATE,
        model::READ,
        model::UPDATE,
        model::DELETE,
        model::LIST,
    ] {
        if rng.chance(0.35) {
            c |= b;
        }
    }
    if rng.chance(0.3) {
        c |= model::SUDO;
    }
    if rng.chance(0.03) {
        c |= model::DENY;
    }
    if c == 0 {
        c = model::UPDATE;
    }
    c
}

fn pattern_ok(p: &str) -> bool {
    let body = p.strip_suffix('*').unwrap_or(p);
    !p.is_empty()
        && !body.contains('*')
        && body.split('/').enumerate().all(|(i, s)| {
            (s == "+" || !s.contains('+'))
                && (!s.is_empty() || (i > 0 && body.ends_with('/') && p.ends_with('*')))
        })
        && !p.ends_with("+*")
        && p.bytes()
            .all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\\' && c != b'%')
        && !p.starts_with('/')
}

/// A pattern built from a real request path: cut, `+` segments, a `*`.
fn gen_pattern(rng: &mut Rng, world: &World) -> String {
    const SPECIAL: [&str; 12] = [
        "*",
        "+/keys/*",
        "+/+/app-*",
        "+/encrypt/+",
        "lockbox/*",
        "lockbox/decrypt/*",
        "lockbox/keys/m2/*",
        "transit/keys",
        "transit/keys*",
        "Transit/*",
        "sys/*",
        "auth/token/*",
    ];
    loop {
        if rng.chance(0.08) {
            return rng.pick_str(&SPECIAL).to_owned();
        }
        let g = gen_route(rng, world, true);
        let mut segs = g.segs;
        if segs.is_empty()
            || segs
                .iter()
                .any(|s| !model::valid_key(s) || s == "." || s == "..")
        {
            continue;
        }
        let keep = if rng.chance(0.5) {
            segs.len()
        } else {
            1 + rng.below(segs.len())
        };
        segs.truncate(keep);
        for _ in 0..2 {
            if rng.chance(0.2) {
                let i = rng.below(segs.len());
                segs[i] = "+".into();
            }
        }
        let mut p = segs.join("/");
        match rng.below(10) {
            0..=3 => {}
            4..=6 => p.push_str("/*"),
            7 | 8 => {
                let last = segs.last().unwrap();
                if last != "+" {
                    let cut = rng.below(last.len() + 1);
                    let base = &p[..p.len() - last.len() + cut];
                    p = format!("{base}*");
                } else {
                    p.push_str("/*");
                }
            }
            _ => {
                let cut = 1 + rng.below(p.len());
                p = format!("{}*", &p[..cut]);
            }
        }
        if pattern_ok(&p) {
            return p;
        }
    }
}

fn gen_policy(rng: &mut Rng, world: &World) -> Vec<Rule> {
    let n = 1 + rng.below(6);
    let mut rules: Vec<Rule> = Vec::new();
    while rules.len() < n {
        let pattern = gen_pattern(rng, world);
        if rules.iter().any(|r| r.pattern == pattern) {
            continue;
        }
        rules.push(Rule {
            pattern,
            caps: gen_caps(rng),
        });
    }
    rules
}

// ---------------------------------------------------------------- requests

/// A generated request before its path is encoded.
struct Gen {
    method: String,
    segs: Vec<String>,
    body: Option<Value>,
    /// Dangerous when allowed: sent only when the model says deny.
    only_if_denied: bool,
}

fn key(rng: &mut Rng) -> String {
    if rng.chance(0.08) {
        rng.pick_str(&BAD_KEYS).to_owned()
    } else if rng.chance(0.01) {
        "k".repeat(129)
    } else {
        rng.pick_str(&KEY_POOL).to_owned()
    }
}

fn g(method: &str, segs: &[&str], body: Option<Value>) -> Gen {
    Gen {
        method: method.into(),
        segs: segs.iter().map(|s| (*s).to_owned()).collect(),
        body,
        only_if_denied: false,
    }
}

/// A canonical request of one of the specification's routes (or a near miss).
/// With `for_pattern`, only shapes that make sense as ACL patterns.
fn gen_route(rng: &mut Rng, world: &World, for_pattern: bool) -> Gen {
    let _ = world;
    let pt = json!({"plaintext": "aGk="});
    let k = key(rng);
    let k = k.as_str();
    let m = (*rng.weighted(&MOUNTS)).to_owned();
    let m = if for_pattern && rng.chance(0.8) {
        if rng.chance(0.7) { "transit" } else { "m2" }.to_owned()
    } else {
        m
    };
    let m = m.as_str();
    match rng.below(62) {
        0 => g(
            if rng.chance(0.5) { "LIST" } else { "GET" },
            &[m, "keys"],
            None,
        ),
        1 => g("GET", &[m, "keys", k], None),
        2 => g("POST", &[m, "keys", k], Some(json!({}))),
        3 => g("DELETE", &[m, "keys", k], None),
        4 => g(
            "POST",
            &[m, "keys", k, "config"],
            Some(json!({"min_decryption_version": 1})),
        ),
        5 => g("POST", &[m, "keys", k, "rotate"], Some(json!({}))),
        6 => g(
            "POST",
            &[m, "keys", k, "trim"],
            Some(json!({"min_available_version": 1})),
        ),
        7 | 8 => {
            let body = if rng.chance(0.2) {
                json!({"batch_input": [{"plaintext": "aGk="}, {"plaintext": "aGk="}]})
            } else {
                pt
            };
            g("POST", &[m, "encrypt", k], Some(body))
        }
        9 | 10 => g(
            "POST",
            &[m, "decrypt", k],
            Some(json!({"ciphertext": "vault:v1:AAAA"})),
        ),
        11 => g(
            "POST",
            &[m, "rewrap", k],
            Some(json!({"ciphertext": "vault:v1:AAAA"})),
        ),
        12 => g(
            "POST",
            &[m, "datakey", rng.pick_str(&["plaintext", "wrapped"]), k],
            Some(json!({})),
        ),
        13 => {
            let op = rng.pick_str(&["hmac", "sign", "verify"]);
            let body =
                json!({"input": "aGk=", "signature": "vault:v1:AA==", "hmac": "vault:v1:AA=="});
            if rng.chance(0.5) {
                g("POST", &[m, op, k, "sha2-256"], Some(body))
            } else {
                g("POST", &[m, op, k], Some(body))
            }
        }
        14 => match rng.below(3) {
            0 => g("POST", &[m, "random"], Some(json!({}))),
            1 => g("POST", &[m, "random", "32"], Some(json!({}))),
            _ => g("POST", &[m, "random", "platform", "16"], Some(json!({}))),
        },
        15 => {
            if rng.chance(0.5) {
                g("POST", &[m, "hash"], Some(json!({"input": "aGk="})))
            } else {
                g(
                    "POST",
                    &[m, "hash", "sha2-512"],
                    Some(json!({"input": "aGk="})),
                )
            }
        }
        16 => {
            if rng.chance(0.6) {
                g("GET", &[m, "cache-config"], None)
            } else {
                g("POST", &[m, "cache-config"], Some(json!({"size": 1000})))
            }
        }
        17 | 18 => {
            let ty = rng.pick_str(&["encryption-key", "signing-key", "hmac-key"]);
            if rng.chance(0.3) {
                g(
                    "GET",
                    &[m, "export", ty, k, rng.pick_str(&["latest", "1"])],
                    None,
                )
            } else {
                g("GET", &[m, "export", ty, k], None)
            }
        }
        19 => g("GET", &[m, "backup", k], None),
        20 => {
            if rng.chance(0.5) {
                g("POST", &[m, "restore"], Some(json!({"backup": "eA=="})))
            } else {
                g("POST", &[m, "restore", k], Some(json!({"backup": "eA=="})))
            }
        }
        21 | 22 => g("POST", &["lockbox", "encrypt", k], Some(pt)),
        23 => g("POST", &["lockbox", "keys", k, "backup"], Some(json!({}))),
        24 => g(
            "POST",
            &[
                "lockbox",
                "keys",
                k,
                rng.pick_str(&["destroy", "import", "restore"]),
            ],
            Some(json!({})),
        ),
        25 => {
            if rng.chance(0.5) {
                g(
                    "POST",
                    &["lockbox", "restore"],
                    Some(json!({"backup": "eA=="})),
                )
            } else {
                g(
                    "POST",
                    &["lockbox", "restore", k],
                    Some(json!({"backup": "eA=="})),
                )
            }
        }
        26..=31 => g("POST", &["lockbox", "decrypt"], None),
        32..=35 => g(
            "POST",
            &[
                "lockbox",
                "records",
                rng.pick_str(&["encrypt", "decrypt", "search"]),
            ],
            None,
        ),
        36..=38 => g(
            "POST",
            &["lockbox", "envelope", rng.pick_str(&["encrypt", "decrypt"])],
            None,
        ),
        39 => Gen {
            only_if_denied: true,
            ..g("PUT", &["sys", "seal"], Some(json!({})))
        },
        40 => g("GET", &["sys", "audit"], None),
        41 => g("POST", &["sys", "audit", "verify"], Some(json!({}))),
        42 => {
            if rng.chance(0.5) {
                g("GET", &["sys", "audit", "query"], None)
            } else {
                g(
                    "POST",
                    &["sys", "audit", "query"],
                    Some(json!({"limit": 1})),
                )
            }
        }
        43 => g(
            "POST",
            &["sys", "audit-hash"],
            Some(json!({"input": "eA=="})),
        ),
        44 => g("GET", &["sys", "metrics"], None),
        45 => g(
            "POST",
            &["sys", "events"],
            Some(json!({"event": "REENCRYPTION_STARTED"})),
        ),
        46 => {
            if rng.chance(0.5) {
                g(
                    rng.pick_str(&["LIST", "GET"]),
                    &["sys", "policies", "acl"],
                    None,
                )
            } else {
                g("GET", &["sys", "policy"], None)
            }
        }
        // Policies by name: reading any; writing only the scratch ones, or
        // a real one with a body refused after authorization; deleting
        // only scratch ones (no token of the test may change).
        47 => {
            let base = if rng.chance(0.5) {
                "policies"
            } else {
                "policy"
            };
            let mut segs = vec!["sys", base];
            if base == "policies" {
                segs.push("acl");
            }
            let scratch = rng.pick_str(&SCRATCH_POLICIES).to_owned();
            let real = rng.pick(&ROLE_POLICIES).0.to_owned();
            let odd = "a.b%c".to_owned();
            match rng.below(4) {
                0 => {
                    segs.push(if rng.chance(0.5) { &real } else { &scratch });
                    g("GET", &segs, None)
                }
                1 => {
                    segs.push(&scratch);
                    g(
                        rng.pick_str(&["PUT", "POST"]),
                        &segs,
                        Some(json!({"policy": "path \"x/y\" { capabilities = [\"read\"] }"})),
                    )
                }
                2 => {
                    segs.push(if rng.chance(0.8) { &real } else { &odd });
                    g(
                        rng.pick_str(&["PUT", "POST"]),
                        &segs,
                        Some(json!({ "policy": BAD_POLICY })),
                    )
                }
                _ => {
                    segs.push(&scratch);
                    g("DELETE", &segs, None)
                }
            }
        }
        // Mounts: listing; enabling only a kind refused after
        // authorization; disabling only mounts that do not exist.
        48 => match rng.below(3) {
            0 => g("GET", &["sys", "mounts"], None),
            1 => g(
                rng.pick_str(&["POST", "PUT"]),
                &[
                    "sys",
                    "mounts",
                    rng.pick_str(&["m2", "transit", "m3", "kvmount"]),
                ],
                Some(json!({"type": "kv"})),
            ),
            _ => g(
                "DELETE",
                &["sys", "mounts", rng.pick_str(&["m3", "kvmount"])],
                None,
            ),
        },
        49 | 50 => g("POST", &["auth", "token", "create"], None),
        51 => g("POST", &["auth", "token", "create-orphan"], None),
        // Token administration, on tokens and accessors that do not exist
        // (revoking a token of the test would change the oracle).
        52 | 53 => {
            let op = rng.pick_str(&[
                "lookup",
                "lookup-accessor",
                "renew",
                "renew-accessor",
                "revoke",
                "revoke-accessor",
                "revoke-orphan",
            ]);
            g(
                "POST",
                &["auth", "token", op],
                Some(
                    json!({"token": "lbs.no-such-token", "accessor": "no-such-accessor", "increment": "1h"}),
                ),
            )
        }
        // Self-service (revoke-self is not sent: it would revoke the test's token).
        54 => {
            if rng.chance(0.5) {
                g(
                    rng.pick_str(&["GET", "POST", "PUT"]),
                    &["auth", "token", "lookup-self"],
                    None,
                )
            } else {
                g(
                    "POST",
                    &["auth", "token", "renew-self"],
                    Some(json!({"increment": "1h"})),
                )
            }
        }
        55 => g(
            "GET",
            &[
                rng.pick_str(&["sys", "sys", "sys", "openapi.json"]),
                rng.pick_str(&["health", "seal-status", "init"]),
            ],
            None,
        ),
        // Near misses: too short, too long, unknown.
        56 => g("POST", &[m, "encrypt"], Some(json!({}))),
        57 => g("GET", &[m, "keys", k, "extra"], None),
        58 => g("POST", &["lockbox", "decrypt", k], Some(json!({}))),
        59 => g("GET", &["lockbox", "keys", k], None),
        60 => g(
            "GET",
            &[rng.pick_str(&["nope", "sys", "auth", "lockbox"])],
            None,
        ),
        // A key of another mount named through the native API (the `/` is
        // rendered as `/`, `%2F` or `%2f`).
        _ => {
            let mk = format!("{m}/{k}");
            let op = rng.pick_str(&["backup", "backup", "destroy", "import", "restore"]);
            if rng.chance(0.7) {
                g("POST", &["lockbox", "keys", &mk, op], Some(json!({})))
            } else {
                g(
                    "POST",
                    &["lockbox", "encrypt", &mk],
                    Some(json!({"plaintext": "aGk="})),
                )
            }
        }
    }
}

/// The body of a route that reads its keys from the body.
fn gen_body(rng: &mut Rng, segs: &[String], pools: &Pools, own: &[String]) -> Option<Value> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let bkey = |rng: &mut Rng| -> String {
        if rng.chance(0.1) {
            rng.pick_str(&BAD_KEYS).to_owned()
        } else {
            rng.pick_str(&KEY_POOL).to_owned()
        }
    };
    match s.as_slice() {
        ["lockbox", "decrypt"] => {
            let item = |rng: &mut Rng| pools.lbx[rng.below(pools.lbx.len())].clone();
            let mut b = match rng.below(10) {
                0..=4 => json!({"ciphertext": item(rng)}),
                5..=8 => {
                    let n = 1 + rng.below(4);
                    let items: Vec<Value> =
                        (0..n).map(|_| json!({"ciphertext": item(rng)})).collect();
                    json!({"batch_input": items})
                }
                _ => json!({"ciphertext": item(rng), "batch_input": [{"ciphertext": item(rng)}]}),
            };
            if rng.chance(0.5) {
                b["context"] = json!(rng.pick_str(&["Y3R4", "b3RoZXI="]));
            }
            Some(b)
        }
        ["lockbox", "records", op] => {
            let mut b = match *op {
                "encrypt" => {
                    json!({"tenant": "t1", "fields": ["ssn"], "blind_index": ["ssn"], "record": {"id": 1, "ssn": "123-45"}})
                }
                "decrypt" => {
                    json!({"tenant": "t1", "fields": ["ssn"], "record": pools.records[rng.below(pools.records.len())].1})
                }
                _ => json!({"tenant": "t1", "field": "ssn", "value": "123-45"}),
            };
            if rng.chance(0.95) {
                b["key"] = json!(bkey(rng));
            }
            if rng.chance(0.35) {
                b["index_key"] = json!(bkey(rng));
            }
            Some(b)
        }
        ["lockbox", "envelope", op] => {
            let mut b = if *op == "encrypt" {
                json!({"plaintext": "aGk=", "context": {"a": "b"}})
            } else {
                json!({"ciphertext": pools.envelopes[rng.below(pools.envelopes.len())].1})
            };
            match rng.below(10) {
                0..=4 => b["key"] = json!(bkey(rng)),
                5..=7 => b["tenant"] = json!(rng.pick_str(&TENANTS)),
                8 => {
                    b["key"] = json!(bkey(rng));
                    b["tenant"] = json!(rng.pick_str(&TENANTS));
                }
                _ => {}
            }
            Some(b)
        }
        ["auth", "token", "create" | "create-orphan"] => {
            let pols: Vec<String> = match rng.below(6) {
                0..=2 if !own.is_empty() => vec![rng.pick(own).clone()],
                3 => vec![rng.pick(&pools.all_policies).clone()],
                4 => vec!["root".into()],
                _ => vec![rng.pick(&pools.gen_policies).clone()],
            };
            let mut b = json!({"policies": pols});
            if rng.chance(0.85) {
                b["ttl"] = json!("1h");
            }
            Some(b)
        }
        [_, "decrypt" | "rewrap", _] if s[0] != "lockbox" => Some(json!({
            "ciphertext": pools.vault_ct[rng.below(pools.vault_ct.len())]
        })),
        _ => None,
    }
}

/// The raw form of one decoded segment (or several, if it holds `/`).
fn encode_seg(rng: &mut Rng, seg: &str, out: &mut String) {
    let enc_p = if rng.chance(0.15) { 0.3 } else { 0.0 };
    for ch in seg.chars() {
        let mut buf = [0u8; 4];
        let bytes = ch.encode_utf8(&mut buf).as_bytes();
        let unreserved = ch.is_ascii_alphanumeric() || "-._~".contains(ch);
        if ch == '/' {
            out.push_str(rng.pick_str(&["/", "%2F", "%2f"]));
        } else if unreserved && !rng.chance(enc_p) {
            out.push(ch);
        } else {
            for b in bytes {
                if rng.chance(0.5) {
                    out.push_str(&format!("%{b:02X}"));
                } else {
                    out.push_str(&format!("%{b:02x}"));
                }
            }
        }
    }
}

/// The raw path: encodings, separators as `%2F`, doubled slashes, dot
/// segments, broken escapes.
fn render_path(rng: &mut Rng, segs: &[String]) -> String {
    let mut out = String::new();
    if rng.chance(0.03) {
        out.push('/');
    }
    for (i, s) in segs.iter().enumerate() {
        if i > 0 {
            out.push_str(if rng.chance(0.05) {
                rng.pick_str(&["//", "%2F", "%2f", "/%2F", "///"])
            } else {
                "/"
            });
        }
        encode_seg(rng, s, &mut out);
    }
    if rng.chance(0.03) {
        out.push('/');
    }
    // A dot segment somewhere (a path error), raw or encoded.
    if rng.chance(0.02) {
        let cuts: Vec<usize> = std::iter::once(0)
            .chain(out.match_indices('/').map(|(i, _)| i + 1))
            .collect();
        let at = *rng.pick(&cuts);
        let dot = rng.pick_str(&["./", "../", "%2e/", "%2E%2E/", ".%2e/", "..%2F"]);
        out.insert_str(at, dot);
    }
    // A broken escape (a path error).
    if rng.chance(0.01) {
        let at = rng.below(out.len() + 1);
        let at = (0..=at)
            .rev()
            .find(|i| out.is_char_boundary(*i))
            .unwrap_or(0);
        out.insert_str(at, rng.pick_str(&["%zz", "%4", "%ff", "%c3%28", "%"]));
    }
    out
}

fn gen_query(rng: &mut Rng, method: &str) -> Option<String> {
    const LISTY: [&str; 20] = [
        "list=true",
        "list=1",
        "list=True",
        "list=TRUE",
        "list=t",
        "list=T",
        "list=false",
        "list=yes",
        "list",
        "list=",
        "LIST=true",
        "list=true&x=1",
        "x=1&list=1",
        "list=false&list=true",
        "list=true&list=false",
        "list=tr%75e",
        "li%73t=true",
        "list=%31",
        "list=0",
        "list=on",
    ];
    let p = if method == "GET" { 0.35 } else { 0.3 };
    if rng.chance(p) {
        Some(rng.pick_str(&LISTY).to_owned())
    } else if rng.chance(0.05) {
        Some((rng.pick_str(&["x=1", "format=prometheus", "a=b&c=d", "list_x=true"])).to_owned())
    } else {
        None
    }
}

/// The body sent to write a real policy: refused after authorization.
const BAD_POLICY: &str = "path \"a\" { capabilities = [\"fly\"] }";

/// Whether a request, if the server allowed it, could change what the
/// model knows (policies, mounts, tokens, the seal) or initialize or unseal:
/// such requests are never sent, whatever their method became. Checked on
/// the decoded path, so no encoding hides one.
fn changes_authorization(s: &[String], req: &Req) -> bool {
    let s: Vec<&str> = s.iter().map(String::as_str).collect();
    let m = req.method.as_str();
    let write = m == "PUT" || m == "POST";
    let body = req.body.as_ref();
    match s.as_slice() {
        ["sys", "policies", "acl", n] | ["sys", "policy", n] => {
            let scratch = SCRATCH_POLICIES.contains(n);
            (m == "DELETE" && !scratch)
                || (write
                    && !scratch
                    && body.and_then(|b| b["policy"].as_str()) != Some(BAD_POLICY))
        }
        ["sys", "mounts", p] => {
            (m == "DELETE" && !["m3", "kvmount"].contains(p))
                || (write && body.and_then(|b| b["type"].as_str()) != Some("kv"))
        }
        ["auth", "token", "revoke-self"] => true,
        ["auth", "token", "revoke" | "revoke-accessor" | "revoke-orphan"] => {
            body.is_some_and(|b| {
                b["token"]
                    .as_str()
                    .is_some_and(|t| t != "lbs.no-such-token")
                    || b["accessor"]
                        .as_str()
                        .is_some_and(|a| a != "no-such-accessor")
            })
        }
        ["sys", "init" | "unseal"] => m != "GET",
        _ => false,
    }
}

/// One complete request and the token that sends it.
struct Case {
    req: Req,
    token_label: String,
}

fn gen_case(rng: &mut Rng, world: &World, pools: &Pools) -> Case {
    loop {
        let mut gr = gen_route(rng, world, false);
        // The token.
        let t = if rng.chance(0.06) {
            None
        } else {
            let ts = &pools.tokens;
            // Root and the invalid ones are at the ends of the list.
            let i = if rng.chance(0.9) {
                1 + rng.below(ts.len() - 4)
            } else {
                *rng.pick(&[0, ts.len() - 3, ts.len() - 2, ts.len() - 1])
            };
            Some(&ts[i])
        };
        let own: Vec<String> = match t.and_then(|t| world.tokens.get(&t.token)) {
            Some(Who::Policies(p)) => p.clone(),
            _ => Vec::new(),
        };
        if gr.body.is_none() {
            gr.body = gen_body(rng, &gr.segs, pools, &own);
        }
        // Another method now and then.
        if rng.chance(0.12) {
            gr.method =
                (rng.pick_str(&["GET", "POST", "PUT", "DELETE", "LIST", "PATCH"])).to_owned();
        }
        if gr.method == "GET" || gr.method == "LIST" {
            gr.body = None;
        }
        // Never send the unauthenticated writes (init, unseal).
        let unseal = gr.segs.len() == 2
            && gr.segs[0] == "sys"
            && (gr.segs[1] == "init" || gr.segs[1] == "unseal")
            && gr.method != "GET";
        if unseal {
            continue;
        }
        let (x, bearer, label) = match t {
            None => (None, None, "no token".to_owned()),
            Some(t) => {
                let r = rng.below(100);
                if r < 85 {
                    (Some(t.token.clone()), None, t.label.clone())
                } else if r < 97 {
                    (None, Some(t.token.clone()), format!("{} (bearer)", t.label))
                } else {
                    let other = &pools.tokens[rng.below(pools.tokens.len())];
                    (
                        Some(t.token.clone()),
                        Some(other.token.clone()),
                        format!("{} + bearer {}", t.label, other.label),
                    )
                }
            }
        };
        let req = Req {
            method: gr.method.clone(),
            path: render_path(rng, &gr.segs),
            query: gen_query(rng, &gr.method),
            x_vault_token: x,
            bearer,
            body: gr.body.clone(),
        };
        // A request that seals, or that a public unauthenticated write
        // could be read as, is sent only when every reading denies it.
        let decoded = model::segments(&req.path);
        let sealing = decoded
            .as_ref()
            .is_some_and(|s| s.len() == 2 && s[0] == "sys" && s[1] == "seal");
        if gr.only_if_denied || sealing {
            let e = model::evaluate(world, &req);
            if !(e.deny && !e.allow && e.statuses.is_empty()) {
                continue;
            }
        }
        if decoded
            .as_ref()
            .is_some_and(|s| changes_authorization(s, &req))
        {
            continue;
        }
        return Case {
            req,
            token_label: label,
        };
    }
}

// ---------------------------------------------------------------- the run

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_seed() -> u64 {
    std::env::var("LOCKBOX_ACL_SEED")
        .ok()
        .and_then(|v| {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => v.parse().ok(),
            }
        })
        .unwrap_or(DEFAULT_SEED)
}

fn target(req: &Req) -> String {
    match &req.query {
        Some(q) => format!("{}?{q}", req.path),
        None => req.path.clone(),
    }
}

fn short(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_owned()
    } else {
        let mut i = n;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        format!("{}…", &s[..i])
    }
}

fn policies_of(world: &World, label: &str, req: &Req) -> String {
    let tok = req.x_vault_token.as_ref().or(req.bearer.as_ref());
    match tok.and_then(|t| world.tokens.get(t)) {
        Some(Who::Policies(ps)) => ps
            .iter()
            .map(|p| {
                let rules: Vec<String> = world.policies[p]
                    .iter()
                    .map(|r| format!("{} {:?}", r.pattern, model::cap_names(r.caps)))
                    .collect();
                format!("    {p}: {}", rules.join("; "))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Some(Who::Root) => "    root".into(),
        None => format!("    ({label})"),
    }
}

/// Tags of a request's form, to group differences.
fn tags(req: &Req) -> String {
    let mut t = Vec::new();
    let p = req.path.to_ascii_lowercase();
    if p.contains("%2f") {
        t.push("%2F");
    }
    if p.contains("%25") {
        t.push("%25");
    }
    if p.contains("//") {
        t.push("//");
    }
    if let Some(q) = &req.query {
        if q.to_ascii_lowercase().contains("li") {
            t.push("?list");
        }
    }
    t.join(",")
}

/// What an answer the model allows must still not contain: a native
/// ciphertext decrypted for a token that may not use its key, a record
/// field or an envelope of another key than the one the request names.
fn post_check(world: &World, pools: &Pools, req: &Req, status: u16, text: &str) -> Option<String> {
    if status == 403 || (!text.contains("\"plaintext") && !text.contains("123-45")) {
        return None;
    }
    let segs = model::segments(&req.path)?;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let body = req.body.as_ref()?;
    let v: Value = serde_json::from_str(text).ok()?;
    let data = &v["data"];
    match s.as_slice() {
        ["lockbox", "decrypt"] => {
            let mut opened: Vec<&Value> = Vec::new();
            if let Some(rs) = data["batch_results"].as_array() {
                for (i, r) in rs.iter().enumerate() {
                    if r.get("plaintext").is_some() {
                        opened.push(&body["batch_input"][i]["ciphertext"]);
                    }
                }
            } else if data.get("plaintext").is_some() {
                opened.push(&body["ciphertext"]);
            }
            for c in opened {
                let Some(kid) = c.as_str().and_then(model::lbx1_key_id) else {
                    return Some(format!("decrypted an item the model cannot place: {c}"));
                };
                let Some(k) = world.key_ids.get(&kid) else {
                    return Some(format!("decrypted an item of an unknown key id: {c}"));
                };
                let path = format!("lockbox/decrypt/{k}");
                if model::token_may(world, req, &path, model::UPDATE, "decrypt", k) != Some(true) {
                    return Some(format!(
                        "decrypted an item of {k}, which the token may not use"
                    ));
                }
            }
            None
        }
        ["lockbox", "records", "decrypt"] => {
            let named = body["key"].as_str()?;
            let (k, _) = pools.records.iter().find(|(_, r)| *r == body["record"])?;
            (k != named && text.contains("123-45"))
                .then(|| format!("decrypted a field of {k} as a record of {named}"))
        }
        ["lockbox", "envelope", "decrypt"] => {
            let named = match (body.get("key"), body.get("tenant")) {
                (Some(Value::String(k)), None) => k.clone(),
                (None, Some(Value::String(t))) => format!("tenant-{t}"),
                _ => return None,
            };
            let (k, _) = pools
                .envelopes
                .iter()
                .find(|(_, c)| Some(c.as_str()) == body["ciphertext"].as_str())?;
            (*k != named && data.get("plaintext").is_some())
                .then(|| format!("opened an envelope of {k} as one of {named}"))
        }
        _ => None,
    }
}

/// Whether an answer carries what only an authorized request may get.
fn leaks(text: &str) -> bool {
    [
        "\"plaintext\":\"",
        "\"backup\":\"",
        "\"ciphertext\":\"",
        "\"keys\":{",
    ]
    .iter()
    .any(|m| text.contains(m))
}

struct Outcome {
    differences: Vec<String>,
    classes: BTreeMap<String, (usize, String)>,
    statuses: BTreeMap<u16, usize>,
    choices: BTreeMap<&'static str, (usize, usize)>,
    prediction_misses: BTreeMap<String, (usize, String)>,
    role_doc: usize,
    sent: usize,
    skipped: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_matches_acl_model() {
    let seed = env_seed();
    let n = env_usize("LOCKBOX_ACL_CASES", DEFAULT_CASES);
    let only: Option<Vec<usize>> = std::env::var("LOCKBOX_ACL_ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    println!("acl model: seed {seed:#x}, {n} requests (LOCKBOX_ACL_SEED, LOCKBOX_ACL_CASES)");
    let t0 = Instant::now();
    let mut rng = Rng(seed);
    let Setup { srv, world, pools } = setup(&mut rng, 60, 150).await;
    for (name, _) in ROLE_POLICIES {
        let rules: Vec<String> = world.policies[name]
            .iter()
            .map(|r| format!("{} {:?}", r.pattern, model::cap_names(r.caps)))
            .collect();
        println!("role policy {name}: {}", rules.join("; "));
    }
    let cases: Vec<Case> = (0..n).map(|_| gen_case(&mut rng, &world, &pools)).collect();
    let t_setup = t0.elapsed();
    let srv = Arc::new(srv);
    let world = Arc::new(world);
    let cases = Arc::new(cases);
    let pools = Arc::new(pools);
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Outcome {
        differences: Vec::new(),
        classes: BTreeMap::new(),
        statuses: BTreeMap::new(),
        choices: BTreeMap::new(),
        prediction_misses: BTreeMap::new(),
        role_doc: 0,
        sent: 0,
        skipped: 0,
    }));
    let only = Arc::new(only);
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    let t1 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (srv, world, cases, next, out, only, gate, pools) = (
            srv.clone(),
            world.clone(),
            cases.clone(),
            next.clone(),
            out.clone(),
            only.clone(),
            gate.clone(),
            pools.clone(),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cases.len() {
                    break;
                }
                if let Some(o) = only.as_ref() {
                    if !o.contains(&i) {
                        continue;
                    }
                }
                let c = &cases[i];
                let r = &c.req;
                let mut h: Vec<(&str, String)> = Vec::new();
                if let Some(t) = &r.x_vault_token {
                    h.push(("x-vault-token", t.clone()));
                }
                if let Some(t) = &r.bearer {
                    h.push(("authorization", format!("Bearer {t}")));
                }
                let hr: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let body = r.body.as_ref().map(Value::to_string);
                // A request to sys/seal runs alone: if it seals the server
                // (an escape), the server is unsealed before anything else
                // is sent, so no other request sees a 503.
                let seal = model::segments(&r.path)
                    .is_some_and(|s| s.len() == 2 && s[0] == "sys" && s[1] == "seal");
                let (res, sealed) = if seal {
                    let _alone = gate.write().await;
                    let res = srv.raw(&r.method, &target(r), &hr, body).await;
                    let sealed = srv.engine.is_sealed();
                    if sealed {
                        srv.unseal_again().await;
                    }
                    (res, sealed)
                } else {
                    let _shared = gate.read().await;
                    (srv.raw(&r.method, &target(r), &hr, body).await, false)
                };
                let Ok((status, text)) = res else {
                    out.lock().unwrap().skipped += 1;
                    continue;
                };
                let e: Expect = model::evaluate(&world, r);
                let leak = post_check(&world, &pools, r, status, &text);
                let ok = e.accepts(status) && leak.is_none();
                let mut o = out.lock().unwrap();
                o.sent += 1;
                *o.statuses.entry(status).or_default() += 1;
                for ch in &e.choices {
                    let x = o.choices.entry(ch).or_default();
                    x.0 += 1;
                    if status == 403 {
                        x.1 += 1;
                    }
                }
                if e.role_doc_conflict {
                    o.role_doc += 1;
                }
                // Informational: the model's predicted pre-authorization
                // answer (400/404/405) against the server's, when both are
                // "not 403".
                if !e.deny && !e.allow && e.statuses.len() == 1 && status != 403 {
                    let p = *e.statuses.iter().next().unwrap();
                    if p != status {
                        let x = o
                            .prediction_misses
                            .entry(format!("{} predicted {p} got {status}", e.kind))
                            .or_insert_with(|| {
                                (0, format!("{} /v1/{} ({})", r.method, target(r), c.token_label))
                            });
                        x.0 += 1;
                    }
                }
                if !ok || sealed {
                    // Escapes first: the model denies, the server did not.
                    let dir = if leak.is_some() {
                        "0 ESCAPE: decrypted what the request may not"
                    } else if sealed {
                        "1 ESCAPE: SEALED THE SERVER"
                    } else if status == 429 || status >= 500 {
                        "3 SERVER ERROR"
                    } else if status == 403 {
                        "4 over-denial (403 where the model allows)"
                    } else if (200..300).contains(&status) || leaks(&text) {
                        "0 ESCAPE: served"
                    } else {
                        "2 refused, but not with 403"
                    };
                    let mut t = tags(r);
                    if e.role_doc_conflict {
                        t.push_str(if t.is_empty() { "role table" } else { ",role table" });
                    }
                    let class = format!(
                        "{dir}: {} {} [{t}] model {} / server {}",
                        e.kind,
                        r.method,
                        e.describe(),
                        if (200..300).contains(&status) { "2xx".to_owned() } else { status.to_string() }
                    );
                    let ex = format!("#{i} {} /v1/{} ({})", r.method, target(r), c.token_label);
                    let x = o.classes.entry(class).or_insert_with(|| (0, ex));
                    x.0 += 1;
                    o.differences.push(format!(
                        "#{i} {} /v1/{}\n  token: {}\n{}\n  body: {}\n  model: {} — {}\n  server: {status} {}{}{}",
                        r.method,
                        target(r),
                        c.token_label,
                        policies_of(&world, &c.token_label, r),
                        short(&r.body.as_ref().map(Value::to_string).unwrap_or_default(), 300),
                        e.describe(),
                        e.explain,
                        short(&text, 300),
                        if sealed { "\n  THE SERVER WAS SEALED BY THIS REQUEST (unsealed again)" } else { "" },
                        leak.map(|l| format!("\n  LEAK: {l}")).unwrap_or_default(),
                    ));
                }
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.unwrap();
    }
    let run = t1.elapsed();
    // The run must not have changed what the model knows: every policy
    // reads back as it was, every valid token still works, no mount came.
    let mut drift = Vec::new();
    for (name, rules) in &world.policies {
        let v = srv
            .call(
                Some(ROOT),
                "GET",
                &format!("sys/policies/acl/{name}"),
                Value::Null,
            )
            .await
            .1;
        let sorted = |mut r: Vec<Rule>| {
            r.sort_by(|a, b| a.pattern.cmp(&b.pattern));
            r
        };
        let now = model::parse_policy(v["data"]["policy"].as_str().unwrap_or_default()).map(sorted);
        if now != Ok(sorted(rules.clone())) {
            drift.push(format!("policy {name} is now {now:?}"));
        }
    }
    for t in &pools.tokens {
        let valid = world.tokens.contains_key(&t.token);
        let (s, _) = srv
            .call(Some(&t.token), "GET", "auth/token/lookup-self", Value::Null)
            .await;
        if (s == 200) != valid {
            drift.push(format!("token {}: lookup-self {s}", t.label));
        }
    }
    let mounts = srv
        .call(Some(ROOT), "GET", "sys/mounts", Value::Null)
        .await
        .1;
    for m in ["m3/", "kvmount/"] {
        if mounts.to_string().contains(m) {
            drift.push(format!("mount {m} exists"));
        }
    }
    let drift = if drift.is_empty() {
        String::new()
    } else {
        format!(
            "\n\nTHE RUN CHANGED AUTHORIZATION STATE (a harness bug, or an escape):\n{}",
            drift.join("\n")
        )
    };
    println!("{drift}");
    let o = out.lock().unwrap();
    println!(
        "setup and generation {:.1?}; {} requests sent in {:.1?} ({:.0}/s); {} not expressible as HTTP requests",
        t_setup,
        o.sent,
        run,
        o.sent as f64 / run.as_secs_f64(),
        o.skipped
    );
    println!("statuses: {:?}", o.statuses);
    println!("open questions met (requests, of which the server answered 403):");
    for (k, (a, b)) in &o.choices {
        println!("  {a:7} {b:7}  {k}");
    }
    println!(
        "requests where the docs' role table and the role's text disagree: {}",
        o.role_doc
    );
    let mut misses: Vec<_> = o.prediction_misses.iter().collect();
    misses.sort_by_key(|m| std::cmp::Reverse(m.1 .0));
    println!("(informational) pre-authorization answers other than predicted, top 15:");
    for (k, (v, ex)) in misses.iter().take(15) {
        println!("  {v:7}  {k}   e.g. {}", short(ex, 160));
    }
    if !o.differences.is_empty() {
        // By direction (escapes first), then by count, at most 60 classes each.
        let mut classes: Vec<_> = o.classes.iter().collect();
        classes.sort_by(|a, b| a.0[..1].cmp(&b.0[..1]).then(b.1 .0.cmp(&a.1 .0)));
        let mut by_dir: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut cl: Vec<String> = Vec::new();
        for (k, (v, ex)) in &classes {
            let d = by_dir.entry(&k[..1]).or_default();
            d.0 += v;
            d.1 += 1;
            if d.1 <= 60 {
                cl.push(format!("{v:7}  {k}\n           e.g. {}", short(ex, 200)));
            }
        }
        println!("differences by direction (requests, classes): {by_dir:?}");
        let first: Vec<&String> = o.differences.iter().take(20).collect();
        panic!(
            "{} of {} requests differ from the model (seed {seed:#x}).\nBy class (escapes first; at most 60 classes of each kind):\n{}\n\nThe first 20:\n{}{drift}",
            o.differences.len(),
            o.sent,
            cl.join("\n"),
            first.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n\n")
        );
    }
    assert!(drift.is_empty(), "{drift}");
}

// ---------------------------------------------------------------- the model itself

#[test]
fn model_patterns_and_priority_follow_vault() {
    use model::{pattern_matches as m, priority as p};
    assert!(m("transit/*", "transit/keys/a"));
    assert!(!m("transit/*", "transit"));
    assert!(m("transit/keys*", "transit/keys"));
    assert!(m("transit/keys*", "transit/keysx/y"));
    assert!(m("+/keys/*", "m2/keys/a"));
    assert!(!m("+/keys/*", "keys/a"));
    assert!(m("+/keys/+", "transit/keys/a"));
    assert!(!m("+/keys/+", "transit/keys/a/rotate"));
    assert!(m("transit/+/app-*", "transit/encrypt/app-1"));
    assert!(m("transit/+/app-*", "transit/keys/app-1/rotate"));
    assert!(!m("transit/+/app-*", "transit/encrypt"));
    assert!(m("a/+/*", "a/b/c"));
    assert!(!m("a/+/*", "a/b"));
    // Exact beats glob; later wildcard beats earlier; fewer + wins.
    assert!(p("transit/keys/a") > p("transit/keys/a*"));
    assert!(p("transit/keys/*") > p("transit/+/a"));
    assert!(p("transit/keys/a*") > p("transit/keys/*"));
    assert!(p("a/+/c") > p("a/+/+"));
    assert!(p("a/b/*") > p("a/*"));
    assert_eq!(
        model::segments("a%2Fb//c"),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(model::segments("a/%2e/b"), None);
    assert_eq!(model::segments("a/%zz"), None);
    assert_eq!(model::segments("a/%ff"), None);
    assert_eq!(
        model::segments("a/b%252Fc"),
        Some(vec!["a".into(), "b%2Fc".into()])
    );
    let rules = model::parse_policy(
        "# c\npath \"a/*\" {\n  capabilities = [\"read\", \"list\"]\n}\npath \"b\" { capabilities = [\"deny\"] }",
    )
    .unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].caps, model::READ | model::LIST);
    let j = model::to_json(&rules);
    assert_eq!(model::parse_policy(&j).unwrap(), rules);
}

// ---------------------------------------------------------------- regressions

/// A token whose only right is `list` on `transit/*` must not reach any
/// other operation by adding `?list=true`.
#[tokio::test]
async fn list_capability_with_list_query_reaches_nothing_else() {
    let srv = Srv::start().await;
    srv.root(
        "POST",
        "transit/keys/app-1",
        json!({"exportable": true, "allow_plaintext_backup": true}),
    )
    .await;
    let ct = ct_of(
        &srv.root(
            "POST",
            "transit/encrypt/app-1",
            json!({"plaintext": "aGk="}),
        )
        .await,
    );
    srv.policy(
        "listonly",
        &[Rule {
            pattern: "transit/*".into(),
            caps: model::LIST,
        }],
        true,
    )
    .await;
    let t = srv.token(&["listonly"]).await;
    let mut wrong = Vec::new();
    for (method, path, body) in [
        (
            "POST",
            "transit/decrypt/app-1?list=true",
            json!({"ciphertext": ct}),
        ),
        (
            "POST",
            "transit/encrypt/app-1?list=true",
            json!({"plaintext": "aGk="}),
        ),
        (
            "POST",
            "transit/datakey/plaintext/app-1?list=true",
            json!({}),
        ),
        ("POST", "transit/keys/app-1/rotate?list=true", json!({})),
        (
            "POST",
            "transit/keys/app-1/config?list=true",
            json!({"deletion_allowed": true}),
        ),
        (
            "GET",
            "transit/export/encryption-key/app-1?list=true",
            Value::Null,
        ),
        ("GET", "transit/backup/app-1?list=true", Value::Null),
        // Last: if config above was served, deletion is now allowed.
        ("DELETE", "transit/keys/app-1?list=true", Value::Null),
    ] {
        let (s, v) = srv.call(Some(&t), method, path, body).await;
        // The specification makes GET ?list=true a LIST: on a route without
        // LIST that is 405 or 403 (never the GET it came from).
        let ok = s == 403 || (method == "GET" && s == 405);
        if !ok {
            wrong.push(format!(
                "{method} {path}: {s} {}",
                short(&v.to_string(), 200)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "served with only `list`:\n{}",
        wrong.join("\n")
    );
}

/// The operator role may not take backups, whatever the key's name says.
#[tokio::test]
async fn operator_cannot_back_up_a_key_of_another_mount_through_an_encoded_name() {
    let srv = Srv::start().await;
    srv.root("POST", "sys/mounts/m2", json!({"type": "transit"}))
        .await;
    srv.root("POST", "m2/keys/k1", json!({})).await;
    srv.root(
        "POST",
        "m2/keys/k1/config",
        json!({"exportable": true, "allow_plaintext_backup": true}),
    )
    .await;
    let t = srv.token(&["operator"]).await;
    for path in ["lockbox/keys/m2%2Fk1/backup", "lockbox/keys/m2%2fk1/backup"] {
        let (s, v) = srv.call(Some(&t), "POST", path, json!({})).await;
        assert!(
            s != 200 && v["data"]["backup"].is_null(),
            "POST {path} as operator: {s} {}",
            short(&v.to_string(), 300)
        );
    }
}

/// Decrypting a record under an allowed key never opens a field that was
/// encrypted under another key.
#[tokio::test]
async fn record_decrypt_opens_only_fields_of_the_named_key() {
    let srv = Srv::start().await;
    for k in ["billing-a", "billing-b"] {
        srv.root("POST", &format!("transit/keys/{k}"), json!({}))
            .await;
    }
    let enc = |k: &str| {
        json!({"key": k, "tenant": "t1", "fields": ["ssn", "email"],
               "record": {"id": 7, "ssn": "999-88-7777", "email": "secret-b@example.com"}})
    };
    let rec_b = srv
        .root("POST", "lockbox/records/encrypt", enc("billing-b"))
        .await["data"]["record"]
        .clone();
    let rec_a = srv
        .root(
            "POST",
            "lockbox/records/encrypt",
            json!({"key": "billing-a", "tenant": "t1", "fields": ["ssn", "email"],
                   "record": {"id": 7, "ssn": "111-22-3333", "email": "a@example.com"}}),
        )
        .await["data"]["record"]
        .clone();
    srv.policy(
        "billing-a-records",
        &[Rule {
            pattern: "lockbox/records/+/billing-a".into(),
            caps: model::UPDATE,
        }],
        true,
    )
    .await;
    let t = srv.token(&["billing-a-records"]).await;
    // A whole record of billing-b, and a billing-a record with one field of billing-b.
    let mut mixed = rec_a.clone();
    mixed["ssn"] = rec_b["ssn"].clone();
    for (what, record) in [("billing-b record", rec_b), ("mixed record", mixed)] {
        let (s, v) = srv
            .call(
                Some(&t),
                "POST",
                "lockbox/records/decrypt",
                json!({"key": "billing-a", "tenant": "t1", "fields": ["ssn", "email"], "record": record}),
            )
            .await;
        let text = v.to_string();
        assert!(
            !text.contains("999-88-7777") && !text.contains("secret-b@example.com"),
            "{what}: {s} {text}"
        );
        assert_eq!(s, 400, "{what}: {text}");
    }
}

/// A native ciphertext of a key the token may not use: 403 with the same
/// body whether the context is right or wrong (no oracle on the context).
#[tokio::test]
async fn native_decrypt_of_a_foreign_key_is_403_whatever_the_context() {
    let srv = Srv::start().await;
    for k in ["app-1", "db-1"] {
        srv.root("POST", &format!("transit/keys/{k}"), json!({}))
            .await;
    }
    let ct = ct_of(
        &srv.root(
            "POST",
            "lockbox/encrypt/db-1",
            json!({"plaintext": "aGk=", "context": "Y3R4"}),
        )
        .await,
    );
    srv.policy(
        "app-decrypt",
        &[Rule {
            pattern: "lockbox/decrypt/app-1".into(),
            caps: model::UPDATE,
        }],
        true,
    )
    .await;
    let t = srv.token(&["app-decrypt"]).await;
    let mut answers = Vec::new();
    for ctx in ["Y3R4", "b3RoZXI="] {
        for body in [
            json!({"ciphertext": ct, "context": ctx}),
            json!({"batch_input": [{"ciphertext": ct, "context": ctx}]}),
        ] {
            let (s, v) = srv.call(Some(&t), "POST", "lockbox/decrypt", body).await;
            answers.push((s, v));
        }
    }
    for (s, v) in &answers {
        assert_eq!(*s, 403, "{v}");
    }
    assert_eq!(answers[0].1, answers[2].1, "single: right vs wrong context");
    assert_eq!(answers[1].1, answers[3].1, "batch: right vs wrong context");
}
