//! The Transit endpoints (`/v1/transit/...`) and Lockbox's native ones
//! (`/v1/lockbox/...`).

use axum::http::{Method, StatusCode};
use lockbox_core::encoding::{b64_decode, b64_encode};
use lockbox_engine::{
    ConfigUpdate, CreateOptions, EngineError, ImportSpec, KeyInfo, KeyType, SignOptions,
};
use serde_json::{json, Map, Value};

use crate::{
    b64_field, field_str, field_u32, no_content, ok, ok_status, ApiError, ApiResult, AppState, Req,
};

/// The status of a batch with failed items: `partial_failure_response_code`
/// (a 2xx or 4xx code), else 400.
fn partial_failure_code(r: &Req) -> Result<StatusCode, ApiError> {
    match field_u32(&r.body, "partial_failure_response_code")? {
        None => Ok(StatusCode::BAD_REQUEST),
        Some(c) => u16::try_from(c)
            .ok()
            .filter(|c| (200..300).contains(c) || (400..500).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| {
                ApiError::bad("partial_failure_response_code must be a 2xx or 4xx status code")
            }),
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unsupported path")
}

fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation")
}

fn is_write(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT)
}

/// Seconds from a number, "3600", or Go durations like "24h", "30m", "1h30m", "90s".
/// At most 100 years ([`MAX_DURATION_SECS`]): larger values, values that
/// overflow, negative ones and anything else are refused with 400, never
/// wrapped or clamped.
pub(crate) fn duration_field(m: &Map<String, Value>, name: &str) -> Result<Option<i64>, ApiError> {
    let bad = || {
        ApiError::bad(format!(
            "field {name} must be a duration (seconds or like 24h) of at most 100 years"
        ))
    };
    let in_range = |v: i64| (0..=MAX_DURATION_SECS).contains(&v);
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|v| in_range(*v))
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) => {
            if let Ok(v) = s.parse::<i64>() {
                return if in_range(v) { Ok(Some(v)) } else { Err(bad()) };
            }
            let mut total: i64 = 0;
            let mut num = String::new();
            for c in s.chars() {
                if c.is_ascii_digit() {
                    num.push(c);
                    continue;
                }
                let mult = match c {
                    'h' => 3600,
                    'm' => 60,
                    's' => 1,
                    'd' => 86_400,
                    _ => return Err(bad()),
                };
                let n: i64 = num.parse().map_err(|_| bad())?;
                total = n
                    .checked_mul(mult)
                    .and_then(|v| total.checked_add(v))
                    .filter(|v| in_range(*v))
                    .ok_or_else(bad)?;
                num.clear();
            }
            if !num.is_empty() {
                return Err(bad());
            }
            Ok(Some(total))
        }
        Some(_) => Err(bad()),
    }
}

/// The longest duration a request may give: 100 years (of 365.25 days).
const MAX_DURATION_SECS: i64 = 36_525 * 86_400;

fn key_json(k: &KeyInfo) -> Value {
    let keys: Map<String, Value> = k
        .versions
        .iter()
        .map(|(v, created)| {
            let val = match k.public_keys.get(v) {
                Some(pk) => json!({
                    "creation_time": crate::rfc3339(*created),
                    "name": k.key_type,
                    "public_key": pk,
                }),
                None => json!(created),
            };
            (v.to_string(), val)
        })
        .collect();
    let mut d = json!({
        "name": k.name,
        "type": k.key_type,
        "keys": keys,
        "latest_version": k.latest_version,
        "min_available_version": k.min_available_version,
        "min_decryption_version": k.min_decryption_version,
        "min_encryption_version": k.min_encryption_version,
        "deletion_allowed": k.deletion_allowed,
        "derived": k.derived,
        "exportable": k.exportable,
        "allow_plaintext_backup": k.allow_plaintext_backup,
        "supports_encryption": k.supports_encryption,
        "supports_decryption": k.supports_decryption,
        "supports_derivation": k.supports_derivation,
        "supports_signing": k.supports_signing,
        "convergent_encryption": k.convergent_encryption,
        "auto_rotate_period": k.auto_rotate_period,
        "imported_key": false,
        "key_id": k.key_id,
        "last_rotated": crate::rfc3339(k.last_rotated_at),
        "last_used": if k.last_used_at > 0 { json!(crate::rfc3339(k.last_used_at)) } else { Value::Null },
        "encrypt_count": k.encrypt_ops,
        "decrypt_count": k.decrypt_ops,
        "deleted": k.deleted_at.is_some(),
        "destroyed_at": k.destroyed_at.map(crate::rfc3339),
        "destroyed_by": k.destroyed_by,
    });
    if k.derived {
        d["kdf"] = json!("hkdf_sha256");
    }
    if k.convergent_encryption {
        d["convergent_version"] = json!(3);
    }
    d
}

