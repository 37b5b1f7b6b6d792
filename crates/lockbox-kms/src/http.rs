//! The one HTTP client builder of Lockbox's outgoing calls (AWS KMS, Vault
//! Transit, webhooks, the CLI's `--addr`): rustls on AWS-LC, the system's
//! trusted roots, or only the CA bundle in `LOCKBOX_CACERT` (as Vault's
//! `VAULT_CACERT`) for private PKI.

use std::time::Duration;

/// The environment variable naming a PEM CA bundle to trust instead of the
/// system roots.
pub const CACERT_ENV: &str = "LOCKBOX_CACERT";

/// A client with these timeouts (`connect` is capped at `total`).
///
/// # Errors
/// A message if `LOCKBOX_CACERT` names an unreadable or invalid bundle, or
/// the TLS backend cannot start.
pub fn client(total: Duration, connect: Duration) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(total)
        .connect_timeout(connect.min(total))
        .https_only(false);
    if let Some(path) = std::env::var_os(CACERT_ENV).filter(|p| !p.is_empty()) {
        let pem = std::fs::read(&path).map_err(|e| {
            format!(
                "{CACERT_ENV}: cannot read {}: {e}",
                std::path::Path::new(&path).display()
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{CACERT_ENV}: not a PEM certificate bundle: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{CACERT_ENV}: no certificate in the bundle"));
        }
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| format!("HTTP client: {e}"))
}
