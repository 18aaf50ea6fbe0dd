//! Each value a setting takes, parsed by one function that every front-end (TOML, flags,
//! the nginx translation) reaches: modes, addresses, host:port, TLS versions, verify modes,
//! sizes, durations and identity rules.

use crate::access::{parse_pin, AccessRules, DnsPattern, RuleError, UriPattern};
use crate::config::model::{ClientAuthMode, HttpUpstream, KeySource, Mode, Revocation};
use crate::config::origin::{ConfigError, Located};
use crate::config::spec::{ListenerSpec, SpecValue};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The allow-list keys, shared by listeners and routes.
pub(super) const ALLOW_KEYS: [&str; 6] = [
    "allow_cn",
    "allow_o",
    "allow_ou",
    "allow_dns",
    "allow_uri",
    "allow_pin_sha256",
];

/// Client mode's mirror image: rules the upstream's certificate must meet beyond its name.
pub(super) const VERIFY_KEYS: [&str; 6] = [
    "verify_cn",
    "verify_o",
    "verify_ou",
    "verify_dns",
    "verify_uri",
    "verify_pin_sha256",
];

pub(super) fn parse_mode(text: &Located<String>) -> Result<Mode, ConfigError> {
    match text.value.as_str() {
        "server" => Ok(Mode::Server),
        "client" => Ok(Mode::Client),
        other => Err(ConfigError::at(
            &text.origin,
            format!("unknown mode \"{other}\": use \"server\" or \"client\""),
        )),
    }
}

pub(super) fn parse_listen(text: Located<String>) -> Result<Located<SocketAddr>, ConfigError> {
    let value = text.value.trim();
    // nginx accepts a bare port; so do we (on all addresses, as nginx does).
    let parsed = if let Ok(port) = value.parse::<u16>() {
        Ok(SocketAddr::from(([0, 0, 0, 0], port)))
    } else {
        value.parse::<SocketAddr>()
    };
    match parsed {
        Ok(addr) => Ok(Located {
            value: addr,
            origin: text.origin,
        }),
        Err(_) => Err(ConfigError::at(
            &text.origin,
            format!(
                "bad listen address \"{value}\": use IP:PORT, for example 127.0.0.1:8443 or [::1]:8443"
            ),
        )),
    }
}

/// A TLS protocol version as configuration names it, including the ones certgate refuses to
/// speak, so that each front-end can say what happens to them (TOML refuses them; nginx's
/// `ssl_protocols` leaves them out with a warning, as a list of several may).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Ssl2,
    Ssl3,
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// `TLSv1.2` (nginx's and OpenSSL's spelling) or `1.2`; `TLSv1` and `TLSv1.0` are one.
    pub fn parse(name: &str) -> Option<TlsVersion> {
        Some(match name {
            "SSLv2" => TlsVersion::Ssl2,
            "SSLv3" => TlsVersion::Ssl3,
            "TLSv1" | "TLSv1.0" => TlsVersion::Tls10,
            "TLSv1.1" => TlsVersion::Tls11,
            "TLSv1.2" | "1.2" => TlsVersion::Tls12,
            "TLSv1.3" | "1.3" => TlsVersion::Tls13,
            _ => return None,
        })
    }

    /// The version as rustls speaks it; None for the insecure ones certgate does not speak.
    pub fn supported(self) -> Option<&'static rustls::SupportedProtocolVersion> {
        match self {
            TlsVersion::Tls12 => Some(&rustls::version::TLS12),
            TlsVersion::Tls13 => Some(&rustls::version::TLS13),
            _ => None,
        }
    }

    /// The canonical name (`TLSv1.2`).
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Ssl2 => "SSLv2",
            TlsVersion::Ssl3 => "SSLv3",
            TlsVersion::Tls10 => "TLSv1",
            TlsVersion::Tls11 => "TLSv1.1",
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

