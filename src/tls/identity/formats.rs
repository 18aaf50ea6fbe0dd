//! The client certificate in each header format backends expect: nginx's escaped PEM,
//! RFC 9440, Envoy's `x-forwarded-client-cert` and Traefik's `X-Forwarded-Tls-Client-*`.
//!
//! Values are computed once per connection, when the identity is proven, and copied into each
//! request. Inbound copies of every one of these headers are stripped by `proxy::headers`.

use super::{pem_encode, PeerIdentity};
use base64::Engine;
use hyper::header::{HeaderName, HeaderValue};

/// The formats are configuration's vocabulary ([`crate::config::model`]); what each one
/// sends is decided here.
pub use crate::config::model::{IdentityFormat, XfccMode};

const X_CLIENT_CERT: &str = "x-client-cert";
const CLIENT_CERT: &str = "client-cert";
const CLIENT_CERT_CHAIN: &str = "client-cert-chain";
const XFCC: &str = "x-forwarded-client-cert";
const TRAEFIK_CERT: &str = "x-forwarded-tls-client-cert";
const TRAEFIK_INFO: &str = "x-forwarded-tls-client-cert-info";

impl IdentityFormat {
    /// Every header the format may set, also those it leaves out for some peers (RFC 9440's
    /// chain without intermediates): an inbound one of these names never survives next to
    /// ours, not even from a trusted forwarder.
    pub fn header_names(self) -> &'static [&'static str] {
        match self {
            IdentityFormat::EscapedPem => &[X_CLIENT_CERT],
            IdentityFormat::Rfc9440 => &[CLIENT_CERT, CLIENT_CERT_CHAIN],
            IdentityFormat::Xfcc => &[XFCC],
            IdentityFormat::Traefik => &[TRAEFIK_CERT, TRAEFIK_INFO],
        }
    }
}

const STANDARD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// RFC 9440 `Client-Cert`: the leaf as a structured-field byte sequence.
pub fn rfc9440_cert(identity: &PeerIdentity) -> String {
    format!(":{}:", STANDARD.encode(&identity.leaf))
}

/// RFC 9440 `Client-Cert-Chain`: the certificates after the leaf, as a list; `None` when the
/// client sent only its leaf.
pub fn rfc9440_chain(identity: &PeerIdentity) -> Option<String> {
    if identity.intermediates.is_empty() {
        return None;
    }
    let items: Vec<String> = identity
        .intermediates
        .iter()
        .map(|der| format!(":{}:", STANDARD.encode(der)))
        .collect();
    Some(items.join(", "))
}

/// An XFCC value, double-quoted (with `\"` for quotes) when it holds `,` `;` `=` or `"`.
fn xfcc_value(value: &str, always_quote: bool) -> String {
    if always_quote || value.contains([',', ';', '=', '"', '\\']) {
        // A quoted string: backslash escapes come first, so RFC 2253's `\,` stays intact.
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        value.to_string()
    }
}

/// This hop's Envoy `x-forwarded-client-cert` element.
pub fn xfcc_element(identity: &PeerIdentity) -> String {
    let mut parts = vec![
        format!("Hash={}", super::lowercase_hex(&identity.sha256)),
        format!("Cert={}", xfcc_value(&identity.escaped_pem, true)),
    ];
    if !identity.intermediates.is_empty() {
        // As Envoy: the whole chain, leaf included, each certificate escaped, concatenated.
        let chain: String = std::iter::once(&identity.leaf)
            .chain(&identity.intermediates)
            .map(|der| super::escape_uri_component(&pem_encode(der)))
            .collect();
        parts.push(format!("Chain={}", xfcc_value(&chain, true)));
    }
    parts.push(format!(
        "Subject={}",
        xfcc_value(&identity.subject_dn, true)
    ));
    parts.extend(
        identity
            .uris
            .iter()
            .map(|u| format!("URI={}", xfcc_value(u, false))),
    );
    parts.extend(
        identity
            .dns_names
            .iter()
            .map(|d| format!("DNS={}", xfcc_value(d, false))),
    );
    parts.join(";")
}

