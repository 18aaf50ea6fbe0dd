//! nginx directives -> certgate listeners.
//!
//! Each `server` block becomes one listener per `listen` (server mode when it terminates TLS
//! and proxies to `http://`, client mode when it listens in plain HTTP and proxies to
//! `https://`). Settings are inherited http -> server -> location as nginx inherits them,
//! `proxy_set_header` included (a level with any of its own inherits none), and nginx's
//! defaults are written out where they differ from certgate's, so the result behaves as nginx
//! does. The output keeps each setting's directive and comments, for errors and for
//! `convert-nginx`.

use super::parse::Directive;
use crate::config::keys::{self, nginx_directive, NginxDirective, NginxLevel, NginxValue};
use crate::config::template::Template;
use crate::config::{
    join_host_port, ClientAuthMode, ConfigError, HostPort, ListenerSpec, Origin, SpecValue,
    TlsVersion,
};
use std::collections::BTreeMap;

/// One setting of a listener or route, with the directive it came from.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: &'static str,
    pub value: SpecValue,
    pub origin: Origin,
    pub comments: Vec<String>,
}

/// A listener (or a route of one) as translated.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub comments: Vec<String>,
    pub origin: Option<Origin>,
    pub entries: Vec<Entry>,
    pub routes: Vec<Section>,
}

/// What a config translates to: listeners and the warnings to print at load.
#[derive(Debug, Default)]
pub struct Translation {
    pub listeners: Vec<Section>,
    pub warnings: Vec<String>,
    /// The file of the config's `access_log` (certgate keeps one, in the combined format).
    pub access_log: Option<(String, Origin)>,
    /// `worker_processes N`: certgate's worker threads (`auto`, the default, is not kept).
    pub workers: Option<(usize, Origin)>,
}

impl Section {
    fn push(&mut self, key: &'static str, value: SpecValue, from: &Directive) {
        self.entries.push(Entry {
            key,
            value,
            origin: origin(from),
            comments: from.comments.clone(),
        });
    }

    fn push_default(&mut self, key: &'static str, value: SpecValue, why: &str) {
        self.entries.push(Entry {
            key,
            value,
            origin: Origin::Default,
            comments: vec![why.to_string()],
        });
    }

    fn spec(&self, route: bool) -> Result<ListenerSpec, ConfigError> {
        let origin = self.origin.clone().unwrap_or(Origin::Default);
        let mut spec = if route {
            ListenerSpec::route(origin)
        } else {
            ListenerSpec {
                origin: Some(origin),
                ..ListenerSpec::default()
            }
        };
        for entry in &self.entries {
            spec.set(entry.key, entry.origin.clone(), entry.value.clone())?;
        }
        if !self.routes.is_empty() {
            let routes = self
                .routes
                .iter()
                .map(|r| r.spec(true))
                .collect::<Result<_, _>>()?;
            spec.set("route", Origin::Default, SpecValue::Routes(routes))?;
        }
        Ok(spec)
    }
}

impl Translation {
    pub fn specs(&self) -> Result<Vec<ListenerSpec>, ConfigError> {
        self.listeners.iter().map(|l| l.spec(false)).collect()
    }
}

fn origin(directive: &Directive) -> Origin {
    Origin::Directive {
        path: directive.file.as_ref().clone(),
        line: directive.line,
        name: directive.name.clone(),
    }
}

/// Where a directive may appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    Main,
    Http,
    Server,
    Location,
}

/// The setting directives (ssl_*, proxy_*, the connection's limits) and what each sets
/// come from the key table; this is the level each may be written at.
fn is_setting(name: &str, context: Context) -> bool {
    match (nginx_directive(name), context) {
        (None, _) | (_, Context::Main) => false,
        (Some(_), Context::Http | Context::Server) => true,
        (Some(d), Context::Location) => matches!(d.level, NginxLevel::Proxy | NginxLevel::ProxySsl),
    }
}

/// Directives of a level, each once.
fn directives_of(level: NginxLevel) -> impl Iterator<Item = &'static NginxDirective> {
    keys::nginx_directives()
        .map(|(_, d)| d)
        .filter(move |d| d.level == level)
}

/// Directives that change nothing certgate does, accepted with a warning that says so.
const HARMLESS: &[(&str, &str)] = &[
    (
        "worker_connections",
        "certgate has no per-worker connection limit",
    ),
    (
        "worker_rlimit_nofile",
        "raise the limit with ulimit or systemd's LimitNOFILE",
    ),
    ("pid", "certgate writes no pid file"),
    ("user", "run certgate as the user it should run as"),
    (
        "daemon",
        "certgate stays in the foreground for its supervisor",
    ),
    ("master_process", "certgate is one process"),
    ("multi_accept", "certgate's accept loop needs no tuning"),
    ("use", "certgate uses epoll through tokio"),
    ("accept_mutex", "certgate's accept loop needs no tuning"),
    ("sendfile", "certgate serves no files"),
    ("tcp_nopush", "certgate serves no files"),
    ("tcp_nodelay", "certgate always sets TCP_NODELAY"),
    (
        "keepalive_requests",
        "certgate does not cap requests per connection",
    ),
    ("types", "certgate serves no files"),
    ("default_type", "certgate serves no files"),
    ("types_hash_max_size", "certgate has no such table"),
    ("types_hash_bucket_size", "certgate has no such table"),
    (
        "server_names_hash_bucket_size",
        "certgate has no such table",
    ),
    ("server_names_hash_max_size", "certgate has no such table"),
    (
        "server_tokens",
        "certgate adds no Server header to proxied responses",
    ),
    (
        "log_format",
        "certgate's access log formats are json and combined (--access-log)",
    ),
    ("charset", "certgate does not rewrite responses"),
    ("gzip", "certgate does not compress responses"),
    (
        "ssl_prefer_server_ciphers",
        "certgate always prefers its own cipher order",
    ),
    ("ssl_buffer_size", "rustls sizes its records itself"),
    (
        "ssl_session_cache",
        "certgate keeps its own cache of 256 TLS sessions per listener",
    ),
    (
        "ssl_session_timeout",
        "certgate's TLS sessions and tickets live up to 6 hours",
    ),
    (
        "proxy_buffering",
        "certgate streams bodies without buffering them",
    ),
    (
        "proxy_buffer_size",
        "certgate streams bodies without buffering them",
    ),
    (
        "proxy_buffers",
        "certgate streams bodies without buffering them",
    ),
    (
        "proxy_send_timeout",
        "certgate waits for the upstream as long as the client stays connected",
    ),
    (
        "client_body_timeout",
        "certgate waits for the body as long as the client stays connected",
    ),
    (
        "client_header_buffer_size",
        "certgate limits the whole request head instead (large_client_header_buffers)",
    ),
];

