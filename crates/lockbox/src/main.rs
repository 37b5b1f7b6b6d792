//! The `lockbox` command-line tool.

mod access;
mod envelope;
mod observe;
mod reencrypt;
mod serve;
mod target;

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lockbox::fernet::{Fernet, FernetKey, MultiFernet};
use lockbox::{Algorithm, EncryptOptions, Error, KeyState, Keyset};
use lockbox_engine::{ConfigUpdate, CreateOptions, ImportSpec, KeyType};
use target::{Target, TargetArgs};

/// Application-level encryption and key management.
#[derive(Parser)]
#[command(name = "lockbox", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Where key commands run.
#[derive(Args)]
pub(crate) struct Global {
    /// Local store URL (sqlite://FILE, postgres://...): run in-process.
    #[arg(long, global = true, env = "LOCKBOX_STORE")]
    store: Option<String>,
    /// Lockbox server URL (e.g. http://127.0.0.1:8200).
    #[arg(long, global = true, env = "LOCKBOX_ADDR")]
    addr: Option<String>,
    /// Token for the server.
    #[arg(long, global = true, env = "LOCKBOX_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the master (root) key; LOCKBOX_MASTER_KEY is the alternative.
    #[arg(long, global = true)]
    master_key_file: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Lockbox server (Vault-Transit-compatible HTTP API).
    Serve(Box<serve::ServeArgs>),
    /// Initialize a store with Shamir unseal shares; prints the shares and a root token once.
    Init {
        /// Number of shares.
        #[arg(long, default_value_t = 5)]
        shares: u8,
        /// Shares needed to unseal.
        #[arg(long, default_value_t = 3)]
        threshold: u8,
    },
    /// Give a server one unseal share (argument, or read from stdin).
    Unseal {
        /// The share (omit to read it from stdin, which keeps it out of the shell history).
        share: Option<String>,
        /// Forget the shares given so far.
        #[arg(long)]
        reset: bool,
    },
    /// Seal a server (it forgets its root key until unsealed).
    Seal,
    /// Seal status.
    Status,
    /// Print a new random master key (32 bytes, base64) for LOCKBOX_MASTER_KEY.
    KeygenMaster,
    /// Named keys in a store or server: create, rotate, configure, export, back up, import...
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Decrypt and encrypt again under the key's latest version (stdin to stdout).
    Rewrap {
        /// Key name.
        #[arg(long)]
        key: String,
        /// Context.
        #[arg(long, default_value = "")]
        context: String,
    },
    /// Generate a new keyset file (one AES-256-GCM version unless --algorithm says otherwise).
    Keygen(KeygenArgs),
    /// Encrypt stdin to a native `lbx1:` token (one line on stdout).
    Encrypt(EncryptArgs),
    /// Decrypt a native token from stdin; writes exactly the plaintext bytes.
    Decrypt(DecryptArgs),
    /// Show what a ciphertext on stdin is (format, algorithm, key id, version), without a key.
    Inspect,
    /// Manage a keyset file: show, rotate, change a version's state.
    #[command(subcommand)]
    Keyset(KeysetCommand),
    /// Fernet tokens, compatible with Python `cryptography`.
    #[command(subcommand)]
    Fernet(FernetCommand),
    /// ACL policies: write, read, list, delete.
    #[command(subcommand)]
    Policy(access::PolicyCommand),
    /// Tokens: create, lookup, renew, revoke.
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// The audit log: verify, query.
    #[command(subcommand)]
    Audit(observe::AuditCommand),
    /// Webhook deliveries: verify.
    #[command(subcommand)]
    Webhook(observe::WebhookCommand),
    /// TLS endpoints: check.
    #[command(subcommand)]
    Tls(observe::TlsCommand),
    /// Envelope encryption (`lbxe1:`): a data key per message, wrapped by a
    /// Lockbox key, a tenant's key and/or an AWS KMS key.
    #[command(subcommand)]
    Envelope(envelope::EnvelopeCommand),
    /// Re-encrypt a database column: plaintext, older key versions, Fernet, Vault or
    /// pgcrypto values to Lockbox ciphertexts (or back to plaintext), in resumable batches.
    #[command(subcommand)]
    Reencrypt(reencrypt::ReencryptCommand),
}

