//! `certgate probe`, against certgate's own server mode and against a plain rustls server:
//! a success and each failure cause, with the sentence and exit code asserted.

mod support;

use certgate::pki::{Authority, Issued, KeyType, LeafSpec, Usage};
use std::net::SocketAddr;
use support::*;
use time::{Duration, OffsetDateTime};

/// The two servers every case runs against.
#[derive(Clone, Copy, Debug)]
enum Server {
    /// `certgate server` in front of the echo backend (offers h2).
    CertgateServerMode,
    /// A rustls server requiring client certificates (WebPkiClientVerifier, HTTP/1.1).
    PlainRustls,
}

const SERVERS: [Server; 2] = [Server::CertgateServerMode, Server::PlainRustls];

/// A running server of either kind; dropping it stops certgate.
struct Target {
    address: SocketAddr,
    _certgate: Option<Certgate>,
}

async fn start(server: Server, files: &Files, pki: &TestPki, extra: &[&str]) -> Target {
    match server {
        Server::CertgateServerMode => {
            let certgate = start_server_mode(files, extra).await;
            Target {
                address: certgate.addr(),
                _certgate: Some(certgate),
            }
        }
        Server::PlainRustls => Target {
            address: CountingUpstream::start(pki, false).await.address,
            _certgate: None,
        },
    }
}

/// A fresh PKI written to its files, `server` started on it, and the CA file's path.
async fn setup(server: Server) -> (Files, TestPki, Target, String) {
    let (files, pki) = (Files::new(), TestPki::new());
    pki.write(&files);
    let target = start(server, &files, &pki, &[]).await;
    let ca = files.path("ca.pem").to_string_lossy().into_owned();
    (files, pki, target, ca)
}

/// Runs `certgate probe ADDRESS ARGS` off the runtime (the rustls server lives on it).
async fn probe(address: &str, args: &[&str]) -> (i32, String) {
    let mut all = vec!["probe".to_string(), address.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run_to_exit(&refs)
    })
    .await
    .unwrap()
}

/// The last line of a failed probe: the one-sentence diagnosis.
fn diagnosis(output: &str) -> &str {
    output
        .lines()
        .find(|l| l.starts_with("FAIL  diagnosis"))
        .unwrap_or_else(|| panic!("no diagnosis in:\n{output}"))
}

/// Writes a client identity as NAME.pem / NAME.key and returns the probe flags for it.
fn identity_flags(files: &Files, name: &str, chain_pem: &str, key_pem: &str) -> Vec<String> {
    vec![
        "--cert".into(),
        files.write(&format!("{name}.pem"), chain_pem),
        "--key".into(),
        files.write_key(&format!("{name}.key"), key_pem),
    ]
}

