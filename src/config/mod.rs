//! Raw input (TOML file or command-line flags) -> one validated [`Config`].
//!
//! Both sources produce a [`ListenerSpec`]: a bag of keys, each remembering where it came
//! from, so every error names the file, line and key (or the flag). Validation is the same
//! code for `run`, `check` and the single-listener commands; it reads no file but the config.

pub mod ciphers;
mod file;
pub mod keys;
pub mod nginx;
pub mod template;

use crate::access::{parse_pin, AccessRules, DnsPattern, UriPattern};
use crate::tls::identity::formats::{IdentityFormat, XfccMode};
use crate::tls::verify::ClientAuthMode;
use hyper::header::HeaderName;
use rustls::pki_types::ServerName;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use template::Template;

/// The syntax of a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Nginx,
}

/// Reads and validates a config file, in `format` or (None) the one its content shows.
pub fn load_file(path: &Path, format: Option<Format>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::general(format!("cannot read config file {}: {e}", path.display()))
    })?;
    let format = format.unwrap_or(if nginx::looks_like_nginx(&text) {
        Format::Nginx
    } else {
        Format::Toml
    });
    match format {
        Format::Toml => file::parse(path, &text),
        Format::Nginx => nginx::load(path, &text),
    }
}

/// Where a configuration value came from.
#[derive(Clone, PartialEq, Eq)]
pub enum Origin {
    Flag(String),
    File {
        path: PathBuf,
        line: usize,
        key: String,
    },
    /// An nginx directive.
    Directive {
        path: PathBuf,
        line: usize,
        name: String,
    },
    Default,
}

/// Debug output leaves out line numbers, so that two configs with the same settings print
/// the same even when lines moved (see [`ListenerConfig::same_settings`]).
impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "Flag({flag})"),
            Origin::File { path, key, .. } => write!(f, "File({}, {key})", path.display()),
            Origin::Directive { path, name, .. } => {
                write!(f, "Directive({}, {name})", path.display())
            }
            Origin::Default => write!(f, "Default"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::File { path, line, key } => {
                write!(f, "{}:{line}: key '{key}'", path.display())
            }
            Origin::Directive { path, line, name } => {
                write!(f, "{}:{line}: {name}", path.display())
            }
            Origin::Default => write!(f, "default"),
        }
    }
}

/// A value with its origin, kept on anything that may still fail after validation
/// (a file that will not load, an address that will not bind).
#[derive(Clone)]
pub struct Located<T> {
    pub value: T,
    pub origin: Origin,
}

/// Debug output (which `ListenerConfig::same_settings` compares) never shows a token PIN
/// written into a key URI; it shows a keyed digest of it instead, so a changed PIN still
/// counts as a change.
impl<T: fmt::Debug> fmt::Debug for Located<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = crate::tls::pkcs11::digest_pins(&format!("{:?}", self.value));
        write!(f, "Located {{ value: {value}, origin: {:?} }}", self.origin)
    }
}

/// A configuration mistake, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: Option<Origin>,
    pub message: String,
}

impl ConfigError {
    pub fn at(origin: &Origin, message: impl Into<String>) -> Self {
        ConfigError {
            origin: Some(origin.clone()),
            message: message.into(),
        }
    }

