//! The request body on its way upstream, counted against `max_body_size` (nginx's
//! `client_max_body_size`) as it streams: a body announced too large is refused before it is
//! sent, and a chunked one that grows too large is cut off, the request failing with 413.

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    inner: Incoming,
    limit: Option<(u64, Exceeded)>,
    seen: u64,
}

/// Set when a body passed its limit. The upstream client may report the cut-off request as
/// a connection error rather than as our body error, so the proxy asks this instead.
#[derive(Clone, Default)]
pub struct Exceeded(Arc<AtomicBool>);

impl Exceeded {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl LimitedBody {
    /// The body, and (with a limit) the flag that tells whether it was cut off.
    pub fn new(inner: Incoming, limit: Option<u64>) -> (LimitedBody, Option<Exceeded>) {
        let limit = limit.map(|limit| (limit, Exceeded::default()));
        let exceeded = limit.as_ref().map(|(_, flag)| flag.clone());
        let body = LimitedBody {
            inner,
            limit,
            seen: 0,
        };
        (body, exceeded)
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let length = frame.data_ref().map_or(0, |d| d.len() as u64);
                self.seen += length;
                if let Some((limit, exceeded)) = &self.limit {
                    if self.seen > *limit {
                        exceeded.0.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(BodyError::TooLarge(*limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(BodyError::Client(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
