//! The admin listener (off unless `--admin ADDR`): health, readiness, status, metrics,
//! reload, and a status page for a person.
//!
//! | route | answers |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when every upstream accepts a TCP connection, else 503 naming which |
//! | `GET /status` | JSON: version, uptime, listeners, certificates with days left, last reload |
//! | `GET /metrics` | Prometheus (OpenMetrics text) |
//! | `POST /reload` | re-reads every listener's certificate files; JSON outcome per listener |
//! | `GET /` | the status as an HTML page |
//!
//! The listener has no authentication, so it guards against the two ways a web page in an
//! operator's browser could reach it (see [`AdminHosts`]): a DNS-rebinding page (its requests
//! carry the attacker's name in Host, so every request must name this listener) and a
//! cross-site form or fetch (state-changing requests must carry no Origin or this listener's
//! own).

use crate::config::{ClientLimits, HttpUpstream, ModeConfig};
use crate::connection::HttpServer;
use crate::listener::{
    AcceptLoop, Accepted, ConnectionHandler, ConnectionInfo, Downstream, ListenerRuntime,
    EXPIRY_WARNING_DAYS,
};
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Version};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long `/readyz` waits for each upstream to accept a connection.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// Refused requests logged per second before the rest are only counted in the summary line.
const REFUSAL_LOG_BURST: u32 = 20;
/// How much of a refused Host or Origin is quoted back, in the log and the answer.
const QUOTE_LIMIT: usize = 200;

/// An `--admin-host` value that is not a host name (quoted as [`quote`] does).
#[derive(Debug, thiserror::Error)]
#[error("bad name \"{quoted}\": use a host name or IP address with an optional :PORT, as a Host header carries it, e.g. certgate-admin.monitoring.svc or [::1]:9901")]
pub struct BadAdminHost {
    quoted: String,
}

/// Why the admin listener cannot be set up; each names the flag to fix.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("--admin: bad address \"{given}\": use IP:PORT, e.g. 127.0.0.1:9901")]
    BadAddress {
        given: String,
        #[source]
        source: std::net::AddrParseError,
    },
    /// Not a `#[source]`: the message already holds it, and `{:#}` would repeat it.
    #[error("--admin-host: {0}")]
    BadHost(BadAdminHost),
    #[error("--admin-host names a host for the admin listener: give --admin ADDR too")]
    HostWithoutAddress,
    #[error("--admin: cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The bound socket has no local address (the OS refused to say).
    #[error(transparent)]
    LocalAddress(std::io::Error),
}

/// `--admin` and `--admin-host`, checked.
#[derive(Clone, Debug)]
pub struct AdminSettings {
    pub address: SocketAddr,
    pub hosts: AdminHosts,
}

impl AdminSettings {
    /// The admin listener the flags ask for; `None` without `--admin`, which `--admin-host`
    /// alone is an error for.
    pub fn from_flags(
        address: Option<&str>,
        hosts: &[String],
    ) -> Result<Option<AdminSettings>, AdminError> {
        let address = address
            .map(|given| {
                given
                    .parse::<SocketAddr>()
                    .map_err(|source| AdminError::BadAddress {
                        given: given.to_string(),
                        source,
                    })
            })
            .transpose()?;
        let hosts = AdminHosts::parse(hosts).map_err(AdminError::BadHost)?;
        match address {
            Some(address) => Ok(Some(AdminSettings { address, hosts })),
            None if hosts.names.is_empty() => Ok(None),
            None => Err(AdminError::HostWithoutAddress),
        }
    }
}

