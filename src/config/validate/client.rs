//! Client mode: plain HTTP in, TLS with a client certificate out.

use super::values::{access_rules, key_source, parse_https_upstream, revocation, VERIFY_KEYS};
use crate::config::model::*;
use crate::config::origin::{ConfigError, Located, Origin};
use crate::config::spec::ListenerSpec;
use rustls::pki_types::ServerName;
use std::path::PathBuf;

/// The client-mode half of a listener; `upstream` was read with the shared settings.
pub(super) fn listener(
    spec: &mut ListenerSpec,
    upstream: &Located<String>,
    warnings: &mut Vec<String>,
) -> Result<ClientListener, ConfigError> {
    let revocation = revocation(spec)?;
    let upstream_rules = access_rules(spec, VERIFY_KEYS)?;
    let target = parse_https_upstream(upstream)?;
    let server_name = server_name(spec, &target.host, &upstream.origin)?;
    let identity = identity(spec)?;
    let verify_origin = spec.origin_of(&["verify_upstream"]);
    let verify_upstream = spec.flag("verify_upstream", true)?;
    let ca = spec.path("ca")?;
    if verify_upstream && ca.is_none() {
        return Err(spec.missing(
            "ca",
            "the CA bundle that the upstream certificate must chain to",
        ));
    }
    // A default written out by the nginx translation was warned about there already.
    if let Some(origin) = verify_origin.filter(|o| !verify_upstream && *o != Origin::Default) {
        warnings.push(format!(
            "{origin}: the upstream's certificate is not verified: anyone who can intercept the connection to {} can pose as it and read the traffic; set a CA and verify it",
            upstream.value.trim()
        ));
    }
    let send_sni = spec.flag("send_sni", true)?;
    Ok(ClientListener {
        identity,
        ca: ca.filter(|_| verify_upstream),
        upstream_host_header: target.without_default_port(443),
        upstream_authority: target.authority(),
        server_name,
        session_reuse: spec.flag("session_reuse", true)?,
        http2: spec.flag("http2", true)?,
        send_sni,
        revocation,
        upstream_rules,
        verify_name_in_cn: spec.flag("verify_name_in_cn", false)?,
    })
}

/// `server_name`, or else the upstream's host.
fn server_name(
    spec: &mut ListenerSpec,
    host: &str,
    upstream_origin: &Origin,
) -> Result<ServerName<'static>, ConfigError> {
    let (name, origin) = match spec.text("server_name")? {
        Some(n) => (n.value, n.origin),
        None => (host.to_string(), upstream_origin.clone()),
    };
    ServerName::try_from(name.clone()).map_err(|_| {
        ConfigError::at(
            &origin,
            format!("\"{name}\" is not a valid DNS name or IP address"),
        )
    })
}

/// A client certificate and its key.
type Identity = (Located<PathBuf>, Located<KeySource>);

/// The client certificate and its key: both or neither.
fn identity(spec: &mut ListenerSpec) -> Result<Option<Identity>, ConfigError> {
    match (spec.path("cert")?, key_source(spec)?) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        (Some(cert), None) => Err(ConfigError::at(
            &cert.origin,
            "a client certificate needs its 'key'",
        )),
        (None, Some(key)) => Err(ConfigError::at(
            &key.origin,
            "a client key needs its 'cert'",
        )),
    }
}
