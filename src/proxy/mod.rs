//! The per-request work of a listener: edit headers, forward upstream, stream the answer back.

pub mod body;
pub mod handler;
pub mod headers;
pub mod path;
pub mod refusal;
pub mod upstream;

use crate::access::AccessRules;
use crate::access_log::{AccessLog, AccessRecord, Logged};
use crate::config::{
    FixedResponse, HttpUpstream, ListenerConfig, ModeConfig, PathNormalization, RouteMatch,
};
use crate::log_limit::LogLimit;
use crate::metrics::{Metrics, RequestMetrics, Telemetry};
use crate::tls::explain;
use crate::tls::identity::{ClientVerdict, PeerIdentity};
pub use body::ProxyBody;
use body::{BodyFault, ClientFault, LimitedBody};
use bytes::Bytes;
use headers::HeaderEdits;
use hyper::body::Incoming;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use upstream::{AllConnectionsBusy, Connector, Target};

/// What the TLS handshake of a server-mode connection established.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub protocol: &'static str,
    pub cipher: &'static str,
    pub verdict: ClientVerdict,
    /// Present only when the client certificate was admitted.
    pub peer: Option<PeerIdentity>,
    pub identity_headers: headers::IdentityHeaders,
}

/// One accepted downstream connection.
#[derive(Debug)]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// Present in server mode.
    pub tls: Option<TlsInfo>,
    /// A header with `_` in its name was dropped and said so (once per connection).
    pub logged_underscores: std::sync::atomic::AtomicBool,
}

impl ConnectionInfo {
    pub fn new(remote: SocketAddr, local: SocketAddr, tls: Option<TlsInfo>) -> ConnectionInfo {
        ConnectionInfo {
            remote,
            local,
            tls,
            logged_underscores: Default::default(),
        }
    }
}

/// Whose failure a failed request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's (4xx): a request that is unusable, refused or too large.
    Downstream,
    /// The upstream's (502, 503, 504): unreachable, too slow, too busy, or it refused us.
    Upstream,
    /// Ours (500): certgate could not do its part, whatever the client sent.
    Internal,
}

/// Why a request failed, by side, so that the status code, the log line and the metrics
/// follow from one match ([`ProxyError::side`], [`ProxyError::status`]). Each carries the
/// log line's reason.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream could not be reached or failed mid-request.
    #[error("{0}")]
    Upstream(String),
    /// The request body is larger than the listener's `max_body_size`.
    #[error("{0}")]
    TooLarge(String),
    /// The upstream did not answer in time.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// Every connection `upstream_max_connections` allows was in use and none came free in
    /// time: the upstream cannot keep up (or a client is trying to make it).
    #[error("{0}")]
    UpstreamBusy(String),
    /// A route's allow-list refused the client; the reason is for the log only.
    #[error("{0}")]
    Forbidden(String),
    /// The request itself is unusable (a path nginx would refuse too).
    #[error("{0}")]
    BadRequest(String),
    /// The client's request body could not be read (bad chunked framing, a reset stream):
    /// the client's fault, even though it surfaces as a failed upstream request.
    #[error("{0}")]
    ClientBody(String),
    /// Our own failure: a request we could not turn into an upstream one although it was
    /// valid, or our client key that could not sign the upstream handshake.
    #[error("{0}")]
    Internal(String),
}