#[derive(Args)]
struct KeygenArgs {
    /// File to write the keyset to (created with mode 0600; never overwritten).
    #[arg(long, short)]
    out: PathBuf,
    /// Key name.
    #[arg(long, default_value = "default")]
    name: String,
    /// aes256-gcm (default), chacha20-poly1305, xchacha20-poly1305, aes256-gcm-siv, aes256-siv (deterministic).
    #[arg(long, default_value = "aes256-gcm")]
    algorithm: String,
}

#[derive(Args)]
struct KeysetFileArg {
    /// Keyset file (from `lockbox keygen`).
    #[arg(long, env = "LOCKBOX_KEYSET")]
    keyset: PathBuf,
}

#[derive(Args)]
struct EncryptArgs {
    /// Keyset file (from `lockbox keygen`).
    #[arg(long, env = "LOCKBOX_KEYSET", conflicts_with = "key")]
    keyset: Option<PathBuf>,
    /// Named key in the store or server (instead of --keyset).
    #[arg(long)]
    key: Option<String>,
    /// With --key: write Vault's `vault:vN:` format instead of the native `lbx1:`.
    #[arg(long, requires = "key")]
    vault_format: bool,
    /// Context bound to the ciphertext as associated data (tenant, table, column, row id...).
    #[arg(long, default_value = "")]
    context: String,
    /// Also store the context in the ciphertext header (in clear).
    #[arg(long)]
    store_context: bool,
    /// Store the creation time in the header.
    #[arg(long)]
    timestamp: bool,
}

