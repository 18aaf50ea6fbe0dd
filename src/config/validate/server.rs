//! Server mode: TLS with client certificates in, plain HTTP out.

use super::values::{
    access_rules, identity_matchers, key_source, parse_http_upstream, parse_verify_client,
    revocation, ALLOW_KEYS,
};
use crate::access::AccessRules;
use crate::config::model::*;
use crate::config::origin::{ConfigError, Located, Origin};
use crate::config::spec::{ListenerSpec, SpecValue};

/// The server-mode half of a listener; `upstream` was read with the shared settings.
pub(super) fn listener(
    spec: &mut ListenerSpec,
    upstream: &Located<String>,
    warnings: &mut Vec<String>,
) -> Result<ServerListener, ConfigError> {
    let session_tickets = spec.flag("session_tickets", true)?;
    let verify_client = match spec.text("verify_client")? {
        None => ClientAuthMode::Required,
        Some(text) => parse_verify_client(&text)?,
    };
    let client_ca = spec.path("client_ca")?;
    if client_ca.is_none() && verify_client != ClientAuthMode::Off {
        return Err(spec.missing(
            "client_ca",
            "the CA bundle that client certificates must chain to; or set verify_client = \"off\"",
        ));
    }
    let (trusted_forwarders, forwarders_origin) = trusted_forwarders(spec, verify_client)?;
    let (identity_formats, xfcc_mode, xfcc_trusted) =
        identity_formats(spec, forwarders_origin.as_ref())?;
    let access = listener_rules(spec, verify_client)?;
    let routes = routes(spec)?;
    let (route_match, path_normalization) = path_settings(spec, &routes, warnings)?;
    if let Some(route) = routes
        .iter()
        .find(|r| !r.rules.is_empty())
        .filter(|_| verify_client == ClientAuthMode::Off)
    {
        return Err(ConfigError::at(
            &route.origin,
            format!("contradictory: route \"{}\" has allow rules, but verify_client = \"off\" asks for no certificate", route.path),
        ));
    }
    let revocation = revocation(spec)?;
    let ocsp_response = spec.path("ocsp_response")?;
    Ok(ServerListener {
        identity_formats,
        xfcc_mode,
        xfcc_trusted,
        trusted_forwarders,
        access,
        routes,
        route_match,
        path_normalization,
        revocation,
        ocsp_response,
        session_tickets,
        cert: spec
            .path("cert")?
            .ok_or_else(|| spec.missing("cert", "the server certificate"))?,
        key: key_source(spec)?.ok_or_else(|| spec.missing("key", "the server private key"))?,
        client_ca,
        verify_client,
        upstream: parse_http_upstream(upstream)?,
    })
}

/// `trusted_forwarders`, and where it named peers (None when it names none).
fn trusted_forwarders(
    spec: &mut ListenerSpec,
    verify_client: ClientAuthMode,
) -> Result<(AccessRules, Option<Origin>), ConfigError> {
    match spec.list("trusted_forwarders")? {
        None => Ok((AccessRules::default(), None)),
        Some(list) if verify_client == ClientAuthMode::Off => Err(ConfigError::at(
            &list.origin,
            "contradictory: trusted_forwarders names peers by their certificate, but verify_client = \"off\" asks for none",
        )),
        Some(list) => {
            let origin = list.origin.clone();
            let rules = identity_matchers(list)?;
            let origin = (!rules.is_empty()).then_some(origin);
            Ok((rules, origin))
        }
    }
}

/// The listener's own allow rules, enforced in the handshake.
fn listener_rules(
    spec: &mut ListenerSpec,
    verify_client: ClientAuthMode,
) -> Result<AccessRules, ConfigError> {
    let allow_origin = spec.origin_of(&ALLOW_KEYS);
    let access = access_rules(spec, ALLOW_KEYS)?;
    // Listener rules are enforced in the handshake, which only `required` guarantees:
    // with `optional` a client could skip its certificate and reach HTTP anyway.
    if let Some(origin) = allow_origin.filter(|_| verify_client != ClientAuthMode::Required) {
        return Err(ConfigError::at(
            &origin,
            format!("contradictory: listener allow rules need verify_client = \"required\" (it is \"{verify_client}\"); put rules on routes to let some paths through without a certificate"),
        ));
    }
    Ok(access)
}

