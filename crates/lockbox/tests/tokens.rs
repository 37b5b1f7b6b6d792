//! Token semantics against an adversary, on a real `lockbox serve`: a
//! child never outlives or outruns its parent, revoking a parent revokes
//! its children (at once, and within the token cache window on another
//! server of the same PostgreSQL store), renewals and creations are capped
//! by the system maximum TTL, durations never overflow, orphans need sudo,
//! and errors never name another principal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ROOT: &str = "root-token-for-tokens";

/// 32 days, the default system maximum TTL (Vault's `max_lease_ttl`).
const SYSTEM_MAX: i64 = 32 * 86_400;

/// The shared client, with a token always given and this file's helpers.
struct Api(common::Api);

impl Api {
    fn new(addr: &str) -> Self {
        Api(common::Api::new(addr, ROOT))
    }

    async fn call(&self, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.0.call(Some(token), method, path, body).await
    }

    /// A call that must succeed.
    async fn ok(&self, token: &str, method: &str, path: &str, body: Value) -> Value {
        let (s, v) = self.call(token, method, path, body).await;
        assert!(s < 300, "{method} {path}: {s} {v}");
        v
    }

    /// `auth/token/create` (or `create-orphan`) by `token`: (token, accessor, answer).
    async fn create(&self, token: &str, path: &str, body: Value) -> (String, String, Value) {
        let v = self.ok(token, "POST", path, body).await;
        let t = v["auth"]["client_token"].as_str().unwrap().to_owned();
        let a = v["auth"]["accessor"].as_str().unwrap().to_owned();
        (t, a, v)
    }

    /// The status of root's `path` (an accessor endpoint) on `accessor`.
    async fn on_accessor(&self, path: &str, accessor: &str) -> u16 {
        self.call(ROOT, "POST", path, json!({ "accessor": accessor }))
            .await
            .0
    }

    async fn status_of_lookup_self(&self, token: &str) -> u16 {
        self.call(token, "GET", "auth/token/lookup-self", Value::Null)
            .await
            .0
    }

    async fn lookup_self(&self, token: &str) -> Value {
        self.ok(token, "GET", "auth/token/lookup-self", Value::Null)
            .await["data"]
            .clone()
    }

    async fn policy(&self, name: &str, hcl: &str) {
        self.ok(
            ROOT,
            "PUT",
            &format!("sys/policies/acl/{name}"),
            json!({ "policy": hcl }),
        )
        .await;
    }
}

fn dev_server(extra: &[&str], env: &[(&str, &str)]) -> common::Server {
    common::dev(ROOT, extra, env)
}

fn lease(v: &Value) -> i64 {
    v["auth"]["lease_duration"].as_i64().unwrap()
}

fn error_text(v: &Value) -> String {
    v["errors"].to_string()
}

/// May create (non-orphan) tokens, without sudo.
const DELEGATE: &str = r#"path "auth/token/create" { capabilities = ["update"] }
path "auth/token/create-orphan" { capabilities = ["update"] }
path "auth/token/revoke-orphan" { capabilities = ["update"] }"#;

/// May create tokens of any kind, with sudo.
const DELEGATE_SUDO: &str = r#"path "auth/token/create" { capabilities = ["update", "sudo"] }
path "auth/token/create-orphan" { capabilities = ["update", "sudo"] }
path "auth/token/revoke-orphan" { capabilities = ["update", "sudo"] }"#;

