//! Certificate chain verification shared by both modes, with nginx's depth limit, OpenSSL's
//! rule for where a chain may end, and revocation.
//!
//! rustls has no chain-depth option (webpki allows up to 6 intermediates), so certgate
//! verifies chains with webpki directly and judges each path webpki builds: more
//! intermediates than `verify_depth` (nginx's counting: depth N admits at most N intermediate
//! CAs between the peer's certificate and the CA that ends the chain), a chain ending at a
//! bundle CA that is not a self-issued root when `partial_chain` is off (OpenSSL's default,
//! under which the bundle's intermediates only help build the chain), and the CRLs
//! (`crl.rs`). Rejections carry enough detail (dates, issuer DN, names) for a log line an
//! operator can act on.

use crate::access::AccessRules;
use crate::tls::crl::CrlSet;
use crate::tls::identity::{distinguished_name, presented_names, PeerIdentity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::cell::RefCell;
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
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainRejection {
    #[error("certificate expired: notAfter {} (now {})", format_time(*not_after), format_time(*now))]
    Expired { not_after: UnixTime, now: UnixTime },
    #[error("certificate not yet valid: notBefore {} (now {})", format_time(*not_before), format_time(*now))]
    NotYetValid { not_before: UnixTime, now: UnixTime },
    #[error("unknown issuer: no trusted CA for issuer \"{issuer}\"; add that CA to the CA bundle or send the intermediate certificates")]
    UnknownIssuer { issuer: String },
    #[error("certificate chain longer than verify depth: more than {verify_depth} intermediate CA(s) between the certificate and the trusted CA; raise verify_depth if this chain is expected")]
    TooDeep { verify_depth: u32 },
    #[error("wrong key usage: the certificate's extended key usage does not allow {required}")]
    WrongUsage { required: &'static str },
    #[error("name mismatch: expected \"{expected}\", certificate presents [{}]", presented.join(", "))]
    NameMismatch {
        expected: String,
        presented: Vec<String>,
    },
    /// Revoked by a CRL; the serial (uppercase hex) and subject of the revoked certificate.
    #[error("certificate revoked: serial {serial} (\"{subject}\") is on the CRL")]
    Revoked { serial: String, subject: String },
    /// CRLs are configured but none covers this CA (nginx refuses this too).
    #[error("no CRL for issuer \"{issuer}\": with CRLs configured, every CA in the chain needs one (as with nginx's ssl_crl); add that CA's CRL")]
    NoCrl { issuer: String },
    /// The CRL for this chain is past its nextUpdate and expired CRLs are refused.
    #[error("the CRL for this chain expired at {} (nextUpdate); renew the CRL file, or set crl_expired = \"allow\"", format_time(*next_update))]
    CrlExpired { next_update: UnixTime },
    /// The only CRLs naming this issuer are not signed by the issuer's key.
    #[error("the CRL for issuer \"{issuer}\" ({file}) is not signed by that CA: its signature does not verify against the CA's key; replace it with the CRL this CA published")]
    CrlSignature { issuer: String, file: String },
    /// The chain ends at a CA of the bundle that is not a self-issued root, and
    /// `partial_chain` is off.
    #[error("the chain ends at \"{anchor}\", a CA in the bundle that is not a self-signed root, and partial_chain is off (OpenSSL's and nginx's rule): add that CA's root to the CA bundle, or set partial_chain = true to trust it on its own")]
    PartialChain { anchor: String },
    /// The peer's certificate has a key type rustls cannot use (RSA-PSS).
    #[error("the {}'s certificate has an RSA-PSS key (id-RSASSA-PSS), a key type certgate (rustls) does not support; issue it a certificate with an RSA (rsaEncryption), ECDSA or Ed25519 key", match role { PeerRole::Client => "client", PeerRole::Server => "upstream" })]
    UnsupportedKey { role: PeerRole },
    /// A certificate of the chain is signed with an algorithm or key type certgate cannot
    /// verify.
    #[error("a certificate of the chain is signed with an algorithm or by a key type certgate (rustls) cannot verify (an RSA-PSS key, an RSA key under 2048 bits, DSA, SHA-1, ...)")]
    UnsupportedAlgorithm,
    /// An upstream certificate without a DNS subjectAltName, and CN matching is off.
    #[error("name mismatch: expected \"{expected}\", but the certificate has no {}subjectAltName (its subject has CN={}); certgate does not match names against CN: reissue the certificate with a DNS subjectAltName, or set verify_name_in_cn = true (--verify-name-in-cn) for this legacy upstream", if *other_sans { "DNS " } else { "" }, common_names.join(", CN="))]
    NoSubjectAltName {
        expected: String,
        common_names: Vec<String>,
        /// It has subjectAltNames, only none of type DNS.
        other_sans: bool,
    },
    /// The chain verified, but no allow rule of the listener admits this identity.
    #[error("certificate not allowed by this listener's rules: {peer}; allowed: {rules}")]
    NotAllowed { peer: String, rules: String },
    #[error("bad signature in the certificate chain")]
    BadSignature,
    #[error("malformed certificate: {0}")]
    Malformed(String),
}

/// Formats a Unix time the way operators read it in logs: `2026-01-31 12:00:00 UTC`.
pub fn format_time(time: UnixTime) -> String {
    format_unix(time.as_secs() as i64)
}

/// [`format_time`] for Unix seconds as certificates carry them (signed: before 1970 too).
pub fn format_unix(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs}s after 1970"),
    }
}

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

