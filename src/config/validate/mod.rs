//! Listener specs -> the validated [`Config`]: what both modes share here, each mode in its
//! own file, each value parsed in [`values`].

mod client;
mod server;
pub mod values;

use super::ciphers;
use super::keys;
use super::model::*;
use super::origin::{ConfigError, Origin};
use super::spec::{ListenerSpec, SpecValue};
use super::template::Template;
use hyper::header::HeaderName;
use values::{duration, duration_or_off, parse_listen, parse_mode, parse_version, size};

impl Config {
    /// Validates listener specs into a config; the first error wins.
    pub fn from_specs(specs: Vec<ListenerSpec>) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if specs.is_empty() {
            return Err(ConfigError::general(
                "no listener configured: add a [[listener]] table",
            ));
        }
        for (index, spec) in specs.into_iter().enumerate() {
            let listener = validate_listener(spec, index, &mut config.warnings)?;
            if let Some(other) = config.listeners.iter().find(|l| {
                l.name == listener.name
                    || l.listen.value == listener.listen.value && listener.listen.value.port() != 0
            }) {
                return Err(ConfigError::at(
                    &listener.listen.origin,
                    format!(
                        "listener '{}' clashes with listener '{}' (same name or address)",
                        listener.name, other.name
                    ),
                ));
            }
            config.listeners.push(listener);
        }
        Ok(config)
    }
}

