//! `lockbox serve`: the server process, with dev mode and production checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use lockbox_core::rootkey::RootKey;
use lockbox_engine::{Engine, EngineConfig};
use lockbox_server::ServerConfig;

use crate::target::{check_key_file_mode, open_local, redact_url, root_key_from_env};
use crate::{CliError, Global};

/// Options of `lockbox serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Development server: temporary store, unsealed, root token printed once.
    #[arg(long)]
    dev: bool,
    /// Use this root token in dev mode instead of a random one.
    #[arg(long, requires = "dev")]
    dev_root_token: Option<String>,
    /// Address to listen on (default: the host:port of --addr / LOCKBOX_ADDR, else 127.0.0.1:8200).
    #[arg(long = "listen", env = "LOCKBOX_LISTEN")]
    listen: Option<SocketAddr>,
    /// Production mode (also LOCKBOX_ENV=production): refuse insecure settings.
    #[arg(long)]
    production: bool,
    /// Seconds between auto-rotation checks.
    #[arg(long, default_value_t = 60)]
    rotation_check_seconds: u64,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, default_value_t = 32 << 20)]
    max_body_bytes: usize,
    /// Most items in one batch_input.
    #[arg(long, default_value_t = 10_000)]
    max_batch_items: usize,
    /// Deepest JSON nesting accepted.
    #[arg(long, default_value_t = 32)]
    max_json_depth: usize,
    /// Time a client has to send a request's line and headers (from the
    /// connection, or from the first byte of a kept-alive connection's next
    /// request); slower clients are disconnected.
    #[arg(
        long,
        env = "LOCKBOX_HEADER_READ_TIMEOUT",
        default_value = "10s",
        value_parser = positive_duration
    )]
    header_read_timeout: Duration,
    /// Close a kept-alive connection after this long with no request (keep it
    /// above a load balancer's own idle timeout).
    #[arg(
        long,
        env = "LOCKBOX_IDLE_TIMEOUT",
        default_value = "75s",
        value_parser = positive_duration
    )]
    idle_timeout: Duration,
    /// The most one request may take, its body included; past it the client
    /// gets a JSON 503 and the connection is closed.
    #[arg(
        long,
        env = "LOCKBOX_REQUEST_TIMEOUT",
        default_value = "90s",
        value_parser = positive_duration
    )]
    request_timeout: Duration,
    /// The most a TLS handshake may take.
    #[arg(
        long,
        env = "LOCKBOX_TLS_HANDSHAKE_TIMEOUT",
        default_value = "10s",
        value_parser = positive_duration
    )]
    tls_handshake_timeout: Duration,
    /// Most connections open at once (TLS handshakes included); beyond it new
    /// connections are closed at once. Lowered to fit the open-file limit.
    #[arg(
        long,
        env = "LOCKBOX_MAX_CONNECTIONS",
        default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_connections: u32,
    /// Most connections open at once from one client address (behind a
    /// proxy every client shares its address: raise it there).
    #[arg(
        long,
        env = "LOCKBOX_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_connections_per_address: u32,
    /// Requests per second per token (0 = unlimited); over it: 429.
    #[arg(long, default_value_t = 0)]
    token_rate_limit: u32,
    /// The longest any token but the root token may live, from its creation
    /// (e.g. 768h, 30d; at most 100 years): longer TTLs and renewals are capped.
    #[arg(long, env = "LOCKBOX_MAX_TOKEN_TTL", default_value = "768h")]
    max_token_ttl: String,
    /// Requests per second from one client address without a valid token
    /// (0 = unlimited); over it: 429 and no audit entry (valid tokens are served as usual).
    #[arg(
        long,
        env = "LOCKBOX_UNAUTHENTICATED_RATE_LIMIT",
        default_value_t = 100
    )]
    unauthenticated_rate_limit: u32,
    /// Audit log file (JSON lines, chained and sealed).
    #[arg(long, env = "LOCKBOX_AUDIT_FILE")]
    audit_file: Option<PathBuf>,
    /// Rotate the audit file past this size (e.g. 100M, 1G; 0 = never).
    #[arg(long, default_value = "0")]
    audit_file_max_size: String,
    /// Rotate the audit file after this long (e.g. 24h; 0 = never).
    #[arg(long, default_value = "0")]
    audit_file_max_age: String,
    /// Also write audit entries to stdout.
    #[arg(long)]
    audit_stdout: bool,
    /// Also keep audit entries in the store (for `lockbox audit query`).
    #[arg(long)]
    audit_store: bool,
    /// Let requests proceed when their audit entry cannot be written
    /// (default: refuse them, fail closed).
    #[arg(long)]
    audit_fail_open: bool,
    /// Most audit entries waiting to be written; beyond it entries are dropped and counted
    /// (--audit-fail-open) or their requests refused with 503 (fail closed).
    #[arg(long, default_value_t = 4096)]
    audit_queue: usize,
    /// POST events (rotations, failures, expiring certificates...) to this URL.
    #[arg(long, env = "LOCKBOX_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// File holding the webhook signing secret (required with --webhook-url).
    #[arg(long, requires = "webhook_url")]
    webhook_secret_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (reloaded on SIGHUP or change).
    #[arg(long, env = "LOCKBOX_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, env = "LOCKBOX_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle for client certificates (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Client certificates: off, optional or required (default: required with --tls-client-ca).
    #[arg(long, requires = "tls_client_ca")]
    tls_client_auth: Option<String>,
    /// Auto-unseal: an `lbxe1:` envelope of the master key (context
    /// purpose=lockbox-root-key), unwrapped at start by the provider below.
    #[arg(long, env = "LOCKBOX_AUTO_UNSEAL", conflicts_with = "dev")]
    auto_unseal: Option<PathBuf>,
    /// Auto-unseal with this AWS KMS key (region, endpoint, credentials from the AWS environment).
    #[arg(
        long,
        env = "LOCKBOX_AUTO_UNSEAL_AWS_KMS_KEY",
        requires = "auto_unseal"
    )]
    auto_unseal_aws_kms_key: Option<String>,
    /// Auto-unseal with a Transit key (Vault or Lockbox) at this address; the
    /// token comes from LOCKBOX_AUTO_UNSEAL_TRANSIT_TOKEN.
    #[arg(long, env = "LOCKBOX_AUTO_UNSEAL_TRANSIT_ADDR", requires_all = ["auto_unseal", "auto_unseal_transit_key"])]
    auto_unseal_transit_addr: Option<String>,
    /// The Transit key (a `derived` key on the `transit` mount) for auto-unseal.
    #[arg(
        long,
        env = "LOCKBOX_AUTO_UNSEAL_TRANSIT_KEY",
        requires = "auto_unseal_transit_addr"
    )]
    auto_unseal_transit_key: Option<String>,
}

