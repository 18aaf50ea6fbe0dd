//! Certificate chain verification shared by both modes, with nginx's depth limit.
//!
//! rustls has no chain-depth option (webpki allows up to 6 intermediates), so certgate
//! verifies chains with webpki directly and rejects, during path building, any path with more
//! intermediates than `verify_depth`. Counting matches nginx's `ssl_verify_depth`: depth N
//! admits at most N intermediate CAs between the peer's certificate and the trusted CA.
//! Rejections carry enough detail (dates, issuer DN, names) for a log line an operator can act on.

use crate::access::AccessRules;
use crate::tls::identity::{distinguished_name, presented_names, PeerIdentity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

/// Which side of the connection the verified certificate belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    /// A client presenting its certificate to certgate's server mode.
    Client,
    /// An upstream server that certgate's client mode connects to.
    Server,
}

/// Why a peer's certificate chain was refused, in terms an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainRejection {
    Expired {
        not_after: UnixTime,
        now: UnixTime,
    },
    NotYetValid {
        not_before: UnixTime,
        now: UnixTime,
    },
    UnknownIssuer {
        issuer: String,
    },
    TooDeep {
        verify_depth: u32,
    },
    WrongUsage {
        required: &'static str,
    },
    NameMismatch {
        expected: String,
        presented: Vec<String>,
    },
    /// Revoked by a CRL; the serial (uppercase hex) and subject of the revoked certificate.
    Revoked {
        serial: String,
        subject: String,
    },
    /// CRLs are configured but none covers this CA (nginx refuses this too).
    NoCrl {
        issuer: String,
    },
    /// The CRL for this chain is past its nextUpdate and expired CRLs are refused.
    CrlExpired {
        next_update: UnixTime,
    },
    /// The chain verified, but no allow rule of the listener admits this identity.
    NotAllowed {
        peer: String,
        rules: String,
    },
    BadSignature,
    Malformed(String),
}

/// Formats a Unix time the way operators read it in logs: `2026-01-31 12:00:00 UTC`.
pub fn format_time(time: UnixTime) -> String {
    match time::OffsetDateTime::from_unix_timestamp(time.as_secs() as i64) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{}s after 1970", time.as_secs()),
    }
}

impl fmt::Display for ChainRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainRejection::Expired { not_after, now } => write!(
                f,
                "certificate expired: notAfter {} (now {})",
                format_time(*not_after),
                format_time(*now)
            ),
            ChainRejection::NotYetValid { not_before, now } => write!(
                f,
                "certificate not yet valid: notBefore {} (now {})",
                format_time(*not_before),
                format_time(*now)
            ),
            ChainRejection::UnknownIssuer { issuer } => write!(
                f,
                "unknown issuer: no trusted CA for issuer \"{issuer}\"; add that CA to the CA bundle or send the intermediate certificates"
            ),
            ChainRejection::TooDeep { verify_depth } => write!(
                f,
                "certificate chain longer than verify depth: more than {verify_depth} intermediate CA(s) between the certificate and the trusted CA; raise verify_depth if this chain is expected"
            ),
            ChainRejection::WrongUsage { required } => write!(
                f,
                "wrong key usage: the certificate's extended key usage does not allow {required}"
            ),
            ChainRejection::NameMismatch { expected, presented } => write!(
                f,
                "name mismatch: expected \"{expected}\", certificate presents [{}]",
                presented.join(", ")
            ),
            ChainRejection::Revoked { serial, subject } => write!(
                f,
                "certificate revoked: serial {serial} (\"{subject}\") is on the CRL"
            ),
            ChainRejection::NoCrl { issuer } => write!(
                f,
                "no CRL for issuer \"{issuer}\": with CRLs configured, every CA in the chain needs one (as with nginx's ssl_crl); add that CA's CRL"
            ),
            ChainRejection::CrlExpired { next_update } => write!(
                f,
                "the CRL for this chain expired at {} (nextUpdate); renew the CRL file, or set crl_expired = \"allow\"",
                format_time(*next_update)
            ),
            ChainRejection::NotAllowed { peer, rules } => write!(
                f,
                "certificate not allowed by this listener's rules: {peer}; allowed: {rules}"
            ),
            ChainRejection::BadSignature => write!(f, "bad signature in the certificate chain"),
            ChainRejection::Malformed(reason) => write!(f, "malformed certificate: {reason}"),
        }
    }
}

impl std::error::Error for ChainRejection {}