/// `min_tls_version` or `max_tls_version`: a version certgate speaks.
pub(super) fn parse_version(
    text: &Located<String>,
) -> Result<&'static rustls::SupportedProtocolVersion, ConfigError> {
    match TlsVersion::parse(&text.value) {
        Some(version) => version.supported().ok_or_else(|| {
            ConfigError::at(
                &text.origin,
                format!(
                    "{} is insecure and not supported: use TLSv1.2 or TLSv1.3",
                    text.value
                ),
            )
        }),
        None => Err(ConfigError::at(
            &text.origin,
            format!(
                "unknown TLS version \"{}\": use TLSv1.2 or TLSv1.3",
                text.value
            ),
        )),
    }
}

/// A `key` setting: a file or a token key (`pkcs11:` URI).
pub(super) fn key_source(
    spec: &mut ListenerSpec,
) -> Result<Option<Located<KeySource>>, ConfigError> {
    let Some(text) = spec.text("key")? else {
        return Ok(None);
    };
    match KeySource::parse(&text.value) {
        Ok(value) => Ok(Some(Located {
            value,
            origin: text.origin,
        })),
        Err(error) => Err(ConfigError::at(&text.origin, error.to_string())),
    }
}

/// `verify_client`, in certgate's words or nginx's (`on`).
pub(super) fn parse_verify_client(text: &Located<String>) -> Result<ClientAuthMode, ConfigError> {
    ClientAuthMode::parse(&text.value).ok_or_else(|| {
        ConfigError::at(
            &text.origin,
            format!(
                "unknown verify_client \"{}\": use required, optional, optional_no_ca or off",
                text.value
            ),
        )
    })
}

/// A host and port, as an upstream or a Host header names them (IPv6 without brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Splits `host[:port]` (IPv6 in brackets); None when it is not one.
    pub fn parse(authority: &str, default_port: u16) -> Option<HostPort> {
        let (host, port) = split_host_port(authority)?;
        Some(HostPort {
            host: host.to_string(),
            port: port.unwrap_or(default_port),
        })
    }

    /// Splits `host:port` (IPv6 in brackets), the port required; None when it is not one.
    pub fn parse_with_port(authority: &str) -> Option<HostPort> {
        let (host, port) = split_host_port(authority)?;
        Some(HostPort {
            host: host.to_string(),
            port: port?,
        })
    }

    /// `host:port`, IPv6 in brackets.
    pub fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// The authority without the port when it is the scheme's `default_port` (as browsers
    /// send Host, and as nginx's `$proxy_host` is).
    pub fn without_default_port(&self, default_port: u16) -> String {
        match (self.port == default_port, self.host.contains(':')) {
            (true, true) => format!("[{}]", self.host),
            (true, false) => self.host.clone(),
            _ => self.authority(),
        }
    }
}

/// `host[:port]` (IPv6 in brackets) as host and port, if one is given.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port.parse().ok()?)),
            Some(_) => return None,
            None => (authority, None),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

/// `host:port`, IPv6 in brackets.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(super) fn parse_http_upstream(text: &Located<String>) -> Result<HttpUpstream, ConfigError> {
    let value = text.value.trim();
    if let Some(path) = value.strip_prefix("unix:") {
        return Ok(HttpUpstream::Unix(PathBuf::from(path)));
    }
    if value.starts_with("https://") {
        return Err(ConfigError::at(
            &text.origin,
            "server mode forwards plain HTTP: use http://HOST:PORT, HOST:PORT or unix:/PATH",
        ));
    }
    let authority = value.strip_prefix("http://").unwrap_or(value);
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains('/') {
        return Err(ConfigError::at(
            &text.origin,
            format!("\"{value}\": a path in the upstream URL is not supported; requests keep their own path"),
        ));
    }
    let upstream = HostPort::parse(authority, 80).ok_or_else(|| {
        ConfigError::at(
            &text.origin,
            format!("bad upstream \"{value}\": use http://HOST:PORT, HOST:PORT or unix:/PATH"),
        )
    })?;
    Ok(HttpUpstream::Tcp {
        authority: upstream.authority(),
    })
}