#[tokio::test]
async fn a_child_never_outlives_or_outruns_its_parent() {
    let srv = dev_server(&[], &[]);
    let api = Api::new(&srv.addr);
    api.policy("delegate", DELEGATE).await;
    // The finding: a 60 s parent limited to a few requests a second.
    let (parent, _, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["delegate", "app"], "ttl": "60s", "rate_limit": 2}),
        )
        .await;
    // A larger rate limit than the parent's is refused, clearly.
    let (s, v) = api
        .call(
            &parent,
            "POST",
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "876000h", "rate_limit": 1_000_000}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(error_text(&v).contains("rate_limit"), "{v}");
    // A 100-year child: expires with its parent, at the parent's rate.
    let (child, _, v) = api
        .create(
            &parent,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "876000h", "explicit_max_ttl": "876000h"}),
        )
        .await;
    assert!(lease(&v) <= 60, "{v}");
    assert!(v["auth"]["orphan"] == json!(false), "{v}");
    // The child shares its parent's budget, which the creations spent.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let me = api.lookup_self(&child).await;
    assert!(me["ttl"].as_i64().unwrap() <= 60, "{me}");
    assert_eq!(me["rate_limit"], 2, "{me}");
    assert!(me["explicit_max_ttl"].as_i64().unwrap() <= 60, "{me}");
    assert_eq!(me["orphan"], false, "{me}");
    // Its requests hit the parent's limit: 429 after a burst of two.
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(api.status_of_lookup_self(&child).await);
    }
    assert!(
        codes.iter().filter(|c| **c == 429).count() >= 3,
        "{codes:?}"
    );
    // An explicit 0 ("the server's default") is no way out either.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (zero, _, _) = api
        .create(
            &parent,
            "auth/token/create",
            json!({"policies": ["app"], "rate_limit": 0}),
        )
        .await;
    assert_eq!(api.lookup_self(&zero).await["rate_limit"], 2);
}

#[tokio::test]
async fn a_server_default_rate_limit_bounds_children_of_unlimited_parents() {
    let srv = dev_server(&["--token-rate-limit", "3"], &[]);
    let api = Api::new(&srv.addr);
    api.policy("delegate", DELEGATE).await;
    let (parent, _, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["delegate", "app"], "ttl": "1h"}),
        )
        .await;
    let (s, v) = api
        .call(
            &parent,
            "POST",
            "auth/token/create",
            json!({"policies": ["app"], "rate_limit": 4}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = api
        .call(
            &parent,
            "POST",
            "auth/token/create",
            json!({"policies": ["app"], "rate_limit": 3}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn revoking_a_parent_revokes_its_children_at_once() {
    let srv = dev_server(&[], &[]);
    let api = Api::new(&srv.addr);
    api.policy("delegate", DELEGATE).await;
    let (parent, parent_acc, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["delegate", "app"], "ttl": "1h"}),
        )
        .await;
    let (child, child_acc, _) = api
        .create(
            &parent,
            "auth/token/create",
            json!({"policies": ["delegate", "app"], "ttl": "1h"}),
        )
        .await;
    let (grandchild, _, _) = api
        .create(
            &child,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h"}),
        )
        .await;
    // A sibling tree made by root is not touched.
    let (other, _, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h"}),
        )
        .await;
    for t in [&parent, &child, &grandchild, &other] {
        assert_eq!(api.status_of_lookup_self(t).await, 200);
    }
    api.ok(
        ROOT,
        "POST",
        "auth/token/revoke-accessor",
        json!({"accessor": parent_acc}),
    )
    .await;
    for t in [&parent, &child, &grandchild] {
        assert_eq!(api.status_of_lookup_self(t).await, 403);
    }
    assert_eq!(api.status_of_lookup_self(&other).await, 200);
    assert_eq!(
        api.on_accessor("auth/token/lookup-accessor", &child_acc)
            .await,
        404
    );
    assert_eq!(
        api.on_accessor("auth/token/renew-accessor", &child_acc)
            .await,
        404
    );
    // revoke-self takes the children along too.
    let (p2, _, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["delegate", "app"], "ttl": "1h"}),
        )
        .await;
    let (c2, _, _) = api
        .create(&p2, "auth/token/create", json!({"policies": ["app"]}))
        .await;
    api.ok(&p2, "POST", "auth/token/revoke-self", json!({}))
        .await;
    assert_eq!(api.status_of_lookup_self(&c2).await, 403);
}