    pub fn general(message: impl Into<String>) -> Self {
        ConfigError {
            origin: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "{origin}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One raw setting.
#[derive(Clone, Debug)]
pub enum SpecValue {
    Text(String),
    Integer(i64),
    Bool(bool),
    /// Ordered `set_header NAME VALUE` rules.
    Headers(Vec<(String, String)>),
    /// A repeatable setting (`--allow-cn a --allow-cn b`, `allow_cn = ["a", "b"]`).
    List(Vec<String>),
    /// `[[listener.route]]` tables.
    Routes(Vec<ListenerSpec>),
}

/// The raw settings of one listener (or of one route in it), before validation. Keys are the
/// config file's names.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    values: BTreeMap<&'static str, Located<SpecValue>>,
    /// Where the listener itself was declared, for errors about missing keys.
    pub origin: Option<Origin>,
    keys: &'static [keys::Key],
}

impl Default for ListenerSpec {
    fn default() -> Self {
        ListenerSpec {
            values: BTreeMap::new(),
            origin: None,
            keys: keys::KEYS,
        }
    }
}

/// The allow-list keys, shared by listeners and routes.
const ALLOW_KEYS: [&str; 6] = [
    "allow_cn",
    "allow_o",
    "allow_ou",
    "allow_dns",
    "allow_uri",
    "allow_pin_sha256",
];

/// Client mode's mirror image: rules the upstream's certificate must meet beyond its name.
const VERIFY_KEYS: [&str; 6] = [
    "verify_cn",
    "verify_o",
    "verify_ou",
    "verify_dns",
    "verify_uri",
    "verify_pin_sha256",
];

impl ListenerSpec {
    /// An empty route spec (`[[listener.route]]`).
    pub fn route(origin: Origin) -> ListenerSpec {
        ListenerSpec {
            values: BTreeMap::new(),
            origin: Some(origin),
            keys: keys::ROUTE_KEYS,
        }
    }

    /// Records a setting. `key` must be one of the known keys.
    pub fn set(&mut self, key: &str, origin: Origin, value: SpecValue) -> Result<(), ConfigError> {
        let keys = self.keys;
        let key = keys.iter().find(|k| k.key == key).ok_or_else(|| {
            let known: Vec<&str> = keys.iter().map(|k| k.key).collect();
            ConfigError::at(
                &origin,
                format!("unknown key '{key}'; known keys: {}", known.join(", ")),
            )
        })?;
        let key = key.key;
        if self.values.contains_key(key) {
            return Err(ConfigError::at(&origin, format!("'{key}' is set twice")));
        }
        self.values.insert(key, Located { value, origin });
        Ok(())
    }

    fn missing(&self, key: &str, what: &str) -> ConfigError {
        let message = format!("missing '{key}' ({what})");
        match &self.origin {
            Some(origin) => ConfigError::at(origin, message),
            None => ConfigError::general(message),
        }
    }

    /// Where the first of `keys` that is set came from.
    fn origin_of(&self, keys: &[&str]) -> Option<Origin> {
        keys.iter()
            .find_map(|k| self.values.get(k))
            .map(|v| v.origin.clone())
    }

    fn take(&mut self, key: &str) -> Option<Located<SpecValue>> {
        self.values.remove(key)
    }

    fn text(&mut self, key: &str) -> Result<Option<Located<String>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Located {
                value: SpecValue::Text(text),
                origin,
            }) => Ok(Some(Located {
                value: text,
                origin,
            })),
            Some(other) => Err(ConfigError::at(&other.origin, "expected a string")),
        }
    }

    /// A list setting; a single string counts as a list of one.
    fn list(&mut self, key: &str) -> Result<Option<Located<Vec<String>>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Located {
                value: SpecValue::List(items),
                origin,
            }) => Ok(Some(Located {
                value: items,
                origin,
            })),
            Some(Located {
                value: SpecValue::Text(text),
                origin,
            }) => Ok(Some(Located {
                value: vec![text],
                origin,
            })),
            Some(other) => Err(ConfigError::at(&other.origin, "expected a list of strings")),
        }
    }

    fn paths(&mut self, key: &str) -> Result<Vec<Located<PathBuf>>, ConfigError> {
        Ok(match self.list(key)? {
            None => Vec::new(),
            Some(list) => list
                .value
                .into_iter()
                .map(|p| Located {
                    value: PathBuf::from(p),
                    origin: list.origin.clone(),
                })
                .collect(),
        })
    }

    fn required_text(&mut self, key: &str, what: &str) -> Result<Located<String>, ConfigError> {
        self.text(key)?.ok_or_else(|| self.missing(key, what))
    }

    fn path(&mut self, key: &str) -> Result<Option<Located<PathBuf>>, ConfigError> {
        Ok(self.text(key)?.map(|text| Located {
            value: PathBuf::from(text.value),
            origin: text.origin,
        }))
    }

    fn flag(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.take(key) {
            None => Ok(default),
            Some(Located {
                value: SpecValue::Bool(b),
                ..
            }) => Ok(b),
            Some(other) => Err(ConfigError::at(&other.origin, "expected true or false")),
        }
    }

    fn integer(&mut self, key: &str) -> Result<Option<Located<i64>>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Located {
                value: SpecValue::Integer(n),
                origin,
            }) => Ok(Some(Located { value: n, origin })),
            Some(Located {
                value: SpecValue::Text(text),
                origin,
            }) => match text.parse() {
                Ok(n) => Ok(Some(Located { value: n, origin })),
                Err(_) => Err(ConfigError::at(
                    &origin,
                    format!("expected a number, found \"{text}\""),
                )),
            },
            Some(other) => Err(ConfigError::at(&other.origin, "expected a number")),
        }
    }

    /// Keys that make no sense for the chosen mode are an error rather than silently ignored.
    fn refuse(&mut self, key: &str, why: &str) -> Result<(), ConfigError> {
        match self.take(key) {
            Some(value) => Err(ConfigError::at(&value.origin, why.to_string())),
            None => Ok(()),
        }
    }
}