/// A duration flag (`10s`, `1m30s`, `500ms`): humantime's syntax, more than zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (write e.g. 10s, 1m30s or 500ms)")),
    }
}

/// File descriptors kept for everything but client connections: the store's
/// pool, audit files, outgoing HTTP (webhooks, KMS), certificate reloads,
/// the runtime, and a connection accepted only to be closed at the limit.
const FD_RESERVE: u64 = 256;

/// Raises the open-file soft limit to the hard limit (as Go's runtime does
/// at start) and returns the connection limit that fits under it, lowered
/// with a warning if `wanted` does not.
fn fit_connections(wanted: u32) -> usize {
    let wanted = wanted as usize;
    let Ok(limit) = rlimit::increase_nofile_limit(u64::MAX) else {
        return wanted;
    };
    let room = usize::try_from(limit.saturating_sub(FD_RESERVE))
        .unwrap_or(usize::MAX)
        .max(1);
    if wanted > room {
        eprintln!(
            "lockbox: warning: the open-file limit is {limit}: --max-connections lowered \
             from {wanted} to {room} ({FD_RESERVE} descriptors kept for the store, files \
             and outgoing connections); raise the hard limit (ulimit -Hn, systemd's \
             LimitNOFILE=) to allow more"
        );
        return room;
    }
    wanted
}