/// Settings and header rules in force at one level.
#[derive(Clone, Default)]
struct Scope<'a> {
    settings: BTreeMap<&'a str, &'a Directive>,
    headers: Vec<&'a Directive>,
}

fn args_count(d: &Directive, counts: std::ops::RangeInclusive<usize>) -> Result<(), ConfigError> {
    if counts.contains(&d.args.len()) {
        Ok(())
    } else {
        Err(d.error(format!(
            "invalid number of arguments in \"{}\" directive",
            d.name
        )))
    }
}

impl<'a> Scope<'a> {
    /// The scope of a block inside this one: its own settings over the inherited ones.
    fn enter(
        &self,
        block: &'a [Directive],
        context: Context,
        warnings: &mut Vec<String>,
    ) -> Result<Scope<'a>, ConfigError> {
        let mut scope = self.clone();
        let mut own_headers = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for d in block {
            let name = d.name.as_str();
            if is_setting(name, context) {
                if seen.contains(&name) {
                    return Err(d.error(format!("\"{name}\" directive is duplicate")));
                }
                seen.push(name);
                scope.settings.insert(name, d);
            } else if name == "proxy_set_header" && context != Context::Main {
                args_count(d, 2..=2)?;
                Template::parse(&d.args[1])
                    .map_err(|e| d.error(format!("proxy_set_header {}: {e}", d.args[0])))?;
                if d.args[1].contains("$ssl_client_cert")
                    || d.args[1].contains("${ssl_client_cert}")
                {
                    warnings.push(format!(
                        "{}: nginx sends $ssl_client_cert folded over several header lines, which strict HTTP parsers refuse; certgate sends it on one line, the PEM lines joined by spaces (what a lenient parser makes of nginx's); $ssl_client_escaped_cert is the portable choice",
                        d.place()
                    ));
                }
                own_headers.push(d);
            } else if let Some((_, why)) = HARMLESS.iter().find(|(n, _)| *n == name) {
                warnings.push(format!(
                    "{}: \"{name}\" is accepted and ignored: {why}",
                    d.place()
                ));
            } else if !structural(name, context) {
                return Err(not_supported(d, context));
            }
        }
        if !own_headers.is_empty() {
            scope.headers = own_headers;
        }
        Ok(scope)
    }

    fn get(&self, name: &str) -> Option<&'a Directive> {
        self.settings.get(name).copied()
    }
}

/// Directives handled by the walk itself rather than as settings.
fn structural(name: &str, context: Context) -> bool {
    match context {
        Context::Main => matches!(
            name,
            "http" | "events" | "server" | "upstream" | "error_log" | "worker_processes"
        ),
        Context::Http => matches!(name, "server" | "upstream" | "access_log" | "error_log"),
        Context::Server => matches!(
            name,
            "listen" | "server_name" | "location" | "access_log" | "error_log" | "return"
        ),
        Context::Location => matches!(
            name,
            "proxy_pass" | "if" | "access_log" | "error_log" | "return"
        ),
    }
}

fn not_supported(d: &Directive, context: Context) -> ConfigError {
    let known = nginx_directive(&d.name).is_some()
        || ["server", "location", "listen", "proxy_pass", "upstream"].contains(&d.name.as_str());
    if known {
        let place = match context {
            Context::Main => "at the top level",
            Context::Http => "in http",
            Context::Server => "in server",
            Context::Location => "in location",
        };
        d.error(format!("\"{}\" directive is not allowed {place}", d.name))
    } else {
        d.error(format!(
            "directive \"{}\" is not supported (see the list of nginx directives in docs/nginx.md)",
            d.name
        ))
    }
}

/// An `upstream NAME { server ADDR [max_conns=N]; keepalive N; }` block.
struct Upstream<'a> {
    address: String,
    /// The server's `max_conns=N`, and that `server` directive.
    max_conns: Option<(i64, &'a Directive)>,
}

fn upstream_block<'a>(
    d: &'a Directive,
    warnings: &mut Vec<String>,
) -> Result<(String, Upstream<'a>), ConfigError> {
    args_count(d, 1..=1)?;
    let mut servers = Vec::new();
    let mut max_conns = None;
    for inner in d.block.as_deref().unwrap_or_default() {
        match inner.name.as_str() {
            "server" => {
                args_count(inner, 1..=8)?;
                for option in &inner.args[1..] {
                    if let Some(value) = option.strip_prefix("max_conns=") {
                        let value = value.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                            inner.error(format!(
                                "invalid max_conns \"{value}\": use a number of connections (0: no limit)"
                            ))
                        })?;
                        max_conns = Some((value, inner));
                    } else if !option.starts_with("max_fails")
                        && !option.starts_with("fail_timeout")
                    {
                        warnings.push(format!(
                            "{}: server option \"{option}\" is ignored: certgate forwards to one server",
                            inner.place()
                        ));
                    }
                }
                servers.push(inner);
            }
            "keepalive" | "keepalive_timeout" | "keepalive_requests" => warnings.push(format!(
                "{}: \"{}\" is accepted: certgate always pools upstream connections",
                inner.place(),
                inner.name
            )),
            _ => return Err(not_supported(inner, Context::Http)),
        }
    }
    match servers.as_slice() {
        [one] => Ok((
            d.args[0].clone(),
            Upstream {
                address: one.args[0].clone(),
                max_conns,
            },
        )),
        [] => Err(d.error(format!("upstream \"{}\" has no server", d.args[0]))),
        [_, second, ..] => Err(second.error(format!(
            "upstream \"{}\" has more than one server: certgate forwards to one server (no load balancing)",
            d.args[0]
        ))),
    }
}

