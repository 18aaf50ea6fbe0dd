//! Certificate authorities: throwaway ones for the demo and the tests, and (in `dir`) the
//! small on-disk development CA of `certgate pki`.
//!
//! Everything here is generated at run time: no private key ever lives in the repository. Certificates are built with rcgen; each knob exists because a test or the demo
//! needs a certificate that is wrong in exactly one way (expired, wrong usage, long chain).

pub mod dir;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

/// The key algorithms certgate supports for its own identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Ed25519,
}

impl KeyType {
    pub const ALL: [KeyType; 4] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Ed25519,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Ed25519 => "ed25519",
        }
    }

    pub fn parse(name: &str) -> Option<KeyType> {
        KeyType::ALL.into_iter().find(|k| k.name() == name)
    }

    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyType::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            KeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        }
    }
}

/// What a leaf certificate is for; decides its extended key usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
    /// Both serverAuth and clientAuth, as many internal PKIs issue.
    Both,
}

/// A certificate with its private key, both in PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    /// PKCS#8 PEM.
    pub key_pem: String,
    /// PKCS#8 DER.
    pub key_der: Vec<u8>,
}

/// A certificate authority (root or intermediate) that can issue more certificates.
pub struct Authority {
    pub issued: Issued,
    issuer: Issuer<'static, KeyPair>,
    /// The subject O of this CA, carried into everything it issues.
    organization: String,
}

/// Why a CA could not be read back from its PEM files.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("the CA key: {0}")]
    Key(rcgen::Error),
    #[error("the CA certificate: {0}")]
    CertificatePem(rustls::pki_types::pem::Error),
    #[error("the CA certificate does not parse: {0}")]
    Unparsable(x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("the CA key does not belong to the CA certificate")]
    KeyMismatch,
    /// rcgen cannot issue with this certificate.
    #[error("the CA certificate: {0}")]
    CertificateRefused(rcgen::Error),
}

/// The organization of the throwaway authorities of the demo and the tests.
pub const TEST_ORGANIZATION: &str = "certgate test PKI";

/// The description of a leaf certificate to issue.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    pub common_name: String,
    /// Organization; without one, the issuing authority's.
    pub organization: Option<String>,
    /// Organizational unit, if any.
    pub org_unit: Option<String>,
    /// Subject alternative names: `scheme://...` is a URI, an IP address is an IP, anything
    /// else a DNS name.
    pub names: Vec<String>,
    pub usage: Usage,
    pub key_type: KeyType,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafSpec {
    /// A leaf valid from an hour ago for 90 days, ECDSA P-256.
    pub fn new(common_name: &str, usage: Usage) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: common_name.to_string(),
            organization: None,
            org_unit: None,
            names: vec![common_name.to_string()],
            usage,
            key_type: KeyType::EcdsaP256,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(90),
        }
    }

    pub fn names(mut self, names: &[&str]) -> Self {
        self.names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    pub fn organization(mut self, organization: &str) -> Self {
        self.organization = Some(organization.to_string());
        self
    }

    pub fn org_unit(mut self, unit: &str) -> Self {
        self.org_unit = Some(unit.to_string());
        self
    }

    pub fn key_type(mut self, key_type: KeyType) -> Self {
        self.key_type = key_type;
        self
    }

    pub fn validity(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

fn distinguished_name(organization: &str, common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, organization);
    name.push(DnType::CommonName, common_name);
    name
}

fn issued(cert: &rcgen::Certificate, key: &KeyPair) -> Issued {
    Issued {
        cert_pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    }
}

fn ca_params(organization: &str, common_name: &str, days: i64) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(organization, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    params
}

impl Authority {
    /// A new self-signed root CA, valid for a year.
    pub fn root(common_name: &str, key_type: KeyType) -> Result<Self, rcgen::Error> {
        Self::root_for_days(TEST_ORGANIZATION, common_name, key_type, 365)
    }

    /// A new self-signed root CA valid for `days`.
    pub fn root_for_days(
        organization: &str,
        common_name: &str,
        key_type: KeyType,
        days: i64,
    ) -> Result<Self, rcgen::Error> {
        let params = ca_params(organization, common_name, days);
        let key = key_type.generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            issued: issued(&cert, &key),
            issuer: Issuer::new(params, key),
            organization: organization.to_string(),
        })
    }

    /// An ECDSA P-256 CA certificate signed by this one, valid for a year.
    pub fn intermediate(&self, common_name: &str) -> Result<Authority, rcgen::Error> {
        self.intermediate_for_days(common_name, KeyType::EcdsaP256, 365)
    }

    /// A CA certificate signed by this one, valid for `days`.
    pub fn intermediate_for_days(
        &self,
        common_name: &str,
        key_type: KeyType,
        days: i64,
    ) -> Result<Authority, rcgen::Error> {
        let params = ca_params(&self.organization, common_name, days);
        let key = key_type.generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Authority {
            issued: issued(&cert, &key),
            issuer: Issuer::new(params, key),
            organization: self.organization.clone(),
        })
    }

    /// A CA read back from its PEM certificate and PKCS#8 PEM key, as `pki init` wrote them.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, AuthorityError> {
        let key = KeyPair::from_pem(key_pem).map_err(AuthorityError::Key)?;
        let cert_der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(AuthorityError::CertificatePem)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(AuthorityError::Unparsable)?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(AuthorityError::KeyMismatch);
        }
        let issued = Issued {
            cert_pem: cert_pem.to_string(),
            cert_der: cert_der.to_vec(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        };
        let organization = parsed
            .subject()
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .unwrap_or(TEST_ORGANIZATION)
            .to_string();
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(AuthorityError::CertificateRefused)?;
        Ok(Authority {
            issued,
            issuer,
            organization,
        })
    }
    /// A leaf (end-entity) certificate signed by this CA, with a new key.
    pub fn leaf(&self, spec: &LeafSpec) -> Result<Issued, rcgen::Error> {
        self.leaf_for_key(spec, spec.key_type.generate()?)
    }

    /// A leaf certificate for an existing key (PKCS#8 PEM): a renewal that keeps the key, as
    /// a key that lives in a token must.
    pub fn renew_for_key(&self, spec: &LeafSpec, key_pem: &str) -> Result<Issued, rcgen::Error> {
        self.leaf_for_key(spec, KeyPair::from_pem(key_pem)?)
    }

    fn leaf_for_key(&self, spec: &LeafSpec, key: KeyPair) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::default();
        let organization = spec.organization.as_ref().unwrap_or(&self.organization);
        params.distinguished_name = distinguished_name(organization, &spec.common_name);
        if let Some(unit) = &spec.org_unit {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, unit.as_str());
        }
        params.subject_alt_names = spec
            .names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) if name.contains("://") => Ok(SanType::URI(name.clone().try_into()?)),
                Err(_) => Ok(SanType::DnsName(name.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match spec.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(issued(&cert, &key))
    }

    /// A CRL signed by this CA revoking `revoked` (DER certificates it issued), valid from an
    /// hour ago until `next_update`.
    pub fn crl(
        &self,
        revoked: &[&[u8]],
        next_update: OffsetDateTime,
    ) -> Result<String, rcgen::Error> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(der)
                    .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
                let serial = match cert.raw_serial() {
                    [0, rest @ ..] if !rest.is_empty() => rest,
                    other => other,
                };
                Ok(rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(serial),
                    revocation_time: now - Duration::hours(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: (now - Duration::hours(1)).min(next_update - Duration::hours(1)),
            next_update,
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer)?.pem()
    }
}