fn tls_params(
    spec: &mut ListenerSpec,
    warnings: &mut Vec<String>,
) -> Result<TlsParams, ConfigError> {
    use rustls::version::{TLS12, TLS13};
    let min = spec.text("min_tls_version")?;
    let max = spec.text("max_tls_version")?;
    let min_version = min
        .as_ref()
        .map(parse_version)
        .transpose()?
        .unwrap_or(&TLS12);
    let max_version = max
        .as_ref()
        .map(parse_version)
        .transpose()?
        .unwrap_or(&TLS13);
    let rank =
        |v: &rustls::SupportedProtocolVersion| if v.version == TLS12.version { 0 } else { 1 };
    if rank(min_version) > rank(max_version) {
        let origin = min.as_ref().map(|m| &m.origin).unwrap_or(&Origin::Default);
        return Err(ConfigError::at(
            origin,
            "min_tls_version is above max_tls_version",
        ));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [&TLS12, &TLS13]
        .into_iter()
        .filter(|v| rank(v) >= rank(min_version) && rank(v) <= rank(max_version))
        .collect();

    let cipher_suites = match spec.text("ciphers")? {
        None => ciphers::ALL_SUITES.iter().map(|(s, _)| *s).collect(),
        Some(list) => {
            let selection = ciphers::select(&list.value);
            if !selection.unknown_words.is_empty() {
                warnings.push(format!(
                    "{}: ignoring unknown cipher keyword(s): {}",
                    list.origin,
                    selection.unknown_words.join(", ")
                ));
            }
            let usable = selection
                .suites
                .iter()
                .filter(|s| versions.iter().any(|v| s.version().version == v.version))
                .count();
            if usable == 0 {
                return Err(ConfigError::at(
                    &list.origin,
                    format!(
                        "cipher list \"{}\" leaves no cipher suite for the enabled TLS versions; supported suites: {}",
                        list.value,
                        ciphers::ALL_SUITES.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            selection.suites
        }
    };
    Ok(TlsParams {
        versions,
        cipher_suites,
    })
}

fn header_rules(spec: &mut ListenerSpec) -> Result<Vec<HeaderRule>, ConfigError> {
    let Some(rules) = spec.take("set_header") else {
        return Ok(Vec::new());
    };
    let SpecValue::Headers(pairs) = rules.value else {
        return Err(ConfigError::at(
            &rules.origin,
            "expected a list of [NAME, VALUE] pairs or {name, value} tables",
        ));
    };
    pairs
        .into_iter()
        .map(|(name, value)| {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::at(
                    &rules.origin,
                    format!("\"{name}\" is not a valid header name"),
                )
            })?;
            let template = Template::parse(&value)
                .map_err(|e| ConfigError::at(&rules.origin, format!("header {name}: {e}")))?;
            Ok(HeaderRule {
                name: header,
                value: template,
            })
        })
        .collect()
}

fn client_limits(spec: &mut ListenerSpec) -> Result<ClientLimits, ConfigError> {
    let defaults = ClientLimits::default();
    let header_timeout = duration(spec, "client_header_timeout", defaults.header_timeout)?;
    // nginx's `keepalive_timeout 0` turns keep-alive off.
    let keepalive_timeout = duration_or_off(spec, "keepalive_timeout", defaults.keepalive_timeout)?;
    let http2_idle_timeout = duration(
        spec,
        "http2_idle_timeout",
        keepalive_timeout.unwrap_or(DEFAULT_KEEPALIVE_TIMEOUT),
    )?;
    let http2_ping_interval = duration_or_off(spec, "http2_ping_interval", None)?;
    let max_header_size = match size(spec, "max_header_size")? {
        None => DEFAULT_MAX_HEADER_SIZE,
        Some(located) => usize::try_from(located.value)
            .ok()
            .filter(|s| *s >= MIN_MAX_HEADER_SIZE && *s <= u32::MAX as usize)
            .ok_or_else(|| {
                ConfigError::at(
                    &located.origin,
                    format!(
                        "max_header_size must be at least {}k (and below 4g)",
                        MIN_MAX_HEADER_SIZE / 1024
                    ),
                )
            })?,
    };
    Ok(ClientLimits {
        header_timeout,
        keepalive_timeout,
        http2_idle_timeout,
        http2_ping_interval,
        max_header_size,
        underscores_in_headers: spec.flag("underscores_in_headers", false)?,
    })
}

/// Refuses every key of the other mode, as the key table says, rather than ignoring it.
fn refuse_other_mode(spec: &mut ListenerSpec, mode: Mode) -> Result<(), ConfigError> {
    let other = match mode {
        Mode::Server => Mode::Client,
        Mode::Client => Mode::Server,
    };
    for key in keys::KEYS.iter().filter(|k| !k.applies_to(mode)) {
        spec.refuse(
            key.key,
            &format!("'{}' is for {other} mode{}", key.key, key.elsewhere),
        )?;
    }
    Ok(())
}

/// One listener: the settings both modes share, then the mode's own. Keys are read in the
/// order a user would fix them, since the first error is the one reported.
fn validate_listener(
    mut spec: ListenerSpec,
    index: usize,
    warnings: &mut Vec<String>,
) -> Result<ListenerConfig, ConfigError> {
    let mode = parse_mode(&spec.required_text("mode", "\"server\" or \"client\"")?)?;
    let listen = parse_listen(spec.required_text("listen", "the address to listen on")?)?;
    let name = spec
        .text("name")?
        .map(|n| n.value)
        .unwrap_or_else(|| format!("{mode}-{}", index + 1));
    let verify_depth = verify_depth(&mut spec)?;
    // certgate's own default: a bundle trusts exactly the CAs it lists, intermediates too.
    let partial_chain = spec.flag("partial_chain", true)?;
    let strict_key_permissions = spec.flag("strict_key_permissions", false)?;
    let tls = tls_params(&mut spec, warnings)?;
    let header_rules = header_rules(&mut spec)?;
    let default_headers = spec.flag("default_headers", true)?;
    let connect_timeout = duration(&mut spec, "connect_timeout", DEFAULT_CONNECT_TIMEOUT)?;
    let response_timeout = duration(&mut spec, "response_timeout", DEFAULT_RESPONSE_TIMEOUT)?;
    let max_body_size = size(&mut spec, "max_body_size")?
        .map(|located| located.value)
        // nginx's 0 means no limit.
        .filter(|limit| *limit > 0);
    let client_limits = client_limits(&mut spec)?;
    let upstream_max_connections = upstream_max_connections(&mut spec)?;
    let upstream_queue_timeout = duration(
        &mut spec,
        "upstream_queue_timeout",
        DEFAULT_UPSTREAM_QUEUE_TIMEOUT,
    )?;
    let upstream = spec.required_text("upstream", "where to forward requests")?;
    refuse_other_mode(&mut spec, mode)?;
    let mode = match mode {
        Mode::Server => {
            ModeConfig::Server(Box::new(server::listener(&mut spec, &upstream, warnings)?))
        }
        Mode::Client => {
            ModeConfig::Client(Box::new(client::listener(&mut spec, &upstream, warnings)?))
        }
    };
    Ok(ListenerConfig {
        name,
        listen,
        mode,
        tls,
        verify_depth,
        partial_chain,
        strict_key_permissions,
        header_rules,
        default_headers,
        connect_timeout,
        response_timeout,
        max_body_size,
        client_limits,
        upstream_max_connections,
        upstream_queue_timeout,
    })
}

fn verify_depth(spec: &mut ListenerSpec) -> Result<u32, ConfigError> {
    match spec.integer("verify_depth")? {
        None => Ok(DEFAULT_VERIFY_DEPTH),
        Some(depth) => u32::try_from(depth.value)
            .ok()
            .filter(|d| *d <= 100)
            .ok_or_else(|| {
                ConfigError::at(&depth.origin, "verify_depth must be between 0 and 100")
            }),
    }
}

fn upstream_max_connections(spec: &mut ListenerSpec) -> Result<Option<usize>, ConfigError> {
    let Some(max) = spec.integer("upstream_max_connections")? else {
        return Ok(Some(DEFAULT_UPSTREAM_MAX_CONNECTIONS));
    };
    let max = usize::try_from(max.value)
        .ok()
        .filter(|max| *max <= MAX_UPSTREAM_MAX_CONNECTIONS)
        .ok_or_else(|| {
            ConfigError::at(
                &max.origin,
                format!(
                    "upstream_max_connections must be between 0 (no limit) and {MAX_UPSTREAM_MAX_CONNECTIONS}"
                ),
            )
        })?;
    // As nginx's max_conns, 0 means no limit.
    Ok((max > 0).then_some(max))
}
