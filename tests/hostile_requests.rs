//! Hostile and broken requests from the client side: whatever the client gets wrong is
//! answered and logged as the client's fault, never blamed on the upstream.

mod support;

use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Chunked bodies hyper refuses to decode, each named for what is wrong with it.
const MALFORMED_CHUNKED_BODIES: &[(&str, &str)] = &[
    (
        "chunk size overflowing 64 bits",
        "ffffffffffffffff1\r\nx\r\n0\r\n\r\n",
    ),
    ("negative chunk size", "-1\r\nx\r\n0\r\n\r\n"),
    ("chunk size with a 0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
    (
        "chunk extension ending in a bare LF",
        "5;name=value\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk data longer than its size",
        "5\r\nhello, and more than five bytes\r\n0\r\n\r\n",
    ),
];

/// Writes `request` by hand and reads what comes back until the response head is complete or
/// the connection closes; the status, if a response came at all.
async fn send_raw<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO, request: &[u8]) -> Option<u16> {
    // The server may refuse mid-request and close: a failed write is not the test's concern.
    let _ = io.write_all(request).await;
    let _ = io.flush().await;
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            match io.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            if received.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    let head = String::from_utf8_lossy(&received);
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    Some(status.parse().expect("a numeric status"))
}

fn chunked_post(body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
        .into_bytes()
}

/// `certgate_upstream_errors_total` of `listener`, from the admin listener's /metrics.
async fn upstream_errors(process: &Certgate, listener: &str) -> u64 {
    let admin = process.listener("admin");
    let metrics = http_get(admin, "/metrics", &[("host", &admin.to_string())]).await;
    assert_eq!(metrics.status, 200);
    let series = format!("certgate_upstream_errors_total{{listener=\"{listener}\"}} ");
    metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Each malformed body answered by `listener` from `peer`: never 502, 400 when an answer comes,
/// and a log line that blames the client.
fn assert_blamed_on_the_client(
    process: &Certgate,
    listener: &str,
    peer: SocketAddr,
    what: &str,
    status: Option<u16>,
) {
    assert_ne!(status, Some(502), "{what}: blamed on the upstream");
    assert!(
        status.is_none() || status == Some(400),
        "{what}: answered {status:?}, not 400"
    );
    process.wait_for_log(&[
        &format!("listener \"{listener}\""),
        &peer.to_string(),
        "the client sent a malformed request body",
    ]);
}

/// Server mode ("edge", with an admin listener) in front of an echo backend.
async fn server_mode_with_admin(files: &Files) -> Certgate {
    let backend = spawn_echo().await;
    let args = server_mode_args(
        files,
        &format!("http://{backend}"),
        &["--admin", "127.0.0.1:0"],
    );
    Certgate::start_with(&args, 2)
}

#[tokio::test]
async fn malformed_chunked_body_over_tls_is_the_clients_fault() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let server = server_mode_with_admin(&files).await;
    for (what, body) in MALFORMED_CHUNKED_BODIES {
        let tcp = tokio::net::TcpStream::connect(server.listener("edge"))
            .await
            .unwrap();
        let peer = tcp.local_addr().unwrap();
        let tls = tokio_rustls::TlsConnector::from(pki.client_config())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let status = send_raw(tls, &chunked_post(body)).await;
        assert_blamed_on_the_client(&server, "edge", peer, what, status);
    }
    assert_eq!(
        upstream_errors(&server, "edge").await,
        0,
        "{}",
        server.logs()
    );
    assert!(
        !server.logs().contains("error from user's Body stream"),
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn malformed_chunked_body_over_plain_http_is_the_clients_fault() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let server_a = server_mode_with_admin(&files).await;
    let args = client_mode_args(
        &files,
        server_a.listener("edge"),
        &["--admin", "127.0.0.1:0"],
    );
    let proxy_b = Certgate::start_with(&args, 2);
    for (what, body) in MALFORMED_CHUNKED_BODIES {
        let tcp = tokio::net::TcpStream::connect(proxy_b.listener("proxy-b"))
            .await
            .unwrap();
        let peer = tcp.local_addr().unwrap();
        let status = send_raw(tcp, &chunked_post(body)).await;
        assert_blamed_on_the_client(&proxy_b, "proxy-b", peer, what, status);
    }
    assert_eq!(
        upstream_errors(&proxy_b, "proxy-b").await,
        0,
        "{}",
        proxy_b.logs()
    );
    // Server A only saw proxy B give up on a stream: its client's doing, not its backend's.
    assert_eq!(
        upstream_errors(&server_a, "edge").await,
        0,
        "{}",
        server_a.logs()
    );
    for process in [&proxy_b, &server_a] {
        assert!(
            !process.logs().contains("error from user's Body stream"),
            "{}",
            process.logs()
        );
    }
}
