//! Record and field encryption (`/v1/lockbox/records/...`): encrypt the
//! chosen fields of a JSON record in the native format, each bound to its
//! own context (tenant, field, row...), with blind indexes for equality
//! search; decrypt a record back; compute search terms.
//!
//! A field's value is encrypted as its JSON text, so numbers, booleans,
//! objects and strings come back with their type. `null` and absent fields
//! are left alone. Fields are top-level keys of the record.

use lockbox_core::blind_index::{Normalization, DEFAULT_TRUNCATION};
use serde_json::{json, Map, Value};

use crate::{field_str, ok, ApiError, ApiResult, AppState, Req};

struct Spec {
    key: String,
    index_key: String,
    tenant: String,
    template: Vec<Part>,
    fields: Vec<String>,
    indexed: Vec<String>,
    normalization: Normalization,
    truncation: usize,
}

fn str_list(m: &Map<String, Value>, name: &str) -> Result<Vec<String>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad(format!("{name} must be a list of strings")))
            })
            .collect(),
        Some(_) => Err(ApiError::bad(format!("{name} must be a list of strings"))),
    }
}

/// A piece of a context template, parsed once per request.
enum Part {
    Text(String),
    Tenant,
    Field,
    Record(String),
}

/// Parses `template`, refusing a placeholder that names an encrypted field
/// (its value must be known when decrypting). Linear in the template and
/// the field list, whatever their sizes.
fn parse_template(template: &str, fields: &[String]) -> Result<Vec<Part>, ApiError> {
    let encrypted: std::collections::HashSet<&str> = fields.iter().map(String::as_str).collect();
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        parts.push(Part::Text(rest[..start].to_owned()));
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| ApiError::bad("context_template has an unclosed '{'"))?;
        let name = &after[..end];
        if encrypted.contains(name) {
            return Err(ApiError::bad(format!(
                "context_template uses {{{name}}}, an encrypted field: the context must be known when decrypting"
            )));
        }
        parts.push(match name {
            "tenant" => Part::Tenant,
            "field" => Part::Field,
            other => Part::Record(other.to_owned()),
        });
        rest = &after[end + 1..];
    }
    parts.push(Part::Text(rest.to_owned()));
    Ok(parts)
}

fn spec(st: &AppState, r: &Req) -> Result<Spec, ApiError> {
    let key = r
        .str_field("key")?
        .ok_or_else(|| ApiError::bad("missing 'key': the encryption key's name"))?;
    let normalization = match r.body.get("normalize") {
        None | Some(Value::Null) => Normalization::ALL,
        _ => {
            let mut n = Normalization::NONE;
            for s in str_list(&r.body, "normalize")? {
                n = match s.as_str() {
                    "trim" => n.with_trim(),
                    "case_fold" => n.with_case_fold(),
                    "nfc" => n.with_nfc(),
                    other => {
                        return Err(ApiError::bad(format!(
                            "unknown normalization {other:?}: use trim, case_fold, nfc"
                        )))
                    }
                };
            }
            n
        }
    };
    let fields = str_list(&r.body, "fields")?;
    let indexed = str_list(&r.body, "blind_index")?;
    let limit = st.cfg.max_batch_items;
    if fields.len() > limit || indexed.len() > limit {
        return Err(ApiError::bad(format!(
            "a record may name at most {limit} fields to encrypt and {limit} to index"
        )));
    }
    let template = r
        .str_field("context_template")?
        .unwrap_or_else(|| "tenant={tenant};field={field}".to_owned());
    Ok(Spec {
        index_key: r.str_field("index_key")?.unwrap_or_else(|| key.clone()),
        key,
        tenant: r.str_field("tenant")?.unwrap_or_default(),
        template: parse_template(&template, &fields)?,
        fields,
        indexed,
        normalization,
        truncation: r
            .u32_field("truncation")?
            .map_or(DEFAULT_TRUNCATION, |t| t as usize),
    })
}

/// The context of one field: the template with `{tenant}`, `{field}` and
/// `{<record field>}` (string or number values) filled in.
fn context(spec: &Spec, record: &Map<String, Value>, field: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = String::with_capacity(64);
    for p in &spec.template {
        if out.len() > MAX_CONTEXT {
            break;
        }
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Tenant => out.push_str(&spec.tenant),
            Part::Field => out.push_str(field),
            Part::Record(name) => match record.get(name) {
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Number(n)) => out.push_str(&n.to_string()),
                Some(Value::Bool(b)) => out.push_str(&b.to_string()),
                _ => {
                    return Err(ApiError::bad(format!(
                        "context_template uses {{{name}}}, but the record has no string or number field {name:?}"
                    )))
                }
            },
        }
    }
    if out.len() > MAX_CONTEXT {
        return Err(ApiError::bad(format!(
            "the context of field {field} is longer than {MAX_CONTEXT} bytes"
        )));
    }
    Ok(out.into_bytes())
}

