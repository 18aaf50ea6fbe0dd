//! Connections to the upstream: plain TCP or a Unix socket (server mode), TLS with our client
//! certificate (client mode), pooled by hyper-util's client.
//!
//! Each listener owns its own pool, so a pooled connection is only ever reused for the same
//! address, SNI, client certificate and verification settings.
//!
//! A pool opens at most `upstream_max_connections` connections: each new one takes a slot
//! that its stream holds until the connection closes. A request that finds every slot taken
//! waits (up to `upstream_queue_timeout`) while hyper-util's pool races that wait against
//! the checkout of a connection that comes idle, so it is served on the first one freed.

use crate::config::{HttpUpstream, ListenerConfig};
use crate::metrics::{ConnectionGauge, ListenerLabel, Metrics};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The transport of one upstream connection.
enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One upstream connection of any kind, counted in `certgate_upstream_connections` while open.
pub struct UpstreamStream {
    transport: Transport,
    /// What the connection has carried, for telling a stale pooled connection apart.
    carried: Carried,
    _open: ConnectionGauge,
    /// The pool's connection slot, returned when hyper drops the connection (closed, failed,
    /// idle too long, or given up mid-response because the request was cancelled).
    _slot: Option<OwnedSemaphorePermit>,
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match &self.transport {
            Transport::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            // HTTP/1 only: one exchange at a time, so the record says how far the current
            // request got. An HTTP/2 server announces its close (GOAWAY) instead.
            _ => Connected::new().extra(self.carried.clone()),
        }
    }
}

/// What an HTTP/1 upstream connection has carried: how many exchanges (a request and its
/// response) it has begun, and how many bytes the latest one wrote and read. HTTP/1.1 sends
/// one request at a time, so a write after a read begins the next exchange.
///
/// A backend may close a kept-alive connection just as certgate sends the next request on it
/// (its keep-alive timeout or request limit ran out; the FIN crosses the request). Such a
/// failure is told apart by this record: the connection had carried an exchange before,
/// and not one byte of the answer came.
#[derive(Clone, Default)]
pub struct Carried(Arc<CarriedCounts>);

#[derive(Default)]
struct CarriedCounts {
    exchanges: AtomicU32,
    written: AtomicU64,
    read: AtomicU64,
    /// The last transfer was a read, or none has happened yet, so the next write begins an
    /// exchange.
    written_since_read: AtomicBool,
}

impl Carried {
    fn writing(&self) {
        let counts = &self.0;
        if !counts.written_since_read.swap(true, Ordering::Relaxed) {
            counts.exchanges.fetch_add(1, Ordering::Relaxed);
            counts.written.store(0, Ordering::Relaxed);
            counts.read.store(0, Ordering::Relaxed);
        }
    }

    fn wrote(&self, bytes: usize) {
        self.0.written.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn read(&self, bytes: usize) {
        if bytes > 0 {
            self.0.read.fetch_add(bytes as u64, Ordering::Relaxed);
            self.0.written_since_read.store(false, Ordering::Relaxed);
        }
    }
}

/// How far a request got that failed on a connection the pool had used before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleConnection {
    /// No byte of the request was written: the backend cannot have seen it.
    Unsent,
    /// The request was written, and no byte of an answer came.
    Unanswered,
}

impl StaleConnection {
    /// Whether `error` is the failure of a request on a reused HTTP/1 connection before any
    /// byte of its response arrived, and how much of the request was sent.
    pub fn find(error: &hyper_util::client::legacy::Error) -> Option<StaleConnection> {
        let mut extras = hyper::http::Extensions::new();
        error.connect_info()?.get_extras(&mut extras);
        let counts = &extras.get::<Carried>()?.0;
        let reused = counts.exchanges.load(Ordering::Relaxed) > 1;
        if !reused || counts.read.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(match counts.written.load(Ordering::Relaxed) {
            0 => StaleConnection::Unsent,
            _ => StaleConnection::Unanswered,
        })
    }
}

