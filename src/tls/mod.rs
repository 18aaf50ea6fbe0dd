//! TLS material: loading files, building rustls configs, verifying peers, naming failures.

pub mod client;
pub mod crl;
pub mod explain;
pub mod identity;
pub mod load;
pub mod pkcs11;
pub mod server;
pub mod store;
pub mod summary;
pub mod tickets;
pub mod verify;

pub use summary::CertSummary;

use crate::config::{ConfigError, ListenerConfig, Located, Revocation, TlsParams};
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::KeySource;

/// The aws-lc-rs provider restricted to a listener's cipher suites.
pub fn provider(params: &TlsParams) -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: params.cipher_suites.clone(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    })
}

/// The application protocols certgate speaks over TLS, in ALPN, preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The ALPN list to offer: [`ALPN_PROTOCOLS`], without h2 when HTTP/2 is off.
pub fn alpn_protocols(http2: bool) -> Vec<Vec<u8>> {
    ALPN_PROTOCOLS
        .iter()
        .filter(|protocol| http2 || **protocol != b"h2")
        .map(|protocol| protocol.to_vec())
        .collect()
}

/// Turns a file problem into a config error pointing at the key that named the file.
pub(crate) fn at<T>(
    file: &Located<PathBuf>,
    result: Result<T, load::LoadError>,
) -> Result<T, ConfigError> {
    result.map_err(|e| ConfigError::at(&file.origin, e.to_string()))
}