/// Traefik's `X-Forwarded-Tls-Client-Cert`: each certificate's DER in base64, no PEM
/// armour, joined by `,`.
pub fn traefik_cert(identity: &PeerIdentity) -> String {
    std::iter::once(&identity.leaf)
        .chain(&identity.intermediates)
        .map(|der| STANDARD.encode(der))
        .collect::<Vec<_>>()
        .join(",")
}

fn traefik_name(parts: &super::NameParts, with_org_unit: bool) -> String {
    let mut fields: Vec<String> = Vec::new();
    let mut add =
        |key: &str, values: &[String]| fields.extend(values.iter().map(|v| format!("{key}={v}")));
    add("DC", &parts.domain_components);
    add("C", &parts.countries);
    add("ST", &parts.provinces);
    add("L", &parts.localities);
    add("O", &parts.organizations);
    if with_org_unit {
        add("OU", &parts.org_units);
    }
    add("SN", &parts.serial_numbers);
    add("CN", &parts.common_names);
    fields.join(",")
}

/// Traefik's `X-Forwarded-Tls-Client-Cert-Info` for the leaf: `Subject`, `Issuer`,
/// `SerialNumber`, `NB`, `NA` and `SAN`, quoted, joined by `;`, then query-escaped as Go's
/// `url.QueryEscape` does.
pub fn traefik_info(identity: &PeerIdentity) -> String {
    let sans: Vec<&str> = identity
        .dns_names
        .iter()
        .chain(&identity.emails)
        .chain(&identity.ips)
        .chain(&identity.uris)
        .map(String::as_str)
        .collect();
    let mut fields = vec![
        format!("Subject=\"{}\"", traefik_name(&identity.subject, true)),
        format!("Issuer=\"{}\"", traefik_name(&identity.issuer, false)),
        format!("SerialNumber=\"{}\"", identity.serial_decimal),
        format!("NB=\"{}\"", identity.not_before),
        format!("NA=\"{}\"", identity.not_after),
    ];
    if !sans.is_empty() {
        fields.push(format!("SAN=\"{}\"", sans.join(",")));
    }
    query_escape(&fields.join(";"))
}

/// Go's `url.QueryEscape`: space becomes `+`; all but `A-Z a-z 0-9 - _ . ~` become `%XX`.
pub fn query_escape(text: &str) -> String {
    super::escape_uri_component(text).replace("%20", "+")
}

fn header(name: &'static str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    Some((
        HeaderName::from_static(name),
        HeaderValue::from_str(value).ok()?,
    ))
}

/// Every identity header of `formats` for one proven identity.
pub fn identity_headers(
    identity: &PeerIdentity,
    formats: &[IdentityFormat],
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    for format in formats {
        match format {
            IdentityFormat::EscapedPem => {
                headers.extend(header(X_CLIENT_CERT, &identity.escaped_pem))
            }
            IdentityFormat::Rfc9440 => {
                headers.extend(header(CLIENT_CERT, &rfc9440_cert(identity)));
                if let Some(chain) = rfc9440_chain(identity) {
                    headers.extend(header(CLIENT_CERT_CHAIN, &chain));
                }
            }
            IdentityFormat::Xfcc => headers.extend(header(XFCC, &xfcc_element(identity))),
            IdentityFormat::Traefik => {
                headers.extend(header(TRAEFIK_CERT, &traefik_cert(identity)));
                headers.extend(header(TRAEFIK_INFO, &traefik_info(identity)));
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_quotes_values_with_separators() {
        assert_eq!(xfcc_value("spiffe://a/b", false), "spiffe://a/b");
        assert_eq!(xfcc_value("a=b", false), "\"a=b\"");
        assert_eq!(xfcc_value("say \"hi\"", true), "\"say \\\"hi\\\"\"");
        assert_eq!(xfcc_value("CN=a\\,b", true), "\"CN=a\\\\,b\"");
    }

    #[test]
    fn every_format_is_listed_and_named() {
        let names: Vec<&str> = IdentityFormat::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.join(", "), IdentityFormat::NAMES);
        for format in IdentityFormat::ALL {
            assert_eq!(IdentityFormat::parse(format.name()), Some(format));
        }
    }

    #[test]
    fn query_escape_matches_go() {
        assert_eq!(query_escape("a b=\"c\";d,e/f"), "a+b%3D%22c%22%3Bd%2Ce%2Ff");
    }
}