#[tokio::test]
async fn renewal_is_capped_by_the_system_maximum_and_explicit_max_ttl() {
    let srv = dev_server(&[], &[]);
    let api = Api::new(&srv.addr);
    let (t, acc, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h"}),
        )
        .await;
    // The finding: a 1-hour token renewed itself for 100 years.
    let v = api
        .ok(
            &t,
            "POST",
            "auth/token/renew-self",
            json!({"increment": "876000h"}),
        )
        .await;
    assert!(lease(&v) <= SYSTEM_MAX, "{v}");
    assert!(lease(&v) > SYSTEM_MAX - 60, "{v}");
    let v = api
        .ok(
            ROOT,
            "POST",
            "auth/token/renew-accessor",
            json!({"accessor": acc, "increment": "876000h"}),
        )
        .await;
    assert!(lease(&v) <= SYSTEM_MAX, "{v}");
    let v = api
        .ok(
            ROOT,
            "POST",
            "auth/token/renew",
            json!({"token": t, "increment": "876000h"}),
        )
        .await;
    assert!(lease(&v) <= SYSTEM_MAX, "{v}");
    // explicit_max_ttl is a hard limit from creation.
    let (t2, _, v) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h", "explicit_max_ttl": "2h"}),
        )
        .await;
    assert!(lease(&v) <= 3600, "{v}");
    let v = api
        .ok(
            &t2,
            "POST",
            "auth/token/renew-self",
            json!({"increment": "10h"}),
        )
        .await;
    assert!(lease(&v) <= 7200 && lease(&v) > 7100, "{v}");
    // No ttl: the default is the system maximum, never "forever".
    let (t3, _, v) = api
        .create(ROOT, "auth/token/create", json!({"policies": ["app"]}))
        .await;
    assert!(
        lease(&v) <= SYSTEM_MAX && lease(&v) > SYSTEM_MAX - 60,
        "{v}"
    );
    let me = api.lookup_self(&t3).await;
    assert!(me["expire_time"].is_string(), "{me}");
    // A 100-year request is capped, with a warning.
    let (_, _, v) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "876000h"}),
        )
        .await;
    assert!(lease(&v) <= SYSTEM_MAX, "{v}");
    assert!(
        v["warnings"].as_array().is_some_and(|w| !w.is_empty()),
        "{v}"
    );
}

#[tokio::test]
async fn overflowing_durations_are_refused() {
    let srv = dev_server(&[], &[]);
    let api = Api::new(&srv.addr);
    let (t, _, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h"}),
        )
        .await;
    let bad = [
        json!(i64::MAX),
        json!(i64::MAX.to_string()),
        json!(u64::MAX),
        json!("99999999999h"),
        json!("9223372036854775807s"),
        json!("106751991167301d"),
        json!("36526d"),
    ];
    for d in &bad {
        for field in ["ttl", "explicit_max_ttl"] {
            let (s, v) = api
                .call(
                    ROOT,
                    "POST",
                    "auth/token/create",
                    json!({"policies": ["app"], field: d}),
                )
                .await;
            assert_eq!(s, 400, "{field}={d}: {v}");
            assert!(
                error_text(&v).contains(&format!("field {field} must be a duration")),
                "{v}"
            );
        }
        for (tok, path, body) in [
            (&t, "auth/token/renew-self", json!({ "increment": d })),
            (
                &ROOT.to_owned(),
                "auth/token/renew",
                json!({ "token": t, "increment": d }),
            ),
        ] {
            let (s, v) = api.call(tok, "POST", path, body).await;
            assert_eq!(s, 400, "{path} increment={d}: {v}");
            assert!(
                error_text(&v).contains("field increment must be a duration"),
                "{v}"
            );
        }
    }
    // The token still works and has its hour.
    let me = api.lookup_self(&t).await;
    assert!(me["ttl"].as_i64().unwrap() > 3500, "{me}");
}

#[tokio::test]
async fn max_token_ttl_flag_and_variable_cap_every_token() {
    for (args, env) in [
        (vec!["--max-token-ttl", "1h"], vec![]),
        (vec![], vec![("LOCKBOX_MAX_TOKEN_TTL", "1h")]),
    ] {
        let srv = dev_server(&args, &env);
        let api = Api::new(&srv.addr);
        let (t, _, v) = api
            .create(
                ROOT,
                "auth/token/create",
                json!({"policies": ["app"], "ttl": "876000h"}),
            )
            .await;
        assert!(lease(&v) <= 3600 && lease(&v) > 3500, "{v}");
        let (_, _, v) = api
            .create(ROOT, "auth/token/create", json!({"policies": ["app"]}))
            .await;
        assert!(lease(&v) <= 3600 && lease(&v) > 3500, "{v}");
        let v = api
            .ok(
                &t,
                "POST",
                "auth/token/renew-self",
                json!({"increment": "100h"}),
            )
            .await;
        assert!(lease(&v) <= 3600, "{v}");
    }
}