fn with<'a>(base: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(more.iter().copied())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_client_certificate_is_reported_accepted_with_version_chain_and_response() {
    for server in SERVERS {
        for version in ["--tls1.3", "--tls1.2"] {
            let (files, pki, target, _) = setup(server).await;
            let flags = identity_flags(&files, "me", &pki.client.cert_pem, &pki.client.key_pem);
            let ca = files.path("ca.pem").to_string_lossy().into_owned();
            let (code, output) = probe(
                &target.address.to_string(),
                &with(
                    &flags,
                    &[
                        "--ca",
                        &ca,
                        "--server-name",
                        "localhost",
                        version,
                        "--get",
                        "/hello",
                    ],
                ),
            )
            .await;
            assert_eq!(code, 0, "{server:?} {version}:\n{output}");
            let protocol = if version == "--tls1.3" {
                "TLSv1.3"
            } else {
                "TLSv1.2"
            };
            for expected in [
                format!("ok    tls          {protocol}, cipher "),
                "server chain 0: \"CN=localhost,O=certgate test PKI\" issued by \"CN=test root CA,O=certgate test PKI\"".to_string(),
                "ok    server cert  verified against --ca, and it covers the server name".into(),
                "requested; it accepts certificates issued by: \"CN=test root CA,O=certgate test PKI\"; sent \"CN=test-client,O=certgate test PKI\"".into(),
                "ok    client cert  our certificate was accepted".into(),
                "ok    http         GET /hello -> 200 OK".into(),
            ] {
                assert!(output.contains(&expected), "{server:?} {version}: missing {expected:?} in:\n{output}");
            }
            // --get offers HTTP/1.1 only.
            assert!(output.contains("ALPN http/1.1"), "{server:?}: {output}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_names_the_flags_and_the_accepted_issuers() {
    for server in SERVERS {
        for version in ["--tls1.3", "--tls1.2"] {
            let (_files, _pki, target, ca) = setup(server).await;
            let (code, output) = probe(
                &target.address.to_string(),
                &["--ca", &ca, "--server-name", "localhost", version],
            )
            .await;
            assert_eq!(code, 2, "{server:?} {version}:\n{output}");
            assert_eq!(
                diagnosis(&output),
                "FAIL  diagnosis    the server requires a client certificate and we sent none: pass --cert and --key with a certificate issued by one of: \"CN=test root CA,O=certgate test PKI\"",
                "{server:?} {version}:\n{output}"
            );
        }
    }
}

/// Client certificates wrong in one way each, and the words the diagnosis must use.
fn bad_client_certificates(pki: &TestPki) -> Vec<(&'static str, Issued, &'static str)> {
    let now = OffsetDateTime::now_utc();
    let other = Authority::root("other CA", KeyType::EcdsaP256).unwrap();
    let intermediate = pki.ca.intermediate("issuing CA").unwrap();
    let client = LeafSpec::new("test-client", Usage::Client);
    vec![
        (
            "wrong issuer",
            other.leaf(&client).unwrap(),
            "the server refused our certificate: the server does not trust the issuer of our certificate (\"CN=other CA,O=certgate test PKI\"); it accepts certificates issued by: \"CN=test root CA,O=certgate test PKI\"",
        ),
        (
            "expired",
            pki.ca
                .leaf(&client.clone().validity(now - Duration::days(30), now - Duration::days(2)))
                .unwrap(),
            "the server refused our certificate: our certificate \"CN=test-client,O=certgate test PKI\" expired ",
        ),
        (
            "server-only usage",
            pki.ca.leaf(&LeafSpec::new("test-client", Usage::Server)).unwrap(),
            "is not for client authentication (extended key usage: serverAuth only): issue one with clientAuth",
        ),
        (
            "missing intermediate",
            intermediate.leaf(&client).unwrap(),
            "does not trust the issuer of our certificate (\"CN=issuing CA,O=certgate test PKI\"); it accepts certificates issued by: \"CN=test root CA,O=certgate test PKI\"; if our issuer is an intermediate of one of those, append it to the --cert file",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_certificate_is_explained_by_its_cause() {
    for server in SERVERS {
        for version in ["--tls1.3", "--tls1.2"] {
            let (files, pki, target, ca) = setup(server).await;
            for (case, issued, words) in bad_client_certificates(&pki) {
                let flags = identity_flags(&files, "bad", &issued.cert_pem, &issued.key_pem);
                // With --get (TLS 1.3 learns the verdict from the request) and without.
                for get in [&[][..], &["--get", "/"][..]] {
                    let mut args = with(
                        &flags,
                        &["--ca", &ca, "--server-name", "localhost", version],
                    );
                    args.extend_from_slice(get);
                    let (code, output) = probe(&target.address.to_string(), &args).await;
                    assert_eq!(code, 2, "{server:?} {version} {case} {get:?}:\n{output}");
                    assert!(
                        diagnosis(&output).contains(words),
                        "{server:?} {version} {case} {get:?}: expected {words:?} in:\n{output}"
                    );
                    assert!(!output.contains("was accepted"), "{output}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_fails_and_no_request_is_sent() {
    for server in SERVERS {
        let (files, pki, target, _) = setup(server).await;
        let flags = identity_flags(&files, "me", &pki.client.cert_pem, &pki.client.key_pem);
        let other = Authority::root("other CA", KeyType::EcdsaP256).unwrap();
        let wrong_ca = files.write("other-ca.pem", &other.issued.cert_pem);
        let (code, output) = probe(
            &target.address.to_string(),
            &with(
                &flags,
                &[
                    "--ca",
                    &wrong_ca,
                    "--server-name",
                    "localhost",
                    "--get",
                    "/",
                ],
            ),
        )
        .await;
        assert_eq!(code, 2, "{server:?}:\n{output}");
        assert!(
            output.contains("FAIL  server cert  NOT trusted: unknown issuer: no trusted CA for issuer \"CN=test root CA,O=certgate test PKI\""),
            "{server:?}:\n{output}"
        );
        assert!(
            output.contains(
                "FAIL  http         GET / not sent: the server's certificate did not verify"
            ),
            "{server:?}:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_server_certificate_does_not_cover_is_named() {
    for server in SERVERS {
        let (files, pki, target, _) = setup(server).await;
        let flags = identity_flags(&files, "me", &pki.client.cert_pem, &pki.client.key_pem);
        let ca = files.path("ca.pem").to_string_lossy().into_owned();
        let (code, output) = probe(
            &target.address.to_string(),
            &with(&flags, &["--ca", &ca, "--server-name", "api.example.com"]),
        )
        .await;
        assert_eq!(code, 2, "{server:?}:\n{output}");
        let line = output
            .lines()
            .find(|l| l.starts_with("FAIL  server cert"))
            .unwrap_or_else(|| panic!("{output}"));
        assert!(line.contains("\"api.example.com\""), "{line}");
        assert!(line.contains("DNS:localhost"), "{line}");
        assert!(line.contains("--server-name"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_the_server_certificate_is_a_warning() {
    for server in SERVERS {
        let (files, pki, target, _) = setup(server).await;
        let flags = identity_flags(&files, "me", &pki.client.cert_pem, &pki.client.key_pem);
        let (code, output) = probe(
            &target.address.to_string(),
            &with(&flags, &["--server-name", "localhost"]),
        )
        .await;
        assert_eq!(code, 1, "{server:?}:\n{output}");
        assert!(
            output.contains("WARN  server cert  not verified: give --ca FILE"),
            "{server:?}:\n{output}"
        );
        assert!(output.contains("our certificate was accepted"), "{output}");
        // With a request (HEAD / by default) probe offers HTTP/1.1 only; with --no-request
        // h2 is offered too, and certgate's server mode picks it.
        assert!(output.contains("ALPN http/1.1"), "{server:?}: {output}");
        let (_, output) = probe(
            &target.address.to_string(),
            &with(&flags, &["--server-name", "localhost", "--no-request"]),
        )
        .await;
        let alpn = match server {
            Server::CertgateServerMode => "ALPN h2",
            Server::PlainRustls => "ALPN http/1.1",
        };
        assert!(output.contains(alpn), "{server:?}: {output}");
        assert!(!output.contains("ok    http"), "no request: {output}");
    }
}

/// A rustls server that speaks TLS 1.3 only and completes handshakes (no HTTP needed).
async fn tls13_only_rustls_server(pki: &TestPki) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let config = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(pki.server.cert_der.clone())],
            PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move { acceptor.accept(stream).await });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_version_the_server_refuses_is_named() {
    for server in SERVERS {
        let (files, pki) = (Files::new(), TestPki::new());
        pki.write(&files);
        let (address, _certgate) = match server {
            Server::CertgateServerMode => {
                let certgate = start_server_mode(&files, &["--min-tls-version", "TLSv1.3"]).await;
                (certgate.addr(), Some(certgate))
            }
            Server::PlainRustls => (tls13_only_rustls_server(&pki).await, None),
        };
        let ca = files.path("ca.pem").to_string_lossy().into_owned();
        let (code, output) = probe(
            &address.to_string(),
            &["--ca", &ca, "--server-name", "localhost", "--tls1.2"],
        )
        .await;
        assert_eq!(code, 2, "{server:?}:\n{output}");
        assert!(
            diagnosis(&output).contains("the server does not accept TLSv1.2"),
            "{server:?}:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_port_and_a_closed_port_are_told_apart() {
    let backend = spawn_echo().await;
    let (code, output) = probe(&backend.to_string(), &[]).await;
    assert_eq!(code, 2, "{output}");
    assert!(
        diagnosis(&output).contains("did not answer with TLS: it is probably a plain-HTTP port"),
        "{output}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, output) = probe(&closed.to_string(), &[]).await;
    assert_eq!(code, 2, "{output}");
    assert!(
        diagnosis(&output).contains("connection refused, nothing listens on that port"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_broken_identity_is_named_before_connecting() {
    let (files, pki) = (Files::new(), TestPki::new());
    pki.write(&files);
    // The client certificate with the server's key.
    let cert = files.path("client.pem").to_string_lossy().into_owned();
    let key = files.path("server.key").to_string_lossy().into_owned();
    let (code, output) = probe("127.0.0.1:9", &["--cert", &cert, "--key", &key]).await;
    assert_eq!(code, 2, "{output}");
    assert!(
        diagnosis(&output).contains(&format!(
            "private key {key} does not match certificate {cert}"
        )),
        "{output}"
    );
    assert!(!output.contains("connect"), "nothing is dialled: {output}");
}
