//! One downstream HTTP connection, from its first byte to its close, with a deadline on every
//! wait: the first request must arrive within `client_header_timeout`, an idle HTTP/1.1
//! connection is closed after `keepalive_timeout`, an idle HTTP/2 one gets GOAWAY after
//! `http2_idle_timeout`, and a request head is capped at `max_header_size`. A silent client
//! therefore holds a descriptor for a bounded time, and when the descriptors run out the
//! listener sheds the connections idle longest ([`OpenConnections::shed_idle`]), as nginx
//! reuses its idle keep-alive connections.
//!
//! The listener's HTTP handler (`proxy/handler.rs`) and the admin listener both serve
//! through [`HttpServer`].

use crate::config::ClientLimits;
use crate::listener::Downstream;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How long a connection told to close (idle, shed or draining) may take to say goodbye
/// (an HTTP/2 GOAWAY, the end of a response) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A byte stream a connection is served on: TCP, or TLS over it.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}

impl<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Stream for IO {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What answers a connection's requests (a listener's proxy, the admin routes).
pub trait HttpService<B>:
    Service<
        Request<Incoming>,
        Response = Response<B>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: Service<
            Request<Incoming>,
            Response = Response<B>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Send
        + 'static
{
}

/// The body of a response a connection sends.
pub trait ResponseBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

impl<B: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static> ResponseBody for B {}

/// HTTP/1.1 and HTTP/2 server settings for one listener, and the limits its connections live by.
pub struct HttpServer {
    builder: auto::Builder<TokioExecutor>,
    limits: ClientLimits,
}

/// Why a connection was closed by us rather than by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The peer closed it, or it ended normally.
    ByPeer,
    /// No request within `client_header_timeout`.
    NoRequest,
    /// Idle past `keepalive_timeout` / `http2_idle_timeout`.
    Idle,
    /// Closed to free a descriptor for a new client.
    Shed,
    /// The listener is shutting down.
    Drained,
}

impl HttpServer {
    pub fn new(limits: &ClientLimits) -> HttpServer {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // Deadlines are ours (see `serve`): hyper's own header timeout would also cut
            // idle keep-alive connections, at its own time rather than keepalive_timeout.
            .header_read_timeout(None)
            .keep_alive(limits.keepalive_timeout.is_some())
            // The read buffer bounds the request head (a larger one gets 431), and so what an
            // unfinished head can cost; bodies stream through it in pieces.
            .max_buf_size(limits.max_header_size.max(MIN_READ_BUFFER));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
            .keep_alive_interval(limits.http2_ping_interval);
        HttpServer {
            builder,
            limits: *limits,
        }
    }

    /// Serves an accepted connection with `service`, registered in `open` so that it can be
    /// shed while idle. Each stream type gets its own hyper connection: no dispatch per read
    /// or write.
    pub async fn serve_accepted<S, B>(
        &self,
        stream: Downstream,
        open: &OpenConnections,
        service: S,
        drain: watch::Receiver<bool>,
    ) -> (Closed, Result<(), BoxError>)
    where
        S: HttpService<B>,
        B: ResponseBody,
    {
        let activity = Activity::new();
        let _registered = open.register(activity.clone());
        match stream {
            Downstream::Tls(tls) => self.serve(tls, service, activity, drain).await,
            Downstream::Plain(tcp) => self.serve(tcp, service, activity, drain).await,
        }
    }

    /// Serves one connection until the peer closes it or a deadline, the shedder or `drain`
    /// closes it.
    async fn serve<IO: Stream, S, B>(
        &self,
        io: IO,
        service: S,
        activity: Arc<Activity>,
        mut drain: watch::Receiver<bool>,
    ) -> (Closed, Result<(), BoxError>)
    where
        S: HttpService<B>,
        B: ResponseBody,
    {
        let tracked = Tracked {
            inner: service,
            activity: activity.clone(),
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(Lingering::new(io)), tracked);
        tokio::pin!(connection);
        // Set once we asked the connection to close: why, and until when it may take.
        let mut closing: Option<(Closed, Instant)> = None;
        loop {
            let deadline = match closing {
                Some((_, until)) => until,
                None => activity.deadline(&self.limits),
            };
            tokio::select! {
                result = connection.as_mut() => {
                    let why = closing.map(|(why, _)| why).unwrap_or(Closed::ByPeer);
                    return (why, result);
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if let Some((why, _)) = closing {
                        return (why, Ok(()));
                    }
                    if Instant::now() < activity.deadline(&self.limits) {
                        continue; // a request came or went meanwhile
                    }
                    // HTTP/2 peers are told with GOAWAY; HTTP/1.1 ones see the close.
                    let why = match activity.served_any() {
                        true => Closed::Idle,
                        false => Closed::NoRequest,
                    };
                    connection.as_mut().graceful_shutdown();
                    closing = Some((why, Instant::now() + CLOSE_GRACE));
                }
                // The first request replaces client_header_timeout with the idle timeouts,
                // which may be shorter.
                _ = activity.first_request.notified(), if closing.is_none() => {}
                _ = activity.shed.notified() => {
                    if activity.is_idle() {
                        return (Closed::Shed, Ok(()));
                    }
                }
                _ = drain.changed(), if closing.is_none() => {
                    // A dropped sender means the listener is gone: drain as well.
                    connection.as_mut().graceful_shutdown();
                    closing = Some((Closed::Drained, far_future()));
                }
            }
        }
    }
}

/// The drain deadline is the listener's (it aborts what is left); ours must not fire first.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