/// Which side of the seed topology a listener plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Server A: TLS with client certificates in, plain HTTP out.
    Server,
    /// Proxy B: plain HTTP in, TLS with a client certificate out.
    Client,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Server => "server",
            Mode::Client => "client",
        })
    }
}

/// Protocol versions and cipher suites for one TLS endpoint.
#[derive(Clone, Debug)]
pub struct TlsParams {
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    pub cipher_suites: Vec<rustls::SupportedCipherSuite>,
}

/// Where server mode forwards plain HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpUpstream {
    /// `host:port`, as it goes into the Host-less authority of the upstream request.
    Tcp {
        authority: String,
    },
    Unix(PathBuf),
}

impl fmt::Display for HttpUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpUpstream::Tcp { authority } => write!(f, "http://{authority}"),
            HttpUpstream::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A path prefix with its own allow-list and, optionally, its own upstream (nginx `location`).
#[derive(Clone, Debug)]
pub struct Route {
    pub path: String,
    /// Where the route's path was given, for errors about the route.
    pub origin: Origin,
    pub upstream: Option<HttpUpstream>,
    pub rules: AccessRules,
    /// Answer with this instead of forwarding (nginx's `return`).
    pub respond: Option<FixedResponse>,
}

/// How a route's path selects request paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteMatch {
    /// `/a/b` takes `/a/b`, `/a/b/` and `/a/b/...`, never `/a/bc` (the default): a rule for
    /// `/admin/health` must not also hand out `/admin/healthsecret`.
    Segment,
    /// nginx's `location`: a string prefix, so `/a/b` also takes `/a/bc`.
    Prefix,
}

/// What a listener does with request paths a backend may read otherwise than its routes did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathNormalization {
    /// Refuse them with 400 and forward the normalised path that was judged (the default
    /// when a route has allow rules).
    Strict,
    /// Forward the path as sent (nginx's behaviour with a `proxy_pass` without a URI).
    Off,
}

/// A fixed answer: a redirect (3xx, `text` is the Location) or a status with a text body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedResponse {
    pub status: u16,
    pub text: String,
}

/// Certificate revocation lists and what to do when one is past its nextUpdate.
#[derive(Clone, Debug, Default)]
pub struct Revocation {
    pub crls: Vec<Located<PathBuf>>,
    /// Accept certificates checked against an expired CRL (default: refuse them).
    pub allow_expired_crl: bool,
}

#[derive(Clone, Debug)]
pub struct ServerListener {
    pub cert: Located<PathBuf>,
    pub key: Located<PathBuf>,
    /// Absent only when client verification is off.
    pub client_ca: Option<Located<PathBuf>>,
    pub verify_client: ClientAuthMode,
    pub upstream: HttpUpstream,
    pub identity_formats: Vec<IdentityFormat>,
    pub xfcc_mode: XfccMode,
    /// Peers whose inbound `x-forwarded-client-cert` is kept in `append` mode.
    pub xfcc_trusted: AccessRules,
    /// Peers (proxies in front of this one) whose inbound identity headers are kept; empty:
    /// nobody's.
    pub trusted_forwarders: AccessRules,
    /// Listener-level allow-list, enforced in the handshake.
    pub access: AccessRules,
    /// Checked per request, longest path prefix first.
    pub routes: Vec<Route>,
    /// Whether a route's path ends at a segment boundary or is a string prefix (nginx).
    pub route_match: RouteMatch,
    /// Whether request paths a backend may read differently than the routes did are refused.
    pub path_normalization: PathNormalization,
    pub revocation: Revocation,
    /// A DER OCSP response stapled to our certificate.
    pub ocsp_response: Option<Located<PathBuf>>,
    /// Issue TLS session tickets (nginx's `ssl_session_tickets`).
    pub session_tickets: bool,
}

