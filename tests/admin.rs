//! The admin listener: health, readiness, status, metrics and reload, over real sockets.

mod support;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use std::net::SocketAddr;
use support::*;

/// An HTTP/1.1 request naming the admin address in Host, as a browser on
/// http://ADDRESS/ or curl does.
async fn call(address: SocketAddr, method: &str, path: &str) -> Answer {
    call_with(address, method, path, &[("host", &address.to_string())]).await
}

/// An HTTP/1.1 request with exactly `headers` (hyper's client adds no Host of its own).
async fn call_with(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn admin_address(process: &Certgate) -> SocketAddr {
    process
        .addresses
        .iter()
        .find(|(name, _)| name == "admin")
        .expect("admin listener")
        .1
}

/// Server mode with an admin listener, in front of `backend`.
fn server_with_admin(files: &Files, backend: &str) -> Certgate {
    Certgate::start_with(
        &server_mode_args(files, backend, &["--admin", "127.0.0.1:0"]),
        2,
    )
}

fn edge(process: &Certgate) -> SocketAddr {
    process
        .addresses
        .iter()
        .find(|(name, _)| name == "edge")
        .unwrap()
        .1
}

#[tokio::test]
async fn metrics_count_requests_handshakes_and_certificate_expiry() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    // One worker, so one upstream pool: the three requests share one upstream connection.
    let server = Certgate::start_with(
        &server_mode_args(
            &files,
            &backend.to_string(),
            &["--admin", "127.0.0.1:0", "--workers", "1"],
        ),
        2,
    );
    let client = pki.client_config();
    for _ in 0..3 {
        assert_eq!(
            https_get(edge(&server), client.clone(), "/", &[])
                .await
                .unwrap()
                .status,
            200
        );
    }
    assert!(https_get(
        edge(&server),
        tls_client(&pki.ca.issued.cert_pem, None),
        "/",
        &[]
    )
    .await
    .is_err());
    server.wait_for_log(&["no client certificate sent"]);

    let metrics = call(admin_address(&server), "GET", "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    assert!(
        text.contains("certgate_requests_total{listener=\"edge\",route=\"\",status=\"2xx\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("certgate_handshakes_total{listener=\"edge\",result=\"ok\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("certgate_handshakes_total{listener=\"edge\",result=\"no_certificate\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("certgate_request_duration_seconds_count{listener=\"edge\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("certgate_upstream_connections{listener=\"edge\"} 1"),
        "{text}"
    );
    let (_, cert) = x509_parser::parse_x509_certificate(&pki.server.cert_der).unwrap();
    let expiry = format!(
        "certgate_certificate_not_after_timestamp_seconds{{listener=\"edge\",role=\"server\",subject=\"CN=localhost,O=certgate test PKI\"}} {}",
        cert.validity().not_after.timestamp()
    );
    assert!(text.contains(&expiry), "{expiry}\n{text}");
    assert!(
        text.contains("role=\"ca\",subject=\"CN=test root CA,O=certgate test PKI\""),
        "{text}"
    );
}

#[tokio::test]
async fn healthz_and_readyz_tell_whether_upstreams_answer() {
    let files = Files::new();
    TestPki::new().write(&files);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = server_with_admin(&files, &closed.to_string());
    assert_eq!(
        call(admin_address(&down), "GET", "/healthz").await.status,
        200
    );
    let not_ready = call(admin_address(&down), "GET", "/readyz").await;
    assert_eq!(not_ready.status, 503);
    assert!(
        not_ready.body.contains(&format!(
            "listener \"edge\": upstream http://{closed} unreachable"
        )),
        "{}",
        not_ready.body
    );

    let backend = spawn_echo().await;
    let up = server_with_admin(&files, &backend.to_string());
    assert_eq!(call(admin_address(&up), "GET", "/readyz").await.status, 200);
}

#[tokio::test]
async fn status_lists_listeners_and_certificates_with_days_left() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let server = server_with_admin(&files, &backend.to_string());
    let status = call(admin_address(&server), "GET", "/status").await;
    assert_eq!(status.status, 200);
    let json: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    let listener = &json["listeners"][0];
    assert_eq!(listener["name"], "edge");
    assert_eq!(listener["mode"], "server");
    assert_eq!(listener["address"], edge(&server).to_string());
    let server_cert = listener["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["role"] == "server")
        .unwrap();
    assert_eq!(server_cert["subject"], "CN=localhost,O=certgate test PKI");
    assert_eq!(
        server_cert["file"],
        files.path("server.pem").to_string_lossy().as_ref()
    );
    // LeafSpec::new certificates end 90 days after they were made (a second ago, or less).
    let days_left = server_cert["days_left"].as_i64().unwrap();
    assert!((89..=90).contains(&days_left), "{days_left}");
    assert!(server_cert["sans"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "DNS:localhost"));
}

#[tokio::test]
async fn post_reload_reports_each_listener_and_is_counted() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let server = server_with_admin(&files, &backend.to_string());
    let admin = admin_address(&server);
    let unchanged = call(admin, "POST", "/reload").await;
    assert_eq!(unchanged.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&unchanged.body).unwrap()["edge"],
        "unchanged"
    );

    files.write("server.pem", "-----BEGIN CERTIFICATE-----\ntruncated");
    let failed = call(admin, "POST", "/reload").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&failed.body).unwrap()["edge"],
        "failed"
    );
    let metrics = call(admin, "GET", "/metrics").await.body;
    assert!(
        metrics.contains("certgate_reloads_total{listener=\"edge\",result=\"failed\"} 1"),
        "{metrics}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&call(admin, "GET", "/status").await.body).unwrap();
    assert_eq!(status["listeners"][0]["last_reload"]["result"], "failed");

    assert_eq!(call(admin, "GET", "/reload").await.status, 405);
    assert_eq!(call(admin, "GET", "/nope").await.status, 404);
}

#[tokio::test]
async fn a_broken_certificate_left_on_disk_is_counted_once_not_at_every_check() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let server = server_with_admin(&files, &backend.to_string());
    let admin = admin_address(&server);
    let failed = "certgate_reloads_total{listener=\"edge\",result=\"failed\"}";
    files.write("server.pem", "-----BEGIN CERTIFICATE-----\ntruncated");
    server.wait_for_log(&["listener \"edge\": certificate reload failed"]);
    let status = || async {
        serde_json::from_str::<serde_json::Value>(&call(admin, "GET", "/status").await.body)
            .unwrap()["listeners"][0]["last_reload"]
            .clone()
    };
    let first = status().await;
    assert_eq!(first["result"], "failed", "{first}");

    // More than two periodic checks (every 2 s) and an explicit reload find the same file.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let _ = call(admin, "POST", "/reload").await;
    let metrics = call(admin, "GET", "/metrics").await.body;
    assert!(metrics.contains(&format!("{failed} 1\n")), "{metrics}");
    assert_eq!(status().await, first);

    // A new problem is news again.
    files.write("server.pem", "-----BEGIN CERTIFICATE-----\nstill truncated");
    let _ = call(admin, "POST", "/reload").await;
    let metrics = call(admin, "GET", "/metrics").await.body;
    assert!(metrics.contains(&format!("{failed} 2\n")), "{metrics}");
}

