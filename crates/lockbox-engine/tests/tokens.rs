//! The engine's token semantics: parents bound and outlive their children,
//! the system maximum TTL bounds everything but the root token (also tokens
//! stored by older versions without expiry), arithmetic never overflows.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backends, engine_on, second_engine};
use lockbox_engine::{
    EngineError, Parent, TokenInfo, TokenRequest, DEFAULT_MAX_TOKEN_TTL, MAX_TOKEN_DEPTH,
    ROOT_ACCESSOR,
};

fn req(ttl: i64) -> TokenRequest {
    TokenRequest {
        policies: vec!["app".into()],
        ttl,
        renewable: true,
        ..TokenRequest::default()
    }
}

#[tokio::test]
async fn ttls_are_capped_and_never_overflow() {
    let b = backends::sqlite();
    let (e, _root, _g) = engine_on(&b).await;
    let at = lockbox_engine::now();
    for ttl in [0, i64::MAX, DEFAULT_MAX_TOKEN_TTL + 1] {
        let c = e.create_token_under(&req(ttl), None).await.unwrap();
        let exp = c.info.expire_at.unwrap();
        assert!(exp > at && exp <= at + DEFAULT_MAX_TOKEN_TTL + 2, "{ttl}");
        assert_eq!(c.warnings.is_empty(), ttl == 0, "{ttl}: {:?}", c.warnings);
        assert!(c.info.is_orphan());
        let r = e.renew_accessor(&c.info.accessor, i64::MAX).await.unwrap();
        assert!(r.expire_at.unwrap() <= c.info.created_at + DEFAULT_MAX_TOKEN_TTL);
    }
    let mut r = req(i64::MAX);
    r.explicit_max_ttl = i64::MAX;
    let c = e.create_token_under(&r, None).await.unwrap();
    assert!(c.info.expire_at.unwrap() <= at + DEFAULT_MAX_TOKEN_TTL + 2);
}

#[tokio::test]
async fn children_follow_their_parents() {
    let b = backends::sqlite();
    let (e, _root, _g) = engine_on(&b).await;
    let (ptok, parent) = e.create_token(&req(60)).await.unwrap();
    let p = e.lookup_token(&ptok).await.unwrap().unwrap();
    let under = |rate| Parent {
        token: &p,
        rate_limit: rate,
    };
    let c = e
        .create_token_under(&req(i64::MAX), Some(under(0)))
        .await
        .unwrap();
    assert_eq!(c.info.parent.as_deref(), Some(parent.accessor.as_str()));
    assert!(c.info.expire_at <= parent.expire_at);
    assert!(!c.warnings.is_empty());
    // Renewal never passes the parent's expiry.
    let r = e.renew_accessor(&c.info.accessor, 3600).await.unwrap();
    assert!(r.expire_at <= parent.expire_at);
    // Rate limits: the parent's by default, never more.
    let mut fast = req(10);
    fast.rate_limit = 11;
    assert!(matches!(
        e.create_token_under(&fast, Some(under(10))).await,
        Err(EngineError::BadRequest(m)) if m.contains("rate_limit")
    ));
    fast.rate_limit = 0;
    let mut limited = (*p).clone();
    limited.rate_limit = 10;
    let c2 = e
        .create_token_under(
            &fast,
            Some(Parent {
                token: &limited,
                rate_limit: 10,
            }),
        )
        .await
        .unwrap();
    assert_eq!(c2.info.rate_limit, 10);
    // Revoking the parent: the children are gone, here and on a server
    // that never cached them.
    assert!(e.lookup_token(&c.token).await.unwrap().is_some());
    e.revoke_accessor(&parent.accessor).await.unwrap();
    assert!(e.lookup_token(&c.token).await.unwrap().is_none());
    assert!(matches!(
        e.lookup_accessor(&c.info.accessor).await,
        Err(EngineError::NotFound(_))
    ));
    let other = second_engine(&b, &_g, &_root).await;
    assert!(other.lookup_token(&c.token).await.unwrap().is_none());
    // A dead parent makes no more children.
    assert!(matches!(
        e.create_token_under(&req(10), Some(under(0))).await,
        Err(EngineError::PermissionDenied(_))
    ));
}

