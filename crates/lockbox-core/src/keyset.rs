//! Keysets: a named key with numbered versions and one primary version.
//!
//! Each version has an id (`<key id>:<version>`), an algorithm, a state and a
//! creation time. The primary version encrypts; every version in state
//! `active` or `decrypt-only` decrypts. Decryption picks the version named in
//! the ciphertext header — there is never trial decryption.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::aead::{AeadKey, Algorithm};
use crate::encoding::{b64_decode, b64_encode};
use crate::error::{Error, Result};
use crate::kdf::hmac_sha256_parts;
use crate::native::{self, EncryptOptions};
use crate::secret::{random_u32, SecretBytes};

/// Length of a key commitment (see docs/FORMAT.md).
pub const COMMITMENT_LEN: usize = 32;
const COMMITMENT_LABEL: &[u8] = b"lockbox/v1/key-commitment";

/// The state of one key version.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyState {
    /// Encrypts (if primary) and decrypts.
    Active,
    /// Decrypts only; never encrypts, even if made primary.
    DecryptOnly,
    /// Neither encrypts nor decrypts; can be re-enabled.
    Disabled,
    /// Key material wiped (crypto-shredded). Irreversible.
    Destroyed,
}

impl KeyState {
    /// The name used in files and the API.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::DecryptOnly => "decrypt-only",
            KeyState::Disabled => "disabled",
            KeyState::Destroyed => "destroyed",
        }
    }

    /// Whether a version in this state may decrypt.
    #[must_use]
    pub const fn can_decrypt(self) -> bool {
        matches!(self, KeyState::Active | KeyState::DecryptOnly)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(KeyState::Active),
            "decrypt-only" => Ok(KeyState::DecryptOnly),
            "disabled" => Ok(KeyState::Disabled),
            "destroyed" => Ok(KeyState::Destroyed),
            _ => Err(Error::Keyset(format!(
                "unknown key state {s:?} (expected active, decrypt-only, disabled or destroyed)"
            ))),
        }
    }
}

/// One version of a key.
pub struct KeyVersion {
    version: u32,
    algorithm: Algorithm,
    state: KeyState,
    created_at: u64,
    material: Option<SecretBytes>,
    prepared: Option<AeadKey>,
    commitment: [u8; COMMITMENT_LEN],
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVersion")
            .field("version", &self.version)
            .field("algorithm", &self.algorithm)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// The key commitment of a key version: HMAC-SHA256 under the key of a fixed
/// label, the algorithm id, the key id and the version. Computed once per
/// version; see docs/FORMAT.md for why this makes ciphertexts key-committing.
#[must_use]
pub fn key_commitment(
    material: &[u8],
    alg: Algorithm,
    key_id: u32,
    version: u32,
) -> [u8; COMMITMENT_LEN] {
    hmac_sha256_parts(
        material,
        &[
            COMMITMENT_LABEL,
            &[alg.id()],
            &key_id.to_be_bytes(),
            &version.to_be_bytes(),
        ],
    )
}

impl KeyVersion {
    fn new(
        key_id: u32,
        version: u32,
        algorithm: Algorithm,
        state: KeyState,
        created_at: u64,
        material: SecretBytes,
    ) -> Result<Self> {
        if version == 0 {
            return Err(Error::Keyset("key versions start at 1".into()));
        }
        let prepared = AeadKey::new(algorithm, material.expose_secret())?;
        let commitment = key_commitment(material.expose_secret(), algorithm, key_id, version);
        Ok(KeyVersion {
            version,
            algorithm,
            state,
            created_at,
            material: Some(material),
            prepared: Some(prepared),
            commitment,
        })
    }

    /// Key material brought in from outside (an imported version, a keyset
    /// file) must not be one byte value repeated: such a key protects nothing.
    fn refuse_repeated_byte(&self) -> Result<()> {
        if self
            .material
            .as_ref()
            .is_some_and(|m| crate::secret::is_repeated_byte(m.expose_secret()))
        {
            return Err(Error::InvalidKey(
                "the key material is one byte value repeated (e.g. all zeros), not a key".into(),
            ));
        }
        Ok(())
    }

    /// The version number (1, 2, ...).
    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The AEAD algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The state.
    #[must_use]
    pub fn state(&self) -> KeyState {
        self.state
    }

    /// Creation time, seconds since the Unix epoch.
    #[must_use]
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// The key commitment carried by every ciphertext of this version.
    #[must_use]
    pub fn commitment(&self) -> &[u8; COMMITMENT_LEN] {
        &self.commitment
    }

