//! The seed topology end to end: client -> client mode -> mTLS -> server mode -> backend.

mod support;

use support::echoed_header as header;
use support::*;

struct Seed {
    files: Files,
    pki: TestPki,
    server_a: Certgate,
    proxy_b: Certgate,
}

async fn seed(extra_server_args: &[&str]) -> Seed {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let mut server_args = vec!["--verify-depth", "2"];
    server_args.extend_from_slice(extra_server_args);
    let (server_a, proxy_b) = start_chain(&files, &server_args, &["--verify-depth", "2"]).await;
    Seed {
        files,
        pki,
        server_a,
        proxy_b,
    }
}

#[tokio::test]
async fn backend_receives_nginx_escaped_client_cert_through_both_modes() {
    let seed = seed(&[]).await;
    let answer = http_get(seed.proxy_b.addr(), "/orders?id=7", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let echoed = &answer.body;
    assert!(
        echoed.starts_with("GET /orders?id=7 HTTP/1.1\n"),
        "{echoed}"
    );
    assert_eq!(
        header(echoed, "x-client-cert"),
        vec![nginx_escaped(&seed.pki.client.cert_pem)]
    );
    assert_eq!(header(echoed, "x-client-verify"), vec!["SUCCESS"]);
    assert_eq!(header(echoed, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(header(echoed, "x-real-ip"), vec!["127.0.0.1"]);
    // Client mode sends the upstream's host by default; server mode keeps it.
    assert_eq!(
        header(echoed, "host"),
        vec![format!("localhost:{}", seed.server_a.addr().port())]
    );
    drop(seed.files);
}

#[tokio::test]
async fn forged_identity_headers_never_reach_the_backend() {
    let seed = seed(&[]).await;
    let client = seed.pki.client_config();
    let answer = https_get(
        seed.server_a.addr(),
        client,
        "/",
        &[
            ("X-Client-Cert", "forged-one"),
            ("x-CLIENT-cert", "forged-two"),
            ("x-client-cert", "forged-three"),
            ("X-Client-Verify", "SUCCESS-forged"),
            ("X-Forwarded-Client-Cert", "Hash=forged"),
            ("Client-Cert", ":Zm9yZ2Vk:"),
            ("X-Forwarded-Proto", "forged-proto"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    assert!(
        !answer.body.contains("forged"),
        "a forged header reached the backend:\n{}",
        answer.body
    );
    assert_eq!(
        header(&answer.body, "x-client-cert"),
        vec![nginx_escaped(&seed.pki.client.cert_pem)]
    );
    assert_eq!(header(&answer.body, "x-client-verify"), vec!["SUCCESS"]);
    assert_eq!(header(&answer.body, "x-forwarded-proto"), vec!["https"]);
}

#[tokio::test]
async fn optional_verification_without_certificate_tells_backend_none_and_drops_forgery() {
    let seed = seed(&["--verify-client", "optional"]).await;
    let client = tls_client(&seed.pki.ca.issued.cert_pem, None);
    let answer = https_get(
        seed.server_a.addr(),
        client,
        "/",
        &[("X-Client-Cert", "forged")],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(header(&answer.body, "x-client-verify"), vec!["NONE"]);
    assert!(
        header(&answer.body, "x-client-cert").is_empty(),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn optional_no_ca_tells_backend_why_the_certificate_failed() {
    let seed = seed(&["--verify-client", "optional_no_ca"]).await;
    let stranger_ca =
        certgate::pki::Authority::root("stranger CA", certgate::pki::KeyType::EcdsaP256).unwrap();
    let stranger = stranger_ca
        .leaf(&certgate::pki::LeafSpec::new(
            "stranger",
            certgate::pki::Usage::Client,
        ))
        .unwrap();
    let client = tls_client(
        &seed.pki.ca.issued.cert_pem,
        Some((&stranger.cert_pem, &stranger.key_pem)),
    );
    let answer = https_get(seed.server_a.addr(), client, "/", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let verdict = header(&answer.body, "x-client-verify");
    assert_eq!(verdict.len(), 1);
    assert!(
        verdict[0].starts_with("FAILED:unknown issuer"),
        "{verdict:?}"
    );
    assert!(verdict[0].contains("CN=stranger CA"), "{verdict:?}");
    // An unverified certificate is never passed on as an identity.
    assert!(
        header(&answer.body, "x-client-cert").is_empty(),
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn header_rules_use_nginx_variables_and_skip_empty_values() {
    let seed = seed(&[
        "--set-header",
        "X-SSL-CERT $http_x_ssl_cert",
        "--set-header",
        "X-Passed $http_x_custom",
        "--set-header",
        "X-Subject $ssl_client_s_dn",
        "--set-header",
        "X-Issuer $ssl_client_i_dn",
        "--set-header",
        "X-Serial $ssl_client_serial",
        "--set-header",
        "X-Fingerprint $ssl_client_fingerprint",
        "--set-header",
        "X-TLS $ssl_protocol/$ssl_cipher",
        "--set-header",
        "X-Where $scheme://$host$request_uri from $remote_addr",
    ])
    .await;
    let client = tls_client_with(
        &seed.pki.ca.issued.cert_pem,
        Some((&seed.pki.client.cert_pem, &seed.pki.client.key_pem)),
        &[&rustls::version::TLS13],
        Some(vec![
            rustls::crypto::aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ]),
    );
    let answer = https_get(seed.server_a.addr(), client.clone(), "/a?b=c", &[])
        .await
        .unwrap();
    let body = &answer.body;
    // No inbound X-Custom: the rule's value is empty, so the header is not sent.
    assert!(header(body, "x-passed").is_empty(), "{body}");
    assert_eq!(
        header(body, "x-subject"),
        vec!["CN=test-client,O=certgate test PKI"]
    );
    assert_eq!(
        header(body, "x-issuer"),
        vec!["CN=test root CA,O=certgate test PKI"]
    );
    let (_, cert) = x509_parser::parse_x509_certificate(&seed.pki.client.cert_der).unwrap();
    let serial = cert.tbs_certificate.serial.to_str_radix(16).to_uppercase();
    let serial = if serial.len() % 2 == 1 {
        format!("0{serial}")
    } else {
        serial
    };
    assert_eq!(header(body, "x-serial"), vec![serial]);
    let sha1 = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &seed.pki.client.cert_der,
    );
    let sha1: String = sha1.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(header(body, "x-fingerprint"), vec![sha1]);
    assert_eq!(
        header(body, "x-tls"),
        vec!["TLSv1.3/TLS_CHACHA20_POLY1305_SHA256"]
    );
    assert_eq!(
        header(body, "x-where"),
        vec!["https://backend.example/a?b=c from 127.0.0.1"]
    );

    // The seed's `if ($http_x_ssl_cert)` form: a header present inbound is passed on...
    let answer = https_get(
        seed.server_a.addr(),
        client,
        "/",
        &[("X-Custom", "abc"), ("X-SSL-CERT", "forged")],
    )
    .await
    .unwrap();
    assert_eq!(
        header(&answer.body, "x-passed"),
        vec!["abc"],
        "{}",
        answer.body
    );
    // ...but identity headers are stripped before any rule reads them: no rule can launder a
    // forged identity.
    assert!(!answer.body.contains("forged"), "{}", answer.body);
}

#[test]
fn demo_once_shows_what_the_backend_received_and_exits_zero() {
    let (code, output) = run_to_exit(&["demo", "--once"]);
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("x-client-verify: SUCCESS"), "{output}");
    assert!(
        output.contains("x-client-cert: -----BEGIN%20CERTIFICATE-----%0A"),
        "{output}"
    );
}

#[tokio::test]
async fn server_mode_forwards_to_a_unix_socket_backend() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let socket = files.path("backend.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let host = request.headers().get("host").cloned();
                        let body = format!("unix backend saw host {host:?}");
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(hyper::body::Bytes::from(body)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let upstream = format!("unix:{}", socket.display());
    let server = Certgate::start(&server_mode_args(&files, &upstream, &[]));
    let client = pki.client_config();
    let answer = https_get(server.addr(), client, "/", &[]).await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        "unix backend saw host Some(\"backend.example\")"
    );
}

#[tokio::test]
async fn client_mode_presents_a_chain_with_its_intermediate() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let intermediate = pki.ca.intermediate("client intermediate").unwrap();
    let leaf = intermediate
        .leaf(&certgate::pki::LeafSpec::new(
            "chained-client",
            certgate::pki::Usage::Client,
        ))
        .unwrap();
    // The seed's client_chain.pem: leaf, then intermediate.
    let chain = files.write(
        "client_chain.pem",
        format!("{}{}", leaf.cert_pem, intermediate.issued.cert_pem),
    );
    let key = files.write_key("chained.key", &leaf.key_pem);
    let backend = spawn_echo().await;
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    let backend_url = format!("http://{backend}");
    let server_a = Certgate::start(&server_mode_args(
        &files,
        &backend_url,
        &["--verify-depth", "2"],
    ));
    let upstream = format!("https://localhost:{}", server_a.addr().port());
    let proxy_b = Certgate::start(&[
        "client",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--cert",
        &chain,
        "--key",
        &key,
        "--ca",
        &p("ca.pem"),
    ]);
    let answer = http_get(proxy_b.addr(), "/", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(header(&answer.body, "x-client-verify"), vec!["SUCCESS"]);
    assert_eq!(
        header(&answer.body, "x-client-cert"),
        vec![nginx_escaped(&leaf.cert_pem)]
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_is_logged_and_harms_nobody() {
    let seed = seed(&[]).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = tokio::net::TcpStream::connect(seed.server_a.addr())
        .await
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink).await;
    seed.server_a
        .wait_for_log(&["TLS handshake with 127.0.0.1:", "not a TLS handshake"]);
    assert_eq!(http_get(seed.proxy_b.addr(), "/", &[]).await.status, 200);
}

#[tokio::test]
async fn http2_clients_are_served_and_their_cookies_joined_for_the_backend() {
    let seed = seed(&[]).await;
    let mut config = (*seed.pki.client_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let stream = tokio::net::TcpStream::connect(seed.server_a.addr())
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            stream,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("https://app.example/h2?x=1")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("x-client-cert", "forged")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("GET /h2?x=1 HTTP/1.1\n"), "{body}");
    assert_eq!(header(&body, "cookie"), vec!["a=1; b=2"]);
    assert_eq!(header(&body, "host"), vec!["app.example"]);
    assert_eq!(
        header(&body, "x-client-cert"),
        vec![nginx_escaped(&seed.pki.client.cert_pem)]
    );
}

/// The seed's last block: proxy B hands on the certificate of the client in front of it as
/// `X-SSL-CERT`. Server A keeps it only from a peer named in `trusted_forwarders`; from that
/// peer too, the headers A sets itself (`X-Client-Cert`, `X-Client-Verify`) are A's own.
#[tokio::test]
async fn a_trusted_forwarder_passes_the_outer_clients_certificate_on() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let (server_a, proxy_b) = start_chain(
        &files,
        &["--trusted-forwarder", "cn:test-client"],
        &["--set-header", "X-SSL-CERT $http_x_ssl_cert"],
    )
    .await;
    let outer = pki
        .ca
        .leaf(&certgate::pki::LeafSpec::new(
            "outer-client",
            certgate::pki::Usage::Client,
        ))
        .unwrap();
    let outer_cert = nginx_escaped(&outer.cert_pem);
    let answer = http_get(
        proxy_b.addr(),
        "/",
        &[
            ("X-SSL-CERT", &outer_cert),
            ("X-Client-Cert", "forged-by-the-outer-client"),
            ("X-Client-Verify", "SUCCESS-forged"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        header(&answer.body, "x-ssl-cert"),
        vec![outer_cert.as_str()],
        "{}",
        answer.body
    );
    assert_eq!(
        header(&answer.body, "x-client-cert"),
        vec![nginx_escaped(&pki.client.cert_pem)]
    );
    assert_eq!(header(&answer.body, "x-client-verify"), vec!["SUCCESS"]);

    // Any other client of A, with a certificate of the same CA, is not a trusted forwarder.
    let other = pki
        .ca
        .leaf(&certgate::pki::LeafSpec::new(
            "other-client",
            certgate::pki::Usage::Client,
        ))
        .unwrap();
    let client = tls_client(
        &pki.ca.issued.cert_pem,
        Some((&other.cert_pem, &other.key_pem)),
    );
    let answer = https_get(
        server_a.addr(),
        client,
        "/",
        &[
            ("X-SSL-CERT", &outer_cert),
            ("X-SSL-Client-S-DN", "CN=forged"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        header(&answer.body, "x-ssl-cert").is_empty(),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains("forged"), "{}", answer.body);
    assert_eq!(
        header(&answer.body, "x-client-cert"),
        vec![nginx_escaped(&other.cert_pem)]
    );
}
