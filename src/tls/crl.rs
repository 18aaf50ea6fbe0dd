//! Certificate revocation lists, read as OpenSSL (and so nginx's `ssl_crl`) reads them.
//!
//! webpki refuses CRLs that OpenSSL accepts: v1 CRLs (what `openssl ca -gencrl` writes without
//! a `crlnumber` file) and v2 CRLs without extensions (Python `cryptography`'s default). So
//! certgate parses CRLs with x509-parser and judges revocation itself, on each path webpki
//! builds (see `ChainVerifier`), with OpenSSL's `CRL_CHECK_ALL` rule as nginx sets it: every
//! certificate of the path below the trust anchor needs a CRL from its issuer, signed by that
//! issuer's key.
//!
//! A CRL whose issuer is in the CA bundle has its signature checked when it is loaded, so
//! `certgate check` and a reload refuse a CRL signed by another key (a reload then keeps the
//! old snapshot serving) rather than failing every handshake afterwards. A CRL for an
//! intermediate that peers send is checked against that intermediate during the handshake.

use crate::tls::identity::{distinguished_name, serial_hex};
use crate::tls::verify::ChainRejection;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use std::path::Path;
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_CRL_DISTRIBUTION_POINTS,
    OID_X509_EXT_CRL_NUMBER, OID_X509_EXT_DELTA_CRL_INDICATOR, OID_X509_EXT_INVALIDITY_DATE,
    OID_X509_EXT_ISSUER, OID_X509_EXT_ISSUER_DISTRIBUTION_POINT, OID_X509_EXT_REASON_CODE,
};
use x509_parser::prelude::*;

/// Every CRL of one chain verifier.
#[derive(Debug)]
pub struct CrlSet {
    crls: Vec<Crl>,
    /// Keep using a CRL past its nextUpdate (`crl_expired = "allow"`).
    allow_expired: bool,
}

/// One parsed CRL: what revocation checks need, owned.
#[derive(Debug)]
struct Crl {
    /// The file, and the CRL's place in it when the file holds several, for messages.
    source: String,
    der: CertificateRevocationListDer<'static>,
    /// The issuer Name, DER as in the certificate (compared with a certificate's issuer).
    issuer: Vec<u8>,
    issuer_name: String,
    this_update: i64,
    /// None: the CRL never expires (a v1 CRL may leave nextUpdate out; OpenSSL accepts that).
    next_update: Option<i64>,
    /// Revoked serial numbers (DER integer contents without leading zero bytes), sorted.
    revoked: Vec<Vec<u8>>,
    scope: Scope,
    /// The names in the issuingDistributionPoint, when it has any: the CRL then covers only
    /// certificates that point to one of them (or to no distribution point at all).
    distribution_point: Option<Vec<String>>,
    /// Public keys (SPKI DER) of CA-bundle certificates that verified the signature at load.
    verified_keys: Vec<Vec<u8>>,
    /// Keys of peer-sent intermediates that verified the signature in a handshake, so each
    /// is checked once, not in every handshake (at most [`PEER_KEYS_KEPT`]).
    peer_verified_keys: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// How many peer-sent issuer keys a CRL remembers as having verified it.
const PEER_KEYS_KEPT: usize = 16;

/// Which certificates a CRL speaks for (issuingDistributionPoint's onlyContains*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    All,
    EndEntities,
    Authorities,
}

/// A CRL certgate will not use, naming its file (and its place in the file when the file
/// holds several).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct CrlError {
    pub file: String,
    pub problem: CrlProblem,
}

/// What is wrong with a CRL, in the words of the fix.
#[derive(Debug, thiserror::Error)]
pub enum CrlProblem {
    #[error("not a well-formed X.509 CRL ({}); fetch or regenerate it (openssl ca -gencrl), PEM or DER", malformed_why(.0))]
    Malformed(x509_parser::nom::Err<X509Error>),
    #[error("the CRL says it is version {0} (CRLs are version 1 or 2); regenerate it")]
    Version(u32),
    #[error("it is a delta CRL (deltaCRLIndicator), which lists only changes since a base CRL; configure the CA's complete CRL instead")]
    Delta,
    #[error("its issuingDistributionPoint extension is malformed; regenerate the CRL")]
    MalformedDistributionPoint,
    #[error("it is an indirect CRL (it revokes certificates of other CAs), which certgate does not support; configure each CA's own CRL")]
    Indirect,
    #[error("it covers only some revocation reasons (onlySomeReasons), so a certificate it does not list may still be revoked; configure the CA's complete CRL")]
    SomeReasons,
    #[error("it revokes attribute certificates only (onlyContainsAttributeCerts), not TLS certificates; configure the CA's CRL for certificates")]
    AttributeCertificates,
    #[error("its issuingDistributionPoint says it covers only end-entity and only CA certificates at once; regenerate the CRL")]
    ContradictoryScope,
    #[error("it has a critical extension certgate does not know ({oid}); RFC 5280 forbids using such a CRL, so none of its entries would count")]
    UnknownCriticalExtension { oid: String },
    #[error("the entry for serial {serial} names another issuer (certificateIssuer): indirect CRLs are not supported; configure each CA's own CRL")]
    EntryIssuer { serial: String },
    #[error("the entry for serial {serial} has a critical extension certgate does not know ({oid}); RFC 5280 forbids using such a CRL")]
    UnknownCriticalEntryExtension { serial: String, oid: String },
    /// `ca` names the CA of the bundle (and the bundle's file).
    #[error("{}; use the CRL that this CA published (openssl ca -gencrl with the CA's own key)", why.sentence(ca))]
    Signature { ca: String, why: SignatureProblem },
}