/// Why the bytes of a master key do not look like 32 uniformly random bytes
/// (None: they may be). Production demands a generated key (`lockbox
/// keygen-master`), not one an operator made up. Three plain tests, each of
/// which 32 random bytes fail with negligible probability:
/// - a repetition of a pattern of 16 bytes or fewer (e.g. `abab...`):
///   at most 16 x 2^-128;
/// - all bytes printable ASCII, i.e. a password or passphrase encoded as a
///   key: (95/256)^32, about 2^-45;
/// - fewer than 16 distinct byte values (32 random bytes have about 30):
///   about 2^-54.
fn master_key_weakness(key: &[u8]) -> Option<String> {
    if let Some(p) =
        (1..=16).find(|&p| key.len() > p && (p..key.len()).all(|i| key[i] == key[i - p]))
    {
        return Some(format!("it repeats a {p}-byte pattern"));
    }
    if key.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Some(
            "its bytes are all printable text: a password or passphrase, not random bytes".into(),
        );
    }
    let mut seen = [false; 256];
    for b in key {
        seen[usize::from(*b)] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    if distinct < 16 {
        return Some(format!(
            "it has only {distinct} distinct byte values (random keys have about 30)"
        ));
    }
    None
}

/// [`master_key_weakness`] as a production refusal, naming the fix.
fn check_master_key_strength(root: Option<RootKey>, source: &str) -> Result<(), String> {
    let Some(root) = root else {
        return Ok(());
    };
    match master_key_weakness(root.expose_secret().expose_secret()) {
        None => Ok(()),
        Some(why) => Err(format!(
            "{source} is not a random key: {why}. Production needs 32 uniformly random bytes: \
             use a key from `lockbox keygen-master` (for a store already sealed under this key, \
             back up its keys and restore them into a store made with the new one)"
        )),
    }
}

/// Whether a store URL names an in-memory database (lost at exit).
fn is_memory_store(url: &str) -> bool {
    let u = url.trim().to_ascii_lowercase();
    u.strip_prefix("sqlite:").is_some_and(|rest| {
        rest.trim_start_matches('/').starts_with(":memory:") || rest.contains("mode=memory")
    })
}

fn tls_config(a: &ServeArgs) -> Result<Option<lockbox_server::tls::TlsConfig>, CliError> {
    use lockbox_server::tls::ClientAuth;
    let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) else {
        return Ok(None);
    };
    let client_auth = match (a.tls_client_auth.as_deref(), &a.tls_client_ca) {
        (None, None) | (Some("off"), _) => ClientAuth::Off,
        (None | Some("required"), Some(_)) => ClientAuth::Required,
        (Some("optional"), Some(_)) => ClientAuth::Optional,
        (Some(other), _) => {
            return Err(CliError::new(format!(
                "--tls-client-auth {other:?}: use off, optional or required"
            )))
        }
    };
    Ok(Some(lockbox_server::tls::TlsConfig {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: a.tls_client_ca.clone(),
        client_auth,
        watch_interval: std::time::Duration::from_secs(2),
    }))
}

/// Bytes from `1048576`, `100K`, `100M`, `1G`.
fn parse_size(s: &str) -> Result<u64, CliError> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| CliError::new(format!("invalid size {s:?}: use bytes or 100K, 100M, 1G")))
}

fn audit_config(a: &ServeArgs) -> Result<lockbox_server::audit::AuditConfig, CliError> {
    Ok(lockbox_server::audit::AuditConfig {
        file: a.audit_file.clone(),
        file_max_bytes: parse_size(&a.audit_file_max_size)?,
        file_max_age: std::time::Duration::from_secs(
            u64::try_from(crate::parse_period(&a.audit_file_max_age)?).unwrap_or(0),
        ),
        stdout: a.audit_stdout,
        store: a.audit_store,
        fail_open: a.audit_fail_open,
        queue: a.audit_queue.max(1),
        timeout: std::time::Duration::from_secs(5),
    })
}