impl ProxyError {
    /// Whose failure it was, for the log level and `certgate_upstream_errors_total`.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::Upstream(_)
            | ProxyError::UpstreamTimeout(_)
            | ProxyError::UpstreamBusy(_) => Side::Upstream,
            ProxyError::TooLarge(_)
            | ProxyError::Forbidden(_)
            | ProxyError::BadRequest(_)
            | ProxyError::ClientBody(_) => Side::Downstream,
            ProxyError::Internal(_) => Side::Internal,
        }
    }

    /// The status the client is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::BadRequest(_) | ProxyError::ClientBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let body = match self {
            ProxyError::TooLarge(_) => "request body too large\n".to_string(),
            // The body does not reveal the rules.
            ProxyError::Forbidden(_) => {
                "forbidden: this client certificate may not access this path\n".to_string()
            }
            // What went wrong inside is for our log, not for the client.
            ProxyError::Internal(_) => {
                "internal error; the proxy's log has the reason\n".to_string()
            }
            other => format!("{other}\n"),
        };
        let mut response = Response::new(ProxyBody::local(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// What became of a request, for metrics and the access log.
#[derive(Default)]
struct Outcome<'s> {
    /// The matched route's path prefix ("" for none).
    route: &'s str,
    upstream: &'s str,
    /// From sending the request upstream to its response headers.
    upstream_time: Option<Duration>,
    /// A request answered although a side failed: the upstream refused our certificate in
    /// a 400 page that is passed on.
    failed: Option<Side>,
}

/// Failed requests logged per second per listener on each worker (the rest are counted in
/// metrics).
const FAILURE_LOG_BURST: u32 = 20;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How many idle connections a pool keeps per upstream.
const POOL_MAX_IDLE: usize = 256;

/// One upstream and its connection pool.
struct Upstream {
    client: Client<Connector, LimitedBody>,
    /// The same connector without a pool, for sending a request again on a connection that
    /// is certainly new (see [`Upstream::send`]).
    fresh: Client<Connector, LimitedBody>,
    /// Scheme and authority of upstream request URIs (they key the pool).
    scheme: Scheme,
    authority: Authority,
    display: String,
    /// Client mode: the Host we send travels as the URI's authority, never as a header (see
    /// [`host_as_authority`]).
    authority_from_host: bool,
}

impl Upstream {
    fn new(connector: Connector, scheme: Scheme, authority: &str, display: String) -> Upstream {
        // Validated as HOST:PORT by the config; the fallback only keys the pool.
        let authority = Authority::try_from(authority)
            .unwrap_or_else(|_| Authority::from_static("upstream.invalid"));
        let authority_from_host = connector.is_tls();
        let fresh = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector.clone());
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build(connector);
        Upstream {
            client,
            fresh,
            scheme,
            authority,
            display,
            authority_from_host,
        }
    }

    fn plain(
        upstream: &HttpUpstream,
        listener: &ListenerConfig,
        metrics: &Arc<Metrics>,
    ) -> Upstream {
        let authority = match upstream {
            HttpUpstream::Tcp { authority } => authority.as_str(),
            HttpUpstream::Unix(_) => "unix-socket",
        };
        Upstream::new(
            Connector::new(Target::plain(upstream), listener, metrics),
            Scheme::HTTP,
            authority,
            upstream.to_string(),
        )
    }

    /// Sends a request on a pooled connection. A backend may close a kept-alive connection
    /// just as the request goes out on it (its keep-alive timeout or request limit ran out):
    /// such a request, if it has no body (so it can be sent again) and is idempotent or was
    /// not sent at all, is sent once more on a new connection, as nginx's
    /// `proxy_next_upstream error` does. Requests with a body are not: certgate streams
    /// bodies rather than keeping a copy.
    async fn send(
        &self,
        parts: hyper::http::request::Parts,
        body: LimitedBody,
        listener: &str,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        // Only an idempotent request without a body can go again; the copy is made only for
        // those (one never written at all is re-sent by hyper-util itself).
        let again = (parts.method.is_idempotent() && hyper::body::Body::is_end_stream(&body))
            .then(|| parts.clone());
        let error = match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        let Some(parts) = again else {
            return Err(error);
        };
        if upstream::StaleConnection::find(&error).is_none() {
            return Err(error);
        }
        tracing::debug!(
            "listener \"{listener}\": upstream {} closed a pooled connection as {} {} went out on it ({}); sending it again on a new connection",
            self.display,
            parts.method,
            parts.uri.path(),
            error_chain(&error)
        );
        self.fresh
            .request(Request::from_parts(parts, LimitedBody::empty()))
            .await
    }

    /// Why a request to this upstream failed, as the error that says which side it was. A
    /// request whose body the client broke fails upstream too: the body knows why.
    fn failure(
        &self,
        error: &hyper_util::client::legacy::Error,
        client_fault: &ClientFault,
    ) -> ProxyError {
        match client_fault.get() {
            Some(BodyFault::TooLarge(limit)) => {
                return ProxyError::TooLarge(format!(
                    "413: the request body grew over max_body_size ({limit} bytes) and was cut off"
                ))
            }
            Some(BodyFault::Unreadable(why)) => {
                return ProxyError::ClientBody(format!("400: {why}"))
            }
            None => {}
        }
        if let Some(failed) = explain::find_rustls_error(error).and_then(explain::signing_failure) {
            return ProxyError::Internal(format!(
                "our key in the token failed to sign the TLS handshake with upstream {}: {failed}; check the token and its PIN (pkcs11-tool --list-objects), then reload",
                self.display
            ));
        }
        match AllConnectionsBusy::find(error) {
            Some(busy) => ProxyError::UpstreamBusy(format!(
                "503: upstream {} is at its connection limit: {busy}; raise upstream_max_connections if it can take more",
                self.display
            )),
            None => ProxyError::Upstream(self.explain(error)),
        }
    }

    /// One line an operator can act on, naming the upstream.
    fn explain(&self, error: &hyper_util::client::legacy::Error) -> String {
        let upstream = &self.display;
        if let Some(tls) = explain::find_rustls_error(error) {
            return format!(
                "TLS to upstream {upstream} failed: {}",
                explain::tls_error(tls)
            );
        }
        match explain::find_io_kind(error) {
            Some(std::io::ErrorKind::ConnectionRefused) => {
                format!("upstream {upstream} refused the connection (is it running?)")
            }
            Some(std::io::ErrorKind::TimedOut) => {
                format!("upstream {upstream} did not accept a connection in time")
            }
            Some(std::io::ErrorKind::NotFound) => {
                format!("upstream {upstream} does not exist (no such socket)")
            }
            _ if error.is_connect() => {
                format!(
                    "cannot connect to upstream {upstream}: {}",
                    error_chain(error)
                )
            }
            _ => format!("upstream {upstream} failed: {}", error_chain(error)),
        }
    }
}

