//! Private keys in a PKCS#11 token (SoftHSM2, a token per test): server mode and client mode
//! with ECDSA and RSA token keys complete mTLS handshakes with TLS 1.2 and 1.3; a wrong PIN,
//! a missing object or token and a key that is not the certificate's fail with their reason.
//!
//! Needs SoftHSM2 (`apt-get install softhsm2`), so a plain `cargo test` skips it; run it with
//! `cargo test --test hsm -- --ignored` (`.ci/run` does).

mod support;

use certgate::pki::{Issued, KeyType, LeafSpec, Usage};
use support::hsm::*;
use support::nginx::RecordingBackend;
use support::*;

const VERSIONS: [(&str, &[&rustls::SupportedProtocolVersion]); 2] = [
    ("TLSv1.2", &[&rustls::version::TLS12]),
    ("TLSv1.3", &[&rustls::version::TLS13]),
];

fn server_cert(pki: &TestPki, key_type: KeyType) -> Issued {
    pki.ca
        .leaf(
            &LeafSpec::new("localhost", Usage::Server)
                .names(&["localhost", "127.0.0.1"])
                .key_type(key_type),
        )
        .unwrap()
}

/// Server mode with its key on the token, in front of an echo backend.
/// A test's PKI (written to its files), its token, and a server certificate of `key_type`
/// whose key is on the token as "server-key" (id 01).
fn token_server_setup(key_type: KeyType) -> (Files, TestPki, SoftHsm, Issued) {
    let (files, pki, hsm) = (Files::new(), TestPki::new(), SoftHsm::new());
    pki.write(&files);
    let cert = server_cert(&pki, key_type);
    hsm.import(&cert.key_pem, "server-key", "01");
    (files, pki, hsm, cert)
}

/// Server mode's arguments with `cert` (written to token-server.pem) and its key at `uri`.
fn token_server_args(files: &Files, cert: &Issued, uri: &str, upstream: &str) -> Vec<String> {
    let cert_path = files.write("token-server.pem", &cert.cert_pem);
    let ca = files.path("ca.pem").to_string_lossy().into_owned();
    [
        "server",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--cert",
        &cert_path,
        "--key",
        uri,
        "--client-ca",
        &ca,
    ]
    .map(String::from)
    .to_vec()
}

