//! Every header edit certgate makes, in one place.
//!
//! For each request, in this order:
//! 1. In server mode, every identity header is removed (by name, and by prefix for families
//!    like `X-SSL-*`), in any letter case and however often it was repeated: a client must
//!    never be able to forge its identity, not even through a rule that copies an inbound
//!    header (`$http_x_client_cert` is empty in server mode). A peer that matches
//!    `trusted_forwarders` (a proxy that sets them itself for its own clients) keeps its
//!    identity headers, except those certgate sets itself, which are removed so that ours
//!    replace them. Repeated `Cookie` fields (HTTP/2) are joined into one for HTTP/1 backends.
//! 2. Values of all rules are computed from the request as it arrived (so `$http_x` sees the
//!    client's header even if a rule replaces it, as in nginx).
//! 3. Hop-by-hop headers (`Connection` and those it names, `Keep-Alive`, `TE`, ...) are removed.
//! 4. In server mode, the connection's proven identity is added in each configured format
//!    (`x-forwarded-client-cert` appended to the inbound one only for trusted peers:
//!    `xfcc_trusted` and `trusted_forwarders`).
//! 5. The rules run in order: default rules for the mode, then the listener's `set_header`
//!    rules (a listener rule replaces the default of the same name). A rule whose value comes
//!    out empty removes the header, which is how nginx's `if ($http_x) { proxy_set_header .. }`
//!    is written here.

use super::ConnectionInfo;
use crate::access::AccessRules;
use crate::config::template::{Segment, Template, Variable};
use crate::config::{HeaderRule, ListenerConfig, ModeConfig};
use crate::tls::identity::formats::{identity_headers, IdentityFormat, XfccMode};
use crate::tls::identity::PeerIdentity;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;

/// Identity headers that no [`IdentityFormat`] sets: certgate's default `x-client-verify`
/// rule, and what other proxies set, which a backend moved from behind them still reads.
/// Server mode strips these, every format's [`IdentityFormat::header_names`] (of all formats,
/// not only the listener's: a client must not forge one the listener does not use either) and
/// the [`IDENTITY_PREFIXES`] families from inbound requests whatever the listener's rules say.
/// Names are compared with `_` read as `-` (see [`is_identity_name`]).
pub const OTHER_IDENTITY_HEADERS: &[&str] = &[
    // certgate's default server-mode rule, and nginx's usual names.
    "x-client-verify",
    "x-client-cert-chain",
    // What nginx and HAProxy setups commonly forward.
    "x-ssl-cert",
    "x-ssl-client-cert",
    "x-ssl-client-verify",
    "x-ssl-client-s-dn",
    "x-ssl-client-i-dn",
    "x-ssl-client-serial",
    "x-ssl-client-fingerprint",
    "ssl-client-cert",
    "ssl-client-verify",
    "x-client-dn",
    "x-client-cn",
    "x-client-s-dn",
    "x-client-i-dn",
    "x-client-serial",
    "x-client-subject",
    "x-client-issuer",
    "x-client-fingerprint",
    "x-client-certificate",
    // Azure App Service and Application Gateway.
    "x-arr-clientcert",
];

/// Families of identity headers stripped by prefix, so that variants a backend written for
/// another proxy reads (`X-SSL-Client-CN`, `X-Client-Cert-Chain-0`, AWS ALB's
/// `X-Amzn-Mtls-Clientcert-Leaf`, Cloudflare's `Cf-Client-Cert-Sha256`, Google's
/// `X-Client-Cert-Hash`, ...) cannot be forged.
pub const IDENTITY_PREFIXES: &[&str] = &[
    "x-ssl-",
    "ssl-client-",
    "x-client-cert",
    "x-client-verify",
    "x-forwarded-tls-client-cert",
    "x-forwarded-client-cert",
    "x-amzn-mtls-clientcert",
    "x-arr-clientcert",
    "cf-client-cert",
    "x-tls-client-",
];