/// Reads a whole config (the directives of the main file, includes expanded).
pub fn translate(top: &[Directive]) -> Result<Translation, ConfigError> {
    let mut translation = Translation::default();
    let https: Vec<&Directive> = top.iter().filter(|d| d.name == "http").collect();
    if let [_, second, ..] = https.as_slice() {
        return Err(second.error("\"http\" directive is duplicate"));
    }
    let Some(http) = https.first() else {
        // A file of bare server blocks (a conf.d snippet) reads as if inside http { }.
        let scope = Scope::default().enter(top, Context::Http, &mut translation.warnings)?;
        http_block(top, &scope, &mut translation)?;
        return finish(translation, top);
    };
    let main = Scope::default().enter(top, Context::Main, &mut translation.warnings)?;
    for d in top {
        match d.name.as_str() {
            "events" => {
                for inner in d.block.as_deref().unwrap_or_default() {
                    match HARMLESS.iter().find(|(n, _)| *n == inner.name) {
                        Some((_, why)) => translation.warnings.push(format!(
                            "{}: \"{}\" is accepted and ignored: {why}",
                            inner.place(),
                            inner.name
                        )),
                        None => return Err(not_supported(inner, Context::Main)),
                    }
                }
            }
            "error_log" => log_directive(d, &mut translation.warnings),
            _ => {}
        }
    }
    if let Some(stray) = top
        .iter()
        .find(|d| d.name == "server" || d.name == "upstream")
    {
        return Err(stray.error(format!(
            "\"{}\" directive is not allowed here: put it inside http {{ }}",
            stray.name
        )));
    }
    let block = http.block.as_deref().unwrap_or_default();
    let scope = main.enter(block, Context::Http, &mut translation.warnings)?;
    http_block(block, &scope, &mut translation)?;
    finish(translation, top)
}

fn finish(mut translation: Translation, top: &[Directive]) -> Result<Translation, ConfigError> {
    access_logs(top, &mut translation);
    translation.workers = worker_processes(top)?;
    if translation.listeners.is_empty() {
        return Err(ConfigError::general(
            "no server block with a listen directive: nothing to run",
        ));
    }
    // nginx picks among servers on one address by server name; certgate runs one per address.
    let mut seen: Vec<(&str, &Origin)> = Vec::new();
    for listener in &translation.listeners {
        let Some(listen) = listener.entries.iter().find(|e| e.key == "listen") else {
            continue;
        };
        let SpecValue::Text(address) = &listen.value else {
            continue;
        };
        if address.ends_with(":0") {
            continue;
        }
        if let Some((_, first)) = seen.iter().find(|(a, _)| a == address) {
            return Err(ConfigError::at(
                &listen.origin,
                format!(
                    "a second server on {address} (the first is at {first}): name-based virtual hosting is not supported; give each server its own address or port"
                ),
            ));
        }
        seen.push((address, &listen.origin));
    }
    Ok(translation)
}

/// `error_log` is set for the whole process by flags; `access_log` is read by `access_logs`.
fn log_directive(d: &Directive, warnings: &mut Vec<String>) {
    if d.name != "error_log" || d.args.first().map(String::as_str) == Some("off") {
        return;
    }
    warnings.push(format!(
        "{}: \"error_log\" is accepted, but certgate's error log is set for the whole process: use --log-file FILE and --log-level",
        d.place()
    ));
}

/// `worker_processes N` (main context): the number of certgate's worker threads, which do
/// what nginx's worker processes do. `auto` is certgate's default too.
fn worker_processes(top: &[Directive]) -> Result<Option<(usize, Origin)>, ConfigError> {
    let Some(d) = top.iter().find(|d| d.name == "worker_processes") else {
        return Ok(None);
    };
    match d.args.as_slice() {
        [auto] if auto == "auto" => Ok(None),
        [n] => match n.parse::<usize>() {
            Ok(n) if (1..=crate::config::MAX_WORKERS).contains(&n) => Ok(Some((n, origin(d)))),
            _ => Err(d.error(format!(
                "invalid worker_processes \"{n}\": give auto or a number from 1 to {}",
                crate::config::MAX_WORKERS
            ))),
        },
        _ => Err(d.error("worker_processes takes one argument: auto or a number")),
    }
}

/// The config's access log: the first `access_log FILE`, anywhere. certgate writes one access
/// log per process, in nginx's combined format; other files and formats are warned about.
fn access_logs(directives: &[Directive], translation: &mut Translation) {
    for d in directives {
        if let Some(block) = &d.block {
            access_logs(block, translation);
        }
        if d.name != "access_log" {
            continue;
        }
        let Some(file) = d.args.first().filter(|f| f.as_str() != "off") else {
            continue;
        };
        if file.starts_with("syslog:") {
            translation.warnings.push(format!(
                "{}: access_log to syslog is not supported: ignored",
                d.place()
            ));
            continue;
        }
        if let Some(format) = d.args.get(1).filter(|f| f.as_str() != "combined") {
            translation.warnings.push(format!(
                "{}: access_log format \"{format}\" is ignored: certgate writes nginx's combined format (or JSON with --access-log json)",
                d.place()
            ));
        }
        match &translation.access_log {
            None => translation.access_log = Some((file.clone(), origin(d))),
            Some((first, first_origin)) if first != file => translation.warnings.push(format!(
                "{}: certgate writes one access log; {file} is ignored (it writes {first}, from {first_origin})",
                d.place()
            )),
            Some(_) => {}
        }
    }
}

/// The servers and upstreams of an http block, whose own settings `scope` already holds.
fn http_block(
    block: &[Directive],
    scope: &Scope<'_>,
    translation: &mut Translation,
) -> Result<(), ConfigError> {
    let mut upstreams = BTreeMap::new();
    for d in block {
        match d.name.as_str() {
            "upstream" => {
                let (name, upstream) = upstream_block(d, &mut translation.warnings)?;
                upstreams.insert(name, upstream);
            }
            "access_log" | "error_log" => log_directive(d, &mut translation.warnings),
            _ => {}
        }
    }
    for d in block.iter().filter(|d| d.name == "server") {
        let block = d.block.as_deref().unwrap_or_default();
        let server_scope = scope.enter(block, Context::Server, &mut translation.warnings)?;
        let listeners = server_block(d, &server_scope, &upstreams, &mut translation.warnings)?;
        translation.listeners.extend(listeners);
    }
    Ok(())
}