/// Batch items, or the single request as a one-item batch (borrowed: a
/// large batch or plaintext is never copied).
type Items<'a> = (Vec<&'a Map<String, Value>>, bool);

fn items<'a>(st: &AppState, r: &'a Req) -> Result<Items<'a>, ApiError> {
    match r.body.get("batch_input") {
        None | Some(Value::Null) => Ok((vec![&r.body], false)),
        Some(Value::Array(a)) => {
            if a.len() > st.cfg.max_batch_items {
                return Err(ApiError::bad(format!(
                    "batch_input has {} items; the limit is {}",
                    a.len(),
                    st.cfg.max_batch_items
                )));
            }
            if a.is_empty() {
                return Err(ApiError::bad("missing batch input to process"));
            }
            let v: Result<Vec<_>, _> = a
                .iter()
                .map(|i| match i {
                    Value::Object(m) => Ok(m),
                    _ => Err(ApiError::bad("every batch_input item must be an object")),
                })
                .collect();
            Ok((v?, true))
        }
        Some(_) => Err(ApiError::bad("batch_input must be a list")),
    }
}

/// Run `f` on every item; Vault's batch semantics for the answer.
async fn run_batch<'a, F, Fut>(st: &AppState, r: &'a Req, f: F) -> ApiResult
where
    F: Fn(&'a Map<String, Value>) -> Fut,
    Fut: std::future::Future<Output = Result<Value, ApiError>>,
{
    let (list, batch) = items(st, r)?;
    // Context in all items or none (Vault).
    if batch {
        let with = list
            .iter()
            .filter(|m| m.get("context").is_some_and(|c| !c.is_null()))
            .count();
        if with != 0 && with != list.len() {
            return Err(ApiError::bad(
                "context must be provided for all items or none",
            ));
        }
    }
    let mut results = Vec::with_capacity(list.len());
    let mut any_error = false;
    for item in list {
        let reference = item.get("reference").cloned();
        let mut out = match f(item).await {
            Ok(v) => v,
            Err(e) => {
                if !batch {
                    return Err(e);
                }
                if e.status.is_server_error() {
                    return Err(e);
                }
                any_error = true;
                json!({ "error": e.errors.join("; ") })
            }
        };
        if let (Some(rf), Some(o)) = (reference, out.as_object_mut()) {
            o.insert("reference".into(), rf);
        }
        results.push(out);
    }
    if !batch {
        return ok(results.pop().unwrap_or(Value::Null));
    }
    let data = json!({ "batch_results": results });
    if any_error {
        return ok_status(partial_failure_code(r)?, data);
    }
    ok(data)
}

fn ctx(m: &Map<String, Value>) -> Result<Vec<u8>, ApiError> {
    Ok(b64_field(m, "context")?.unwrap_or_default())
}

/// The key version named by a `vault:v<N>:` prefix (no decoding of the body).
fn version_of(ct: &str) -> Option<u32> {
    ct.strip_prefix("vault:v")?.split(':').next()?.parse().ok()
}

async fn encrypt_one(
    st: &AppState,
    name: &str,
    m: &Map<String, Value>,
    create_type: Option<String>,
    convergent: bool,
) -> Result<Value, ApiError> {
    let pt = match b64_field(m, "plaintext")? {
        Some(p) => p,
        None => return Err(ApiError::bad("missing plaintext to encrypt")),
    };
    let context = ctx(m)?;
    let aad = b64_field(m, "associated_data")?.unwrap_or_default();
    let version = field_u32(m, "key_version")?;
    let res = st.engine.encrypt(name, &pt, &context, &aad, version).await;
    let ct = match res {
        Err(EngineError::KeyNotFound(_)) => {
            // Vault's upsert: encrypting with a missing key creates it.
            let opts = CreateOptions {
                key_type: create_type,
                derived: !context.is_empty(),
                convergent_encryption: convergent,
                ..CreateOptions::default()
            };
            st.engine.create_key(name, &opts).await?;
            st.engine
                .encrypt(name, &pt, &context, &aad, version)
                .await?
        }
        other => other?,
    };
    Ok(json!({ "ciphertext": ct, "key_version": version_of(&ct) }))
}

/// The engine's name of a key of `mount`: keys of the default `transit`
/// mount keep their name; keys of another Transit mount live in its namespace.
fn scoped(mount: &str, name: &str) -> String {
    if mount == crate::DEFAULT_MOUNT {
        name.to_owned()
    } else {
        format!("{mount}/{name}")
    }
}

/// `/v1/<transit mount>/...`: maps key names into the mount's namespace,
/// then serves the request.
pub(crate) async fn dispatch_mount(st: &AppState, r: &Req, mount: &str, seg: &[&str]) -> ApiResult {
    // Where the key name sits in each path.
    let idx = match seg.first() {
        Some(&("datakey" | "export")) => 2,
        Some(
            &("keys" | "encrypt" | "decrypt" | "rewrap" | "hmac" | "sign" | "verify" | "backup"
            | "restore"),
        ) => 1,
        _ => usize::MAX,
    };
    if let Some(name) = seg.get(idx) {
        if name.contains('/') {
            return Err(ApiError::bad("invalid key name"));
        }
        let full = scoped(mount, name);
        let mut owned: Vec<&str> = seg.to_vec();
        owned[idx] = &full;
        return dispatch(st, r, mount, &owned).await;
    }
    dispatch(st, r, mount, seg).await
}

/// Batch encrypt with the key looked up once, writing the response JSON
/// directly (no intermediate value per item). Same semantics as
/// [`run_batch`]: order kept, per-item errors, references echoed, 400 (or
/// `partial_failure_response_code`) with the full data if any item failed.
fn encrypt_batch_fast(st: &AppState, r: &Req, h: &lockbox_engine::KeyHandle) -> ApiResult {
    let (list, _) = items(st, r)?;
    let with_ctx = list
        .iter()
        .filter(|m| m.get("context").is_some_and(|c| !c.is_null()))
        .count();
    if with_ctx != 0 && with_ctx != list.len() {
        return Err(ApiError::bad(
            "context must be provided for all items or none",
        ));
    }
    let mut out = String::with_capacity(list.len() * 96 + 256);
    out.push_str("{\"request_id\":\"");
    out.push_str(&crate::request_id());
    out.push_str("\",\"lease_id\":\"\",\"renewable\":false,\"lease_duration\":0,\"data\":{\"batch_results\":[");
    let mut any_error = false;
    for (i, m) in list.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let one = (|| -> Result<String, ApiError> {
            let pt = b64_field(m, "plaintext")?
                .ok_or_else(|| ApiError::bad("missing plaintext to encrypt"))?;
            let aad = b64_field(m, "associated_data")?.unwrap_or_default();
            Ok(h.encrypt(&pt, &ctx(m)?, &aad, field_u32(m, "key_version")?)?)
        })();
        match one {
            Ok(ct) => {
                // A ciphertext is `vault:vN:` + base64 (or a Fernet token): no escaping needed.
                out.push_str("{\"ciphertext\":\"");
                out.push_str(&ct);
                out.push_str("\",\"key_version\":");
                out.push_str(&version_of(&ct).map_or_else(|| "null".to_owned(), |v| v.to_string()));
            }
            Err(e) => {
                if e.status.is_server_error() {
                    return Err(e);
                }
                any_error = true;
                out.push_str("{\"error\":");
                out.push_str(&Value::from(e.errors.join("; ")).to_string());
            }
        }
        if let Some(rf) = m.get("reference") {
            out.push_str(",\"reference\":");
            out.push_str(&rf.to_string());
        }
        out.push('}');
    }
    out.push_str("]},\"wrap_info\":null,\"warnings\":null,\"auth\":null}");
    let status = if any_error {
        partial_failure_code(r)?
    } else {
        StatusCode::OK
    };
    Ok(crate::raw_json_response(status, out))
}