/// Server mode with its key on the token, in front of an echo backend.
async fn server_with_token_key(files: &Files, hsm: &SoftHsm, cert: &Issued, uri: &str) -> Certgate {
    let backend = spawn_echo().await.to_string();
    let args = token_server_args(files, cert, uri, &backend);
    Certgate::start_env(&args, 1, &hsm.env())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SoftHSM2; run with --ignored"]
async fn server_mode_signs_handshakes_with_ecdsa_and_rsa_token_keys_in_tls_12_and_13() {
    for key_type in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa2048] {
        let (files, pki, hsm, cert) = token_server_setup(key_type);
        let server = server_with_token_key(&files, &hsm, &cert, &hsm.uri("server-key")).await;
        for (name, versions) in VERSIONS {
            let client = tls_client_with(
                &pki.ca.issued.cert_pem,
                Some((&pki.client.cert_pem, &pki.client.key_pem)),
                versions,
                None,
            );
            let answer = https_get(server.addr(), client, "/", &[])
                .await
                .unwrap_or_else(|e| panic!("{key_type:?} {name}: {e}\n{}", server.logs()));
            assert_eq!(answer.status, 200, "{key_type:?} {name}");
            assert_eq!(
                echoed_header(&answer.body, "x-client-cert"),
                [nginx_escaped(&pki.client.cert_pem)],
                "{key_type:?} {name}: the backend learns the client"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SoftHSM2; run with --ignored"]
async fn client_mode_presents_a_token_key_to_the_upstream_in_tls_12_and_13() {
    for key_type in [KeyType::EcdsaP256, KeyType::Rsa2048] {
        for (name, _) in VERSIONS {
            let (files, pki, hsm) = (Files::new(), TestPki::new(), SoftHsm::new());
            pki.write(&files);
            let client_cert = pki
                .ca
                .leaf(&LeafSpec::new("token-client", Usage::Client).key_type(key_type))
                .unwrap();
            hsm.import(&client_cert.key_pem, "client-key", "02");
            let upstream = RecordingBackend::tls(&pki.server, &pki.ca.issued).await;
            let proxy = token_client(&files, &hsm, &client_cert, upstream.address, name);
            let answer = http_get(proxy.addr(), "/", &[]).await;
            assert_eq!(answer.status, 200, "{key_type:?} {name}:\n{}", proxy.logs());
            assert_eq!(upstream.take().len(), 1, "{key_type:?} {name}");
        }
    }
}

/// Client mode with `client_cert`'s key on the token as "client-key", to `upstream`, with TLS
/// version `version` only.
fn token_client(
    files: &Files,
    hsm: &SoftHsm,
    client_cert: &Issued,
    upstream: std::net::SocketAddr,
    version: &str,
) -> Certgate {
    let cert_path = files.write("token-client.pem", &client_cert.cert_pem);
    let ca = files.path("ca.pem").to_string_lossy().into_owned();
    let uri = hsm.uri("client-key");
    Certgate::start_env(
        &[
            "client",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &format!("https://localhost:{}", upstream.port()),
            "--cert",
            &cert_path,
            "--key",
            &uri,
            "--ca",
            &ca,
            "--min-tls-version",
            version,
            "--max-tls-version",
            version,
        ],
        1,
        &hsm.env(),
    )
}

/// Starts server mode expecting it to fail; returns its output.
fn failed_start(files: &Files, hsm: &SoftHsm, cert: &Issued, uri: &str) -> String {
    let args = token_server_args(files, cert, uri, "127.0.0.1:1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, output) = run_to_exit_env(&args, &hsm.env());
    assert_eq!(code, 1, "{uri}:\n{output}");
    output
}

#[test]
#[ignore = "needs SoftHSM2; run with --ignored"]
fn a_wrong_pin_a_missing_key_or_token_and_a_foreign_key_are_named_at_start() {
    let (files, pki, hsm, cert) = token_server_setup(KeyType::EcdsaP256);
    let other = server_cert(&pki, KeyType::EcdsaP256);
    hsm.import(&other.key_pem, "other-key", "03");

    let wrong_pin =
        format!("pkcs11:token={TOKEN};object=server-key?module-path={MODULE}&pin-value=0000");
    let output = failed_start(&files, &hsm, &cert, &wrong_pin);
    assert!(output.contains("cannot log in: wrong PIN"), "{output}");

    let output = failed_start(&files, &hsm, &cert, &hsm.uri("no-such-key"));
    assert!(
        output
            .contains("pkcs11:token=certgate;object=no-such-key: no such private key on the token"),
        "{output}"
    );

    let missing_token = hsm
        .uri("server-key")
        .replace("token=certgate", "token=elsewhere");
    let output = failed_start(&files, &hsm, &cert, &missing_token);
    assert!(output.contains("no such token in"), "{output}");

    let output = failed_start(&files, &hsm, &cert, &hsm.uri("other-key"));
    assert!(
        output.contains("the key on the token does not belong to the certificate"),
        "{output}"
    );

    let no_pin = format!("pkcs11:token={TOKEN};object=server-key?module-path={MODULE}");
    let output = failed_start(&files, &hsm, &cert, &no_pin);
    assert!(
        output.contains("no PIN: add pin-source=file:PATH"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SoftHSM2; run with --ignored"]
async fn a_pin_in_the_uri_works_but_is_warned_about_and_the_module_may_come_from_a_flag() {
    let (files, pki, hsm, cert) = token_server_setup(KeyType::EcdsaP256);
    let backend = spawn_echo().await.to_string();
    let uri = format!("pkcs11:token={TOKEN};id=%01?pin-value={PIN}");
    let mut args = token_server_args(&files, &cert, &uri, &backend);
    args.extend(["--pkcs11-module".to_string(), MODULE.to_string()]);
    let server = Certgate::start_env(&args, 1, &hsm.env());
    server.wait_for_log(&["the PIN is in the URI (pin-value), where other users may see it"]);
    assert!(
        !server.logs().contains(PIN),
        "the PIN itself is never logged"
    );
    let answer = https_get(server.addr(), pki.client_config(), "/", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[test]
#[ignore = "needs SoftHSM2; run with --ignored"]
fn cert_check_opens_a_token_key_with_the_module_the_flag_names() {
    let (files, _pki, hsm, cert) = token_server_setup(KeyType::EcdsaP256);
    let cert_path = files.write("token-server.pem", &cert.cert_pem);
    let uri = format!("pkcs11:token={TOKEN};object=server-key?pin-value={PIN}");
    let check = ["cert", "check", "--cert", &cert_path, "--key", &uri];
    let (code, output) = run_to_exit_env(&check, &hsm.env());
    assert_eq!(
        code, 2,
        "without a module the key cannot be opened:\n{output}"
    );
    let with_module = [&check[..], &["--pkcs11-module", MODULE]].concat();
    let (_, output) = run_to_exit_env(&with_module, &hsm.env());
    assert!(
        output.contains(&format!(
            "pkcs11:token={TOKEN};object=server-key?pin-value=***&module-path={MODULE} matches the certificate"
        )),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SoftHSM2; run with --ignored"]
async fn many_handshakes_at_once_share_the_token() {
    let (files, pki, hsm, cert) = token_server_setup(KeyType::EcdsaP256);
    let server = server_with_token_key(&files, &hsm, &cert, &hsm.uri("server-key")).await;
    let address = server.addr();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let config = pki.client_config();
            tokio::spawn(async move { https_get(address, config, "/", &[]).await })
        })
        .collect();
    for client in clients {
        assert_eq!(client.await.unwrap().unwrap().status, 200);
    }
}

/// The certificate a server presents to a new connection.
async fn presented_certificate(server: &Certgate, pki: &TestPki) -> Vec<u8> {
    let stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(pki.client_config())
        .connect("localhost".try_into().unwrap(), stream)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SoftHSM2; run with --ignored"]
async fn a_renewed_certificate_for_the_same_token_key_is_picked_up_like_a_file_change() {
    let (files, pki, hsm, cert) = token_server_setup(KeyType::EcdsaP256);
    let server = server_with_token_key(&files, &hsm, &cert, &hsm.uri("server-key")).await;
    assert_eq!(presented_certificate(&server, &pki).await, cert.cert_der);

    // The key stays in the token; only the certificate file changes.
    let renewed = pki
        .ca
        .renew_for_key(
            &LeafSpec::new("localhost", Usage::Server).names(&["localhost", "127.0.0.1"]),
            &cert.key_pem,
        )
        .unwrap();
    files.write("token-server.pem", &renewed.cert_pem);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    while presented_certificate(&server, &pki).await != renewed.cert_der {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was not served:\n{}",
            server.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A certificate whose key is not on the token is refused; the renewed pair keeps serving.
    let foreign = server_cert(&pki, KeyType::EcdsaP256);
    files.write("token-server.pem", &foreign.cert_pem);
    server.wait_for_log(&["the key on the token does not belong to the certificate"]);
    assert_eq!(presented_certificate(&server, &pki).await, renewed.cert_der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SoftHSM2; run with --ignored"]
async fn an_nginx_config_with_an_engine_key_runs_on_the_token() {
    let (files, pki, hsm) = (Files::new(), TestPki::new(), SoftHsm::new());
    pki.write(&files);
    hsm.import(&pki.server.key_pem, "server-key", "01");
    let backend = spawn_echo().await;
    // nginx's OpenSSL-engine form of a token key.
    let config = files.write(
        "nginx.conf",
        format!(
            "server {{\n    listen 127.0.0.1:0 ssl;\n    ssl_certificate server.pem;\n    ssl_certificate_key \"engine:pkcs11:{}\";\n    ssl_client_certificate ca.pem;\n    ssl_verify_client on;\n    location / {{ proxy_pass http://{backend}; }}\n}}\n",
            hsm.uri("server-key")
        ),
    );
    let server = Certgate::start_env(&["run", "--config", &config], 1, &hsm.env());
    let answer = https_get(server.addr(), pki.client_config(), "/", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SoftHSM2; run with --ignored"]
async fn a_token_that_stops_answering_fails_handshakes_with_the_reason_and_nothing_else() {
    let (files, pki, hsm, cert) = token_server_setup(KeyType::EcdsaP256);
    let server = server_with_token_key(&files, &hsm, &cert, &hsm.uri("server-key")).await;
    let mut open = keep_alive(server.addr(), pki.client_config()).await;
    assert_eq!(open.send_request(get("/")).await.unwrap().status(), 200);

    // The token's storage disappears (SoftHSM's equivalent of an HSM going away).
    let tokens = hsm.dir.path().join("tokens");
    std::fs::rename(&tokens, hsm.dir.path().join("tokens.away")).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let refused = https_get(server.addr(), pki.client_config(), "/", &[]).await;
    assert!(refused.is_err(), "{refused:?}");
    // Our failure, said as ours (an error naming the listener and the key), not the peer's.
    server.wait_for_log(&[
        "ERROR",
        "listener \"server-1\": our key in the token failed to sign the TLS handshake with 127.0.0.1:",
        ": pkcs11:token=certgate;object=server-key",
        "check the token and its PIN",
    ]);
    let logs = server.logs();
    assert!(!logs.contains("\": TLS handshake with"), "{logs}");

    // The process is still there, and a connection made before keeps working.
    assert_eq!(open.send_request(get("/")).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs SoftHSM2; run with --ignored"]
async fn a_token_that_cannot_sign_the_upstream_handshake_is_our_500_not_the_upstreams_502() {
    let (files, pki, hsm) = (Files::new(), TestPki::new(), SoftHsm::new());
    pki.write(&files);
    let client_cert = pki
        .ca
        .leaf(&LeafSpec::new("token-client", Usage::Client))
        .unwrap();
    hsm.import(&client_cert.key_pem, "client-key", "02");
    let upstream = RecordingBackend::tls(&pki.server, &pki.ca.issued).await;
    let proxy = token_client(&files, &hsm, &client_cert, upstream.address, "TLSv1.3");

    let tokens = hsm.dir.path().join("tokens");
    std::fs::rename(&tokens, hsm.dir.path().join("tokens.away")).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let answer = http_get(proxy.addr(), "/", &[]).await;
    assert_eq!(answer.status, 500, "{}", proxy.logs());
    proxy.wait_for_log(&[
        "ERROR",
        "certgate's own failure: our key in the token failed to sign the TLS handshake with upstream",
        "pkcs11:token=certgate;object=client-key",
    ]);
    assert!(upstream.take().is_empty());
}