/// What one location does: proxy somewhere, or return a fixed answer.
struct Location<'a> {
    directive: &'a Directive,
    path: String,
    action: Action<'a>,
    scope: Scope<'a>,
}

enum Action<'a> {
    ProxyPass(&'a Directive),
    Return(&'a Directive),
}

/// A server block's parts, once its locations are read.
struct ServerBlock<'a, 'u> {
    directive: &'a Directive,
    /// Its `server_name`, unless that is `_` or empty.
    name: Option<String>,
    /// `location /`, which proxies (checked), and the directive that does.
    root: Location<'a>,
    root_pass: &'a Directive,
    /// The other locations, which become routes.
    locations: Vec<Location<'a>>,
    upstreams: &'u BTreeMap<String, Upstream<'u>>,
}

/// One server block -> one listener per `listen`.
fn server_block(
    server: &Directive,
    scope: &Scope<'_>,
    upstreams: &BTreeMap<String, Upstream<'_>>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Section>, ConfigError> {
    let block = server.block.as_deref().unwrap_or_default();
    let listens: Vec<&Directive> = block.iter().filter(|d| d.name == "listen").collect();
    if listens.is_empty() {
        return Err(
            server.error("server block without \"listen\": add one (nginx would listen on *:80)")
        );
    }
    let name = block
        .iter()
        .find(|d| d.name == "server_name")
        .and_then(|d| d.args.first())
        .filter(|n| n.as_str() != "_" && !n.is_empty())
        .cloned();

    let mut locations = Vec::new();
    for d in block {
        match d.name.as_str() {
            "location" => locations.push(location(d, scope, warnings)?),
            "return" => return Err(d.error(
                "\"return\" directly in server is not supported: put it in a location other than /",
            )),
            "access_log" | "error_log" => log_directive(d, warnings),
            _ => {}
        }
    }
    let Some(root) = locations.iter().position(|l| l.path == "/") else {
        return Err(server.error(
            "server block without \"location /\": certgate needs the location that takes every other path",
        ));
    };
    let root = locations.remove(root);
    let root_pass = match root.action {
        Action::ProxyPass(d) => d,
        Action::Return(d) => {
            return Err(d.error(
                "\"return\" in location / is not supported: certgate forwards every other path to an upstream",
            ))
        }
    };
    let server = ServerBlock {
        directive: server,
        name,
        root,
        root_pass,
        locations,
        upstreams,
    };
    let several_listens = listens.len() > 1;
    let sections = listens
        .into_iter()
        .map(|listen| listener_section(&server, listen, several_listens, warnings))
        .collect::<Result<Vec<_>, _>>()?;
    // Once per location, not per listen.
    for other in server.locations.iter().filter(|l| !l.path.ends_with('/')) {
        let path = &other.path;
        warnings.push(format!(
            "{}: as in nginx, location {path} also matches longer paths such as {path}x and {path}-x/y, which it then answers instead of the shorter location that covers them; to match only {path} and {path}/..., end it with / (then {path} itself goes to location /) or run a TOML config (certgate convert-nginx) without route_match = \"prefix\"",
            other.directive.place(),
        ));
    }
    Ok(sections)
}

/// The listener one `listen` of a server block becomes.
fn listener_section(
    server: &ServerBlock<'_, '_>,
    listen: &Directive,
    several_listens: bool,
    warnings: &mut Vec<String>,
) -> Result<Section, ConfigError> {
    let (address, tls) = listen_address(listen, warnings)?;
    let mut section = Section {
        comments: server.directive.comments.clone(),
        origin: Some(origin(server.directive)),
        ..Section::default()
    };
    section.entries.push(Entry {
        key: "name",
        value: SpecValue::Text(listener_name(server, &address, several_listens)),
        origin: origin(server.directive),
        comments: Vec::new(),
    });
    section.push("listen", SpecValue::Text(address), listen);
    let root = &server.root;
    let root_pass = server.root_pass;
    let target = upstream_url(root_pass, "/", server.upstreams)?;
    let server_mode = match (tls, target.https) {
        (true, false) => true,
        (false, true) => false,
        (true, true) => {
            return Err(root_pass.error(
                "TLS on both sides (listen ... ssl with proxy_pass https://) is not supported yet: certgate terminates TLS (server mode) or originates it (client mode)",
            ))
        }
        (false, false) => {
            return Err(root_pass.error(format!(
                "neither side of this server uses TLS ({} without ssl, proxy_pass http://): certgate is an mTLS proxy; add \"ssl\" to listen or proxy to https://",
                listen.args.join(" ")
            )))
        }
    };
    let (mode, why) = if server_mode {
        ("server", "listen ... ssl, proxy_pass http://")
    } else {
        ("client", "plain listen, proxy_pass https://")
    };
    section.push_default("mode", SpecValue::Text(mode.into()), why);
    section.push("upstream", SpecValue::Text(target.url.clone()), root_pass);
    if server_mode {
        self::server_mode(&mut section, root, warnings)?;
    } else {
        client_mode(&mut section, root, &target, warnings)?;
    }
    section.push_default(
        "default_headers",
        SpecValue::Bool(false),
        "nginx adds no X-Forwarded-* or X-Real-IP headers unless told to",
    );
    // Timeouts and the body limit, with nginx's defaults where certgate's differ.
    mapped(&mut section, &root.scope, warnings, NginxLevel::Proxy)?;
    client_side(&mut section, &root.scope, warnings)?;
    if let Some((max, server)) = target.max_conns {
        section.push("upstream_max_connections", SpecValue::Integer(max), server);
    }
    headers(&mut section, root, &target);
    if !server.locations.is_empty() {
        section.push_default(
            "route_match",
            SpecValue::Text("prefix".into()),
            "nginx's location is a string prefix: location /a/b also takes /a/bc",
        );
    }
    for other in &server.locations {
        section.routes.push(route_section(server, other, &target)?);
    }
    Ok(section)
}

/// One listen: NAME:PORT; several (dual-stack, say): each named by its full address. A
/// server without a server_name is named by its file and line.
fn listener_name(server: &ServerBlock<'_, '_>, address: &str, several_listens: bool) -> String {
    let base = match &server.name {
        Some(name) => name.clone(),
        None => format!(
            "{}:{}",
            server
                .directive
                .file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            server.directive.line
        ),
    };
    if several_listens {
        format!("{base} {address}")
    } else {
        let port = address.rsplit(':').next().unwrap_or("");
        format!("{base}:{port}")
    }
}

/// A location other than / as a route, refused where certgate would apply it otherwise than
/// nginx (its own limits or headers, another scheme or max_conns).
fn route_section(
    server: &ServerBlock<'_, '_>,
    other: &Location<'_>,
    target: &Target<'_>,
) -> Result<Section, ConfigError> {
    let root = &server.root;
    for limit in limits_per_server() {
        let args = |scope: &Scope<'_>| scope.get(limit).map(|d| d.args.clone());
        if args(&other.scope) != args(&root.scope) {
            return Err(other.directive.error(format!(
                "location {} sets another \"{limit}\" than location /: certgate applies one per server",
                other.path
            )));
        }
    }
    if header_pairs(&other.scope) != header_pairs(&root.scope) {
        return Err(other.directive.error(format!(
            "location {} sets other headers than location /: certgate applies one set of header rules per server",
            other.path
        )));
    }
    if target.https {
        return Err(other.directive.error(
            "several locations are supported in server mode only (listen ... ssl, proxy_pass http://)",
        ));
    }
    let mut route = Section {
        comments: other.directive.comments.clone(),
        origin: Some(origin(other.directive)),
        ..Section::default()
    };
    route.push("path", SpecValue::Text(other.path.clone()), other.directive);
    match other.action {
        Action::ProxyPass(pass) => {
            let route_target = upstream_url(pass, &other.path, server.upstreams)?;
            if route_target.https != target.https {
                return Err(pass.error(
                    "every location of a server must proxy with the same scheme as location /",
                ));
            }
            let max_conns = |target: &Target<'_>| target.max_conns.map(|(max, _)| max);
            if max_conns(&route_target) != max_conns(target) {
                return Err(pass.error(format!(
                    "location {} proxies to an upstream with another max_conns than location /: certgate applies one upstream_max_connections per server (to each of its upstreams)",
                    other.path
                )));
            }
            route.push("upstream", SpecValue::Text(route_target.url), pass);
        }
        Action::Return(ret) => {
            let (code, text) = return_args(ret)?;
            route.push("return_code", SpecValue::Integer(code), ret);
            if let Some(text) = text {
                route.push("return_text", SpecValue::Text(text), ret);
            }
        }
    }
    Ok(route)
}

fn location<'a>(
    d: &'a Directive,
    scope: &Scope<'a>,
    warnings: &mut Vec<String>,
) -> Result<Location<'a>, ConfigError> {
    let path = match d.args.as_slice() {
        [path] => path.clone(),
        [modifier, path] if modifier == "^~" => path.clone(),
        [modifier, _] if modifier == "=" => {
            return Err(d.error("exact-match locations (location = ...) are not supported: certgate routes by path prefix"))
        }
        [modifier, _] if modifier.starts_with('~') => {
            return Err(d.error("regular-expression locations are not supported: certgate routes by path prefix"))
        }
        _ => return Err(d.error("invalid number of arguments in \"location\" directive")),
    };
    if path.starts_with('@') {
        return Err(d.error("named locations are not supported"));
    }
    let block = d.block.as_deref().unwrap_or_default();
    let mut scope = scope.enter(block, Context::Location, warnings)?;
    let mut action = None;
    for inner in block {
        match inner.name.as_str() {
            "proxy_pass" | "return" => {
                if action.is_some() {
                    return Err(inner.error(format!(
                        "location {path} has both proxy_pass and return (or two of one)"
                    )));
                }
                action = Some(if inner.name == "return" {
                    args_count(inner, 1..=2)?;
                    Action::Return(inner)
                } else {
                    args_count(inner, 1..=1)?;
                    Action::ProxyPass(inner)
                });
            }
            "if" => if_block(inner, &mut scope, warnings)?,
            "access_log" | "error_log" => log_directive(inner, warnings),
            _ => {}
        }
    }
    let action = action.ok_or_else(|| {
        d.error(format!(
            "location {path} has no \"proxy_pass\" (or \"return\")"
        ))
    })?;
    Ok(Location {
        directive: d,
        path,
        action,
        scope,
    })
}

