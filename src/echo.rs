//! A tiny HTTP backend that answers with what it received: the demo's backend and the tests'.
//!
//! The answer is plain text: the request line, one `name: value` line per header, then
//! `body-bytes: N`. Bodies are counted as they stream and never held in memory.
//! `GET /bytes/N` answers N zero bytes instead, streamed, for download tests and benchmarks.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpListener;

/// A body of `remaining` zero bytes, produced in 64 KiB chunks as the peer reads them.
pub struct Zeros {
    pub remaining: u64,
}

static ZERO_CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let size = self.remaining.min(ZERO_CHUNK.len() as u64) as usize;
        self.remaining -= size as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            &ZERO_CHUNK[..size],
        )))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

type EchoBody = BoxBody<Bytes, Infallible>;

/// Describes a request (headers in arrival order per name) after draining its body.
async fn echo(request: Request<Incoming>) -> Result<Response<EchoBody>, hyper::Error> {
    if let Some(size) = request.uri().path().strip_prefix("/bytes/") {
        if let Ok(remaining) = size.parse::<u64>() {
            return Ok(Response::new(Zeros { remaining }.boxed()));
        }
    }
    let mut text = format!(
        "{} {} {:?}\n",
        request.method(),
        request.uri(),
        request.version()
    );
    for (name, value) in request.headers() {
        text.push_str(name.as_str());
        text.push_str(": ");
        text.push_str(&String::from_utf8_lossy(value.as_bytes()));
        text.push('\n');
    }
    let mut body = request.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            received += data.len() as u64;
        }
    }
    text.push_str(&format!("body-bytes: {received}\n"));
    Ok(Response::new(Full::new(Bytes::from(text)).boxed()))
}

/// Serves the echo backend on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(echo))
                .await;
        });
    }
}

/// The value of one header in an echo answer (the first, if repeated).
pub fn header<'a>(echoed: &'a str, name: &str) -> Option<&'a str> {
    echoed.lines().find_map(|line| {
        let (key, value) = line.split_once(": ")?;
        key.eq_ignore_ascii_case(name).then_some(value)
    })
}
