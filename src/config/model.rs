//! The validated configuration: what every front-end (TOML, flags, nginx syntax) ends up as,
//! and the vocabulary its settings are written in (modes, identity formats, verify modes).
//! The TLS and proxy layers read these types; nothing here reaches into them.

use super::key_uri::{is_uri, redacted, with_default_module, KeyUri, KeyUriError};
use super::origin::{Located, Origin};
use super::template::Template;
use crate::access::AccessRules;
use hyper::header::HeaderName;
use rustls::pki_types::ServerName;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

/// Where a private key is: a file, or a token (PKCS#11), so that no URI travels as a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Token(KeyUri),
}

impl KeySource {
    /// A key setting's text: a `pkcs11:` URI names a token key, anything else a file.
    pub fn parse(text: &str) -> Result<KeySource, KeyUriError> {
        if is_uri(text) {
            KeyUri::parse(text).map(KeySource::Token)
        } else {
            Ok(KeySource::File(PathBuf::from(text)))
        }
    }

    /// A key given as text on the command line (`cert check`, `probe`): as [`parse`], with
    /// `--pkcs11-module` written into a token URI that names no module, so that the messages
    /// quoting the URI show which module the key is opened with.
    ///
    /// [`parse`]: KeySource::parse
    pub fn parse_with_default_module(
        text: &str,
        default_module: Option<&Path>,
    ) -> Result<KeySource, KeyUriError> {
        match default_module {
            Some(module) => KeySource::parse(&with_default_module(text, module)),
            None => KeySource::parse(text),
        }
    }

    /// The key's file, unless it is on a token.
    pub fn file(&self) -> Option<&Path> {
        match self {
            KeySource::File(path) => Some(path),
            KeySource::Token(_) => None,
        }
    }
}

/// The file, or the URI without its PIN.
impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "{}", path.display()),
            KeySource::Token(uri) => f.write_str(&redacted(&uri.text)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServerListener {
    pub cert: Located<PathBuf>,
    pub key: Located<KeySource>,
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
    pub identity: Option<(Located<PathBuf>, Located<KeySource>)>,
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
pub(crate) const DEFAULT_KEEPALIVE_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(75);
/// nginx's default `large_client_header_buffers 4 8k`: at most 32 KiB of request head.
pub(crate) const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;
/// hyper cannot read a request head in less than this.
pub(crate) const MIN_MAX_HEADER_SIZE: usize = 8 * 1024;

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
                files.extend(server.key.value.file());
                files.extend(server.client_ca.iter().map(|f| f.value.as_path()));
                files.extend(server.revocation.crls.iter().map(|f| f.value.as_path()));
                files.extend(server.ocsp_response.iter().map(|f| f.value.as_path()));
            }
            ModeConfig::Client(client) => {
                if let Some((cert, key)) = &client.identity {
                    files.push(&cert.value);
                    files.extend(key.value.file());
                }
                files.extend(client.ca.iter().map(|ca| ca.value.as_path()));
                files.extend(client.revocation.crls.iter().map(|f| f.value.as_path()));
            }
        }
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
    /// Serving threads the config asks for (nginx's `worker_processes`); `--workers`
    /// takes precedence.
    pub workers: Option<Located<usize>>,
}

impl Config {
    /// Gives each token key whose URI names no `module-path` the module `--pkcs11-module`
    /// names, so the config says which module every key is opened with.
    pub fn with_default_pkcs11_module(mut self, module: Option<&Path>) -> Config {
        let Some(module) = module else {
            return self;
        };
        for listener in &mut self.listeners {
            let key = match &mut listener.mode {
                ModeConfig::Server(server) => Some(&mut server.key.value),
                ModeConfig::Client(client) => {
                    client.identity.as_mut().map(|(_, key)| &mut key.value)
                }
            };
            if let Some(KeySource::Token(uri)) = key {
                uri.module_path.get_or_insert_with(|| module.to_path_buf());
            }
        }
        self
    }
}

/// nginx's default `ssl_verify_depth`.
pub const DEFAULT_VERIFY_DEPTH: u32 = 1;

/// How long the upstream may take to send response headers unless told otherwise.
pub(crate) const DEFAULT_RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long certgate waits for an upstream connection unless told otherwise.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections to one upstream unless told otherwise. Not unlimited, as nginx's `max_conns`
/// is by default: each client request that reaches an upstream without a free pooled
/// connection opens a new one, and HTTP/2 lets one client start (and reset) thousands of
/// requests a second, so without a limit a single client decides how many sockets and
/// workers the backend must hold. 1024 is far above what one backend usually serves at
/// once (and nginx's usual `worker_connections`), so legitimate traffic never meets it,
/// yet it bounds the damage to a number a backend and certgate's file limit survive.
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 1024;