/// Client mode's upstream: `https://HOST[:PORT]` or `HOST:PORT`, no path.
pub(super) fn parse_https_upstream(text: &Located<String>) -> Result<HostPort, ConfigError> {
    let value = text.value.trim();
    if value.starts_with("http://") {
        return Err(ConfigError::at(
            &text.origin,
            "client mode connects over TLS: use https://HOST[:PORT] or HOST:PORT",
        ));
    }
    let authority = value.strip_prefix("https://").unwrap_or(value);
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    HostPort::parse(authority, 443)
        .filter(|_| !authority.contains('/'))
        .ok_or_else(|| {
            ConfigError::at(
                &text.origin,
                format!("bad upstream \"{value}\": use https://HOST[:PORT] (no path)"),
            )
        })
}

/// Reads one family of rule keys (`allow_*` or `verify_*`, in [`ALLOW_KEYS`] order).
pub(super) fn access_rules(
    spec: &mut ListenerSpec,
    keys: [&str; 6],
) -> Result<AccessRules, ConfigError> {
    let mut rules = AccessRules::default();
    for (kind, key) in keys.into_iter().enumerate() {
        let Some(list) = spec.list(key)? else {
            continue;
        };
        for item in list.value {
            let bad = |e: RuleError| ConfigError::at(&list.origin, e.to_string());
            match kind {
                0 => rules.common_names.push(item),
                1 => rules.organizations.push(item),
                2 => rules.org_units.push(item),
                3 => rules.dns.push(DnsPattern::parse(&item).map_err(bad)?),
                4 => rules.uris.push(UriPattern::parse(&item).map_err(bad)?),
                _ => rules.pins.push(parse_pin(&item).map_err(bad)?),
            }
        }
    }
    Ok(rules)
}

/// Reads `kind:value` identity matchers (`cn:edge`, `uri:spiffe://example.org/proxy`).
pub(super) fn identity_matchers(list: Located<Vec<String>>) -> Result<AccessRules, ConfigError> {
    let mut rules = AccessRules::default();
    for item in &list.value {
        let bad = |e: String| ConfigError::at(&list.origin, e);
        let (kind, value) = item.split_once(':').ok_or_else(|| {
            bad(format!(
                "\"{item}\": write KIND:VALUE with KIND one of cn, o, ou, dns, uri, pin-sha256"
            ))
        })?;
        match kind {
            "cn" => rules.common_names.push(value.to_string()),
            "o" => rules.organizations.push(value.to_string()),
            "ou" => rules.org_units.push(value.to_string()),
            "dns" => rules.dns.push(DnsPattern::parse(value).map_err(|e| bad(e.to_string()))?),
            "uri" => rules.uris.push(UriPattern::parse(value).map_err(|e| bad(e.to_string()))?),
            "pin-sha256" => rules.pins.push(parse_pin(value).map_err(|e| bad(e.to_string()))?),
            other => {
                return Err(bad(format!(
                    "unknown identity kind \"{other}\" in \"{item}\": use cn, o, ou, dns, uri or pin-sha256"
                )))
            }
        }
    }
    Ok(rules)
}

pub(super) fn revocation(spec: &mut ListenerSpec) -> Result<Revocation, ConfigError> {
    let crls = spec.paths("crl")?;
    let allow_expired_crl = match spec.text("crl_expired")? {
        None => false,
        Some(text) => match text.value.as_str() {
            "refuse" => false,
            "allow" => true,
            other => {
                return Err(ConfigError::at(
                    &text.origin,
                    format!(
                    "unknown crl_expired \"{other}\": use \"refuse\" (the default) or \"allow\""
                ),
                ))
            }
        },
    };
    Ok(Revocation {
        crls,
        allow_expired_crl,
    })
}