#[derive(Args)]
struct DecryptArgs {
    /// Keyset file (from `lockbox keygen`).
    #[arg(long, env = "LOCKBOX_KEYSET", conflicts_with = "key")]
    keyset: Option<PathBuf>,
    /// Named key in the store or server (optional for lbx1: ciphertexts, which name their key).
    #[arg(long)]
    key: Option<String>,
    /// Decrypt with the store or server even without --key (lbx1: ciphertexts).
    #[arg(long)]
    remote: bool,
    /// The context given at encryption.
    #[arg(long, default_value = "")]
    context: String,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key.
    Create {
        /// Name.
        name: String,
        /// Type: aes256-gcm96 (default), aes128-gcm96, chacha20-poly1305, xchacha20-poly1305,
        /// aes256-gcm-siv, hmac, ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
        #[arg(long = "type", default_value = "aes256-gcm96")]
        key_type: String,
        /// Derive a key per request context.
        #[arg(long)]
        derived: bool,
        /// Convergent (deterministic) encryption; needs --derived.
        #[arg(long)]
        convergent: bool,
        /// Allow export of the key material.
        #[arg(long)]
        exportable: bool,
        /// Allow backups (the key leaves Lockbox inside the backup).
        #[arg(long)]
        allow_plaintext_backup: bool,
        /// Auto-rotation period: seconds or 30d, 12h, 90m (0 = never; default 30d).
        #[arg(long)]
        auto_rotate_period: Option<String>,
    },
    /// List keys.
    List,
    /// Show a key's metadata (never its material).
    Show {
        /// Name.
        name: String,
    },
    /// Rotate: a new version is used at once; old versions still decrypt.
    Rotate {
        /// Name.
        name: String,
    },
    /// Change a key's configuration.
    Config {
        /// Name.
        name: String,
        /// Minimum version that may decrypt.
        #[arg(long)]
        min_decryption_version: Option<u32>,
        /// Minimum version that may encrypt.
        #[arg(long)]
        min_encryption_version: Option<u32>,
        /// Allow deletion and destruction.
        #[arg(long)]
        deletion_allowed: Option<bool>,
        /// Allow export (cannot be undone).
        #[arg(long)]
        exportable: Option<bool>,
        /// Allow backups (cannot be undone).
        #[arg(long)]
        allow_plaintext_backup: Option<bool>,
        /// Auto-rotation period (seconds or 30d, 12h; 0 = never).
        #[arg(long)]
        auto_rotate_period: Option<String>,
    },
    /// Delete versions below a version for good.
    Trim {
        /// Name.
        name: String,
        /// Oldest version to keep.
        #[arg(long)]
        min_available_version: u32,
    },
    /// Soft-delete a key (needs deletion_allowed); `restore` brings it back.
    Delete {
        /// Name.
        name: String,
    },
    /// Restore a soft-deleted key.
    Restore {
        /// Name.
        name: String,
    },
    /// Destroy a key: wipe every version (crypto-shredding). Irreversible.
    Destroy {
        /// Name.
        name: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Export key material (needs exportable; public-key always works for signing keys).
    Export {
        /// Name.
        name: String,
        /// encryption-key, signing-key, hmac-key or public-key.
        #[arg(long = "type", default_value = "encryption-key")]
        kind: String,
        /// Only this version.
        #[arg(long)]
        version: Option<u32>,
    },
    /// Back a key up (needs allow_plaintext_backup); encrypted with a passphrase if given.
    Backup {
        /// Name.
        name: String,
        /// File holding the backup passphrase (at least 12 characters).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Import a key: raw bytes, a Fernet key, a Vault export, or a Lockbox backup.
    Import {
        /// Name of the new key (for --backup: defaults to the name in the backup).
        name: Option<String>,
        /// Key type for --raw.
        #[arg(long = "type", default_value = "aes256-gcm96")]
        key_type: String,
        /// File with the raw key bytes, base64.
        #[arg(long, group = "source")]
        raw: Option<PathBuf>,
        /// A Fernet key (URL-safe base64); LOCKBOX_FERNET_KEY also works.
        #[arg(long, group = "source", allow_hyphen_values = true)]
        fernet_key: Option<String>,
        /// File with the JSON of Vault's `GET transit/export/encryption-key/:name`.
        #[arg(long, group = "source")]
        vault_export: Option<PathBuf>,
        /// File with a backup from `lockbox keys backup`.
        #[arg(long, group = "source")]
        backup: Option<PathBuf>,
        /// Passphrase file for an encrypted backup.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// The Vault key was derived.
        #[arg(long)]
        derived: bool,
        /// The Vault key was convergent.
        #[arg(long)]
        convergent: bool,
        /// Allow export of the imported key.
        #[arg(long)]
        exportable: bool,
    },
}

#[derive(Subcommand)]
enum KeysetCommand {
    /// Print the keyset's metadata as JSON (never key material).
    Show(KeysetFileArg),
    /// Add a new version and make it primary; old versions still decrypt.
    Rotate {
        #[command(flatten)]
        file: KeysetFileArg,
        /// Algorithm of the new version (default: the current primary's).
        #[arg(long)]
        algorithm: Option<String>,
    },
    /// Set a version's state: active, decrypt-only, disabled, destroyed (irreversible).
    SetState {
        #[command(flatten)]
        file: KeysetFileArg,
        /// Version number.
        #[arg(long)]
        version: u32,
        /// New state.
        #[arg(long)]
        state: String,
    },
}

#[derive(Subcommand)]
enum FernetCommand {
    /// Print a new Fernet key (32 bytes, URL-safe base64).
    GenerateKey,
    /// Encrypt stdin to a Fernet token (one line on stdout).
    Encrypt {
        /// The Fernet key (or LOCKBOX_FERNET_KEY).
        #[arg(
            long,
            env = "LOCKBOX_FERNET_KEY",
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        key: String,
    },
    /// Decrypt a Fernet token from stdin with any of the keys (MultiFernet).
    Decrypt {
        /// Fernet keys, newest first; repeat the flag or separate with commas (or LOCKBOX_FERNET_KEYS).
        #[arg(
            long = "key",
            required = true,
            env = "LOCKBOX_FERNET_KEYS",
            value_delimiter = ',',
            hide_env_values = true,
            // URL-safe base64 keys may start with '-'.
            allow_hyphen_values = true
        )]
        keys: Vec<String>,
        /// Reject tokens older than this many seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Re-encrypt a token from stdin under the first key, keeping its timestamp.
    Rotate {
        /// Fernet keys, newest first.
        #[arg(
            long = "key",
            required = true,
            env = "LOCKBOX_FERNET_KEYS",
            value_delimiter = ',',
            hide_env_values = true,
            // URL-safe base64 keys may start with '-'.
            allow_hyphen_values = true
        )]
        keys: Vec<String>,
    },
}

/// A failure to report: message, an optional hint, exit code 1.
struct CliError {
    message: String,
    hint: Option<&'static str>,
}