/// Verifies certificate chains against one CA bundle, for one peer role, within a depth.
#[derive(Debug)]
pub struct ChainVerifier {
    roots: Vec<TrustAnchor<'static>>,
    /// Per root, in the same order: its public key (SPKI DER), for CRL signatures.
    root_keys: Vec<Vec<u8>>,
    /// Per root: whether it is self-issued (subject = issuer), so a chain may end there when
    /// partial chains are off.
    root_self_issued: Vec<bool>,
    /// The bundle's CAs that are not self-issued, used to build the chain on up to a root
    /// when partial chains are off (as OpenSSL uses its trust store).
    bundle_intermediates: Vec<CertificateDer<'static>>,
    root_subjects: Vec<DistinguishedName>,
    verify_depth: u32,
    /// OpenSSL's X509_V_FLAG_PARTIAL_CHAIN: any CA of the bundle may end a chain. Off, a
    /// chain must end at a self-issued root of the bundle (OpenSSL's default, so nginx's).
    partial_chain: bool,
    /// Match the upstream's name against its subject CN when it has no DNS subjectAltName.
    name_in_cn: bool,
    role: PeerRole,
    algorithms: WebPkiSupportedAlgorithms,
    revocation: Option<CrlSet>,
}

/// How much a reason for refusing one path says, to report the most telling one when
/// every path webpki tried was refused.
fn telling(rejection: &ChainRejection) -> u8 {
    match rejection {
        ChainRejection::Revoked { .. } => 5,
        ChainRejection::CrlExpired { .. } | ChainRejection::CrlSignature { .. } => 4,
        ChainRejection::NoCrl { .. } => 3,
        ChainRejection::TooDeep { .. } => 2,
        _ => 1,
    }
}

/// A CA certificate of a bundle that cannot be a trust anchor; `index` counts from 1.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("CA certificate #{index} is unusable: {error:?}")]
    Unusable { index: usize, error: webpki::Error },
    #[error("CA certificate #{index} does not parse: {reason}")]
    Unparsable {
        index: usize,
        reason: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
}