/// `if ($http_x) { proxy_set_header NAME $http_x; }`: nginx refuses proxy_set_header inside
/// if, but the intent is plain, and a header rule whose value is empty sends nothing, which
/// is exactly that condition.
fn if_block<'a>(
    d: &'a Directive,
    scope: &mut Scope<'a>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let condition = d.args.join(" ");
    let variable = condition
        .trim()
        .strip_prefix('(')
        .and_then(|c| c.strip_suffix(')'))
        .map(str::trim)
        .filter(|v| v.starts_with('$') && !v.contains(' '))
        .ok_or_else(|| {
            d.error(format!(
                "\"if {condition}\" is not supported: only if ($variable) {{ proxy_set_header ...; }} is"
            ))
        })?;
    for inner in d.block.as_deref().unwrap_or_default() {
        if inner.name != "proxy_set_header" || inner.args.len() != 2 {
            return Err(inner.error(format!(
                "\"{}\" inside \"if\" is not supported: only proxy_set_header is",
                inner.name
            )));
        }
        if inner.args[1] != variable {
            return Err(inner.error(format!(
                "inside \"if ({variable})\" certgate supports only proxy_set_header NAME {variable}"
            )));
        }
        Template::parse(&inner.args[1]).map_err(|e| inner.error(e))?;
        warnings.push(format!(
            "{}: nginx refuses \"proxy_set_header\" inside \"if\" (\"directive is not allowed here\"); certgate accepts it: {} is sent only when {variable} is not empty",
            inner.place(),
            inner.args[0]
        ));
        scope
            .headers
            .retain(|h| !h.args[0].eq_ignore_ascii_case(&inner.args[0]));
        scope.headers.push(inner);
    }
    Ok(())
}

fn header_pairs(scope: &Scope<'_>) -> Vec<(String, String)> {
    scope
        .headers
        .iter()
        .map(|h| (h.args[0].to_ascii_lowercase(), h.args[1].clone()))
        .collect()
}

