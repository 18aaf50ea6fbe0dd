//! The verified peer of a server-mode connection, in every form a backend is told about it.
//!
//! Each value matches the nginx variable of the same name byte for byte, because backends
//! written against nginx parse them: `$ssl_client_escaped_cert`, `$ssl_client_s_dn`, ...
//! The other proxies' header formats are in [`formats`].

pub mod formats;

use base64::Engine;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::*;

/// The outcome of client certificate verification (nginx's `$ssl_client_verify`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientVerdict {
    /// No certificate was sent (or none was asked for).
    None,
    Success,
    /// A certificate was sent and refused; only reachable with `optional_no_ca`.
    Failed(String),
}

impl std::fmt::Display for ClientVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientVerdict::None => f.write_str("NONE"),
            ClientVerdict::Success => f.write_str("SUCCESS"),
            ClientVerdict::Failed(reason) => write!(f, "FAILED:{reason}"),
        }
    }
}

/// What certgate knows about the client certificate of one connection: computed once, after
/// the chain verified, and read by header rules, identity formats and access rules.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity {
    /// The leaf, DER.
    pub leaf: Vec<u8>,
    /// The certificates the peer sent after its leaf, DER.
    pub intermediates: Vec<Vec<u8>>,
    /// The PEM of the leaf, URL-escaped as nginx's `$ssl_client_escaped_cert`.
    pub escaped_pem: String,
    /// RFC 2253 subject, as nginx's `$ssl_client_s_dn`.
    pub subject_dn: String,
    /// RFC 2253 issuer, as nginx's `$ssl_client_i_dn`.
    pub issuer_dn: String,
    /// Uppercase hex serial, as nginx's `$ssl_client_serial`.
    pub serial: String,
    /// The serial in decimal (Traefik's form).
    pub serial_decimal: String,
    /// Lowercase hex SHA-1 of the DER, as nginx's `$ssl_client_fingerprint`.
    pub fingerprint_sha1: String,
    /// SHA-256 of the leaf DER.
    pub sha256: [u8; 32],
    /// SHA-256 of the leaf's SubjectPublicKeyInfo (the key pin).
    pub spki_sha256: [u8; 32],
    /// Subject attributes by kind, in certificate order.
    pub subject: NameParts,
    pub issuer: NameParts,
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub emails: Vec<String>,
    pub ips: Vec<String>,
    /// Validity as Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// The attributes of a distinguished name that identity formats and rules use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameParts {
    pub common_names: Vec<String>,
    pub organizations: Vec<String>,
    pub org_units: Vec<String>,
    pub countries: Vec<String>,
    pub provinces: Vec<String>,
    pub localities: Vec<String>,
    pub domain_components: Vec<String>,
    pub serial_numbers: Vec<String>,
}

impl NameParts {
    fn from_name(name: &X509Name<'_>) -> NameParts {
        use x509_parser::oid_registry as oids;
        let mut parts = NameParts::default();
        for attr in name.iter_attributes() {
            let Ok(value) = attr.as_str() else { continue };
            let list = match attr.attr_type() {
                oid if *oid == oids::OID_X509_COMMON_NAME => &mut parts.common_names,
                oid if *oid == oids::OID_X509_ORGANIZATION_NAME => &mut parts.organizations,
                oid if *oid == oids::OID_X509_ORGANIZATIONAL_UNIT => &mut parts.org_units,
                oid if *oid == oids::OID_X509_COUNTRY_NAME => &mut parts.countries,
                oid if *oid == oids::OID_X509_STATE_OR_PROVINCE_NAME => &mut parts.provinces,
                oid if *oid == oids::OID_X509_LOCALITY_NAME => &mut parts.localities,
                oid if *oid == oids::OID_DOMAIN_COMPONENT => &mut parts.domain_components,
                oid if *oid == oids::OID_X509_SERIALNUMBER => &mut parts.serial_numbers,
                _ => continue,
            };
            list.push(value.to_string());
        }
        parts
    }
}