#[derive(Clone, Debug)]
pub struct ClientListener {
    /// The client certificate (leaf first, then intermediates) and its key, if any.
    pub identity: Option<(Located<PathBuf>, Located<PathBuf>)>,
    /// The CA bundle the upstream must chain to; None only with `verify_upstream = false`.
    pub ca: Option<Located<PathBuf>>,
    /// `host:port` of the upstream, used to connect.
    pub upstream_authority: String,
    /// The `Host` header sent by default: the host, with the port unless it is 443.
    pub upstream_host_header: String,
    /// The name used for SNI and checked against the upstream certificate.
    pub server_name: ServerName<'static>,
    pub session_reuse: bool,
    pub http2: bool,
    /// Send the server name in the handshake (SNI); nginx's `proxy_ssl_server_name`.
    pub send_sni: bool,
    pub revocation: Revocation,
    /// What the upstream's certificate must also match (DNS, URI/SPIFFE, CN, pins).
    pub upstream_rules: AccessRules,
    /// Match `server_name` against the subject CN of an upstream certificate without a DNS
    /// subjectAltName (OpenSSL's and so nginx's fallback).
    pub verify_name_in_cn: bool,
}

#[derive(Clone, Debug)]
pub enum ModeConfig {
    Server(Box<ServerListener>),
    Client(Box<ClientListener>),
}

/// One `set_header NAME VALUE` rule.
#[derive(Clone, Debug)]
pub struct HeaderRule {
    pub name: HeaderName,
    pub value: Template,
}

/// A validated listener.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: Located<SocketAddr>,
    pub mode: ModeConfig,
    pub tls: TlsParams,
    pub verify_depth: u32,
    /// OpenSSL's X509_V_FLAG_PARTIAL_CHAIN: a CA of the bundle that is not a self-signed root
    /// may end the peer's chain. nginx configs turn it off (nginx's behaviour).
    pub partial_chain: bool,
    pub strict_key_permissions: bool,
    pub header_rules: Vec<HeaderRule>,
    /// Add the mode's default headers (X-Forwarded-For, X-Real-IP, ...); nginx adds none.
    pub default_headers: bool,
    /// How long connecting to the upstream (TLS handshake included) may take.
    pub connect_timeout: std::time::Duration,
    /// How long the upstream may take to send its response headers.
    pub response_timeout: std::time::Duration,
    /// Largest request body forwarded; larger ones get 413 (nginx's `client_max_body_size`).
    pub max_body_size: Option<u64>,
    /// Most connections open at once to each upstream of the listener (each route's too);
    /// None: no limit. nginx's `max_conns`.
    pub upstream_max_connections: Option<usize>,
    /// How long a request waits for a connection when `upstream_max_connections` are all in
    /// use, before it is answered 503.
    pub upstream_queue_timeout: std::time::Duration,
    /// How long downstream connections may wait and how much they may send before a request.
    pub client_limits: ClientLimits,
}

/// What a downstream connection may cost before it is closed: every wait has a deadline and
/// the request head a size, so silent or slow clients cannot hold descriptors or memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// From the end of the TLS handshake (or the accept) until the first request's headers
    /// are in (nginx's `client_header_timeout`).
    pub header_timeout: std::time::Duration,
    /// An HTTP/1.1 connection with no request in flight is closed after this long; `None`
    /// closes it after each response (nginx's `keepalive_timeout`, 0 there).
    pub keepalive_timeout: Option<std::time::Duration>,
    /// An HTTP/2 connection with no open stream gets GOAWAY after this long (nginx's
    /// `http2_idle_timeout`).
    pub http2_idle_timeout: std::time::Duration,
    /// Send HTTP/2 PINGs this often and close the connection if one goes unanswered.
    pub http2_ping_interval: Option<std::time::Duration>,
    /// The largest request head (request line and headers, or an HTTP/2 header list), in
    /// bytes; larger ones get 431 (HTTP/1.1) or a refused stream (HTTP/2).
    pub max_header_size: usize,
    /// Forward inbound headers whose names contain `_` (nginx's `underscores_in_headers`).
    /// Off by default, as in nginx: CGI and WSGI backends read `X_Client_Cert` and
    /// `X-Client-Cert` as one variable, so such a name is a way to smuggle a header past
    /// any check that compares names.
    pub underscores_in_headers: bool,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: std::time::Duration::from_secs(60),
            keepalive_timeout: Some(DEFAULT_KEEPALIVE_TIMEOUT),
            http2_idle_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            http2_ping_interval: None,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            underscores_in_headers: false,
        }
    }
}