impl ChainVerifier {
    /// Fails with a reason if a CA certificate cannot serve as a trust anchor. Partial
    /// chains are on; see [`ChainVerifier::with_partial_chain`].
    pub fn new(
        ca_certs: &[CertificateDer<'static>],
        verify_depth: u32,
        role: PeerRole,
        revocation: Option<CrlSet>,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Self, AnchorError> {
        use x509_parser::prelude::*;
        let mut roots = Vec::with_capacity(ca_certs.len());
        let mut root_keys = Vec::with_capacity(ca_certs.len());
        let mut root_self_issued = Vec::with_capacity(ca_certs.len());
        let mut bundle_intermediates = Vec::new();
        for (index, cert) in ca_certs.iter().enumerate() {
            let anchor =
                webpki::anchor_from_trusted_cert(cert).map_err(|error| AnchorError::Unusable {
                    index: index + 1,
                    error,
                })?;
            roots.push(anchor.to_owned());
            let (_, parsed) =
                X509Certificate::from_der(cert).map_err(|reason| AnchorError::Unparsable {
                    index: index + 1,
                    reason,
                })?;
            let self_issued = parsed.subject().as_raw() == parsed.issuer().as_raw();
            root_keys.push(parsed.public_key().raw.to_vec());
            root_self_issued.push(self_issued);
            if !self_issued {
                bundle_intermediates.push(cert.clone());
            }
        }
        let root_subjects = roots
            .iter()
            .map(|anchor| DistinguishedName::in_sequence(anchor.subject.as_ref()))
            .collect();
        Ok(ChainVerifier {
            roots,
            root_keys,
            root_self_issued,
            bundle_intermediates,
            root_subjects,
            verify_depth,
            partial_chain: true,
            name_in_cn: false,
            role,
            algorithms: provider.signature_verification_algorithms,
            revocation,
        })
    }

    /// Whether a CA of the bundle that is not a self-issued root may end a chain (OpenSSL's
    /// X509_V_FLAG_PARTIAL_CHAIN).
    pub fn with_partial_chain(mut self, partial_chain: bool) -> Self {
        self.partial_chain = partial_chain;
        self
    }

    /// Whether an upstream certificate without a DNS subjectAltName may match by its CN.
    pub fn with_name_in_cn(mut self, name_in_cn: bool) -> Self {
        self.name_in_cn = name_in_cn;
        self
    }

    /// Verifies `end_entity` (with the `intermediates` the peer sent) up to a trusted CA.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), ChainRejection> {
        refuse_unsupported_key(end_entity, self.role)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| ChainRejection::Malformed(format!("{e:?}")))?;
        let usage = match self.role {
            PeerRole::Client => webpki::KeyUsage::client_auth(),
            PeerRole::Server => webpki::KeyUsage::server_auth(),
        };
        let mut candidates: Vec<CertificateDer<'_>> = intermediates.to_vec();
        if !self.partial_chain {
            candidates.extend(self.bundle_intermediates.iter().cloned());
        }
        // webpki calls this for every complete path it finds; a refusal makes it look for
        // another, so the most telling refusal is kept for when none is left.
        let refusal: RefCell<Option<ChainRejection>> = RefCell::new(None);
        let judge_path = |path: &webpki::VerifiedPath<'_>| {
            self.judge_path(path, now).map_err(|rejection| {
                let mut kept = refusal.borrow_mut();
                if kept
                    .as_ref()
                    .is_none_or(|old| telling(&rejection) > telling(old))
                {
                    *kept = Some(rejection);
                }
                webpki::Error::UnknownIssuer
            })
        };
        let result = cert.verify_for_usage(
            self.algorithms.all,
            &self.roots,
            &candidates,
            now,
            usage,
            None,
            Some(&judge_path),
        );
        match result {
            Ok(_) => Ok(()),
            // A path existed but was refused (depth, partial chain, revocation): that is the
            // useful reason, more than what the other paths ran into.
            Err(error) => Err(refusal
                .into_inner()
                .unwrap_or_else(|| self.explain(error, end_entity, intermediates))),
        }
    }

    /// The checks webpki leaves to us on a path it verified: depth (nginx's counting), where
    /// the path may end, and revocation (OpenSSL's CRL_CHECK_ALL, as nginx's ssl_crl).
    fn judge_path(
        &self,
        path: &webpki::VerifiedPath<'_>,
        now: UnixTime,
    ) -> Result<(), ChainRejection> {
        use x509_parser::prelude::*;
        if path.intermediate_certificates().count() > self.verify_depth as usize {
            return Err(ChainRejection::TooDeep {
                verify_depth: self.verify_depth,
            });
        }
        let anchor = self
            .roots
            .iter()
            .position(|root| std::ptr::eq(root, path.anchor()))
            .ok_or_else(|| {
                ChainRejection::Malformed("the trust anchor is not in the CA bundle".into())
            })?;
        if !self.partial_chain && !self.root_self_issued[anchor] {
            return Err(ChainRejection::PartialChain {
                anchor: distinguished_name_der(path.anchor().subject.as_ref()),
            });
        }
        let Some(crls) = &self.revocation else {
            return Ok(());
        };
        let ders: Vec<CertificateDer<'_>> = std::iter::once(path.end_entity().der())
            .chain(path.intermediate_certificates().map(|c| c.der()))
            .collect();
        let parsed = ders
            .iter()
            .map(|der| X509Certificate::from_der(der).map(|(_, cert)| cert))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ChainRejection::Malformed("a certificate of the chain does not parse".into())
            })?;
        let now = now.as_secs() as i64;
        for (index, cert) in parsed.iter().enumerate() {
            match parsed.get(index + 1) {
                Some(issuer) => {
                    crls.check(cert, index == 0, issuer.public_key().raw, Some(issuer), now)?
                }
                None => crls.check(cert, index == 0, &self.root_keys[anchor], None, now)?,
            }
        }
        Ok(())
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
            E::InvalidSignatureForPublicKey => ChainRejection::BadSignature,
            E::UnsupportedSignatureAlgorithmContext(_)
            | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                ChainRejection::UnsupportedAlgorithm
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
        if cert.verify_is_valid_for_subject_name(name).is_ok() {
            return Ok(());
        }
        let expected = name.to_str().into_owned();
        let common_names = cn_only_names(end_entity);
        match common_names {
            // OpenSSL's X509_check_host (nginx's proxy_ssl_verify) falls back to the CN when a
            // certificate has no DNS subjectAltName; RFC 6125, browsers and Go do not.
            Some(CommonNamesOnly { names, .. }) if self.name_in_cn => {
                let matched = names.iter().any(|cn| {
                    crate::access::DnsPattern::parse(cn).is_ok_and(|p| p.matches(&expected))
                });
                match matched {
                    true => Ok(()),
                    false => Err(ChainRejection::NameMismatch {
                        expected,
                        presented: presented_names(end_entity),
                    }),
                }
            }
            Some(CommonNamesOnly { names, other_sans }) => Err(ChainRejection::NoSubjectAltName {
                expected,
                common_names: names,
                other_sans,
            }),
            None => Err(ChainRejection::NameMismatch {
                expected,
                presented: presented_names(end_entity),
            }),
        }
    }

    /// How handshake signatures of this role's peers are checked.
    pub fn signatures(&self) -> HandshakeSignatures {
        HandshakeSignatures {
            algorithms: self.algorithms,
            role: self.role,
        }
    }
}