#[tokio::test]
async fn status_page_lists_certificates_soonest_first_with_expiring_ones_marked() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    // A server certificate with ten days left: inside the 30-day warning window.
    let soon = server_cert_expiring_in(&pki, 10);
    files.write("server.pem", &soon.cert_pem);
    files.write_key("server.key", &soon.key_pem);
    let backend = spawn_echo().await;
    let server = server_with_admin(&files, &backend.to_string());
    let page = call(admin_address(&server), "GET", "/").await;
    assert_eq!(page.status, 200);
    let body = page.body;
    let server_row = body
        .find("<tr class=\"expiring\"><td>edge</td><td>server</td>")
        .expect(&body);
    let ca_row = body.find("<td>ca</td><td>CN=test root CA").expect(&body);
    assert!(server_row < ca_row, "soonest expiry first:\n{body}");
}

/// Writes `request` as it is and reads the answer until the server closes.
async fn raw(address: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Lines of the log that say a POST /reload ran.
fn reloads_run(process: &Certgate) -> usize {
    process
        .logs()
        .lines()
        .filter(|l| l.contains("listener \"admin\": POST /reload from"))
        .count()
}

#[tokio::test]
async fn status_is_refused_for_a_foreign_host_and_answered_for_loopback_names() {
    let files = Files::new();
    TestPki::new().write(&files);
    let backend = spawn_echo().await;
    let server = server_with_admin(&files, &backend.to_string());
    let admin = admin_address(&server);
    let port = admin.port();

    // What a DNS-rebinding page on http://attacker.example:PORT/ sends.
    for host in ["attacker.example", &format!("attacker.example:{port}")] {
        let refused = call_with(admin, "GET", "/status", &[("host", host)]).await;
        assert_eq!(refused.status, 421, "{host}: {}", refused.body);
        assert!(
            refused.body.contains(&format!("Host \"{host}\" refused"))
                && refused.body.contains(&format!("--admin-host {host}")),
            "{}",
            refused.body
        );
        assert!(!refused.body.contains("\"listeners\""), "{}", refused.body);
    }
    let line = server.wait_for_log(&["refused GET /status from 127.0.0.1:", "attacker.example"]);
    assert!(line.contains(&format!("arrived on {admin}")), "{line}");

    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ] {
        let answered = call_with(admin, "GET", "/status", &[("host", &host)]).await;
        assert_eq!(answered.status, 200, "{host}: {}", answered.body);
        assert!(answered.body.contains("\"listeners\""), "{}", answered.body);
    }
}