impl From<ChainRejection> for rustls::Error {
    /// Uses rustls' own variants where they carry the detail, so the peer gets the precise
    /// TLS alert (certificate_expired, ...); everything else travels as our own type, so the
    /// log line keeps the detail (which serial was revoked, which issuer is unknown).
    fn from(rejection: ChainRejection) -> Self {
        let error = match rejection {
            ChainRejection::Expired { not_after, now } => CertificateError::ExpiredContext {
                time: now,
                not_after,
            },
            ChainRejection::NotYetValid { not_before, now } => {
                CertificateError::NotValidYetContext {
                    time: now,
                    not_before,
                }
            }
            ChainRejection::BadSignature => CertificateError::BadSignature,
            other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
        };
        rustls::Error::InvalidCertificate(error)
    }
}

/// Certificate revocation lists for one chain verifier.
#[derive(Debug)]
pub struct CrlSet {
    crls: Vec<webpki::CertRevocationList<'static>>,
    /// (issuer DN as DER, serial as DER content) of every revoked entry, to name the revoked
    /// certificate in logs (webpki only says that one of the chain is revoked).
    revoked: Vec<(Vec<u8>, Vec<u8>)>,
    /// Issuer DN (DER) of every CRL.
    issuers: Vec<Vec<u8>>,
    allow_expired: bool,
}

