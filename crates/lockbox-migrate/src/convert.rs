//! What happens to one row: classify each value, decrypt what must be
//! decrypted, encrypt under the target key's current version. Synchronous and
//! free of I/O (pgcrypto plaintexts are fetched before).

use std::collections::{BTreeMap, HashMap};

use lockbox_core::blind_index::BlindIndexer;
use lockbox_core::fernet::MultiFernet;
use lockbox_engine::KeyHandle;
use zeroize::Zeroizing;

use crate::db::{ColKind, Row, Write};

/// A context template: literal text, `{column}` placeholders (the row's
/// values), `{table}` and `{column}` (the converted column's name).
#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug)]
enum Part {
    Lit(String),
    Field(usize),
    Table,
    Column,
}

impl Template {
    /// Parse `s`; placeholders name columns, collected into `fields`.
    ///
    /// # Errors
    /// A message for an unclosed or invalid placeholder.
    pub fn parse(s: &str, fields: &mut Vec<String>) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            if i > 0 {
                parts.push(Part::Lit(rest[..i].to_owned()));
            }
            let after = &rest[i + 1..];
            let j = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in template {s:?}"))?;
            let name = &after[..j];
            match name {
                "table" => parts.push(Part::Table),
                "column" => parts.push(Part::Column),
                _ => {
                    crate::db::check_ident(name).map_err(|e| e.to_string())?;
                    let idx = match fields.iter().position(|f| f == name) {
                        Some(p) => p,
                        None => {
                            fields.push(name.to_owned());
                            fields.len() - 1
                        }
                    };
                    parts.push(Part::Field(idx));
                }
            }
            rest = &after[j + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The template with one row's values (NULL renders as nothing).
    pub fn render(&self, row: &Row, table: &str, column: &str) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Field(i) => {
                    if let Some(Some(v)) = row.ctx.get(*i) {
                        out.push_str(v);
                    }
                }
                Part::Table => out.push_str(table),
                Part::Column => out.push_str(column),
            }
        }
        out
    }
}

/// The format of one stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// NULL.
    Null,
    /// Lockbox native (`lbx1:`), key id and version from the header.
    Native { key_id: u32, version: u32 },
    /// `lbx1:` that does not parse, or another `lbxN:` version.
    BadNative,
    /// Vault Transit `vault:vN:`.
    Vault,
    /// Fernet token.
    Fernet,
    /// pgcrypto `pgp_sym_encrypt` message (bytes columns).
    Pgp,
    /// Anything else.
    Plain,
}

impl Class {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Class::Null => "null",
            Class::Native { .. } => "lockbox",
            Class::BadNative => "corrupt-lockbox",
            Class::Vault => "vault",
            Class::Fernet => "fernet",
            Class::Pgp => "pgcrypto",
            Class::Plain => "plaintext",
        }
    }
}

