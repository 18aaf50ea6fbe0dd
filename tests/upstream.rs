//! Client mode's upstream side: pooling, session resumption, and 502s that say why (server
//! mode's too).

mod support;

use certgate::pki::{Authority, KeyType, LeafSpec, Usage};
use std::sync::atomic::Ordering;
use support::*;

struct ProxyB {
    _files: Files,
    process: Certgate,
}

/// Client mode towards `upstream`, trusting `ca_pem`, presenting the PKI's client certificate.
fn proxy_b(
    pki: &TestPki,
    ca_pem: &str,
    upstream: &str,
    extra: &[&str],
    with_identity: bool,
) -> ProxyB {
    let files = Files::new();
    pki.write(&files);
    files.write("trusted.pem", ca_pem);
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    let mut args: Vec<String> = [
        "client",
        "--name",
        "proxy-b",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--ca",
        &p("trusted.pem"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if with_identity {
        args.extend([
            "--cert".into(),
            p("client.pem"),
            "--key".into(),
            p("client.key"),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let process = Certgate::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    ProxyB {
        _files: files,
        process,
    }
}

#[tokio::test]
async fn hundred_requests_cost_no_more_handshakes_than_pooled_connections() {
    let pki = TestPki::new();
    let upstream = CountingUpstream::start(&pki, false).await;
    let url = format!("https://localhost:{}", upstream.address.port());
    // One worker: one pool (each worker keeps its own).
    let proxy = proxy_b(
        &pki,
        &pki.ca.issued.cert_pem,
        &url,
        &["--workers", "1"],
        true,
    );

    // 50 one after the other, each on a new downstream connection: one upstream connection.
    for _ in 0..50 {
        assert_eq!(http_get(proxy.process.addr(), "/", &[]).await.status, 200);
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.full_handshakes.load(Ordering::SeqCst), 1);

    // 50 more from 5 concurrent clients: a few more pooled connections, one handshake each.
    let address = proxy.process.addr();
    let clients: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..10 {
                    assert_eq!(http_get(address, "/", &[]).await.status, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let connections = upstream.connections.load(Ordering::SeqCst);
    let handshakes = upstream.full_handshakes.load(Ordering::SeqCst)
        + upstream.resumed_handshakes.load(Ordering::SeqCst);
    // hyper returns a connection to the pool just after the response body ends, so a client
    // that fires its next request at once can race it and open one more: at most two per
    // client. Without pooling these 50 requests would open 50.
    assert!(
        connections <= 1 + 2 * 5,
        "{connections} upstream connections for 5 concurrent clients"
    );
    assert_eq!(
        handshakes, connections,
        "every handshake belongs to a pooled connection"
    );
}

#[tokio::test]
async fn new_upstream_connections_resume_the_tls_session() {
    let pki = TestPki::new();
    let upstream = CountingUpstream::start(&pki, true).await;
    let url = format!("https://localhost:{}", upstream.address.port());
    let proxy = proxy_b(&pki, &pki.ca.issued.cert_pem, &url, &[], true);
    for _ in 0..3 {
        assert_eq!(http_get(proxy.process.addr(), "/", &[]).await.status, 200);
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 3);
    assert_eq!(upstream.full_handshakes.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.resumed_handshakes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn no_session_reuse_makes_every_handshake_full() {
    let pki = TestPki::new();
    let upstream = CountingUpstream::start(&pki, true).await;
    let url = format!("https://localhost:{}", upstream.address.port());
    let proxy = proxy_b(
        &pki,
        &pki.ca.issued.cert_pem,
        &url,
        &["--no-session-reuse"],
        true,
    );
    for _ in 0..3 {
        assert_eq!(http_get(proxy.process.addr(), "/", &[]).await.status, 200);
    }
    assert_eq!(upstream.full_handshakes.load(Ordering::SeqCst), 3);
    assert_eq!(upstream.resumed_handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn upstream_down_answers_502_with_reason() {
    let pki = TestPki::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("https://localhost:{}", closed.port());
    let proxy = proxy_b(&pki, &pki.ca.issued.cert_pem, &url, &[], true);
    let answer = http_get(proxy.process.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.body.contains("refused the connection"),
        "{}",
        answer.body
    );
    assert_eq!(
        answer.body.trim_end().lines().count(),
        1,
        "one-line reason: {}",
        answer.body
    );
    proxy
        .process
        .wait_for_log(&["listener \"proxy-b\"", "refused the connection"]);
}

#[tokio::test]
async fn untrusted_upstream_answers_502_naming_the_issuer() {
    let pki = TestPki::new();
    let upstream = CountingUpstream::start(&pki, false).await;
    let url = format!("https://localhost:{}", upstream.address.port());
    let other = Authority::root("some other CA", KeyType::EcdsaP256).unwrap();
    let proxy = proxy_b(&pki, &other.issued.cert_pem, &url, &[], true);
    let answer = http_get(proxy.process.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(answer.body.contains("unknown issuer"), "{}", answer.body);
    assert!(answer.body.contains("CN=test root CA"), "{}", answer.body);
    proxy
        .process
        .wait_for_log(&["listener \"proxy-b\"", "unknown issuer"]);
}

#[tokio::test]
async fn upstream_name_mismatch_answers_502_with_both_names() {
    let pki = TestPki::new();
    let upstream = CountingUpstream::start(&pki, false).await;
    let url = format!("https://127.0.0.1:{}", upstream.address.port());
    let proxy = proxy_b(
        &pki,
        &pki.ca.issued.cert_pem,
        &url,
        &["--server-name", "api.internal"],
        true,
    );
    let answer = http_get(proxy.process.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer
            .body
            .contains("name mismatch: expected \"api.internal\""),
        "{}",
        answer.body
    );
    assert!(answer.body.contains("DNS:localhost"), "{}", answer.body);
    proxy.process.wait_for_log(&["name mismatch"]);
}

#[tokio::test]
async fn upstream_chain_longer_than_depth_answers_502() {
    let pki = TestPki::new();
    // The upstream presents leaf + 2 intermediates; the proxy allows 1.
    let first = pki.ca.intermediate("upstream intermediate 1").unwrap();
    let second = first.intermediate("upstream intermediate 2").unwrap();
    let leaf = second
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost"]))
        .unwrap();
    let long_pki = TestPki {
        ca: Authority::root("unused", KeyType::EcdsaP256).unwrap(),
        server: certgate::pki::Issued {
            cert_pem: format!(
                "{}{}{}",
                leaf.cert_pem, second.issued.cert_pem, first.issued.cert_pem
            ),
            ..leaf
        },
        client: pki.client.clone(),
    };
    let upstream = CountingUpstream::start_with_chain(&long_pki, &pki).await;
    let url = format!("https://localhost:{}", upstream.address.port());
    let proxy = proxy_b(
        &pki,
        &pki.ca.issued.cert_pem,
        &url,
        &["--verify-depth", "1"],
        true,
    );
    let answer = http_get(proxy.process.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.body.contains("longer than verify depth"),
        "{}",
        answer.body
    );

    let deeper = proxy_b(
        &pki,
        &pki.ca.issued.cert_pem,
        &url,
        &["--verify-depth", "2"],
        true,
    );
    assert_eq!(http_get(deeper.process.addr(), "/", &[]).await.status, 200);
}

#[tokio::test]
async fn upstream_refusing_our_certificate_answers_502() {
    let pki = TestPki::new();
    let upstream = CountingUpstream::start(&pki, false).await;
    let url = format!("https://localhost:{}", upstream.address.port());
    // No client certificate: the upstream requires one. In TLS 1.3 the client only learns
    // this on its first read, after the request was written.
    let proxy = proxy_b(&pki, &pki.ca.issued.cert_pem, &url, &[], false);
    let answer = http_get(proxy.process.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.body.contains("rejected our certificate"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn server_mode_backend_down_answers_502() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = Certgate::start(&server_mode_args(&files, &closed.to_string(), &[]));
    let client = pki.client_config();
    let answer = https_get(server.addr(), client, "/", &[]).await.unwrap();
    assert_eq!(answer.status, 502);
    assert!(
        answer
            .body
            .contains(&format!("upstream http://{closed} refused the connection")),
        "{}",
        answer.body
    );
}

/// Server A (certgate) behind proxy B, both defaults; returns (files, A, B).
async fn certgate_pair(client_extra: &[&str]) -> (Files, Certgate, Certgate) {
    let files = Files::new();
    TestPki::new().write(&files);
    let (server_a, proxy_b) = start_chain(&files, &[], client_extra).await;
    (files, server_a, proxy_b)
}

#[tokio::test]
async fn client_mode_speaks_http2_when_the_upstream_offers_it() {
    let (_files, server_a, proxy_b) = certgate_pair(&[]).await;
    for _ in 0..3 {
        assert_eq!(http_get(proxy_b.addr(), "/", &[]).await.status, 200);
    }
    server_a.wait_for_log(&["listener \"edge\"", "ALPN h2"]);
}

#[tokio::test]
async fn no_http2_keeps_the_upstream_on_http1() {
    let (_files, server_a, proxy_b) = certgate_pair(&["--no-http2"]).await;
    assert_eq!(http_get(proxy_b.addr(), "/", &[]).await.status, 200);
    server_a.wait_for_log(&["listener \"edge\"", "ALPN http/1.1"]);
    assert!(!server_a.logs().contains("ALPN h2"), "{}", server_a.logs());
}

#[tokio::test]
async fn verify_rules_check_the_upstream_identity_beyond_its_name() {
    let pki = TestPki::new();
    let spiffe_server = pki
        .ca
        .leaf(
            &LeafSpec::new("server-a", Usage::Server)
                .names(&["localhost", "spiffe://example.org/ns/prod/sa/server-a"]),
        )
        .unwrap();
    let identity = TestPki {
        ca: Authority::root("unused", KeyType::EcdsaP256).unwrap(),
        server: spiffe_server,
        client: pki.client.clone(),
    };
    let upstream = CountingUpstream::start_with_chain(&identity, &pki).await;
    let url = format!("https://localhost:{}", upstream.address.port());

    let right = proxy_b(
        &pki,
        &pki.ca.issued.cert_pem,
        &url,
        &["--verify-uri", "spiffe://example.org/ns/*/sa/server-a"],
        true,
    );
    assert_eq!(http_get(right.process.addr(), "/", &[]).await.status, 200);

    let wrong = proxy_b(
        &pki,
        &pki.ca.issued.cert_pem,
        &url,
        &[
            "--verify-uri",
            "spiffe://example.org/ns/*/sa/payments",
            "--verify-cn",
            "payments",
        ],
        true,
    );
    let answer = http_get(wrong.process.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(answer.body.contains("not allowed"), "{}", answer.body);
    assert!(
        answer
            .body
            .contains("URI:spiffe://example.org/ns/prod/sa/server-a"),
        "{}",
        answer.body
    );
    assert!(
        answer
            .body
            .contains("cn=[payments] uri=[spiffe://example.org/ns/*/sa/payments]"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn a_host_that_is_no_host_and_port_is_refused_with_400_not_sent() {
    // The Host travels as the upstream URI's authority (HTTP/2's `:authority`), so a value
    // that is not host[:port] cannot be sent; certgate says so instead of guessing.
    let (_files, _server_a, proxy_b) = certgate_pair(&["--set-header", "Host $http_x_host"]).await;
    let answer = http_get(proxy_b.addr(), "/", &[("x-host", "user@evil.example")]).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer
            .body
            .contains("\"user@evil.example\", is not a valid host[:port]"),
        "{}",
        answer.body
    );
    let answer = http_get(proxy_b.addr(), "/", &[("x-host", "api.example:8443")]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        echoed_header(&answer.body, "host"),
        vec!["api.example:8443"]
    );
}

#[tokio::test]
async fn a_backend_response_with_both_content_length_and_transfer_encoding_is_a_502() {
    // Two framings: whichever a client believes, the other leaves bytes that a proxy or
    // client further down may read as the next response (response smuggling).
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = backend.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut stream, _) = backend.accept().await.unwrap();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut chunk = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
                let _ = stream.write_all(answer).await;
                let _ = stream.read(&mut chunk).await;
            });
        }
    });
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let upstream = format!("http://{address}");
    let server = Certgate::start(&server_mode_args(&files, &upstream, &[]));
    let answer = https_get(server.addr(), pki.client_config(), "/", &[])
        .await
        .expect("an answer, not a closed connection");
    assert_eq!(answer.status, 502, "{}", answer.body);
    let reason = format!(
        "upstream {upstream} sent a response with both Content-Length and Transfer-Encoding"
    );
    assert!(answer.body.contains(&reason), "{}", answer.body);
    server.wait_for_log(&["listener \"edge\"", &reason, "smuggling"]);
}

#[tokio::test]
async fn an_upstream_chain_ending_at_an_intermediate_of_the_bundle_needs_partial_chain() {
    let pki = TestPki::new();
    let intermediate = pki.ca.intermediate("upstream issuing CA").unwrap();
    let leaf = intermediate
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost"]))
        .unwrap();
    let issued_pki = TestPki {
        ca: Authority::root("unused", KeyType::EcdsaP256).unwrap(),
        server: leaf,
        client: pki.client.clone(),
    };
    let upstream = CountingUpstream::start_with_chain(&issued_pki, &pki).await;
    let url = format!("https://localhost:{}", upstream.address.port());
    let trusting = proxy_b(&pki, &intermediate.issued.cert_pem, &url, &[], true);
    assert_eq!(
        http_get(trusting.process.addr(), "/", &[]).await.status,
        200
    );

    let strict = proxy_b(
        &pki,
        &intermediate.issued.cert_pem,
        &url,
        &["--partial-chain", "false"],
        true,
    );
    let answer = http_get(strict.process.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.body.contains("not a self-signed root") && answer.body.contains("partial_chain"),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn an_upstream_certificate_without_subject_alt_name_answers_502_saying_cn_is_not_matched() {
    let pki = TestPki::new();
    let cn_only = pki
        .ca
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&[]))
        .unwrap();
    let cn_only_pki = TestPki {
        ca: Authority::root("unused", KeyType::EcdsaP256).unwrap(),
        server: cn_only,
        client: pki.client.clone(),
    };
    let upstream = CountingUpstream::start_with_chain(&cn_only_pki, &pki).await;
    let url = format!("https://localhost:{}", upstream.address.port());
    let strict = proxy_b(&pki, &pki.ca.issued.cert_pem, &url, &[], true);
    let answer = http_get(strict.process.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.body.contains(
            "the certificate has no subjectAltName (its subject has CN=localhost); certgate does not match names against CN"
        ),
        "{}",
        answer.body
    );
    strict
        .process
        .wait_for_log(&["no subjectAltName", "verify_name_in_cn = true"]);

    let legacy = proxy_b(
        &pki,
        &pki.ca.issued.cert_pem,
        &url,
        &["--verify-name-in-cn"],
        true,
    );
    assert_eq!(http_get(legacy.process.addr(), "/", &[]).await.status, 200);
    // The CN must still match the name.
    let other = proxy_b(
        &pki,
        &pki.ca.issued.cert_pem,
        &url,
        &["--verify-name-in-cn", "--server-name", "api.internal"],
        true,
    );
    let answer = http_get(other.process.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.body.contains(
            "name mismatch: expected \"api.internal\", certificate presents [CN:localhost]"
        ),
        "{}",
        answer.body
    );
}