#[tokio::test]
async fn root_children_revoke_orphan_and_depth() {
    let b = backends::sqlite();
    let (e, _root, _g) = engine_on(&b).await;
    let root_tok = e.reset_root_token(None).await.unwrap();
    let root = e.lookup_token(&root_tok).await.unwrap().unwrap();
    let c = e
        .create_token_under(
            &req(0),
            Some(Parent {
                token: &root,
                rate_limit: 0,
            }),
        )
        .await
        .unwrap();
    assert_eq!(c.info.parent.as_deref(), Some(ROOT_ACCESSOR));
    assert!(!c.info.is_orphan());
    // revoke-orphan: the child lives on as an orphan, its own child too.
    let p = e.lookup_token(&c.token).await.unwrap().unwrap();
    let child = e
        .create_token_under(
            &req(0),
            Some(Parent {
                token: &p,
                rate_limit: 0,
            }),
        )
        .await
        .unwrap();
    let cp = e.lookup_token(&child.token).await.unwrap().unwrap();
    let grandchild = e
        .create_token_under(
            &req(0),
            Some(Parent {
                token: &cp,
                rate_limit: 0,
            }),
        )
        .await
        .unwrap();
    let other = second_engine(&b, &_g, &_root).await;
    assert!(other.lookup_token(&child.token).await.unwrap().is_some());
    e.revoke_orphan_accessor(&c.info.accessor).await.unwrap();
    assert!(e.lookup_token(&c.token).await.unwrap().is_none());
    let now_orphan = e.lookup_token(&child.token).await.unwrap().unwrap();
    assert!(now_orphan.is_orphan());
    assert!(e.lookup_token(&grandchild.token).await.unwrap().is_some());
    // Another server still accepts it (its cached rows are at most
    // TOKEN_CACHE old; the HTTP tests check the switch over).
    assert!(other.lookup_token(&child.token).await.unwrap().is_some());
    // A token has at most MAX_TOKEN_DEPTH ancestors.
    let mut tok = e.create_token(&req(0)).await.unwrap().0;
    let mut refused = None;
    for depth in 1..=MAX_TOKEN_DEPTH + 1 {
        let p = e.lookup_token(&tok).await.unwrap().unwrap();
        match e
            .create_token_under(
                &req(0),
                Some(Parent {
                    token: &p,
                    rate_limit: 0,
                }),
            )
            .await
        {
            Ok(c) => tok = c.token,
            Err(EngineError::BadRequest(_)) => {
                refused = Some(depth);
                break;
            }
            Err(x) => panic!("{x}"),
        }
    }
    assert_eq!(refused, Some(MAX_TOKEN_DEPTH + 1));
    assert!(e.lookup_token(&tok).await.unwrap().is_some());
}

#[tokio::test]
async fn tokens_stored_without_expiry_expire_at_the_system_maximum() {
    let b = backends::sqlite();
    let (e, root, g) = engine_on(&b).await;
    let (old, _) = e.create_token(&req(3600)).await.unwrap();
    let (young, _) = e.create_token(&req(3600)).await.unwrap();
    // Rewrite both rows as an older version stored them: no expiry, no
    // parent field; one made 40 days ago.
    for (key, body) in e.store().meta_list("token/").await.unwrap() {
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let info: TokenInfo = serde_json::from_value(v.clone()).unwrap();
        let m = v.as_object_mut().unwrap();
        m.remove("parent");
        m.remove("rate_limit");
        m.insert("expire_at".into(), serde_json::Value::Null);
        m.insert("ttl".into(), 0.into());
        if info.accessor == e.lookup_token(&old).await.unwrap().unwrap().accessor {
            m.insert(
                "created_at".into(),
                (lockbox_engine::now() - 40 * 86_400).into(),
            );
        }
        e.store()
            .meta_put(&key, &serde_json::to_vec(&v).unwrap())
            .await
            .unwrap();
    }
    let fresh = second_engine(&b, &g, &root).await;
    assert!(fresh.lookup_token(&old).await.unwrap().is_none());
    let y = fresh.lookup_token(&young).await.unwrap().unwrap();
    assert!(y.is_orphan() && y.expire_at.is_none());
    let r = fresh.renew_accessor(&y.accessor, 0).await.unwrap();
    assert!(r.expire_at.unwrap() <= y.created_at + DEFAULT_MAX_TOKEN_TTL);
}

#[tokio::test]
async fn a_destroyed_keys_message_does_not_say_who() {
    let b = backends::sqlite();
    let (e, _root, _g) = engine_on(&b).await;
    e.create_key("k", &lockbox_engine::CreateOptions::default())
        .await
        .unwrap();
    e.configure(
        "k",
        &lockbox_engine::ConfigUpdate {
            deletion_allowed: Some(true),
            ..lockbox_engine::ConfigUpdate::default()
        },
    )
    .await
    .unwrap();
    e.destroy("k", "token acc-123 (t-admin)").await.unwrap();
    let err = e.encrypt("k", b"x", b"", b"", None).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("destroyed"), "{text}");
    assert!(
        !text.contains("acc-123") && !text.contains("t-admin"),
        "{text}"
    );
    assert!(matches!(err, EngineError::KeyDestroyed { by, .. } if by.contains("acc-123")));
}

/// Accessors are typed on command lines (`--accessor X`): none starts with
/// `-`, which would read as a flag. (A docs example failed 1 run in 64.)
#[tokio::test]
async fn accessors_never_start_with_a_dash() {
    let b = backends::sqlite();
    let (e, _root, _g) = engine_on(&b).await;
    for _ in 0..400 {
        let (_, info) = e.create_token(&req(60)).await.unwrap();
        assert!(!info.accessor.starts_with('-'), "{}", info.accessor);
    }
}