/// `listen` -> the address to bind and whether it speaks TLS.
fn listen_address(
    d: &Directive,
    warnings: &mut Vec<String>,
) -> Result<(String, bool), ConfigError> {
    let Some(address) = d.args.first() else {
        return Err(d.error("invalid number of arguments in \"listen\" directive"));
    };
    let mut tls = false;
    for option in &d.args[1..] {
        match option.split('=').next().unwrap_or("") {
            "ssl" => tls = true,
            "default_server" | "default" | "reuseport" | "backlog" | "rcvbuf" | "sndbuf"
            | "deferred" | "bind" | "ipv6only" | "so_keepalive" | "fastopen" => {}
            "http2" => warnings.push(format!(
                "{}: \"http2\" on listen is accepted: certgate offers HTTP/2 through ALPN on TLS listeners",
                d.place()
            )),
            other => {
                return Err(d.error(format!(
                    "listen option \"{other}\" is not supported"
                )))
            }
        }
    }
    if address.starts_with("unix:") {
        return Err(d.error("listening on a unix socket is not supported"));
    }
    // nginx's forms: PORT, ADDR:PORT, [V6]:PORT, *:PORT, localhost:PORT, ADDR (port 80).
    let address = if address.chars().all(|c| c.is_ascii_digit()) {
        format!("0.0.0.0:{address}")
    } else {
        match HostPort::parse(address, 80) {
            Some(HostPort { host, port }) => {
                let host = match host.as_str() {
                    "*" => "0.0.0.0",
                    "localhost" => "127.0.0.1",
                    other => other,
                };
                join_host_port(host, port)
            }
            // Not an address: validation says so, naming the form it wants.
            None => address.clone(),
        }
    };
    Ok((address, tls))
}

struct Target<'a> {
    url: String,
    https: bool,
    /// nginx's `$proxy_host`: host, and port unless it is the scheme's default.
    proxy_host: String,
    /// Reached through an `upstream` block, whose name nginx uses as `$proxy_host` (and so
    /// as the default TLS name) rather than the server's address.
    named_upstream: bool,
    /// The upstream block's `max_conns`, with its `server` directive.
    max_conns: Option<(i64, &'a Directive)>,
}

fn upstream_url<'a>(
    d: &Directive,
    location: &str,
    upstreams: &BTreeMap<String, Upstream<'a>>,
) -> Result<Target<'a>, ConfigError> {
    let url = &d.args[0];
    if url.contains('$') {
        return Err(d.error("variables in proxy_pass are not supported"));
    }
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(d.error(format!(
            "invalid URL prefix in \"{url}\": use http:// or https://"
        )));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    if path == "/" && location != "/" {
        return Err(d.error(format!(
            "proxy_pass ending in \"/\" in location {location}: nginx then replaces the {location} prefix with /, certgate keeps request paths as they are; drop the trailing /"
        )));
    }
    if !path.is_empty() && path != "/" {
        return Err(d.error(format!(
            "a URI in proxy_pass (\"{path}\") is not supported: requests keep their own path"
        )));
    }
    let scheme = if https { "https" } else { "http" };
    let default_port = if https { 443 } else { 80 };
    let (proxy_host, address) = match upstreams.get(authority) {
        Some(upstream) => {
            // nginx sends the upstream block's name as $proxy_host.
            (authority.to_string(), upstream.address.clone())
        }
        None => {
            let host = match HostPort::parse(authority, default_port) {
                Some(parsed) => parsed.without_default_port(default_port),
                // Not host:port: validation of the upstream says so.
                None => authority.to_string(),
            };
            (host, authority.to_string())
        }
    };
    Ok(Target {
        url: format!("{scheme}://{address}"),
        https,
        named_upstream: upstreams.contains_key(authority),
        max_conns: upstreams.get(authority).and_then(|u| u.max_conns),
        proxy_host,
    })
}

/// A key directive's value; nginx's OpenSSL-engine form `engine:pkcs11:URI` becomes the URI.
fn key_text(d: &Directive) -> SpecValue {
    let value = d.args.first().map(String::as_str).unwrap_or_default();
    SpecValue::Text(
        value
            .strip_prefix("engine:pkcs11:")
            .unwrap_or(value)
            .to_string(),
    )
}

fn text(d: &Directive) -> SpecValue {
    SpecValue::Text(d.args.first().cloned().unwrap_or_default())
}

fn on_off(d: &Directive) -> Result<bool, ConfigError> {
    match d.args.as_slice() {
        [v] if v == "on" => Ok(true),
        [v] if v == "off" => Ok(false),
        _ => Err(d.error(format!(
            "invalid value in \"{}\": it must be \"on\" or \"off\"",
            d.name
        ))),
    }
}

fn number(d: &Directive) -> Result<SpecValue, ConfigError> {
    args_count(d, 1..=1)?;
    d.args[0]
        .parse::<i64>()
        .map(SpecValue::Integer)
        .map_err(|_| d.error(format!("invalid value \"{}\" in \"{}\"", d.args[0], d.name)))
}

/// `ssl_protocols` / `proxy_ssl_protocols` -> min and max version (TLS 1.2 and 1.3 only).
fn protocols(
    section: &mut Section,
    d: &Directive,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let mut versions = Vec::new();
    for name in &d.args {
        match TlsVersion::parse(name) {
            Some(version) if version.supported().is_some() => versions.push(version),
            Some(_) => warnings.push(format!(
                "{}: {name} is left out: certgate speaks TLS 1.2 and 1.3 only",
                d.place()
            )),
            None => return Err(d.error(format!("unknown protocol \"{name}\""))),
        }
    }
    let (Some(min), Some(max)) = (versions.iter().min(), versions.iter().max()) else {
        return Err(d.error("no protocol certgate speaks: list TLSv1.2 and/or TLSv1.3"));
    };
    section.push("min_tls_version", SpecValue::Text(min.name().into()), d);
    section.push("max_tls_version", SpecValue::Text(max.name().into()), d);
    Ok(())
}