/// A path prefix with its allow-list and, when it names one, its own upstream or the fixed
/// answer it returns (nginx's `return`).
struct RouteRuntime {
    path: String,
    /// The path in lower case, to see whether a case-blind backend reads another route.
    folded: String,
    rules: AccessRules,
    upstream: Option<Upstream>,
    respond: Option<FixedResponse>,
}

/// Where a request goes.
enum Destination<'s> {
    Upstream(&'s Upstream),
    Respond(&'s FixedResponse),
}

/// A listener's request handler: header edits, routes and upstream pools.
pub struct Proxy {
    pub listener: String,
    pub edits: HeaderEdits,
    request_metrics: RequestMetrics,
    access_log: Option<Arc<AccessLog>>,
    /// Refused and failed requests are logged at a bounded rate: peers control how many.
    failure_log: LogLimit,
    upstream: Upstream,
    /// Longest path first, so the first match is nginx's longest-prefix `location`.
    routes: Vec<RouteRuntime>,
    route_match: RouteMatch,
    path_normalization: PathNormalization,
    max_body_size: Option<u64>,
    response_timeout: Duration,
    /// Client mode: reads nginx's HTTP refusals of our certificate, to log them.
    refusal_watch: Option<refusal::RefusalWatch>,
}

impl Proxy {
    pub fn new(
        listener: &ListenerConfig,
        client_tls: Option<Arc<rustls::ClientConfig>>,
        telemetry: &Telemetry,
    ) -> Proxy {
        let metrics = &telemetry.metrics;
        let (upstream, mut routes) = match (&listener.mode, client_tls) {
            (ModeConfig::Client(client), Some(tls)) => (
                Upstream::new(
                    Connector::new(
                        Target::tls(&client.upstream_authority, client.server_name.clone(), tls),
                        listener,
                        metrics,
                    ),
                    Scheme::HTTPS,
                    &client.upstream_authority,
                    listener.upstream_display(),
                ),
                Vec::new(),
            ),
            (ModeConfig::Server(server), _) => (
                Upstream::plain(&server.upstream, listener, metrics),
                server
                    .routes
                    .iter()
                    .map(|route| RouteRuntime {
                        path: route.path.clone(),
                        folded: route.path.to_lowercase(),
                        rules: route.rules.clone(),
                        upstream: route
                            .upstream
                            .as_ref()
                            .map(|u| Upstream::plain(u, listener, metrics)),
                        respond: route.respond.clone(),
                    })
                    .collect(),
            ),
            (ModeConfig::Client(_), None) => unreachable!("client mode always has a TLS config"),
        };
        routes.sort_by_key(|r| std::cmp::Reverse(r.path.len()));
        let (route_match, path_normalization) = match &listener.mode {
            ModeConfig::Server(server) => (server.route_match, server.path_normalization),
            ModeConfig::Client(_) => (RouteMatch::Segment, PathNormalization::Off),
        };
        Proxy {
            listener: listener.name.clone(),
            edits: HeaderEdits::new(listener),
            request_metrics: RequestMetrics::new(
                metrics,
                &listener.name,
                routes.iter().map(|r| r.path.as_str()),
            ),
            access_log: telemetry.access_log.clone(),
            failure_log: LogLimit::new(FAILURE_LOG_BURST),
            upstream,
            routes,
            route_match,
            path_normalization,
            max_body_size: listener.max_body_size,
            response_timeout: listener.response_timeout,
            refusal_watch: refusal::RefusalWatch::for_listener(listener),
        }
    }

    /// Logs a failed or refused request, at most `FAILURE_LOG_BURST` lines a second; our own
    /// failures are errors, and say they are ours.
    fn log_failure(&self, client: SocketAddr, side: Side, reason: &dyn std::fmt::Display) {
        let (level, whose) = match side {
            Side::Internal => (tracing::Level::ERROR, "certgate's own failure: "),
            Side::Downstream | Side::Upstream => (tracing::Level::WARN, ""),
        };
        self.failure_log.log(
            level,
            &self.listener,
            "more failed requests were not logged (see certgate_requests_total)",
            format_args!("request from {client} failed: {whose}{reason}"),
        );
    }

    /// Forwards one request; never fails, answering 502 or 403 with the reason instead.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: Arc<ConnectionInfo>,
    ) -> Result<Response<Logged<ProxyBody>>, std::convert::Infallible> {
        let started = std::time::Instant::now();
        let time = std::time::SystemTime::now();
        // Only what the access log needs is copied out of the request, and only if it is on.
        let request_line = self.access_log.as_ref().map(|_| {
            let header = |name| {
                request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            (
                request.method().to_string(),
                request
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                format!("{:?}", request.version()),
                header(hyper::header::REFERER),
                header(hyper::header::USER_AGENT),
            )
        });
        let mut outcome = Outcome::default();
        let response = match self.forward(request, &connection, &mut outcome).await {
            Ok(response) => response,
            Err(error) => {
                self.log_failure(connection.remote, error.side(), &error);
                outcome.failed = Some(error.side());
                error.into_response()
            }
        };
        if outcome.failed == Some(Side::Upstream) {
            self.request_metrics.upstream_error();
        }
        self.request_metrics
            .request(outcome.route, response.status().as_u16(), started.elapsed());
        let (Some(log), Some((method, target, version, referer, user_agent))) =
            (&self.access_log, request_line)
        else {
            return Ok(response.map(Logged::off));
        };
        let record = AccessRecord {
            time,
            started,
            listener: self.listener.clone(),
            client: connection.remote,
            client_subject: connection
                .tls
                .as_ref()
                .and_then(|t| t.peer.as_ref())
                .map(|p| p.subject_dn.clone()),
            method,
            target,
            version,
            status: response.status().as_u16(),
            referer,
            user_agent,
            upstream: outcome.upstream.to_string(),
            upstream_time: outcome.upstream_time,
        };
        Ok(response.map(|body| Logged::new(body, log.clone(), record)))
    }

    /// The route for a request's path and the upstream it goes to; refuses identities the
    /// route's allow-list does not admit. With strict path normalisation it first refuses
    /// paths a backend may read as another route, and puts the normalised path, the one
    /// judged, into `uri` to be sent upstream.
    fn route<'s>(
        &'s self,
        uri: &mut Uri,
        connection: &ConnectionInfo,
        matched: &mut &'s str,
    ) -> Result<Destination<'s>, ProxyError> {
        // `*` (OPTIONS) and CONNECT's authority form have no path to normalise.
        let strict =
            self.path_normalization == PathNormalization::Strict && uri.path().starts_with('/');
        if strict {
            let sent = path::canonical(uri.path()).map_err(|refusal| {
                let path = uri.path();
                ProxyError::BadRequest(match refusal {
                    path::Refusal::Malformed => format!("bad request path {path:?}"),
                    _ => format!(
                        "400 for {path:?}: the path has {}, which a backend may read as another path; this listener refuses such paths (path_normalization = \"strict\")",
                        refusal.describe()
                    ),
                })
            })?;
            if sent != uri.path() {
                *uri = with_path(uri, &sent)?;
            }
        }
        if self.routes.is_empty() {
            return Ok(Destination::Upstream(&self.upstream));
        }
        let path = uri.path();
        let normalized = path::normalize(path)
            .ok_or_else(|| ProxyError::BadRequest(format!("bad request path {path:?}")))?;
        let route = self
            .routes
            .iter()
            .find(|r| path::covers(&r.path, &normalized, self.route_match));
        if strict {
            let folded = normalized.to_lowercase();
            let case_blind = self
                .routes
                .iter()
                .filter(|r| path::covers(&r.folded, &folded, self.route_match))
                .max_by_key(|r| r.folded.len());
            if route.map(|r| &r.folded) != case_blind.map(|r| &r.folded) {
                let name = |r: Option<&RouteRuntime>| match r {
                    Some(r) => format!("route \"{}\"", r.path),
                    None => "no route".to_string(),
                };
                return Err(ProxyError::BadRequest(format!(
                    "400 for {path:?}: the path is {} but {} in other letter case, as a backend that ignores case reads it; this listener refuses such paths (path_normalization = \"strict\")",
                    name(route),
                    name(case_blind)
                )));
            }
        }
        let Some(route) = route else {
            return Ok(Destination::Upstream(&self.upstream));
        };
        *matched = &route.path;
        let peer = connection.tls.as_ref().and_then(|t| t.peer.as_ref());
        if !route.rules.is_empty() && !peer.is_some_and(|p| route.rules.allows(p)) {
            let who = peer
                .map(PeerIdentity::describe)
                .unwrap_or_else(|| "no client certificate".into());
            return Err(ProxyError::Forbidden(format!(
                "403 for {path}: route \"{}\" does not allow {who}; allowed: {}",
                route.path, route.rules
            )));
        }
        Ok(match (&route.respond, &route.upstream) {
            (Some(fixed), _) => Destination::Respond(fixed),
            (None, upstream) => Destination::Upstream(upstream.as_ref().unwrap_or(&self.upstream)),
        })
    }

    async fn forward<'s>(
        &'s self,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
        outcome: &mut Outcome<'s>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let upstream = match self.route(&mut parts.uri, connection, &mut outcome.route)? {
            Destination::Upstream(upstream) => upstream,
            Destination::Respond(fixed) => return Ok(fixed_response(fixed)),
        };
        if let Some(limit) = self.max_body_size {
            let announced = parts
                .headers
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(length) = announced.filter(|length| *length > limit) {
                return Err(ProxyError::TooLarge(format!(
                    "413 for {}: Content-Length {length} is over max_body_size ({limit} bytes)",
                    parts.uri.path()
                )));
            }
        }
        let (body, client_fault) = LimitedBody::new(body, self.max_body_size);
        outcome.upstream = &upstream.display;
        self.edits.apply(&mut parts, connection);
        let authority = match upstream.authority_from_host {
            true => host_as_authority(&mut parts.headers)?,
            false => None,
        };
        // Reuse the request's own path; only scheme and authority change.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(upstream.scheme.clone());
        uri.authority = Some(authority.unwrap_or_else(|| upstream.authority.clone()));
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        // From a request hyper parsed and the upstream's validated authority: a failure is ours.
        parts.uri = Uri::from_parts(uri)
            .map_err(|e| ProxyError::Internal(format!("cannot build upstream URI: {e}")))?;
        // The pool picks HTTP/1.1 or HTTP/2 per connection (ALPN); the request must not insist.
        parts.version = Version::HTTP_11;
        let sent_at = std::time::Instant::now();
        let sent = upstream.send(parts, body, &self.listener);
        let response = match tokio::time::timeout(self.response_timeout, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(upstream.failure(&error, &client_fault)),
            Err(_) => {
                return Err(ProxyError::UpstreamTimeout(format!(
                    "upstream {} sent no response within {:?}",
                    upstream.display, self.response_timeout
                )))
            }
        };
        outcome.upstream_time = Some(sent_at.elapsed());
        let (mut parts, body) = response.into_parts();
        // hyper reads such a body as chunked (RFC 9112 section 6.3) but keeps Content-Length,
        // which would go to the client beside a body of another length. Dropping the body
        // unread closes the upstream connection, whose framing is in doubt.
        if parts.headers.contains_key(hyper::header::TRANSFER_ENCODING)
            && parts.headers.contains_key(hyper::header::CONTENT_LENGTH)
        {
            return Err(ProxyError::Upstream(format!(
                "upstream {} sent a response with both Content-Length and Transfer-Encoding, which proxies and clients may frame differently (a response smuggling risk); it was refused and the connection closed",
                upstream.display
            )));
        }
        headers::remove_hop_by_hop(&mut parts.headers);
        // An HTTP/1.0 backend must not turn our HTTP/1.1 client's connection into 1.0.
        if parts.version == Version::HTTP_10 {
            parts.version = Version::HTTP_11;
        }
        let body = self
            .watch_for_refusal(
                upstream,
                &parts,
                body,
                connection.remote,
                &mut outcome.failed,
            )
            .await?;
        Ok(Response::from_parts(parts, body))
    }
}