/// nginx's `keepalive_timeout`.
const DEFAULT_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(75);
/// nginx's default `large_client_header_buffers 4 8k`: at most 32 KiB of request head.
const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;
/// hyper cannot read a request head in less than this.
const MIN_MAX_HEADER_SIZE: usize = 8 * 1024;

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

impl ListenerConfig {
    pub fn mode(&self) -> Mode {
        match self.mode {
            ModeConfig::Server(_) => Mode::Server,
            ModeConfig::Client(_) => Mode::Client,
        }
    }

    /// Whether two listener configs ask for the same thing (a config reload keeps such a
    /// listener and its connections). Every field takes part, through its Debug form.
    pub fn same_settings(&self, other: &ListenerConfig) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }

    /// Every file the listener's TLS material comes from (watched for rotation).
    pub fn files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = Vec::new();
        match &self.mode {
            ModeConfig::Server(server) => {
                files.push(&server.cert.value);
                files.push(&server.key.value);
                files.extend(server.client_ca.iter().map(|f| f.value.as_path()));
                files.extend(server.revocation.crls.iter().map(|f| f.value.as_path()));
                files.extend(server.ocsp_response.iter().map(|f| f.value.as_path()));
            }
            ModeConfig::Client(client) => {
                if let Some((cert, key)) = &client.identity {
                    files.push(&cert.value);
                    files.push(&key.value);
                }
                files.extend(client.ca.iter().map(|ca| ca.value.as_path()));
                files.extend(client.revocation.crls.iter().map(|f| f.value.as_path()));
            }
        }
        // A key on a token is no file to watch; its certificate file still is.
        files.retain(|f| !crate::tls::pkcs11::is_uri(&f.to_string_lossy()));
        files
    }

    pub fn upstream_display(&self) -> String {
        match &self.mode {
            ModeConfig::Server(server) => server.upstream.to_string(),
            ModeConfig::Client(client) => format!("https://{}", client.upstream_authority),
        }
    }
}

/// A validated configuration: every listener, plus warnings to log at start-up.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub warnings: Vec<String>,
    /// An access log file the config names (nginx's `access_log`); the flags take precedence.
    pub access_log: Option<Located<PathBuf>>,
}

/// nginx's default `ssl_verify_depth`.
pub const DEFAULT_VERIFY_DEPTH: u32 = 1;

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

fn parse_mode(text: &Located<String>) -> Result<Mode, ConfigError> {
    match text.value.as_str() {
        "server" => Ok(Mode::Server),
        "client" => Ok(Mode::Client),
        other => Err(ConfigError::at(
            &text.origin,
            format!("unknown mode \"{other}\": use \"server\" or \"client\""),
        )),
    }
}