/// `/v1/transit/...` (names already scoped to the mount).
async fn dispatch(st: &AppState, r: &Req, mount: &str, seg: &[&str]) -> ApiResult {
    let e = &st.engine;
    match seg {
        ["keys"] => {
            if !(r.list || r.method == Method::GET) {
                return Err(method_not_allowed());
            }
            let prefix = scoped(mount, "");
            let keys: Vec<String> = e
                .list_keys(false)
                .await?
                .into_iter()
                .filter_map(|k| {
                    if mount == crate::DEFAULT_MOUNT {
                        (!k.contains('/')).then_some(k)
                    } else {
                        k.strip_prefix(&prefix).map(str::to_owned)
                    }
                })
                .collect();
            if keys.is_empty() {
                return Err(ApiError {
                    status: StatusCode::NOT_FOUND,
                    errors: vec![],
                    data: None,
                });
            }
            ok(json!({ "keys": keys }))
        }
        ["keys", name] => match r.method {
            Method::GET => match e.read_key(name).await {
                Ok(k) => ok(key_json(&k)),
                Err(EngineError::KeyNotFound(_)) => Err(ApiError {
                    status: StatusCode::NOT_FOUND,
                    errors: vec![],
                    data: None,
                }),
                Err(err) => Err(err.into()),
            },
            Method::POST | Method::PUT => {
                let opts = CreateOptions {
                    key_type: r.str_field("type")?,
                    derived: r.bool_field("derived")?.unwrap_or(false),
                    convergent_encryption: r.bool_field("convergent_encryption")?.unwrap_or(false),
                    exportable: r.bool_field("exportable")?.unwrap_or(false),
                    allow_plaintext_backup: r
                        .bool_field("allow_plaintext_backup")?
                        .unwrap_or(false),
                    auto_rotate_period: duration_field(&r.body, "auto_rotate_period")?,
                };
                e.create_key(name, &opts).await?;
                ok(key_json(&e.read_key(name).await?))
            }
            Method::DELETE => {
                e.delete(name).await?;
                no_content()
            }
            _ => Err(method_not_allowed()),
        },
        ["keys", name, "config"] if is_write(&r.method) => {
            let upd = ConfigUpdate {
                min_decryption_version: r.u32_field("min_decryption_version")?,
                min_encryption_version: r.u32_field("min_encryption_version")?,
                deletion_allowed: r.bool_field("deletion_allowed")?,
                exportable: r.bool_field("exportable")?,
                allow_plaintext_backup: r.bool_field("allow_plaintext_backup")?,
                auto_rotate_period: duration_field(&r.body, "auto_rotate_period")?,
            };
            e.configure(name, &upd).await?;
            ok(key_json(&e.read_key(name).await?))
        }
        ["keys", name, "rotate"] if is_write(&r.method) => {
            e.rotate(name).await?;
            ok(key_json(&e.read_key(name).await?))
        }
        ["keys", name, "trim"] if is_write(&r.method) => {
            let m = r
                .u32_field("min_available_version")?
                .ok_or_else(|| ApiError::bad("missing min_available_version"))?;
            e.trim(name, m).await?;
            ok(key_json(&e.read_key(name).await?))
        }
        ["encrypt", name] if is_write(&r.method) => {
            let create_type = r.str_field("type")?;
            let convergent = r.bool_field("convergent_encryption")?.unwrap_or(false);
            match e.key_handle(name).await {
                // Fast path: the key is looked up once for the whole batch.
                Ok(h) if matches!(r.body.get("batch_input"), Some(Value::Array(_))) => {
                    let res = encrypt_batch_fast(st, r, &h);
                    if let Some(Value::Array(a)) = r.body.get("batch_input") {
                        e.record_ops(name, 0, a.len() as u64);
                    }
                    res
                }
                Ok(h) => {
                    let n = 1;
                    let res = run_batch(st, r, |m| {
                        let h = &h;
                        async move {
                            let pt = b64_field(m, "plaintext")?
                                .ok_or_else(|| ApiError::bad("missing plaintext to encrypt"))?;
                            let aad = b64_field(m, "associated_data")?.unwrap_or_default();
                            let ct =
                                h.encrypt(&pt, &ctx(m)?, &aad, field_u32(m, "key_version")?)?;
                            Ok(json!({ "ciphertext": ct, "key_version": version_of(&ct) }))
                        }
                    })
                    .await;
                    e.record_ops(name, 0, n);
                    res
                }
                // Missing key: Vault's upsert path (creates it on first use).
                Err(EngineError::KeyNotFound(_)) => {
                    run_batch(st, r, |m| {
                        encrypt_one(st, name, m, create_type.clone(), convergent)
                    })
                    .await
                }
                Err(err) => Err(err.into()),
            }
        }
        ["decrypt", name] if is_write(&r.method) => {
            run_batch(st, r, |m| async move {
                let ct = field_str(m, "ciphertext")?
                    .ok_or_else(|| ApiError::bad("missing ciphertext to decrypt"))?;
                let aad = b64_field(m, "associated_data")?.unwrap_or_default();
                let pt = st.engine.decrypt(name, &ct, &ctx(m)?, &aad).await?;
                Ok(json!({ "plaintext": b64_encode(&pt) }))
            })
            .await
        }
        ["rewrap", name] if is_write(&r.method) => {
            run_batch(st, r, |m| async move {
                let ct = field_str(m, "ciphertext")?
                    .ok_or_else(|| ApiError::bad("missing ciphertext to rewrap"))?;
                let out = st
                    .engine
                    .rewrap(name, &ct, &ctx(m)?, &[], field_u32(m, "key_version")?)
                    .await?;
                Ok(json!({ "ciphertext": out, "key_version": version_of(&out) }))
            })
            .await
        }
        // Lockbox keeps every unsealed key in memory (no LRU to size), so the
        // cache size is accepted for compatibility and reported as 0 (unlimited).
        ["cache-config"] => match r.method {
            Method::GET => ok(json!({ "size": 0 })),
            Method::POST | Method::PUT => match r.u32_field("size")? {
                Some(n) if n != 0 && n < 10 => Err(ApiError::bad(
                    "size must be 0 or a value greater or equal to 10",
                )),
                _ => no_content(),
            },
            _ => Err(method_not_allowed()),
        },
        ["datakey", kind, name] if is_write(&r.method) => {
            let bits = r.u32_field("bits")?.unwrap_or(256);
            if !matches!(bits, 128 | 256 | 512) {
                return Err(ApiError::bad("invalid bits: must be 128, 256 or 512"));
            }
            let plaintext_wanted = match *kind {
                "plaintext" => true,
                "wrapped" => false,
                _ => {
                    return Err(ApiError::bad(
                        "invalid path: datakey type must be plaintext or wrapped",
                    ))
                }
            };
            let key = lockbox_core::SecretBytes::random(bits as usize / 8)
                .map_err(|e| ApiError::from_engine(e.into()))?;
            let context = ctx(&r.body)?;
            let ct = e
                .encrypt(
                    name,
                    key.expose_secret(),
                    &context,
                    &[],
                    r.u32_field("key_version")?,
                )
                .await?;
            let mut d = json!({ "ciphertext": ct, "key_version": version_of(&ct) });
            if plaintext_wanted {
                d["plaintext"] = json!(b64_encode(key.expose_secret()));
            }
            ok(d)
        }
        ["hmac", name] | ["hmac", name, _] if is_write(&r.method) => {
            let alg = hmac_algorithm(r, seg.get(2).copied())?;
            let top_version = r.u32_field("key_version")?;
            run_batch(st, r, |m| {
                let alg = alg.clone();
                async move {
                    let input = b64_field(m, "input")?
                        .ok_or_else(|| ApiError::bad("missing input for HMAC"))?;
                    let v = field_u32(m, "key_version")?.or(top_version);
                    let mac = st.engine.hmac(name, &input, &alg, v).await?;
                    Ok(json!({ "hmac": mac }))
                }
            })
            .await
        }
        ["sign", name] | ["sign", name, _] if is_write(&r.method) => {
            let opts = sign_options(r, seg.get(2).copied())?;
            if r.bool_field("prehashed")? == Some(true) {
                return Err(ApiError::bad(
                    "prehashed input is not supported by Lockbox; send the message itself",
                ));
            }
            run_batch(st, r, |m| {
                let opts = opts.clone();
                async move {
                    let input = b64_field(m, "input")?
                        .ok_or_else(|| ApiError::bad("missing input to sign"))?;
                    let sig = st.engine.sign(name, &input, &opts).await?;
                    Ok(json!({ "signature": sig, "key_version": version_of(&sig) }))
                }
            })
            .await
        }
        ["verify", name] | ["verify", name, _] if is_write(&r.method) => {
            let opts = sign_options(r, seg.get(2).copied())?;
            let alg = hmac_algorithm(r, None)?;
            run_batch(st, r, |m| {
                let (opts, alg) = (opts.clone(), alg.clone());
                async move {
                    let input = b64_field(m, "input")?
                        .ok_or_else(|| ApiError::bad("missing input to verify"))?;
                    let valid = match (field_str(m, "signature")?, field_str(m, "hmac")?) {
                        (Some(sig), None) => st.engine.verify(name, &input, &sig, &opts).await?,
                        (None, Some(mac)) => {
                            st.engine.verify_hmac(name, &input, &mac, &alg).await?
                        }
                        (Some(_), Some(_)) => {
                            return Err(ApiError::bad(
                                "provide one of 'signature' or 'hmac', not both",
                            ))
                        }
                        (None, None) => {
                            return Err(ApiError::bad("missing signature or hmac to verify"))
                        }
                    };
                    Ok(json!({ "valid": valid }))
                }
            })
            .await
        }
        ["random"] | ["random", _] | ["random", _, _] if is_write(&r.method) => {
            random(r, &seg[1..])
        }
        ["hash"] | ["hash", _] if is_write(&r.method) => hash(r, seg.get(1).copied()),
        ["export", kind, name] | ["export", kind, name, _] if r.method == Method::GET => {
            let version = match seg.get(3) {
                None => None,
                Some(&"latest") => Some(e.read_key(name).await?.latest_version),
                Some(v) => Some(
                    v.parse::<u32>()
                        .map_err(|_| ApiError::bad("invalid key version"))?,
                ),
            };
            let keys = e.export(name, kind, version).await?;
            let keys: Map<String, Value> = keys
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            let info = e.read_key(name).await?;
            ok(json!({ "name": name, "type": info.key_type, "keys": keys }))
        }
        ["backup", name] if r.method == Method::GET => {
            ok(json!({ "backup": e.backup(name, None).await? }))
        }
        ["restore"] | ["restore", _] if is_write(&r.method) => {
            let blob = r
                .str_field("backup")?
                .ok_or_else(|| ApiError::bad("'backup' must be supplied"))?;
            // Unnamed: the backup's own (plain) name, in this mount.
            let ns = scoped(mount, "");
            e.restore_backup_into(
                &blob,
                None,
                seg.get(1).copied(),
                Some(&ns),
                r.bool_field("force")?.unwrap_or(false),
            )
            .await?;
            no_content()
        }
        _ => Err(not_found()),
    }
}