fn is_vault(s: &str) -> bool {
    s.strip_prefix("vault:v")
        .and_then(|r| r.split_once(':'))
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Classify one value.
pub fn classify(v: Option<&[u8]>, kind: ColKind) -> Class {
    let Some(v) = v else { return Class::Null };
    if kind == ColKind::Bytes && v.len() > 3 && v[0] == 0xC3 && v[2] == 4 {
        // OpenPGP new-format packet 3 (symmetric-key encrypted session key), version 4.
        return Class::Pgp;
    }
    let Ok(s) = std::str::from_utf8(v) else {
        return Class::Plain;
    };
    if s.starts_with(lockbox_core::native::TEXT_PREFIX) {
        return match lockbox_core::native::inspect_text(s) {
            Ok(h) => Class::Native {
                key_id: h.key_id,
                version: h.key_version,
            },
            Err(_) => Class::BadNative,
        };
    }
    let b = s.as_bytes();
    if b.len() > 4 && b.starts_with(b"lbx") && b[3].is_ascii_digit() && s[3..].contains(':') {
        let digits: &str = s[3..].split(':').next().unwrap_or("");
        if digits.bytes().all(|c| c.is_ascii_digit()) {
            return Class::BadNative;
        }
    }
    if is_vault(s) {
        return Class::Vault;
    }
    if lockbox_core::fernet::is_fernet_token(s) {
        return Class::Fernet;
    }
    Class::Plain
}

/// Blind-index settings.
pub struct BlindIndex {
    /// The indexer (all usable versions of the index key).
    pub indexer: BlindIndexer,
    /// Its current version.
    pub current: u32,
    /// Tenant template.
    pub tenant: Option<Template>,
}

/// Everything needed to convert rows.
pub struct Converter {
    /// Target key.
    pub target: KeyHandle,
    /// Other keys by native key id (ciphertexts to move to the target key).
    pub others: HashMap<u32, KeyHandle>,
    /// Fernet keys (`--from fernet`).
    pub fernet: Option<MultiFernet>,
    /// Vault-format key (`--from vault`).
    pub vault: Option<KeyHandle>,
    /// pgcrypto values are accepted (`--from pgcrypto`).
    pub pgcrypto: bool,
    /// Plaintext values are encrypted (`--from plaintext`).
    pub plaintext: bool,
    /// Decrypt everything to plaintext instead.
    pub to_plaintext: bool,
    /// Context template.
    pub context: Option<Template>,
    /// Table name (for `{table}`).
    pub table: String,
    /// Converted columns.
    pub cols: Vec<(String, ColKind)>,
    /// Blind index of the first column.
    pub bi: Option<BlindIndex>,
}

/// What to do with one row.
pub enum Outcome {
    /// Nothing to write.
    Same,
    /// Write this.
    Change(Write),
    /// The row cannot be converted.
    Bad {
        /// Column.
        column: String,
        /// Why (never contains key material or plaintext).
        reason: String,
    },
}

/// Counts by action.
pub type Counts = BTreeMap<&'static str, u64>;

/// pgcrypto plaintexts fetched from PostgreSQL, by (key, column index).
pub type PgpPlain = HashMap<(i64, usize), Result<Zeroizing<Vec<u8>>, String>>;

struct Col<'a> {
    new: Option<Option<Vec<u8>>>,
    pt: Option<Zeroizing<Vec<u8>>>,
    action: &'static str,
    _k: std::marker::PhantomData<&'a ()>,
}

impl Converter {
    fn ctx(&self, row: &Row, column: &str) -> String {
        self.context
            .as_ref()
            .map(|t| t.render(row, &self.table, column))
            .unwrap_or_default()
    }

    fn handle(&self, key_id: u32) -> Option<&KeyHandle> {
        if key_id == self.target.key_id() {
            Some(&self.target)
        } else {
            self.others.get(&key_id)
        }
    }

    fn output(
        &self,
        pt: Zeroizing<Vec<u8>>,
        kind: ColKind,
        ctx: &str,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), String> {
        if self.to_plaintext {
            if kind == ColKind::Text && std::str::from_utf8(&pt).is_err() {
                return Err("the plaintext is not UTF-8 and the column is a text column".into());
            }
            return Ok((pt.to_vec(), pt));
        }
        let ct = self
            .target
            .encrypt_native(&pt, ctx.as_bytes())
            .map_err(|e| format!("encryption failed: {e}"))?;
        Ok((ct.into_bytes(), pt))
    }

