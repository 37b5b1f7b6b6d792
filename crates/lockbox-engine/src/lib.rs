//! The Lockbox key engine: the root key and its seal, named keys with
//! versions and their whole lifecycle over a [`Store`], and the
//! cryptographic operations on them (Vault Transit format, native format,
//! Fernet).
//!
//! The public interface is:
//! - [`Engine`] — open over a store, unseal, init, key lifecycle, operations;
//! - [`KeyType`], [`CreateOptions`], [`ConfigUpdate`], [`ImportSpec`];
//! - [`KeyInfo`], [`SealStatus`], [`InitOutput`];
//! - [`EngineError`].
//!
//! Every change to a key is one store transaction guarded by the row's
//! generation number (optimistic concurrency), so a crash leaves either the
//! old or the new state, and two servers racing on one key cannot both win.
//! Key material at rest is sealed under the root key with associated data
//! binding key name, key id, version and type; each key row carries an HMAC
//! under a root-derived key, so edits to the metadata are detected.

mod auth;
mod error;
mod keytype;
mod sign;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use lockbox_core::fernet::{Fernet, FernetKey, MultiFernet};
use lockbox_core::kdf::hmac_sha256;
use lockbox_core::rootkey::RootKey;
use lockbox_core::shamir::{self, Share, Unsealer};
use lockbox_core::vault::VaultKey;
use lockbox_core::{ct_eq, EncryptOptions, KeyState, Keyset, SecretBytes};
use lockbox_store::{KeyRow, Store, StoreError, VersionRow};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use auth::{
    role_policy, CreatedToken, Parent, TokenInfo, TokenRequest, DEFAULT_MAX_TOKEN_TTL,
    MAX_TOKEN_DEPTH, ROLES, ROOT_ACCESSOR, TOKEN_CACHE,
};
pub use error::{EngineError, Result};
pub use keytype::KeyType;
pub use sign::SignOptions;

const META_SEAL: &str = "seal";
const META_ROOT_TOKEN: &str = "root_token";
const MAX_RETRIES: usize = 8;

/// Something that happened to a key, for the audit log, metrics and
/// webhooks ([`Engine::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineEvent {
    /// `KEY_ROTATION`, `KEY_ROTATION_FAILED`, `KEY_DEPRECATED`,
    /// `KEY_DELETED`, `KEY_DESTROYED`.
    pub kind: &'static str,
    /// The key.
    pub key: String,
    /// The version concerned (new latest, or new minimum for decryption).
    pub version: u32,
    /// Details (the error of a failed rotation; who destroyed a key).
    pub detail: String,
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Auto-rotation period given to new keys that do not set one (seconds,
    /// 0 = none). Default 30 days.
    pub default_auto_rotate_period_secs: i64,
    /// Versions kept after rotation (older ones are trimmed, but never at or
    /// above `min_decryption_version`). Default 5.
    pub retention_versions: u32,
    /// How often the scheduler looks for keys due for rotation.
    pub rotation_check_interval: Duration,
    /// How often usage counters are written to the store.
    pub usage_flush_interval: Duration,
    /// The system maximum TTL of tokens, seconds: bounds the creation and
    /// renewal of every token but the root token (Vault's `max_lease_ttl`).
    /// Default 32 days ([`DEFAULT_MAX_TOKEN_TTL`]); 0 = the default.
    pub max_token_ttl_secs: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_auto_rotate_period_secs: 30 * 24 * 3600,
            retention_versions: 5,
            rotation_check_interval: Duration::from_secs(60),
            usage_flush_interval: Duration::from_secs(5),
            max_token_ttl_secs: DEFAULT_MAX_TOKEN_TTL,
        }
    }
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn now() -> i64 {
    i64::try_from(lockbox_core::keyset::now_unix()).unwrap_or(i64::MAX)
}

/// How the store's root key is protected (stored, with the check value).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct SealConfig {
    /// "shamir" or "master".
    kind: String,
    shares: u8,
    threshold: u8,
    /// Hex check value of the root key.
    check: String,
}

/// What `seal-status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct SealStatus {
    /// Whether the store has a root key.
    pub initialized: bool,
    /// Whether the engine is sealed.
    pub sealed: bool,
    /// "shamir" or "master" (or "" before init).
    pub seal_type: String,
    /// Shares (n).
    pub n: u8,
    /// Threshold (t).
    pub t: u8,
    /// Shares given so far.
    pub progress: u8,
    /// "sqlite" or "postgres".
    pub storage_type: String,
}

/// The one-time output of `init`: print it once, never store it.
pub struct InitOutput {
    /// Unseal shares (text form). Secret.
    pub shares: Vec<String>,
    /// The root token. Secret.
    pub root_token: String,
}

impl std::fmt::Debug for InitOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "InitOutput {{ shares: [REDACTED; {}], root_token: [REDACTED] }}",
            self.shares.len()
        )
    }
}

/// Options for creating a key (Vault's `keys/:name` parameters).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateOptions {
    /// Key type name (default `aes256-gcm96`).
    #[serde(rename = "type")]
    pub key_type: Option<String>,
    /// Key derivation (per-request context).
    pub derived: bool,
    /// Convergent encryption (requires `derived`).
    pub convergent_encryption: bool,
    /// Allow export of the key material.
    pub exportable: bool,
    /// Allow backups (the key material leaves Lockbox in a backup).
    pub allow_plaintext_backup: bool,
    /// Auto-rotation period in seconds (`None`: the engine default; 0: never).
    pub auto_rotate_period: Option<i64>,
}

/// A change of key configuration (Vault's `keys/:name/config`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ConfigUpdate {
    /// New minimum decryption version.
    pub min_decryption_version: Option<u32>,
    /// New minimum encryption version.
    pub min_encryption_version: Option<u32>,
    /// Allow deletion.
    pub deletion_allowed: Option<bool>,
    /// Allow export (cannot be turned off once on).
    pub exportable: Option<bool>,
    /// Allow backup (cannot be turned off once on).
    pub allow_plaintext_backup: Option<bool>,
    /// Auto-rotation period in seconds (0 = off; at least 3600 otherwise).
    pub auto_rotate_period: Option<i64>,
}

/// Key material to import (bring your own key).
pub struct ImportSpec {
    /// Type of the key.
    pub key_type: KeyType,
    /// Versions with their numbers (consecutive), e.g. a Vault export.
    pub versions: Vec<(u32, SecretBytes)>,
    /// Derived (Vault semantics).
    pub derived: bool,
    /// Convergent (Vault semantics).
    pub convergent_encryption: bool,
    /// Exportable.
    pub exportable: bool,
    /// Allow backups.
    pub allow_plaintext_backup: bool,
}

/// Everything about a key except its material.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    /// Name.
    pub name: String,
    /// Type name.
    #[serde(rename = "type")]
    pub key_type: String,
    /// Native-format key id (8 hex digits).
    pub key_id: String,
    /// Derived.
    pub derived: bool,
    /// Convergent.
    pub convergent_encryption: bool,
    /// Exportable.
    pub exportable: bool,
    /// Backups allowed.
    pub allow_plaintext_backup: bool,
    /// Deletion allowed.
    pub deletion_allowed: bool,
    /// Auto-rotation period, seconds (0 = off).
    pub auto_rotate_period: i64,
    /// Minimum decryption version.
    pub min_decryption_version: u32,
    /// Minimum encryption version.
    pub min_encryption_version: u32,
    /// Oldest version still stored.
    pub min_available_version: u32,
    /// Newest version.
    pub latest_version: u32,
    /// Version number → creation time (Unix seconds).
    pub versions: BTreeMap<u32, i64>,
    /// Version number → public key (base64), for signing keys.
    pub public_keys: BTreeMap<u32, String>,
    /// Creation time.
    pub created_at: i64,
    /// Last rotation.
    pub last_rotated_at: i64,
    /// Last use (0: never).
    pub last_used_at: i64,
    /// Encrypt operations so far.
    pub encrypt_ops: u64,
    /// Decrypt operations so far.
    pub decrypt_ops: u64,
    /// Soft-deleted at.
    pub deleted_at: Option<i64>,
    /// Destroyed at.
    pub destroyed_at: Option<i64>,
    /// Destroyed by.
    pub destroyed_by: Option<String>,
    /// Supports encryption.
    pub supports_encryption: bool,
    /// Supports decryption.
    pub supports_decryption: bool,
    /// Supports derivation.
    pub supports_derivation: bool,
    /// Supports signing.
    pub supports_signing: bool,
}

struct Unsealed {
    root: RootKey,
    mac_key: SecretBytes,
}

/// A key loaded into memory (material unsealed, ciphers prepared).
struct LoadedKey {
    row: KeyRow,
    key_type: KeyType,
    materials: BTreeMap<u32, (i64, SecretBytes)>,
    vault: Option<VaultKey>,
    keyset: Option<Keyset>,
    fernets: BTreeMap<u32, Fernet>,
}

#[derive(Default, Clone, Copy)]
struct UsageDelta {
    encrypt: u64,
    decrypt: u64,
    other: u64,
    last: i64,
}