/// Moves the Host decided by the header edits into the authority of the upstream URI, for a
/// pool that may speak HTTP/1.1 or HTTP/2 on the connection it picks (ALPN decides, after the
/// request is handed over). Over HTTP/2 the authority is sent as `:authority` and a `host`
/// field beside it is one too many (RFC 9113 section 8.3.1: nginx answers 400 "client sent
/// duplicate host header"); over HTTP/1.1 hyper-util writes Host from the URI (`set_host`),
/// so the header is removed here for both. The one change this makes is that HTTP/1.1 drops
/// an explicit default port (`:443`), which RFC 9110 section 4.2.3 says is the same origin.
///
/// None when no Host is to be sent (a rule removed it): the upstream's own authority is used.
fn host_as_authority(headers: &mut hyper::HeaderMap) -> Result<Option<Authority>, ProxyError> {
    let Some(host) = headers.remove(hyper::header::HOST) else {
        return Ok(None);
    };
    // Userinfo (`user@host`) parses as an authority but is no Host (RFC 9110 section 7.2).
    match Authority::try_from(host.as_bytes()) {
        Ok(authority) if !authority.as_str().contains('@') => Ok(Some(authority)),
        _ => Err(ProxyError::BadRequest(format!(
            "the Host to send upstream, {:?}, is not a valid host[:port]; check the request's Host and the listener's Host rule",
            String::from_utf8_lossy(host.as_bytes())
        ))),
    }
}