fn webhook_config(
    a: &ServeArgs,
) -> Result<Option<lockbox_server::events::WebhookConfig>, CliError> {
    let Some(url) = &a.webhook_url else {
        return Ok(None);
    };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(CliError::new(
            "--webhook-url must be an http:// or https:// URL",
        ));
    }
    let file = a
        .webhook_secret_file
        .as_deref()
        .ok_or_else(|| CliError::new("--webhook-url needs --webhook-secret-file"))?;
    let secret = crate::read_secret_file(file, "webhook secret")?;
    if secret.len() < 16 {
        return Err(CliError::new(
            "the webhook secret must be at least 16 characters",
        ));
    }
    Ok(Some(lockbox_server::events::WebhookConfig {
        url: url.clone(),
        secret: lockbox_core::SecretBytes::from_slice(secret.as_bytes()),
        attempts: 5,
        backoff: std::time::Duration::from_millis(200),
    }))
}

/// The context an auto-unseal envelope must carry.
pub(crate) const ROOT_KEY_PURPOSE: (&str, &str) = ("purpose", "lockbox-root-key");

/// Unwrap the master key from the auto-unseal envelope with the configured
/// provider (held by AWS KMS or a Transit server, as Vault's auto-unseal).
async fn auto_unseal_root(a: &ServeArgs, file: &std::path::Path) -> Result<RootKey, CliError> {
    use std::sync::Arc;
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::new(format!(
            "cannot read auto-unseal file {}: {e}",
            file.display()
        ))
    })?;
    let mut providers: Vec<Arc<dyn lockbox_kms::Provider>> = Vec::new();
    if let Some(k) = &a.auto_unseal_aws_kms_key {
        providers.push(Arc::new(lockbox_kms::AwsKmsProvider::new(
            lockbox_kms::AwsKmsConfig::from_env(k)?,
        )?));
    }
    if let (Some(addr), Some(key)) = (&a.auto_unseal_transit_addr, &a.auto_unseal_transit_key) {
        let token = zeroize::Zeroizing::new(
            std::env::var("LOCKBOX_AUTO_UNSEAL_TRANSIT_TOKEN").map_err(|_| {
                CliError::new("auto-unseal with Transit needs LOCKBOX_AUTO_UNSEAL_TRANSIT_TOKEN")
            })?,
        );
        providers.push(Arc::new(lockbox_kms::VaultTransitProvider::new(
            lockbox_kms::VaultTransitConfig::new(addr, &token, key),
        )?));
    }
    if providers.is_empty() {
        return Err(CliError::new("--auto-unseal needs a provider")
            .hint("give --auto-unseal-aws-kms-key or --auto-unseal-transit-addr with --auto-unseal-transit-key"));
    }
    let ctx: lockbox_kms::Context = [ROOT_KEY_PURPOSE]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let (pt, _) = lockbox_kms::Envelope::new(providers)?
        .decrypt("", text.trim(), Some(&ctx))
        .await?;
    let pt = zeroize::Zeroizing::new(pt);
    let s = std::str::from_utf8(&pt)
        .map_err(|_| CliError::new("the auto-unseal envelope does not hold a master key"))?;
    RootKey::parse_master_key(s).map_err(|e| CliError::new(format!("auto-unseal envelope: {e}")))
}

/// Where to listen: --listen, else the host:port of --addr, else 127.0.0.1:8200.
fn listen_addr(a: &ServeArgs, g: &Global) -> Result<SocketAddr, CliError> {
    if let Some(l) = a.listen {
        return Ok(l);
    }
    match &g.addr {
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 8200))),
        Some(addr) => {
            let hostport = addr
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            let hostport = hostport.replace("localhost", "127.0.0.1");
            hostport.parse().map_err(|_| {
                CliError::new(format!(
                    "cannot listen on {addr:?}: give an IP address and port, e.g. 127.0.0.1:8200"
                ))
            })
        }
    }
}

fn production_requested(a: &ServeArgs) -> bool {
    a.production
        || std::env::var("LOCKBOX_ENV")
            .map(|v| v.eq_ignore_ascii_case("production"))
            .unwrap_or(false)
}