#[tokio::test]
async fn orphans_need_sudo_and_outlive_their_creator() {
    let srv = dev_server(&[], &[]);
    let api = Api::new(&srv.addr);
    api.policy("delegate", DELEGATE).await;
    api.policy("delegate-sudo", DELEGATE_SUDO).await;
    let (plain, _, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["delegate", "app"], "ttl": "1h"}),
        )
        .await;
    for (path, body) in [
        (
            "auth/token/create-orphan",
            json!({"policies": ["app"], "ttl": "1h"}),
        ),
        (
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h", "no_parent": true}),
        ),
    ] {
        let (s, v) = api.call(&plain, "POST", path, body.clone()).await;
        assert_eq!(s, 403, "{path} {body}: {v}");
    }
    let (sudo, sudo_acc, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["delegate-sudo", "app"], "ttl": "1h"}),
        )
        .await;
    let (o1, _, v) = api
        .create(
            &sudo,
            "auth/token/create-orphan",
            json!({"policies": ["app"], "ttl": "10h"}),
        )
        .await;
    assert_eq!(v["auth"]["orphan"], true, "{v}");
    // An orphan is not bound by its creator's expiry.
    assert!(lease(&v) > 3600, "{v}");
    let (o2, _, _) = api
        .create(
            &sudo,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h", "no_parent": true}),
        )
        .await;
    let (child, _, _) = api
        .create(
            &sudo,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h"}),
        )
        .await;
    assert_eq!(api.lookup_self(&o1).await["orphan"], true);
    assert_eq!(api.lookup_self(&o2).await["orphan"], true);
    assert_eq!(api.lookup_self(&child).await["orphan"], false);
    // Root's tokens are root's children.
    assert_eq!(api.lookup_self(&sudo).await["orphan"], false);
    api.ok(
        ROOT,
        "POST",
        "auth/token/revoke-accessor",
        json!({"accessor": sudo_acc}),
    )
    .await;
    assert_eq!(api.status_of_lookup_self(&o1).await, 200);
    assert_eq!(api.status_of_lookup_self(&o2).await, 200);
    assert_eq!(api.status_of_lookup_self(&child).await, 403);

    // revoke-orphan: sudo only; the children survive as orphans.
    let (p, p_acc, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["delegate", "app"], "ttl": "1h"}),
        )
        .await;
    let (c, _, _) = api
        .create(
            &p,
            "auth/token/create",
            json!({"policies": ["delegate", "app"], "ttl": "1h"}),
        )
        .await;
    let (gc, _, _) = api
        .create(&c, "auth/token/create", json!({"policies": ["app"]}))
        .await;
    let (s, v) = api
        .call(
            &plain,
            "POST",
            "auth/token/revoke-orphan",
            json!({"token": p}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(api.status_of_lookup_self(&p).await, 200);
    api.ok(
        ROOT,
        "POST",
        "auth/token/revoke-orphan",
        json!({"token": p}),
    )
    .await;
    assert_eq!(api.status_of_lookup_self(&p).await, 403);
    assert_eq!(api.lookup_self(&c).await["orphan"], true);
    assert_eq!(api.status_of_lookup_self(&gc).await, 200);
    assert_eq!(
        api.on_accessor("auth/token/lookup-accessor", &p_acc).await,
        404
    );
}

#[tokio::test]
async fn a_destroyed_keys_error_does_not_name_the_destroyer() {
    let srv = dev_server(&[], &[]);
    let api = Api::new(&srv.addr);
    api.ok(ROOT, "POST", "transit/keys/gone", json!({})).await;
    let (app, _, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h"}),
        )
        .await;
    let (admin, admin_acc, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["admin"], "ttl": "1h", "display_name": "t-admin"}),
        )
        .await;
    let ct = api
        .ok(
            &app,
            "POST",
            "transit/encrypt/gone",
            json!({"plaintext": "aGk="}),
        )
        .await["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    api.ok(
        ROOT,
        "POST",
        "transit/keys/gone/config",
        json!({"deletion_allowed": true}),
    )
    .await;
    api.ok(&admin, "POST", "lockbox/keys/gone/destroy", json!({}))
        .await;
    for (path, body) in [
        ("transit/decrypt/gone", json!({"ciphertext": ct})),
        ("transit/encrypt/gone", json!({"plaintext": "aGk="})),
    ] {
        let (s, v) = api.call(&app, "POST", path, body).await;
        assert_eq!(s, 400, "{v}");
        let text = error_text(&v);
        assert!(text.contains("destroyed"), "{text}");
        assert!(!text.contains(&admin_acc), "{text}");
        assert!(!text.contains("t-admin"), "{text}");
        assert!(!text.contains("token"), "{text}");
    }
    // The key's metadata, read by an operator, still says who.
    let v = api.ok(ROOT, "GET", "transit/keys/gone", Value::Null).await;
    assert!(
        v["data"]["destroyed_by"]
            .as_str()
            .unwrap()
            .contains(&admin_acc),
        "{v}"
    );
}