/// Binds the admin listener and serves it, reporting on `listeners`, until `shutdown`;
/// returns the bound address.
pub async fn start(
    settings: &AdminSettings,
    listeners: crate::ListenerSet,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, AdminError> {
    let address = settings.address;
    let tcp = TcpListener::bind(address)
        .await
        .map_err(|source| AdminError::Bind { address, source })?;
    let bound = tcp.local_addr().map_err(AdminError::LocalAddress)?;
    if !bound.ip().is_loopback() {
        tracing::warn!(
            "--admin {bound} is not a loopback address: the admin listener has no authentication, so anyone who reaches it can read the status and trigger reloads"
        );
    }
    tracing::info!(
        "listener \"admin\" (admin) listening on {bound}, serving /, /healthz, /readyz, /status, /metrics and POST /reload"
    );
    let state = Arc::new(AdminState::new(listeners, metrics, settings.hosts.clone()));
    tokio::spawn(serve(tcp, state, shutdown));
    Ok(bound)
}

/// What the admin listener reports on.
pub struct AdminState {
    listeners: crate::ListenerSet,
    metrics: Arc<Metrics>,
    started: Instant,
    hosts: AdminHosts,
    refusal_log: LogLimit,
}

/// The two ends of one admin connection: the Host check accepts the address a request
/// arrived on, which for a listener on 0.0.0.0 or [::] is known only per connection.
#[derive(Clone, Copy, Debug)]
struct Connection {
    local: SocketAddr,
    peer: SocketAddr,
}

/// A host and optional port: a Host header, the authority of an Origin, an `--admin-host`.
/// Not config's `HostPort`: a Host check must also validate the name and address, canonicalise
/// IPs and tell an absent port from a default one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HostPort {
    host: HostName,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostName {
    /// IPv4-mapped IPv6 addresses are kept as IPv4, as the socket addresses are compared.
    Ip(IpAddr),
    /// Lower-cased.
    Name(String),
}

impl HostPort {
    /// `name`, `name:port`, `1.2.3.4[:port]` or `[v6][:port]`; nothing else (no userinfo,
    /// no empty or out-of-range port), so a value is either understood or refused.
    fn parse(text: &str) -> Option<HostPort> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (v6, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':')?),
            };
            let ip: std::net::Ipv6Addr = v6.parse().ok()?;
            (HostName::Ip(IpAddr::V6(ip).to_canonical()), port)
        } else {
            let (host, port) = match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            };
            let host = if let Ok(ip) = host.parse::<Ipv4Addr>() {
                HostName::Ip(IpAddr::V4(ip))
            } else if !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                HostName::Name(host.to_ascii_lowercase())
            } else {
                return None;
            };
            (host, port)
        };
        let port = match port {
            None => None,
            Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                Some(port.parse().ok()?)
            }
            Some(_) => return None,
        };
        Some(HostPort { host, port })
    }

    /// Whether this is a loopback name: `localhost` or an address in 127.0.0.0/8 or `::1`.
    /// A browser sends one only for a page it loaded from a loopback URL itself, never for a
    /// rebound name, so any port is fine (`kubectl port-forward` and ssh tunnels change it).
    fn is_loopback(&self) -> bool {
        match &self.host {
            HostName::Ip(ip) => ip.is_loopback(),
            HostName::Name(name) => name == "localhost",
        }
    }
}

/// An `Origin` value that is not `null`: `http[s]://host[:port]`, as browsers serialise it.
struct OriginUrl {
    https: bool,
    authority: HostPort,
}

impl OriginUrl {
    fn parse(text: &str) -> Option<OriginUrl> {
        let (scheme, rest) = text.split_once("://")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        Some(OriginUrl {
            https,
            authority: HostPort::parse(rest)?,
        })
    }

    /// Same origin as a request to `target`: same host, and the same port once a missing one
    /// is read as the default of the Origin's scheme. The scheme itself is not compared: this
    /// port serves plain HTTP, so an https Origin naming it can only be the page of a TLS
    /// proxy in front (https://name/ with `Host: name`).
    fn same_as(&self, target: &HostPort) -> bool {
        let default = if self.https { 443 } else { 80 };
        self.authority.host == target.host
            && self.authority.port.unwrap_or(default) == target.port.unwrap_or(default)
    }
}