/// Checks the signature a peer makes in the handshake with its certificate's key, as every
/// certgate verifier does: an RSA-PSS key refused by name, then the provider's algorithms.
#[derive(Clone, Copy, Debug)]
pub struct HandshakeSignatures {
    pub algorithms: WebPkiSupportedAlgorithms,
    pub role: PeerRole,
}

impl HandshakeSignatures {
    pub fn verify_tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_pss_signature(dss, self.role)?;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    pub fn verify_tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        refuse_pss_signature(dss, self.role)?;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    /// The schemes to offer a peer: what the provider verifies, then the RSA-PSS key
    /// schemes.
    pub fn schemes(&self) -> Vec<SignatureScheme> {
        let mut schemes = self.algorithms.supported_schemes();
        schemes.extend(RSA_PSS_PSS_SCHEMES);
        schemes
    }
}

/// The handshake-signature methods of rustls' `ServerCertVerifier` and `ClientCertVerifier`
/// traits, the same in every certgate verifier: each answers through the verifier's own
/// `signatures()` (a [`HandshakeSignatures`]).
macro_rules! handshake_signature_methods {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.signatures().verify_tls12(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.signatures().verify_tls13(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.signatures().schemes()
        }
    };
}
pub(crate) use handshake_signature_methods;

/// The TLS signature schemes of RSA-PSS keys (id-RSASSA-PSS; RFC 8446's rsa_pss_pss_*),
/// which rustls does not implement. certgate offers them all the same, so that a peer whose
/// certificate has such a key sends it (rather than no certificate, or a handshake failure
/// with no reason) and is refused with one that names its key type.
const RSA_PSS_PSS_SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::Unknown(0x0809),
    SignatureScheme::Unknown(0x080a),
    SignatureScheme::Unknown(0x080b),
];