/// Loads a certificate chain and its key, blaming whichever of the two files is at fault.
pub(crate) fn load_identity(
    cert: &Located<PathBuf>,
    key: &Located<KeySource>,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<rustls::sign::CertifiedKey>, ConfigError> {
    load::certified_key_from(&cert.value, &key.value, provider).map_err(|e| {
        let origin = if e.path() == Some(cert.value.as_path()) {
            &cert.origin
        } else {
            &key.origin
        };
        ConfigError::at(origin, e.to_string())
    })
}

/// The verifier of `role` peers' chains that a listener builds from its CA file `ca` and the
/// CRLs that go with it, with the listener's depth and partial-chain setting.
pub(crate) fn chain_verifier(
    listener: &ListenerConfig,
    ca: &Located<PathBuf>,
    revocation: &Revocation,
    role: verify::PeerRole,
    provider: &rustls::crypto::CryptoProvider,
    warnings: &mut Vec<String>,
) -> Result<verify::ChainVerifier, ConfigError> {
    let certs = at(ca, load::certificates(&ca.value))?;
    let crls = load_revocation(revocation, &certs, Some(&ca.value), warnings)?;
    let verifier = verify::ChainVerifier::new(&certs, listener.verify_depth, role, crls, provider)
        .map_err(|e| ConfigError::at(&ca.origin, format!("{}: {e}", ca.value.display())))?;
    Ok(verifier.with_partial_chain(listener.partial_chain))
}

/// Loads a listener's CRLs, checking each against its issuer when that CA is in `bundle`
/// and warning about any past its nextUpdate.
pub(crate) fn load_revocation(
    revocation: &Revocation,
    bundle: &[rustls::pki_types::CertificateDer<'_>],
    bundle_path: Option<&std::path::Path>,
    warnings: &mut Vec<String>,
) -> Result<Option<crl::CrlSet>, ConfigError> {
    if revocation.crls.is_empty() {
        return Ok(None);
    }
    let now = rustls::pki_types::UnixTime::now().as_secs() as i64;
    let mut set = crl::CrlSet::new(revocation.allow_expired_crl);
    for file in &revocation.crls {
        let crls = at(file, load::crls(&file.value))?;
        let expired = set
            .add_file(&file.value, &crls, bundle, bundle_path, now)
            .map_err(|e| ConfigError::at(&file.origin, e.to_string()))?;
        for crl in expired {
            warnings.push(format!(
                "{}: CRL {} from \"{}\" expired at {} (nextUpdate); {}",
                file.origin,
                file.value.display(),
                crl.issuer,
                verify::format_time(rustls::pki_types::UnixTime::since_unix_epoch(
                    std::time::Duration::from_secs(crl.next_update.max(0) as u64)
                )),
                if revocation.allow_expired_crl {
                    "certificates are still checked against it (crl_expired = \"allow\")"
                } else {
                    "certificates it covers are refused until it is renewed (crl_expired = \"refuse\")"
                }
            ));
        }
    }
    Ok(Some(set))
}

/// Warns about (or, when strict, refuses) a private key readable by others.
pub(crate) fn check_key_permissions(
    key: &Located<KeySource>,
    strict: bool,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let path = match &key.value {
        KeySource::File(path) => path,
        KeySource::Token(uri) => {
            // No file to protect; but a PIN written into the URI is as exposed as a loose key.
            warnings.extend(pkcs11::pin_warning(uri).map(|w| format!("{}: {w}", key.origin)));
            return Ok(());
        }
    };
    match load::key_permissions(path) {
        Ok(()) => Ok(()),
        Err(problem @ load::LoadError::LoosePermissions { .. }) if !strict => {
            warnings.push(format!("{}: {problem}", key.origin));
            Ok(())
        }
        Err(problem) => Err(ConfigError::at(&key.origin, problem.to_string())),
    }
}

/// The TLS configuration a listener was built with, for one log line at start-up.
pub fn describe_versions(params: &TlsParams) -> String {
    version_names(&params.versions).join(", ")
}

/// OpenSSL's names of protocol versions, in the order given.
pub fn version_names(versions: &[&'static rustls::SupportedProtocolVersion]) -> Vec<&'static str> {
    versions.iter().map(|v| protocol_name(v.version)).collect()
}

/// OpenSSL's name for a protocol version (nginx's `$ssl_protocol`).
pub fn protocol_name(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        _ => "unknown",
    }
}

/// One loaded certificate, as `/status` and the expiry metric describe it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CertificateInfo {
    /// "server", "client" or "ca".
    pub role: &'static str,
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    /// Unix seconds.
    pub not_after: i64,
    pub file: PathBuf,
}

impl CertificateInfo {
    pub fn days_left(&self, now: i64) -> i64 {
        summary::days_left(self.not_after, now)
    }
}

/// Describes the certificates of a listener's files: its own leaf and every CA it trusts.
pub fn certificates_of(config: &crate::config::ListenerConfig) -> Vec<CertificateInfo> {
    use crate::config::ModeConfig;
    let mut files: Vec<(&'static str, &std::path::Path, bool)> = Vec::new();
    match &config.mode {
        ModeConfig::Server(server) => {
            files.push(("server", &server.cert.value, true));
            files.extend(
                server
                    .client_ca
                    .iter()
                    .map(|ca| ("ca", ca.value.as_path(), false)),
            );
        }
        ModeConfig::Client(client) => {
            files.extend(
                client
                    .identity
                    .iter()
                    .map(|(cert, _)| ("client", cert.value.as_path(), true)),
            );
            files.extend(client.ca.iter().map(|ca| ("ca", ca.value.as_path(), false)));
        }
    }
    let mut infos = Vec::new();
    for (role, path, leaf_only) in files {
        let Ok(certs) = load::certificates(path) else {
            continue;
        };
        for der in certs.iter().take(if leaf_only { 1 } else { usize::MAX }) {
            let Some(summary) = CertSummary::parse(der) else {
                continue;
            };
            infos.push(CertificateInfo {
                role,
                subject: summary.subject,
                issuer: summary.issuer,
                sans: identity::presented_names(der),
                not_after: summary.not_after,
                file: path.to_path_buf(),
            });
        }
    }
    infos
}

#[cfg(test)]
mod tests {
    use super::alpn_protocols;

    #[test]
    fn alpn_offers_h2_first_and_only_with_http2() {
        assert_eq!(
            alpn_protocols(true),
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(alpn_protocols(false), vec![b"http/1.1".to_vec()]);
    }
}
