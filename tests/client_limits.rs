//! What a downstream connection may cost: silent, idle and half-sent connections are closed
//! on their deadlines (client_header_timeout, keepalive_timeout, http2_idle_timeout), busy
//! ones are not, request heads are capped at max_header_size on both protocols, and when the
//! descriptors run out the idlest connections make room for new clients.

mod support;

use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(address: SocketAddr, pki: &TestPki, alpn: &[u8]) -> Tls {
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// Reads until the peer closes; what it sent meanwhile. Panics if it stays open `within`.
async fn read_until_closed(io: &mut (impl AsyncRead + Unpin), within: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let mut buf = [0u8; 16 * 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection is still open after {within:?}; received {} bytes",
                received.len()
            ),
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.push(kind);
    frame.push(flags);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The types of the HTTP/2 frames in `bytes` (a whole number of frames, or a prefix).
fn h2_frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        types.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    types
}

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;

/// An HPACK integer with an N-bit prefix (RFC 7541 section 5.1).
fn hpack_integer(first_byte_flags: u8, prefix_bits: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first_byte_flags | value as u8);
        return;
    }
    out.push(first_byte_flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal header field without indexing, new name (RFC 7541 section 6.2.2).
fn hpack_literal(name: &str, value: &str, out: &mut Vec<u8>) {
    out.push(0x00);
    hpack_integer(0, 7, name.len(), out);
    out.extend_from_slice(name.as_bytes());
    hpack_integer(0, 7, value.len(), out);
    out.extend_from_slice(value.as_bytes());
}

async fn server_mode(extra: &[&str]) -> (Files, TestPki, Certgate) {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let certgate = start_server_mode(&files, extra).await;
    (files, pki, certgate)
}

#[tokio::test]
async fn a_connection_silent_after_the_handshake_is_closed() {
    let (_files, pki, certgate) = server_mode(&["--client-header-timeout", "1s"]).await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut tls = connect(certgate.addr(), &pki, alpn).await;
        read_until_closed(&mut tls, Duration::from_secs(10)).await;
    }
    // Each got its own deadline: the listener still serves.
    let answer = https_get(certgate.addr(), pki.client_config(), "/after", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn half_an_http2_preface_is_closed() {
    let (_files, pki, certgate) = server_mode(&["--client-header-timeout", "1s"]).await;
    let mut tls = connect(certgate.addr(), &pki, b"h2").await;
    tls.write_all(&H2_PREFACE[..10]).await.unwrap();
    read_until_closed(&mut tls, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_http2_connection_idle_after_its_settings_gets_goaway() {
    let (_files, pki, certgate) = server_mode(&["--client-header-timeout", "1s"]).await;
    let mut tls = connect(certgate.addr(), &pki, b"h2").await;
    tls.write_all(H2_PREFACE).await.unwrap();
    tls.write_all(&h2_frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let received = read_until_closed(&mut tls, Duration::from_secs(10)).await;
    let types = h2_frame_types(&received);
    assert!(types.contains(&SETTINGS), "{types:?}");
    assert!(
        types.contains(&GOAWAY),
        "no GOAWAY before the close: {types:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let (_files, pki, certgate) = server_mode(&["--keepalive-timeout", "1s"]).await;
    let mut tls = connect(certgate.addr(), &pki, b"http/1.1").await;
    tls.write_all(b"GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut tls, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn by_default_a_keep_alive_connection_outlives_short_waits() {
    let (_files, pki, certgate) = server_mode(&[]).await;
    let mut sender = keep_alive(certgate.addr(), pki.client_config()).await;
    assert_eq!(
        sender.send_request(get("/one")).await.unwrap().status(),
        200
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sender.send_request(get("/two")).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn keepalive_timeout_0_closes_after_each_response() {
    let (_files, pki, certgate) = server_mode(&["--keepalive-timeout", "0"]).await;
    let mut tls = connect(certgate.addr(), &pki, b"http/1.1").await;
    tls.write_all(b"GET /only HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut tls, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_idle_http2_connection_gets_goaway_after_http2_idle_timeout() {
    let (_files, pki, certgate) = server_mode(&["--http2-idle-timeout", "1s"]).await;
    let mut tls = connect(certgate.addr(), &pki, b"h2").await;
    tls.write_all(H2_PREFACE).await.unwrap();
    tls.write_all(&h2_frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", "/h2"),
    ] {
        hpack_literal(name, value, &mut block);
    }
    // END_STREAM | END_HEADERS
    tls.write_all(&h2_frame(HEADERS, 0x5, 1, &block))
        .await
        .unwrap();
    let received = read_until_closed(&mut tls, Duration::from_secs(10)).await;
    let types = h2_frame_types(&received);
    let headers = types.iter().position(|t| *t == HEADERS);
    let goaway = types.iter().position(|t| *t == GOAWAY);
    assert!(
        matches!((headers, goaway), (Some(h), Some(g)) if h < g),
        "expected the response, then GOAWAY: {types:?}"
    );
}

#[tokio::test]
async fn http2_pings_are_sent_at_http2_ping_interval() {
    let (_files, pki, certgate) = server_mode(&["--http2-ping-interval", "1s"]).await;
    let mut tls = connect(certgate.addr(), &pki, b"h2").await;
    tls.write_all(H2_PREFACE).await.unwrap();
    tls.write_all(&h2_frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h2_frame_types(&received).contains(&PING) {
        assert!(Instant::now() < deadline, "no PING in 10 s");
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            other => panic!("connection ended before a PING: {other:?}"),
        }
    }
}

/// A backend that answers each request after `delay`.
async fn slow_backend(delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
                    .await;
            });
        }
    });
    address
}

#[tokio::test]
async fn a_request_in_flight_is_not_cut_by_the_idle_timeouts() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    // Longer than an idle timeout plus the grace a connection told to close is given (5 s),
    // so a request not counted as in flight would be cut off, not merely marked last.
    let backend = slow_backend(Duration::from_secs(7)).await;
    let certgate = Certgate::start(&server_mode_args(
        &files,
        &format!("http://{backend}"),
        &[
            "--client-header-timeout",
            "1s",
            "--keepalive-timeout",
            "1s",
            "--http2-idle-timeout",
            "1s",
        ],
    ));
    let answer = https_get(certgate.addr(), pki.client_config(), "/slow", &[])
        .await
        .unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "slow"));
}

#[tokio::test]
async fn an_oversized_http1_request_head_is_refused_before_it_is_all_buffered() {
    let (_files, pki, certgate) = server_mode(&[]).await;
    let mut tls = connect(certgate.addr(), &pki, b"http/1.1").await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        .await
        .unwrap();
    // 64 KiB of one header, never finished: more than the 32 KiB default, far less than what
    // hyper would buffer on its own (~400 KiB).
    let chunk = vec![b'a'; 1024];
    for _ in 0..64 {
        if tls.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let received = read_until_closed(&mut tls, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test]
async fn an_unfinished_http2_header_block_is_cut_off() {
    let (_files, pki, certgate) = server_mode(&[]).await;
    let mut tls = connect(certgate.addr(), &pki, b"h2").await;
    tls.write_all(H2_PREFACE).await.unwrap();
    tls.write_all(&h2_frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let mut block = Vec::new();
    hpack_literal(":method", "GET", &mut block);
    hpack_literal("x-big", &"a".repeat(15_000), &mut block);
    // END_STREAM, no END_HEADERS: the block goes on in CONTINUATION frames, never ending.
    let _ = tls.write_all(&h2_frame(HEADERS, 0x1, 1, &block)).await;
    let mut piece = Vec::new();
    hpack_literal("x-more", &"b".repeat(15_000), &mut piece);
    for _ in 0..30 {
        if tls
            .write_all(&h2_frame(CONTINUATION, 0, 1, &piece))
            .await
            .is_err()
        {
            break;
        }
    }
    let received = read_until_closed(&mut tls, Duration::from_secs(10)).await;
    assert!(
        h2_frame_types(&received).contains(&GOAWAY),
        "{:?}",
        h2_frame_types(&received)
    );
}

/// A cookie of 16 KiB fits the default limit over HTTP/1.1 and HTTP/2 alike.
#[tokio::test]
async fn the_header_limit_is_the_same_over_http1_and_http2() {
    let (_files, pki, certgate) = server_mode(&[]).await;
    let cookie = format!("session={}", "c".repeat(16 * 1024));
    let answer = https_get(
        certgate.addr(),
        pki.client_config(),
        "/h1",
        &[("cookie", &cookie)],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);

    let tls = connect(certgate.addr(), &pki, b"h2").await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("https://localhost/h2")
        .header("cookie", &cookie)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    // 40 KiB is over the limit on both.
    let big = format!("session={}", "c".repeat(40 * 1024));
    let answer = https_get(
        certgate.addr(),
        pki.client_config(),
        "/h1",
        &[("cookie", &big)],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 431);
    let request = hyper::Request::get("https://localhost/h2")
        .header("cookie", &big)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    match sender.send_request(request).await {
        Ok(response) => assert_eq!(response.status(), 431),
        Err(error) => assert!(
            format!("{error:?}").contains("REFUSED")
                || format!("{error:?}").contains("PROTOCOL")
                || format!("{error:?}").contains("431"),
            "{error:?}"
        ),
    }
}

/// With 256 descriptors, silent clients fill the table; a new client is still served because
/// the idlest connections are closed to make room.
#[tokio::test]
async fn out_of_descriptors_the_idlest_connections_make_room() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let args = server_mode_args(&files, &format!("http://{backend}"), &[]);
    // ulimit applies to certgate alone; the default client_header_timeout (60 s) would keep
    // the silent connections for longer than this test waits.
    let script = "ulimit -n 256 && exec \"$0\" \"$@\"";
    let mut command: Vec<String> = vec!["-c".into(), script.into(), BIN.into()];
    command.extend(args);
    let certgate = Certgate::start_with_program("bash", &command, 1);
    let mut silent = Vec::new();
    for _ in 0..300 {
        match tokio::time::timeout(
            Duration::from_secs(2),
            connect_quietly(certgate.addr(), &pki),
        )
        .await
        {
            Ok(Some(tls)) => silent.push(tls),
            _ => break,
        }
    }
    assert!(silent.len() > 200, "only {} connections", silent.len());
    let answer = tokio::time::timeout(
        Duration::from_secs(15),
        https_get(certgate.addr(), pki.client_config(), "/new", &[]),
    )
    .await
    .expect("a new client is served while silent ones hold the descriptors")
    .unwrap();
    assert_eq!(answer.status, 200);
    certgate.wait_for_log(&["closed", "idle connection(s) to make room"]);
}

/// Clients that keep arriving while descriptors are short make certgate shed idle connections
/// again and again; each round is an accept failure, yet the error log gets a bounded number
/// of lines (one per 10 s), not one per round.
#[tokio::test]
async fn accept_failures_while_out_of_descriptors_are_logged_at_a_bounded_rate() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let args = server_mode_args(&files, &format!("http://{backend}"), &[]);
    let script = "ulimit -n 128 && exec \"$0\" \"$@\"";
    let mut command: Vec<String> = vec!["-c".into(), script.into(), BIN.into()];
    command.extend(args);
    let certgate = Certgate::start_with_program("bash", &command, 1);
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..800 {
        if let Ok(Some(tls)) = tokio::time::timeout(
            Duration::from_secs(2),
            connect_quietly(certgate.addr(), &pki),
        )
        .await
        {
            held.push(tls);
        }
    }
    let elapsed = started.elapsed();
    certgate.wait_for_log(&["accept failed", "idle connection(s) to make room"]);
    // Well over ten rounds of shedding 32 connections happened.
    assert!(held.len() > 500, "only {} connections", held.len());
    let logs = certgate.logs();
    let lines = logs.lines().filter(|l| l.contains("accept failed")).count();
    let bound = 1 + elapsed.as_secs() as usize / 10;
    assert!(
        lines <= bound,
        "{lines} accept-failure lines in {elapsed:?} (at most {bound}):\n{logs}"
    );
}

async fn connect_quietly(address: SocketAddr, pki: &TestPki) -> Option<Tls> {
    let stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .ok()
}

/// An answer given before the request body was read (413 here) reaches the client: certgate
/// reads and drops the rest for a while after closing, as nginx's lingering close, so a
/// client still writing its body sees no broken pipe or reset before it reads the answer.
#[tokio::test]
async fn an_early_answer_to_a_large_upload_is_not_lost_in_a_reset() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let config = files.write(
        "limits.toml",
        format!(
            "[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:0\"\nupstream = \"http://{backend}\"\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\nmax_body_size = \"4k\"\n"
        ),
    );
    let certgate = Certgate::start(&["run", "--config", &config]);
    // hyper's client, like many, gives up on a request whose body it cannot finish writing
    // unless the answer is already in.
    for _ in 0..5 {
        let tls = connect(certgate.addr(), &pki, b"http/1.1").await;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post("/upload")
            .header("host", "localhost")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(vec![
                b'a';
                4 << 20
            ])))
            .unwrap();
        let response = sender.send_request(request).await;
        assert_eq!(
            response.as_ref().map(|r| r.status().as_u16()).ok(),
            Some(413),
            "{response:?}"
        );
    }
}