/// Refuses a handshake signature made with an RSA-PSS key, naming the key type.
fn refuse_pss_signature(dss: &DigitallySignedStruct, role: PeerRole) -> Result<(), rustls::Error> {
    match RSA_PSS_PSS_SCHEMES.contains(&dss.scheme) {
        true => Err(ChainRejection::UnsupportedKey { role }.into()),
        false => Ok(()),
    }
}

/// Refuses a peer certificate whose key rustls cannot use, with the key type in words
/// (otherwise the handshake fails later with a signature error that says nothing of it).
fn refuse_unsupported_key(
    end_entity: &CertificateDer<'_>,
    role: PeerRole,
) -> Result<(), ChainRejection> {
    use x509_parser::prelude::*;
    match X509Certificate::from_der(end_entity) {
        Ok((_, cert))
            if cert.public_key().algorithm.algorithm
                == x509_parser::oid_registry::OID_PKCS1_RSASSAPSS =>
        {
            Err(ChainRejection::UnsupportedKey { role })
        }
        _ => Ok(()),
    }
}

/// The subject CNs of a certificate that has no DNS subjectAltName.
struct CommonNamesOnly {
    names: Vec<String>,
    /// It has subjectAltNames, just none of type DNS.
    other_sans: bool,
}

fn cn_only_names(der: &CertificateDer<'_>) -> Option<CommonNamesOnly> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let sans = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        _ => Vec::new(),
    };
    if sans.iter().any(|n| matches!(n, GeneralName::DNSName(_))) {
        return None;
    }
    let names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    (!names.is_empty()).then_some(CommonNamesOnly {
        names,
        other_sans: !sans.is_empty(),
    })
}

/// A DN from the contents of its DER SEQUENCE (as webpki stores a trust anchor's subject).
fn distinguished_name_der(contents: &[u8]) -> String {
    use x509_parser::prelude::*;
    let mut der = vec![0x30];
    match contents.len() {
        n if n < 0x80 => der.push(n as u8),
        n if n <= 0xff => der.extend([0x81, n as u8]),
        n => der.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    der.extend_from_slice(contents);
    match X509Name::from_der(&der) {
        Ok((_, name)) => distinguished_name(&name),
        Err(_) => "(unparsable name)".into(),
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

pub use crate::config::model::ClientAuthMode;

/// Server mode's view of client certificates: rustls' hook around [`ChainVerifier`], plus
/// the listener's allow-list, so a refused identity never gets past the handshake.
#[derive(Debug)]
pub struct ClientCertPolicy {
    pub chain: ChainVerifier,
    pub mode: ClientAuthMode,
    pub access: AccessRules,
}

impl ClientCertPolicy {
    fn signatures(&self) -> HandshakeSignatures {
        self.chain.signatures()
    }

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

    handshake_signature_methods!();
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
    /// Handshake signatures are checked even when verification is off.
    pub fn signatures(&self) -> HandshakeSignatures {
        HandshakeSignatures {
            algorithms: self.algorithms,
            role: PeerRole::Server,
        }
    }

    /// The verdict on an upstream's certificate: chain (when verification is on), name, rules.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<(), ChainRejection> {
        match &self.chain {
            Some(chain) => {
                chain.verify(end_entity, intermediates, now)?;
                chain.verify_name(end_entity, server_name)?;
            }
            None => refuse_unsupported_key(end_entity, PeerRole::Server)?,
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

    handshake_signature_methods!();
}
