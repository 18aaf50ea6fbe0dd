//! The bodies a proxy passes on. The request body on its way upstream is counted against
//! `max_body_size` (nginx's `client_max_body_size`) as it streams: a body announced too large
//! is refused before it is sent, and a chunked one that grows too large is cut off, the request
//! failing with 413. A body the client breaks (bad chunked framing, a reset stream) fails the
//! request with 400: the body records either fault so that it is not blamed on the upstream.
//! The response body is the upstream's, streamed, or one the proxy wrote.

use crate::tls::explain;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

/// Why a request body stopped.
#[derive(Debug)]
pub enum BodyError {
    Client(hyper::Error),
    /// The body passed the listener's limit (bytes).
    TooLarge(u64),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Client(error) => write!(f, "reading the request body: {error}"),
            BodyError::TooLarge(limit) => {
                write!(f, "request body larger than max_body_size ({limit} bytes)")
            }
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Client(error) => Some(error),
            BodyError::TooLarge(_) => None,
        }
    }
}

/// A request body with an optional size limit; without one it only passes frames through.
pub struct LimitedBody {
    /// None: an empty body, as a request without one is sent again on a fresh connection.
    inner: Option<Incoming>,
    limit: Option<u64>,
    seen: u64,
    fault: ClientFault,
}

/// What the client did wrong with its body, recorded by the body as it happens. hyper's
/// client reports a failed request body as its own error ("error from user's Body stream"),
/// or as a connection error when the upstream connection is torn down over it, so the proxy
/// asks this, not the upstream error, whose fault the failure was.
#[derive(Clone, Default)]
pub struct ClientFault(Arc<OnceLock<BodyFault>>);

/// Why the client's body was refused; the first fault is the one kept.
#[derive(Debug, Clone)]
pub enum BodyFault {
    /// The body passed the listener's `max_body_size` (bytes) and was cut off.
    TooLarge(u64),
    /// The body could not be read from the client; the text says why, for the log.
    Unreadable(String),
}

impl ClientFault {
    pub fn get(&self) -> Option<&BodyFault> {
        self.0.get()
    }

    fn record(&self, fault: BodyFault) {
        let _ = self.0.set(fault);
    }
}

/// A failed read of the client's body, in words: malformed framing (hyper's chunked decoder
/// says InvalidInput or InvalidData) is told apart from a body that broke off (a closed
/// connection, a reset HTTP/2 stream), which is the client's doing too but not malformed.
fn unreadable(error: &hyper::Error) -> String {
    let detail = super::error_chain(error);
    match explain::find_io_kind(error) {
        Some(io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData) => {
            format!("the client sent a malformed request body ({detail})")
        }
        _ => format!("the client's request body broke off ({detail})"),
    }
}

impl LimitedBody {
    /// The body, and the record of what the client did wrong with it, if anything.
    pub fn new(inner: Incoming, limit: Option<u64>) -> (LimitedBody, ClientFault) {
        let fault = ClientFault::default();
        let body = LimitedBody {
            inner: Some(inner),
            limit,
            seen: 0,
            fault: fault.clone(),
        };
        (body, fault)
    }

    /// An empty body, to send again a request that had none.
    pub fn empty() -> LimitedBody {
        LimitedBody {
            inner: None,
            limit: None,
            seen: 0,
            fault: ClientFault::default(),
        }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(inner) = &mut self.inner else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let length = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.seen += length;
                if let Some(limit) = self.limit.filter(|limit| self.seen > *limit) {
                    self.fault.record(BodyFault::TooLarge(limit));
                    return Poll::Ready(Some(Err(BodyError::TooLarge(limit))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                self.fault.record(BodyFault::Unreadable(unreadable(&error)));
                Poll::Ready(Some(Err(BodyError::Client(error))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

/// A response body on its way to the client. An enum, not a boxed body: answering costs no
/// allocation for the body, and the compiler sees through each poll.
pub enum ProxyBody {
    /// The upstream's body, streamed as it arrives.
    Upstream(Incoming),
    /// One the proxy wrote (an error, a route's fixed answer) or read whole (a refusal page).
    Local(Full<Bytes>),
}

impl ProxyBody {
    pub fn local(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Local(Full::new(bytes.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
            ProxyBody::Local(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(body) => body.is_end_stream(),
            ProxyBody::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(body) => body.size_hint(),
            ProxyBody::Local(body) => body.size_hint(),
        }
    }
}