impl CrlSet {
    /// Parses DER CRLs; fails with a reason if one does not parse.
    pub fn new(
        crls: &[rustls::pki_types::CertificateRevocationListDer<'_>],
        allow_expired: bool,
    ) -> Result<CrlSet, String> {
        let mut set = CrlSet {
            crls: Vec::new(),
            revoked: Vec::new(),
            issuers: Vec::new(),
            allow_expired,
        };
        for (index, der) in crls.iter().enumerate() {
            let owned = webpki::OwnedCertRevocationList::from_der(der)
                .map_err(|e| format!("CRL #{} does not parse: {e:?}", index + 1))?;
            set.crls.push(webpki::CertRevocationList::Owned(owned));
            if let Ok((_, crl)) = x509_parser::parse_x509_crl(der) {
                set.issuers.push(crl.issuer().as_raw().to_vec());
                for entry in crl.iter_revoked_certificates() {
                    set.revoked
                        .push((crl.issuer().as_raw().to_vec(), entry.raw_serial().to_vec()));
                }
            }
        }
        Ok(set)
    }

    /// The issuer of the first certificate of the chain that no CRL covers.
    fn missing_issuer(&self, chain: &[&[u8]]) -> String {
        use x509_parser::prelude::*;
        chain
            .iter()
            .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
            .find(|cert| !self.issuers.iter().any(|i| i == cert.issuer().as_raw()))
            .map(|cert| distinguished_name(cert.issuer()))
            .unwrap_or_else(|| "(unknown)".into())
    }

    /// The first certificate of the chain found on a CRL: (serial hex, subject).
    fn find_revoked(&self, chain: &[&[u8]]) -> (String, String) {
        use x509_parser::prelude::*;
        for der in chain {
            let Ok((_, cert)) = X509Certificate::from_der(der) else {
                continue;
            };
            let key = (cert.issuer().as_raw().to_vec(), cert.raw_serial().to_vec());
            if self.revoked.contains(&key) {
                return (
                    crate::tls::identity::serial_hex(cert.raw_serial()),
                    distinguished_name(cert.subject()),
                );
            }
        }
        ("(unknown)".into(), "(unknown)".into())
    }
}

/// Verifies certificate chains against one CA bundle, for one peer role, within a depth.
#[derive(Debug)]
pub struct ChainVerifier {
    roots: Vec<TrustAnchor<'static>>,
    root_subjects: Vec<DistinguishedName>,
    verify_depth: u32,
    role: PeerRole,
    algorithms: WebPkiSupportedAlgorithms,
    revocation: Option<CrlSet>,
}

impl ChainVerifier {
    /// Fails with a reason if a CA certificate cannot serve as a trust anchor.
    pub fn new(
        ca_certs: &[CertificateDer<'static>],
        verify_depth: u32,
        role: PeerRole,
        revocation: Option<CrlSet>,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Self, String> {
        let mut roots = Vec::with_capacity(ca_certs.len());
        for (index, cert) in ca_certs.iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(cert)
                .map_err(|e| format!("CA certificate #{} is unusable: {e:?}", index + 1))?;
            roots.push(anchor.to_owned());
        }
        let root_subjects = roots
            .iter()
            .map(|anchor| DistinguishedName::in_sequence(anchor.subject.as_ref()))
            .collect();
        Ok(ChainVerifier {
            roots,
            root_subjects,
            verify_depth,
            role,
            algorithms: provider.signature_verification_algorithms,
            revocation,
        })
    }

    /// Verifies `end_entity` (with the `intermediates` the peer sent) up to a trusted CA.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), ChainRejection> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| ChainRejection::Malformed(format!("{e:?}")))?;
        let usage = match self.role {
            PeerRole::Client => webpki::KeyUsage::client_auth(),
            PeerRole::Server => webpki::KeyUsage::server_auth(),
        };
        let max_intermediates = self.verify_depth as usize;
        let refused_for_depth = Cell::new(false);
        let within_depth = |path: &webpki::VerifiedPath<'_>| {
            if path.intermediate_certificates().count() > max_intermediates {
                refused_for_depth.set(true);
                return Err(webpki::Error::MaximumPathDepthExceeded);
            }
            Ok(())
        };
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = match &self.revocation {
            Some(set) => set.crls.iter().collect(),
            None => Vec::new(),
        };
        // Every certificate of the chain is checked against the CRLs, and a CA without a CRL
        // is an error, as with nginx's ssl_crl (OpenSSL's CRL_CHECK_ALL): failing open would
        // accept revoked leaves of a CA whose CRL was forgotten.
        let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs)
            .ok()
            .map(|builder| {
                builder
                    .with_depth(webpki::RevocationCheckDepth::Chain)
                    .with_status_policy(webpki::UnknownStatusPolicy::Deny)
                    .with_expiration_policy(
                        match self.revocation.as_ref().is_some_and(|r| r.allow_expired) {
                            true => webpki::ExpirationPolicy::Ignore,
                            false => webpki::ExpirationPolicy::Enforce,
                        },
                    )
                    .build()
            });
        let result = cert.verify_for_usage(
            self.algorithms.all,
            &self.roots,
            intermediates,
            now,
            usage,
            revocation,
            Some(&within_depth),
        );
        match result {
            Ok(_) => Ok(()),
            // A path existed but only beyond the depth limit: that is the useful reason.
            Err(_) if refused_for_depth.get() => Err(ChainRejection::TooDeep {
                verify_depth: self.verify_depth,
            }),
            Err(error) => Err(self.explain(error, end_entity, intermediates)),
        }
    }

    fn explain(
        &self,
        error: webpki::Error,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> ChainRejection {
        use webpki::Error as E;
        match error {
            E::CertExpired { time, not_after } => ChainRejection::Expired {
                not_after,
                now: time,
            },
            E::CertNotValidYet { time, not_before } => ChainRejection::NotYetValid {
                not_before,
                now: time,
            },
            E::UnknownIssuer => ChainRejection::UnknownIssuer {
                issuer: untrusted_issuer(end_entity, intermediates),
            },
            E::MaximumPathDepthExceeded => ChainRejection::TooDeep {
                verify_depth: self.verify_depth,
            },
            E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => ChainRejection::WrongUsage {
                required: match self.role {
                    PeerRole::Client => "TLS client authentication (clientAuth)",
                    PeerRole::Server => "TLS server authentication (serverAuth)",
                },
            },
            E::UnknownRevocationStatus => {
                let chain: Vec<&[u8]> = std::iter::once(end_entity.as_ref())
                    .chain(intermediates.iter().map(|c| c.as_ref()))
                    .collect();
                let issuer = match &self.revocation {
                    Some(set) => set.missing_issuer(&chain),
                    None => "(unknown)".into(),
                };
                ChainRejection::NoCrl { issuer }
            }
            E::CertRevoked => {
                let chain: Vec<&[u8]> = std::iter::once(end_entity.as_ref())
                    .chain(intermediates.iter().map(|c| c.as_ref()))
                    .collect();
                let (serial, subject) = match &self.revocation {
                    Some(set) => set.find_revoked(&chain),
                    None => ("(unknown)".into(), "(unknown)".into()),
                };
                ChainRejection::Revoked { serial, subject }
            }
            E::CrlExpired { next_update, .. } => ChainRejection::CrlExpired { next_update },
            E::InvalidSignatureForPublicKey
            | E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                ChainRejection::BadSignature
            }
            E::CaUsedAsEndEntity => {
                ChainRejection::Malformed("a CA certificate was presented as the leaf".into())
            }
            other => ChainRejection::Malformed(format!("{other:?}")),
        }
    }

    /// Checks that an upstream certificate covers the name certgate connected to.
    pub fn verify_name(
        &self,
        end_entity: &CertificateDer<'_>,
        name: &ServerName<'_>,
    ) -> Result<(), ChainRejection> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| ChainRejection::Malformed(format!("{e:?}")))?;
        cert.verify_is_valid_for_subject_name(name)
            .map_err(|_| ChainRejection::NameMismatch {
                expected: name.to_str().into_owned(),
                presented: presented_names(end_entity),
            })
    }

    fn verify_tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