/// The longest context a template may expand to for one field: the
/// expansion is checked as it grows, so a short template over long record
/// values cannot make a request's work grow with their product.
const MAX_CONTEXT: usize = 4096;

fn record_of(r: &Req) -> Result<Map<String, Value>, ApiError> {
    match r.body.get("record") {
        Some(Value::Object(m)) => Ok(m.clone()),
        _ => Err(ApiError::bad("'record' must be a JSON object")),
    }
}

/// The text a blind index is computed over: a string as is, anything else as JSON.
fn index_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) async fn dispatch(st: &AppState, r: &Req, seg: &[&str]) -> ApiResult {
    match seg {
        ["encrypt"] => encrypt(st, r).await,
        ["decrypt"] => decrypt(st, r).await,
        ["search"] => search(st, r).await,
        _ => Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unsupported path",
        )),
    }
}

async fn encrypt(st: &AppState, r: &Req) -> ApiResult {
    let spec = spec(st, r)?;
    if spec.fields.is_empty() && spec.indexed.is_empty() {
        return Err(ApiError::bad(
            "say which fields to encrypt ('fields') or index ('blind_index')",
        ));
    }
    let original = record_of(r)?;
    let mut out = original.clone();
    let mut indexes = Map::new();
    for f in &spec.indexed {
        if let Some(v) = original.get(f).filter(|v| !v.is_null()) {
            let bi = st
                .engine
                .blind_index(
                    &spec.index_key,
                    &spec.tenant,
                    f,
                    &index_text(v),
                    spec.normalization,
                    spec.truncation,
                )
                .await?;
            indexes.insert(f.clone(), json!(bi));
        }
    }
    for f in &spec.fields {
        let Some(v) = original.get(f).filter(|v| !v.is_null()) else {
            continue;
        };
        let ctx = context(&spec, &original, f)?;
        let pt = serde_json::to_vec(v).map_err(|e| ApiError::bad(format!("field {f}: {e}")))?;
        let ct = st.engine.encrypt_native(&spec.key, &pt, &ctx).await?;
        out.insert(f.clone(), json!(ct));
    }
    ok(json!({ "record": out, "blind_indexes": indexes }))
}

async fn decrypt(st: &AppState, r: &Req) -> ApiResult {
    let spec = spec(st, r)?;
    let original = record_of(r)?;
    let mut out = original.clone();
    let mut plaintext_fields = Vec::new();
    for f in &spec.fields {
        let Some(v) = original.get(f).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(ct) = v.as_str().filter(|s| lockbox_core::is_encrypted(s)) else {
            // Not encrypted yet (e.g. during a migration): returned as is, and said so.
            plaintext_fields.push(f.clone());
            continue;
        };
        // Only with the key the request names (and was authorized for):
        // a field under any other key is refused before it is decrypted.
        if st.engine.native_key_name(ct).await? != spec.key {
            return Err(ApiError::bad(format!(
                "field {f} is not encrypted with key {}",
                spec.key
            )));
        }
        let ctx = context(&spec, &original, f)?;
        let pt = st.engine.decrypt(&spec.key, ct, &ctx, &[]).await?;
        let value: Value = serde_json::from_slice(&pt).map_err(|_| {
            ApiError::bad(format!("field {f} does not hold a record-encrypted value"))
        })?;
        out.insert(f.clone(), value);
    }
    ok(json!({ "record": out, "plaintext_fields": plaintext_fields }))
}

async fn search(st: &AppState, r: &Req) -> ApiResult {
    let spec = spec(st, r)?;
    let field = field_str(&r.body, "field")?.ok_or_else(|| ApiError::bad("missing 'field'"))?;
    let value = match r.body.get("value") {
        None | Some(Value::Null) => return Err(ApiError::bad("missing 'value' to search for")),
        Some(v) => index_text(v),
    };
    let terms = st
        .engine
        .blind_index_terms(
            &spec.index_key,
            &spec.tenant,
            &field,
            &value,
            spec.normalization,
            spec.truncation,
        )
        .await?;
    ok(json!({ "field": field, "terms": terms }))
}
