//! The `lockbox` command-line tool.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lockbox::fernet::{Fernet, FernetKey, MultiFernet};
use lockbox::{Algorithm, EncryptOptions, Error, KeyState, Keyset};

/// Application-level encryption and key management.
#[derive(Parser)]
#[command(name = "lockbox", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    #[command(flatten)]
    file: KeysetFileArg,
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
    #[command(flatten)]
    file: KeysetFileArg,
    /// The context given at encryption.
    #[arg(long, default_value = "")]
    context: String,
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
        #[arg(long, env = "LOCKBOX_FERNET_KEY", hide_env_values = true)]
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
            hide_env_values = true
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
            hide_env_values = true
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
    match run(cli.command) {
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
fn run(command: Command) -> CliResult<Vec<u8>> {
    match command {
        Command::Keygen(a) => keygen(&a),
        Command::Encrypt(a) => {
            let ks = load_keyset(&a.file.keyset)?;
            let input = read_stdin()?;
            let opts = EncryptOptions {
                context: a.context.as_bytes(),
                store_context: a.store_context,
                timestamp: a.timestamp.then(lockbox::keyset::now_unix),
            };
            Ok(line(ks.encrypt_with(&input, &opts)?))
        }
        Command::Decrypt(a) => {
            let ks = load_keyset(&a.file.keyset)?;
            let token = read_token()?;
            Ok(ks.decrypt(&token, a.context.as_bytes())?)
        }
        Command::Inspect => inspect(&read_token()?),
        Command::Keyset(k) => keyset_cmd(k),
        Command::Fernet(f) => fernet_cmd(f),
    }
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