/// Which Host and Origin values the admin listener answers to.
///
/// Every request must name, in Host (HTTP/1) or `:authority` (HTTP/2), the address it
/// arrived on (IP with that port, or the IP alone), a loopback name (`localhost`,
/// 127.0.0.0/8, `[::1]`, any port) or a name given with `--admin-host`; a request without
/// one is taken only as HTTP/1.0 from a loopback peer. State-changing requests (any method
/// but GET and HEAD) are refused when `Sec-Fetch-Site` says another site's page sent them,
/// and when they carry an `Origin` that is `null` or not the origin of the request itself:
/// browsers send Origin with every POST, curl and scripts send none.
#[derive(Clone, Debug, Default)]
pub struct AdminHosts {
    /// From `--admin-host`; a name without a port matches any port.
    names: Vec<HostPort>,
}

impl AdminHosts {
    /// The `--admin-host` values; the error names the value that is not a host name.
    pub fn parse(names: &[String]) -> Result<AdminHosts, BadAdminHost> {
        let names = names
            .iter()
            .map(|name| {
                HostPort::parse(name).ok_or_else(|| BadAdminHost {
                    quoted: quote(name.as_bytes()),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(AdminHosts { names })
    }

    fn allows(&self, target: &HostPort, local: SocketAddr) -> bool {
        let own = HostName::Ip(local.ip().to_canonical());
        target.is_loopback()
            || (target.host == own && target.port.is_none_or(|port| port == local.port()))
            || self.names.iter().any(|name| {
                name.host == target.host && name.port.is_none_or(|port| Some(port) == target.port)
            })
    }

    /// Whether `request`, as it arrived on `connection`, may be answered.
    fn check<B>(&self, request: &Request<B>, connection: &Connection) -> Result<(), Refusal> {
        // HTTP/2 names its target in :authority (the URI), HTTP/1 in Host, a proxy-style
        // HTTP/1 request in both; every one given must be ours.
        let named = request
            .uri()
            .authority()
            .map(|a| a.as_str().as_bytes())
            .into_iter()
            .chain(
                request
                    .headers()
                    .get_all(hyper::header::HOST)
                    .iter()
                    .map(|v| v.as_bytes()),
            );
        let mut target = None;
        for raw in named {
            match std::str::from_utf8(raw).ok().and_then(HostPort::parse) {
                Some(host) if self.allows(&host, connection.local) => {
                    target.get_or_insert(host);
                }
                Some(_) => return Err(Refusal::Host(quote(raw))),
                None => return Err(Refusal::BadHost(quote(raw))),
            }
        }
        if target.is_none()
            && !(request.version() <= Version::HTTP_10
                && connection.peer.ip().to_canonical().is_loopback())
        {
            return Err(Refusal::NoHost);
        }
        if matches!(*request.method(), Method::GET | Method::HEAD) {
            return Ok(());
        }
        if let Some(site) = request.headers().get("sec-fetch-site") {
            if matches!(site.as_bytes(), b"cross-site" | b"same-site") {
                return Err(Refusal::FetchSite(quote(site.as_bytes())));
            }
        }
        let mut origins = request.headers().get_all(hyper::header::ORIGIN).iter();
        let Some(origin) = origins.next() else {
            return Ok(());
        };
        if origin.as_bytes() == b"null" {
            return Err(Refusal::NullOrigin);
        }
        let same_origin = origins.next().is_none()
            && std::str::from_utf8(origin.as_bytes())
                .ok()
                .and_then(OriginUrl::parse)
                .is_some_and(|url| {
                    self.allows(&url.authority, connection.local)
                        && target.as_ref().is_some_and(|target| url.same_as(target))
                });
        if same_origin {
            Ok(())
        } else {
            Err(Refusal::ForeignOrigin(quote(origin.as_bytes())))
        }
    }
}

/// Why a request was not answered; the values are already quoted with [`quote`].
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    NoHost,
    /// Not a host[:port] at all.
    BadHost(String),
    /// A host that is not ours.
    Host(String),
    FetchSite(String),
    NullOrigin,
    ForeignOrigin(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::NoHost | Refusal::BadHost(_) => StatusCode::BAD_REQUEST,
            Refusal::Host(_) => StatusCode::MISDIRECTED_REQUEST,
            Refusal::FetchSite(_) | Refusal::NullOrigin | Refusal::ForeignOrigin(_) => {
                StatusCode::FORBIDDEN
            }
        }
    }

    /// One sentence for the answer and the log (which adds the peer and the local address,
    /// kept out of the answer a rebinding page could read).
    fn reason(&self) -> String {
        match self {
            Refusal::NoHost => "no Host header; the admin listener answers requests without one only over HTTP/1.0 from loopback".into(),
            Refusal::BadHost(host) => format!("Host \"{host}\" refused: it is not a host name or IP address with an optional :PORT"),
            Refusal::Host(host) => format!(
                "Host \"{host}\" refused: the admin listener answers only to its own address, loopback names (localhost, 127.0.0.1, [::1]) and names given with --admin-host (a DNS-rebinding page looks like this); if this name is yours, start certgate with --admin-host {host}"
            ),
            Refusal::FetchSite(site) => format!(
                "Sec-Fetch-Site \"{site}\" refused: a page of another site sent this state-changing request; POST to the admin listener from its own page, or with curl or a script (no Origin)"
            ),
            Refusal::NullOrigin => "Origin null refused: a sandboxed page, a local file or a cross-site redirect sent this state-changing request; POST to the admin listener from its own page, or with curl or a script (no Origin)".into(),
            Refusal::ForeignOrigin(origin) => format!(
                "Origin \"{origin}\" refused: it is not the origin of this admin listener, so another page sent this state-changing request; POST from the admin listener's own page, or with curl or a script (no Origin)"
            ),
        }
    }
}

/// Peer input made fit for a log line and an answer: printable ASCII with everything else
/// escaped (`\n`, `\x1b`, `\"`), cut at [`QUOTE_LIMIT`] bytes.
fn quote(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(QUOTE_LIMIT)];
    let mut quoted = cut.escape_ascii().to_string();
    if cut.len() < raw.len() {
        quoted.push_str("...");
    }
    quoted
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

impl AdminState {
    /// The state of an admin listener that answers to `hosts` (from `--admin-host`).
    pub fn new(
        listeners: crate::ListenerSet,
        metrics: Arc<Metrics>,
        hosts: AdminHosts,
    ) -> AdminState {
        AdminState {
            listeners,
            metrics,
            started: Instant::now(),
            hosts,
            refusal_log: LogLimit::new(REFUSAL_LOG_BURST),
        }
    }

    /// The listeners being served now (a config reload may change them).
    fn current(&self) -> Vec<(Arc<ListenerRuntime>, SocketAddr)> {
        self.listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The JSON document of `/status`.
    pub fn status(&self) -> serde_json::Value {
        let now = now_unix();
        let listeners: Vec<serde_json::Value> = self
            .current()
            .iter()
            .map(|(runtime, address)| {
                let config = &runtime.config;
                let (certificates, last_reload) = runtime.tls.status();
                let certificates: Vec<serde_json::Value> = certificates
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "role": c.role,
                            "subject": c.subject,
                            "issuer": c.issuer,
                            "sans": c.sans,
                            "not_after": c.not_after,
                            "days_left": c.days_left(now),
                            "file": c.file,
                        })
                    })
                    .collect();
                let last_reload = last_reload.map(|(at, outcome)| {
                    serde_json::json!({
                        "at": at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
                        "result": outcome,
                    })
                });
                serde_json::json!({
                    "name": config.name,
                    "address": address.to_string(),
                    "mode": config.mode().to_string(),
                    "upstream": config.upstream_display(),
                    "certificates": certificates,
                    "last_reload": last_reload,
                })
            })
            .collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "listeners": listeners,
        })
    }

    /// Every upstream that does not accept a TCP connection, with the reason.
    async fn unready(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (runtime, _) in &self.current() {
            let config = &runtime.config;
            let result = match &config.mode {
                ModeConfig::Server(server) => match &server.upstream {
                    HttpUpstream::Tcp { authority } => connect_tcp(authority).await,
                    HttpUpstream::Unix(path) => {
                        tokio::time::timeout(READY_TIMEOUT, tokio::net::UnixStream::connect(path))
                            .await
                            .map_err(|_| "timed out".to_string())
                            .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()))
                    }
                },
                ModeConfig::Client(client) => connect_tcp(&client.upstream_authority).await,
            };
            if let Err(reason) = result {
                problems.push(format!(
                    "listener \"{}\": upstream {} unreachable: {reason}",
                    config.name,
                    config.upstream_display()
                ));
            }
        }
        problems
    }

    async fn reload(&self) -> serde_json::Value {
        let mut outcomes = serde_json::Map::new();
        for (runtime, _) in &self.current() {
            let runtime = runtime.clone();
            let name = runtime.config.name.clone();
            let outcome = tokio::task::spawn_blocking(move || runtime.tls.reload())
                .await
                .ok();
            outcomes.insert(name, serde_json::json!(outcome));
        }
        serde_json::Value::Object(outcomes)
    }

    /// Logs a refused request, at most [`REFUSAL_LOG_BURST`] lines a second, so a flood of
    /// them cannot fill the disk; what is held back is counted and said.
    fn log_refusal<B>(&self, request: &Request<B>, connection: &Connection, refusal: &Refusal) {
        self.refusal_log.log(
            tracing::Level::WARN,
            "admin",
            "more refused requests were not logged",
            format_args!(
                "refused {} {} from {} (arrived on {}) with {}: {}",
                quote(request.method().as_str().as_bytes()),
                quote(request.uri().path().as_bytes()),
                connection.peer,
                connection.local,
                refusal.status(),
                refusal.reason()
            ),
        );
    }

    async fn handle(
        self: Arc<Self>,
        connection: Connection,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        const TEXT: &str = "text/plain; charset=utf-8";
        const JSON: &str = "application/json";
        if let Err(refusal) = self.hosts.check(&request, &connection) {
            self.log_refusal(&request, &connection, &refusal);
            return Ok(respond(
                refusal.status(),
                TEXT,
                format!("{}\n", refusal.reason()),
            ));
        }
        Ok(match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => respond(StatusCode::OK, TEXT, "ok\n".into()),
            (&Method::GET, "/readyz") => {
                let problems = self.unready().await;
                if problems.is_empty() {
                    respond(StatusCode::OK, TEXT, "ready\n".into())
                } else {
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        format!("not ready:\n{}\n", problems.join("\n")),
                    )
                }
            }
            (&Method::GET, "/status") => {
                respond(StatusCode::OK, JSON, format!("{:#}\n", self.status()))
            }
            (&Method::GET, "/metrics") => respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(),
            ),
            (&Method::POST, "/reload") => {
                let outcomes = self.reload().await;
                // Who asked for a reload is worth a line: it is the one state change here.
                tracing::info!(
                    "listener \"admin\": POST /reload from {}: {outcomes}",
                    connection.peer
                );
                respond(StatusCode::OK, JSON, format!("{outcomes:#}\n"))
            }
            (&Method::GET, "/") => respond(StatusCode::OK, "text/html; charset=utf-8", self.page()),
            (_, "/reload") => respond(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "use POST /reload\n".into(),
            ),
            _ => respond(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found; try /, /healthz, /readyz, /status, /metrics or POST /reload\n".into(),
            ),
        })
    }

    /// The status for a person: certificates by days left, those inside the warning window
    /// in red, and the request and handshake counters.
    fn page(&self) -> String {
        let now = now_unix();
        let mut rows: Vec<(i64, String)> = Vec::new();
        for (runtime, _) in &self.current() {
            for cert in runtime.tls.status().0 {
                let days = cert.days_left(now);
                let class = if days < EXPIRY_WARNING_DAYS {
                    " class=\"expiring\""
                } else {
                    ""
                };
                rows.push((
                    days,
                    format!(
                        "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{days}</td><td>{}</td></tr>",
                        escape(&runtime.config.name),
                        cert.role,
                        escape(&cert.subject),
                        escape(&cert.issuer),
                        escape(&cert.file.display().to_string()),
                    ),
                ));
            }
        }
        rows.sort_by_key(|(days, _)| *days);
        let listeners: String = self
            .current()
            .iter()
            .map(|(runtime, address)| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{address}</td><td>{}</td></tr>",
                    escape(&runtime.config.name),
                    runtime.config.mode(),
                    escape(&runtime.config.upstream_display())
                )
            })
            .collect();
        let counters: String = self
            .metrics
            .encode()
            .lines()
            .filter(|l| {
                l.starts_with("certgate_requests_total")
                    || l.starts_with("certgate_handshakes_total")
            })
            .map(|l| format!("{}\n", escape(l)))
            .collect();
        let counters = if counters.is_empty() {
            "no requests or handshakes yet\n".to_string()
        } else {
            counters
        };
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>certgate status</title><style>\
             body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
             tr.expiring td{{color:#b00;font-weight:bold}}</style></head><body>\
             <h1>certgate {}</h1><p>up {}s</p>\
             <h2>Listeners</h2><table><tr><th>name</th><th>mode</th><th>address</th><th>upstream</th></tr>{listeners}</table>\
             <h2>Certificates</h2><table id=\"certificates\"><tr><th>listener</th><th>role</th><th>subject</th><th>issuer</th><th>days left</th><th>file</th></tr>{}</table>\
             <h2>Counters</h2><pre>{counters}</pre></body></html>\n",
            env!("CARGO_PKG_VERSION"),
            self.started.elapsed().as_secs(),
            rows.into_iter().map(|(_, row)| row).collect::<String>(),
        )
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn connect_tcp(authority: &str) -> Result<(), String> {
    match tokio::time::timeout(READY_TIMEOUT, tokio::net::TcpStream::connect(authority)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {}s", READY_TIMEOUT.as_secs())),
    }
}

/// Serves the admin listener until `shutdown` flips, on the listeners' serving core: the
/// same accept loop (connection limit, shedding when descriptors run out) and, through
/// [`AdminHandler`], the same deadlines and header limit as a listener's with nginx's
/// defaults, so idle or half-sent connections cannot pile up here either.
pub async fn serve(tcp: TcpListener, state: Arc<AdminState>, shutdown: watch::Receiver<bool>) {
    let accept = AcceptLoop::new("admin", SHED_BATCH);
    let handler = Arc::new(AdminHandler {
        http: HttpServer::new(&ClientLimits::default()),
        state,
    });
    let open = accept.open().clone();
    let connection = move |stream: tokio::net::TcpStream, remote, drain| {
        let handler = handler.clone();
        let open = open.clone();
        async move {
            // A socket whose own address cannot be read is already gone.
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let accepted = Accepted {
                stream: Downstream::Plain(stream),
                info: ConnectionInfo::new(remote, local, None),
                drain,
                open,
            };
            handler.serve(accepted).await
        }
    };
    accept
        .run(tcp, shutdown, DRAIN_TIMEOUT, None, connection)
        .await;
}

/// The admin listener's HTTP serving.
pub struct AdminHandler {
    http: HttpServer,
    state: Arc<AdminState>,
}

impl ConnectionHandler for AdminHandler {
    fn serve(
        self: Arc<Self>,
        connection: Accepted,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        let ends = Connection {
            local: connection.info.local,
            peer: connection.info.remote,
        };
        Box::pin(async move {
            let state = self.state.clone();
            let service =
                hyper::service::service_fn(move |request| state.clone().handle(ends, request));
            let _ = self
                .http
                .serve_accepted(
                    connection.stream,
                    &connection.open,
                    service,
                    connection.drain,
                )
                .await;
        })
    }
}

/// Idle admin connections closed at once when descriptors run out.
const SHED_BATCH: usize = 8;
/// How long admin requests may take to finish once the process stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(local: &str, peer: &str) -> Connection {
        Connection {
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
        }
    }

    const LOOPBACK: &str = "127.0.0.1:9901";

    fn get(host: &str) -> Request<()> {
        Request::get("/status")
            .header("host", host)
            .body(())
            .unwrap()
    }

    fn post(host: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::post("/reload").header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    #[test]
    fn host_values_are_understood_or_refused() {
        let parsed = |text| HostPort::parse(text);
        assert_eq!(
            parsed("Status.Internal:80"),
            Some(HostPort {
                host: HostName::Name("status.internal".into()),
                port: Some(80)
            })
        );
        assert_eq!(
            parsed("[::ffff:10.0.0.5]"),
            Some(HostPort {
                host: HostName::Ip("10.0.0.5".parse().unwrap()),
                port: None
            })
        );
        for bad in [
            "",
            "localhost:",
            "localhost:99999",
            "localhost:+80",
            "user@localhost",
            "local host",
            "[::1",
            "[::1]x",
            "a:1:2",
            "http://localhost",
        ] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
    }

    #[test]
    fn answers_to_loopback_names_and_its_own_address_only() {
        let hosts = AdminHosts::default();
        let on_loopback = connection(LOOPBACK, "127.0.0.1:5000");
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:9901",
            "127.8.9.10:1",
            "[::1]:9901",
        ] {
            assert_eq!(hosts.check(&get(host), &on_loopback), Ok(()), "{host}");
        }
        // Arrived on 10.0.0.5:9901 (a listener on 0.0.0.0): that address, or the IP alone.
        let on_lan = connection("10.0.0.5:9901", "10.0.0.9:5000");
        assert_eq!(hosts.check(&get("10.0.0.5:9901"), &on_lan), Ok(()));
        assert_eq!(hosts.check(&get("10.0.0.5"), &on_lan), Ok(()));
        let mapped = connection("[::ffff:10.0.0.5]:9901", "[::ffff:10.0.0.9]:5000");
        assert_eq!(hosts.check(&get("10.0.0.5:9901"), &mapped), Ok(()));
        for host in [
            "attacker.example",
            "attacker.example:9901",
            "10.0.0.5:9902",
            "10.0.0.6:9901",
            "0.0.0.0:9901",
            "localhost.attacker.example",
        ] {
            assert!(
                matches!(hosts.check(&get(host), &on_lan), Err(Refusal::Host(_))),
                "{host}"
            );
        }
        assert_eq!(
            hosts.check(&get("localhost:99999"), &on_lan),
            Err(Refusal::BadHost("localhost:99999".into()))
        );
    }

    #[test]
    fn admin_host_names_match_any_port_unless_they_give_one() {
        let hosts =
            AdminHosts::parse(&["status.internal".into(), "admin.example:8443".into()]).unwrap();
        let on = connection("10.0.0.5:9901", "10.0.0.9:5000");
        assert_eq!(hosts.check(&get("Status.Internal"), &on), Ok(()));
        assert_eq!(hosts.check(&get("status.internal:1234"), &on), Ok(()));
        assert_eq!(hosts.check(&get("admin.example:8443"), &on), Ok(()));
        assert!(hosts.check(&get("admin.example"), &on).is_err());
        assert!(hosts.check(&get("admin.example:443"), &on).is_err());
        let error = AdminHosts::parse(&["http://x\n".into()]).unwrap_err();
        let error = error.to_string();
        assert!(error.contains("bad name \"http://x\\n\""), "{error}");
    }

    #[test]
    fn admin_flags_are_checked_together() {
        assert!(AdminSettings::from_flags(None, &[]).unwrap().is_none());
        let settings = AdminSettings::from_flags(Some("127.0.0.1:9901"), &["a.example".into()])
            .unwrap()
            .unwrap();
        assert_eq!(settings.address, "127.0.0.1:9901".parse().unwrap());
        let error = AdminSettings::from_flags(None, &["a.example".into()]).unwrap_err();
        assert!(matches!(error, AdminError::HostWithoutAddress), "{error}");
        let error = AdminSettings::from_flags(Some("localhost"), &[]).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("--admin: bad address \"localhost\""));
    }

    #[test]
    fn every_named_target_must_be_ours() {
        let hosts = AdminHosts::default();
        let on = connection(LOOPBACK, "127.0.0.1:5000");
        // An absolute-form (or HTTP/2) authority and a Host header are both checked.
        let proxied = Request::get("http://attacker.example/status")
            .header("host", "localhost")
            .body(())
            .unwrap();
        assert_eq!(
            hosts.check(&proxied, &on),
            Err(Refusal::Host("attacker.example".into()))
        );
        let two = Request::get("/status")
            .header("host", "localhost")
            .header("host", "attacker.example")
            .body(())
            .unwrap();
        assert!(hosts.check(&two, &on).is_err());
    }

    #[test]
    fn no_host_is_taken_only_over_http_1_0_from_loopback() {
        let hosts = AdminHosts::default();
        let request = |version| Request::get("/status").version(version).body(()).unwrap();
        let from_loopback = connection("0.0.0.0:9901", "127.0.0.1:5000");
        let from_lan = connection("10.0.0.5:9901", "10.0.0.9:5000");
        assert_eq!(
            hosts.check(&request(Version::HTTP_10), &from_loopback),
            Ok(())
        );
        assert_eq!(
            hosts.check(&request(Version::HTTP_10), &from_lan),
            Err(Refusal::NoHost)
        );
        assert_eq!(
            hosts.check(&request(Version::HTTP_11), &from_loopback),
            Err(Refusal::NoHost)
        );
    }

    #[test]
    fn state_changes_need_no_origin_or_their_own() {
        let hosts = AdminHosts::default();
        let on = connection(LOOPBACK, "127.0.0.1:5000");
        let host = "127.0.0.1:9901";
        assert_eq!(hosts.check(&post(host, &[]), &on), Ok(()));
        for origin in ["http://127.0.0.1:9901", "HTTP://127.0.0.1:9901"] {
            assert_eq!(
                hosts.check(&post(host, &[("origin", origin)]), &on),
                Ok(()),
                "{origin}"
            );
        }
        assert_eq!(
            hosts.check(&post("localhost", &[("origin", "http://localhost")]), &on),
            Ok(())
        );
        // Behind a TLS proxy the admin page is https://name/ and Host is the name.
        let proxied = AdminHosts::parse(&["admin.example".into()]).unwrap();
        assert_eq!(
            proxied.check(
                &post("admin.example", &[("origin", "https://admin.example")]),
                &on
            ),
            Ok(())
        );
        assert_eq!(
            hosts.check(&post(host, &[("origin", "null")]), &on),
            Err(Refusal::NullOrigin)
        );
        for origin in [
            "http://attacker.example",
            // A page on another local port is another origin.
            "http://127.0.0.1:3000",
            "http://localhost:9901",
            "file://",
            "http://127.0.0.1:9901/reload",
        ] {
            assert!(
                matches!(
                    hosts.check(&post(host, &[("origin", origin)]), &on),
                    Err(Refusal::ForeignOrigin(_))
                ),
                "{origin}"
            );
        }
        for site in ["cross-site", "same-site"] {
            assert_eq!(
                hosts.check(&post(host, &[("sec-fetch-site", site)]), &on),
                Err(Refusal::FetchSite(site.into()))
            );
        }
        assert_eq!(
            hosts.check(
                &post(
                    host,
                    &[
                        ("sec-fetch-site", "same-origin"),
                        ("origin", "http://127.0.0.1:9901")
                    ]
                ),
                &on
            ),
            Ok(())
        );
        // Reading is not a state change: a GET carries whatever Origin it likes.
        let read = Request::get("/status")
            .header("host", host)
            .header("origin", "null")
            .header("sec-fetch-site", "cross-site")
            .body(())
            .unwrap();
        assert_eq!(hosts.check(&read, &on), Ok(()));
    }

    #[test]
    fn refused_values_are_quoted_without_control_characters_and_cut() {
        assert_eq!(quote(b"a\nb\x1b[31m\"\xff"), "a\\nb\\x1b[31m\\\"\\xff");
        let long = quote(&[b'a'; 1000]);
        assert_eq!(long.len(), QUOTE_LIMIT + 3);
        assert!(long.ends_with("..."));
    }
}