fn hmac_algorithm(r: &Req, path: Option<&str>) -> Result<String, ApiError> {
    Ok(match path {
        Some(a) => a.to_owned(),
        None => r
            .str_field("algorithm")?
            .unwrap_or_else(|| "sha2-256".into()),
    })
}

fn sign_options(r: &Req, path_hash: Option<&str>) -> Result<SignOptions, ApiError> {
    Ok(SignOptions {
        hash_algorithm: match path_hash {
            Some(h) => Some(h.to_owned()),
            None => r
                .str_field("hash_algorithm")?
                .or(r.str_field("algorithm")?.filter(|a| a.starts_with("sha2-"))),
        },
        signature_algorithm: r.str_field("signature_algorithm")?,
        marshaling_algorithm: r.str_field("marshaling_algorithm")?,
        key_version: r.u32_field("key_version")?,
    })
}

fn random(r: &Req, rest: &[&str]) -> ApiResult {
    let mut bytes = r.u32_field("bytes")?.unwrap_or(32);
    let mut format = r.str_field("format")?.unwrap_or_else(|| "base64".into());
    for s in rest {
        if let Ok(n) = s.parse::<u32>() {
            bytes = n;
        } else {
            format = (*s).to_owned();
        }
    }
    if bytes == 0 || bytes > 128 * 1024 {
        return Err(ApiError::bad("bytes must be between 1 and 131072"));
    }
    let b = lockbox_core::SecretBytes::random(bytes as usize)
        .map_err(|e| ApiError::from_engine(e.into()))?;
    let out = match format.as_str() {
        "base64" => b64_encode(b.expose_secret()),
        "hex" => lockbox_core::encoding::hex_encode(b.expose_secret()),
        other => {
            return Err(ApiError::bad(format!(
                "unsupported encoding format {other}; must be \"hex\" or \"base64\""
            )))
        }
    };
    ok(json!({ "random_bytes": out }))
}