/// A size key: bytes as an integer, or nginx's size syntax as text (`10m`).
pub(super) fn size(
    spec: &mut ListenerSpec,
    key: &str,
) -> Result<Option<Located<u64>>, ConfigError> {
    match spec.take(key) {
        None => Ok(None),
        Some(Located {
            value: SpecValue::Integer(bytes),
            origin,
        }) => match u64::try_from(bytes) {
            Ok(value) => Ok(Some(Located { value, origin })),
            Err(_) => Err(ConfigError::at(
                &origin,
                format!("{key} must not be negative"),
            )),
        },
        Some(Located {
            value: SpecValue::Text(text),
            origin,
        }) => match parse_size(&text) {
            Some(value) => Ok(Some(Located { value, origin })),
            None => Err(ConfigError::at(
                &origin,
                format!("bad size \"{text}\": use bytes, or a number with k, m or g (10m)"),
            )),
        },
        Some(other) => Err(ConfigError::at(
            &other.origin,
            "expected a size such as \"10m\"",
        )),
    }
}

/// A duration key: seconds as an integer, or nginx's time syntax as text; 0 is refused.
pub(super) fn duration(
    spec: &mut ListenerSpec,
    key: &str,
    default: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    match duration_value(spec, key)? {
        None => Ok(default),
        Some(located) if located.value.is_zero() => Err(ConfigError::at(
            &located.origin,
            format!("{key} must be longer than 0"),
        )),
        Some(located) => Ok(located.value),
    }
}

/// A duration key where 0 turns the thing off (nginx's `keepalive_timeout 0`).
pub(super) fn duration_or_off(
    spec: &mut ListenerSpec,
    key: &str,
    default: Option<std::time::Duration>,
) -> Result<Option<std::time::Duration>, ConfigError> {
    Ok(match duration_value(spec, key)? {
        None => default,
        Some(located) => Some(located.value).filter(|d| !d.is_zero()),
    })
}

pub(super) fn duration_value(
    spec: &mut ListenerSpec,
    key: &str,
) -> Result<Option<Located<std::time::Duration>>, ConfigError> {
    let (value, origin, text) = match spec.take(key) {
        None => return Ok(None),
        Some(Located {
            value: SpecValue::Integer(seconds),
            origin,
        }) => (
            u64::try_from(seconds)
                .ok()
                .map(std::time::Duration::from_secs),
            origin,
            seconds.to_string(),
        ),
        Some(Located {
            value: SpecValue::Text(text),
            origin,
        }) => (parse_duration(&text), origin, text),
        Some(other) => {
            return Err(ConfigError::at(
                &other.origin,
                "expected a duration such as \"5s\"",
            ))
        }
    };
    match value {
        Some(value) => Ok(Some(Located { value, origin })),
        None => Err(ConfigError::at(
            &origin,
            format!(
                "bad duration \"{text}\": use seconds, or a number with ms, s, m or h (5s, 500ms)"
            ),
        )),
    }
}

/// nginx's size syntax: bytes, or a number with k, m or g.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    number.checked_mul(match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    })
}

/// nginx's time syntax, the forms config files use: `500ms`, `5s`, `1m`, `1h`, or `30`
/// (seconds).
pub(crate) fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let millis = match unit {
        "ms" => number,
        "" | "s" => number.checked_mul(1000)?,
        "m" => number.checked_mul(60_000)?,
        "h" => number.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        let parse = |text| HostPort::parse(text, 443).map(|h| (h.host, h.port));
        assert_eq!(parse("a.example:8443"), Some(("a.example".into(), 8443)));
        assert_eq!(parse("a.example"), Some(("a.example".into(), 443)));
        assert_eq!(parse("[::1]:9"), Some(("::1".into(), 9)));
        assert_eq!(parse("a:b"), None);
        assert_eq!(parse(":80"), None);
        let with_port = |text| HostPort::parse_with_port(text).map(|h| (h.host, h.port));
        assert_eq!(
            with_port("a.example:8443"),
            Some(("a.example".into(), 8443))
        );
        assert_eq!(with_port("[::1]:9"), Some(("::1".into(), 9)));
        assert_eq!(with_port("a.example"), None);
        assert_eq!(with_port("[::1]"), None);
        assert_eq!(with_port("a.example:https"), None);
    }
}
