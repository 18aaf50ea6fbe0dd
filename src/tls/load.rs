//! Files -> certificates and keys.
//!
//! Formats are detected by content, never by file name: the seed tells users to convert
//! certificates to DER, and that must simply work. Every error names the file.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::KeySource;

/// A problem with one TLS file, always naming it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no certificate (expected PEM 'BEGIN CERTIFICATE' blocks or one DER certificate)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{} is not a valid certificate file: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{} holds no CRL (expected PEM 'BEGIN X509 CRL' blocks or one DER CRL)", path.display())]
    NoCrl { path: PathBuf },
    #[error("{} holds no private key (expected PKCS#8, PKCS#1 or SEC1, in PEM or DER)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: unsupported private key: {reason} (supported: ECDSA P-256/P-384, RSA 2048+, Ed25519)", path.display())]
    UnsupportedKey { path: PathBuf, reason: String },
    #[error("{}: certificate #{} (\"{issuer}\") did not issue certificate #{} (\"{subject}\"): put the leaf first, then each intermediate in order", path.display(), index + 1, index)]
    BrokenChain {
        path: PathBuf,
        index: usize,
        subject: String,
        issuer: String,
    },
    /// A key on a token; `uri` is its URI without the PIN.
    #[error("{source}")]
    Token {
        uri: String,
        source: super::pkcs11::TokenError,
    },
    #[error("private key {} does not match certificate {}: use the key the certificate was issued for", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("private key {} is readable by {who} (mode {mode:04o}); run 'chmod 600 {}'", path.display(), path.display())]
    LoosePermissions {
        path: PathBuf,
        mode: u32,
        who: &'static str,
    },
}