/// Header rules, plus nginx's default Host (`$proxy_host`) where no rule sets one.
fn headers(section: &mut Section, location: &Location<'_>, target: &Target<'_>) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut first: Option<&Directive> = None;
    for h in &location.scope.headers {
        first.get_or_insert(h);
        pairs.push((h.args[0].clone(), h.args[1].clone()));
    }
    let sets_host = pairs.iter().any(|(n, _)| n.eq_ignore_ascii_case("host"));
    if !sets_host {
        pairs.insert(0, ("Host".into(), target.proxy_host.clone()));
    }
    if pairs.is_empty() {
        return;
    }
    let entry = Entry {
        key: "set_header",
        value: SpecValue::Headers(pairs),
        origin: first.map(origin).unwrap_or(Origin::Default),
        comments: first.map(|d| d.comments.clone()).unwrap_or_default(),
    };
    section.entries.push(entry);
}

/// The directive that proxies location / (checked to be a proxy_pass by `server_block`).
fn root_pass<'a>(root: &Location<'a>) -> &'a Directive {
    match root.action {
        Action::ProxyPass(d) | Action::Return(d) => d,
    }
}

/// `return CODE [TEXT]` or `return URL` (a 302), as a route's fixed answer.
fn return_args(d: &Directive) -> Result<(i64, Option<String>), ConfigError> {
    let first = &d.args[0];
    if d.args.len() == 1 && (first.starts_with("http://") || first.starts_with("https://")) {
        return Ok((302, Some(first.clone())));
    }
    let code = first
        .parse::<i64>()
        .map_err(|_| d.error(format!("invalid return code \"{first}\"")))?;
    let text = d.args.get(1).cloned();
    if text.as_deref().is_some_and(|t| t.contains('$')) {
        return Err(d.error("variables in return are not supported"));
    }
    match code {
        444 => Err(d.error(
            "return 444 (close without answering) is not supported: return a status such as 403",
        )),
        301 | 302 | 303 | 307 | 308 if text.is_none() => {
            Err(d.error(format!("return {code} needs the URL to redirect to")))
        }
        200..=599 => Ok((code, text)),
        _ => Err(d.error(format!("return {code}: use a status from 200 to 599"))),
    }
}

/// Why nginx configs get `partial_chain = false`.
const PARTIAL_CHAIN_DEFAULT: &str = "nginx's behaviour: OpenSSL wants the chain to end at a self-signed root of the CA bundle (no X509_V_FLAG_PARTIAL_CHAIN)";

/// The directives `limits` reads, which certgate applies per server.
fn limits_per_server() -> impl Iterator<Item = &'static str> {
    directives_of(NginxLevel::Proxy)
        .filter(|d| d.value != NginxValue::Ignored)
        .map(|d| d.name)
}

/// Timeouts and limits of the client side; nginx's defaults are certgate's, so only what the
/// config sets is written.
fn client_side(
    section: &mut Section,
    scope: &Scope<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if let Some(d) = scope.get("keepalive_timeout") {
        args_count(d, 1..=2)?;
        if d.args.len() == 2 {
            warnings.push(format!(
                "{}: the second \"keepalive_timeout\" argument (a Keep-Alive response header) is ignored",
                d.place()
            ));
        }
    }
    for name in ["client_header_timeout", "http2_idle_timeout"] {
        if let Some(d) = scope.get(name) {
            args_count(d, 1..=1)?;
        }
    }
    mapped(section, scope, warnings, NginxLevel::Connection)?;
    // `large_client_header_buffers NUMBER SIZE`: nginx holds a request head in at most
    // NUMBER buffers of SIZE (and one header line in one buffer); certgate caps the whole head.
    if let Some(d) = scope.get("large_client_header_buffers") {
        args_count(d, 2..=2)?;
        let count: u64 = d.args[0]
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad_buffers(d))?;
        let size = crate::config::parse_size(&d.args[1]).ok_or_else(|| bad_buffers(d))?;
        section.push(
            "max_header_size",
            SpecValue::Integer(count.saturating_mul(size).min(i64::MAX as u64) as i64),
            d,
        );
    }
    Ok(())
}

fn bad_buffers(d: &Directive) -> ConfigError {
    d.error(format!(
        "invalid \"large_client_header_buffers {}\": use NUMBER SIZE, e.g. 4 8k",
        d.args.join(" ")
    ))
}

/// The directives of `level` that map one to one onto keys, as the key table says: where
/// they are set, and nginx's default where the table has one.
fn mapped(
    section: &mut Section,
    scope: &Scope<'_>,
    warnings: &mut Vec<String>,
    level: NginxLevel,
) -> Result<(), ConfigError> {
    for (key, directive) in keys::nginx_directives().filter(|(_, d)| d.level == level) {
        let Some(d) = scope.get(directive.name) else {
            if let Some(default) = directive.default {
                section.push_default(
                    key.key,
                    SpecValue::Text(default.into()),
                    &format!("nginx's default {}", directive.name),
                );
            }
            continue;
        };
        match directive.value {
            NginxValue::Text => section.push(key.key, text(d), d),
            NginxValue::Number => section.push(key.key, number(d)?, d),
            NginxValue::OnOff => section.push(key.key, SpecValue::Bool(on_off(d)?), d),
            NginxValue::Protocols => protocols(section, d, warnings)?,
            NginxValue::Own | NginxValue::Ignored => {}
        }
    }
    Ok(())
}