impl CliError {
    fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
        }
    }
    fn hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        let hint = match &e {
            Error::AuthenticationFailed => {
                Some("wrong key or keyset, wrong --context, or the ciphertext was modified")
            }
            Error::UnknownPrefix { .. } => Some("the input is not a ciphertext of this kind"),
            Error::WrongKeyId { .. } => Some("decrypt with the keyset the value was encrypted with"),
            Error::UnknownKeyVersion(_) => {
                Some("the keyset file does not have that version: is it an older copy?")
            }
            Error::TokenExpired => Some("the token is older than --ttl"),
            Error::InvalidKey(_) => {
                Some("a Fernet key is 32 random bytes in URL-safe base64 (44 characters); make one with `lockbox fernet generate-key`")
            }
            _ => None,
        };
        CliError {
            message: e.to_string(),
            hint,
        }
    }
}

type CliResult<T> = Result<T, CliError>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => return serve::run(*a, &cli.global),
        c => run(c, &cli.global),
    };
    match result {
        Ok(out) => {
            let mut stdout = io::stdout().lock();
            if stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut stderr = io::stderr().lock();
            let _ = writeln!(stderr, "lockbox: error: {}", e.message);
            if let Some(h) = e.hint {
                let _ = writeln!(stderr, "lockbox: hint: {h}");
            }
            ExitCode::from(1)
        }
    }
}

/// Runs one command and returns what goes to stdout (written only on success).
fn target_args(g: &Global) -> TargetArgs {
    TargetArgs {
        store: g.store.clone(),
        addr: g.addr.clone(),
        token: g.token.clone(),
        master_key_file: g.master_key_file.clone(),
    }
}

/// Run an async command on a fresh runtime.
fn block_on<T>(f: impl std::future::Future<Output = CliResult<T>>) -> CliResult<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))?
        .block_on(f)
}

fn run(command: Command, g: &Global) -> CliResult<Vec<u8>> {
    match command {
        Command::Serve(_) => Err(CliError::new("internal: serve is dispatched in main")),
        Command::Init { shares, threshold } => block_on(async {
            let t = Target::open(&target_args(g), false).await?;
            let (keys, token) = t.init(shares, threshold).await?;
            if g.json {
                return json_line(&serde_json::json!({"keys": keys, "root_token": token}));
            }
            let mut out = String::new();
            for (i, k) in keys.iter().enumerate() {
                out.push_str(&format!("Unseal share {}: {k}\n", i + 1));
            }
            out.push_str(&format!("\nRoot token: {token}\n\n"));
            out.push_str(&format!(
                "These are shown once. Store each share with a different person; {threshold} of {shares} unseal Lockbox.\n"
            ));
            Ok(out.into_bytes())
        }),
        Command::Unseal { share, reset } => block_on(async {
            let t = Target::open(&target_args(g), false).await?;
            let share = match (&share, reset) {
                (_, true) => None,
                (Some(s), false) => Some(s.clone()),
                (None, false) => Some(read_token()?),
            };
            let v = t.unseal(share.as_deref(), reset).await?;
            if g.json {
                return json_line(&v);
            }
            Ok(line(format!(
                "sealed: {}  progress: {}/{}",
                v["sealed"], v["progress"], v["t"]
            )))
        }),
        Command::Seal => block_on(async {
            Target::open(&target_args(g), false).await?.seal().await?;
            Ok(line("sealed".into()))
        }),
        Command::Status => block_on(async {
            let v = Target::open(&target_args(g), true).await?.status().await?;
            json_line(&v)
        }),
        Command::KeygenMaster => {
            let k = lockbox::SecretBytes::random(32)?;
            Ok(line(lockbox::encoding::b64_encode(k.expose_secret())))
        }
        Command::Keys(k) => block_on(keys_cmd(k, g)),
        Command::Rewrap { key, context } => block_on(async {
            let t = Target::open(&target_args(g), true).await?;
            let token = read_token()?;
            let out = t.rewrap(&key, &token, context.as_bytes()).await?;
            t.finish().await;
            if g.json {
                return json_line(&serde_json::json!({"ciphertext": out}));
            }
            Ok(line(out))
        }),
        Command::Keygen(a) => keygen(&a),
        Command::Encrypt(a) if a.key.is_some() => block_on(async {
            let t = Target::open(&target_args(g), true).await?;
            let input = zeroize::Zeroizing::new(read_stdin()?);
            let name = a.key.clone().unwrap_or_default();
            let out = t
                .encrypt(&name, &input, a.context.as_bytes(), !a.vault_format)
                .await?;
            t.finish().await;
            if g.json {
                return json_line(&serde_json::json!({"ciphertext": out}));
            }
            Ok(line(out))
        }),
        Command::Decrypt(a) if a.key.is_some() || a.remote => block_on(async {
            let t = Target::open(&target_args(g), true).await?;
            let token = read_token()?;
            let out = t
                .decrypt(a.key.as_deref(), &token, a.context.as_bytes())
                .await?;
            t.finish().await;
            if g.json {
                // JSON cannot carry arbitrary bytes: the plaintext is base64.
                return json_line(
                    &serde_json::json!({"plaintext": lockbox::encoding::b64_encode(&out)}),
                );
            }
            Ok(out)
        }),
        Command::Encrypt(a) => {
            let ks = load_keyset(&keyset_path(a.keyset.as_deref())?)?;
            let input = read_stdin()?;
            let opts = EncryptOptions {
                context: a.context.as_bytes(),
                store_context: a.store_context,
                timestamp: a.timestamp.then(lockbox::keyset::now_unix),
            };
            Ok(line(ks.encrypt_with(&input, &opts)?))
        }
        Command::Decrypt(a) => {
            let ks = load_keyset(&keyset_path(a.keyset.as_deref())?)?;
            let token = read_token()?;
            Ok(ks.decrypt(&token, a.context.as_bytes())?)
        }
        Command::Inspect => inspect(&read_token()?),
        Command::Keyset(k) => keyset_cmd(k),
        Command::Fernet(f) => fernet_cmd(f),
        Command::Policy(c) => access::policy_cmd(c, g),
        Command::Token(c) => access::token_cmd(c, g),
        Command::Audit(c) => observe::audit_cmd(c, g),
        Command::Webhook(c) => observe::webhook_cmd(c),
        Command::Tls(c) => observe::tls_cmd(c, g),
        Command::Envelope(e) => envelope::run(e, g),
        Command::Reencrypt(r) => reencrypt::run(r, g),
    }
}