/// Why a CRL does not parse, without the DER layer's parser states.
fn malformed_why(error: &x509_parser::nom::Err<X509Error>) -> String {
    match error {
        x509_parser::nom::Err::Incomplete(_) => {
            "it ends in the middle (the file is cut short)".to_string()
        }
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => match e {
            // The DER layer's own messages name tags and parser states.
            X509Error::Der(_) | X509Error::NomError(_) => {
                "its DER encoding is broken or cut short".to_string()
            }
            other => other.to_string(),
        },
    }
}

/// A CRL found past its nextUpdate while loading, for the start-up warning.
pub struct ExpiredCrl {
    pub issuer: String,
    pub next_update: i64,
}

impl CrlSet {
    pub fn new(allow_expired: bool) -> CrlSet {
        CrlSet {
            crls: Vec::new(),
            allow_expired,
        }
    }

    pub fn allows_expired(&self) -> bool {
        self.allow_expired
    }

    /// Adds the CRLs of one file, refusing (in words, naming the file) one that certgate could
    /// not use faithfully or whose issuer is in `bundle` but did not sign it. Returns the
    /// CRLs already past their nextUpdate at `now`.
    pub fn add_file(
        &mut self,
        path: &Path,
        crls: &[CertificateRevocationListDer<'static>],
        bundle: &[CertificateDer<'_>],
        bundle_path: Option<&Path>,
        now: i64,
    ) -> Result<Vec<ExpiredCrl>, CrlError> {
        let bundle: Vec<X509Certificate<'_>> = bundle
            .iter()
            .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
            .collect();
        let mut expired = Vec::new();
        for (index, der) in crls.iter().enumerate() {
            let source = match crls.len() {
                1 => path.display().to_string(),
                _ => format!("{} (CRL #{})", path.display(), index + 1),
            };
            let refuse = |problem| CrlError {
                file: source.clone(),
                problem,
            };
            let mut crl = parse(&source, der).map_err(refuse)?;
            crl.verified_keys = check_signature(&crl, &bundle, bundle_path).map_err(refuse)?;
            if let Some(next_update) = crl.next_update.filter(|n| *n <= now) {
                expired.push(ExpiredCrl {
                    issuer: crl.issuer_name.clone(),
                    next_update,
                });
            }
            self.crls.push(crl);
        }
        Ok(expired)
    }

    /// Judges one certificate of a path: `issuer_key` is the SPKI DER of the certificate
    /// above it, and `issuer` that certificate when the peer sent it (its CRLs were not
    /// checked at load).
    pub(crate) fn check(
        &self,
        cert: &X509Certificate<'_>,
        end_entity: bool,
        issuer_key: &[u8],
        issuer: Option<&X509Certificate<'_>>,
        now: i64,
    ) -> Result<(), ChainRejection> {
        let covering: Vec<&Crl> = self
            .crls
            .iter()
            .filter(|crl| crl.covers(cert, end_entity))
            .collect();
        let Some(first) = covering.first() else {
            return Err(ChainRejection::NoCrl {
                issuer: distinguished_name(cert.issuer()),
            });
        };
        let signed: Vec<&Crl> = covering
            .iter()
            .copied()
            .filter(|crl| {
                crl.verified_keys.iter().any(|key| key == issuer_key)
                    || issuer.is_some_and(|issuer| crl.verified_by_peer_sent(issuer, issuer_key))
            })
            .collect();
        let Some(newest) = signed.iter().max_by_key(|crl| crl.this_update) else {
            return Err(ChainRejection::CrlSignature {
                issuer: distinguished_name(cert.issuer()),
                file: first.source.clone(),
            });
        };
        if let Some(next_update) = newest.next_update.filter(|n| *n <= now) {
            if !self.allow_expired {
                return Err(ChainRejection::CrlExpired {
                    next_update: rustls::pki_types::UnixTime::since_unix_epoch(
                        std::time::Duration::from_secs(next_update.max(0) as u64),
                    ),
                });
            }
        }
        // Every signed CRL counts, not only the newest: with CRLs split by distribution point
        // and a certificate naming none, no part may be skipped (failing closed).
        let serial = minimal(cert.raw_serial());
        if signed.iter().any(|crl| {
            crl.revoked
                .binary_search_by(|s| s.as_slice().cmp(serial))
                .is_ok()
        }) {
            return Err(ChainRejection::Revoked {
                serial: serial_hex(cert.raw_serial()),
                subject: distinguished_name(cert.subject()),
            });
        }
        Ok(())
    }
}

impl Crl {
    /// Whether a peer-sent intermediate signed this CRL; a key that did is remembered.
    fn verified_by_peer_sent(&self, issuer: &X509Certificate<'_>, issuer_key: &[u8]) -> bool {
        let mut known = self
            .peer_verified_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if known.iter().any(|key| key == issuer_key) {
            return true;
        }
        if verify_crl(self, issuer).is_err() {
            return false;
        }
        if known.len() < PEER_KEYS_KEPT {
            known.push(issuer_key.to_vec());
        }
        true
    }

    /// Whether this CRL speaks for `cert`: same issuer, and within its distribution point's
    /// scope (as webpki and OpenSSL decide it).
    fn covers(&self, cert: &X509Certificate<'_>, end_entity: bool) -> bool {
        if self.issuer != cert.issuer().as_raw() {
            return false;
        }
        match self.scope {
            Scope::EndEntities if !end_entity => return false,
            Scope::Authorities if end_entity => return false,
            _ => {}
        }
        let Some(crl_names) = &self.distribution_point else {
            return true;
        };
        let points = match cert.get_extension_unique(&OID_X509_EXT_CRL_DISTRIBUTION_POINTS) {
            // A certificate that names no distribution point is covered by its issuer's CRLs.
            Ok(None) => return true,
            Ok(Some(extension)) => match extension.parsed_extension() {
                ParsedExtension::CRLDistributionPoints(points) => points,
                _ => return false,
            },
            // Unreadable: covered by nothing, so the chain is refused (failing closed).
            Err(_) => return false,
        };
        points.points.iter().any(|point| {
            point.crl_issuer.is_none()
                && point.reasons.is_none()
                && point
                    .distribution_point
                    .as_ref()
                    .is_some_and(|name| point_names(name).iter().any(|n| crl_names.contains(n)))
        })
    }
}

/// A serial number's DER contents without leading zero bytes, so that a CA's non-minimal
/// encoding on one side still matches.
fn minimal(serial: &[u8]) -> &[u8] {
    let start = serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(serial.len().saturating_sub(1));
    &serial[start..]
}

fn point_names(name: &DistributionPointName<'_>) -> Vec<String> {
    match name {
        DistributionPointName::FullName(names) => names.iter().map(|n| format!("{n:?}")).collect(),
        DistributionPointName::NameRelativeToCRLIssuer(rdn) => vec![format!("{rdn:?}")],
    }
}

/// Parses one CRL, refusing in words what certgate could not apply faithfully.
fn parse(source: &str, der: &CertificateRevocationListDer<'static>) -> Result<Crl, CrlProblem> {
    let (_, crl) = x509_parser::parse_x509_crl(der).map_err(CrlProblem::Malformed)?;
    if let Some(version) = crl.version().filter(|v| *v != X509Version::V2) {
        return Err(CrlProblem::Version(version.0 + 1));
    }
    let mut scope = Scope::All;
    let mut distribution_point = None;
    for extension in crl.extensions() {
        let oid = &extension.oid;
        if *oid == OID_X509_EXT_DELTA_CRL_INDICATOR {
            return Err(CrlProblem::Delta);
        }
        if *oid == OID_X509_EXT_ISSUER_DISTRIBUTION_POINT {
            let ParsedExtension::IssuingDistributionPoint(point) = extension.parsed_extension()
            else {
                return Err(CrlProblem::MalformedDistributionPoint);
            };
            if point.indirect_crl {
                return Err(CrlProblem::Indirect);
            }
            if point.only_some_reasons.is_some() {
                return Err(CrlProblem::SomeReasons);
            }
            if point.only_contains_attribute_certs {
                return Err(CrlProblem::AttributeCertificates);
            }
            scope = match (point.only_contains_user_certs, point.only_contains_ca_certs) {
                (true, false) => Scope::EndEntities,
                (false, true) => Scope::Authorities,
                (false, false) => Scope::All,
                (true, true) => return Err(CrlProblem::ContradictoryScope),
            };
            distribution_point = point.distribution_point.as_ref().map(point_names);
            continue;
        }
        let known =
            *oid == OID_X509_EXT_CRL_NUMBER || *oid == OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER;
        if extension.critical && !known {
            return Err(CrlProblem::UnknownCriticalExtension {
                oid: oid.to_string(),
            });
        }
    }
    let mut revoked = Vec::new();
    for entry in crl.iter_revoked_certificates() {
        for extension in entry.extensions() {
            if extension.oid == OID_X509_EXT_ISSUER {
                return Err(CrlProblem::EntryIssuer {
                    serial: serial_hex(entry.raw_serial()),
                });
            }
            let known = extension.oid == OID_X509_EXT_REASON_CODE
                || extension.oid == OID_X509_EXT_INVALIDITY_DATE;
            if extension.critical && !known {
                return Err(CrlProblem::UnknownCriticalEntryExtension {
                    serial: serial_hex(entry.raw_serial()),
                    oid: extension.oid.to_string(),
                });
            }
        }
        revoked.push(minimal(entry.raw_serial()).to_vec());
    }
    revoked.sort();
    revoked.dedup();
    Ok(Crl {
        source: source.to_string(),
        der: der.clone(),
        issuer: crl.issuer().as_raw().to_vec(),
        issuer_name: distinguished_name(crl.issuer()),
        this_update: crl.last_update().timestamp(),
        next_update: crl.next_update().map(|t| t.timestamp()),
        revoked,
        scope,
        distribution_point,
        verified_keys: Vec::new(),
        peer_verified_keys: Default::default(),
    })
}

/// Checks a CRL against the CA-bundle certificates named as its issuer: one of them must
/// have signed it. Returns their keys; an issuer outside the bundle (an intermediate peers
/// send) is checked during the handshake instead.
fn check_signature(
    crl: &Crl,
    bundle: &[X509Certificate<'_>],
    bundle_path: Option<&Path>,
) -> Result<Vec<Vec<u8>>, CrlProblem> {
    let candidates: Vec<&X509Certificate<'_>> = bundle
        .iter()
        .filter(|ca| ca.subject().as_raw() == crl.issuer.as_slice())
        .collect();
    let mut keys = Vec::new();
    let mut problem = None;
    for ca in &candidates {
        match verify_crl(crl, ca) {
            Ok(()) => keys.push(ca.public_key().raw.to_vec()),
            Err(why) => problem = Some(why),
        }
    }
    let Some(problem) = problem.filter(|_| keys.is_empty()) else {
        return Ok(keys);
    };
    let ca = format!(
        "the CA \"{}\"{}",
        crl.issuer_name,
        bundle_path
            .map(|p| format!(" in {}", p.display()))
            .unwrap_or_default()
    );
    Err(CrlProblem::Signature { ca, why: problem })
}

/// Why a CA's key does not vouch for a CRL.
#[derive(Debug)]
pub enum SignatureProblem {
    Mismatch,
    NotCrlSigner,
    /// The signature algorithm's OID.
    Unsupported(String),
}

impl SignatureProblem {
    /// The sentence for `ca` ("the CA \"NAME\" in FILE").
    fn sentence(&self, ca: &str) -> String {
        match self {
            SignatureProblem::Mismatch => format!(
                "the CRL's signature does not verify against {ca}: it was signed by another key"
            ),
            SignatureProblem::NotCrlSigner => {
                format!("{ca} may not sign CRLs (its keyUsage lacks cRLSign)")
            }
            SignatureProblem::Unsupported(algorithm) => format!(
                "the CRL is signed with an algorithm certgate cannot verify ({algorithm}), so it cannot be checked against {ca}"
            ),
        }
    }
}

/// Whether `issuer` signed `crl` and may sign CRLs.
fn verify_crl(crl: &Crl, issuer: &X509Certificate<'_>) -> Result<(), SignatureProblem> {
    if let Ok(Some(usage)) = issuer.key_usage() {
        if !usage.value.crl_sign() {
            return Err(SignatureProblem::NotCrlSigner);
        }
    }
    // It parsed when it was loaded.
    let (_, parsed) =
        x509_parser::parse_x509_crl(&crl.der).map_err(|_| SignatureProblem::Mismatch)?;
    parsed
        .verify_signature(issuer.public_key())
        .map_err(|e| match e {
            X509Error::SignatureUnsupportedAlgorithm => {
                SignatureProblem::Unsupported(parsed.signature_algorithm.algorithm.to_id_string())
            }
            _ => SignatureProblem::Mismatch,
        })
}

#[cfg(test)]
mod tests {
    use super::minimal;

    #[test]
    fn serials_compare_without_leading_zero_bytes() {
        assert_eq!(minimal(&[0x00, 0x80, 0x01]), &[0x80, 0x01]);
        assert_eq!(minimal(&[0x00, 0x00, 0x10]), &[0x10]);
        assert_eq!(minimal(&[0x10, 0x00]), &[0x10, 0x00]);
        assert_eq!(minimal(&[0x00]), &[0x00]);
    }
}