/// The most serving threads `--workers` (or nginx's `worker_processes`) may ask for.
pub const MAX_WORKERS: usize = 1024;

/// The largest `upstream_max_connections` accepted; beyond it a limit means nothing.
pub(crate) const MAX_UPSTREAM_MAX_CONNECTIONS: usize = 1_000_000;

/// How long a request waits for a free upstream connection unless told otherwise: long
/// enough to ride out a burst, short enough that a stuck backend sheds load with 503s well
/// before the response timeout turns waiting requests into 504s.
pub(crate) const DEFAULT_UPSTREAM_QUEUE_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(10);

/// One way of telling the backend who the client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityFormat {
    /// `X-Client-Cert`: nginx's `$ssl_client_escaped_cert`.
    EscapedPem,
    /// `Client-Cert` and `Client-Cert-Chain` (RFC 9440).
    Rfc9440,
    /// `x-forwarded-client-cert` (Envoy).
    Xfcc,
    /// `X-Forwarded-Tls-Client-Cert` and `X-Forwarded-Tls-Client-Cert-Info` (Traefik).
    Traefik,
}

impl IdentityFormat {
    /// Every format. Configuration finds a format only through this list ([`Self::parse`])
    /// and `proxy::headers` strips the header names (`tls::identity::formats`) of all of
    /// them, so a format left out here can be neither configured nor forged.
    pub const ALL: [IdentityFormat; 4] = [
        IdentityFormat::EscapedPem,
        IdentityFormat::Rfc9440,
        IdentityFormat::Xfcc,
        IdentityFormat::Traefik,
    ];

    /// The names of [`Self::ALL`], for error messages.
    pub const NAMES: &'static str = "escaped-pem, rfc9440, xfcc, traefik";

    /// The name in configuration (`client_cert_format`).
    pub fn name(self) -> &'static str {
        match self {
            IdentityFormat::EscapedPem => "escaped-pem",
            IdentityFormat::Rfc9440 => "rfc9440",
            IdentityFormat::Xfcc => "xfcc",
            IdentityFormat::Traefik => "traefik",
        }
    }

    pub fn parse(name: &str) -> Option<IdentityFormat> {
        IdentityFormat::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// What happens to an `x-forwarded-client-cert` header (Envoy's modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XfccMode {
    /// Drop any inbound header and send none (Envoy SANITIZE).
    Sanitize,
    /// Drop any inbound header and send this hop's element (Envoy SANITIZE_SET).
    Set,
    /// Keep the inbound header when the peer is trusted to send one and append this hop's
    /// element; otherwise as `Set` (Envoy APPEND_FORWARD, with a trust check).
    Append,
}

impl XfccMode {
    pub fn parse(name: &str) -> Option<XfccMode> {
        match name {
            "sanitize" => Some(XfccMode::Sanitize),
            "set" => Some(XfccMode::Set),
            "append" => Some(XfccMode::Append),
            _ => None,
        }
    }
}

/// How server mode treats client certificates (nginx's `ssl_verify_client`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// A certificate that verifies is mandatory.
    Required,
    /// No certificate is allowed; a certificate that is sent must verify.
    Optional,
    /// Any certificate is accepted in the handshake; the backend is told the verdict
    /// (nginx's `optional_no_ca`).
    OptionalNoCa,
    /// No certificate is asked for.
    Off,
}

impl ClientAuthMode {
    /// nginx's `ssl_verify_client` values.
    pub fn parse_nginx(name: &str) -> Option<ClientAuthMode> {
        match name {
            "on" => Some(ClientAuthMode::Required),
            "optional" => Some(ClientAuthMode::Optional),
            "optional_no_ca" => Some(ClientAuthMode::OptionalNoCa),
            "off" => Some(ClientAuthMode::Off),
            _ => None,
        }
    }

    /// certgate's `verify_client` values: nginx's, and `required` for `on`.
    pub fn parse(name: &str) -> Option<ClientAuthMode> {
        match name {
            "required" => Some(ClientAuthMode::Required),
            other => ClientAuthMode::parse_nginx(other),
        }
    }
}

impl fmt::Display for ClientAuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientAuthMode::Required => "required",
            ClientAuthMode::Optional => "optional",
            ClientAuthMode::OptionalNoCa => "optional_no_ca",
            ClientAuthMode::Off => "off",
        })
    }
}