/// How long a connection we closed is still read (and the bytes dropped) so that the peer
/// sees our last response rather than a reset (nginx's lingering close, `lingering_timeout`).
const LINGER: Duration = Duration::from_secs(5);

/// A connection's stream that, once we have shut down our side (after a 413 or 400 with the
/// request body unread, say), keeps reading what the peer still sends for up to [`LINGER`]
/// before closing. A socket closed under a client still writing its body answers with a
/// reset, and many clients (hyper's, for one) then report the broken write rather than the
/// response waiting for them.
struct Lingering<IO: Stream> {
    io: Option<IO>,
    shut_down: bool,
}

impl<IO: Stream> Lingering<IO> {
    fn new(io: IO) -> Self {
        Lingering {
            io: Some(io),
            shut_down: false,
        }
    }

    fn io(&mut self) -> Pin<&mut IO> {
        Pin::new(self.io.as_mut().expect("present until dropped"))
    }
}

impl<IO: Stream> Drop for Lingering<IO> {
    fn drop(&mut self) {
        // Only a close of ours lingers: when the peer closed, or we dropped a silent or shed
        // connection, there is nothing it still needs to read.
        let (Some(mut io), true) = (self.io.take(), self.shut_down) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut discard = [0u8; 4096];
            let until = tokio::time::Instant::now() + LINGER;
            while let Ok(Ok(n)) = tokio::time::timeout_at(until, io.read(&mut discard)).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

impl<IO: Stream> tokio::io::AsyncRead for Lingering<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl<IO: Stream> tokio::io::AsyncWrite for Lingering<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = self.io().poll_shutdown(cx);
        if result.is_ready() {
            self.shut_down = true;
        }
        result
    }
}

/// hyper's smallest read buffer.
const MIN_READ_BUFFER: usize = 8192;

/// What a connection is doing, shared by its watchdog, its requests and the shedder.
pub struct Activity {
    started: Instant,
    /// Requests whose response has not finished (or been dropped).
    in_flight: AtomicUsize,
    /// Milliseconds after `started` when the connection last became idle.
    idle_since_ms: AtomicU64,
    served_any: AtomicBool,
    first_request: Notify,
    http2: AtomicBool,
    /// Close now if idle: the listener is out of descriptors.
    shed: Notify,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            served_any: AtomicBool::new(false),
            first_request: Notify::new(),
            http2: AtomicBool::new(false),
            shed: Notify::new(),
        })
    }

    fn served_any(&self) -> bool {
        self.served_any.load(Ordering::Acquire)
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn idle_since(&self) -> Instant {
        self.started + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// When the connection is to be closed if nothing happens until then.
    fn deadline(&self, limits: &ClientLimits) -> Instant {
        let now = Instant::now();
        if !self.served_any() {
            return self.started + limits.header_timeout;
        }
        let idle_timeout = if self.http2.load(Ordering::Relaxed) {
            limits.http2_idle_timeout
        } else {
            // Without keep-alive hyper closes after the response; this is only a backstop.
            limits.keepalive_timeout.unwrap_or(limits.header_timeout)
        };
        if !self.is_idle() {
            // Busy: look again a timeout from now (the request may end before).
            return now + idle_timeout;
        }
        self.idle_since() + idle_timeout
    }

    fn begin(self: &Arc<Self>, request: &Request<Incoming>) -> InFlight {
        if request.version() == hyper::Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if !self.served_any.swap(true, Ordering::AcqRel) {
            self.first_request.notify_one();
        }
        InFlight(self.clone())
    }
}

/// One request of a connection, until its response body is done or dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = activity.started.elapsed().as_millis() as u64;
        activity.idle_since_ms.fetch_max(now, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The listener's service, counting each request in flight until its response ends.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body + Unpin,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        // Taken before the handler runs, so a request dropped half-way (a reset stream) ends
        // it as well.
        let in_flight = self.activity.begin(&request);
        TrackedFuture {
            response: self.inner.call(request),
            in_flight: Some(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's response on its way, wrapped in place: no box per request. The request
    /// counts as in flight until its response body is done or dropped.
    pub struct TrackedFuture<F> {
        #[pin]
        response: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> std::future::Future for TrackedFuture<F>
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.response.poll(cx))?;
        let in_flight = this
            .in_flight
            .take()
            .expect("TrackedFuture polled after completion");
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            inner: body,
            _in_flight: in_flight,
        })))
    }
}

/// A response body that keeps its request in flight until it is done.
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The open connections of a listener, so that the idlest can be closed when the process
/// runs out of descriptors. Touched once when a connection opens and once when it closes,
/// never per request.
#[derive(Default)]
pub struct OpenConnections {
    open: Mutex<BTreeMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// A connection's place in [`OpenConnections`], given up when dropped.
pub struct Registration<'a> {
    table: &'a OpenConnections,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.table
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl OpenConnections {
    pub fn register(&self, activity: Arc<Activity>) -> Registration<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, activity);
        Registration { table: self, id }
    }

    /// Asks up to `count` idle connections, idle longest first, to close; returns how many.
    pub fn shed_idle(&self, count: usize) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut idle: Vec<&Arc<Activity>> = open.values().filter(|a| a.is_idle()).collect();
        idle.sort_by_key(|a| a.idle_since());
        for activity in idle.iter().take(count) {
            activity.shed.notify_one();
        }
        idle.len().min(count)
    }
}

/// Whether an accept error means the process or system is out of descriptors (or memory for
/// sockets), which closing idle connections relieves.
pub fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
