//! TLS material: loading files, building rustls configs, verifying peers, naming failures.

pub mod client;
pub mod explain;
pub mod identity;
pub mod load;
pub mod server;
pub mod verify;

use crate::config::{ConfigError, Located, TlsParams};
use std::path::PathBuf;
use std::sync::Arc;

/// The aws-lc-rs provider restricted to a listener's cipher suites.
pub fn provider(params: &TlsParams) -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: params.cipher_suites.clone(),
        ..rustls::crypto::aws_lc_rs::default_provider()
    })
}

/// Turns a file problem into a config error pointing at the key that named the file.
pub(crate) fn at<T>(
    file: &Located<PathBuf>,
    result: Result<T, load::LoadError>,
) -> Result<T, ConfigError> {
    result.map_err(|e| ConfigError::at(&file.origin, e.to_string()))
}

/// Warns about (or, when strict, refuses) a private key readable by others.
pub(crate) fn check_key_permissions(
    key: &Located<PathBuf>,
    strict: bool,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    match load::key_permissions(&key.value) {
        Ok(()) => Ok(()),
        Err(problem @ load::LoadError::LoosePermissions { .. }) if !strict => {
            warnings.push(format!("{}: {problem}", key.origin));
            Ok(())
        }
        Err(problem) => at(key, Err(problem)),
    }
}

/// The TLS configuration a listener was built with, for one log line at start-up.
pub fn describe_versions(params: &TlsParams) -> String {
    params
        .versions
        .iter()
        .map(|v| protocol_name(v.version))
        .collect::<Vec<_>>()
        .join(", ")
}

/// OpenSSL's name for a protocol version (nginx's `$ssl_protocol`).
pub fn protocol_name(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        _ => "unknown",
    }
}