/// The checks production mode enforces, each named when it fails.
fn production_checks(a: &ServeArgs, g: &Global, listen: SocketAddr) -> Result<(), CliError> {
    let fail = |check: &str, why: String| {
        CliError::new(format!("production check failed: {check}: {why}"))
    };
    if a.dev {
        return Err(fail(
            "no-dev-mode",
            "--dev cannot be used in production".into(),
        ));
    }
    match (&g.master_key_file, std::env::var("LOCKBOX_MASTER_KEY")) {
        (Some(f), _) => {
            check_key_file_mode(f).map_err(|e| fail("master-key-file-permissions", e.message))?;
            let root = root_key_from_env(Some(f)).map_err(|e| fail("master-key", e.message))?;
            check_master_key_strength(root, &format!("the master key file {}", f.display()))
                .map_err(|why| fail("master-key-strength", why))?;
        }
        (None, Ok(_)) => {
            let root = root_key_from_env(None).map_err(|e| fail("master-key", e.message))?;
            check_master_key_strength(root, "LOCKBOX_MASTER_KEY")
                .map_err(|why| fail("master-key-strength", why))?;
        }
        (None, Err(_)) => {
            if std::env::var("LOCKBOX_SEAL")
                .map(|v| v != "shamir")
                .unwrap_or(true)
            {
                return Err(fail(
                    "master-key",
                    "no master key: set LOCKBOX_MASTER_KEY or --master-key-file (or LOCKBOX_SEAL=shamir to unseal with shares)".into(),
                ));
            }
        }
    }
    match &g.store {
        None => return Err(fail("store", "no --store / LOCKBOX_STORE given".into())),
        Some(url) if is_memory_store(url) => {
            return Err(fail(
                "store",
                format!(
                    "{} is an in-memory store: every key is lost when the process exits; \
                     give a file (sqlite:///var/lib/lockbox/lockbox.db) or a PostgreSQL URL",
                    redact_url(url)
                ),
            ))
        }
        Some(_) => {}
    }
    if !listen.ip().is_loopback() && a.tls_cert.is_none() {
        return Err(fail(
            "tls",
            format!("plain HTTP on non-loopback address {listen}; TLS is required"),
        ));
    }
    Ok(())
}

/// Run the server until Ctrl-C / SIGTERM.
pub fn run(a: ServeArgs, g: &Global) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lockbox: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(serve(a, g)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockbox: error: {}", e.message);
            if let Some(h) = e.hint {
                eprintln!("lockbox: hint: {h}");
            }
            ExitCode::from(1)
        }
    }
}

