//! Server mode's TLS: certificate, client verification with depth, resumption, ALPN.

use super::identity::{ClientVerdict, PeerIdentity};
use super::verify::{ClientAuthMode, ClientCertPolicy, PeerRole};
use super::{chain_verifier, check_key_permissions, load_identity, provider};
use crate::config::{ConfigError, ListenerConfig, ServerListener};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConnection};
use rustls::sign::CertifiedKey;
use std::sync::Arc;

/// Serves one certificate whatever the SNI (as an nginx server block with one certificate).
#[derive(Debug)]
struct FixedCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// How many TLS sessions a listener remembers for resumption.
const SESSION_CACHE_SIZE: usize = 16 * 1024;

/// Everything a server-mode listener needs to accept TLS and judge client certificates.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    policy: Option<Arc<ClientCertPolicy>>,
}

impl ServerTls {
    pub fn build(
        listener: &ListenerConfig,
        server: &ServerListener,
        warnings: &mut Vec<String>,
    ) -> Result<ServerTls, ConfigError> {
        let provider = provider(&listener.tls);
        check_key_permissions(&server.key, listener.strict_key_permissions, warnings)?;
        let mut identity = load_identity(&server.cert, &server.key, &provider)?;
        if let Some(file) = &server.ocsp_response {
            let response = std::fs::read(&file.value).map_err(|e| {
                ConfigError::at(
                    &file.origin,
                    format!("cannot read {}: {e}", file.value.display()),
                )
            })?;
            if response.is_empty() {
                return Err(ConfigError::at(
                    &file.origin,
                    format!(
                        "{} is empty: expected a DER OCSP response",
                        file.value.display()
                    ),
                ));
            }
            identity = Arc::new(CertifiedKey {
                ocsp: Some(response),
                ..(*identity).clone()
            });
        }
        let policy = match (&server.client_ca, server.verify_client) {
            (_, ClientAuthMode::Off) | (None, _) => None,
            (Some(ca), mode) => {
                let chain = chain_verifier(
                    listener,
                    ca,
                    &server.revocation,
                    PeerRole::Client,
                    &provider,
                    warnings,
                )?;
                Some(Arc::new(ClientCertPolicy {
                    chain,
                    mode,
                    access: server.access.clone(),
                }))
            }
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&listener.tls.versions)
            .map_err(|e| ConfigError::general(format!("listener '{}': {e}", listener.name)))?;
        let builder = match &policy {
            Some(policy) => builder.with_client_cert_verifier(policy.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(FixedCertificate(identity)));
        config.alpn_protocols = super::alpn_protocols(true);
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        if server.session_tickets {
            let ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| {
                ConfigError::general(format!("cannot create TLS session ticketer: {e}"))
            })?;
            config.ticketer = super::tickets::KeepResumedTickets::wrap(ticketer);
        }
        Ok(ServerTls {
            config: Arc::new(config),
            policy,
        })
    }

    /// nginx's `$ssl_client_verify` for a finished handshake, and the identity only when
    /// proven: a certificate that failed verification or the allow-list (`optional_no_ca`)
    /// never becomes an identity, so a backend that trusts a header's presence cannot be fooled.
    pub fn verdict(&self, connection: &ServerConnection) -> (ClientVerdict, Option<PeerIdentity>) {
        let Some(chain) = connection.peer_certificates().filter(|c| !c.is_empty()) else {
            return (ClientVerdict::None, None);
        };
        let no_ca = self
            .policy
            .as_ref()
            .filter(|p| p.mode == ClientAuthMode::OptionalNoCa);
        if let Some(policy) = no_ca {
            let now = rustls::pki_types::UnixTime::now();
            if let Err(reason) = policy.admit(&chain[0], &chain[1..], now) {
                return (ClientVerdict::Failed(reason.to_string()), None);
            }
        }
        // Otherwise the handshake only completed because the certificate was admitted.
        (
            ClientVerdict::Success,
            PeerIdentity::from_chain(&chain[0], &chain[1..]),
        )
    }
}