/// SHA-256 of DER (a certificate's fingerprint, a key's pin).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl PeerIdentity {
    /// Describes a verified chain (leaf first); `None` if the leaf does not parse.
    pub fn from_chain(
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(leaf).ok()?;
        let summary = super::CertSummary::of(&cert);
        let mut identity = PeerIdentity {
            leaf: leaf.to_vec(),
            intermediates: intermediates.iter().map(|c| c.to_vec()).collect(),
            escaped_pem: escape_uri_component(&pem_encode(leaf)),
            subject_dn: summary.subject,
            issuer_dn: summary.issuer,
            serial: summary.serial,
            serial_decimal: cert.tbs_certificate.serial.to_str_radix(10),
            fingerprint_sha1: lowercase_hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf)
                    .as_ref(),
            ),
            sha256: sha256(leaf),
            spki_sha256: summary.spki_sha256,
            subject: NameParts::from_name(cert.subject()),
            issuer: NameParts::from_name(cert.issuer()),
            not_before: summary.not_before,
            not_after: summary.not_after,
            ..PeerIdentity::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => identity.dns_names.push(dns.to_string()),
                    GeneralName::URI(uri) => identity.uris.push(uri.to_string()),
                    GeneralName::RFC822Name(email) => identity.emails.push(email.to_string()),
                    GeneralName::IPAddress(bytes) => identity.ips.push(ip_text(bytes)),
                    _ => {}
                }
            }
        }
        Some(identity)
    }

    /// Subject and SANs in one phrase, for log lines about this peer.
    pub fn describe(&self) -> String {
        let mut sans: Vec<String> = Vec::new();
        sans.extend(self.dns_names.iter().map(|n| format!("DNS:{n}")));
        sans.extend(self.uris.iter().map(|n| format!("URI:{n}")));
        sans.extend(self.ips.iter().map(|n| format!("IP:{n}")));
        sans.extend(self.emails.iter().map(|n| format!("email:{n}")));
        format!(
            "subject \"{}\", SANs [{}]",
            self.subject_dn,
            sans.join(", ")
        )
    }
}

/// PEM exactly as OpenSSL writes a certificate: 64-column base64 lines, LF endings.
pub fn pem_encode(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// A PEM block with any label (`PRIVATE KEY`, `EC PRIVATE KEY`, ...), OpenSSL's layout.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
    pem.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// nginx's `ngx_escape_uri(NGX_ESCAPE_URI_COMPONENT)`: everything but `A-Z a-z 0-9 - . _ ~`
/// becomes `%XX` with uppercase hex.
pub fn escape_uri_component(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() * 3 / 2);
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 0xf) as usize] as char);
        }
    }
    out
}

pub fn lowercase_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// OpenSSL prints serials as uppercase hex of the magnitude, without DER's sign padding.
pub fn serial_hex(raw: &[u8]) -> String {
    let magnitude = match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    if magnitude.is_empty() {
        return "00".into();
    }
    magnitude.iter().map(|b| format!("{b:02X}")).collect()
}

/// RFC 2253 form of a name, as OpenSSL's `XN_FLAG_RFC2253` prints it (and so nginx):
/// last RDN first, `,` between RDNs, `+` inside one.
pub fn distinguished_name(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let key = match attr.attr_type() {
                        oid if oid == &x509_parser::oid_registry::OID_PKCS9_EMAIL_ADDRESS => {
                            "emailAddress".to_string()
                        }
                        oid => x509_parser::objects::oid2abbrev(oid, registry)
                            .map(str::to_string)
                            .unwrap_or_else(|_| oid.to_id_string()),
                    };
                    let value = match attr.as_str() {
                        Ok(text) => escape_rfc2253(text),
                        Err(_) => format!("#{}", lowercase_hex(attr.attr_value().data)),
                    };
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (index, ch) in value.chars().enumerate() {
        let edge_space = ch == ' ' && (index == 0 || index == last);
        if matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (index == 0 && ch == '#')
            || edge_space
        {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// The names a certificate presents: DNS and IP SANs, or the subject CN when it has none.
pub fn presented_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return vec!["(unparsable certificate)".into()];
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(format!("DNS:{dns}")),
                GeneralName::IPAddress(bytes) => names.push(format!("IP:{}", ip_text(bytes))),
                GeneralName::URI(uri) => names.push(format!("URI:{uri}")),
                _ => {}
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(text) = cn.as_str() {
                names.push(format!("CN:{text}"));
            }
        }
    }
    names
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(bytes);
            std::net::Ipv6Addr::from(octets).to_string()
        }
        _ => lowercase_hex(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_nginx_uri_component() {
        assert_eq!(
            escape_uri_component("-----BEGIN X-----\nab+/=~._\n"),
            "-----BEGIN%20X-----%0Aab%2B%2F%3D~._%0A"
        );
    }

    #[test]
    fn serial_drops_sign_padding_only() {
        assert_eq!(serial_hex(&[0x00, 0x9a, 0x01]), "9A01");
        assert_eq!(serial_hex(&[0x01, 0x00]), "0100");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn rfc2253_escapes_specials() {
        assert_eq!(escape_rfc2253("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc2253("#x "), "\\#x\\ ");
    }
}