#[tokio::test]
async fn admin_host_makes_a_name_acceptable() {
    let files = Files::new();
    TestPki::new().write(&files);
    let backend = spawn_echo().await;
    let server = Certgate::start_with(
        &server_mode_args(
            &files,
            &backend.to_string(),
            &["--admin", "127.0.0.1:0", "--admin-host", "status.internal"],
        ),
        2,
    );
    let admin = admin_address(&server);
    for host in ["status.internal", "Status.Internal:9901"] {
        assert_eq!(
            call_with(admin, "GET", "/status", &[("host", host)])
                .await
                .status,
            200,
            "{host}"
        );
    }
    assert_eq!(
        call_with(admin, "GET", "/status", &[("host", "other.internal")])
            .await
            .status,
        421
    );
}

#[test]
fn a_bad_admin_host_is_refused_at_start() {
    let files = Files::new();
    TestPki::new().write(&files);
    let args = server_mode_args(
        &files,
        "127.0.0.1:1",
        &[
            "--admin",
            "127.0.0.1:0",
            "--admin-host",
            "http://status.internal/",
        ],
    );
    let (code, output) = run_to_exit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ne!(code, 0);
    assert!(
        output.contains("--admin-host: bad name \"http://status.internal/\""),
        "{output}"
    );
}

#[tokio::test]
async fn a_request_without_host_is_taken_only_as_http_1_0() {
    let files = Files::new();
    TestPki::new().write(&files);
    let backend = spawn_echo().await;
    let server = server_with_admin(&files, &backend.to_string());
    let admin = admin_address(&server);
    let old = raw(admin, "GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.0 200"), "{old}");
    let no_host = raw(admin, "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host}");
    assert!(no_host.contains("no Host header"), "{no_host}");
}