/// Reads `client_cert_format`, `xfcc_mode` and `xfcc_trusted`, refusing contradictions;
/// `forwarders` is where `trusted_forwarders` named peers, if it did.
fn identity_formats(
    spec: &mut ListenerSpec,
    forwarders: Option<&Origin>,
) -> Result<(Vec<IdentityFormat>, XfccMode, AccessRules), ConfigError> {
    let mut formats = Vec::new();
    match spec.list("client_cert_format")? {
        None => formats.push(IdentityFormat::EscapedPem),
        Some(list) => {
            for name in &list.value {
                let format = IdentityFormat::parse(name).ok_or_else(|| {
                    ConfigError::at(
                        &list.origin,
                        format!(
                            "unknown client_cert_format \"{name}\"; use one or more of {}",
                            IdentityFormat::NAMES
                        ),
                    )
                })?;
                if formats.contains(&format) {
                    return Err(ConfigError::at(
                        &list.origin,
                        format!("client_cert_format \"{name}\" is listed twice"),
                    ));
                }
                formats.push(format);
            }
        }
    }
    let has_xfcc = formats.contains(&IdentityFormat::Xfcc);
    let mode_text = spec.text("xfcc_mode")?;
    let mode = match &mode_text {
        // A trusted forwarder's header is kept, so ours is appended to it.
        None if has_xfcc && forwarders.is_some() => XfccMode::Append,
        None if has_xfcc => XfccMode::Set,
        None => XfccMode::Sanitize,
        Some(text) => {
            let mode = XfccMode::parse(&text.value).ok_or_else(|| {
                ConfigError::at(
                    &text.origin,
                    format!(
                        "unknown xfcc_mode \"{}\": use sanitize, set or append",
                        text.value
                    ),
                )
            })?;
            if has_xfcc == (mode == XfccMode::Sanitize) {
                return Err(ConfigError::at(
                    &text.origin,
                    "contradictory: xfcc_mode \"sanitize\" sends no x-forwarded-client-cert, so it goes only without client_cert_format \"xfcc\", and \"set\" or \"append\" only with it",
                ));
            }
            if let (Some(forwarders), XfccMode::Set | XfccMode::Sanitize) = (forwarders, mode) {
                return Err(ConfigError::at(
                    &text.origin,
                    format!("contradictory: xfcc_mode \"{}\" drops every inbound x-forwarded-client-cert, but trusted_forwarders (set at {forwarders}) keeps the identity headers of the peers it names: remove xfcc_mode (with trusted_forwarders it appends with client_cert_format \"xfcc\" and sends none without), or set it to \"append\"", text.value),
                ));
            }
            mode
        }
    };
    let trusted = match spec.list("xfcc_trusted")? {
        None => AccessRules::default(),
        Some(list) if mode != XfccMode::Append => {
            return Err(ConfigError::at(
                &list.origin,
                "contradictory: xfcc_trusted only matters with xfcc_mode = \"append\"",
            ));
        }
        Some(list) => identity_matchers(list)?,
    };
    if mode == XfccMode::Append && trusted.is_empty() && forwarders.is_none() {
        let origin = mode_text.map(|t| t.origin).unwrap_or(Origin::Default);
        return Err(ConfigError::at(
            &origin,
            "xfcc_mode \"append\" needs xfcc_trusted (or trusted_forwarders): the peers whose inbound x-forwarded-client-cert may be kept",
        ));
    }
    Ok((formats, mode, trusted))
}

