//! The per-request work of a listener: edit headers, forward upstream, stream the answer back.

pub mod headers;
pub mod upstream;

use crate::config::{ListenerConfig, ModeConfig};
use crate::tls::explain;
use crate::tls::identity::{ClientVerdict, PeerIdentity};
use bytes::Bytes;
use headers::HeaderEdits;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use upstream::Connector;

pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What the TLS handshake of a server-mode connection established.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub protocol: &'static str,
    pub cipher: &'static str,
    pub verdict: ClientVerdict,
    pub peer: Option<PeerIdentity>,
}

/// One accepted downstream connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// Present in server mode.
    pub tls: Option<TlsInfo>,
}

/// Which side failed, so the status code and log reason follow from one match.
#[derive(Debug)]
pub enum ProxyError {
    /// The upstream could not be reached or failed mid-request.
    Upstream(String),
}

impl ProxyError {
    fn into_response(self) -> Response<ProxyBody> {
        let (status, reason) = match self {
            ProxyError::Upstream(reason) => (StatusCode::BAD_GATEWAY, reason),
        };
        let mut response = Response::new(
            Full::new(Bytes::from(format!("{reason}\n")))
                .map_err(|never| match never {})
                .boxed(),
        );
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A listener's request handler: header edits and an upstream pool.
pub struct Proxy {
    pub listener: String,
    edits: HeaderEdits,
    client: Client<Connector, Incoming>,
    /// Scheme and authority of upstream request URIs (they key the pool).
    upstream_base: String,
    upstream_display: String,
}

impl Proxy {
    pub fn new(listener: &ListenerConfig, client_tls: Option<Arc<rustls::ClientConfig>>) -> Proxy {
        let (connector, upstream_base) = match (&listener.mode, client_tls) {
            (ModeConfig::Client(client), Some(tls)) => (
                Connector::tls(&client.upstream_authority, client.server_name.clone(), tls),
                format!("https://{}", client.upstream_authority),
            ),
            (ModeConfig::Server(server), _) => (
                Connector::plain(&server.upstream),
                match &server.upstream {
                    crate::config::HttpUpstream::Tcp { authority } => format!("http://{authority}"),
                    crate::config::HttpUpstream::Unix(_) => "http://unix-socket".to_string(),
                },
            ),
            (ModeConfig::Client(_), None) => unreachable!("client mode always has a TLS config"),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Proxy {
            listener: listener.name.clone(),
            edits: HeaderEdits::new(listener),
            client,
            upstream_base,
            upstream_display: listener.upstream_display(),
        }
    }

    /// Forwards one request; never fails, answering 502 with the reason instead.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        connection: Arc<ConnectionInfo>,
    ) -> Result<Response<ProxyBody>, std::convert::Infallible> {
        Ok(match self.forward(request, &connection).await {
            Ok(response) => response,
            Err(error) => {
                let ProxyError::Upstream(reason) = &error;
                tracing::warn!(
                    "listener \"{}\": request from {} failed: {reason}",
                    self.listener,
                    connection.remote
                );
                error.into_response()
            }
        })
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        connection: &ConnectionInfo,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        self.edits.apply(&mut parts, connection);
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = format!("{}{}", self.upstream_base, path)
            .parse::<Uri>()
            .map_err(|e| ProxyError::Upstream(format!("cannot build upstream URI: {e}")))?;
        // The pool picks HTTP/1.1 or HTTP/2 per connection (ALPN); the request must not insist.
        parts.version = Version::HTTP_11;
        let response = self
            .client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|e| ProxyError::Upstream(self.explain(&e)))?;
        let (mut parts, body) = response.into_parts();
        headers::remove_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.boxed()))
    }

    /// One line an operator can act on, naming the upstream.
    fn explain(&self, error: &hyper_util::client::legacy::Error) -> String {
        let upstream = &self.upstream_display;
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