    fn convert_col(
        &self,
        row: &Row,
        ci: usize,
        pgp: &PgpPlain,
        need_pt: bool,
    ) -> Result<Col<'_>, String> {
        let (name, kind) = &self.cols[ci];
        let v = row.vals[ci].as_deref();
        let class = classify(v, *kind);
        let ctx = self.ctx(row, name);
        let text = || v.and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
        let col = |new, pt, action| Col {
            new,
            pt,
            action,
            _k: std::marker::PhantomData,
        };
        match class {
            Class::Null => Ok(col(None, None, "null")),
            Class::BadNative => {
                Err("a corrupt Lockbox ciphertext or an unsupported lbxN: format version".into())
            }
            Class::Native { key_id, version } => {
                let h = self.handle(key_id).ok_or_else(|| {
                    format!("a Lockbox ciphertext of key id {key_id:08x}, which this store does not have")
                })?;
                let current =
                    key_id == self.target.key_id() && version >= self.target.latest_version();
                if current && !self.to_plaintext {
                    let pt = if need_pt {
                        Some(Zeroizing::new(
                            h.decrypt(text(), ctx.as_bytes(), &[]).map_err(|_| {
                                format!(
                                    "does not decrypt with key {} (wrong key or context)",
                                    h.name()
                                )
                            })?,
                        ))
                    } else {
                        None
                    };
                    return Ok(col(None, pt, "current"));
                }
                let pt = Zeroizing::new(h.decrypt(text(), ctx.as_bytes(), &[]).map_err(|_| {
                    format!(
                        "does not decrypt with key {} (wrong key or context)",
                        h.name()
                    )
                })?);
                let action = if self.to_plaintext {
                    "decrypt"
                } else if key_id == self.target.key_id() {
                    "rewrap"
                } else {
                    "rekey"
                };
                let (out, pt) = self.output(pt, *kind, &ctx)?;
                Ok(col(Some(Some(out)), Some(pt), action))
            }
            Class::Vault => {
                let h = self
                    .vault
                    .as_ref()
                    .ok_or("looks like a Vault ciphertext: give --from vault and --vault-key")?;
                let pt = Zeroizing::new(h.decrypt(text(), &[], &[]).map_err(|_| {
                    format!("Vault ciphertext does not decrypt with key {}", h.name())
                })?);
                let (out, pt) = self.output(pt, *kind, &ctx)?;
                Ok(col(Some(Some(out)), Some(pt), "vault"))
            }
            Class::Fernet => {
                let f = self
                    .fernet
                    .as_ref()
                    .ok_or("looks like a Fernet token: give --from fernet and --fernet-key")?;
                let pt = Zeroizing::new(f.decrypt(text(), None).map_err(|_| {
                    "Fernet token does not decrypt with the given Fernet keys".to_owned()
                })?);
                let (out, pt) = self.output(pt, *kind, &ctx)?;
                Ok(col(Some(Some(out)), Some(pt), "fernet"))
            }
            Class::Pgp => {
                if !self.pgcrypto {
                    return Err(
                        "looks like a pgcrypto message: give --from pgcrypto and --passphrase-file"
                            .into(),
                    );
                }
                let pt = match pgp.get(&(row.pk, ci)) {
                    Some(Ok(pt)) => pt.clone(),
                    Some(Err(e)) => return Err(e.clone()),
                    None => return Err("internal: pgcrypto value was not decrypted".into()),
                };
                let (out, pt) = self.output(pt, *kind, &ctx)?;
                Ok(col(Some(Some(out)), Some(pt), "pgcrypto"))
            }
            Class::Plain => {
                let pt = Zeroizing::new(v.unwrap_or_default().to_vec());
                if self.to_plaintext {
                    return Ok(col(None, Some(pt), "plaintext"));
                }
                if !self.plaintext {
                    return Err("neither a ciphertext of the --from formats nor accepted plaintext (add --from plaintext)".into());
                }
                let (out, pt) = self.output(pt, *kind, &ctx)?;
                Ok(col(Some(Some(out)), Some(pt), "encrypt"))
            }
        }
    }

    /// Convert one row, counting actions into `counts`.
    pub fn convert(&self, row: &Row, pgp: &PgpPlain, counts: &mut Counts) -> Outcome {
        let bi_stale = match (&self.bi, self.to_plaintext) {
            (Some(b), false) => {
                let want = format!("{}v{}:", lockbox_core::blind_index::TEXT_PREFIX, b.current);
                let has_value = row.vals.first().is_some_and(Option::is_some);
                match &row.bi {
                    Some(s) => !s.starts_with(&want) || !has_value,
                    None => has_value,
                }
            }
            _ => false,
        };
        let mut changed = false;
        let mut new = Vec::with_capacity(self.cols.len());
        let mut first_pt = None;
        let mut actions = Vec::with_capacity(self.cols.len());
        for ci in 0..self.cols.len() {
            let need_pt = ci == 0 && bi_stale;
            match self.convert_col(row, ci, pgp, need_pt) {
                Ok(c) => {
                    actions.push(c.action);
                    match c.new {
                        Some(v) => {
                            changed = true;
                            new.push(v);
                        }
                        None => new.push(row.vals[ci].clone()),
                    }
                    if ci == 0 {
                        first_pt = c.pt;
                    }
                }
                Err(reason) => {
                    *counts.entry("bad").or_default() += 1;
                    return Outcome::Bad {
                        column: self.cols[ci].0.clone(),
                        reason,
                    };
                }
            }
        }
        let mut bi = None;
        if let (Some(b), false) = (&self.bi, self.to_plaintext) {
            if changed || bi_stale {
                bi = match &first_pt {
                    None => None,
                    Some(pt) => {
                        let Ok(s) = std::str::from_utf8(pt) else {
                            *counts.entry("bad").or_default() += 1;
                            return Outcome::Bad {
                                column: self.cols[0].0.clone(),
                                reason: "the plaintext is not UTF-8: no blind index".into(),
                            };
                        };
                        let tenant = b
                            .tenant
                            .as_ref()
                            .map(|t| t.render(row, &self.table, &self.cols[0].0))
                            .unwrap_or_default();
                        match b.indexer.compute(s, &tenant, &self.cols[0].0) {
                            Ok(v) => Some(v),
                            Err(e) => {
                                *counts.entry("bad").or_default() += 1;
                                return Outcome::Bad {
                                    column: self.cols[0].0.clone(),
                                    reason: format!("blind index: {e}"),
                                };
                            }
                        }
                    }
                };
                if bi != row.bi {
                    changed = true;
                    *counts.entry("blind-index").or_default() += 1;
                } else {
                    bi = row.bi.clone();
                }
            } else {
                bi = row.bi.clone();
            }
        }
        for a in actions {
            *counts.entry(a).or_default() += 1;
        }
        if changed {
            Outcome::Change(Write {
                pk: row.pk,
                old: row.vals.clone(),
                new,
                bi,
            })
        } else {
            Outcome::Same
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ctx: Vec<Option<&str>>) -> Row {
        Row {
            pk: 9,
            vals: vec![],
            ctx: ctx.into_iter().map(|c| c.map(str::to_owned)).collect(),
            bi: None,
        }
    }

    #[test]
    fn templates_render_row_values_table_and_column() {
        let mut fields = Vec::new();
        let t =
            Template::parse("{table}.{column}:{tenant_id}:{id}:{tenant_id}", &mut fields).unwrap();
        assert_eq!(fields, ["tenant_id", "id"]);
        assert_eq!(
            t.render(&row(vec![Some("acme"), Some("9")]), "users", "email"),
            "users.email:acme:9:acme"
        );
        assert_eq!(t.render(&row(vec![None, Some("9")]), "u", "e"), "u.e::9:");
        assert!(Template::parse("{tenant", &mut fields).is_err());
        assert!(Template::parse("{a;b}", &mut fields).is_err());
        assert!(Template::parse("{}", &mut fields).is_err());
    }

    #[test]
    fn values_are_classified_by_prefix() {
        let ks = lockbox_core::Keyset::generate("t", lockbox_core::Algorithm::Aes256Gcm).unwrap();
        let ct = ks.encrypt(b"x", b"").unwrap();
        assert_eq!(
            classify(Some(ct.as_bytes()), ColKind::Text),
            Class::Native {
                key_id: ks.key_id(),
                version: 1
            }
        );
        let f = lockbox_core::fernet::Fernet::new(
            lockbox_core::fernet::Fernet::generate_key().unwrap(),
        );
        let tok = f.encrypt(b"x").unwrap();
        assert_eq!(classify(Some(tok.as_bytes()), ColKind::Text), Class::Fernet);
        assert_eq!(
            classify(Some(b"vault:v12:AAAA"), ColKind::Text),
            Class::Vault
        );
        assert_eq!(
            classify(Some(b"vault:vx:AAAA"), ColKind::Text),
            Class::Plain
        );
        assert_eq!(
            classify(Some(b"lbx1:notbase64!"), ColKind::Text),
            Class::BadNative
        );
        assert_eq!(
            classify(Some(b"lbx9:AAAA"), ColKind::Text),
            Class::BadNative
        );
        assert_eq!(classify(Some(b"lbxy:AAAA"), ColKind::Text), Class::Plain);
        assert_eq!(classify(Some(b"gAAAAAshort"), ColKind::Text), Class::Plain);
        assert_eq!(
            classify(Some(b"jane@example.com"), ColKind::Text),
            Class::Plain
        );
        assert_eq!(
            classify(Some(&[0xC3, 0x0D, 0x04, 0x07, 0x03]), ColKind::Bytes),
            Class::Pgp
        );
        assert_eq!(
            classify(Some(&[0xC3, 0x0D, 0x04, 0x07, 0x03]), ColKind::Text),
            Class::Plain
        );
        assert_eq!(classify(None, ColKind::Text), Class::Null);
    }
}