    /// The raw key material (`None` once destroyed). **Never** log it; export
    /// paths only.
    #[must_use]
    pub fn expose_key_material(&self) -> Option<&SecretBytes> {
        self.material.as_ref()
    }

    pub(crate) fn aead_for(&self, operation: &'static str) -> Result<&AeadKey> {
        let usable = match operation {
            "encrypt" => self.state == KeyState::Active,
            _ => self.state.can_decrypt(),
        };
        match (&self.prepared, usable) {
            (Some(k), true) => Ok(k),
            _ => Err(Error::KeyVersionUnusable {
                version: self.version,
                state: self.state.name(),
                operation,
            }),
        }
    }
}

/// Seconds since the Unix epoch, now.
#[must_use]
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A named key: numbered versions, one primary.
pub struct Keyset {
    name: String,
    key_id: u32,
    primary: u32,
    versions: BTreeMap<u32, KeyVersion>,
}

impl fmt::Debug for Keyset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyset")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .field("primary", &self.primary)
            .field("versions", &self.versions.values().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyset {
    /// A new keyset named `name` with one fresh version of `algorithm`.
    ///
    /// # Errors
    /// [`Error::Random`] if the CSPRNG fails; [`Error::InvalidArgument`] for an
    /// empty name.
    pub fn generate(name: &str, algorithm: Algorithm) -> Result<Self> {
        check_name(name)?;
        let key_id = random_u32()?;
        let mut ks = Keyset {
            name: name.to_owned(),
            key_id,
            primary: 0,
            versions: BTreeMap::new(),
        };
        ks.rotate(algorithm)?;
        Ok(ks)
    }

    /// A keyset with no versions yet (for [`Keyset::import_version`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty name.
    pub fn empty(name: &str, key_id: u32) -> Result<Self> {
        check_name(name)?;
        Ok(Keyset {
            name: name.to_owned(),
            key_id,
            primary: 0,
            versions: BTreeMap::new(),
        })
    }

    /// Add a fresh version of `algorithm` and make it primary at once.
    /// Earlier versions keep their state and still decrypt.
    ///
    /// # Errors
    /// [`Error::Random`]; [`Error::InvalidArgument`] past `u32::MAX` versions.
    pub fn rotate(&mut self, algorithm: Algorithm) -> Result<u32> {
        let material = SecretBytes::random(algorithm.key_len())?;
        let v = self.import_version(algorithm, material, now_unix())?;
        self.primary = v;
        Ok(v)
    }

    /// Add `material` (bring your own key) as the next version, state active.
    /// Does not change the primary unless the keyset had none.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if `material` has the wrong length for
    /// `algorithm`, or is one byte value repeated (e.g. all zeros).
    pub fn import_version(
        &mut self,
        algorithm: Algorithm,
        material: SecretBytes,
        created_at: u64,
    ) -> Result<u32> {
        let next = self
            .versions
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .checked_add(1)
            .ok_or_else(|| Error::InvalidArgument("too many key versions".into()))?;
        let kv = KeyVersion::new(
            self.key_id,
            next,
            algorithm,
            KeyState::Active,
            created_at,
            material,
        )?;
        kv.refuse_repeated_byte()?;
        self.versions.insert(next, kv);
        if self.primary == 0 {
            self.primary = next;
        }
        Ok(next)
    }

    /// Insert `material` as version `version` with `state` (for stores that
    /// keep versions with their numbers, e.g. after a trim). Does not change
    /// the primary unless the keyset had none.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the version exists or is 0;
    /// [`Error::InvalidKey`] for material of the wrong length.
    pub fn insert_version(
        &mut self,
        version: u32,
        algorithm: Algorithm,
        material: SecretBytes,
        created_at: u64,
        state: KeyState,
    ) -> Result<()> {
        if self.versions.contains_key(&version) {
            return Err(Error::InvalidArgument(format!(
                "key version {version} exists"
            )));
        }
        let mut kv = KeyVersion::new(self.key_id, version, algorithm, state, created_at, material)?;
        if state == KeyState::Destroyed {
            kv.prepared = None;
            kv.material = None;
        }
        self.versions.insert(version, kv);
        if self.primary == 0 && state == KeyState::Active {
            self.primary = version;
        }
        Ok(())
    }

    /// Make `version` the primary (encrypting) version. It must be active.
    ///
    /// # Errors
    /// [`Error::UnknownKeyVersion`], or [`Error::KeyVersionUnusable`] if not active.
    pub fn set_primary(&mut self, version: u32) -> Result<()> {
        let kv = self
            .versions
            .get(&version)
            .ok_or(Error::UnknownKeyVersion(version))?;
        kv.aead_for("encrypt")?;
        self.primary = version;
        Ok(())
    }

    /// Change the state of `version`. The primary can only be made
    /// decrypt-only by rotating first; `destroyed` wipes the key material and
    /// cannot be undone.
    ///
    /// # Errors
    /// [`Error::UnknownKeyVersion`]; [`Error::InvalidArgument`] for a change
    /// that is not allowed (leaving `destroyed`, retiring the primary).
    pub fn set_state(&mut self, version: u32, state: KeyState) -> Result<()> {
        let is_primary = version == self.primary;
        let kv = self
            .versions
            .get_mut(&version)
            .ok_or(Error::UnknownKeyVersion(version))?;
        if kv.state == KeyState::Destroyed && state != KeyState::Destroyed {
            return Err(Error::InvalidArgument(format!(
                "key version {version} is destroyed; that cannot be undone"
            )));
        }
        if is_primary && state != KeyState::Active {
            return Err(Error::InvalidArgument(format!(
                "key version {version} is the primary; rotate before changing its state to {state}"
            )));
        }
        kv.state = state;
        if state == KeyState::Destroyed {
            kv.prepared = None;
            kv.material = None; // SecretBytes zeroizes on drop
        }
        Ok(())
    }

    /// The keyset's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id carried by every ciphertext of this keyset.
    #[must_use]
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The primary version number.
    #[must_use]
    pub fn primary_version(&self) -> u32 {
        self.primary
    }

    /// One version.
    #[must_use]
    pub fn version(&self, version: u32) -> Option<&KeyVersion> {
        self.versions.get(&version)
    }

    /// All versions, oldest first.
    pub fn versions(&self) -> impl Iterator<Item = &KeyVersion> {
        self.versions.values()
    }

    /// The primary version.
    ///
    /// # Errors
    /// [`Error::Keyset`] if the keyset has no versions.
    pub fn primary(&self) -> Result<&KeyVersion> {
        self.versions
            .get(&self.primary)
            .ok_or_else(|| Error::Keyset("keyset has no primary version".into()))
    }

    /// Encrypt `plaintext` under the primary version in the native text form,
    /// binding `context` as associated data (not stored).
    ///
    /// # Errors
    /// [`Error::KeyVersionUnusable`] if the primary cannot encrypt; [`Error::Random`].
    pub fn encrypt(&self, plaintext: &[u8], context: &[u8]) -> Result<String> {
        native::encrypt_text(self, plaintext, &EncryptOptions::with_context(context))
    }

    /// Decrypt a native text ciphertext made by this keyset with `context`.
    ///
    /// # Errors
    /// [`Error::UnknownPrefix`], [`Error::Truncated`], [`Error::Malformed`],
    /// [`Error::WrongKeyId`], [`Error::UnknownKeyVersion`],
    /// [`Error::KeyVersionUnusable`] or [`Error::AuthenticationFailed`].
    pub fn decrypt(&self, ciphertext: &str, context: &[u8]) -> Result<Vec<u8>> {
        native::decrypt_text(self, ciphertext, context)
    }

    /// Encrypt with full options, text form.
    ///
    /// # Errors
    /// As [`Keyset::encrypt`], and [`Error::InvalidArgument`] for a stored
    /// context over 65535 bytes.
    pub fn encrypt_with(&self, plaintext: &[u8], options: &EncryptOptions<'_>) -> Result<String> {
        native::encrypt_text(self, plaintext, options)
    }

    /// Encrypt with full options, binary form.
    ///
    /// # Errors
    /// As [`Keyset::encrypt_with`].
    pub fn encrypt_binary(
        &self,
        plaintext: &[u8],
        options: &EncryptOptions<'_>,
    ) -> Result<Vec<u8>> {
        native::encrypt_binary(self, plaintext, options)
    }

    /// Decrypt the binary form.
    ///
    /// # Errors
    /// As [`Keyset::decrypt`].
    pub fn decrypt_binary(&self, ciphertext: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        native::decrypt_binary(self, ciphertext, context)
    }

    /// Serialize to the keyset file form (JSON). **The result contains key
    /// material in the clear**: write it only where a key may live (mode 0600).
    ///
    /// # Errors
    /// [`Error::Keyset`] if serialization fails.
    pub fn to_json(&self) -> Result<String> {
        let file = KeysetFile {
            lockbox_keyset: KEYSET_FILE_VERSION,
            name: self.name.clone(),
            key_id: format!("{:08x}", self.key_id),
            primary_version: self.primary,
            versions: self
                .versions
                .values()
                .map(|v| VersionFile {
                    version: v.version,
                    algorithm: v.algorithm.name().to_owned(),
                    state: v.state.name().to_owned(),
                    created_at: v.created_at,
                    key: v.material.as_ref().map(|m| b64_encode(m.expose_secret())),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&file).map_err(|e| Error::Keyset(format!("serialize: {e}")))
    }

    /// Parse the keyset file form.
    ///
    /// # Errors
    /// [`Error::Keyset`] naming the field that is wrong (also for key
    /// material that is one byte value repeated); [`Error::InvalidKey`] for
    /// key material of the wrong size.
    pub fn from_json(json: &str) -> Result<Self> {
        let mut file: KeysetFile = serde_json::from_str(json).map_err(|e| {
            // serde_json's message names the field and position, never values.
            Error::Keyset(format!("not a Lockbox keyset file: {e}"))
        })?;
        if file.lockbox_keyset != KEYSET_FILE_VERSION {
            return Err(Error::Keyset(format!(
                "unsupported keyset file version {} (this build reads {KEYSET_FILE_VERSION})",
                file.lockbox_keyset
            )));
        }
        if file.key_id.len() != 8 {
            return Err(Error::Keyset("key_id must be 8 hex digits".into()));
        }
        let key_id = u32::from_str_radix(&file.key_id, 16)
            .map_err(|_| Error::Keyset("key_id must be 8 hex digits".into()))?;
        let mut ks = Keyset::empty(&file.name, key_id).map_err(|e| Error::Keyset(e.to_string()))?;
        for mut v in std::mem::take(&mut file.versions) {
            let key = v.key.take().map(zeroize::Zeroizing::new);
            let algorithm: Algorithm = v.algorithm.parse()?;
            let state: KeyState = v.state.parse()?;
            if ks.versions.contains_key(&v.version) {
                return Err(Error::Keyset(format!(
                    "version {} appears twice",
                    v.version
                )));
            }
            let kv = match (state, key) {
                (KeyState::Destroyed, None) => KeyVersion {
                    version: v.version,
                    algorithm,
                    state,
                    created_at: v.created_at,
                    material: None,
                    prepared: None,
                    commitment: [0u8; COMMITMENT_LEN],
                },
                (KeyState::Destroyed, Some(_)) => {
                    return Err(Error::Keyset(format!(
                        "version {} is destroyed but still has key material",
                        v.version
                    )))
                }
                (_, None) => {
                    return Err(Error::Keyset(format!("version {} has no key", v.version)));
                }
                (_, Some(k)) => {
                    let bytes = SecretBytes::new(b64_decode(&k).map_err(|_| {
                        Error::Keyset(format!("version {}: key is not base64", v.version))
                    })?);
                    let kv =
                        KeyVersion::new(key_id, v.version, algorithm, state, v.created_at, bytes)
                            .map_err(|e| Error::Keyset(format!("version {}: {e}", v.version)))?;
                    kv.refuse_repeated_byte()
                        .map_err(|e| Error::Keyset(format!("version {}: {e}", v.version)))?;
                    kv
                }
            };
            ks.versions.insert(v.version, kv);
        }
        let primary = ks.versions.get(&file.primary_version).ok_or_else(|| {
            Error::Keyset(format!(
                "primary_version {} does not exist",
                file.primary_version
            ))
        })?;
        if primary.state != KeyState::Active {
            return Err(Error::Keyset(format!(
                "primary_version {} is {}, not active",
                file.primary_version, primary.state
            )));
        }
        ks.primary = file.primary_version;
        Ok(ks)
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(
            "key names are 1 to 128 characters with no control characters".into(),
        ));
    }
    Ok(())
}

/// The keyset file format version written by this build.
pub const KEYSET_FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysetFile {
    lockbox_keyset: u32,
    name: String,
    key_id: String,
    primary_version: u32,
    versions: Vec<VersionFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    version: u32,
    algorithm: String,
    state: String,
    created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

impl Drop for VersionFile {
    fn drop(&mut self) {
        if let Some(k) = self.key.as_mut() {
            zeroize::Zeroize::zeroize(k);
        }
    }
}