/// `uri` with another path (its query kept). The path is our canonical form of the request's
/// own, which decodes only unreserved characters, so a failure is ours.
fn with_path(uri: &Uri, path: &str) -> Result<Uri, ProxyError> {
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let cannot = |e: &dyn std::fmt::Display| {
        ProxyError::Internal(format!("cannot rewrite the request path to {path:?}: {e}"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(target).map_err(|e| cannot(&e))?);
    Uri::from_parts(parts).map_err(|e| cannot(&e))
}

/// A route's fixed answer: a redirect (3xx, the text is the Location) or a status with the
/// text as body, as nginx's `return` gives.
fn fixed_response(fixed: &FixedResponse) -> Response<ProxyBody> {
    let redirect = matches!(fixed.status, 301 | 302 | 303 | 307 | 308);
    let body = if redirect {
        Bytes::new()
    } else {
        Bytes::from(fixed.text.clone())
    };
    let mut response = Response::new(ProxyBody::local(body));
    *response.status_mut() = StatusCode::from_u16(fixed.status).unwrap_or(StatusCode::OK);
    let header = if redirect {
        hyper::header::LOCATION
    } else {
        hyper::header::CONTENT_TYPE
    };
    let value = if redirect {
        fixed.text.as_str()
    } else {
        "text/plain"
    };
    if let Ok(value) = hyper::header::HeaderValue::from_str(value) {
        if redirect || !fixed.text.is_empty() {
            response.headers_mut().insert(header, value);
        }
    }
    response
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn each_failure_is_answered_by_its_side() {
        let reason = || "why".to_string();
        for (error, status, side) in [
            (ProxyError::BadRequest(reason()), 400, Side::Downstream),
            (ProxyError::ClientBody(reason()), 400, Side::Downstream),
            (ProxyError::Forbidden(reason()), 403, Side::Downstream),
            (ProxyError::TooLarge(reason()), 413, Side::Downstream),
            (ProxyError::Internal(reason()), 500, Side::Internal),
            (ProxyError::Upstream(reason()), 502, Side::Upstream),
            (ProxyError::UpstreamBusy(reason()), 503, Side::Upstream),
            (ProxyError::UpstreamTimeout(reason()), 504, Side::Upstream),
        ] {
            assert_eq!(
                (error.status().as_u16(), error.side()),
                (status, side),
                "{error:?}"
            );
            assert_eq!(error.into_response().status().as_u16(), status);
        }
    }

    #[tokio::test]
    async fn an_internal_failure_keeps_its_reason_for_our_log() {
        let response =
            ProxyError::Internal("cannot build upstream URI: secret".into()).into_response();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            !String::from_utf8_lossy(&body).contains("secret"),
            "{body:?}"
        );
    }

    #[test]
    fn a_path_we_cannot_rewrite_is_our_failure() {
        let uri: Uri = "/a?b=c".parse().unwrap();
        assert_eq!(with_path(&uri, "/x").unwrap(), "/x?b=c");
        let error = with_path(&uri, "/with space").unwrap_err();
        assert_eq!(error.side(), Side::Internal, "{error}");
    }
}
