//! Bodies stream through the chain in both directions: 1 GiB each way without either proxy's
//! memory growing by more than a few MiB.

mod support;

use certgate::echo::Zeros;
use http_body_util::BodyExt;
use support::*;

const GIB: u64 = 1024 * 1024 * 1024;
/// What "a few MiB" allows: TLS records, hyper buffers and allocator slack, not the body.
const MAX_GROWTH_KIB: u64 = 8 * 1024;

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

async fn chain() -> (Files, Certgate, Certgate) {
    let files = Files::new();
    TestPki::new().write(&files);
    let (server_a, proxy_b) = start_chain(&files, &[], &[]).await;
    (files, server_a, proxy_b)
}

/// Sends one request with `upload` bytes to `path` through proxy B; returns (status, bytes
/// received back) without holding either body in memory.
async fn transfer(proxy_b: &Certgate, path: &str, upload: u64) -> (u16, u64, String) {
    let stream = tokio::net::TcpStream::connect(proxy_b.addr())
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", "backend")
        .body(Zeros { remaining: upload })
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let (mut received, mut head) = (0u64, Vec::new());
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len() as u64;
            if head.len() < 4096 {
                head.extend_from_slice(&data[..data.len().min(4096)]);
            }
        }
    }
    (
        status,
        received,
        String::from_utf8_lossy(&head).into_owned(),
    )
}

fn assert_memory_flat(process: &Certgate, before_kib: u64, what: &str) {
    let peak = status_kib(process.pid(), "VmHWM:");
    assert!(
        peak.saturating_sub(before_kib) <= MAX_GROWTH_KIB,
        "{what}: peak RSS grew from {before_kib} KiB to {peak} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_through_the_chain() {
    let (_files, server_a, proxy_b) = chain().await;
    // Warm up: pools, TLS sessions and buffers exist before the baseline is taken.
    assert_eq!(transfer(&proxy_b, "/warmup", 1024 * 1024).await.0, 200);
    let (a_before, b_before) = (
        status_kib(server_a.pid(), "VmHWM:"),
        status_kib(proxy_b.pid(), "VmHWM:"),
    );

    let (status, _, echoed) = transfer(&proxy_b, "/upload", GIB).await;
    assert_eq!(status, 200);
    assert!(echoed.contains(&format!("body-bytes: {GIB}")), "{echoed}");
    assert_memory_flat(&server_a, a_before, "server mode");
    assert_memory_flat(&proxy_b, b_before, "client mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_download_streams_through_the_chain() {
    let (_files, server_a, proxy_b) = chain().await;
    assert_eq!(transfer(&proxy_b, "/bytes/1048576", 0).await.1, 1024 * 1024);
    let (a_before, b_before) = (
        status_kib(server_a.pid(), "VmHWM:"),
        status_kib(proxy_b.pid(), "VmHWM:"),
    );

    let (status, received, _) = transfer(&proxy_b, &format!("/bytes/{GIB}"), 0).await;
    assert_eq!(status, 200);
    assert_eq!(received, GIB);
    assert_memory_flat(&server_a, a_before, "server mode");
    assert_memory_flat(&proxy_b, b_before, "client mode");
}
