//! TLS for the server (rustls on AWS-LC) and the `tls check` client.
//!
//! - Protocols: TLS 1.3 preferred, TLS 1.2 minimum (rustls has nothing
//!   older, and no CBC suites).
//! - Suites, in the server's order of preference: TLS_AES_256_GCM_SHA384,
//!   TLS_CHACHA20_POLY1305_SHA256, TLS_AES_128_GCM_SHA256, then for TLS 1.2
//!   ECDHE-(ECDSA|RSA)-AES256-GCM-SHA384 and ECDHE-(ECDSA|RSA)-AES128-GCM-SHA256.
//! - Mutual TLS: client certificates verified against a CA bundle, either
//!   required or optional.
//! - The certificate, key and CA bundle are reloaded without a restart:
//!   on SIGHUP, and when their files change (checked every few seconds).
//!   A reload that fails keeps the previous configuration and says why.
//! - Handshakes run in their connection's own task with a timeout
//!   (`ServerConfig::tls_handshake_timeout`), so a slow client never holds
//!   up the accept loop; see the `listen` module for the other limits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// Whether clients must present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates.
    Off,
    /// Verified if presented.
    Optional,
    /// Required (mutual TLS).
    Required,
}

/// TLS settings of `lockbox serve`.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM CA bundle for client certificates.
    pub client_ca: Option<PathBuf>,
    /// Client certificate policy (needs `client_ca` unless `Off`).
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes.
    pub watch_interval: Duration,
}

/// The provider with only the allowed suites, in preference order.
fn provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        ..aws_lc_rs::default_provider()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// A loaded configuration and the leaf certificate's expiry.
pub(crate) struct Loaded {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) not_after: Option<i64>,
}

/// Builds the rustls server configuration from the files.
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub(crate) fn load(cfg: &TlsConfig) -> Result<Loaded, String> {
    let certs = read_certs(&cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| format!("cannot read the private key {}: {e}", cfg.key.display()))?;
    let provider = Arc::new(provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match (cfg.client_auth, &cfg.client_ca) {
        (ClientAuth::Off, _) => builder.with_no_client_auth(),
        (_, None) => return Err("client certificates need a CA bundle (--tls-client-ca)".into()),
        (mode, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if mode == ClientAuth::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| format!("client CA: {e}"))?)
        }
    };
    let not_after = not_after(&certs[0]);
    let mut sc = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not go together: {e}"))?;
    sc.ignore_client_order = true;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        acceptor: TlsAcceptor::from(Arc::new(sc)),
        not_after,
    })
}

/// The certificate's notAfter (Unix seconds).
#[must_use]
pub fn not_after(cert: &[u8]) -> Option<i64> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(cert).ok()?;
    i64::try_from(
        c.tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
            .as_secs(),
    )
    .ok()
}

/// Subject and issuer of a certificate (RFC 4514 strings).
#[must_use]
pub fn names(cert: &[u8]) -> Option<(String, String)> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(cert).ok()?;
    Some((
        c.tbs_certificate.subject.to_string(),
        c.tbs_certificate.issuer.to_string(),
    ))
}