fn hash(r: &Req, path_alg: Option<&str>) -> ApiResult {
    use aws_lc_rs::digest;
    let input =
        b64_field(&r.body, "input")?.ok_or_else(|| ApiError::bad("missing input to hash"))?;
    let alg_name = match path_alg {
        Some(a) => a.to_owned(),
        None => r
            .str_field("algorithm")?
            .unwrap_or_else(|| "sha2-256".into()),
    };
    let sum: Vec<u8> = match alg_name.as_str() {
        "sha2-224" => digest::digest(&digest::SHA224, &input).as_ref().to_vec(),
        "sha2-256" => digest::digest(&digest::SHA256, &input).as_ref().to_vec(),
        "sha2-384" => digest::digest(&digest::SHA384, &input).as_ref().to_vec(),
        "sha2-512" => digest::digest(&digest::SHA512, &input).as_ref().to_vec(),
        "sha3-224" => {
            use sha3::Digest;
            sha3::Sha3_224::digest(&input).to_vec()
        }
        "sha3-256" => digest::digest(&digest::SHA3_256, &input).as_ref().to_vec(),
        "sha3-384" => digest::digest(&digest::SHA3_384, &input).as_ref().to_vec(),
        "sha3-512" => digest::digest(&digest::SHA3_512, &input).as_ref().to_vec(),
        other => return Err(ApiError::bad(format!("unsupported hash algorithm {other}"))),
    };
    let out = match r.str_field("format")?.as_deref().unwrap_or("hex") {
        "hex" => lockbox_core::encoding::hex_encode(&sum),
        "base64" => b64_encode(&sum),
        other => {
            return Err(ApiError::bad(format!(
                "unsupported encoding format {other}; must be \"hex\" or \"base64\""
            )))
        }
    };
    ok(json!({ "sum": out }))
}