fn server_mode(
    section: &mut Section,
    root: &Location<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let scope = &root.scope;
    let required = |name: &str| {
        scope.get(name).ok_or_else(|| {
            root.directive.error(format!(
                "a TLS server needs \"{name}\" (in this server or in http)"
            ))
        })
    };
    let cert = required("ssl_certificate")?;
    let key = required("ssl_certificate_key")?;
    args_count(cert, 1..=1)?;
    args_count(key, 1..=1)?;
    section.push("cert", text(cert), cert);
    section.push("key", key_text(key), key);
    let verify = match scope.get("ssl_verify_client") {
        Some(d) => {
            args_count(d, 1..=1)?;
            let mode = ClientAuthMode::parse_nginx(&d.args[0]).ok_or_else(|| {
                d.error(format!(
                    "invalid value \"{}\" in \"ssl_verify_client\"",
                    d.args[0]
                ))
            })?;
            section.push("verify_client", SpecValue::Text(mode.to_string()), d);
            mode
        }
        None => {
            section.push_default(
                "verify_client",
                SpecValue::Text(ClientAuthMode::Off.to_string()),
                "nginx's default: ssl_verify_client off",
            );
            ClientAuthMode::Off
        }
    };
    let ca = match (scope.get("ssl_client_certificate"), scope.get("ssl_trusted_certificate")) {
        (Some(ca), None) | (None, Some(ca)) => Some(ca),
        (Some(_), Some(trusted)) => {
            return Err(trusted.error(
                "ssl_client_certificate and ssl_trusted_certificate together are not supported: put both CA bundles in one file",
            ))
        }
        (None, None) => None,
    };
    if let Some(ca) = ca {
        section.push("client_ca", text(ca), ca);
        section.push_default(
            "partial_chain",
            SpecValue::Bool(false),
            PARTIAL_CHAIN_DEFAULT,
        );
    } else if verify != ClientAuthMode::Off {
        return Err(root.directive.error(
            "ssl_verify_client needs \"ssl_client_certificate\" (the CA bundle client certificates must chain to)",
        ));
    }
    mapped(section, scope, warnings, NginxLevel::Ssl)?;
    for d in directives_of(NginxLevel::ProxySsl) {
        if let Some(d) = scope.get(d.name) {
            warnings.push(format!(
                "{}: \"{}\" has no effect: proxy_pass is http://",
                d.place(),
                d.name
            ));
        }
    }
    section.push_default(
        "client_cert_format",
        SpecValue::List(Vec::new()),
        "nginx sends no identity header of its own; proxy_set_header rules do",
    );
    inbound_identity_warnings(scope, warnings);
    Ok(())
}

/// A server-mode rule that copies a client's identity header (`proxy_set_header X-SSL-CERT
/// $http_x_ssl_cert`, the seed's pass-through) works under nginx, which passes inbound
/// headers on, but sends nothing under certgate, which strips them from every client unless
/// it is a trusted forwarder: say so, with the key that restores it.
fn inbound_identity_warnings(scope: &Scope<'_>, warnings: &mut Vec<String>) {
    use crate::config::template::{Segment, Variable};
    for rule in &scope.headers {
        let Ok(template) = Template::parse(&rule.args[1]) else {
            continue;
        };
        for segment in &template.segments {
            let Segment::Variable(Variable::Http(name)) = segment else {
                continue;
            };
            if !crate::proxy::headers::is_identity_name(name.as_str()) {
                continue;
            }
            let warning = format!(
                "{}: \"proxy_set_header {} {}\" copies the client's {name} header, which nginx passes on but certgate strips from every client in server mode (any client could forge it), so it is not sent; if a proxy you trust sets it (as the seed's proxy B does), name that proxy by its certificate with trusted_forwarders = [\"cn:PROXY-CN\"] (or uri:, pin-sha256:) in a TOML config (certgate convert-nginx prints one), and its identity headers are kept",
                rule.place(),
                rule.args[0],
                rule.args[1],
            );
            if !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
    }
}

fn client_mode(
    section: &mut Section,
    root: &Location<'_>,
    target: &Target<'_>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let scope = &root.scope;
    match (
        scope.get("proxy_ssl_certificate"),
        scope.get("proxy_ssl_certificate_key"),
    ) {
        (Some(cert), Some(key)) => {
            section.push("cert", text(cert), cert);
            section.push("key", key_text(key), key);
        }
        (None, None) => {}
        (Some(d), None) => {
            return Err(d.error("proxy_ssl_certificate needs proxy_ssl_certificate_key"))
        }
        (None, Some(d)) => {
            return Err(d.error("proxy_ssl_certificate_key needs proxy_ssl_certificate"))
        }
    }
    let verify = match scope.get("proxy_ssl_verify") {
        Some(d) => {
            let on = on_off(d)?;
            section.push("verify_upstream", SpecValue::Bool(on), d);
            on
        }
        None => {
            section.push_default(
                "verify_upstream",
                SpecValue::Bool(false),
                "nginx's default: proxy_ssl_verify off",
            );
            warnings.push(format!(
                "{}: no \"proxy_ssl_verify on\": as nginx, the upstream's certificate is not verified, so anyone who can intercept the connection to {} can pose as it; add proxy_ssl_verify on and proxy_ssl_trusted_certificate",
                root_pass(root).place(),
                target.url
            ));
            false
        }
    };
    match scope.get("proxy_ssl_trusted_certificate") {
        Some(d) => {
            section.push("ca", text(d), d);
            section.push_default("partial_chain", SpecValue::Bool(false), PARTIAL_CHAIN_DEFAULT);
            section.push_default(
                "verify_name_in_cn",
                SpecValue::Bool(true),
                "nginx's behaviour: OpenSSL's X509_check_host matches proxy_ssl_name against the subject CN of a certificate without a DNS subjectAltName",
            );
        }
        None if verify => {
            return Err(root.directive.error(
                "proxy_ssl_verify on needs \"proxy_ssl_trusted_certificate\" (the CA bundle the upstream's certificate must chain to)",
            ))
        }
        None => {}
    }
    mapped(section, scope, warnings, NginxLevel::ProxySsl)?;
    if scope.get("proxy_ssl_name").is_none() && target.named_upstream {
        section.push_default(
            "server_name",
            SpecValue::Text(target.proxy_host.clone()),
            "nginx's default proxy_ssl_name: $proxy_host, the upstream block's name",
        );
    }
    match scope.get("proxy_ssl_server_name") {
        Some(d) => section.push("send_sni", SpecValue::Bool(on_off(d)?), d),
        None => {
            section.push_default(
                "send_sni",
                SpecValue::Bool(false),
                "nginx's default: proxy_ssl_server_name off",
            );
            warnings.push(format!(
                "{}: no \"proxy_ssl_server_name on\": as nginx, no server name (SNI) is sent, so an upstream that hosts several names may present the wrong certificate; add proxy_ssl_server_name on",
                root_pass(root).place()
            ));
        }
    }
    for d in directives_of(NginxLevel::Ssl) {
        if let Some(d) = scope.get(d.name) {
            warnings.push(format!(
                "{}: \"{}\" has no effect: this server listens without ssl",
                d.place(),
                d.name
            ));
        }
    }
    section.push_default(
        "http2",
        SpecValue::Bool(false),
        "nginx speaks HTTP/1 to upstreams",
    );
    Ok(())
}