/// Whether a (lower-case) header name is, or is a spelling of, an identity header. `_` counts
/// as `-` because CGI and WSGI turn both into `_` (`HTTP_X_CLIENT_CERT`), so `X_Client_Cert`
/// and `X-Client-Cert` reach such a backend as one variable.
pub fn is_identity_name(name: &str) -> bool {
    let name = dashed(name);
    let name = name.as_ref();
    IdentityFormat::ALL
        .iter()
        .any(|f| f.header_names().contains(&name))
        || OTHER_IDENTITY_HEADERS.contains(&name)
        || IDENTITY_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A header name with `_` read as `-`, borrowed when it has none (the usual case).
fn dashed(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('_') {
        name.replace('_', "-").into()
    } else {
        name.into()
    }
}

const XFCC: &str = "x-forwarded-client-cert";

/// HTTP/2 clients send each cookie as its own field; HTTP/1 backends expect one `Cookie`
/// header, joined with `; ` (RFC 9113 section 8.2.3), as nginx does.
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

/// The identity headers of one connection, computed once when its identity is proven.
#[derive(Debug, Clone, Default)]
pub struct IdentityHeaders {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The peer may hand on an inbound `x-forwarded-client-cert` (`xfcc_mode = "append"`).
    pub xfcc_trusted: bool,
    /// The peer matches `trusted_forwarders`: its inbound identity headers are kept.
    pub trusted_forwarder: bool,
}

/// The compiled header edits of one listener.
#[derive(Debug, Clone)]
pub struct HeaderEdits {
    /// Server mode: inbound identity headers are stripped.
    strips_identity: bool,
    /// Headers that rules fill from `$ssl_client_*`, stripped too (`_` read as `-`).
    identity_rule_headers: Vec<String>,
    /// Every header certgate sets from the verified certificate (its formats' and the
    /// identity rules'), dashed: stripped even from a trusted forwarder, since ours replace
    /// them.
    own_headers: Vec<String>,
    /// Inbound headers with `_` in their names are forwarded (nginx's `underscores_in_headers`).
    underscores_in_headers: bool,
    /// The listener's name, for log lines.
    listener: String,
    formats: Vec<IdentityFormat>,
    xfcc_mode: XfccMode,
    xfcc_trusted: AccessRules,
    trusted_forwarders: AccessRules,
    rules: Vec<HeaderRule>,
    /// Client mode: the Host to send when no rule sets one.
    default_host: Option<HeaderValue>,
    scheme: &'static str,
}

fn rule(name: &'static str, variable: Variable) -> HeaderRule {
    HeaderRule {
        name: HeaderName::from_static(name),
        value: Template::variable(variable),
    }
}

impl HeaderEdits {
    pub fn new(listener: &ListenerConfig) -> HeaderEdits {
        let (defaults, default_host, scheme) = match &listener.mode {
            ModeConfig::Server(_) => (
                vec![
                    rule("x-forwarded-for", Variable::ProxyAddXForwardedFor),
                    rule("x-forwarded-proto", Variable::Scheme),
                    rule("x-real-ip", Variable::RemoteAddr),
                    rule("x-client-verify", Variable::SslClientVerify),
                ],
                None,
                "https",
            ),
            ModeConfig::Client(client) => (
                vec![rule("x-real-ip", Variable::RemoteAddr)],
                HeaderValue::from_str(&client.upstream_host_header).ok(),
                "http",
            ),
        };
        let defaults = if listener.default_headers {
            defaults
        } else {
            Vec::new()
        };
        let mut rules: Vec<HeaderRule> = defaults
            .into_iter()
            .filter(|d| !listener.header_rules.iter().any(|r| r.name == d.name))
            .collect();
        rules.extend(listener.header_rules.iter().cloned());

        let strips_identity = matches!(listener.mode, ModeConfig::Server(_));
        let identity_rule_headers: Vec<String> = rules
            .iter()
            .filter(|r| strips_identity && r.value.uses_client_identity())
            .map(|r| dashed(r.name.as_str()).into_owned())
            .collect();
        let (formats, xfcc_mode, xfcc_trusted, trusted_forwarders) = match &listener.mode {
            ModeConfig::Server(server) => (
                server.identity_formats.clone(),
                server.xfcc_mode,
                server.xfcc_trusted.clone(),
                server.trusted_forwarders.clone(),
            ),
            ModeConfig::Client(_) => (
                Vec::new(),
                XfccMode::Sanitize,
                AccessRules::default(),
                AccessRules::default(),
            ),
        };
        let own_headers = formats
            .iter()
            .flat_map(|f| f.header_names().iter().map(|n| n.to_string()))
            .chain(identity_rule_headers.iter().cloned())
            .collect();
        HeaderEdits {
            strips_identity,
            identity_rule_headers,
            own_headers,
            underscores_in_headers: listener.client_limits.underscores_in_headers,
            listener: listener.name.clone(),
            formats,
            xfcc_mode,
            xfcc_trusted,
            trusted_forwarders,
            rules,
            default_host,
            scheme,
        }
    }

    /// Whether an inbound header claims an identity (and so is never trusted from a client).
    fn is_identity_header(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        is_identity_name(name) || {
            let name = dashed(name);
            self.identity_rule_headers.iter().any(|h| *h == name)
        }
    }

    /// Whether an inbound header is one certgate sets itself from the verified certificate.
    fn is_own_header(&self, name: &HeaderName) -> bool {
        let name = dashed(name.as_str());
        self.own_headers.iter().any(|h| *h == name)
    }

    /// The identity headers for a connection whose peer proved `identity`.
    pub fn identity_headers(&self, identity: &PeerIdentity) -> IdentityHeaders {
        // An empty rule set admits everyone (`AccessRules::allows`); here it names nobody.
        let named = |rules: &AccessRules| !rules.is_empty() && rules.allows(identity);
        let trusted_forwarder = named(&self.trusted_forwarders);
        IdentityHeaders {
            headers: identity_headers(identity, &self.formats),
            xfcc_trusted: self.xfcc_mode == XfccMode::Append
                && (trusted_forwarder || named(&self.xfcc_trusted)),
            trusted_forwarder,
        }
    }

    /// Applies every edit to a request about to go upstream.
    pub fn apply(&self, parts: &mut Parts, connection: &ConnectionInfo) {
        if !self.underscores_in_headers {
            drop_underscored(&mut parts.headers, connection, &self.listener);
        }
        let identity = connection.tls.as_ref().map(|t| &t.identity_headers);
        // Only a trusted peer's inbound XFCC survives, and only to have ours appended.
        let inbound_xfcc: Vec<u8> = match identity {
            Some(identity) if identity.xfcc_trusted => {
                let values: Vec<&[u8]> = parts
                    .headers
                    .get_all(XFCC)
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect();
                values.join(&b","[..])
            }
            _ => Vec::new(),
        };
        if self.strips_identity {
            let forwarder = identity.is_some_and(|i| i.trusted_forwarder);
            // One pass over the few inbound names; nothing is allocated unless one is forged.
            let forged: Vec<HeaderName> = parts
                .headers
                .keys()
                .filter(|name| {
                    if forwarder {
                        self.is_own_header(name)
                    } else {
                        self.is_identity_header(name)
                    }
                })
                .cloned()
                .collect();
            for name in forged {
                parts.headers.remove(name);
            }
        }
        join_cookies(&mut parts.headers);
        let values: Vec<Option<HeaderValue>> = self
            .rules
            .iter()
            .map(|rule| self.evaluate(&rule.value, parts, connection))
            .collect();
        remove_hop_by_hop(&mut parts.headers);
        if !parts.headers.contains_key(header::HOST) {
            // HTTP/2 requests carry the authority in the URI instead.
            let host = self.default_host.clone().or_else(|| {
                parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
            if let Some(host) = host {
                parts.headers.insert(header::HOST, host);
            }
        } else if let Some(host) = &self.default_host {
            parts.headers.insert(header::HOST, host.clone());
        }
        for (name, value) in identity.map(|i| i.headers.as_slice()).unwrap_or_default() {
            if name == XFCC && !inbound_xfcc.is_empty() {
                let mut joined = inbound_xfcc.clone();
                joined.push(b',');
                joined.extend_from_slice(value.as_bytes());
                if let Ok(joined) = HeaderValue::from_bytes(&joined) {
                    parts.headers.insert(name.clone(), joined);
                    continue;
                }
            }
            parts.headers.insert(name.clone(), value.clone());
        }
        for (rule, value) in self.rules.iter().zip(values) {
            match value {
                Some(value) => {
                    parts.headers.insert(rule.name.clone(), value);
                }
                None => {
                    parts.headers.remove(&rule.name);
                }
            }
        }
    }

    fn evaluate(
        &self,
        template: &Template,
        parts: &Parts,
        connection: &ConnectionInfo,
    ) -> Option<HeaderValue> {
        let mut out: Vec<u8> = Vec::new();
        for segment in &template.segments {
            match segment {
                Segment::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Segment::Variable(variable) => self.variable(variable, parts, connection, &mut out),
            }
        }
        if out.is_empty() {
            return None;
        }
        // The buffer becomes the value as it is, not copied.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(out)).ok()
    }

    fn variable(
        &self,
        variable: &Variable,
        parts: &Parts,
        connection: &ConnectionInfo,
        out: &mut Vec<u8>,
    ) {
        let tls = connection.tls.as_ref();
        let peer = tls.and_then(|t| t.peer.as_ref());
        let text = |out: &mut Vec<u8>, s: &str| out.extend_from_slice(s.as_bytes());
        match variable {
            Variable::Host => push_request_host(parts, connection, out),
            // Written into the value in place: these run on every request.
            Variable::RemoteAddr => push_display(out, connection.remote.ip()),
            Variable::RemotePort => push_display(out, connection.remote.port()),
            Variable::Scheme => text(out, self.scheme),
            Variable::RequestUri => text(
                out,
                parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/"),
            ),
            Variable::Http(name) => {
                // nginx joins repeated headers; commas are the HTTP list separator.
                for (index, value) in parts.headers.get_all(name).iter().enumerate() {
                    if index > 0 {
                        out.extend_from_slice(b", ");
                    }
                    out.extend_from_slice(value.as_bytes());
                }
            }
            Variable::ProxyAddXForwardedFor => {
                for value in parts.headers.get_all("x-forwarded-for") {
                    out.extend_from_slice(value.as_bytes());
                    out.extend_from_slice(b", ");
                }
                push_display(out, connection.remote.ip());
            }
            Variable::SslClientEscapedCert => {
                text(out, peer.map(|p| p.escaped_pem.as_str()).unwrap_or(""))
            }
            Variable::SslClientCert => {
                if let Some(peer) = peer {
                    let pem = crate::tls::identity::pem_encode(&peer.leaf);
                    text(out, &pem.lines().collect::<Vec<_>>().join(" "));
                }
            }
            Variable::SslClientSDn => text(out, peer.map(|p| p.subject_dn.as_str()).unwrap_or("")),
            Variable::SslClientIDn => text(out, peer.map(|p| p.issuer_dn.as_str()).unwrap_or("")),
            Variable::SslClientSerial => text(out, peer.map(|p| p.serial.as_str()).unwrap_or("")),
            Variable::SslClientFingerprint => {
                text(out, peer.map(|p| p.fingerprint_sha1.as_str()).unwrap_or(""))
            }
            Variable::SslClientVerify => {
                if let Some(tls) = tls {
                    push_display(out, &tls.verdict)
                }
            }
            Variable::SslProtocol => text(out, tls.map(|t| t.protocol).unwrap_or("")),
            Variable::SslCipher => text(out, tls.map(|t| t.cipher).unwrap_or("")),
        }
    }
}

/// nginx's `$host`: the Host header's name (no port, lower case), else the listener address.
fn push_request_host(parts: &Parts, connection: &ConnectionInfo, out: &mut Vec<u8>) {
    // As nginx: the request line's host (absolute-form, HTTP/2) wins over the Host header.
    let authority = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let Some(authority) = authority else {
        return push_display(out, connection.local.ip());
    };
    let lower = |out: &mut Vec<u8>, host: &str| {
        out.extend(host.bytes().map(|b| b.to_ascii_lowercase()));
    };
    if authority.starts_with('[') {
        lower(out, authority.split(']').next().unwrap_or_default());
        out.push(b']');
    } else {
        lower(out, authority.split(':').next().unwrap_or_default());
    }
}

/// Appends `value` as text, with no string in between.
fn push_display(out: &mut Vec<u8>, value: impl std::fmt::Display) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{value}");
}

/// Drops inbound headers whose names contain `_`, as nginx does by default; the first one of
/// a connection is logged (at debug: clients that send them are common and harmless to
/// everything but a CGI/WSGI backend).
fn drop_underscored(headers: &mut HeaderMap, connection: &ConnectionInfo, listener: &str) {
    // Nothing is allocated unless such a name is present.
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .cloned()
        .collect();
    let Some(first) = underscored.first() else {
        return;
    };
    if !connection
        .logged_underscores
        .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::debug!(
            "listener \"{listener}\": {} sent a header with '_' in its name ({first}); dropped, as nginx does (set underscores_in_headers to forward such headers)",
            connection.remote
        );
    }
    for name in underscored {
        headers.remove(name);
    }
}

/// Removes the headers that describe one hop, not the message (RFC 9110 section 7.6.1).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Authority, KeyType, LeafSpec, Usage};
    use rustls::pki_types::CertificateDer;

    /// A client with an intermediate and SANs of each kind, so that every format emits every
    /// header it can (RFC 9440's chain only comes with intermediates).
    fn identity() -> PeerIdentity {
        let root = Authority::root("strip test root", KeyType::EcdsaP256).unwrap();
        let intermediate = root.intermediate("strip test intermediate").unwrap();
        let leaf = intermediate
            .leaf(
                &LeafSpec::new("strip-client", Usage::Client)
                    .names(&["client.test", "spiffe://test/client", "127.0.0.1"])
                    .org_unit("ops"),
            )
            .unwrap();
        PeerIdentity::from_chain(
            &CertificateDer::from(leaf.cert_der),
            &[CertificateDer::from(intermediate.issued.cert_der.clone())],
        )
        .unwrap()
    }

    /// `$host` as nginx renders it: the request line's authority before the Host header,
    /// lower case, without the port (an IPv6 literal keeps its brackets), else the listener's
    /// address; `$remote_addr` and `$remote_port` are the peer's.
    #[test]
    fn host_and_address_variables_render_as_nginx_does() {
        let connection = ConnectionInfo::new(
            "192.0.2.7:40123".parse().unwrap(),
            "[::1]:8443".parse().unwrap(),
            None,
        );
        let render = |uri: &str, host: Option<&str>| {
            let mut request = hyper::Request::builder().uri(uri);
            if let Some(host) = host {
                request = request.header(header::HOST, host);
            }
            let (parts, ()) = request.body(()).unwrap().into_parts();
            let mut out = Vec::new();
            push_request_host(&parts, &connection, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            render("/", Some("Api.Example.TEST:8443")),
            "api.example.test"
        );
        assert_eq!(render("/", Some("[2001:DB8::1]:443")), "[2001:db8::1]");
        assert_eq!(
            render("https://Line.TEST:1/x", Some("header.test")),
            "line.test"
        );
        assert_eq!(render("/", None), "::1");
        let mut out = Vec::new();
        push_display(&mut out, connection.remote.ip());
        out.push(b' ');
        push_display(&mut out, connection.remote.port());
        assert_eq!(out, b"192.0.2.7 40123");
    }

    /// A format whose header is missing from its `header_names` would reach the backend
    /// from a client that forged it: every name a format emits is one it declares, and is
    /// judged an identity header in any spelling a backend might read.
    #[test]
    fn every_emitted_identity_header_is_stripped() {
        let identity = identity();
        for format in IdentityFormat::ALL {
            let emitted: Vec<String> = identity_headers(&identity, &[format])
                .into_iter()
                .map(|(name, _)| name.as_str().to_string())
                .collect();
            let mut declared: Vec<&str> = format.header_names().to_vec();
            let mut sorted: Vec<&str> = emitted.iter().map(String::as_str).collect();
            declared.sort_unstable();
            sorted.sort_unstable();
            assert_eq!(
                sorted, declared,
                "{format:?} emits other headers than it declares"
            );
            for name in &emitted {
                assert!(is_identity_name(name), "{format:?}: {name} is not stripped");
                let underscored = name.replace('-', "_");
                assert!(
                    is_identity_name(&underscored),
                    "{format:?}: {underscored} is not stripped"
                );
            }
        }
    }
}
