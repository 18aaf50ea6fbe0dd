//! Client mode's TLS: our client certificate, upstream verification with depth and name,
//! session resumption, ALPN.

use super::verify::{PeerRole, UpstreamCertPolicy};
use super::{chain_verifier, check_key_permissions, load_identity, load_revocation, provider};
use crate::config::{ClientListener, ConfigError, ListenerConfig};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use std::sync::Arc;

/// Presents one certificate chain to every upstream that asks.
#[derive(Debug)]
struct FixedClientCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How many upstream TLS sessions a listener keeps for resumption.
const SESSION_CACHE_SIZE: usize = 256;

pub fn build(
    listener: &ListenerConfig,
    client: &ClientListener,
    warnings: &mut Vec<String>,
) -> Result<Arc<rustls::ClientConfig>, ConfigError> {
    let provider = provider(&listener.tls);
    let chain = match &client.ca {
        Some(ca) => {
            let verifier = chain_verifier(
                listener,
                ca,
                &client.revocation,
                PeerRole::Server,
                &provider,
                warnings,
            )?;
            Some(verifier.with_name_in_cn(client.verify_name_in_cn))
        }
        None => {
            // Nothing is verified, so the CRLs have nothing to do; they are still read, so a
            // broken file is reported.
            load_revocation(&client.revocation, &[], None, warnings)?;
            None
        }
    };
    let certificate: Option<Arc<dyn ResolvesClientCert>> = match &client.identity {
        Some((cert, key)) => {
            check_key_permissions(key, listener.strict_key_permissions, warnings)?;
            let identity = load_identity(cert, key, &provider)?;
            Some(Arc::new(FixedClientCertificate(identity)))
        }
        None => None,
    };
    let verifier = Arc::new(UpstreamCertPolicy {
        chain,
        rules: client.upstream_rules.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let resumption = if client.session_reuse {
        rustls::client::Resumption::in_memory_sessions(SESSION_CACHE_SIZE)
    } else {
        rustls::client::Resumption::disabled()
    };
    let mut config = config(
        provider,
        &listener.tls.versions,
        verifier,
        certificate,
        client.http2,
        resumption,
    )
    .map_err(|e| ConfigError::general(format!("listener '{}': {e}", listener.name)))?;
    config.enable_sni = client.send_sni;
    Ok(Arc::new(config))
}

/// A rustls client config: the one place client mode and the probe put one together.
/// Which server certificates pass is the verifier's call (client mode's policy, or the
/// probe's, which accepts any and records what it saw), as which certificate we present
/// is the resolver's; `http2` offers h2 before HTTP/1.1 in ALPN.
pub fn config(
    provider: Arc<rustls::crypto::CryptoProvider>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    verifier: Arc<dyn ServerCertVerifier>,
    certificate: Option<Arc<dyn ResolvesClientCert>>,
    http2: bool,
    resumption: rustls::client::Resumption,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match certificate {
        Some(resolver) => builder.with_client_cert_resolver(resolver),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = super::alpn_protocols(http2);
    config.resumption = resumption;
    Ok(config)
}
