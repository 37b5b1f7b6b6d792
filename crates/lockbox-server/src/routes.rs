//! The route table: every authenticated endpoint declared once, with the
//! verbs it serves, which of them need `sudo`, and where the keys it touches
//! are named. Authorization is derived from this table alone:
//!
//! - the capability is a property of the route and the verb (the HTTP
//!   method, and `LIST` — the method, or `GET` with Vault's `?list=true`),
//!   never of any other query parameter or header;
//! - the path is decoded once ([`decode_path`]) into the segments that both
//!   the router and the ACL see, so an encoded slash cannot mean one thing to
//!   one of them and another to the other;
//! - key names are validated where the table says a key is named (path
//!   segment, body, or each ciphertext), and every one is authorized before
//!   any cryptographic work (see `auth::authorize_route` and
//!   `auth::authorize_body`).
//!
//! A request that matches no route is answered 404 before any work; a route
//! the dispatcher serves but this table lacks cannot be reached, so the two
//! can only disagree towards refusing.

use axum::http::Method;
use lockbox_core::acl::Caps;

use crate::ApiError;

/// What a request does, as far as authorization is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    /// GET.
    Read,
    /// LIST, or GET with `?list=true`.
    List,
    /// POST or PUT.
    Update,
    /// DELETE.
    Delete,
}

impl Verb {
    /// The verb of `method` (`list`: the query asked for a listing, which
    /// only turns a GET into a LIST, as in Vault). `None`: no such verb.
    pub(crate) fn of(method: &Method, list: bool) -> Option<Verb> {
        match method.as_str() {
            "GET" if list => Some(Verb::List),
            "GET" => Some(Verb::Read),
            "LIST" => Some(Verb::List),
            "POST" | "PUT" => Some(Verb::Update),
            "DELETE" => Some(Verb::Delete),
            _ => None,
        }
    }

    /// The capability the verb needs (`update` is also granted by `create`).
    pub(crate) fn caps(self) -> Caps {
        match self {
            Verb::Read => Caps::READ,
            Verb::List => Caps::LIST,
            Verb::Update => Caps::UPDATE,
            Verb::Delete => Caps::DELETE,
        }
    }
}

/// One segment of a route's path.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Seg {
    /// This text exactly.
    Lit(&'static str),
    /// A Transit mount (`transit`, or one enabled in `sys/mounts`).
    Mount,
    /// A key name (validated with [`lockbox_engine::is_key_name`]).
    Key,
    /// Any one segment (a policy name, an algorithm, a version...).
    Any,
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Every token that is valid, on itself (Vault's `default` policy).
    SelfService,
    /// The token's ACL must grant the verb's capability on the path.
    Acl,
}

/// Where the keys a route touches are named, besides a [`Seg::Key`] in
/// the path (which the path itself carries to the ACL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKeys {
    /// Nowhere else.
    None,
    /// `key` (required) and `index_key` (optional) in the body, each
    /// authorized on the path with the name appended.
    KeyAndIndex,
    /// Exactly one of `key` or `tenant` (the key `tenant-<id>`) in the
    /// body, authorized on the path with the name appended.
    KeyOrTenant,
    /// Each `lbx1:` ciphertext of the body (`ciphertext` or the items of
    /// `batch_input`) names its key in its header; each is authorized on
    /// the path with the name appended, all before any decryption.
    Ciphertexts,
}

/// One endpoint.
#[derive(Debug)]
pub(crate) struct Route {
    /// The operation's name (in test failures and the route listing).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) op: &'static str,
    /// Its path; the last `optional` segments may be absent.
    pub(crate) path: &'static [Seg],
    pub(crate) optional: usize,
    /// The verbs it serves; any other is 405.
    pub(crate) verbs: &'static [Verb],
    /// The verbs that also need `sudo`.
    pub(crate) sudo: &'static [Verb],
    pub(crate) access: Access,
    pub(crate) body_keys: BodyKeys,
}

use Seg::{Any, Key, Lit, Mount};
use Verb::{Delete, List, Read, Update};

const fn route(
    op: &'static str,
    path: &'static [Seg],
    verbs: &'static [Verb],
    sudo: &'static [Verb],
) -> Route {
    Route {
        op,
        path,
        optional: 0,
        verbs,
        sudo,
        access: Access::Acl,
        body_keys: BodyKeys::None,
    }
}

const fn optional(mut r: Route, n: usize) -> Route {
    r.optional = n;
    r
}

const fn body(mut r: Route, k: BodyKeys) -> Route {
    r.body_keys = k;
    r
}

const fn self_service(mut r: Route) -> Route {
    r.access = Access::SelfService;
    r
}

const U: &[Verb] = &[Update];
const NONE: &[Verb] = &[];