fn parse_listen(text: Located<String>) -> Result<Located<SocketAddr>, ConfigError> {
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

fn parse_version(
    text: &Located<String>,
) -> Result<&'static rustls::SupportedProtocolVersion, ConfigError> {
    match text.value.as_str() {
        "TLSv1.2" | "1.2" => Ok(&rustls::version::TLS12),
        "TLSv1.3" | "1.3" => Ok(&rustls::version::TLS13),
        "TLSv1" | "TLSv1.0" | "TLSv1.1" | "SSLv3" | "SSLv2" => Err(ConfigError::at(
            &text.origin,
            format!(
                "{} is insecure and not supported: use TLSv1.2 or TLSv1.3",
                text.value
            ),
        )),
        other => Err(ConfigError::at(
            &text.origin,
            format!("unknown TLS version \"{other}\": use TLSv1.2 or TLSv1.3"),
        )),
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

/// Splits `host[:port]` (IPv6 in brackets) into host and port.
fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((authority.to_string(), default_port)),
    }
    .filter(|(host, _)| !host.is_empty())
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The Host header for an https upstream: the port only when it is not 443 (as browsers do).
fn host_header(host: &str, port: u16) -> String {
    match (port, host.contains(':')) {
        (443, true) => format!("[{host}]"),
        (443, false) => host.to_string(),
        _ => join_host_port(host, port),
    }
}

fn parse_http_upstream(text: &Located<String>) -> Result<HttpUpstream, ConfigError> {
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
    let (host, port) = split_host_port(authority, 80).ok_or_else(|| {
        ConfigError::at(
            &text.origin,
            format!("bad upstream \"{value}\": use http://HOST:PORT, HOST:PORT or unix:/PATH"),
        )
    })?;
    Ok(HttpUpstream::Tcp {
        authority: join_host_port(&host, port),
    })
}

/// Reads one family of rule keys (`allow_*` or `verify_*`, in [`ALLOW_KEYS`] order).
fn access_rules(spec: &mut ListenerSpec, keys: [&str; 6]) -> Result<AccessRules, ConfigError> {
    let mut rules = AccessRules::default();
    for (kind, key) in keys.into_iter().enumerate() {
        let Some(list) = spec.list(key)? else {
            continue;
        };
        for item in list.value {
            let bad = |e: String| ConfigError::at(&list.origin, e);
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
fn identity_matchers(list: Located<Vec<String>>) -> Result<AccessRules, ConfigError> {
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
            "dns" => rules.dns.push(DnsPattern::parse(value).map_err(bad)?),
            "uri" => rules.uris.push(UriPattern::parse(value).map_err(bad)?),
            "pin-sha256" => rules.pins.push(parse_pin(value).map_err(bad)?),
            other => {
                return Err(bad(format!(
                    "unknown identity kind \"{other}\" in \"{item}\": use cn, o, ou, dns, uri or pin-sha256"
                )))
            }
        }
    }
    Ok(rules)
}

fn revocation(spec: &mut ListenerSpec) -> Result<Revocation, ConfigError> {
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
            let mode = match text.value.as_str() {
                "sanitize" => XfccMode::Sanitize,
                "set" => XfccMode::Set,
                "append" => XfccMode::Append,
                other => {
                    return Err(ConfigError::at(
                        &text.origin,
                        format!("unknown xfcc_mode \"{other}\": use sanitize, set or append"),
                    ))
                }
            };
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

fn validate_listener(
    mut spec: ListenerSpec,
    index: usize,
    warnings: &mut Vec<String>,
) -> Result<ListenerConfig, ConfigError> {
    let mode_text = spec.required_text("mode", "\"server\" or \"client\"")?;
    let mode = parse_mode(&mode_text)?;
    let listen = parse_listen(spec.required_text("listen", "the address to listen on")?)?;
    let name = spec
        .text("name")?
        .map(|n| n.value)
        .unwrap_or_else(|| format!("{mode}-{}", index + 1));
    let verify_depth = match spec.integer("verify_depth")? {
        None => DEFAULT_VERIFY_DEPTH,
        Some(depth) => u32::try_from(depth.value)
            .ok()
            .filter(|d| *d <= 100)
            .ok_or_else(|| {
                ConfigError::at(&depth.origin, "verify_depth must be between 0 and 100")
            })?,
    };
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
    let upstream_max_connections = match spec.integer("upstream_max_connections")? {
        None => Some(DEFAULT_UPSTREAM_MAX_CONNECTIONS),
        Some(max) => {
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
            (max > 0).then_some(max)
        }
    };
    let upstream_queue_timeout = duration(
        &mut spec,
        "upstream_queue_timeout",
        DEFAULT_UPSTREAM_QUEUE_TIMEOUT,
    )?;
    let upstream = spec.required_text("upstream", "where to forward requests")?;
    refuse_other_mode(&mut spec, mode)?;

    let mode = match mode {
        Mode::Server => {
            let session_tickets = spec.flag("session_tickets", true)?;
            let verify_client = match spec.text("verify_client")? {
                None => ClientAuthMode::Required,
                Some(text) => match text.value.as_str() {
                    "required" | "on" => ClientAuthMode::Required,
                    "optional" => ClientAuthMode::Optional,
                    "optional_no_ca" => ClientAuthMode::OptionalNoCa,
                    "off" => ClientAuthMode::Off,
                    other => {
                        return Err(ConfigError::at(
                            &text.origin,
                            format!("unknown verify_client \"{other}\": use required, optional, optional_no_ca or off"),
                        ))
                    }
                },
            };
            let client_ca = spec.path("client_ca")?;
            if client_ca.is_none() && verify_client != ClientAuthMode::Off {
                return Err(spec.missing(
                    "client_ca",
                    "the CA bundle that client certificates must chain to; or set verify_client = \"off\"",
                ));
            }
            let (trusted_forwarders, forwarders_origin) =
                match spec.list("trusted_forwarders")? {
                    None => (AccessRules::default(), None),
                    Some(list) if verify_client == ClientAuthMode::Off => {
                        return Err(ConfigError::at(
                            &list.origin,
                            "contradictory: trusted_forwarders names peers by their certificate, but verify_client = \"off\" asks for none",
                        ))
                    }
                    Some(list) => {
                        let origin = list.origin.clone();
                        let rules = identity_matchers(list)?;
                        let origin = (!rules.is_empty()).then_some(origin);
                        (rules, origin)
                    }
                };
            let (identity_formats, xfcc_mode, xfcc_trusted) =
                identity_formats(&mut spec, forwarders_origin.as_ref())?;
            let allow_origin = spec.origin_of(&ALLOW_KEYS);
            let access = access_rules(&mut spec, ALLOW_KEYS)?;
            // Listener rules are enforced in the handshake, which only `required` guarantees:
            // with `optional` a client could skip its certificate and reach HTTP anyway.
            if let Some(origin) = allow_origin.filter(|_| verify_client != ClientAuthMode::Required)
            {
                return Err(ConfigError::at(
                    &origin,
                    format!("contradictory: listener allow rules need verify_client = \"required\" (it is \"{verify_client}\"); put rules on routes to let some paths through without a certificate"),
                ));
            }
            let routes = routes(&mut spec)?;
            let (route_match, path_normalization) = path_settings(&mut spec, &routes, warnings)?;
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
            let revocation = revocation(&mut spec)?;
            let ocsp_response = spec.path("ocsp_response")?;
            ModeConfig::Server(Box::new(ServerListener {
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
                key: spec
                    .path("key")?
                    .ok_or_else(|| spec.missing("key", "the server private key"))?,
                client_ca,
                verify_client,
                upstream: parse_http_upstream(&upstream)?,
            }))
        }
        Mode::Client => {
            let revocation = revocation(&mut spec)?;
            let upstream_rules = access_rules(&mut spec, VERIFY_KEYS)?;
            let value = upstream.value.trim();
            if value.starts_with("http://") {
                return Err(ConfigError::at(
                    &upstream.origin,
                    "client mode connects over TLS: use https://HOST[:PORT] or HOST:PORT",
                ));
            }
            let authority = value.strip_prefix("https://").unwrap_or(value);
            let authority = authority.strip_suffix('/').unwrap_or(authority);
            let (host, port) = split_host_port(authority, 443)
                .filter(|_| !authority.contains('/'))
                .ok_or_else(|| {
                    ConfigError::at(
                        &upstream.origin,
                        format!("bad upstream \"{value}\": use https://HOST[:PORT] (no path)"),
                    )
                })?;
            let name_text = spec.text("server_name")?;
            let (name, name_origin) = match &name_text {
                Some(n) => (n.value.clone(), n.origin.clone()),
                None => (host.clone(), upstream.origin.clone()),
            };
            let server_name = ServerName::try_from(name.clone()).map_err(|_| {
                ConfigError::at(
                    &name_origin,
                    format!("\"{name}\" is not a valid DNS name or IP address"),
                )
            })?;
            let cert = spec.path("cert")?;
            let key = spec.path("key")?;
            let identity = match (cert, key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                (Some(cert), None) => {
                    return Err(ConfigError::at(
                        &cert.origin,
                        "a client certificate needs its 'key'",
                    ))
                }
                (None, Some(key)) => {
                    return Err(ConfigError::at(
                        &key.origin,
                        "a client key needs its 'cert'",
                    ))
                }
            };
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
            if let Some(origin) =
                verify_origin.filter(|o| !verify_upstream && *o != Origin::Default)
            {
                warnings.push(format!(
                    "{origin}: the upstream's certificate is not verified: anyone who can intercept the connection to {} can pose as it and read the traffic; set a CA and verify it",
                    value
                ));
            }
            let send_sni = spec.flag("send_sni", true)?;
            ModeConfig::Client(Box::new(ClientListener {
                identity,
                ca: ca.filter(|_| verify_upstream),
                upstream_host_header: host_header(&host, port),
                upstream_authority: join_host_port(&host, port),
                server_name: server_name.to_owned(),
                session_reuse: spec.flag("session_reuse", true)?,
                http2: spec.flag("http2", true)?,
                send_sni,
                revocation,
                upstream_rules,
                verify_name_in_cn: spec.flag("verify_name_in_cn", false)?,
            }))
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

/// A size key: bytes as an integer, or nginx's size syntax as text (`10m`).
fn size(spec: &mut ListenerSpec, key: &str) -> Result<Option<Located<u64>>, ConfigError> {
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
fn duration(
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
fn duration_or_off(
    spec: &mut ListenerSpec,
    key: &str,
    default: Option<std::time::Duration>,
) -> Result<Option<std::time::Duration>, ConfigError> {
    Ok(match duration_value(spec, key)? {
        None => default,
        Some(located) => Some(located.value).filter(|d| !d.is_zero()),
    })
}

fn duration_value(
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

/// How long the upstream may take to send response headers unless told otherwise.
const DEFAULT_RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long certgate waits for an upstream connection unless told otherwise.
const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections to one upstream unless told otherwise. Not unlimited, as nginx's `max_conns`
/// is by default: each client request that reaches an upstream without a free pooled
/// connection opens a new one, and HTTP/2 lets one client start (and reset) thousands of
/// requests a second, so without a limit a single client decides how many sockets and
/// workers the backend must hold. 1024 is far above what one backend usually serves at
/// once (and nginx's usual `worker_connections`), so legitimate traffic never meets it,
/// yet it bounds the damage to a number a backend and certgate's file limit survive.
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 1024;

/// The largest `upstream_max_connections` accepted; beyond it a limit means nothing.
const MAX_UPSTREAM_MAX_CONNECTIONS: usize = 1_000_000;

/// How long a request waits for a free upstream connection unless told otherwise: long
/// enough to ride out a burst, short enough that a stuck backend sheds load with 503s well
/// before the response timeout turns waiting requests into 504s.
const DEFAULT_UPSTREAM_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// nginx's time syntax, the forms config files use: `500ms`, `5s`, `1m`, `1h`, or `30`
/// (seconds).
fn parse_duration(text: &str) -> Option<std::time::Duration> {
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

/// A path from a config file is relative to the file's directory, as nginx's are to its prefix.
pub fn resolve_relative(base: &Path, path: &str) -> PathBuf {
    // A token key (RFC 7512 URI) is not a file.
    if crate::tls::pkcs11::is_uri(path) {
        return PathBuf::from(path);
    }
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_in_a_key_uri_never_shows_in_debug_output() {
        let config = file::parse(
            Path::new("/etc/certgate.toml"),
            "[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:1\"\ncert = \"c.pem\"\nkey = \"pkcs11:object=k?pin-value=s3cret\"\nverify_client = \"off\"\n",
        )
        .unwrap();
        let debug = format!("{:?}", config.listeners[0]);
        assert!(debug.contains("pkcs11:object=k?pin-value=#"), "{debug}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("a.example:8443", 443),
            Some(("a.example".into(), 8443))
        );
        assert_eq!(
            split_host_port("a.example", 443),
            Some(("a.example".into(), 443))
        );
        assert_eq!(split_host_port("[::1]:9", 443), Some(("::1".into(), 9)));
        assert_eq!(split_host_port("a:b", 443), None);
        assert_eq!(split_host_port(":80", 443), None);
    }
}