/// Calls the transport's own method; `$transport` is a `&Transport` or `&mut Transport`.
macro_rules! delegate {
    ($transport:expr, $stream:ident => $call:expr) => {
        match $transport {
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
        let before = buf.filled().len();
        let this = self.get_mut();
        let polled = delegate!(&mut this.transport, s => Pin::new(s).poll_read(cx, buf));
        if let Poll::Ready(Ok(())) = polled {
            this.carried.read(buf.filled().len() - before);
        }
        polled
    }
}

impl UpstreamStream {
    /// A write to the transport, recorded in [`Carried`].
    fn counted_write(
        &mut self,
        write: impl FnOnce(&mut Transport) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.carried.writing();
        let polled = write(&mut self.transport);
        if let Poll::Ready(Ok(written)) = polled {
            self.carried.wrote(written);
        }
        polled
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .counted_write(|transport| delegate!(transport, s => Pin::new(s).poll_write(cx, buf)))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(&mut self.get_mut().transport, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(&mut self.get_mut().transport, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().counted_write(
            |transport| delegate!(transport, s => Pin::new(s).poll_write_vectored(cx, bufs)),
        )
    }

    fn is_write_vectored(&self) -> bool {
        delegate!(&self.transport, s => s.is_write_vectored())
    }
}

/// Where and how a listener connects upstream, and where its connections are counted.
#[derive(Clone)]
pub struct Connector {
    target: Target,
    /// How long a connection (and its TLS handshake) may take.
    timeout: Duration,
    limit: ConnectionLimit,
    metrics: Arc<Metrics>,
    listener: ListenerLabel,
}

/// How many connections one upstream pool may have open at once, and how long a request
/// waits for a slot when all are taken. A hostile client must not be able to make certgate
/// open a backend connection per request it starts: opening and resetting HTTP/2 streams
/// costs the client nothing, while each backend connection costs the backend a socket and
/// often a worker.
#[derive(Clone)]
pub struct ConnectionLimit {
    /// None: no limit (`upstream_max_connections = 0`).
    slots: Option<Arc<Semaphore>>,
    max: usize,
    queue_timeout: Duration,
}

impl ConnectionLimit {
    /// A new, unshared set of slots: each upstream pool gets its own, because a slot held by
    /// one pool's idle connection cannot serve a request of another pool.
    pub fn new(max: Option<usize>, queue_timeout: Duration) -> ConnectionLimit {
        ConnectionLimit {
            slots: max.map(|max| Arc::new(Semaphore::new(max))),
            max: max.unwrap_or(0),
            queue_timeout,
        }
    }

    /// A slot for one new connection, once one is free.
    async fn acquire(&self) -> io::Result<Option<OwnedSemaphorePermit>> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        match tokio::time::timeout(self.queue_timeout, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // The semaphore is never closed; treat it as busy should that change.
            Ok(Err(_)) | Err(_) => Err(io::Error::other(AllConnectionsBusy {
                limit: self.max,
                waited: self.queue_timeout,
            })),
        }
    }
}

/// A request found all of its upstream's connections in use and none came free in time.
#[derive(Debug, thiserror::Error)]
#[error("all {limit} connections allowed by upstream_max_connections are in use and none came free within {waited:?}")]
pub struct AllConnectionsBusy {
    pub limit: usize,
    pub waited: Duration,
}

impl AllConnectionsBusy {
    /// The one in an error's chain, if that is why it failed.
    pub fn find<'e>(
        error: &'e (dyn std::error::Error + 'static),
    ) -> Option<&'e AllConnectionsBusy> {
        crate::tls::explain::find_in_chain(error)
    }
}

/// The upstream itself. The request URI only keys the pool; the target is fixed by the
/// configuration.
#[derive(Clone)]
pub enum Target {
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

impl Target {
    /// Server mode's upstream: TCP or a Unix socket.
    pub fn plain(upstream: &HttpUpstream) -> Target {
        match upstream {
            HttpUpstream::Tcp { authority } => Target::Tcp {
                authority: authority.clone(),
            },
            HttpUpstream::Unix(path) => Target::Unix(path.clone()),
        }
    }

    /// Client mode's upstream: TLS to `authority` with our client certificate in `config`.
    pub fn tls(
        authority: &str,
        server_name: ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
    ) -> Target {
        Target::Tls {
            authority: authority.to_string(),
            server_name,
            tls: tokio_rustls::TlsConnector::from(config),
        }
    }
}

impl Connector {
    /// Connections to `target` for one pool of `listener`: its connect timeout and its own
    /// connection limit, counted in `metrics`.
    pub fn new(target: Target, listener: &ListenerConfig, metrics: &Arc<Metrics>) -> Connector {
        Connector {
            target,
            timeout: listener.connect_timeout,
            limit: ConnectionLimit::new(
                listener.upstream_max_connections,
                listener.upstream_queue_timeout,
            ),
            metrics: metrics.clone(),
            listener: Metrics::listener(&listener.name),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.target, Target::Tls { .. })
    }

    async fn connect(
        self,
        slot: Option<OwnedSemaphorePermit>,
    ) -> io::Result<TokioIo<UpstreamStream>> {
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
            carried: Carried::default(),
            _open: ConnectionGauge::open(gauge),
            _slot: slot,
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
            // The wait for a slot has its own timeout: a busy upstream is not a slow one.
            let slot = connector.limit.acquire().await?;
            let timeout = connector.timeout;
            match tokio::time::timeout(timeout, connector.connect(slot)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                )),
            }
        })
    }
}
