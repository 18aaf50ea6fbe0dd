//! The verified peer of a server-mode connection, in every form a backend is told about it.
//!
//! Each value matches the nginx variable of the same name byte for byte, because backends
//! written against nginx parse them: `$ssl_client_escaped_cert`, `$ssl_client_s_dn`, ...

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

/// What certgate knows about the client certificate of one connection.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    /// The PEM of the leaf, URL-escaped as nginx's `$ssl_client_escaped_cert`.
    pub escaped_pem: String,
    /// RFC 2253 subject, as nginx's `$ssl_client_s_dn`.
    pub subject_dn: String,
    /// RFC 2253 issuer, as nginx's `$ssl_client_i_dn`.
    pub issuer_dn: String,
    /// Uppercase hex serial, as nginx's `$ssl_client_serial`.
    pub serial: String,
    /// Lowercase hex SHA-1 of the DER, as nginx's `$ssl_client_fingerprint`.
    pub fingerprint_sha1: String,
}

impl PeerIdentity {
    /// Describes a leaf certificate; `None` if it does not parse (it was verified, so it does).
    pub fn from_leaf(leaf: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = X509Certificate::from_der(leaf).ok()?;
        Some(PeerIdentity {
            escaped_pem: escape_uri_component(&pem_encode(leaf)),
            subject_dn: distinguished_name(cert.subject()),
            issuer_dn: distinguished_name(cert.issuer()),
            serial: serial_hex(cert.raw_serial()),
            fingerprint_sha1: lowercase_hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf)
                    .as_ref(),
            ),
        })
    }
}

/// PEM exactly as OpenSSL writes a certificate: 64-column base64 lines, LF endings.
pub fn pem_encode(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 60);
    pem.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
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
fn serial_hex(raw: &[u8]) -> String {
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