/// Every authenticated endpoint. (The unauthenticated probes — health,
/// seal status, init, unseal, the OpenAPI document — are served before
/// any token is looked at, in `dispatch_public`.)
pub(crate) static ROUTES: &[Route] = &[
    // sys
    route("sys.seal", &[Lit("sys"), Lit("seal")], U, U),
    route("sys.audit", &[Lit("sys"), Lit("audit")], &[Read], NONE),
    route(
        "sys.audit.verify",
        &[Lit("sys"), Lit("audit"), Lit("verify")],
        U,
        NONE,
    ),
    route(
        "sys.audit.query",
        &[Lit("sys"), Lit("audit"), Lit("query")],
        &[Read, Update],
        NONE,
    ),
    route("sys.audit-hash", &[Lit("sys"), Lit("audit-hash")], U, NONE),
    route("sys.metrics", &[Lit("sys"), Lit("metrics")], &[Read], NONE),
    route("sys.events", &[Lit("sys"), Lit("events")], U, NONE),
    route(
        "sys.policies.list",
        &[Lit("sys"), Lit("policies"), Lit("acl")],
        &[List, Read],
        NONE,
    ),
    route(
        "sys.policy.list",
        &[Lit("sys"), Lit("policy")],
        &[Read],
        NONE,
    ),
    route(
        "sys.policies",
        &[Lit("sys"), Lit("policies"), Lit("acl"), Any],
        &[Read, Update, Delete],
        &[Update, Delete],
    ),
    route(
        "sys.policy",
        &[Lit("sys"), Lit("policy"), Any],
        &[Read, Update, Delete],
        &[Update, Delete],
    ),
    route(
        "sys.mounts.list",
        &[Lit("sys"), Lit("mounts")],
        &[Read],
        NONE,
    ),
    route(
        "sys.mounts",
        &[Lit("sys"), Lit("mounts"), Any],
        &[Update, Delete],
        &[Update, Delete],
    ),
    // auth/token
    route(
        "token.create",
        &[Lit("auth"), Lit("token"), Lit("create")],
        U,
        NONE,
    ),
    route(
        "token.create-orphan",
        &[Lit("auth"), Lit("token"), Lit("create-orphan")],
        U,
        U,
    ),
    self_service(route(
        "token.lookup-self",
        &[Lit("auth"), Lit("token"), Lit("lookup-self")],
        &[Read, Update],
        NONE,
    )),
    route(
        "token.lookup",
        &[Lit("auth"), Lit("token"), Lit("lookup")],
        U,
        NONE,
    ),
    route(
        "token.lookup-accessor",
        &[Lit("auth"), Lit("token"), Lit("lookup-accessor")],
        U,
        NONE,
    ),
    self_service(route(
        "token.renew-self",
        &[Lit("auth"), Lit("token"), Lit("renew-self")],
        U,
        NONE,
    )),
    route(
        "token.renew",
        &[Lit("auth"), Lit("token"), Lit("renew")],
        U,
        NONE,
    ),
    route(
        "token.renew-accessor",
        &[Lit("auth"), Lit("token"), Lit("renew-accessor")],
        U,
        NONE,
    ),
    self_service(route(
        "token.revoke-self",
        &[Lit("auth"), Lit("token"), Lit("revoke-self")],
        U,
        NONE,
    )),
    route(
        "token.revoke",
        &[Lit("auth"), Lit("token"), Lit("revoke")],
        U,
        NONE,
    ),
    route(
        "token.revoke-accessor",
        &[Lit("auth"), Lit("token"), Lit("revoke-accessor")],
        U,
        NONE,
    ),
    route(
        "token.revoke-orphan",
        &[Lit("auth"), Lit("token"), Lit("revoke-orphan")],
        U,
        U,
    ),
    // Lockbox's native API (before the Transit routes: `lockbox` is no mount).
    route(
        "lockbox.encrypt",
        &[Lit("lockbox"), Lit("encrypt"), Key],
        U,
        NONE,
    ),
    body(
        route(
            "lockbox.decrypt",
            &[Lit("lockbox"), Lit("decrypt")],
            U,
            NONE,
        ),
        BodyKeys::Ciphertexts,
    ),
    route(
        "lockbox.keys.backup",
        &[Lit("lockbox"), Lit("keys"), Key, Lit("backup")],
        U,
        NONE,
    ),
    route(
        "lockbox.keys.destroy",
        &[Lit("lockbox"), Lit("keys"), Key, Lit("destroy")],
        U,
        U,
    ),
    route(
        "lockbox.keys.import",
        &[Lit("lockbox"), Lit("keys"), Key, Lit("import")],
        U,
        U,
    ),
    // Undelete: it gives back what someone with `delete` took away.
    route(
        "lockbox.keys.restore",
        &[Lit("lockbox"), Lit("keys"), Key, Lit("restore")],
        U,
        U,
    ),
    optional(
        route(
            "lockbox.restore",
            &[Lit("lockbox"), Lit("restore"), Key],
            U,
            U,
        ),
        1,
    ),
    body(
        route(
            "lockbox.records.encrypt",
            &[Lit("lockbox"), Lit("records"), Lit("encrypt")],
            U,
            NONE,
        ),
        BodyKeys::KeyAndIndex,
    ),
    body(
        route(
            "lockbox.records.decrypt",
            &[Lit("lockbox"), Lit("records"), Lit("decrypt")],
            U,
            NONE,
        ),
        BodyKeys::KeyAndIndex,
    ),
    body(
        route(
            "lockbox.records.search",
            &[Lit("lockbox"), Lit("records"), Lit("search")],
            U,
            NONE,
        ),
        BodyKeys::KeyAndIndex,
    ),
    body(
        route(
            "lockbox.envelope.encrypt",
            &[Lit("lockbox"), Lit("envelope"), Lit("encrypt")],
            U,
            NONE,
        ),
        BodyKeys::KeyOrTenant,
    ),
    body(
        route(
            "lockbox.envelope.decrypt",
            &[Lit("lockbox"), Lit("envelope"), Lit("decrypt")],
            U,
            NONE,
        ),
        BodyKeys::KeyOrTenant,
    ),
    // Transit (any Transit mount).
    route("keys.list", &[Mount, Lit("keys")], &[List, Read], NONE),
    route(
        "keys",
        &[Mount, Lit("keys"), Key],
        &[Read, Update, Delete],
        NONE,
    ),
    route(
        "keys.config",
        &[Mount, Lit("keys"), Key, Lit("config")],
        U,
        NONE,
    ),
    route(
        "keys.rotate",
        &[Mount, Lit("keys"), Key, Lit("rotate")],
        U,
        NONE,
    ),
    // Trimming deletes key versions for good: privileged, as destroy is.
    route("keys.trim", &[Mount, Lit("keys"), Key, Lit("trim")], U, U),
    route("encrypt", &[Mount, Lit("encrypt"), Key], U, NONE),
    route("decrypt", &[Mount, Lit("decrypt"), Key], U, NONE),
    route("rewrap", &[Mount, Lit("rewrap"), Key], U, NONE),
    route("datakey", &[Mount, Lit("datakey"), Any, Key], U, NONE),
    optional(route("hmac", &[Mount, Lit("hmac"), Key, Any], U, NONE), 1),
    optional(route("sign", &[Mount, Lit("sign"), Key, Any], U, NONE), 1),
    optional(
        route("verify", &[Mount, Lit("verify"), Key, Any], U, NONE),
        1,
    ),
    optional(
        route("random", &[Mount, Lit("random"), Any, Any], U, NONE),
        2,
    ),
    optional(route("hash", &[Mount, Lit("hash"), Any], U, NONE), 1),
    route(
        "cache-config",
        &[Mount, Lit("cache-config")],
        &[Read, Update],
        NONE,
    ),
    optional(
        route(
            "export",
            &[Mount, Lit("export"), Any, Key, Any],
            &[Read],
            NONE,
        ),
        1,
    ),
    route("backup", &[Mount, Lit("backup"), Key], &[Read], NONE),
    optional(route("restore", &[Mount, Lit("restore"), Key], U, U), 1),
];