/// Reads `[[listener.route]]` tables.
fn routes(spec: &mut ListenerSpec) -> Result<Vec<Route>, ConfigError> {
    let Some(located) = spec.take("route") else {
        return Ok(Vec::new());
    };
    let SpecValue::Routes(route_specs) = located.value else {
        return Err(ConfigError::at(
            &located.origin,
            "write routes as [[listener.route]] tables",
        ));
    };
    let mut routes: Vec<Route> = Vec::new();
    for mut route_spec in route_specs {
        let path =
            route_spec.required_text("path", "the path prefix this route covers, e.g. \"/api\"")?;
        if !path.value.starts_with('/') {
            return Err(ConfigError::at(
                &path.origin,
                format!("route path \"{}\" must start with '/'", path.value),
            ));
        }
        if routes.iter().any(|r| r.path == path.value) {
            return Err(ConfigError::at(
                &path.origin,
                format!("contradictory: two routes for path \"{}\"", path.value),
            ));
        }
        let upstream = route_spec
            .text("upstream")?
            .map(|u| parse_http_upstream(&u))
            .transpose()?;
        let rules = access_rules(&mut route_spec, ALLOW_KEYS)?;
        let code = route_spec.integer("return_code")?;
        let text = route_spec.text("return_text")?;
        let respond = match (code, text) {
            (None, None) => None,
            (None, Some(text)) => {
                return Err(ConfigError::at(
                    &text.origin,
                    "'return_text' needs 'return_code'",
                ))
            }
            (Some(code), text) => {
                if !(100..=599).contains(&code.value) {
                    return Err(ConfigError::at(
                        &code.origin,
                        "return_code must be an HTTP status (100-599)",
                    ));
                }
                if let Some(upstream) = &upstream {
                    return Err(ConfigError::at(
                        &code.origin,
                        format!(
                            "contradictory: the route both returns {} and forwards to {upstream}",
                            code.value
                        ),
                    ));
                }
                Some(FixedResponse {
                    status: code.value as u16,
                    text: text.map(|t| t.value).unwrap_or_default(),
                })
            }
        };
        routes.push(Route {
            origin: path.origin,
            path: path.value,
            upstream,
            rules,
            respond,
        });
    }
    Ok(routes)
}

/// Reads `route_match` and `path_normalization`. Strict normalisation is the default as soon
/// as a route has allow rules: those rules are only as good as the agreement between the
/// route matcher and the backend on what the path is.
fn path_settings(
    spec: &mut ListenerSpec,
    routes: &[Route],
    warnings: &mut Vec<String>,
) -> Result<(RouteMatch, PathNormalization), ConfigError> {
    let route_match = match spec.text("route_match")? {
        None => RouteMatch::Segment,
        Some(text) => {
            let matching = match text.value.as_str() {
                "segment" => RouteMatch::Segment,
                "prefix" => RouteMatch::Prefix,
                other => {
                    return Err(ConfigError::at(
                        &text.origin,
                        format!("unknown route_match \"{other}\": use \"segment\" (the default: /a/b takes /a/b and /a/b/..., not /a/bc) or \"prefix\" (nginx's string prefix)"),
                    ))
                }
            };
            // The nginx translation writes "prefix" as a default and warns per location.
            if matching == RouteMatch::Prefix && text.origin != Origin::Default {
                for route in routes.iter().filter(|r| !r.path.ends_with('/')) {
                    warnings.push(format!(
                        "{}: with route_match = \"prefix\" ({}) route \"{path}\" also takes longer paths such as {path}x and {path}-x/y, away from the route above it; end its path with / or use route_match = \"segment\"",
                        route.origin,
                        text.origin,
                        path = route.path,
                    ));
                }
            }
            matching
        }
    };
    let path_normalization = match spec.text("path_normalization")? {
        None if routes.iter().any(|r| !r.rules.is_empty()) => PathNormalization::Strict,
        None => PathNormalization::Off,
        Some(text) => match text.value.as_str() {
            "strict" => PathNormalization::Strict,
            "off" => PathNormalization::Off,
            other => {
                return Err(ConfigError::at(
                    &text.origin,
                    format!("unknown path_normalization \"{other}\": use \"strict\" (refuse paths a backend may read differently, such as ;, %2F or \\; the default when a route has allow rules) or \"off\""),
                ))
            }
        },
    };
    Ok((route_match, path_normalization))
}