fn unique() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{n}", std::process::id())
}

#[tokio::test]
async fn two_servers_one_postgres_a_revoked_parent_kills_children_everywhere() {
    let schema = format!("lbx_tokens_{}", unique());
    let url = common::pg_schema_url(&schema);
    let key = lockbox::rootkey::RootKey::generate().unwrap();
    let key_text = lockbox::encoding::b64_encode(key.expose_secret().expose_secret());
    let env = [("LOCKBOX_MASTER_KEY", key_text.as_str())];
    let a = common::start(&["--store", &url], &env);
    let b = common::start(&["--store", &url], &env);
    // In master-key mode the root token is set through a local store.
    let root = {
        let store = lockbox_store::Store::connect(&url).await.unwrap();
        let e = lockbox_engine::Engine::open(store, lockbox_engine::EngineConfig::default())
            .await
            .unwrap();
        e.unseal_with_master_key(lockbox::rootkey::RootKey::parse_master_key(&key_text).unwrap())
            .await
            .unwrap();
        e.reset_root_token(Some("shared-root")).await.unwrap()
    };
    let (api_a, api_b) = (Api::new(&a.addr), Api::new(&b.addr));
    // Root's new token reaches B within its cache window.
    let deadline = Instant::now() + Duration::from_secs(15);
    while api_b.status_of_lookup_self(&root).await != 200 {
        assert!(Instant::now() < deadline, "B never accepted the root token");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api_a
        .ok(
            &root,
            "PUT",
            "sys/policies/acl/delegate",
            json!({ "policy": DELEGATE }),
        )
        .await;
    let (parent, parent_acc, _) = api_a
        .create(
            &root,
            "auth/token/create",
            json!({"policies": ["delegate", "app"], "ttl": "1h"}),
        )
        .await;
    let (child, _, _) = api_b
        .create(
            &parent,
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h"}),
        )
        .await;
    // Both servers know (and cache) both tokens.
    for api in [&api_a, &api_b] {
        assert_eq!(api.status_of_lookup_self(&parent).await, 200);
        assert_eq!(api.status_of_lookup_self(&child).await, 200);
    }
    api_a
        .ok(
            &root,
            "POST",
            "auth/token/revoke-accessor",
            json!({"accessor": parent_acc}),
        )
        .await;
    let revoked = Instant::now();
    // At once on the server that revoked.
    assert_eq!(api_a.status_of_lookup_self(&child).await, 403);
    // Within the token cache window (10 s) on the other.
    loop {
        if api_b.status_of_lookup_self(&child).await == 403 {
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(12),
            "B still accepts the child of a revoked parent"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(api_b.status_of_lookup_self(&parent).await, 403);

    // revoke-orphan on A: the child lives on, on B too, all along — even
    // when B's copy of the parent expires before its copy of the child.
    let (p2, p2_acc, _) = api_a
        .create(
            &root,
            "auth/token/create",
            json!({"policies": ["delegate", "app"], "ttl": "1h"}),
        )
        .await;
    let (c2, _, _) = api_a
        .create(&p2, "auth/token/create", json!({"policies": ["app"]}))
        .await;
    assert_eq!(api_b.status_of_lookup_self(&p2).await, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api_b.status_of_lookup_self(&c2).await, 200);
    api_a
        .ok(
            &root,
            "POST",
            "auth/token/revoke-orphan",
            json!({"accessor": p2_acc}),
        )
        .await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(12) {
        assert_eq!(api_b.status_of_lookup_self(&c2).await, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api_b.lookup_self(&c2).await["orphan"], true);
    assert_eq!(api_b.status_of_lookup_self(&p2).await, 403);
    drop(a);
    drop(b);
    // A synchronous helper with its own runtime: off this one.
    tokio::task::spawn_blocking(move || common::drop_schema(&schema))
        .await
        .unwrap();
}

/// Found by the second attack: children revoked while their parent was
/// being `revoke-orphan`ed came back to life (the orphaning rewrote rows
/// it had listed before their revocation), and could not be revoked again.
#[tokio::test]
async fn children_revoked_during_revoke_orphan_stay_revoked() {
    // Each dead child's check is a request without a valid token.
    let srv = dev_server(&["--unauthenticated-rate-limit", "0"], &[]);
    let api = Api::new(&srv.addr);
    api.policy(
        "maker",
        r#"path "auth/token/create" { capabilities = ["update"] }
           path "transit/*" { capabilities = ["update"] }"#,
    )
    .await;
    let (parent, parent_acc, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["maker"], "ttl": "1h"}),
        )
        .await;
    let mut children = Vec::new();
    for _ in 0..150 {
        let (t, a, _) = api
            .create(
                &parent,
                "auth/token/create",
                json!({"policies": ["maker"], "ttl": "1h"}),
            )
            .await;
        children.push((t, a));
    }
    // The orphaning and the children's revocations at the same moment.
    let spawn = |path: &'static str, accessor: String| {
        let api = common::Api::new(&srv.addr, ROOT);
        tokio::spawn(async move {
            api.call(Some(ROOT), "POST", path, json!({"accessor": accessor}))
                .await
        })
    };
    let orphan = spawn("auth/token/revoke-orphan", parent_acc);
    let revokes: Vec<_> = children
        .iter()
        .map(|(_, a)| spawn("auth/token/revoke-accessor", a.clone()))
        .collect();
    let o = orphan.await.unwrap();
    assert_eq!(o.0, 204, "{}", o.1);
    for r in revokes {
        let (s, v) = r.await.unwrap();
        assert_eq!(s, 204, "{v}");
    }
    for (t, _) in &children {
        assert_eq!(api.status_of_lookup_self(t).await, 403);
    }
}

/// Found by the second attack: each child had its own bucket at its
/// parent's rate, so 20 children of a 5/s parent made 100 requests a
/// second. Children now also draw from their limited ancestors' buckets.
#[tokio::test]
async fn children_share_their_parents_rate_instead_of_multiplying_it() {
    let srv = dev_server(&[], &[]);
    let api = Api::new(&srv.addr);
    api.policy(
        "maker",
        r#"path "auth/token/create" { capabilities = ["update"] }
           path "transit/*" { capabilities = ["update"] }"#,
    )
    .await;
    let (parent, _, _) = api
        .create(
            ROOT,
            "auth/token/create",
            json!({"policies": ["maker"], "ttl": "1h", "rate_limit": 5}),
        )
        .await;
    let mut children = Vec::new();
    for _ in 0..10 {
        // One child a second: the parent's own budget pays for making them.
        let (s, v) = api
            .call(
                &parent,
                "POST",
                "auth/token/create",
                json!({"policies": ["maker"], "ttl": "1h"}),
            )
            .await;
        if s == 429 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        assert_eq!(s, 200, "{v}");
        children.push(v["auth"]["client_token"].as_str().unwrap().to_owned());
    }
    assert!(children.len() >= 3, "{} children", children.len());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t0 = Instant::now();
    let mut served = 0;
    for i in 0..40 {
        let t = &children[i % children.len()];
        let (s, _) = api.call(t, "POST", "transit/random/8", json!({})).await;
        if s == 200 {
            served += 1;
        } else {
            assert_eq!(s, 429);
        }
    }
    // The parent's 5 per second (a burst of 5, plus what refills meanwhile).
    let allowed = 5.0 + 5.0 * t0.elapsed().as_secs_f64();
    assert!(
        f64::from(served) <= allowed + 1.0,
        "{served} served in {:?}",
        t0.elapsed()
    );
}