/// First segments that are never a Transit mount.
pub(crate) const RESERVED: [&str; 4] = ["sys", "auth", "lockbox", "identity"];

/// A request matched to its route.
#[derive(Debug)]
pub(crate) struct Matched {
    pub(crate) route: &'static Route,
    pub(crate) verb: Verb,
    /// The Transit mount named by the path, if the route has one (to be
    /// checked against the enabled mounts).
    pub(crate) mount: Option<String>,
}

/// Why a request has no route.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoRoute {
    /// No route has this path: 404.
    Path,
    /// The path is served, not with this verb: 405.
    Verb,
    /// A segment where a key name goes is not one: 400.
    BadKey,
}

fn seg_matches(p: Seg, s: &str) -> bool {
    match p {
        Lit(l) => l == s,
        Mount => !RESERVED.contains(&s),
        Key | Any => true,
    }
}

/// The route of `segments` with `verb` (`None`: a method with no verb).
pub(crate) fn find(segments: &[String], verb: Option<Verb>) -> Result<Matched, NoRoute> {
    let mut path_found = false;
    for r in ROUTES {
        let n = segments.len();
        if n > r.path.len() || n + r.optional < r.path.len() {
            continue;
        }
        if !r.path.iter().zip(segments).all(|(p, s)| seg_matches(*p, s)) {
            continue;
        }
        // The first route whose shape fits decides (the table is ordered).
        path_found = true;
        let Some(verb) = verb.filter(|v| r.verbs.contains(v)) else {
            break;
        };
        let keys_ok = r
            .path
            .iter()
            .zip(segments)
            .all(|(p, s)| !matches!(p, Key) || lockbox_engine::is_key_name(s));
        if !keys_ok {
            return Err(NoRoute::BadKey);
        }
        let mount = matches!(r.path.first(), Some(Mount)).then(|| segments[0].clone());
        return Ok(Matched {
            route: r,
            verb,
            mount,
        });
    }
    Err(if path_found {
        NoRoute::Verb
    } else {
        NoRoute::Path
    })
}

