//! The upstream pool under hostile load: a reset HTTP/2 stream cancels its backend request,
//! and `upstream_max_connections` bounds how many connections certgate opens to a backend.
//! And under a backend that closes kept-alive connections: a request that meets the close is
//! sent again only when that is safe.

mod support;

use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend that reads requests and answers them only after `answer_all`, counting its
/// connections: how many are open, the most ever open at once, and how many have closed.
/// It keeps reading while it holds a request, so it notices a close at once.
struct SlowBackend {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    answer: tokio::sync::watch::Sender<bool>,
}

impl SlowBackend {
    async fn start() -> SlowBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (answer, answering) = tokio::sync::watch::channel(false);
        let backend = SlowBackend {
            address: listener.local_addr().unwrap(),
            requests: Arc::default(),
            accepted: Arc::default(),
            open: Arc::default(),
            most_open: Arc::default(),
            closed: Arc::default(),
            answer,
        };
        let (requests, accepted, open, most_open, closed) = (
            backend.requests.clone(),
            backend.accepted.clone(),
            backend.open.clone(),
            backend.most_open.clone(),
            backend.closed.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                // On loopback the FIN of a connection certgate closed arrives before the SYN of
                // the one it opens next; yielding lets the runtime poll its IO driver, so the
                // old connection's task sees its close before the new one is counted.
                tokio::task::yield_now().await;
                let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                most_open.fetch_max(now_open, Ordering::SeqCst);
                let (requests, open, closed) = (requests.clone(), open.clone(), closed.clone());
                let answering = answering.clone();
                tokio::spawn(async move {
                    serve_slowly(stream, &requests, answering).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        backend
    }

    fn upstream(&self) -> String {
        format!("http://{}", self.address)
    }

    /// From now on, answer every request (held ones first).
    fn answer_all(&self) {
        self.answer.send_replace(true);
    }
}

/// Serves one connection until the peer closes it: each request (a head without body, as the
/// tests send) is answered once `answering` is true.
async fn serve_slowly(
    mut stream: tokio::net::TcpStream,
    requests: &AtomicUsize,
    mut answering: tokio::sync::watch::Receiver<bool>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            buffer.drain(..end + 4);
            requests.fetch_add(1, Ordering::SeqCst);
            // Hold the request, still reading, so that a close is seen while waiting.
            loop {
                tokio::select! {
                    open = answering.wait_for(|answer| *answer) => {
                        if open.is_err() {
                            return;
                        }
                        break;
                    }
                    read = stream.read(&mut chunk) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    },
                }
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Waits (generously) until `what` holds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Server mode ("edge") in front of `backend`, with `extra` flags.
fn server_mode(files: &Files, backend: &SlowBackend, extra: &[&str]) -> Certgate {
    one_pool(files, &backend.upstream(), extra)
}

/// Server mode towards `upstream` on one worker: these tests count the connections of one
/// upstream pool, and each worker has its own.
fn one_pool(files: &Files, upstream: &str, extra: &[&str]) -> Certgate {
    let mut args = server_mode_args(files, upstream, extra);
    args.extend(["--workers".to_string(), "1".to_string()]);
    Certgate::start(&args)
}

/// An HTTP/2 connection to server mode over mTLS (ALPN h2).
async fn http2_connection(
    address: SocketAddr,
    pki: &TestPki,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

fn get(path: &str) -> hyper::Request<http_body_util::Empty<Bytes>> {
    hyper::Request::get(format!("https://localhost{path}"))
        .body(http_body_util::Empty::new())
        .unwrap()
}

/// PKI files for one test.
fn pki_files() -> (Files, TestPki) {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    (files, pki)
}

#[tokio::test]
async fn a_reset_http2_stream_closes_its_backend_connection() {
    let (files, pki) = pki_files();
    let backend = SlowBackend::start().await;
    let server = server_mode(&files, &backend, &[]);
    let mut sender = http2_connection(server.addr(), &pki).await;

    // Dropping the response future makes hyper reset the stream (RST_STREAM, CANCEL).
    let response = sender.send_request(get("/slow"));
    tokio::select! {
        answer = response => panic!("the backend never answers, yet: {answer:?}"),
        _ = eventually("the backend holds the request", || {
            backend.requests.load(Ordering::SeqCst) == 1
        }) => {}
    }
    eventually("the backend sees its connection closed", || {
        backend.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(backend.open.load(Ordering::SeqCst), 0);
    // The HTTP/2 connection itself lives on.
    sender
        .ready()
        .await
        .expect("the client connection is still usable");
}

/// Starts `count` HTTP/1.1 GETs to server mode at once, each on its own mTLS connection;
/// each task returns its answer and how long it took.
fn concurrent_gets(
    address: SocketAddr,
    pki: &TestPki,
    count: usize,
) -> Vec<tokio::task::JoinHandle<(Answer, Duration)>> {
    (0..count)
        .map(|_| {
            let client = pki.client_config();
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = https_get(address, client, "/slow", &[]).await.unwrap();
                (answer, started.elapsed())
            })
        })
        .collect()
}

#[tokio::test]
async fn requests_beyond_the_connection_limit_wait_then_get_503() {
    let (files, pki) = pki_files();
    let backend = SlowBackend::start().await;
    let server = server_mode(
        &files,
        &backend,
        &[
            "--upstream-max-connections",
            "4",
            "--upstream-queue-timeout",
            "1s",
        ],
    );
    let mut requests = concurrent_gets(server.addr(), &pki, 20);

    // The backend holds 4; the other 16 wait for one of those, in vain, and get 503.
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused < 16 {
        let finished = requests.iter().position(|r| r.is_finished());
        let Some(index) = finished else {
            assert!(
                Instant::now() < deadline,
                "only {refused} requests were refused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (answer, took) = requests.swap_remove(index).await.unwrap();
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(
            answer.body.contains(&format!(
                "upstream {} is at its connection limit: all 4 connections",
                backend.upstream()
            )),
            "{}",
            answer.body
        );
        assert!(
            took >= Duration::from_secs(1),
            "answered before waiting: {took:?}"
        );
        refused += 1;
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 4);
    assert!(backend.most_open.load(Ordering::SeqCst) <= 4);
    server.wait_for_log(&[
        "listener \"edge\"",
        "failed: 503",
        "raise upstream_max_connections",
    ]);

    // The 4 held requests are still there, and are served once the backend answers.
    backend.answer_all();
    for request in requests {
        assert_eq!(request.await.unwrap().0.status, 200);
    }
    assert!(backend.most_open.load(Ordering::SeqCst) <= 4);
}

#[tokio::test]
async fn waiting_requests_are_served_on_freed_connections() {
    let (files, pki) = pki_files();
    let backend = SlowBackend::start().await;
    let server = server_mode(&files, &backend, &["--upstream-max-connections", "4"]);
    let requests = concurrent_gets(server.addr(), &pki, 20);
    eventually("the backend holds requests", || {
        backend.requests.load(Ordering::SeqCst) >= 4
    })
    .await;

    backend.answer_all();
    for request in requests {
        let (answer, _) = request.await.unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 20);
    let most_open = backend.most_open.load(Ordering::SeqCst);
    assert!(most_open <= 4, "{most_open} backend connections at once");
    let accepted = backend.accepted.load(Ordering::SeqCst);
    assert!(
        accepted <= 4,
        "{accepted} backend connections for 20 requests"
    );
}

#[tokio::test]
async fn resetting_http2_streams_opens_no_more_backend_connections_than_the_limit() {
    let (files, pki) = pki_files();
    let backend = SlowBackend::start().await;
    let server = server_mode(&files, &backend, &["--upstream-max-connections", "4"]);
    let mut sender = http2_connection(server.addr(), &pki).await;

    // A stream every 20 ms, each reset (its response future dropped) 400 ms later: about
    // 20 live at a time, well under the server's stream limit.
    let started = Instant::now();
    let mut live = std::collections::VecDeque::new();
    while started.elapsed() < Duration::from_secs(2) {
        live.push_back((Instant::now(), sender.send_request(get("/slow"))));
        while live
            .front()
            .is_some_and(|(opened, _)| opened.elapsed() >= Duration::from_millis(400))
        {
            live.pop_front();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(live);

    let most_open = backend.most_open.load(Ordering::SeqCst);
    assert!(most_open <= 4, "{most_open} backend connections at once");
    assert!(backend.requests.load(Ordering::SeqCst) >= 4);
    // Every stream is gone, so is every backend connection.
    eventually("the backend has no connection left", || {
        backend.open.load(Ordering::SeqCst) == 0
    })
    .await;
    sender
        .ready()
        .await
        .expect("the client connection is still usable");
}

/// The attack as the report ran it, with another HTTP/2 implementation: Python's `h2`
/// opening a stream every 20 ms and resetting each 400 ms later. Needs `pip install h2`, so
/// it runs from .ci/run (`cargo test --test upstream_pool -- --ignored`).
const PYTHON_H2_FLOOD: &str = r#"
import socket, ssl, sys, time
import h2.connection, h2.config, h2.exceptions
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
conn.initiate_connection()
sock.sendall(conn.data_to_send())
sock.settimeout(0.001)
live, stream, opened, started = [], 1, 0, time.time()
while time.time() - started < 2:
    headers = [(":method", "GET"), (":path", "/slow"), (":scheme", "https"), (":authority", "localhost")]
    conn.send_headers(stream, headers, end_stream=True)
    live.append((time.time(), stream))
    stream, opened = stream + 2, opened + 1
    while live and time.time() - live[0][0] >= 0.4:
        conn.reset_stream(live.pop(0)[1])
    sock.sendall(conn.data_to_send())
    try:
        data = sock.recv(65535)
        if data:
            conn.receive_data(data)
            sock.sendall(conn.data_to_send())
    except (socket.timeout, ssl.SSLWantReadError):
        pass
    time.sleep(0.02)
for _, left in live:
    conn.reset_stream(left)
sock.sendall(conn.data_to_send())
print(opened, flush=True)
time.sleep(1)
"#;

#[tokio::test]
#[ignore = "needs Python's h2 (pip install h2); run by .ci/run"]
async fn a_python_h2_client_resetting_streams_cannot_open_more_backend_connections_than_the_limit()
{
    let (files, _pki) = pki_files();
    let backend = SlowBackend::start().await;
    let server = server_mode(&files, &backend, &["--upstream-max-connections", "4"]);
    let path = |name: &str| files.path(name).to_string_lossy().into_owned();
    let mut python = std::process::Command::new("python3");
    python
        .args(["-c", PYTHON_H2_FLOOD])
        .arg(server.addr().port().to_string())
        .args([path("ca.pem"), path("client.pem"), path("client.key")]);
    // Off the runtime's thread, which the backend needs meanwhile.
    let output = tokio::task::spawn_blocking(move || python.output())
        .await
        .unwrap()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let opened: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(opened >= 50, "only {opened} streams opened");
    let most_open = backend.most_open.load(Ordering::SeqCst);
    assert!(most_open <= 4, "{most_open} backend connections at once");
    assert!(backend.requests.load(Ordering::SeqCst) >= 4);
    eventually("the backend has no connection left", || {
        backend.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

/// When a backend closes a kept-alive connection: right after its first response (the FIN
/// may cross the next request), or as the next request arrives (always too late).
#[derive(Clone, Copy, Debug)]
enum CloseAfterFirst {
    Immediately,
    OnNextRequest,
}

/// A backend (raw tokio) that answers only the first request of each connection, with a
/// keep-alive response (no `Connection: close`), and then closes: what a backend with a short
/// keep-alive timeout or a one-request limit does. Records each request's method as read.
struct OneRequestBackend {
    address: SocketAddr,
    methods: Arc<std::sync::Mutex<Vec<String>>>,
}

impl OneRequestBackend {
    async fn start(close: CloseAfterFirst) -> OneRequestBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = OneRequestBackend {
            address: listener.local_addr().unwrap(),
            methods: Arc::default(),
        };
        let methods = backend.methods.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let methods = methods.clone();
                tokio::spawn(async move {
                    if read_request(&mut stream, &methods).await.is_none() {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                    if let CloseAfterFirst::OnNextRequest = close {
                        let _ = read_request(&mut stream, &methods).await;
                    }
                    // Dropped: closed without an answer.
                });
            }
        });
        backend
    }

    fn methods(&self) -> Vec<String> {
        self.methods.lock().unwrap().clone()
    }
}

/// Reads one request head and its Content-Length body; records the method.
async fn read_request(
    stream: &mut tokio::net::TcpStream,
    methods: &std::sync::Mutex<Vec<String>>,
) -> Option<()> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while data.len() < end + 4 + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    }
    let method = head.split(' ').next().unwrap_or_default().to_uppercase();
    methods.lock().unwrap().push(method);
    Some(())
}

/// One request over its own mTLS connection to server mode; the status and body.
async fn request(
    address: SocketAddr,
    pki: &TestPki,
    method: &str,
    body: &'static str,
) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(pki.client_config())
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri("/orders")
        .header("host", "backend.example")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_get_on_a_pooled_connection_the_backend_closed_is_retried_on_a_fresh_one() {
    for close in [CloseAfterFirst::Immediately, CloseAfterFirst::OnNextRequest] {
        let (files, pki) = pki_files();
        let backend = OneRequestBackend::start(close).await;
        let upstream = format!("http://{}", backend.address);
        let server = one_pool(&files, &upstream, &[]);
        for attempt in 0..10 {
            let (status, body) = request(server.addr(), &pki, "GET", "").await;
            assert_eq!(
                status,
                200,
                "{close:?}, request {attempt}: {body}\ncertgate log:\n{}",
                server.logs()
            );
        }
        if let CloseAfterFirst::OnNextRequest = close {
            // Every second request met the closing pooled connection its predecessor left
            // and was sent again (the new connection is not pooled): 5 + 2 x 5 arrivals.
            assert_eq!(backend.methods().len(), 15, "{:?}", backend.methods());
            server.wait_for_log(&["closed a pooled connection as GET /orders went out on it"]);
        }
    }
}

#[tokio::test]
async fn a_post_that_reached_the_backend_is_not_retried() {
    let (files, pki) = pki_files();
    let backend = OneRequestBackend::start(CloseAfterFirst::OnNextRequest).await;
    let upstream = format!("http://{}", backend.address);
    let server = one_pool(&files, &upstream, &[]);
    // The first request leaves a pooled connection that the backend closes on the next one.
    assert_eq!(request(server.addr(), &pki, "GET", "").await.0, 200);
    let (status, body) = request(server.addr(), &pki, "POST", "order=7").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("connection closed before message completed"),
        "{body}"
    );
    // The backend may have acted on it: sending it again could order twice.
    assert_eq!(backend.methods(), vec!["GET", "POST"]);
    // Nor one without a body: it could be sent again, but it is not idempotent.
    assert_eq!(request(server.addr(), &pki, "GET", "").await.0, 200);
    assert_eq!(request(server.addr(), &pki, "POST", "").await.0, 502);
    assert_eq!(backend.methods(), vec!["GET", "POST", "GET", "POST"]);
}