#[tokio::test]
async fn http2_authority_is_checked_like_host() {
    let files = Files::new();
    TestPki::new().write(&files);
    let backend = spawn_echo().await;
    let server = server_with_admin(&files, &backend.to_string());
    let admin = admin_address(&server);
    let stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    for (authority, status) in [("attacker.example", 421), (&admin.to_string()[..], 200)] {
        let request = hyper::Request::get(format!("http://{authority}/status"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        assert_eq!(response.status().as_u16(), status, "{authority}");
    }
}

#[tokio::test]
async fn cross_site_reloads_are_refused_and_do_not_run() {
    let files = Files::new();
    TestPki::new().write(&files);
    let backend = spawn_echo().await;
    let server = server_with_admin(&files, &backend.to_string());
    let admin = admin_address(&server);
    let host = admin.to_string();
    let form = [("host", &host[..]), ("content-type", "text/plain")];
    let with = |extra: (&'static str, &'static str)| {
        let mut headers = form.to_vec();
        headers.push(extra);
        headers
    };
    // A fetch or form post from another site, from a sandboxed page or a local file
    // (Origin: null), from another local port, and a browser that names only the site.
    for (headers, why) in [
        (
            with(("origin", "http://attacker.example")),
            "Origin \"http://attacker.example\" refused",
        ),
        (with(("origin", "null")), "Origin null refused"),
        (
            with(("origin", "http://127.0.0.1:1")),
            "Origin \"http://127.0.0.1:1\" refused",
        ),
        (
            with(("sec-fetch-site", "cross-site")),
            "Sec-Fetch-Site \"cross-site\" refused",
        ),
    ] {
        let refused = call_with(admin, "POST", "/reload", &headers).await;
        assert_eq!(refused.status, 403, "{headers:?}: {}", refused.body);
        assert!(refused.body.contains(why), "{}", refused.body);
    }
    // A request answered after them finds no reload run before its own.
    assert_eq!(call(admin, "POST", "/reload").await.status, 200);
    server.wait_for_log(&["listener \"admin\": POST /reload from"]);
    assert_eq!(reloads_run(&server), 1, "{}", server.logs());
}

#[tokio::test]
async fn reloads_without_origin_or_from_the_admin_page_run() {
    let files = Files::new();
    TestPki::new().write(&files);
    let backend = spawn_echo().await;
    let server = server_with_admin(&files, &backend.to_string());
    let admin = admin_address(&server);
    let host = admin.to_string();
    // As curl sends it.
    let curl = call_with(
        admin,
        "POST",
        "/reload",
        &[
            ("host", &host),
            ("user-agent", "curl/8.0"),
            ("accept", "*/*"),
        ],
    )
    .await;
    assert_eq!(curl.status, 200, "{}", curl.body);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&curl.body).unwrap()["edge"],
        "unchanged"
    );
    // As a page on http://ADMIN/ sends it.
    let origin = format!("http://{admin}");
    let page = call_with(
        admin,
        "POST",
        "/reload",
        &[
            ("host", &host),
            ("origin", &origin),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "text/plain"),
        ],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    server.wait_for_log(&[
        "listener \"admin\": POST /reload from 127.0.0.1:",
        "{\"edge\":\"unchanged\"}",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reloads_run(&server) < 2 {
        assert!(std::time::Instant::now() < deadline, "{}", server.logs());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The admin listener lives by the listeners' limits: an unfinished request head is cut off at
/// max_header_size's default (32 KiB) with 431, not buffered to hyper's ~400 KiB.
#[tokio::test]
async fn an_oversized_request_head_to_the_admin_listener_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let process = server_with_admin(&files, &format!("http://{backend}"));
    let admin = admin_address(&process);
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(format!("GET /status HTTP/1.1\r\nHost: {admin}\r\nX-Big: ").as_bytes())
        .await
        .unwrap();
    for _ in 0..64 {
        if stream.write_all(&[b'a'; 1024]).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the connection stayed open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}