struct Inner {
    store: Store,
    cfg: EngineConfig,
    unsealed: RwLock<Option<Arc<Unsealed>>>,
    unsealer: Mutex<Option<Unsealer>>,
    keys: RwLock<HashMap<String, Arc<LoadedKey>>>,
    by_key_id: RwLock<HashMap<u32, String>>,
    usage: Mutex<HashMap<String, UsageDelta>>,
    /// The root token's stored hash and when it was read.
    root_token: RwLock<Option<(Vec<u8>, std::time::Instant)>>,
    /// Cached tokens and policies.
    auth: auth::AuthCache,
    /// Key events for subscribers (the server's audit log and webhooks).
    events: tokio::sync::broadcast::Sender<EngineEvent>,
    /// When a ciphertext naming an unknown key id last made the engine
    /// reload its keys (held during the reload, so misses coalesce).
    miss_reload: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// How often a ciphertext naming an unknown key id may reload the keys:
/// anyone can forge such a header, and a reload reads every key. (Keys
/// created on another server arrive by notification meanwhile.)
const MISS_RELOAD_EVERY: Duration = Duration::from_secs(1);

/// How long a server trusts its copy of the root token's hash (a token
/// replaced on another server is seen within this time).
const ROOT_TOKEN_CACHE: Duration = Duration::from_secs(10);

/// The key engine. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn lock_err<T>(_: T) -> EngineError {
    EngineError::Internal("lock poisoned".into())
}

/// Whether `part` is a valid key name without a mount namespace: 1 to 128
/// characters from `A-Z a-z 0-9 - _ .`, and not `.` or `..`. The one rule
/// for key names, used by the engine and by the server's router alike.
#[must_use]
pub fn is_key_name(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 128
        && part != "."
        && part != ".."
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Key names: [`is_key_name`], optionally prefixed by one `mount/`
/// namespace (keys of extra Transit mounts).
fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 128
        && match name.split_once('/') {
            None => is_key_name(name),
            Some((mount, key)) => is_key_name(mount) && is_key_name(key),
        };
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "invalid key name {name:?}: use 1 to 128 characters from A-Z a-z 0-9 - _ ."
        )))
    }
}

/// Associated data sealing one key version: binds name, key id, version, type.
fn version_aad(row: &KeyRow, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64 + row.name.len());
    aad.extend_from_slice(b"lockbox/v1/key-version\0");
    aad.extend_from_slice(&row.key_id.to_be_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(row.key_type.as_bytes());
    aad.push(0);
    aad.extend_from_slice(row.name.as_bytes());
    aad
}

/// Canonical bytes of a key row (everything but the MAC) for its HMAC.
fn row_mac(mac_key: &SecretBytes, row: &KeyRow) -> Vec<u8> {
    let canon = serde_json::json!([
        "lockbox/v1/key-row",
        row.name,
        row.key_id,
        row.key_type,
        row.derived,
        row.convergent,
        row.exportable,
        row.allow_plaintext_backup,
        row.deletion_allowed,
        row.auto_rotate_period_secs,
        row.min_decryption_version,
        row.min_encryption_version,
        row.latest_version,
        row.min_available_version,
        row.created_at,
        row.updated_at,
        row.last_rotated_at,
        row.deleted_at,
        row.destroyed_at,
        row.destroyed_by,
        row.generation,
        row.extra,
    ]);
    hmac_sha256(mac_key.expose_secret(), canon.to_string().as_bytes()).to_vec()
}

impl Unsealed {
    fn new(root: RootKey) -> Result<Self> {
        let mac_key = root.mac_key()?;
        Ok(Unsealed { root, mac_key })
    }

    fn seal_version(
        &self,
        row: &KeyRow,
        version: u32,
        created_at: i64,
        material: &SecretBytes,
    ) -> Result<VersionRow> {
        let sealed = self
            .root
            .seal(material.expose_secret(), &version_aad(row, version))?;
        Ok(VersionRow {
            name: row.name.clone(),
            version,
            created_at,
            sealed,
        })
    }

    fn finish_row(&self, row: &mut KeyRow) {
        row.mac = row_mac(&self.mac_key, row);
    }

    fn verify_row(&self, row: &KeyRow) -> Result<()> {
        if ct_eq(&row_mac(&self.mac_key, row), &row.mac) {
            Ok(())
        } else {
            Err(EngineError::Integrity(format!(
                "metadata of key {} was modified outside Lockbox",
                row.name
            )))
        }
    }

    fn load(&self, row: KeyRow, vrows: Vec<VersionRow>) -> Result<LoadedKey> {
        self.verify_row(&row)?;
        let key_type: KeyType = row.key_type.parse().map_err(|_| {
            EngineError::Integrity(format!(
                "key {} has unknown type {}",
                row.name, row.key_type
            ))
        })?;
        let mut materials = BTreeMap::new();
        for v in vrows {
            let m = self
                .root
                .unseal(&v.sealed, &version_aad(&row, v.version))
                .map_err(|_| {
                    EngineError::Integrity(format!(
                        "version {} of key {} does not unseal (moved, swapped or corrupt row)",
                        v.version, row.name
                    ))
                })?;
            materials.insert(v.version, (v.created_at, m));
        }
        if row.destroyed_at.is_none() {
            for v in row.min_available_version..=row.latest_version {
                if !materials.contains_key(&v) {
                    return Err(EngineError::Integrity(format!(
                        "version {v} of key {} is missing from the store",
                        row.name
                    )));
                }
            }
        }
        let mut vault = None;
        let mut keyset = None;
        let mut fernets = BTreeMap::new();
        if row.destroyed_at.is_none() && !materials.is_empty() {
            if let (Some(vt), Some(alg)) = (key_type.vault_type(), key_type.algorithm()) {
                let mut vk = VaultKey::from_versions(
                    vt,
                    row.derived,
                    row.convergent,
                    materials
                        .iter()
                        .map(|(v, (_, m))| (*v, m.clone()))
                        .collect(),
                )?;
                vk.set_min_versions(
                    Some(row.min_decryption_version),
                    Some(row.min_encryption_version),
                )?;
                vault = Some(vk);
                let mut ks = Keyset::empty(&row.name, row.key_id)?;
                for (v, (created, m)) in &materials {
                    let state = if *v < row.min_decryption_version {
                        KeyState::Disabled
                    } else {
                        KeyState::Active
                    };
                    ks.insert_version(
                        *v,
                        alg,
                        m.clone(),
                        u64::try_from(*created).unwrap_or(0),
                        state,
                    )?;
                }
                ks.set_primary(row.latest_version)?;
                keyset = Some(ks);
            }
            if key_type == KeyType::Fernet {
                for (v, (_, m)) in &materials {
                    fernets.insert(*v, Fernet::new(FernetKey::from_bytes(m.expose_secret())?));
                }
            }
        }
        Ok(LoadedKey {
            row,
            key_type,
            materials,
            vault,
            keyset,
            fernets,
        })
    }
}

/// A key looked up once, for batches (see [`Engine::key_handle`]).
pub struct KeyHandle {
    k: Arc<LoadedKey>,
}

impl KeyHandle {
    /// Encrypt as [`Engine::encrypt`] does (usage is not counted here).
    ///
    /// # Errors
    /// As [`Engine::encrypt`].
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        context: &[u8],
        aad: &[u8],
        version: Option<u32>,
    ) -> Result<String> {
        encrypt_loaded(&self.k, plaintext, context, aad, version)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.k.row.name
    }

    /// The key id written into native ciphertext headers.
    pub fn key_id(&self) -> u32 {
        self.k.row.key_id
    }

    /// The latest (encrypting) version.
    pub fn latest_version(&self) -> u32 {
        self.k.row.latest_version
    }

    /// Encrypt in the native format as [`Engine::encrypt_native`] does,
    /// synchronously (usage is not counted here).
    ///
    /// # Errors
    /// As [`Engine::encrypt_native`].
    pub fn encrypt_native(&self, plaintext: &[u8], context: &[u8]) -> Result<String> {
        let ks = self.k.keyset.as_ref().ok_or_else(|| {
            EngineError::BadRequest(format!(
                "key type {} does not support encryption",
                self.k.key_type
            ))
        })?;
        Ok(ks.encrypt_with(plaintext, &EncryptOptions::with_context(context))?)
    }

    /// Decrypt as [`Engine::decrypt`] does (native, Vault or Fernet
    /// ciphertexts of this key), synchronously and without reloading the key.
    ///
    /// # Errors
    /// As [`Engine::decrypt`].
    pub fn decrypt(&self, ciphertext: &str, context: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        Engine::decrypt_loaded(&self.k, ciphertext, context, aad)
    }

    /// A blind indexer over the key's usable versions (see
    /// [`Engine::blind_index`]), built once for many values.
    ///
    /// # Errors
    /// As [`Engine::blind_index`].
    pub fn blind_indexer(
        &self,
        normalization: lockbox_core::blind_index::Normalization,
        truncation: usize,
    ) -> Result<lockbox_core::blind_index::BlindIndexer> {
        Engine::blind_indexer(&self.k, normalization, truncation)
    }
}

fn encrypt_loaded(
    k: &LoadedKey,
    plaintext: &[u8],
    context: &[u8],
    aad: &[u8],
    version: Option<u32>,
) -> Result<String> {
    if let Some(vk) = &k.vault {
        Ok(vk.encrypt(plaintext, context, aad, version)?)
    } else if k.key_type == KeyType::Fernet {
        let v = match version {
            None | Some(0) => k.row.latest_version,
            Some(v) => v,
        };
        let f = k
            .fernets
            .get(&v)
            .ok_or(lockbox_core::Error::UnknownKeyVersion(v))?;
        Ok(f.encrypt(plaintext)?)
    } else {
        Err(EngineError::BadRequest(format!(
            "key type {} does not support encryption",
            k.key_type
        )))
    }
}