impl NoRoute {
    pub(crate) fn error(&self) -> ApiError {
        use axum::http::StatusCode;
        match self {
            NoRoute::Path => ApiError::new(StatusCode::NOT_FOUND, "unsupported path"),
            NoRoute::Verb => ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation"),
            NoRoute::BadKey => {
                ApiError::bad("invalid key name: use 1 to 128 characters from A-Z a-z 0-9 - _ .")
            }
        }
    }
}

/// The segments of a request path (after `/v1/`): see
/// [`lockbox_core::acl::request_segments`], the one decoder the router and
/// the ACL share.
pub(crate) fn decode_path(path: &str) -> Result<Vec<String>, ApiError> {
    use axum::http::StatusCode;
    let rest = path
        .strip_prefix("/v1/")
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unsupported path"))?;
    lockbox_core::acl::request_segments(rest).map_err(|e| ApiError::bad(e.to_string()))
}

/// Whether the query asks for a listing (Vault's `list`, parsed as Go's
/// `strconv.ParseBool` true values).
pub(crate) fn query_lists(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|kv| {
            matches!(
                kv.split_once('=').unwrap_or((kv, "")),
                ("list", "1" | "t" | "T" | "true" | "TRUE" | "True")
            )
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        decode_path(p).unwrap()
    }

    #[test]
    fn paths_decode_once_and_outside_v1_are_not_found() {
        assert_eq!(
            segs("/v1/lockbox/keys/m%2Fk/backup"),
            ["lockbox", "keys", "m", "k", "backup"]
        );
        assert!(decode_path("/v1/transit/keys/%2e%2e").is_err());
        assert!(decode_path("/v2/a").is_err());
    }

    #[test]
    fn list_only_turns_get_into_list() {
        assert_eq!(Verb::of(&Method::POST, true), Some(Verb::Update));
        assert_eq!(Verb::of(&Method::DELETE, true), Some(Verb::Delete));
        assert_eq!(Verb::of(&Method::GET, true), Some(Verb::List));
        assert!(query_lists(Some("a=b&list=True")));
        assert!(!query_lists(Some("list=false&x=list=true")));
    }

    #[test]
    fn routes_match_their_shapes() {
        let m = find(
            &segs("/v1/transit/datakey/plaintext/k1"),
            Some(Verb::Update),
        )
        .unwrap();
        assert_eq!(m.route.op, "datakey");
        assert_eq!(m.mount.as_deref(), Some("transit"));
        let m = find(&segs("/v1/m2/hmac/k1/sha2-512"), Some(Verb::Update)).unwrap();
        assert_eq!(m.route.op, "hmac");
        assert_eq!(
            find(&segs("/v1/lockbox/keys/m/k/backup"), Some(Verb::Update)).unwrap_err(),
            NoRoute::Path
        );
        assert_eq!(
            find(&segs("/v1/transit/keys/k1"), Some(Verb::List)).unwrap_err(),
            NoRoute::Verb
        );
        assert_eq!(
            find(&segs("/v1/transit/encrypt/a%252Fb"), Some(Verb::Update)).unwrap_err(),
            NoRoute::BadKey
        );
        assert_eq!(
            find(&segs("/v1/sys/encrypt/k"), Some(Verb::Update)).unwrap_err(),
            NoRoute::Path
        );
        assert_eq!(
            find(&segs("/v1/lockbox/restore"), Some(Verb::Update))
                .unwrap()
                .route
                .op,
            "lockbox.restore"
        );
        assert_eq!(
            find(&segs("/v1/transit/random/32/hex"), Some(Verb::Update))
                .unwrap()
                .route
                .op,
            "random"
        );
    }

    #[test]
    fn every_route_is_well_formed() {
        for r in ROUTES {
            assert!(!r.verbs.is_empty(), "{}", r.op);
            assert!(r.sudo.iter().all(|v| r.verbs.contains(v)), "{}", r.op);
            assert!(r.optional < r.path.len(), "{}", r.op);
            assert!(
                r.access == Access::Acl || r.body_keys == BodyKeys::None,
                "{}",
                r.op
            );
        }
    }
}