/// The issuer DN at the top of what the peer sent: the CA the bundle is missing.
fn untrusted_issuer(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> String {
    use x509_parser::prelude::*;
    let Ok((_, mut top)) = X509Certificate::from_der(end_entity) else {
        return "(unparsable certificate)".into();
    };
    let parsed: Vec<X509Certificate<'_>> = intermediates
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect();
    // Follow issuer -> subject links through what the peer sent, bounded against loops.
    for _ in 0..parsed.len() {
        match parsed
            .iter()
            .find(|c| c.subject().as_raw() == top.issuer().as_raw() && c.subject() != top.subject())
        {
            Some(next) => top = next.clone(),
            None => break,
        }
    }
    distinguished_name(top.issuer())
}

/// How server mode treats client certificates (nginx's `ssl_verify_client`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// A certificate that verifies is mandatory.
    Required,
    /// No certificate is allowed; a certificate that is sent must verify.
    Optional,
    /// Any certificate is accepted in the handshake; the backend is told the verdict
    /// (nginx's `optional_no_ca`).
    OptionalNoCa,
    /// No certificate is asked for.
    Off,
}

impl fmt::Display for ClientAuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientAuthMode::Required => "required",
            ClientAuthMode::Optional => "optional",
            ClientAuthMode::OptionalNoCa => "optional_no_ca",
            ClientAuthMode::Off => "off",
        })
    }
}

/// Server mode's view of client certificates: rustls' hook around [`ChainVerifier`], plus
/// the listener's allow-list, so a refused identity never gets past the handshake.
#[derive(Debug)]
pub struct ClientCertPolicy {
    pub chain: ChainVerifier,
    pub mode: ClientAuthMode,
    pub access: AccessRules,
}

impl ClientCertPolicy {
    /// Chain, then allow-list.
    pub fn admit(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), ChainRejection> {
        self.chain.verify(end_entity, intermediates, now)?;
        admit_by_rules(&self.access, end_entity, intermediates)
    }
}

/// Checks a verified chain's leaf against allow rules (no rules admit everyone).
fn admit_by_rules(
    rules: &AccessRules,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), ChainRejection> {
    if rules.is_empty() {
        return Ok(());
    }
    let identity = PeerIdentity::from_chain(end_entity, intermediates)
        .ok_or_else(|| ChainRejection::Malformed("the certificate does not parse".into()))?;
    if rules.allows(&identity) {
        Ok(())
    } else {
        Err(ChainRejection::NotAllowed {
            peer: identity.describe(),
            rules: rules.to_string(),
        })
    }
}

impl ClientCertVerifier for ClientCertPolicy {
    fn offer_client_auth(&self) -> bool {
        self.mode != ClientAuthMode::Off
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mode == ClientAuthMode::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.chain.root_subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.mode == ClientAuthMode::OptionalNoCa {
            // The verdict is computed after the handshake and handed to the backend.
            return Ok(ClientCertVerified::assertion());
        }
        self.admit(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.algorithms.supported_schemes()
    }
}

/// Client mode's view of upstream certificates: chain, depth, name, then the listener's
/// `verify_*` rules.
#[derive(Debug)]
pub struct UpstreamCertPolicy {
    /// None when verification is switched off (nginx's `proxy_ssl_verify off`); the
    /// handshake signatures are checked all the same.
    pub chain: Option<ChainVerifier>,
    pub rules: AccessRules,
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl UpstreamCertPolicy {
    /// The verdict on an upstream's certificate: chain (when verification is on), name, rules.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), ChainRejection> {
        if let Some(chain) = &self.chain {
            chain.verify(end_entity, intermediates, now)?;
            chain.verify_name(end_entity, server_name)?;
        }
        admit_by_rules(&self.rules, end_entity, intermediates)
    }
}

impl ServerCertVerifier for UpstreamCertPolicy {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, server_name, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