/// `/v1/lockbox/...`: the native format and Lockbox's key operations.
pub(crate) async fn native(st: &AppState, r: &Req, seg: &[&str]) -> ApiResult {
    let e = &st.engine;
    if !is_write(&r.method) {
        return Err(method_not_allowed());
    }
    match seg {
        ["encrypt", name] => {
            run_batch(st, r, |m| async move {
                let pt = b64_field(m, "plaintext")?
                    .ok_or_else(|| ApiError::bad("missing plaintext to encrypt"))?;
                let ct = st.engine.encrypt_native(name, &pt, &ctx(m)?).await?;
                Ok(json!({ "ciphertext": ct }))
            })
            .await
        }
        ["decrypt"] => {
            run_batch(st, r, |m| async move {
                let ct = field_str(m, "ciphertext")?
                    .ok_or_else(|| ApiError::bad("missing ciphertext to decrypt"))?;
                // The key named in the header was authorized with the
                // request, before any item was decrypted; no other is used.
                let key = st.engine.native_key_name(&ct).await?;
                if !r.key_authorized(&key) {
                    return Err(crate::auth::denied());
                }
                let pt = st.engine.decrypt(&key, &ct, &ctx(m)?, &[]).await?;
                Ok(json!({ "plaintext": b64_encode(&pt), "key": key }))
            })
            .await
        }
        ["keys", name, "restore"] => {
            e.undelete(name).await?;
            no_content()
        }
        ["keys", name, "destroy"] => {
            // Recorded with the key (and in the KEY_DESTROYED event): who did it.
            let by = r.authz.as_ref().map_or_else(
                || "api".to_owned(),
                |a| format!("token {} ({})", a.token.accessor, a.token.display_name),
            );
            e.destroy(name, &by).await?;
            no_content()
        }
        ["keys", name, "backup"] => {
            let p = r.str_field("passphrase")?;
            ok(json!({ "backup": e.backup(name, p.as_deref().map(str::as_bytes)).await? }))
        }
        ["restore"] | ["restore", _] => {
            let blob = r
                .str_field("backup")?
                .ok_or_else(|| ApiError::bad("'backup' must be supplied"))?;
            let p = r.str_field("passphrase")?;
            let name = e
                .restore_backup_into(
                    &blob,
                    p.as_deref().map(str::as_bytes),
                    seg.get(1).copied(),
                    Some(""),
                    false,
                )
                .await?;
            ok(json!({ "name": name }))
        }
        ["keys", name, "import"] => {
            let kt: KeyType = r
                .str_field("type")?
                .as_deref()
                .unwrap_or("aes256-gcm96")
                .parse()?;
            let keys = match r.body.get("keys") {
                Some(Value::Object(m)) => m,
                _ => {
                    return Err(ApiError::bad(
                        "'keys' must be an object of version -> base64 key",
                    ))
                }
            };
            let mut versions = Vec::new();
            for (v, k) in keys {
                let n: u32 = v
                    .parse()
                    .map_err(|_| ApiError::bad(format!("bad version {v:?}")))?;
                let s = k
                    .as_str()
                    .ok_or_else(|| ApiError::bad("key values must be base64 strings"))?;
                let b = b64_decode(s)
                    .map_err(|_| ApiError::bad(format!("key version {n} is not base64")))?;
                versions.push((n, lockbox_core::SecretBytes::new(b)));
            }
            e.import(
                name,
                ImportSpec {
                    key_type: kt,
                    versions,
                    derived: r.bool_field("derived")?.unwrap_or(false),
                    convergent_encryption: r.bool_field("convergent_encryption")?.unwrap_or(false),
                    exportable: r.bool_field("exportable")?.unwrap_or(false),
                    allow_plaintext_backup: r
                        .bool_field("allow_plaintext_backup")?
                        .unwrap_or(false),
                },
            )
            .await?;
            no_content()
        }
        _ => Err(not_found()),
    }
}
