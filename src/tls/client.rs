//! Client mode's TLS: our client certificate, upstream verification with depth and name,
//! session resumption, ALPN.

use super::verify::{ChainVerifier, PeerRole, UpstreamCertPolicy};
use super::{at, check_key_permissions, load, load_identity, load_revocation, provider};
use crate::config::{ClientListener, ConfigError, ListenerConfig};
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
            let ca_certs = at(ca, load::certificates(&ca.value))?;
            let revocation =
                load_revocation(&client.revocation, &ca_certs, Some(&ca.value), warnings)?;
            let verifier = ChainVerifier::new(
                &ca_certs,
                listener.verify_depth,
                PeerRole::Server,
                revocation,
                &provider,
            )
            .map_err(|e| ConfigError::at(&ca.origin, format!("{}: {e}", ca.value.display())))?
            .with_partial_chain(listener.partial_chain)
            .with_name_in_cn(client.verify_name_in_cn);
            Some(verifier)
        }
        None => {
            // Nothing is verified, so the CRLs have nothing to do; they are still read, so a
            // broken file is reported.
            load_revocation(&client.revocation, &[], None, warnings)?;
            None
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&listener.tls.versions)
        .map_err(|e| ConfigError::general(format!("listener '{}': {e}", listener.name)))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UpstreamCertPolicy {
            chain,
            rules: client.upstream_rules.clone(),
            algorithms: provider.signature_verification_algorithms,
        }));
    let mut config = match &client.identity {
        Some((cert, key)) => {
            check_key_permissions(key, listener.strict_key_permissions, warnings)?;
            let identity = load_identity(cert, key, &provider)?;
            builder.with_client_cert_resolver(Arc::new(FixedClientCertificate(identity)))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if client.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    config.enable_sni = client.send_sni;
    config.resumption = if client.session_reuse {
        rustls::client::Resumption::in_memory_sessions(SESSION_CACHE_SIZE)
    } else {
        rustls::client::Resumption::disabled()
    };
    Ok(Arc::new(config))
}