fn keyset_path(p: Option<&Path>) -> CliResult<PathBuf> {
    p.map(Path::to_path_buf).ok_or_else(|| {
        CliError::new("say which key: --keyset FILE, or --key NAME with --store URL or --addr URL")
    })
}

/// Seconds from `3600`, `30d`, `12h`, `90m`, `45s`.
fn parse_period(s: &str) -> CliResult<i64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('d') => (&s[..s.len() - 1], 86_400),
        Some('h') => (&s[..s.len() - 1], 3_600),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('s') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    num.parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            CliError::new(format!(
                "invalid period {s:?}: use seconds or 30d, 12h, 90m"
            ))
        })
}

fn read_secret_file(path: &Path, what: &str) -> CliResult<zeroize::Zeroizing<String>> {
    let s = fs::read_to_string(path)
        .map_err(|e| CliError::new(format!("cannot read {what} {}: {e}", path.display())))?;
    Ok(zeroize::Zeroizing::new(
        s.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

async fn keys_cmd(k: KeysCommand, g: &Global) -> CliResult<Vec<u8>> {
    let t = Target::open(&target_args(g), true).await?;
    let out = match k {
        KeysCommand::Create {
            name,
            key_type,
            derived,
            convergent,
            exportable,
            allow_plaintext_backup,
            auto_rotate_period,
        } => {
            let opts = CreateOptions {
                key_type: Some(key_type),
                derived,
                convergent_encryption: convergent,
                exportable,
                allow_plaintext_backup,
                auto_rotate_period: auto_rotate_period
                    .as_deref()
                    .map(parse_period)
                    .transpose()?,
            };
            t.create(&name, &opts).await?;
            line(format!("created key {name}"))
        }
        KeysCommand::List => {
            let names = t.list().await?;
            if g.json {
                json_line(&serde_json::json!(names))?
            } else {
                names
                    .into_iter()
                    .map(|n| n + "\n")
                    .collect::<String>()
                    .into_bytes()
            }
        }
        KeysCommand::Show { name } => {
            let v = t.show(&name).await?;
            if g.json {
                json_line(&v)?
            } else {
                let mut out = String::new();
                if let Some(m) = v.as_object() {
                    for (k, val) in m {
                        out.push_str(&format!(
                            "{k:<24} {}\n",
                            match val {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            }
                        ));
                    }
                }
                out.into_bytes()
            }
        }
        KeysCommand::Rotate { name } => {
            t.rotate(&name).await?;
            let v = t.show(&name).await?;
            line(format!(
                "rotated {name}: latest version {}",
                v["latest_version"]
            ))
        }
        KeysCommand::Config {
            name,
            min_decryption_version,
            min_encryption_version,
            deletion_allowed,
            exportable,
            allow_plaintext_backup,
            auto_rotate_period,
        } => {
            let period = auto_rotate_period
                .as_deref()
                .map(parse_period)
                .transpose()?;
            let upd = ConfigUpdate {
                min_decryption_version,
                min_encryption_version,
                deletion_allowed,
                exportable,
                allow_plaintext_backup,
                auto_rotate_period: period,
            };
            let mut body = serde_json::Map::new();
            if let Some(v) = min_decryption_version {
                body.insert("min_decryption_version".into(), v.into());
            }
            if let Some(v) = min_encryption_version {
                body.insert("min_encryption_version".into(), v.into());
            }
            if let Some(v) = deletion_allowed {
                body.insert("deletion_allowed".into(), v.into());
            }
            if let Some(v) = exportable {
                body.insert("exportable".into(), v.into());
            }
            if let Some(v) = allow_plaintext_backup {
                body.insert("allow_plaintext_backup".into(), v.into());
            }
            if let Some(v) = period {
                body.insert("auto_rotate_period".into(), v.into());
            }
            t.config(&name, &upd, serde_json::Value::Object(body))
                .await?;
            line(format!("configured {name}"))
        }
        KeysCommand::Trim {
            name,
            min_available_version,
        } => {
            t.trim(&name, min_available_version).await?;
            line(format!(
                "trimmed {name} below version {min_available_version}"
            ))
        }
        KeysCommand::Delete { name } => {
            t.delete(&name).await?;
            line(format!(
                "deleted {name} (restore with `lockbox keys restore {name}`)"
            ))
        }
        KeysCommand::Restore { name } => {
            t.restore(&name).await?;
            line(format!("restored {name}"))
        }
        KeysCommand::Destroy { name, yes } => {
            if !yes {
                return Err(CliError::new(format!(
                    "destroying {name} makes everything it encrypted unrecoverable"
                ))
                .hint("add --yes to confirm"));
            }
            let by = std::env::var("USER").unwrap_or_else(|_| "cli".into());
            t.destroy(&name, &format!("cli:{by}")).await?;
            line(format!("destroyed {name}: its data is now unrecoverable"))
        }
        KeysCommand::Export {
            name,
            kind,
            version,
        } => {
            let m = t.export(&name, &kind, version).await?;
            let key_type = t.show(&name).await?["type"].clone();
            // The shape of Vault's export response, so it imports anywhere.
            json_line(&serde_json::json!({"name": name, "type": key_type, "keys": m}))?
        }
        KeysCommand::Backup {
            name,
            passphrase_file,
        } => {
            let p = passphrase_file
                .as_deref()
                .map(|f| read_secret_file(f, "passphrase file"))
                .transpose()?;
            line(t.backup(&name, p.as_ref().map(|p| p.as_bytes())).await?)
        }
        KeysCommand::Import {
            name,
            key_type,
            raw,
            fernet_key,
            vault_export,
            backup,
            passphrase_file,
            derived,
            convergent,
            exportable,
        } => {
            if let Some(path) = backup {
                let blob = read_secret_file(&path, "backup file")?;
                let p = passphrase_file
                    .as_deref()
                    .map(|f| read_secret_file(f, "passphrase file"))
                    .transpose()?;
                let n = t
                    .restore_backup(&blob, p.as_ref().map(|p| p.as_bytes()), name.as_deref())
                    .await?;
                return Ok(line(format!("restored backup as key {n}")));
            }
            let name = name.ok_or_else(|| CliError::new("give the new key's name"))?;
            let (kt, versions): (KeyType, Vec<(u32, lockbox::SecretBytes)>) = if let Some(path) =
                raw
            {
                let text = read_secret_file(&path, "raw key file")?;
                let bytes = lockbox::encoding::b64_decode(text.trim()).map_err(|_| {
                    CliError::new("raw key file must hold the key as standard base64")
                })?;
                (
                    key_type.parse()?,
                    vec![(1, lockbox::SecretBytes::new(bytes))],
                )
            } else if let Some(k) = fernet_key.or_else(|| std::env::var("LOCKBOX_FERNET_KEY").ok())
            {
                let fk = FernetKey::from_base64(k.trim())?;
                let bytes = lockbox::encoding::b64url_pad_decode(&fk.expose_base64())?;
                (KeyType::Fernet, vec![(1, lockbox::SecretBytes::new(bytes))])
            } else if let Some(path) = vault_export {
                let text = read_secret_file(&path, "Vault export file")?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| CliError::new(format!("Vault export file is not JSON: {e}")))?;
                let data = if v.get("data").is_some() {
                    &v["data"]
                } else {
                    &v
                };
                let keys = data["keys"]
                    .as_object()
                    .ok_or_else(|| CliError::new("Vault export has no \"keys\" object"))?;
                let kt: KeyType = data["type"].as_str().unwrap_or(&key_type).parse()?;
                let mut versions = Vec::new();
                for (ver, k) in keys {
                    let n: u32 = ver
                        .parse()
                        .map_err(|_| CliError::new(format!("Vault export: bad version {ver:?}")))?;
                    let b = lockbox::encoding::b64_decode(k.as_str().unwrap_or_default()).map_err(
                        |_| CliError::new(format!("Vault export: version {n} is not base64")),
                    )?;
                    versions.push((n, lockbox::SecretBytes::new(b)));
                }
                (kt, versions)
            } else {
                return Err(CliError::new("say what to import: --raw FILE, --fernet-key KEY, --vault-export FILE or --backup FILE"));
            };
            t.import(
                &name,
                ImportSpec {
                    key_type: kt,
                    versions,
                    derived,
                    convergent_encryption: convergent,
                    exportable,
                    allow_plaintext_backup: false,
                },
            )
            .await?;
            line(format!("imported key {name} ({kt})"))
        }
    };
    t.finish().await;
    Ok(out)
}

fn line(mut s: String) -> Vec<u8> {
    s.push('\n');
    s.into_bytes()
}

fn read_stdin() -> CliResult<Vec<u8>> {
    let mut buf = Vec::new();
    io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| CliError::new(format!("cannot read stdin: {e}")))?;
    Ok(buf)
}

/// A token from stdin: UTF-8, surrounding whitespace (the newline `encrypt` wrote) removed.
fn read_token() -> CliResult<String> {
    let buf = read_stdin()?;
    let s = String::from_utf8(buf)
        .map_err(|_| CliError::new("stdin is not a token: it is not UTF-8 text"))?;
    let t = s.trim();
    if t.is_empty() {
        return Err(CliError::new("stdin is empty: expected a token")
            .hint("pipe the output of `lockbox encrypt` (or a token) into this command"));
    }
    Ok(t.to_owned())
}

fn parse_algorithm(name: &str) -> CliResult<Algorithm> {
    name.parse::<Algorithm>().map_err(|_| {
        CliError::new(format!("unknown algorithm {name:?}")).hint(
            "use aes256-gcm, chacha20-poly1305, xchacha20-poly1305, aes256-gcm-siv or aes256-siv",
        )
    })
}

fn keygen(a: &KeygenArgs) -> CliResult<Vec<u8>> {
    let alg = parse_algorithm(&a.algorithm)?;
    let ks = Keyset::generate(&a.name, alg)?;
    write_keyset(&a.out, &ks, true)?;
    Ok(line(format!(
        "wrote keyset {:?} (key id {:08x}, version 1, {alg}) to {}",
        ks.name(),
        ks.key_id(),
        a.out.display()
    )))
}

fn load_keyset(path: &Path) -> CliResult<Keyset> {
    let text = fs::read_to_string(path).map_err(|e| {
        CliError::new(format!("cannot read keyset file {}: {e}", path.display()))
            .hint("create one with `lockbox keygen --out FILE`")
    })?;
    let text = zeroize::Zeroizing::new(text);
    Keyset::from_json(&text).map_err(|e| CliError::new(format!("{}: {e}", path.display())))
}

/// Write a keyset file with mode 0600. `create_new` refuses to overwrite;
/// otherwise the file is replaced atomically (write to a temporary, rename).
fn write_keyset(path: &Path, ks: &Keyset, create_new: bool) -> CliResult<()> {
    let json = zeroize::Zeroizing::new(ks.to_json()?);
    let target = if create_new {
        path.to_path_buf()
    } else {
        let mut t = path.as_os_str().to_owned();
        t.push(".tmp");
        PathBuf::from(t)
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true);
    if create_new {
        opts.create_new(true);
    } else {
        opts.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let io_err = |e: io::Error| {
        let mut err = CliError::new(format!("cannot write {}: {e}", target.display()));
        if e.kind() == io::ErrorKind::AlreadyExists {
            err = err.hint("refusing to overwrite an existing keyset: choose another --out");
        }
        err
    };
    let mut f = opts.open(&target).map_err(io_err)?;
    f.write_all(json.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(io_err)?;
    if !create_new {
        fs::rename(&target, path).map_err(io_err)?;
    }
    Ok(())
}

fn keyset_metadata(ks: &Keyset) -> serde_json::Value {
    let versions: Vec<_> = ks
        .versions()
        .map(|v| {
            serde_json::json!({
                "version": v.version(),
                "id": format!("{:08x}:{}", ks.key_id(), v.version()),
                "algorithm": v.algorithm().name(),
                "state": v.state().name(),
                "created_at": v.created_at(),
            })
        })
        .collect();
    serde_json::json!({
        "name": ks.name(),
        "key_id": format!("{:08x}", ks.key_id()),
        "primary_version": ks.primary_version(),
        "versions": versions,
    })
}

fn json_line(v: &serde_json::Value) -> CliResult<Vec<u8>> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::new(format!("json: {e}")))?;
    Ok(line(s))
}

fn keyset_cmd(k: KeysetCommand) -> CliResult<Vec<u8>> {
    match k {
        KeysetCommand::Show(f) => json_line(&keyset_metadata(&load_keyset(&f.keyset)?)),
        KeysetCommand::Rotate { file, algorithm } => {
            let mut ks = load_keyset(&file.keyset)?;
            let alg = match algorithm {
                Some(a) => parse_algorithm(&a)?,
                None => ks.primary()?.algorithm(),
            };
            ks.rotate(alg)?;
            write_keyset(&file.keyset, &ks, false)?;
            json_line(&keyset_metadata(&ks))
        }
        KeysetCommand::SetState {
            file,
            version,
            state,
        } => {
            let mut ks = load_keyset(&file.keyset)?;
            let st: KeyState = state.parse()?;
            ks.set_state(version, st)?;
            write_keyset(&file.keyset, &ks, false)?;
            json_line(&keyset_metadata(&ks))
        }
    }
}

fn inspect(token: &str) -> CliResult<Vec<u8>> {
    let v = if lockbox::is_encrypted(token) {
        let h = lockbox::native::inspect_text(token)?;
        serde_json::json!({
            "format": "lockbox",
            "algorithm": h.algorithm.name(),
            "key_id": format!("{:08x}", h.key_id),
            "key_version": h.key_version,
            "timestamp": h.timestamp,
            "context_stored": h.context.is_some(),
        })
    } else if lockbox::vault::is_vault_ciphertext(token) {
        let (version, _) = lockbox::vault::parse(token)?;
        serde_json::json!({"format": "vault", "key_version": version})
    } else if lockbox::fernet::is_fernet_token(token) {
        serde_json::json!({"format": "fernet"})
    } else {
        return Err(CliError::new(
            "not a recognised ciphertext (lockbox lbx1:, vault:vN:, or Fernet)",
        ));
    };
    json_line(&v)
}

fn fernet_keys(keys: &[String]) -> CliResult<Vec<FernetKey>> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            FernetKey::from_base64(k.trim())
                .map_err(|e| CliError::from(e).message_prefix(&format!("--key #{}: ", i + 1)))
        })
        .collect()
}

impl CliError {
    fn message_prefix(mut self, p: &str) -> Self {
        self.message.insert_str(0, p);
        self
    }
}

fn fernet_cmd(f: FernetCommand) -> CliResult<Vec<u8>> {
    match f {
        FernetCommand::GenerateKey => Ok(line(Fernet::generate_key()?.expose_base64())),
        FernetCommand::Encrypt { key } => {
            let keys = fernet_keys(std::slice::from_ref(&key))?;
            let input = read_stdin()?;
            let mf = MultiFernet::new(keys)?;
            Ok(line(mf.encrypt(&input)?))
        }
        FernetCommand::Decrypt { keys, ttl } => {
            let mf = MultiFernet::new(fernet_keys(&keys)?)?;
            Ok(mf.decrypt(&read_token()?, ttl)?)
        }
        FernetCommand::Rotate { keys } => {
            let mf = MultiFernet::new(fernet_keys(&keys)?)?;
            Ok(line(mf.rotate(&read_token()?)?))
        }
    }
}