fn mtimes(cfg: &TlsConfig) -> Vec<Option<SystemTime>> {
    [Some(&cfg.cert), Some(&cfg.key), cfg.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// The current acceptor, replaced by reloads.
pub(crate) type Current = Arc<RwLock<TlsAcceptor>>;

/// Reloads on SIGHUP and on file changes; `on_load` gets each new expiry.
pub(crate) fn spawn_reloader(
    cfg: TlsConfig,
    current: Current,
    on_load: impl Fn(Option<i64>) + Send + Sync + 'static,
) {
    tokio::spawn(async move {
        let mut seen = mtimes(&cfg);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let signalled = {
                let sleep = tokio::time::sleep(cfg.watch_interval);
                match hup.as_mut() {
                    Some(h) => tokio::select! {
                        _ = h.recv() => true,
                        () = sleep => false,
                    },
                    None => {
                        sleep.await;
                        false
                    }
                }
            };
            #[cfg(not(unix))]
            let signalled = {
                tokio::time::sleep(cfg.watch_interval).await;
                false
            };
            let now = mtimes(&cfg);
            if !signalled && now == seen {
                continue;
            }
            seen = now;
            match load(&cfg) {
                Ok(l) => {
                    if let Ok(mut c) = current.write() {
                        *c = l.acceptor;
                    }
                    eprintln!(
                        "lockbox: TLS certificate reloaded from {}",
                        cfg.cert.display()
                    );
                    on_load(l.not_after);
                }
                Err(e) => {
                    eprintln!("lockbox: TLS reload failed, keeping the previous certificate: {e}")
                }
            }
        }
    });
}

/// What `lockbox tls check` found.
#[derive(Debug, Clone)]
pub struct TlsReport {
    /// `TLSv1_3`, `TLSv1_2`.
    pub protocol: String,
    /// The negotiated suite (IANA name).
    pub suite: String,
    /// The chain the server sent: (subject, issuer, notAfter Unix seconds).
    pub chain: Vec<(String, String, Option<i64>)>,
    /// Whether the chain verified against the given CA bundle (None: no bundle given).
    pub verified: Option<Result<(), String>>,
}

/// Records the chain; verifies it if a CA bundle was given, else accepts it
/// (the report says it was not verified).
#[derive(Debug)]
struct Recorder {
    inner: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    chain: std::sync::Mutex<Vec<Vec<u8>>>,
    result: std::sync::Mutex<Option<Result<(), String>>>,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut c) = self.chain.lock() {
            c.push(end_entity.to_vec());
            c.extend(intermediates.iter().map(|i| i.to_vec()));
        }
        if let Some(v) = &self.inner {
            let r = v
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .map(|_| ())
                .map_err(|e| e.to_string());
            if let Ok(mut slot) = self.result.lock() {
                *slot = Some(r);
            }
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects to `addr` (host:port), completes a TLS handshake and reports
/// protocol, suite, chain and (with a CA bundle) whether it verifies.
///
/// # Errors
/// A message for an unreachable host or a failed handshake.
pub async fn check(
    addr: &str,
    server_name: Option<&str>,
    ca: Option<&Path>,
) -> Result<TlsReport, String> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let inner = match ca {
        Some(p) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(p)? {
                roots
                    .add(c)
                    .map_err(|e| format!("bad CA certificate: {e}"))?;
            }
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("CA bundle: {e}"))?,
            )
        }
        None => None,
    };
    let rec = Arc::new(Recorder {
        inner,
        chain: std::sync::Mutex::default(),
        result: std::sync::Mutex::default(),
        provider: provider.clone(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(rec.clone())
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let name = server_name
        .unwrap_or(host)
        .trim_matches(['[', ']'])
        .to_owned();
    let sn = rustls_pki_types::ServerName::try_from(name.clone())
        .map_err(|_| format!("invalid server name {name:?}"))?;
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| format!("timed out connecting to {addr}"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let stream = tokio::time::timeout(Duration::from_secs(10), conn.connect(sn, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let (_, session) = stream.get_ref();
    let protocol = session
        .protocol_version()
        .map_or_else(|| "unknown".into(), |v| format!("{v:?}"));
    let suite = session
        .negotiated_cipher_suite()
        .map_or_else(|| "unknown".into(), |s| format!("{:?}", s.suite()));
    let chain = rec
        .chain
        .lock()
        .map(|c| {
            c.iter()
                .map(|der| {
                    let (s, i) = names(der).unwrap_or_default();
                    (s, i, not_after(der))
                })
                .collect()
        })
        .unwrap_or_default();
    let verified = rec.result.lock().ok().and_then(|r| r.clone());
    Ok(TlsReport {
        protocol,
        suite,
        chain,
        verified,
    })
}
