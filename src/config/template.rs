//! Header value templates with nginx variables (`$remote_addr`, `$ssl_client_escaped_cert`, ...).
//!
//! Parsed once at start-up so that an unknown variable is a config error, not a surprise per
//! request; evaluated per request by `proxy::headers`.

use hyper::header::HeaderName;

/// The variables a header rule may use; names and meanings follow nginx.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variable {
    Host,
    RemoteAddr,
    RemotePort,
    Scheme,
    RequestUri,
    /// `$http_<name>`: an inbound request header, `_` standing for `-`.
    Http(HeaderName),
    ProxyAddXForwardedFor,
    /// nginx's `$ssl_client_cert`, rendered as a valid single-line header (see `from_name`).
    SslClientCert,
    SslClientEscapedCert,
    SslClientSDn,
    SslClientIDn,
    SslClientSerial,
    SslClientFingerprint,
    SslClientVerify,
    SslProtocol,
    SslCipher,
}

impl Variable {
    fn from_name(name: &str) -> Option<Variable> {
        Some(match name {
            "host" => Variable::Host,
            "remote_addr" => Variable::RemoteAddr,
            "remote_port" => Variable::RemotePort,
            "scheme" => Variable::Scheme,
            "request_uri" => Variable::RequestUri,
            "proxy_add_x_forwarded_for" => Variable::ProxyAddXForwardedFor,
            // nginx sends `$ssl_client_cert` as PEM folded over several header lines
            // (obs-fold), which strict HTTP parsers reject. RFC 9112 tells a recipient to
            // replace each fold with a space, so certgate sends what a lenient backend behind
            // nginx already sees: the PEM lines joined by single spaces, on one line.
            "ssl_client_cert" => Variable::SslClientCert,
            "ssl_client_escaped_cert" => Variable::SslClientEscapedCert,
            "ssl_client_s_dn" => Variable::SslClientSDn,
            "ssl_client_i_dn" => Variable::SslClientIDn,
            "ssl_client_serial" => Variable::SslClientSerial,
            "ssl_client_fingerprint" => Variable::SslClientFingerprint,
            "ssl_client_verify" => Variable::SslClientVerify,
            "ssl_protocol" => Variable::SslProtocol,
            "ssl_cipher" => Variable::SslCipher,
            _ => {
                let header = name.strip_prefix("http_")?.replace('_', "-");
                Variable::Http(HeaderName::from_bytes(header.as_bytes()).ok()?)
            }
        })
    }

    /// Whether the value describes the client certificate (so inbound copies of the header
    /// that carries it must be stripped).
    pub fn is_client_identity(&self) -> bool {
        matches!(
            self,
            Variable::SslClientCert
                | Variable::SslClientEscapedCert
                | Variable::SslClientSDn
                | Variable::SslClientIDn
                | Variable::SslClientSerial
                | Variable::SslClientFingerprint
                | Variable::SslClientVerify
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Variable(Variable),
}

/// A parsed header value: literal text and variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

const KNOWN: &str = "$host, $remote_addr, $remote_port, $scheme, $request_uri, $http_<name>, \
$proxy_add_x_forwarded_for, $ssl_client_cert, $ssl_client_escaped_cert, $ssl_client_s_dn, $ssl_client_i_dn, \
$ssl_client_serial, $ssl_client_fingerprint, $ssl_client_verify, $ssl_protocol, $ssl_cipher";

/// Why a header value template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed '${{' in \"{0}\"")]
    Unclosed(String),
    #[error("a '$' in \"{0}\" is not followed by a variable name")]
    NoName(String),
    #[error("unknown variable ${0}; known variables: {KNOWN}")]
    UnknownVariable(String),
}

impl Template {
    /// Parses `$name` and `${name}` references; anything else is literal text.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let (name, remainder) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| TemplateError::Unclosed(text.to_string()))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() {
                return Err(TemplateError::NoName(text.to_string()));
            }
            let variable = Variable::from_name(name)
                .ok_or_else(|| TemplateError::UnknownVariable(name.to_string()))?;
            if !literal.is_empty() {
                segments.push(Segment::Literal(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Variable(variable));
            rest = remainder;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    pub fn variable(variable: Variable) -> Template {
        Template {
            segments: vec![Segment::Variable(variable)],
        }
    }

    pub fn uses_client_identity(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Variable(v) if v.is_client_identity()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_and_variables() {
        let t = Template::parse("ip=${remote_addr}:$remote_port x").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Literal("ip=".into()),
                Segment::Variable(Variable::RemoteAddr),
                Segment::Literal(":".into()),
                Segment::Variable(Variable::RemotePort),
                Segment::Literal(" x".into()),
            ]
        );
    }

    #[test]
    fn http_variable_maps_underscores_to_dashes() {
        let t = Template::parse("$http_x_ssl_cert").unwrap();
        assert_eq!(
            t.segments,
            vec![Segment::Variable(Variable::Http(HeaderName::from_static(
                "x-ssl-cert"
            )))]
        );
    }

    #[test]
    fn unknown_variable_is_named() {
        let err = Template::parse("$ssl_client_foo").unwrap_err().to_string();
        assert!(err.contains("unknown variable $ssl_client_foo"), "{err}");
    }
}