/// What a mutation writes.
struct Mutation {
    row: KeyRow,
    add: Vec<VersionRow>,
    delete_below: Option<u32>,
    delete_all: bool,
}

impl Mutation {
    fn row(row: KeyRow) -> Self {
        Mutation {
            row,
            add: Vec::new(),
            delete_below: None,
            delete_all: false,
        }
    }
}

/// Sentinel used by the rotation scheduler: the key is no longer due.
const NOT_DUE: &str = "\u{0}not-due";

impl Engine {
    /// An engine over `store` (migrated here), sealed.
    ///
    /// # Errors
    /// [`EngineError::Store`] if the store cannot be migrated.
    pub async fn open(store: Store, cfg: EngineConfig) -> Result<Self> {
        store.migrate().await?;
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                cfg,
                unsealed: RwLock::new(None),
                unsealer: Mutex::new(None),
                keys: RwLock::new(HashMap::new()),
                by_key_id: RwLock::new(HashMap::new()),
                usage: Mutex::new(HashMap::new()),
                root_token: RwLock::new(None),
                auth: auth::AuthCache::default(),
                events: tokio::sync::broadcast::channel(1024).0,
                miss_reload: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn unsealed(&self) -> Result<Arc<Unsealed>> {
        self.inner
            .unsealed
            .read()
            .map_err(lock_err)?
            .clone()
            .ok_or(EngineError::Sealed)
    }

    async fn seal_config(&self) -> Result<Option<SealConfig>> {
        match self.inner.store.meta_get(META_SEAL).await? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|_| EngineError::Integrity("seal configuration is corrupt".into())),
        }
    }

    /// Seal status (works sealed).
    ///
    /// # Errors
    /// [`EngineError::Store`].
    pub async fn status(&self) -> Result<SealStatus> {
        let cfg = self.seal_config().await?;
        let sealed = self.inner.unsealed.read().map_err(lock_err)?.is_none();
        let progress = self
            .inner
            .unsealer
            .lock()
            .map_err(lock_err)?
            .as_ref()
            .map_or(0, |u| u.progress().have);
        Ok(SealStatus {
            initialized: cfg.is_some(),
            sealed,
            seal_type: cfg.as_ref().map(|c| c.kind.clone()).unwrap_or_default(),
            n: cfg.as_ref().map_or(0, |c| c.shares),
            t: cfg.as_ref().map_or(0, |c| c.threshold),
            progress,
            storage_type: self.inner.store.backend().to_owned(),
        })
    }

    /// Initialize with Shamir shares (like `vault operator init`): makes the
    /// root key, splits it, stores its check value and a root token hash.
    /// The engine stays sealed; the output is shown once.
    ///
    /// # Errors
    /// [`EngineError::AlreadyInitialized`]; [`EngineError::BadRequest`] for
    /// bad share counts.
    pub async fn init(&self, shares: u8, threshold: u8) -> Result<InitOutput> {
        let root = RootKey::generate()?;
        let (_info, split) = shamir::split(&root, shares, threshold)?;
        let cfg = SealConfig {
            kind: "shamir".into(),
            shares,
            threshold,
            check: lockbox_core::encoding::hex_encode(&root.check_value()?),
        };
        self.store_seal_config(&cfg).await?;
        let token = self.set_root_token(&root, None).await?;
        Ok(InitOutput {
            shares: split.iter().map(|s| s.expose_text()).collect(),
            root_token: token,
        })
    }

    async fn store_seal_config(&self, cfg: &SealConfig) -> Result<()> {
        let bytes = serde_json::to_vec(cfg).map_err(|e| EngineError::Internal(e.to_string()))?;
        if self
            .inner
            .store
            .meta_put_if_absent(META_SEAL, &bytes)
            .await?
        {
            Ok(())
        } else {
            Err(EngineError::AlreadyInitialized)
        }
    }

    /// Store a root token (a new random one unless `token` is given) and
    /// return it.
    async fn set_root_token(&self, root: &RootKey, token: Option<&str>) -> Result<String> {
        let token = match token {
            Some(t) => t.to_owned(),
            None => {
                let b = SecretBytes::random(24)?;
                format!(
                    "lbr.{}",
                    lockbox_core::encoding::b64url_encode(b.expose_secret())
                )
            }
        };
        let mac = root.mac_key()?;
        let h = hmac_sha256(mac.expose_secret(), token.as_bytes());
        self.inner.store.meta_put(META_ROOT_TOKEN, &h).await?;
        *self.inner.root_token.write().map_err(lock_err)? = None;
        Ok(token)
    }

    /// Whether `token` is the root token (constant time). Needs the engine unsealed.
    ///
    /// # Errors
    /// [`EngineError::Sealed`], [`EngineError::Store`].
    pub async fn is_root_token(&self, token: &str) -> Result<bool> {
        let u = self.unsealed()?;
        let h = hmac_sha256(u.mac_key.expose_secret(), token.as_bytes());
        self.is_root_hash(&h).await
    }

    /// Whether `h` (a token's keyed hash) is the root token's (constant time).
    async fn is_root_hash(&self, h: &[u8]) -> Result<bool> {
        // The stored hash is cached briefly: this runs on every request.
        let cached = self
            .inner
            .root_token
            .read()
            .map_err(lock_err)?
            .as_ref()
            .filter(|(_, at)| at.elapsed() < ROOT_TOKEN_CACHE)
            .map(|(h, _)| h.clone());
        let stored = match cached {
            Some(h) => h,
            None => {
                let Some(h) = self.inner.store.meta_get(META_ROOT_TOKEN).await? else {
                    return Ok(false);
                };
                *self.inner.root_token.write().map_err(lock_err)? =
                    Some((h.clone(), std::time::Instant::now()));
                h
            }
        };
        Ok(ct_eq(h, &stored))
    }

    /// Replace the root token (dev mode: `--dev-root-token`). Needs the engine unsealed.
    ///
    /// # Errors
    /// [`EngineError::Sealed`], [`EngineError::Store`].
    pub async fn reset_root_token(&self, token: Option<&str>) -> Result<String> {
        let u = self.unsealed()?;
        self.set_root_token(&u.root, token).await
    }

    /// Unseal with a master key (`LOCKBOX_MASTER_KEY` or a key file). On a
    /// new store this initializes it in "master" mode.
    ///
    /// # Errors
    /// [`EngineError::Unseal`] if the key is not the store's root key, or
    /// the store is sealed with shares.
    pub async fn unseal_with_master_key(&self, root: RootKey) -> Result<()> {
        let cfg = match self.seal_config().await? {
            Some(c) => c,
            None => {
                let c = SealConfig {
                    kind: "master".into(),
                    shares: 0,
                    threshold: 0,
                    check: lockbox_core::encoding::hex_encode(&root.check_value()?),
                };
                match self.store_seal_config(&c).await {
                    Ok(()) => {
                        self.set_root_token(&root, None).await?;
                        c
                    }
                    Err(EngineError::AlreadyInitialized) => self
                        .seal_config()
                        .await?
                        .ok_or(EngineError::NotInitialized)?,
                    Err(e) => return Err(e),
                }
            }
        };
        if cfg.kind != "master" {
            return Err(EngineError::Unseal(
                "this store is sealed with Shamir shares: unseal with `lockbox unseal`, not a master key".into(),
            ));
        }
        let check = hex_decode(&cfg.check)?;
        root.verify_check_value(&check).map_err(|_| {
            EngineError::Unseal("wrong master key: it is not the root key of this store".into())
        })?;
        self.finish_unseal(root).await
    }

    /// Give one unseal share. Returns `(have, need)`; when enough shares
    /// have been given the engine unseals.
    ///
    /// # Errors
    /// [`EngineError::Unseal`] for a corrupt share, a share of another init,
    /// a repeated share, or shares that do not reconstruct the root key
    /// (progress is then reset).
    pub async fn submit_share(&self, share_text: &str) -> Result<(u8, u8)> {
        let cfg = self
            .seal_config()
            .await?
            .ok_or(EngineError::NotInitialized)?;
        if cfg.kind != "shamir" {
            return Err(EngineError::Unseal(
                "this store is unsealed with a master key (LOCKBOX_MASTER_KEY), not shares".into(),
            ));
        }
        if self.inner.unsealed.read().map_err(lock_err)?.is_some() {
            return Ok((cfg.threshold, cfg.threshold));
        }
        let share =
            Share::parse(share_text.trim()).map_err(|e| EngineError::Unseal(e.to_string()))?;
        let root = {
            let mut guard = self.inner.unsealer.lock().map_err(lock_err)?;
            let u = guard.get_or_insert_with(Unsealer::new);
            let p = u
                .add(share)
                .map_err(|e| EngineError::Unseal(e.to_string()))?;
            if p.have < p.need {
                return Ok((p.have, p.need));
            }
            let check = hex_decode(&cfg.check)?;
            let res = u.combine_and_verify(&check);
            *guard = None;
            res.map_err(|e| EngineError::Unseal(format!("{e}; unseal progress was reset")))?
        };
        self.finish_unseal(root).await?;
        Ok((cfg.threshold, cfg.threshold))
    }

    /// Forget the shares given so far.
    ///
    /// # Errors
    /// Internal lock failure only.
    pub fn reset_unseal(&self) -> Result<()> {
        *self.inner.unsealer.lock().map_err(lock_err)? = None;
        Ok(())
    }

    async fn finish_unseal(&self, root: RootKey) -> Result<()> {
        let u = Arc::new(Unsealed::new(root)?);
        *self.inner.unsealed.write().map_err(lock_err)? = Some(u);
        self.reload_all().await
    }

    /// Seal: forget the root key and every loaded key (they are zeroized).
    ///
    /// # Errors
    /// Internal lock failure only.
    pub async fn seal(&self) -> Result<()> {
        let _ = self.flush_usage().await;
        *self.inner.unsealed.write().map_err(lock_err)? = None;
        self.inner.keys.write().map_err(lock_err)?.clear();
        self.inner.by_key_id.write().map_err(lock_err)?.clear();
        *self.inner.root_token.write().map_err(lock_err)? = None;
        self.inner.auth.clear()?;
        Ok(())
    }

    /// Whether the engine is sealed.
    #[must_use]
    pub fn is_sealed(&self) -> bool {
        self.inner
            .unsealed
            .read()
            .map(|g| g.is_none())
            .unwrap_or(true)
    }

    /// Load every key from the store into memory.
    ///
    /// # Errors
    /// [`EngineError::Sealed`], [`EngineError::Store`], [`EngineError::Integrity`].
    pub async fn reload_all(&self) -> Result<()> {
        let u = self.unsealed()?;
        let all = self.inner.store.key_load_all().await?;
        let mut keys = HashMap::with_capacity(all.len());
        let mut ids = HashMap::with_capacity(all.len());
        for (row, versions) in all {
            let name = row.name.clone();
            let loaded = u.load(row, versions)?;
            ids.insert(loaded.row.key_id, name.clone());
            keys.insert(name, Arc::new(loaded));
        }
        *self.inner.keys.write().map_err(lock_err)? = keys;
        *self.inner.by_key_id.write().map_err(lock_err)? = ids;
        Ok(())
    }

    /// Reload one key from the store (after a change elsewhere).
    ///
    /// # Errors
    /// As [`Engine::reload_all`].
    pub async fn reload_key(&self, name: &str) -> Result<()> {
        let u = self.unsealed()?;
        match self.inner.store.key_get(name).await? {
            Some((row, versions)) => {
                let loaded = Arc::new(u.load(row, versions)?);
                self.inner
                    .by_key_id
                    .write()
                    .map_err(lock_err)?
                    .insert(loaded.row.key_id, name.to_owned());
                self.inner
                    .keys
                    .write()
                    .map_err(lock_err)?
                    .insert(name.to_owned(), loaded);
            }
            None => {
                self.inner.keys.write().map_err(lock_err)?.remove(name);
            }
        }
        Ok(())
    }

    fn cached(&self, name: &str) -> Result<Option<Arc<LoadedKey>>> {
        self.unsealed()?;
        Ok(self.inner.keys.read().map_err(lock_err)?.get(name).cloned())
    }

    /// A usable key: exists, not deleted, not destroyed. Loads it from the
    /// store if it is not cached (another server may have created it).
    async fn key(&self, name: &str) -> Result<Arc<LoadedKey>> {
        let k = match self.cached(name)? {
            Some(k) => k,
            None => {
                self.reload_key(name).await?;
                self.cached(name)?
                    .ok_or_else(|| EngineError::KeyNotFound(name.to_owned()))?
            }
        };
        if let (Some(at), by) = (k.row.destroyed_at, &k.row.destroyed_by) {
            return Err(EngineError::KeyDestroyed {
                name: name.to_owned(),
                at,
                by: by.clone().unwrap_or_default(),
            });
        }
        if k.row.deleted_at.is_some() {
            return Err(EngineError::KeyDeleted(name.to_owned()));
        }
        Ok(k)
    }

    /// Run `f` on the freshest row and write the result, retrying on conflicts.
    async fn mutate<F>(&self, name: &str, f: F) -> Result<KeyRow>
    where
        F: Fn(&Unsealed, &KeyRow, &[VersionRow]) -> Result<Mutation>,
    {
        let u = self.unsealed()?;
        for _ in 0..MAX_RETRIES {
            let (row, versions) = self
                .inner
                .store
                .key_get(name)
                .await?
                .ok_or_else(|| EngineError::KeyNotFound(name.to_owned()))?;
            u.verify_row(&row)?;
            let mut m = f(&u, &row, &versions)?;
            m.row.generation = row.generation + 1;
            m.row.updated_at = now();
            u.finish_row(&mut m.row);
            match self
                .inner
                .store
                .key_update(&m.row, row.generation, &m.add, m.delete_below, m.delete_all)
                .await
            {
                Ok(()) => {
                    self.reload_key(name).await?;
                    return Ok(m.row);
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Conflict)
    }

    /// Create a key. Creating an existing key with the same type is a no-op
    /// (as in Vault); returns whether it was created.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for an invalid name, type or option.
    pub async fn create_key(&self, name: &str, opts: &CreateOptions) -> Result<bool> {
        check_name(name)?;
        let key_type: KeyType = opts.key_type.as_deref().unwrap_or("aes256-gcm96").parse()?;
        if let Some(existing) = self.inner.store.key_get(name).await? {
            if existing.0.deleted_at.is_some() {
                return Err(EngineError::KeyDeleted(name.to_owned()));
            }
            if existing.0.key_type != key_type.name() {
                return Err(EngineError::BadRequest(format!(
                    "key {name} exists with type {}",
                    existing.0.key_type
                )));
            }
            return Ok(false);
        }
        let material = key_type.generate()?;
        self.insert_new(
            name,
            key_type,
            vec![(1, material)],
            opts.derived,
            opts.convergent_encryption,
            opts.exportable,
            opts.allow_plaintext_backup,
            opts.auto_rotate_period,
        )
        .await?;
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_new(
        &self,
        name: &str,
        key_type: KeyType,
        versions: Vec<(u32, SecretBytes)>,
        derived: bool,
        convergent: bool,
        exportable: bool,
        allow_plaintext_backup: bool,
        auto_rotate_period: Option<i64>,
    ) -> Result<()> {
        let u = self.unsealed()?;
        check_name(name)?;
        if convergent && !derived {
            return Err(EngineError::BadRequest(
                "convergent encryption requires derivation to be enabled".into(),
            ));
        }
        if derived && !key_type.supports_derivation() {
            return Err(EngineError::BadRequest(format!(
                "key derivation is not supported for key type {key_type}"
            )));
        }
        let period = match auto_rotate_period {
            None => {
                if key_type == KeyType::Fernet {
                    0
                } else {
                    self.inner.cfg.default_auto_rotate_period_secs
                }
            }
            Some(p) => check_period(p)?,
        };
        let (first, last) = match (
            versions.iter().map(|v| v.0).min(),
            versions.iter().map(|v| v.0).max(),
        ) {
            (Some(a), Some(b)) if a >= 1 => (a, b),
            _ => {
                return Err(EngineError::BadRequest(
                    "a key needs at least one version, numbered from 1".into(),
                ))
            }
        };
        if u64::from(last - first) + 1 != versions.len() as u64 {
            return Err(EngineError::BadRequest(
                "key versions must be consecutive and unique".into(),
            ));
        }
        for (_, m) in &versions {
            key_type.validate(m.expose_secret())?;
        }
        let t = now();
        let key_id = lockbox_core::random_u32()?;
        let mut row = KeyRow {
            name: name.to_owned(),
            key_id,
            key_type: key_type.name().to_owned(),
            derived,
            convergent,
            exportable,
            allow_plaintext_backup,
            deletion_allowed: false,
            auto_rotate_period_secs: period,
            min_decryption_version: first,
            min_encryption_version: 0,
            latest_version: last,
            min_available_version: first,
            created_at: t,
            updated_at: t,
            last_rotated_at: t,
            deleted_at: None,
            destroyed_at: None,
            destroyed_by: None,
            generation: 1,
            extra: "{}".into(),
            mac: Vec::new(),
        };
        u.finish_row(&mut row);
        let vrows = versions
            .iter()
            .map(|(v, m)| u.seal_version(&row, *v, t, m))
            .collect::<Result<Vec<_>>>()?;
        // Build it once before writing, so a bad import never reaches the store.
        u.load(row.clone(), vrows.clone())?;
        match self.inner.store.key_insert(&row, &vrows).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists) => {
                return Err(EngineError::BadRequest(format!(
                    "key {name} already exists"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        self.reload_key(name).await
    }

    /// Rotate: a new version becomes the latest at once; old versions still
    /// decrypt. Applies the retention limit.
    ///
    /// # Errors
    /// [`EngineError::KeyNotFound`], [`EngineError::KeyDeleted`], ...
    pub async fn rotate(&self, name: &str) -> Result<u32> {
        self.key(name).await?;
        let retention = self.inner.cfg.retention_versions;
        let row = self
            .mutate(name, |u, row, _| {
                if row.destroyed_at.is_some() || row.deleted_at.is_some() {
                    return Err(EngineError::KeyDeleted(row.name.clone()));
                }
                rotate_mutation(u, row, retention, now())
            })
            .await;
        match row {
            Ok(row) => {
                self.emit("KEY_ROTATION", name, row.latest_version, "");
                Ok(row.latest_version)
            }
            Err(e) => {
                if !matches!(e, EngineError::KeyNotFound(_)) {
                    self.emit("KEY_ROTATION_FAILED", name, 0, &e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Key events from now on (rotations, failed rotations, deprecations,
    /// deletions, destructions) made through this engine, including the
    /// rotation scheduler's. A slow subscriber misses the oldest events
    /// (bounded buffer), never blocks the engine.
    #[must_use]
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<EngineEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, kind: &'static str, key: &str, version: u32, detail: &str) {
        let _ = self.inner.events.send(EngineEvent {
            kind,
            key: key.to_owned(),
            version,
            detail: detail.to_owned(),
        });
    }

    /// Rotate every key whose auto-rotation period has passed. With several
    /// servers on one store, each due rotation happens exactly once (the
    /// row's generation decides). Returns the names rotated here.
    ///
    /// # Errors
    /// [`EngineError::Sealed`], [`EngineError::Store`].
    pub async fn rotate_due_keys(&self, at: i64) -> Result<Vec<String>> {
        self.unsealed()?;
        let retention = self.inner.cfg.retention_versions;
        let mut rotated = Vec::new();
        for row in self.inner.store.key_list().await? {
            if !is_due(&row, at) {
                continue;
            }
            let res = self
                .mutate(&row.name, |u, fresh, _| {
                    if !is_due(fresh, at) {
                        return Err(EngineError::BadRequest(NOT_DUE.into()));
                    }
                    rotate_mutation(u, fresh, retention, at)
                })
                .await;
            match res {
                Ok(r) => {
                    self.emit("KEY_ROTATION", &row.name, r.latest_version, "scheduled");
                    rotated.push(row.name);
                }
                Err(EngineError::BadRequest(m)) if m == NOT_DUE => {}
                Err(e) => {
                    self.emit("KEY_ROTATION_FAILED", &row.name, 0, &e.to_string());
                    return Err(e);
                }
            }
        }
        Ok(rotated)
    }

    /// Change a key's configuration (Vault's `keys/:name/config`).
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] with Vault's wording for invalid versions.
    pub async fn configure(&self, name: &str, upd: &ConfigUpdate) -> Result<()> {
        let before = self.key(name).await?.row.min_decryption_version;
        let after = self.mutate(name, |_, row, _| {
            let mut r = row.clone();
            if let Some(d) = upd.min_decryption_version {
                let d = d.max(1);
                if d > r.latest_version {
                    return Err(EngineError::BadRequest(format!(
                        "cannot set min decryption version of {d}, latest key version is {}",
                        r.latest_version
                    )));
                }
                if d < r.min_available_version {
                    return Err(EngineError::BadRequest(
                        "min decryption version should not be less then min available version".into(),
                    ));
                }
                r.min_decryption_version = d;
            }
            if let Some(e) = upd.min_encryption_version {
                if e > r.latest_version {
                    return Err(EngineError::BadRequest(format!(
                        "cannot set min encryption version of {e}, latest key version is {}",
                        r.latest_version
                    )));
                }
                r.min_encryption_version = e;
            }
            if r.min_encryption_version > 0 && r.min_encryption_version < r.min_decryption_version {
                return Err(EngineError::BadRequest(format!(
                    "cannot set min encryption/decryption values; min encryption version of {} must be greater than or equal to min decryption version of {}",
                    r.min_encryption_version, r.min_decryption_version
                )));
            }
            if let Some(d) = upd.deletion_allowed {
                r.deletion_allowed = d;
            }
            if let Some(e) = upd.exportable {
                if !e && r.exportable {
                    return Err(EngineError::BadRequest("export cannot be disabled on a key that already has it enabled".into()));
                }
                r.exportable = e;
            }
            if let Some(b) = upd.allow_plaintext_backup {
                if !b && r.allow_plaintext_backup {
                    return Err(EngineError::BadRequest("allow_plaintext_backup cannot be disabled on a key that already has it enabled".into()));
                }
                r.allow_plaintext_backup = b;
            }
            if let Some(p) = upd.auto_rotate_period {
                r.auto_rotate_period_secs = check_period(p)?;
            }
            Ok(Mutation::row(r))
        })
        .await?;
        if after.min_decryption_version > before {
            // Versions below the new minimum can no longer decrypt.
            self.emit("KEY_DEPRECATED", name, after.min_decryption_version, "");
        }
        Ok(())
    }

    /// Delete versions below `min_available_version` for good (Vault's
    /// `trim`). It may not exceed `min_decryption_version` or a non-zero
    /// `min_encryption_version`.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] with Vault's wording.
    pub async fn trim(&self, name: &str, min_available_version: u32) -> Result<()> {
        self.key(name).await?;
        self.mutate(name, |_, row, _| {
            let m = min_available_version;
            if m == 0 {
                return Err(EngineError::BadRequest("minimum available version should be positive".into()));
            }
            if m > row.min_decryption_version {
                return Err(EngineError::BadRequest(
                    "minimum available version cannot be greater than minimum decryption version".into(),
                ));
            }
            if row.min_encryption_version > 0 && m > row.min_encryption_version {
                return Err(EngineError::BadRequest(
                    "minimum available version cannot be greater than minimum encryption version".into(),
                ));
            }
            if m < row.min_available_version {
                return Err(EngineError::BadRequest(
                    "minimum available version cannot be less than the current minimum available version".into(),
                ));
            }
            let mut r = row.clone();
            r.min_available_version = m;
            let mut mu = Mutation::row(r);
            mu.delete_below = Some(m);
            Ok(mu)
        })
        .await?;
        Ok(())
    }

    /// Soft-delete a key (requires `deletion_allowed`); `restore` undoes it.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] if deletion is not allowed.
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.mutate(name, |_, row, _| {
            if !row.deletion_allowed {
                return Err(EngineError::BadRequest(
                    "deletion is not allowed for this key".into(),
                ));
            }
            if row.destroyed_at.is_some() {
                return Err(EngineError::BadRequest(format!(
                    "key {} is destroyed",
                    row.name
                )));
            }
            let mut r = row.clone();
            r.deleted_at = Some(now());
            Ok(Mutation::row(r))
        })
        .await?;
        self.emit("KEY_DELETED", name, 0, "");
        Ok(())
    }

    /// Restore a soft-deleted key.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] if it is not deleted or was destroyed.
    pub async fn undelete(&self, name: &str) -> Result<()> {
        self.mutate(name, |_, row, _| {
            if row.destroyed_at.is_some() {
                return Err(EngineError::BadRequest(format!(
                    "key {} was destroyed; it cannot be restored",
                    row.name
                )));
            }
            if row.deleted_at.is_none() {
                return Err(EngineError::BadRequest(format!(
                    "key {} is not deleted",
                    row.name
                )));
            }
            let mut r = row.clone();
            r.deleted_at = None;
            Ok(Mutation::row(r))
        })
        .await?;
        Ok(())
    }

    /// Destroy a key (crypto-shredding): every version's material is deleted
    /// from the store, irreversibly; a tombstone records who and when.
    /// Requires `deletion_allowed`.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] if deletion is not allowed.
    pub async fn destroy(&self, name: &str, by: &str) -> Result<()> {
        self.mutate(name, |_, row, _| {
            if !row.deletion_allowed {
                return Err(EngineError::BadRequest(
                    "deletion is not allowed for this key: set deletion_allowed first".into(),
                ));
            }
            if row.destroyed_at.is_some() {
                return Err(EngineError::BadRequest(format!(
                    "key {} is already destroyed",
                    row.name
                )));
            }
            let mut r = row.clone();
            r.destroyed_at = Some(now());
            r.destroyed_by = Some(by.to_owned());
            let mut m = Mutation::row(r);
            m.delete_all = true;
            Ok(m)
        })
        .await?;
        self.emit("KEY_DESTROYED", name, 0, by);
        Ok(())
    }

    /// Names of the keys (not deleted ones unless `include_deleted`).
    ///
    /// # Errors
    /// [`EngineError::Sealed`], [`EngineError::Store`].
    pub async fn list_keys(&self, include_deleted: bool) -> Result<Vec<String>> {
        self.unsealed()?;
        Ok(self
            .inner
            .store
            .key_list()
            .await?
            .into_iter()
            .filter(|r| include_deleted || (r.deleted_at.is_none() && r.destroyed_at.is_none()))
            .map(|r| r.name)
            .collect())
    }

    /// Metadata of a key (also of deleted and destroyed keys).
    ///
    /// # Errors
    /// [`EngineError::KeyNotFound`].
    pub async fn read_key(&self, name: &str) -> Result<KeyInfo> {
        // Metadata is read fresh from the store: another server may have
        // changed it (SQLite has no change notifications).
        self.reload_key(name).await?;
        let k = self
            .cached(name)?
            .ok_or_else(|| EngineError::KeyNotFound(name.to_owned()))?;
        let usage = self.inner.store.usage_get(name).await?.unwrap_or_default();
        let pending = self
            .inner
            .usage
            .lock()
            .map_err(lock_err)?
            .get(name)
            .copied()
            .unwrap_or_default();
        let r = &k.row;
        let public_keys = if k.key_type.supports_signing() {
            k.materials
                .iter()
                .filter_map(|(v, (_, m))| {
                    k.key_type
                        .public_key(m.expose_secret())
                        .map(|p| (*v, lockbox_core::encoding::b64_encode(&p)))
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(KeyInfo {
            name: r.name.clone(),
            key_type: r.key_type.clone(),
            key_id: format!("{:08x}", r.key_id),
            derived: r.derived,
            convergent_encryption: r.convergent,
            exportable: r.exportable,
            allow_plaintext_backup: r.allow_plaintext_backup,
            deletion_allowed: r.deletion_allowed,
            auto_rotate_period: r.auto_rotate_period_secs,
            min_decryption_version: r.min_decryption_version,
            min_encryption_version: r.min_encryption_version,
            min_available_version: r.min_available_version,
            latest_version: r.latest_version,
            versions: k.materials.iter().map(|(v, (c, _))| (*v, *c)).collect(),
            public_keys,
            created_at: r.created_at,
            last_rotated_at: r.last_rotated_at,
            last_used_at: usage.last_used_at.max(pending.last),
            encrypt_ops: usage.encrypt_ops + pending.encrypt,
            decrypt_ops: usage.decrypt_ops + pending.decrypt,
            deleted_at: r.deleted_at,
            destroyed_at: r.destroyed_at,
            destroyed_by: r.destroyed_by.clone(),
            supports_encryption: k.key_type.supports_encryption(),
            supports_decryption: k.key_type.supports_encryption(),
            supports_derivation: k.key_type.supports_derivation(),
            supports_signing: k.key_type.supports_signing(),
        })
    }

    fn count(&self, name: &str, kind: u8) {
        let t = now();
        let bump = |e: &mut UsageDelta| {
            match kind {
                0 => e.encrypt += 1,
                1 => e.decrypt += 1,
                _ => e.other += 1,
            }
            e.last = t;
        };
        if let Ok(mut u) = self.inner.usage.lock() {
            // One lookup and no allocation on the hot path: the name is
            // copied only the first time a key is used between two flushes.
            match u.get_mut(name) {
                Some(e) => bump(e),
                None => {
                    let mut d = UsageDelta::default();
                    bump(&mut d);
                    u.insert(name.to_owned(), d);
                }
            }
        }
    }

    /// Write pending usage counters to the store.
    ///
    /// # Errors
    /// [`EngineError::Store`] (counters are kept for the next flush).
    pub async fn flush_usage(&self) -> Result<()> {
        let pending: Vec<(String, UsageDelta)> = {
            let mut u = self.inner.usage.lock().map_err(lock_err)?;
            u.drain().collect()
        };
        for (i, (name, d)) in pending.iter().enumerate() {
            if let Err(e) = self
                .inner
                .store
                .usage_add(name, d.encrypt, d.decrypt, d.other, d.last)
                .await
            {
                if let Ok(mut u) = self.inner.usage.lock() {
                    for (n, d) in &pending[i..] {
                        let e = u.entry(n.clone()).or_default();
                        e.encrypt += d.encrypt;
                        e.decrypt += d.decrypt;
                        e.other += d.other;
                        e.last = e.last.max(d.last);
                    }
                }
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Encrypt with a named key in the Vault Transit format (`vault:vN:`),
    /// or a Fernet token for `fernet` keys.
    ///
    /// # Errors
    /// [`EngineError::KeyNotFound`], [`EngineError::BadRequest`] for a key
    /// type that does not encrypt, [`EngineError::Crypto`].
    pub async fn encrypt(
        &self,
        name: &str,
        plaintext: &[u8],
        context: &[u8],
        aad: &[u8],
        version: Option<u32>,
    ) -> Result<String> {
        let k = self.key(name).await?;
        let out = encrypt_loaded(&k, plaintext, context, aad, version)?;
        self.count(name, 0);
        Ok(out)
    }

    /// A handle on a usable key for many operations in a row (batches):
    /// the key is looked up once. Count the operations with
    /// [`Engine::record_ops`].
    ///
    /// # Errors
    /// As [`Engine::encrypt`] before any work: missing, deleted or destroyed key, sealed.
    pub async fn key_handle(&self, name: &str) -> Result<KeyHandle> {
        Ok(KeyHandle {
            k: self.key(name).await?,
        })
    }

    /// Record `n` operations of `kind` (0 encrypt, 1 decrypt, 2 other) on `name`.
    pub fn record_ops(&self, name: &str, kind: u8, n: u64) {
        if n == 0 {
            return;
        }
        let t = now();
        if let Ok(mut u) = self.inner.usage.lock() {
            let e = u.entry(name.to_owned()).or_default();
            match kind {
                0 => e.encrypt += n,
                1 => e.decrypt += n,
                _ => e.other += n,
            }
            e.last = t;
        }
    }

    /// Decrypt a `vault:vN:` ciphertext (or a Fernet token for `fernet`
    /// keys, or a native `lbx1:` ciphertext of this key). A version this
    /// server has not seen yet makes it reload the key once (another server
    /// may just have rotated).
    ///
    /// # Errors
    /// [`EngineError::Crypto`] with the format's error.
    pub async fn decrypt(
        &self,
        name: &str,
        ciphertext: &str,
        context: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        let mut k = self.key(name).await?;
        let mut res = Self::decrypt_loaded(&k, ciphertext, context, aad);
        if matches!(
            res,
            Err(EngineError::Crypto(lockbox_core::Error::UnknownKeyVersion(
                _
            )))
        ) {
            self.reload_key(name).await?;
            k = self.key(name).await?;
            res = Self::decrypt_loaded(&k, ciphertext, context, aad);
        }
        self.count(name, 1);
        res
    }

    fn decrypt_loaded(
        k: &LoadedKey,
        ciphertext: &str,
        context: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        if ciphertext.starts_with(lockbox_core::native::TEXT_PREFIX) {
            let ks = k.keyset.as_ref().ok_or_else(|| {
                EngineError::BadRequest(format!(
                    "key type {} has no native ciphertexts",
                    k.key_type
                ))
            })?;
            return Ok(ks.decrypt(ciphertext, context)?);
        }
        if let Some(vk) = &k.vault {
            return Ok(vk.decrypt(ciphertext, context, aad)?);
        }
        if k.key_type == KeyType::Fernet {
            let keys: Vec<FernetKey> = k
                .materials
                .iter()
                .rev()
                .filter(|(v, _)| **v >= k.row.min_decryption_version)
                .map(|(_, (_, m))| FernetKey::from_bytes(m.expose_secret()))
                .collect::<lockbox_core::Result<_>>()?;
            return Ok(MultiFernet::new(keys)?.decrypt(ciphertext, None)?);
        }
        Err(EngineError::BadRequest(format!(
            "key type {} does not support decryption",
            k.key_type
        )))
    }

    /// Decrypt and encrypt again under the latest (or given) version.
    ///
    /// # Errors
    /// As [`Engine::decrypt`] and [`Engine::encrypt`].
    pub async fn rewrap(
        &self,
        name: &str,
        ciphertext: &str,
        context: &[u8],
        aad: &[u8],
        version: Option<u32>,
    ) -> Result<String> {
        let pt = Zeroizing::new(self.decrypt(name, ciphertext, context, aad).await?);
        if ciphertext.starts_with(lockbox_core::native::TEXT_PREFIX) {
            return self.encrypt_native(name, &pt, context).await;
        }
        self.encrypt(name, &pt, context, aad, version).await
    }

    /// Encrypt in the native format (`lbx1:`), context bound as associated data.
    ///
    /// # Errors
    /// As [`Engine::encrypt`].
    pub async fn encrypt_native(
        &self,
        name: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<String> {
        let k = self.key(name).await?;
        let ks = k.keyset.as_ref().ok_or_else(|| {
            EngineError::BadRequest(format!(
                "key type {} does not support encryption",
                k.key_type
            ))
        })?;
        let out = ks.encrypt_with(plaintext, &EncryptOptions::with_context(context))?;
        self.count(name, 0);
        Ok(out)
    }

    /// Decrypt a native ciphertext: the key is found from the key id in its
    /// header, so no key name is needed. Returns the key name and plaintext.
    ///
    /// # Errors
    /// [`EngineError::KeyNotFound`] if no key has that id; as [`Engine::decrypt`].
    pub async fn decrypt_native(
        &self,
        ciphertext: &str,
        context: &[u8],
    ) -> Result<(String, Vec<u8>)> {
        let name = self.native_key_name(ciphertext).await?;
        let pt = self.decrypt(&name, ciphertext, context, &[]).await?;
        Ok((name, pt))
    }

    /// The name of the key a native ciphertext names in its header, without
    /// decrypting anything: what the server authorizes before any work.
    ///
    /// # Errors
    /// [`EngineError::Crypto`] for a malformed header; [`EngineError::KeyNotFound`]
    /// if no key has that id.
    pub async fn native_key_name(&self, ciphertext: &str) -> Result<String> {
        let h = lockbox_core::native::inspect_text(ciphertext)?;
        self.key_name_of_id(h.key_id).await
    }

    /// The name of the key with this key id (as native ciphertexts name
    /// it). An unknown id reloads the keys, at most once a second.
    ///
    /// # Errors
    /// [`EngineError::KeyNotFound`] if no key has that id; [`EngineError::Sealed`].
    pub async fn key_name_of_id(&self, key_id: u32) -> Result<String> {
        self.unsealed()?;
        let name = self
            .inner
            .by_key_id
            .read()
            .map_err(lock_err)?
            .get(&key_id)
            .cloned();
        let name = match name {
            Some(n) => n,
            None => {
                {
                    let mut last = self.inner.miss_reload.lock().await;
                    if last.map_or(true, |t| t.elapsed() >= MISS_RELOAD_EVERY) {
                        self.reload_all().await?;
                        *last = Some(std::time::Instant::now());
                    }
                }
                self.inner
                    .by_key_id
                    .read()
                    .map_err(lock_err)?
                    .get(&key_id)
                    .cloned()
                    .ok_or_else(|| EngineError::KeyNotFound(format!("key id {key_id:08x}")))?
            }
        };
        Ok(name)
    }

    fn version_material(
        k: &LoadedKey,
        version: Option<u32>,
        op: &'static str,
    ) -> Result<(u32, SecretBytes)> {
        let v = match version {
            None | Some(0) => k.row.latest_version,
            Some(v) => v,
        };
        if v < k.row.min_decryption_version && op == "verify" {
            return Err(EngineError::BadRequest(
                "ciphertext or signature version is disallowed by policy (too old)".into(),
            ));
        }
        k.materials
            .get(&v)
            .map(|(_, m)| (v, m.clone()))
            .ok_or_else(|| {
                EngineError::BadRequest(format!(
                    "key version {v} does not exist or cannot be used to {op}"
                ))
            })
    }

    /// HMAC of `input` (Vault's `transit/hmac`): `vault:v<N>:<base64>`.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for a key type without HMAC or an unknown algorithm.
    pub async fn hmac(
        &self,
        name: &str,
        input: &[u8],
        algorithm: &str,
        version: Option<u32>,
    ) -> Result<String> {
        let k = self.key(name).await?;
        let (v, m) = Self::version_material(&k, version, "hmac")?;
        let out = sign::hmac(&sign::hmac_key(k.key_type, &m)?, algorithm, input, v)?;
        self.count(name, 2);
        Ok(out)
    }

    /// Verify an HMAC made by [`Engine::hmac`] (constant time).
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for a malformed value or a too-old version.
    pub async fn verify_hmac(
        &self,
        name: &str,
        input: &[u8],
        mac: &str,
        algorithm: &str,
    ) -> Result<bool> {
        let k = self.key(name).await?;
        let (v, raw) = sign::parse_tagged(mac, false)?;
        let (_, m) = Self::version_material(&k, Some(v), "verify")?;
        let ok = sign::verify_hmac(&sign::hmac_key(k.key_type, &m)?, algorithm, input, &raw)?;
        self.count(name, 2);
        Ok(ok)
    }

    /// Sign `input` (Vault's `transit/sign`): `vault:v<N>:<signature>`.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for a key type that does not sign or
    /// unsupported options.
    pub async fn sign(&self, name: &str, input: &[u8], opts: &SignOptions) -> Result<String> {
        let k = self.key(name).await?;
        let (v, m) = Self::version_material(&k, opts.key_version, "sign")?;
        let out = sign::sign(k.key_type, &m, input, opts, v)?;
        self.count(name, 2);
        Ok(out)
    }

    /// Verify a signature made by [`Engine::sign`].
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for a malformed signature or options.
    pub async fn verify(
        &self,
        name: &str,
        input: &[u8],
        signature: &str,
        opts: &SignOptions,
    ) -> Result<bool> {
        let k = self.key(name).await?;
        let jws = opts.marshaling_algorithm.as_deref() == Some("jws");
        let (v, raw) = sign::parse_tagged(signature, jws)?;
        let (_, m) = Self::version_material(&k, Some(v), "verify")?;
        let ok = sign::verify(k.key_type, &m, input, &raw, opts)?;
        self.count(name, 2);
        Ok(ok)
    }

    fn blind_indexer(
        k: &LoadedKey,
        normalization: lockbox_core::blind_index::Normalization,
        truncation: usize,
    ) -> Result<lockbox_core::blind_index::BlindIndexer> {
        use lockbox_core::blind_index::{BlindIndexConfig, BlindIndexKey, BlindIndexer};
        let keys = k
            .materials
            .iter()
            .filter(|(v, _)| **v >= k.row.min_decryption_version)
            .map(|(v, (_, m))| {
                let ik = lockbox_core::kdf::hkdf_sha256(
                    m.expose_secret(),
                    &[],
                    b"lockbox/v1/blind-index-key",
                    32,
                )?;
                BlindIndexKey::new(*v, ik)
            })
            .collect::<lockbox_core::Result<Vec<_>>>()?;
        Ok(BlindIndexer::new(
            BlindIndexConfig::new(normalization, truncation)?,
            keys,
            k.row.latest_version,
        )?)
    }

    /// Blind index of `value` for (`tenant`, `column`) under the key's latest
    /// version (`bi1:v<N>:…`). The index key of each version is derived from
    /// the version's material, separate from its encryption use.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for a bad truncation; key errors.
    pub async fn blind_index(
        &self,
        name: &str,
        tenant: &str,
        column: &str,
        value: &str,
        normalization: lockbox_core::blind_index::Normalization,
        truncation: usize,
    ) -> Result<String> {
        let k = self.key(name).await?;
        let out =
            Self::blind_indexer(&k, normalization, truncation)?.compute(value, tenant, column)?;
        self.count(name, 2);
        Ok(out)
    }

    /// The blind index values of `value` under every version that may still
    /// be in use (for lookups during a rotation), newest first.
    ///
    /// # Errors
    /// As [`Engine::blind_index`].
    pub async fn blind_index_terms(
        &self,
        name: &str,
        tenant: &str,
        column: &str,
        value: &str,
        normalization: lockbox_core::blind_index::Normalization,
        truncation: usize,
    ) -> Result<Vec<String>> {
        let k = self.key(name).await?;
        let out = Self::blind_indexer(&k, normalization, truncation)?
            .search_terms(value, tenant, column)?;
        self.count(name, 2);
        Ok(out)
    }

    /// Export key material (requires `exportable`): version → base64.
    /// `kind` is `encryption-key`, `signing-key`, `hmac-key` or `public-key`
    /// (the last needs no `exportable`).
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] if the key is not exportable or the kind
    /// does not fit its type.
    pub async fn export(
        &self,
        name: &str,
        kind: &str,
        version: Option<u32>,
    ) -> Result<BTreeMap<u32, String>> {
        let k = self.key(name).await?;
        let fits = match kind {
            "encryption-key" => k.key_type.supports_encryption(),
            "signing-key" | "public-key" => k.key_type.supports_signing(),
            "hmac-key" => k.key_type == KeyType::Hmac || k.key_type.supports_encryption(),
            _ => {
                return Err(EngineError::BadRequest(format!(
                    "invalid export type {kind:?}"
                )))
            }
        };
        if !fits {
            return Err(EngineError::BadRequest(format!(
                "{kind} is not supported for key type {}",
                k.key_type
            )));
        }
        if kind != "public-key" && !k.row.exportable {
            return Err(EngineError::BadRequest(
                "private key material is not exportable".into(),
            ));
        }
        let mut out = BTreeMap::new();
        for (v, (_, m)) in &k.materials {
            if version.is_some_and(|want| want != *v) {
                continue;
            }
            let bytes = if kind == "public-key" {
                k.key_type.public_key(m.expose_secret()).unwrap_or_default()
            } else {
                m.expose_secret().to_vec()
            };
            out.insert(*v, lockbox_core::encoding::b64_encode(&bytes));
        }
        if out.is_empty() {
            return Err(EngineError::BadRequest("version does not exist".into()));
        }
        self.count(name, 2);
        Ok(out)
    }

    /// Back a key up (requires `allow_plaintext_backup`). With a passphrase
    /// the blob is encrypted (Argon2id + AES-256-GCM) and reads `lbxbak1:…`;
    /// without, it is Vault-style base64 JSON holding the key in the clear.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] if backups are not allowed for the key.
    pub async fn backup(&self, name: &str, passphrase: Option<&[u8]>) -> Result<String> {
        let k = self.key(name).await?;
        if !k.row.allow_plaintext_backup {
            return Err(EngineError::BadRequest(
                "exporting backup for the key is not allowed: set allow_plaintext_backup".into(),
            ));
        }
        let doc = BackupDoc {
            lockbox_backup: 1,
            name: k.row.name.clone(),
            key_type: k.row.key_type.clone(),
            derived: k.row.derived,
            convergent: k.row.convergent,
            exportable: k.row.exportable,
            allow_plaintext_backup: k.row.allow_plaintext_backup,
            deletion_allowed: k.row.deletion_allowed,
            auto_rotate_period: k.row.auto_rotate_period_secs,
            min_decryption_version: k.row.min_decryption_version,
            min_encryption_version: k.row.min_encryption_version,
            versions: k
                .materials
                .iter()
                .map(|(v, (c, m))| BackupVersion {
                    version: *v,
                    created_at: *c,
                    key: lockbox_core::encoding::b64_encode(m.expose_secret()),
                })
                .collect(),
        };
        let json = Zeroizing::new(
            serde_json::to_vec(&doc).map_err(|e| EngineError::Internal(e.to_string()))?,
        );
        self.count(name, 2);
        match passphrase {
            None => Ok(lockbox_core::encoding::b64_encode(&json)),
            Some(p) => backup_encrypt(&json, p),
        }
    }

    /// Restore a backup as `name` (default: the name in the backup). An
    /// existing key is only replaced with `force`.
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for a malformed backup, a wrong
    /// passphrase, or an existing key.
    pub async fn restore_backup(
        &self,
        blob: &str,
        passphrase: Option<&[u8]>,
        name: Option<&str>,
        force: bool,
    ) -> Result<String> {
        self.restore_backup_into(blob, passphrase, name, None, force)
            .await
    }

    /// As [`Engine::restore_backup`], for a caller that owns one key
    /// namespace: without `name`, the backup's own name must be a plain
    /// key name ([`is_key_name`]; a key of `namespace` itself may keep its
    /// prefix) and is placed in `namespace`
    /// (`""` for the default mount, `"m2/"` for mount `m2`) — a backup
    /// cannot choose where it lands.
    ///
    /// # Errors
    /// As [`Engine::restore_backup`]; [`EngineError::BadRequest`] for a
    /// backup whose name is not a plain key name.
    pub async fn restore_backup_into(
        &self,
        blob: &str,
        passphrase: Option<&[u8]>,
        name: Option<&str>,
        namespace: Option<&str>,
        force: bool,
    ) -> Result<String> {
        let json = Zeroizing::new(if blob.trim().starts_with(BACKUP_PREFIX) {
            let p = passphrase.ok_or_else(|| {
                EngineError::BadRequest("this backup is encrypted: give its passphrase".into())
            })?;
            backup_decrypt(blob.trim(), p)?
        } else {
            lockbox_core::encoding::b64_decode(blob.trim())
                .map_err(|_| EngineError::BadRequest("malformed backup: not base64".into()))?
        });
        let doc: BackupDoc = serde_json::from_slice(&json)
            .map_err(|e| EngineError::BadRequest(format!("malformed backup: {e}")))?;
        if doc.lockbox_backup != 1 {
            return Err(EngineError::BadRequest(format!(
                "unsupported backup version {}",
                doc.lockbox_backup
            )));
        }
        let name = match (name, namespace) {
            (Some(n), _) => n.to_owned(),
            (None, None) => doc.name.clone(),
            (None, Some(ns)) => {
                // A backup of this namespace's own key carries the prefix.
                let base = doc.name.strip_prefix(ns).unwrap_or(&doc.name);
                if !is_key_name(base) {
                    return Err(EngineError::BadRequest(
                        "the backup's key name is not a plain key name: restore it under a name (restore/NAME)".into(),
                    ));
                }
                format!("{ns}{base}")
            }
        };
        check_name(&name)?;
        let key_type: KeyType = doc.key_type.parse()?;
        let versions = doc
            .versions
            .iter()
            .map(|v| {
                lockbox_core::encoding::b64_decode(&v.key)
                    .map(|b| (v.version, SecretBytes::new(b)))
                    .map_err(|_| {
                        EngineError::BadRequest("malformed backup: key is not base64".into())
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        if self.inner.store.key_get(&name).await?.is_some() {
            if !force {
                return Err(EngineError::BadRequest(format!(
                    "key {name} already exists: restore under another name or use force"
                )));
            }
            return Err(EngineError::BadRequest(format!(
                "key {name} already exists; replacing keys in place is not supported: delete and destroy it first or restore under another name"
            )));
        }
        self.insert_new(
            &name,
            key_type,
            versions,
            doc.derived,
            doc.convergent,
            doc.exportable,
            doc.allow_plaintext_backup,
            Some(doc.auto_rotate_period),
        )
        .await?;
        self.configure(
            &name,
            &ConfigUpdate {
                min_decryption_version: Some(doc.min_decryption_version),
                min_encryption_version: Some(doc.min_encryption_version),
                deletion_allowed: Some(doc.deletion_allowed),
                ..ConfigUpdate::default()
            },
        )
        .await?;
        Ok(name)
    }

    /// Import a key (bring your own key): raw bytes, a Fernet key, or the
    /// versions of a key exported from Vault (`export/encryption-key`).
    ///
    /// # Errors
    /// [`EngineError::BadRequest`] for material of the wrong size or type,
    /// or an existing name.
    pub async fn import(&self, name: &str, spec: ImportSpec) -> Result<()> {
        if self.inner.store.key_get(name).await?.is_some() {
            return Err(EngineError::BadRequest(format!(
                "key {name} already exists"
            )));
        }
        self.insert_new(
            name,
            spec.key_type,
            spec.versions,
            spec.derived,
            spec.convergent_encryption,
            spec.exportable,
            spec.allow_plaintext_backup,
            None,
        )
        .await
    }

    /// Start the background tasks: the auto-rotation scheduler, the usage
    /// flusher and (PostgreSQL) the change listener. They stop when the
    /// returned handle is dropped... they run for the life of the runtime.
    pub async fn spawn_background(&self) {
        let e = self.clone();
        let every = self.inner.cfg.rotation_check_interval;
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                if !e.is_sealed() {
                    let _ = e.rotate_due_keys(now()).await;
                }
            }
        });
        let e = self.clone();
        let every = self.inner.cfg.usage_flush_interval;
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            loop {
                t.tick().await;
                let _ = e.flush_usage().await;
            }
        });
        if let Ok(Some(mut rx)) = self.inner.store.subscribe().await {
            let e = self.clone();
            tokio::spawn(async move {
                while let Some(name) = rx.recv().await {
                    if e.is_sealed() {
                        continue;
                    }
                    if name == "*" {
                        let _ = e.reload_all().await;
                    } else {
                        let _ = e.reload_key(&name).await;
                    }
                }
            });
        }
    }
}

fn is_due(row: &KeyRow, at: i64) -> bool {
    row.auto_rotate_period_secs > 0
        && row.deleted_at.is_none()
        && row.destroyed_at.is_none()
        && row
            .last_rotated_at
            .saturating_add(row.auto_rotate_period_secs)
            <= at
}

fn check_period(p: i64) -> Result<i64> {
    if p == 0 || p >= 3600 {
        Ok(p)
    } else {
        Err(EngineError::BadRequest(
            "auto rotate period must be 0 to disable or at least an hour".into(),
        ))
    }
}

fn rotate_mutation(u: &Unsealed, row: &KeyRow, retention: u32, at: i64) -> Result<Mutation> {
    let key_type: KeyType = row.key_type.parse()?;
    let next = row
        .latest_version
        .checked_add(1)
        .ok_or_else(|| EngineError::BadRequest("too many key versions".into()))?;
    let mut r = row.clone();
    r.latest_version = next;
    r.last_rotated_at = at;
    let material = key_type.generate()?;
    let add = vec![u.seal_version(&r, next, at, &material)?];
    // Retention: keep `retention` versions, never trimming at or above the
    // minimum decryption version (those may still have ciphertexts in use).
    let mut delete_below = None;
    if retention > 0 {
        let keep_from = next.saturating_sub(retention - 1).max(1);
        let new_min = keep_from.min(r.min_decryption_version);
        if new_min > r.min_available_version {
            r.min_available_version = new_min;
            delete_below = Some(new_min);
        }
    }
    Ok(Mutation {
        row: r,
        add,
        delete_below,
        delete_all: false,
    })
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupDoc {
    lockbox_backup: u32,
    name: String,
    key_type: String,
    derived: bool,
    convergent: bool,
    exportable: bool,
    allow_plaintext_backup: bool,
    deletion_allowed: bool,
    auto_rotate_period: i64,
    min_decryption_version: u32,
    min_encryption_version: u32,
    versions: Vec<BackupVersion>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupVersion {
    version: u32,
    created_at: i64,
    key: String,
}

impl Drop for BackupVersion {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

const BACKUP_PREFIX: &str = "lbxbak1:";

/// `lbxbak1:` ‖ base64url(salt(16) ‖ nonce(12) ‖ AES-256-GCM(key, json) ‖ tag),
/// key = Argon2id(passphrase, salt, 64 MiB, 3 passes, 4 lanes).
fn backup_encrypt(json: &[u8], passphrase: &[u8]) -> Result<String> {
    if passphrase.len() < 12 {
        return Err(EngineError::BadRequest(
            "backup passphrase must be at least 12 characters".into(),
        ));
    }
    let salt = SecretBytes::random(16)?;
    let key = lockbox_core::kdf::argon2id(
        passphrase,
        salt.expose_secret(),
        lockbox_core::kdf::Argon2Params::default(),
        32,
    )?;
    let aead = lockbox_core::AeadKey::new(lockbox_core::Algorithm::Aes256Gcm, key.expose_secret())?;
    let sealed = aead.seal_random_nonce(BACKUP_PREFIX.as_bytes(), json)?;
    let mut out = salt.expose_secret().to_vec();
    out.extend_from_slice(&sealed);
    Ok(format!(
        "{BACKUP_PREFIX}{}",
        lockbox_core::encoding::b64url_encode(&out)
    ))
}

fn backup_decrypt(blob: &str, passphrase: &[u8]) -> Result<Vec<u8>> {
    let body = blob
        .strip_prefix(BACKUP_PREFIX)
        .ok_or_else(|| EngineError::BadRequest("not an encrypted Lockbox backup".into()))?;
    let raw = lockbox_core::encoding::b64url_decode(body)
        .map_err(|_| EngineError::BadRequest("malformed backup: not base64url".into()))?;
    let (salt, sealed) = raw
        .split_at_checked(16)
        .ok_or_else(|| EngineError::BadRequest("malformed backup: truncated".into()))?;
    let key = lockbox_core::kdf::argon2id(
        passphrase,
        salt,
        lockbox_core::kdf::Argon2Params::default(),
        32,
    )?;
    let aead = lockbox_core::AeadKey::new(lockbox_core::Algorithm::Aes256Gcm, key.expose_secret())?;
    aead.open_with_nonce_prefix(BACKUP_PREFIX.as_bytes(), sealed)
        .map_err(|_| {
            EngineError::BadRequest("wrong backup passphrase, or the backup was modified".into())
        })
}

fn hex_decode(s: &str) -> Result<Vec<u8>> {
    lockbox_core::encoding::hex_decode(s)
        .map_err(|_| EngineError::Integrity("seal check value is corrupt".into()))
}