async fn serve(a: ServeArgs, g: &Global) -> Result<(), CliError> {
    let listen = listen_addr(&a, g)?;
    if production_requested(&a) {
        production_checks(&a, g, listen)?;
    }
    let mut dev_dir: Option<PathBuf> = None;
    let store_url = match (&g.store, a.dev) {
        (Some(u), _) => u.clone(),
        (None, true) => {
            let mut b = [0u8; 6];
            lockbox_core::fill_random(&mut b)?;
            let dir = std::env::temp_dir().join(format!(
                "lockbox-dev-{}",
                lockbox_core::encoding::hex_encode(&b)
            ));
            std::fs::create_dir_all(&dir)
                .map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
            let url = format!("sqlite://{}", dir.join("lockbox.db").display());
            dev_dir = Some(dir);
            url
        }
        (None, false) => "sqlite://lockbox.db".to_owned(),
    };
    let max_token_ttl_secs = crate::parse_period(&a.max_token_ttl)
        .ok()
        .filter(|s| (1..=36_525 * 86_400).contains(s))
        .ok_or_else(|| {
            CliError::new(format!(
                "--max-token-ttl {:?}: give a duration from 1s to 100 years, like 768h or 30d",
                a.max_token_ttl
            ))
        })?;
    let cfg = EngineConfig {
        rotation_check_interval: std::time::Duration::from_secs(a.rotation_check_seconds.max(1)),
        max_token_ttl_secs,
        ..EngineConfig::default()
    };
    let engine: Engine = open_local(&store_url, g.master_key_file.as_deref(), !a.dev, cfg).await?;
    if let Some(file) = &a.auto_unseal {
        if engine.is_sealed() {
            let root = auto_unseal_root(&a, file).await?;
            if production_requested(&a) {
                if let Some(why) = master_key_weakness(root.expose_secret().expose_secret()) {
                    return Err(CliError::new(format!(
                        "production check failed: master-key-strength: the auto-unseal envelope's \
                         master key is not a random key: {why}; wrap a key from `lockbox keygen-master`"
                    )));
                }
            }
            engine.unseal_with_master_key(root).await?;
        }
    }
    let max_connections = fit_connections(a.max_connections);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::new(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new(format!("listener: {e}")))?;
    let tls = tls_config(&a)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut banner = format!(
        "Lockbox listening on {scheme}://{addr}\nStorage: {} ({})\n",
        engine.store().backend(),
        redact_url(&store_url)
    );
    if a.dev {
        let root = RootKey::generate()?;
        let shown = lockbox_core::encoding::b64_encode(root.expose_secret().expose_secret());
        engine.unseal_with_master_key(root).await?;
        let token = engine.reset_root_token(a.dev_root_token.as_deref()).await?;
        banner.push_str(&format!(
            "\nDEV MODE: temporary store, unsealed, nothing persists.\n\
             Master key (shown once): {shown}\n\
             Root token: {token}\n\n\
             export LOCKBOX_ADDR={scheme}://{addr} LOCKBOX_TOKEN={token}\n"
        ));
    } else {
        let st = engine.status().await?;
        banner.push_str(&format!(
            "Initialized: {}  Sealed: {}\n",
            st.initialized, st.sealed
        ));
    }
    println!("{banner}");
    engine.spawn_background().await;
    let cfg = ServerConfig {
        dev_mode: a.dev,
        max_body_bytes: a.max_body_bytes,
        max_batch_items: a.max_batch_items,
        max_json_depth: a.max_json_depth,
        token_rate_limit: a.token_rate_limit,
        unauthenticated_rate_limit: a.unauthenticated_rate_limit,
        audit: audit_config(&a)?,
        webhook: webhook_config(&a)?,
        tls: tls.is_some(),
        header_read_timeout: a.header_read_timeout,
        idle_timeout: a.idle_timeout,
        request_timeout: a.request_timeout,
        tls_handshake_timeout: a.tls_handshake_timeout,
        max_connections,
        max_connections_per_address: a.max_connections_per_address,
    };
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    };
    let res = match tls {
        Some(t) => lockbox_server::serve_tls(listener, engine.clone(), cfg, t, shutdown).await,
        None => lockbox_server::serve(listener, engine.clone(), cfg, shutdown).await,
    };
    let _ = engine.flush_usage().await;
    if let Some(d) = dev_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    res.map_err(|e| CliError::new(format!("server: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_master_keys_pass_and_made_up_ones_do_not() {
        for _ in 0..10_000 {
            let k = lockbox_core::SecretBytes::random(32).unwrap();
            assert_eq!(master_key_weakness(k.expose_secret()), None);
        }
        let refused: [&[u8]; 5] = [
            b"abababababababababababababababab",
            b"password1234password1234password",
            b"correct horse battery staple!!42",
            // 15 distinct values, no period, not text.
            &[
                0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d,
                0x8e, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c,
                0x8d, 0x8e, 0x81, 0x80,
            ],
            &[0u8; 32],
        ];
        for k in refused {
            assert!(master_key_weakness(k).is_some(), "{k:?}");
        }
    }

    #[test]
    fn in_memory_stores_are_recognised() {
        for u in ["sqlite::memory:", "sqlite://:memory:", " SQLITE::MEMORY: "] {
            assert!(is_memory_store(u), "{u}");
        }
        for u in [
            "sqlite://lockbox.db",
            "sqlite:///var/lib/lockbox.db",
            "postgres://h/db",
        ] {
            assert!(!is_memory_store(u), "{u}");
        }
    }
}
