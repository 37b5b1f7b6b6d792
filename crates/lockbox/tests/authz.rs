//! Access control against a real `lockbox serve`: the authorization matrix
//! (every built-in role × every endpoint, expected allow or deny, zero
//! escapes), the token lifecycle, policy management and rate limiting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::Api;
use serde_json::{json, Value};

const ROOT: &str = "root-token-for-authz";

fn dev_server(extra: &[&str]) -> common::Server {
    common::dev(ROOT, extra, &[])
}

#[tokio::test]
async fn authorization_matrix_has_no_escapes() {
    let srv = dev_server(&[]);
    let api = Api::new(&srv.addr, ROOT);
    for (name, ty) in [
        ("app-1", "aes256-gcm96"),
        ("db-1", "aes256-gcm96"),
        ("sig-1", "ed25519"),
    ] {
        api.root("POST", &format!("transit/keys/{name}"), json!({"type": ty}))
            .await;
    }
    // Scoped app role: only keys app-*; a policy that grants nothing useful.
    api.root(
        "PUT",
        "sys/policies/acl/app-own",
        json!({"role": "app", "keys": "app-*"}),
    )
    .await;
    api.root(
        "PUT",
        "sys/policies/acl/nothing",
        json!({"policy": "path \"nowhere/*\" { capabilities = [\"read\"] }"}),
    )
    .await;
    let pt = json!({"plaintext": "aGVsbG8="});
    let ct_app = api.root("POST", "transit/encrypt/app-1", pt.clone()).await["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    let ct_db = api.root("POST", "transit/encrypt/db-1", pt.clone()).await["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    let n_app = api.root("POST", "lockbox/encrypt/app-1", pt.clone()).await["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    let n_db = api.root("POST", "lockbox/encrypt/db-1", pt.clone()).await["data"]["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();

    let tokens = [
        ("app", api.token(&["app-own"]).await),
        ("operator", api.token(&["operator"]).await),
        ("auditor", api.token(&["auditor"]).await),
        ("admin", api.token(&["admin"]).await),
        ("nothing", api.token(&["nothing"]).await),
        ("bad-token", "lbs.not-a-real-token".to_owned()),
    ];
    let rec =
        |key: &str| json!({"key": key, "tenant": "t1", "fields": ["ssn"], "record": {"ssn": "1"}});
    // (method, path, body, roles allowed). Allowed: anything but 403.
    // Denied: exactly 403. `*` = every role with a valid token.
    let cases: Vec<(&str, String, Value, &[&str])> = vec![
        (
            "LIST",
            "transit/keys".into(),
            Value::Null,
            &["operator", "admin"],
        ),
        (
            "GET",
            "transit/keys/app-1".into(),
            Value::Null,
            &["operator", "admin"],
        ),
        (
            "POST",
            "transit/keys/new-key".into(),
            json!({}),
            &["operator", "admin"],
        ),
        (
            "POST",
            "transit/keys/app-1/rotate".into(),
            json!({}),
            &["operator", "admin"],
        ),
        (
            "POST",
            "transit/keys/app-1/config".into(),
            json!({"min_decryption_version": 1}),
            &["operator", "admin"],
        ),
        (
            "POST",
            "transit/keys/app-1/trim".into(),
            json!({"min_available_version": 1}),
            // Trimming deletes key versions for good: sudo, as destroy.
            &["admin"],
        ),
        (
            "DELETE",
            "transit/keys/db-1".into(),
            Value::Null,
            &["admin"],
        ),
        (
            "POST",
            "transit/encrypt/app-1".into(),
            pt.clone(),
            &["app", "admin"],
        ),
        (
            "POST",
            "transit/encrypt/db-1".into(),
            pt.clone(),
            &["admin"],
        ),
        (
            "POST",
            "transit/decrypt/app-1".into(),
            json!({"ciphertext": ct_app}),
            &["app", "admin"],
        ),
        (
            "POST",
            "transit/decrypt/db-1".into(),
            json!({"ciphertext": ct_db}),
            &["admin"],
        ),
        (
            "POST",
            "transit/rewrap/app-1".into(),
            json!({"ciphertext": ct_app}),
            &["app", "admin"],
        ),
        (
            "POST",
            "transit/rewrap/db-1".into(),
            json!({"ciphertext": ct_db}),
            &["admin"],
        ),
        (
            "POST",
            "transit/datakey/plaintext/app-1".into(),
            json!({}),
            &["app", "admin"],
        ),
        (
            "POST",
            "transit/datakey/wrapped/db-1".into(),
            json!({}),
            &["admin"],
        ),
        (
            "POST",
            "transit/hmac/app-1".into(),
            json!({"input": "aGk="}),
            &["admin"],
        ),
        (
            "POST",
            "transit/sign/sig-1".into(),
            json!({"input": "aGk="}),
            &["admin"],
        ),
        (
            "POST",
            "transit/verify/sig-1".into(),
            json!({"input": "aGk=", "signature": "vault:v1:AA=="}),
            &["admin"],
        ),
        (
            "GET",
            "transit/export/encryption-key/app-1".into(),
            Value::Null,
            &["admin"],
        ),
        (
            "GET",
            "transit/backup/app-1".into(),
            Value::Null,
            &["admin"],
        ),
        (
            "POST",
            "transit/restore".into(),
            json!({"backup": "x"}),
            &["admin"],
        ),
        (
            "POST",
            "transit/hash".into(),
            json!({"input": "aGk="}),
            &["admin"],
        ),
        ("POST", "transit/random".into(), json!({}), &["admin"]),
        (
            "GET",
            "transit/cache-config".into(),
            Value::Null,
            &["admin"],
        ),
        (
            "POST",
            "lockbox/encrypt/app-1".into(),
            pt.clone(),
            &["app", "admin"],
        ),
        (
            "POST",
            "lockbox/encrypt/db-1".into(),
            pt.clone(),
            &["admin"],
        ),
        (
            "POST",
            "lockbox/decrypt".into(),
            json!({"ciphertext": n_app}),
            &["app", "admin"],
        ),
        (
            "POST",
            "lockbox/decrypt".into(),
            json!({"ciphertext": n_db}),
            &["admin"],
        ),
        (
            "POST",
            "lockbox/records/encrypt".into(),
            rec("app-1"),
            &["app", "admin"],
        ),
        (
            "POST",
            "lockbox/records/encrypt".into(),
            rec("db-1"),
            &["admin"],
        ),
        (
            "POST",
            "lockbox/envelope/encrypt".into(),
            json!({"key": "app-1", "plaintext": "aGk="}),
            &["app", "admin"],
        ),
        (
            "POST",
            "lockbox/envelope/encrypt".into(),
            json!({"key": "db-1", "plaintext": "aGk="}),
            &["admin"],
        ),
        (
            "POST",
            "lockbox/envelope/encrypt".into(),
            json!({"tenant": "acme", "plaintext": "aGk="}),
            &["admin"],
        ),
        (
            "POST",
            "lockbox/records/search".into(),
            json!({"key": "app-1", "index_key": "db-1", "field": "ssn", "value": "1"}),
            &["admin"],
        ),
        (
            "POST",
            "lockbox/keys/no-such-key/destroy".into(),
            json!({}),
            &["admin"],
        ),
        (
            "POST",
            "lockbox/keys/no-such-key/backup".into(),
            json!({}),
            &["admin"],
        ),
        (
            // Undelete gives back what `delete` took away: sudo.
            "POST",
            "lockbox/keys/no-such-key/restore".into(),
            json!({}),
            &["admin"],
        ),
        (
            "GET",
            "sys/mounts".into(),
            Value::Null,
            &["operator", "admin"],
        ),
        (
            "POST",
            "sys/mounts/extra".into(),
            json!({"type": "transit"}),
            &["admin"],
        ),
        ("LIST", "sys/policies/acl".into(), Value::Null, &["admin"]),
        (
            "GET",
            "sys/policies/acl/app-own".into(),
            Value::Null,
            &["admin"],
        ),
        (
            "PUT",
            "sys/policies/acl/new-one".into(),
            json!({"role": "app"}),
            &["admin"],
        ),
        (
            "DELETE",
            "sys/policy/nothing-here".into(),
            Value::Null,
            &["admin"],
        ),
        (
            "POST",
            "auth/token/create".into(),
            json!({"policies": ["app-own"], "ttl": "1h"}),
            &["admin"],
        ),
        (
            "POST",
            "auth/token/lookup-accessor".into(),
            json!({"accessor": "nope"}),
            &["admin"],
        ),
        (
            "POST",
            "auth/token/revoke-accessor".into(),
            json!({"accessor": "nope"}),
            &["admin"],
        ),
        ("GET", "auth/token/lookup-self".into(), Value::Null, &["*"]),
        (
            "GET",
            "sys/audit".into(),
            Value::Null,
            &["auditor", "admin"],
        ),
        (
            "GET",
            "sys/metrics".into(),
            Value::Null,
            &["operator", "auditor", "admin"],
        ),
    ];
    let mut escapes = Vec::new();
    let mut checked = 0;
    for (method, path, body, allowed) in &cases {
        for (role, token) in &tokens {
            let allow = *role != "bad-token" && (allowed.contains(role) || allowed.contains(&"*"));
            let (status, v) = api.call(Some(token), method, path, body.clone()).await;
            checked += 1;
            let ok = if allow { status != 403 } else { status == 403 };
            if !ok {
                escapes.push(format!("{role:9} {method} {path}: {status} {v}"));
            }
            // Every answer is JSON with a clear error when refused.
            if status == 403 {
                assert!(v["errors"][0]
                    .as_str()
                    .unwrap()
                    .contains("permission denied"));
            }
        }
    }
    assert!(
        escapes.is_empty(),
        "{} of {checked} checks wrong:\n{}",
        escapes.len(),
        escapes.join("\n")
    );
    assert!(checked >= 270);
    // A native batch decrypt checks the key of every item before anything
    // is decrypted: one foreign item refuses the whole batch (403), so no
    // plaintext leaks and nothing is learnt from the others; the app's own
    // items alone decrypt.
    let batch = json!({"batch_input": [{"ciphertext": n_app}, {"ciphertext": n_db}]});
    let own = json!({"batch_input": [{"ciphertext": n_app}, {"ciphertext": n_app}]});
    for (role, token) in &tokens[..5] {
        let (s, v) = api
            .call(Some(token), "POST", "lockbox/decrypt", batch.clone())
            .await;
        if *role == "admin" {
            assert_eq!(
                v["data"]["batch_results"][1]["plaintext"], "aGVsbG8=",
                "{v}"
            );
        } else {
            assert_eq!(
                (s, v.clone()),
                (403, json!({"errors": ["permission denied"]})),
                "{role}"
            );
        }
        let (s, v) = api
            .call(Some(token), "POST", "lockbox/decrypt", own.clone())
            .await;
        if *role == "admin" || *role == "app" {
            assert_eq!(
                v["data"]["batch_results"][1]["plaintext"], "aGVsbG8=",
                "{role}: {v}"
            );
        } else {
            assert_eq!(s, 403, "{role}: {v}");
        }
    }
    // No token at all: refused everywhere but the unauthenticated sys paths.
    assert_eq!(
        api.call(None, "GET", "transit/keys/app-1", Value::Null)
            .await
            .0,
        403
    );
    assert_eq!(
        api.call(None, "GET", "sys/health", Value::Null).await.0,
        200
    );
    // Sealing needs sudo: admin has it (checked last, it seals the server).
    let admin = &tokens[3].1;
    for (role, token) in &tokens[..3] {
        assert_eq!(
            api.call(Some(token), "PUT", "sys/seal", Value::Null)
                .await
                .0,
            403,
            "{role}"
        );
    }
    assert_eq!(
        api.call(Some(admin), "PUT", "sys/seal", Value::Null)
            .await
            .0,
        204
    );
}

#[tokio::test]
async fn token_lifecycle_create_lookup_renew_revoke_expire() {
    let srv = dev_server(&[]);
    let api = Api::new(&srv.addr, ROOT);
    api.root("POST", "transit/keys/app-1", json!({})).await;
    let v = api
        .root(
            "POST",
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h", "display_name": "billing", "meta": {"team": "pay"}}),
        )
        .await;
    let auth = &v["auth"];
    let tok = auth["client_token"].as_str().unwrap();
    let acc = auth["accessor"].as_str().unwrap();
    assert!(tok.starts_with("lbs."));
    assert_eq!(auth["policies"], json!(["app"]));
    assert!(auth["lease_duration"].as_i64().unwrap() > 3500);

    let (s, me) = api
        .call(Some(tok), "GET", "auth/token/lookup-self", Value::Null)
        .await;
    assert_eq!(s, 200);
    assert_eq!(me["data"]["accessor"], acc);
    assert_eq!(me["data"]["display_name"], "billing");
    assert_eq!(me["data"]["meta"]["team"], "pay");
    assert_eq!(me["data"]["role"], "app");
    // The token itself is never echoed back by lookups.
    assert!(!me.to_string().contains(tok));
    let by_acc = api
        .root(
            "POST",
            "auth/token/lookup-accessor",
            json!({"accessor": acc}),
        )
        .await;
    assert_eq!(by_acc["data"]["policies"], json!(["app"]));
    let by_tok = api
        .root("POST", "auth/token/lookup", json!({"token": tok}))
        .await;
    assert_eq!(by_tok["data"]["accessor"], acc);

    // Renew: the TTL grows to the increment.
    let (s, r) = api
        .call(
            Some(tok),
            "POST",
            "auth/token/renew-self",
            json!({"increment": "2h"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(r["auth"]["lease_duration"].as_i64().unwrap() > 7000);

    // The token works, then is revoked and stops working at once.
    let (s, _) = api
        .call(
            Some(tok),
            "POST",
            "transit/encrypt/app-1",
            json!({"plaintext": "aGk="}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = api
        .call(Some(tok), "POST", "auth/token/revoke-self", json!({}))
        .await;
    assert_eq!(s, 204);
    let (s, _) = api
        .call(
            Some(tok),
            "POST",
            "transit/encrypt/app-1",
            json!({"plaintext": "aGk="}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call(
            Some(ROOT),
            "POST",
            "auth/token/lookup-accessor",
            json!({"accessor": acc}),
        )
        .await;
    assert_eq!(s, 404);

    // Expiry: a 2-second token stops working.
    let v = api
        .root(
            "POST",
            "auth/token/create",
            // Two seconds: expiry has one-second resolution, so a 1 s
            // token made just before a second ends may be dead at once.
            json!({"policies": ["app"], "ttl": 2, "renewable": false}),
        )
        .await;
    let short = v["auth"]["client_token"].as_str().unwrap().to_owned();
    let (s, _) = api
        .call(Some(&short), "GET", "auth/token/lookup-self", Value::Null)
        .await;
    assert_eq!(s, 200);
    let (s, e) = api
        .call(Some(&short), "POST", "auth/token/renew-self", json!({}))
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(e["errors"][0].as_str().unwrap().contains("not renewable"));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (s, _) = api
        .call(Some(&short), "GET", "auth/token/lookup-self", Value::Null)
        .await;
    assert_eq!(s, 403);

    // Bad requests are 4xx with a JSON error.
    for body in [
        json!({"policies": ["no-such-policy"], "ttl": "1h"}),
        json!({"policies": ["root"], "ttl": "1h"}),
        json!({"policies": [], "ttl": "1h"}),
        json!({"policies": ["app"], "ttl": "forever"}),
        json!({"policies": 5}),
        json!({"policies": ["app"], "meta": {"a": 1}}),
    ] {
        let (s, v) = api
            .call(Some(ROOT), "POST", "auth/token/create", body.clone())
            .await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["errors"][0].is_string());
    }
}

#[tokio::test]
async fn a_tenant_token_never_reaches_another_tenant() {
    let srv = dev_server(&[]);
    let api = Api::new(&srv.addr, ROOT);
    for t in ["acme", "globex"] {
        api.root(
            "PUT",
            &format!("sys/policies/acl/{t}-app"),
            json!({"role": "app", "keys": format!("tenant-{t}")}),
        )
        .await;
    }
    let acme = api.token(&["acme-app"]).await;
    let globex = api.token(&["globex-app"]).await;
    let enc = |t: &str| json!({"tenant": t, "plaintext": "c2VjcmV0", "context": {"table": "users", "row": "7"}});
    let (s, v) = api
        .call(Some(&acme), "POST", "lockbox/envelope/encrypt", enc("acme"))
        .await;
    assert_eq!(s, 200, "{v}");
    let ct_acme = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    let (s, v) = api
        .call(
            Some(&globex),
            "POST",
            "lockbox/envelope/encrypt",
            enc("globex"),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let ct_globex = v["data"]["ciphertext"].as_str().unwrap().to_owned();
    // Each tenant's token: its own data only, whatever it claims.
    let dec = |t: &str, ct: &str| json!({"tenant": t, "ciphertext": ct});
    let (s, v) = api
        .call(
            Some(&acme),
            "POST",
            "lockbox/envelope/decrypt",
            dec("acme", &ct_acme),
        )
        .await;
    assert_eq!(
        (s, v["data"]["plaintext"].as_str()),
        (200, Some("c2VjcmV0"))
    );
    let (s, _) = api
        .call(
            Some(&acme),
            "POST",
            "lockbox/envelope/decrypt",
            dec("globex", &ct_globex),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call(
            Some(&acme),
            "POST",
            "lockbox/envelope/encrypt",
            enc("globex"),
        )
        .await;
    assert_eq!(s, 403);
    // Globex's envelope presented as acme's: refused by the envelope itself.
    let (s, v) = api
        .call(
            Some(&acme),
            "POST",
            "lockbox/envelope/decrypt",
            dec("acme", &ct_globex),
        )
        .await;
    assert!(s == 400 || s == 403, "{s} {v}");
    assert!(v["data"]["plaintext"].is_null());
    // And by key name: tenant-globex is not acme's.
    let (s, _) = api
        .call(
            Some(&acme),
            "POST",
            "lockbox/envelope/decrypt",
            json!({"key": "tenant-globex", "ciphertext": ct_globex}),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn tokens_cannot_grant_more_than_they_have() {
    let srv = dev_server(&[]);
    let api = Api::new(&srv.addr, ROOT);
    // A delegating policy: may create tokens, but without sudo.
    api.root(
        "PUT",
        "sys/policies/acl/delegate",
        json!({"policy": "path \"auth/token/create\" { capabilities = [\"update\"] }"}),
    )
    .await;
    let t = api.token(&["delegate", "app"]).await;
    let (s, v) = api
        .call(
            Some(&t),
            "POST",
            "auth/token/create",
            json!({"policies": ["app"], "ttl": "1h"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .call(
            Some(&t),
            "POST",
            "auth/token/create",
            json!({"policies": ["admin"], "ttl": "1h"}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    // Every token expires: without a ttl, a child gets the default, capped
    // at its parent's expiry (the parent has an hour).
    let (s, v) = api
        .call(
            Some(&t),
            "POST",
            "auth/token/create",
            json!({"policies": ["app"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let lease = v["auth"]["lease_duration"].as_i64().unwrap();
    assert!(lease > 0 && lease <= 3600, "{v}");
}

#[tokio::test]
async fn policies_crud_and_bad_policies() {
    let srv = dev_server(&[]);
    let api = Api::new(&srv.addr, ROOT);
    let hcl = "path \"transit/encrypt/x\" {\n  capabilities = [\"update\"]\n}\n";
    let (s, _) = api
        .call(
            Some(ROOT),
            "PUT",
            "sys/policies/acl/p1",
            json!({"policy": hcl}),
        )
        .await;
    assert_eq!(s, 204);
    let v = api.root("GET", "sys/policies/acl/p1", Value::Null).await;
    assert_eq!(v["data"]["policy"], hcl);
    // Vault's older path and hvac's list shape.
    let v = api.root("GET", "sys/policy", Value::Null).await;
    let names = v["data"]["policies"].as_array().unwrap();
    for n in ["root", "admin", "operator", "auditor", "app", "p1"] {
        assert!(names.contains(&json!(n)), "{n} in {names:?}");
    }
    // Built-ins are readable and fixed.
    let v = api
        .root("GET", "sys/policies/acl/operator", Value::Null)
        .await;
    assert!(v["data"]["policy"].as_str().unwrap().contains("+/keys/*"));
    for (body, status) in [
        (
            json!({"policy": "path \"a\" { capabilities = [\"fly\"] }"}),
            400,
        ),
        (
            json!({"policy": "path \"a*b\" { capabilities = [\"read\"] }"}),
            400,
        ),
        (json!({"policy": "not hcl"}), 400),
        (json!({"role": "superuser"}), 400),
        (json!({"role": "app", "keys": "a*b"}), 400),
        (json!({}), 400),
    ] {
        let (s, v) = api
            .call(Some(ROOT), "PUT", "sys/policies/acl/p2", body.clone())
            .await;
        assert_eq!(s, status, "{body}: {v}");
    }
    let (s, _) = api
        .call(
            Some(ROOT),
            "PUT",
            "sys/policies/acl/admin",
            json!({"role": "app"}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .call(Some(ROOT), "DELETE", "sys/policies/acl/p1", Value::Null)
        .await;
    assert_eq!(s, 204);
    let (s, _) = api
        .call(Some(ROOT), "GET", "sys/policies/acl/p1", Value::Null)
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call(Some(ROOT), "DELETE", "sys/policies/acl/p1", Value::Null)
        .await;
    assert_eq!(s, 404);
    // A policy change applies at once on this server.
    api.root(
        "PUT",
        "sys/policies/acl/p3",
        json!({"policy": "path \"transit/keys\" { capabilities = [\"list\"] }"}),
    )
    .await;
    api.root("POST", "transit/keys/k", json!({})).await;
    let t = api.token(&["p3"]).await;
    assert_eq!(
        api.call(Some(&t), "LIST", "transit/keys", Value::Null)
            .await
            .0,
        200
    );
    api.root(
        "PUT",
        "sys/policies/acl/p3",
        json!({"policy": "path \"transit/keys\" { capabilities = [\"deny\"] }"}),
    )
    .await;
    assert_eq!(
        api.call(Some(&t), "LIST", "transit/keys", Value::Null)
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn per_token_rate_limit_answers_429() {
    let srv = dev_server(&["--token-rate-limit", "20"]);
    let api = Api::new(&srv.addr, ROOT);
    let slow = {
        let v = api
            .root(
                "POST",
                "auth/token/create",
                json!({"policies": ["app"], "ttl": "1h", "rate_limit": 5}),
            )
            .await;
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    };
    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(
            api.call(Some(&slow), "GET", "auth/token/lookup-self", Value::Null)
                .await
                .0,
        );
    }
    let limited = codes.iter().filter(|c| **c == 429).count();
    assert!(codes[0] == 200 && limited >= 5, "{codes:?}");
    let (s, v) = api
        .call(Some(&slow), "GET", "auth/token/lookup-self", Value::Null)
        .await;
    assert_eq!(s, 429);
    assert!(v["errors"][0].as_str().unwrap().contains("rate limit"));
    // Another token has its own bucket; after a second the first recovers.
    let other = api.token(&["app"]).await;
    assert_eq!(
        api.call(Some(&other), "GET", "auth/token/lookup-self", Value::Null)
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        api.call(Some(&slow), "GET", "auth/token/lookup-self", Value::Null)
            .await
            .0,
        200
    );
}
