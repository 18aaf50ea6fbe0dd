//! Connections to the upstream: plain TCP or a Unix socket (server mode), TLS with our client
//! certificate (client mode), pooled by hyper-util's client.
//!
//! Each listener owns its own pool, so a pooled connection is only ever reused for the same
//! address, SNI, client certificate and verification settings.

use crate::config::HttpUpstream;
use crate::metrics::{ConnectionGauge, ListenerLabel, Metrics};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// The transport of one upstream connection.
enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One upstream connection of any kind, counted in `certgate_upstream_connections` while open.
pub struct UpstreamStream {
    transport: Transport,
    _open: ConnectionGauge,
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match &self.transport {
            Transport::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            _ => Connected::new(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $stream:ident => $call:expr) => {
        match &mut $self.get_mut().transport {
            Transport::Tcp($stream) => $call,
            Transport::Unix($stream) => $call,
            Transport::Tls($stream) => $call,
        }
    };
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Tcp(s) => s.is_write_vectored(),
            Transport::Unix(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Where and how a listener connects upstream, and where its connections are counted.
#[derive(Clone)]
pub struct Connector {
    target: Target,
    /// How long a connection (and its TLS handshake) may take.
    timeout: Duration,
    metrics: Arc<Metrics>,
    listener: ListenerLabel,
}

/// The upstream itself. The request URI only keys the pool; the target is fixed by the
/// configuration.
#[derive(Clone)]
enum Target {
    Tcp {
        authority: String,
    },
    Unix(PathBuf),
    Tls {
        authority: String,
        server_name: ServerName<'static>,
        tls: tokio_rustls::TlsConnector,
    },
}

impl Connector {
    pub fn plain(
        upstream: &HttpUpstream,
        timeout: Duration,
        metrics: Arc<Metrics>,
        listener: &str,
    ) -> Connector {
        let target = match upstream {
            HttpUpstream::Tcp { authority } => Target::Tcp {
                authority: authority.clone(),
            },
            HttpUpstream::Unix(path) => Target::Unix(path.clone()),
        };
        Connector {
            target,
            timeout,
            metrics,
            listener: Metrics::listener(listener),
        }
    }

    pub fn tls(
        authority: &str,
        server_name: ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
        metrics: Arc<Metrics>,
        listener: &str,
    ) -> Connector {
        let target = Target::Tls {
            authority: authority.to_string(),
            server_name,
            tls: tokio_rustls::TlsConnector::from(config),
        };
        Connector {
            target,
            timeout,
            metrics,
            listener: Metrics::listener(listener),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.target, Target::Tls { .. })
    }

    async fn connect(self) -> io::Result<TokioIo<UpstreamStream>> {
        let started = std::time::Instant::now();
        let transport = match self.target {
            Target::Tcp { authority } => Transport::Tcp(tcp(&authority).await?),
            Target::Unix(path) => {
                Transport::Unix(UnixStream::connect(&path).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("unix socket {}: {e}", path.display()))
                })?)
            }
            Target::Tls {
                authority,
                server_name,
                tls,
            } => {
                let tcp = tcp(&authority).await?;
                Transport::Tls(Box::new(tls.connect(server_name, tcp).await?))
            }
        };
        self.metrics
            .upstream_connect_duration
            .get_or_create(&self.listener)
            .observe(started.elapsed().as_secs_f64());
        let gauge = self
            .metrics
            .upstream_connections
            .get_or_create_owned(&self.listener);
        Ok(TokioIo::new(UpstreamStream {
            transport,
            _open: ConnectionGauge::open(gauge),
        }))
    }
}

async fn tcp(authority: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let timeout = connector.timeout;
            match tokio::time::timeout(timeout, connector.connect()).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                )),
            }
        })
    }
}