impl LoadError {
    /// The file the problem is about (for a key/certificate mismatch: the key); None for a
    /// key on a token, which is no file.
    pub fn path(&self) -> Option<&Path> {
        Some(match self {
            LoadError::Unreadable { path, .. }
            | LoadError::NoCertificate { path }
            | LoadError::BadCertificate { path, .. }
            | LoadError::NoCrl { path }
            | LoadError::NoKey { path }
            | LoadError::UnsupportedKey { path, .. }
            | LoadError::LoosePermissions { path, .. }
            | LoadError::BrokenChain { path, .. } => path,
            LoadError::KeyMismatch { key, .. } => key,
            LoadError::Token { .. } => return None,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

fn looks_like_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Reads every certificate in a PEM bundle, or the single certificate of a DER file.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let bytes = read(path)?;
    let bad = |reason: String| LoadError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = if looks_like_pem(&bytes) {
        CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, pem::Error>>()
            .map_err(|e| bad(e.to_string()))?
    } else if bytes.first() != Some(&0x30) {
        // Neither PEM nor a DER SEQUENCE: empty, a comment, or some other kind of file.
        Vec::new()
    } else {
        vec![CertificateDer::from(bytes)]
    };
    if certs.is_empty() {
        return Err(LoadError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    for (index, cert) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| bad(format!("certificate #{} does not parse: {e}", index + 1)))?;
    }
    Ok(certs)
}

/// Reads a private key in PKCS#8, PKCS#1 or SEC1 form, PEM or DER, and checks that the
/// crypto provider can sign with it.
pub fn private_key(
    path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(PrivateKeyDer<'static>, Arc<dyn rustls::sign::SigningKey>), LoadError> {
    let bytes = read(path)?;
    let no_key = || LoadError::NoKey {
        path: path.to_path_buf(),
    };
    let key = if looks_like_pem(&bytes) {
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| no_key())?
    } else {
        // pki-types guesses PKCS#8 / PKCS#1 / SEC1 from the DER structure.
        PrivateKeyDer::try_from(bytes).map_err(|_| no_key())?
    };
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| LoadError::UnsupportedKey {
            path: path.to_path_buf(),
            reason: match &key {
                PrivateKeyDer::Pkcs8(der) if is_rsa_pss_pkcs8(der.secret_pkcs8_der()) => {
                    "it is an RSA-PSS key (id-RSASSA-PSS, as 'openssl genpkey -algorithm RSA-PSS' makes), which rustls cannot sign with; make an RSA key instead ('openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048'), which signs with RSA-PSS in TLS 1.3 all the same".into()
                }
                _ => e.to_string(),
            },
        })?;
    Ok((key, signing_key))
}

/// Whether a PKCS#8 key's algorithm is id-RSASSA-PSS (an RSA key restricted to PSS).
fn is_rsa_pss_pkcs8(der: &[u8]) -> bool {
    use x509_parser::asn1_rs::{Integer, Sequence};
    use x509_parser::prelude::FromDer;
    use x509_parser::x509::AlgorithmIdentifier;
    let Ok((_, outer)) = Sequence::from_der(der) else {
        return false;
    };
    let Ok((rest, _version)) = Integer::from_der(&outer.content) else {
        return false;
    };
    AlgorithmIdentifier::from_der(rest).is_ok_and(|(_, algorithm)| {
        algorithm.algorithm == x509_parser::oid_registry::OID_PKCS1_RSASSAPSS
    })
}

/// Reads certificate revocation lists (PEM `X509 CRL` blocks or one DER CRL).
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, LoadError> {
    let bytes = read(path)?;
    let crls: Vec<CertificateRevocationListDer<'static>> = if looks_like_pem(&bytes) {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, pem::Error>>()
            .map_err(|e| LoadError::BadCertificate {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?
    } else if bytes.first() == Some(&0x30) {
        vec![CertificateRevocationListDer::from(bytes)]
    } else {
        Vec::new()
    };
    if crls.is_empty() {
        return Err(LoadError::NoCrl {
            path: path.to_path_buf(),
        });
    }
    Ok(crls)
}

/// Where a key given as text is (`cert check`, `probe`): a `pkcs11:` URI, with the default
/// module `--pkcs11-module` names when it names none, or a file.
pub fn key_source(text: &str, default_module: Option<&Path>) -> Result<KeySource, LoadError> {
    KeySource::parse_with_default_module(text, default_module).map_err(|e| LoadError::Token {
        uri: super::pkcs11::redacted(text),
        source: e.into(),
    })
}

/// A certificate chain and the key that goes with its first certificate.
pub fn certified_key_from(
    cert_path: &Path,
    key: &KeySource,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<rustls::sign::CertifiedKey>, LoadError> {
    let chain = certificates(cert_path)?;
    check_chain_order(cert_path, &chain)?;
    let key_path = match key {
        KeySource::File(path) => path,
        KeySource::Token(uri) => {
            let token = |source| LoadError::Token {
                uri: super::pkcs11::redacted(&uri.text),
                source,
            };
            let key = super::pkcs11::TokenKey::open(uri).map_err(token)?;
            key.check_matches(&chain[0]).map_err(token)?;
            return Ok(Arc::new(rustls::sign::CertifiedKey::new(
                chain,
                Arc::new(key),
            )));
        }
    };
    let (_, signing_key) = private_key(key_path, provider)?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(_) => Err(LoadError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        }),
    }
}

/// Checks that each certificate of a chain file was issued by the one after it, so a bundle
/// with intermediates out of order, or the wrong intermediate, is refused at load (and at a
/// reload, where the old chain keeps serving) instead of failing every client's handshake.
fn check_chain_order(path: &Path, chain: &[CertificateDer<'_>]) -> Result<(), LoadError> {
    use x509_parser::prelude::*;
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect();
    for (index, pair) in parsed.windows(2).enumerate() {
        let (child, issuer) = (&pair[0], &pair[1]);
        if child.verify_signature(Some(issuer.public_key())).is_err() {
            return Err(LoadError::BrokenChain {
                path: path.to_path_buf(),
                index: index + 1,
                subject: crate::tls::identity::distinguished_name(child.subject()),
                issuer: crate::tls::identity::distinguished_name(issuer.subject()),
            });
        }
    }
    Ok(())
}

/// Checks that a private key file is not readable by group or others (the seed asks for
/// mode 600). Returns the problem rather than deciding whether it is fatal.
pub fn key_permissions(path: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|source| LoadError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    let who = match (mode & 0o070 != 0, mode & 0o007 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "other users",
        (true, true) => "its group and other users",
    };
    Err(LoadError::LoosePermissions {
        path: path.to_path_buf(),
        mode,
        who,
    })
}
