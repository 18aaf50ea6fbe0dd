//! No spelling of an identity header reaches a backend: not through `_` for `-` (which CGI and
//! WSGI read as the same variable), not in any letter case, not over HTTP/2, not under the names
//! other proxies use. The backend is a real WSGI server (Python's wsgiref), which joins
//! `X_Client_Cert` and `X-Client-Cert` into one `HTTP_X_CLIENT_CERT`.

mod support;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::ServerName;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use support::*;

/// A wsgiref app answering with its environ's HTTP_* variables, one `KEY=VALUE` per line.
const WSGI_APP: &str = r#"
import sys
from wsgiref.simple_server import make_server, WSGIRequestHandler

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

def app(environ, start_response):
    lines = sorted(f"{k}={v}" for k, v in environ.items() if k.startswith("HTTP_"))
    body = ("\n".join(lines) + "\n").encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"#;

/// A running wsgiref server; killed when dropped.
struct WsgiBackend {
    child: Child,
    address: SocketAddr,
}

impl WsgiBackend {
    fn start() -> WsgiBackend {
        let mut child = Command::new("python3")
            .args(["-c", WSGI_APP])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the WSGI server prints its port");
        let port: u16 = line.trim().parse().expect("a port");
        WsgiBackend {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for WsgiBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Identity headers of certgate's formats and of other proxies (AWS ALB, Azure, HAProxy and
/// nginx setups), each spelled every way a client might: `_` for `-`, mixed, any case.
fn forged_spellings() -> Vec<String> {
    let names = [
        "x-client-cert",
        "x-client-verify",
        "x-ssl-client-cert",
        "x-ssl-client-s-dn",
        "ssl-client-cert",
        "ssl-client-verify",
        "client-cert",
        "client-cert-chain",
        "x-forwarded-client-cert",
        "x-forwarded-tls-client-cert",
        "x-forwarded-tls-client-cert-info",
        "x-amzn-mtls-clientcert",
        "x-amzn-mtls-clientcert-leaf",
        "x-arr-clientcert",
        "x-client-dn",
        "x-client-cn",
    ];
    let mut spellings = Vec::new();
    for name in names {
        let title: String = name
            .split('-')
            .map(|w| {
                let mut w = w.to_string();
                w[..1].make_ascii_uppercase();
                w
            })
            .collect::<Vec<_>>()
            .join("_");
        spellings.push(name.replace('-', "_"));
        spellings.push(title);
        // One dash left: `X_Client-Cert`.
        spellings.push(name.replacen('-', "_", 1));
        spellings.push(name.to_ascii_uppercase());
    }
    spellings.sort();
    spellings.dedup();
    spellings
}

/// The forged value sent under `name`; it names the spelling, so a leak says which one.
fn forged_value(name: &str) -> String {
    format!("FORGED-IDENTITY-{name}")
}

async fn tls_stream(
    address: SocketAddr,
    mut config: rustls::ClientConfig,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    config.alpn_protocols = vec![alpn.to_vec()];
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect("handshake")
}

/// GET / through server mode with `headers`, over HTTP/1.1 or HTTP/2; the app's environ.
async fn environ_through(
    address: SocketAddr,
    config: &rustls::ClientConfig,
    http2: bool,
    headers: &[(String, String)],
) -> String {
    let alpn: &[u8] = if http2 { b"h2" } else { b"http/1.1" };
    let io = hyper_util::rt::TokioIo::new(tls_stream(address, config.clone(), alpn).await);
    let mut request = hyper::Request::get("https://localhost/").header("host", "localhost");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = if http2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

fn environ_value<'a>(environ: &'a str, key: &str) -> Option<&'a str> {
    environ
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

fn setup(extra: &[&str]) -> (Files, TestPki, WsgiBackend, Certgate) {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = WsgiBackend::start();
    let certgate = Certgate::start(&server_mode_args(
        &files,
        &format!("http://{}", backend.address),
        extra,
    ));
    (files, pki, backend, certgate)
}

fn all_forgeries() -> Vec<(String, String)> {
    forged_spellings()
        .into_iter()
        .map(|name| {
            let value = forged_value(&name);
            (name, value)
        })
        .collect()
}

async fn assert_no_forgery_reaches_the_app(certgate: &Certgate, pki: &TestPki) {
    let config = (*pki.client_config()).clone();
    let forgeries = all_forgeries();
    assert!(forgeries.len() >= 39, "{} spellings", forgeries.len());
    let expected_cert = nginx_escaped(&pki.client.cert_pem);
    for http2 in [false, true] {
        let environ = environ_through(certgate.addr(), &config, http2, &forgeries).await;
        assert!(
            !environ.contains("FORGED-IDENTITY"),
            "a forged identity reached the WSGI app (HTTP/2: {http2}):\n{environ}"
        );
        // What the app reads as the identity is exactly the verified certificate.
        assert_eq!(
            environ_value(&environ, "HTTP_X_CLIENT_CERT"),
            Some(expected_cert.as_str()),
            "HTTP/2: {http2}\n{environ}"
        );
        assert_eq!(
            environ_value(&environ, "HTTP_X_CLIENT_VERIFY"),
            Some("SUCCESS")
        );
    }
}

#[tokio::test]
async fn no_spelling_of_an_identity_header_reaches_a_wsgi_app() {
    let (_files, pki, _backend, certgate) = setup(&[]);
    assert_no_forgery_reaches_the_app(&certgate, &pki).await;
}

#[tokio::test]
async fn identity_spellings_are_stripped_even_where_underscores_are_allowed() {
    let (_files, pki, _backend, certgate) = setup(&["--underscores-in-headers"]);
    assert_no_forgery_reaches_the_app(&certgate, &pki).await;
    // The setting does let other underscored headers through.
    let headers = [("X_Tenant_Id".to_string(), "blue".to_string())];
    let environ = environ_through(certgate.addr(), &pki.client_config(), false, &headers).await;
    assert_eq!(environ_value(&environ, "HTTP_X_TENANT_ID"), Some("blue"));
}

#[tokio::test]
async fn headers_with_underscores_are_dropped_by_default_and_said_once_per_connection() {
    let (_files, pki, _backend, certgate) = setup(&[]);
    let headers = [
        ("X_Tenant_Id".to_string(), "forged-tenant".to_string()),
        ("X-Tenant-Id".to_string(), "blue".to_string()),
        ("Another_One".to_string(), "x".to_string()),
    ];
    for http2 in [false, true] {
        let environ = environ_through(certgate.addr(), &pki.client_config(), http2, &headers).await;
        // Only the dashed spelling arrives, alone (wsgiref would join the two with ',').
        assert_eq!(
            environ_value(&environ, "HTTP_X_TENANT_ID"),
            Some("blue"),
            "{environ}"
        );
        assert_eq!(environ_value(&environ, "HTTP_ANOTHER_ONE"), None);
    }
    certgate.wait_for_log(&["'_' in its name", "underscores_in_headers"]);
    let said = certgate.logs().matches("'_' in its name").count();
    assert_eq!(said, 2, "once per connection:\n{}", certgate.logs());
}

#[tokio::test]
async fn a_client_without_a_certificate_cannot_borrow_another_identity() {
    let (_files, pki, _backend, certgate) = setup(&["--verify-client", "optional"]);
    // svc-c's public certificate, sent by a client that has no certificate at all.
    let someone_else = pki
        .ca
        .leaf(&certgate::pki::LeafSpec::new(
            "svc-c",
            certgate::pki::Usage::Client,
        ))
        .unwrap();
    let escaped = nginx_escaped(&someone_else.cert_pem);
    let anonymous = (*tls_client(&pki.ca.issued.cert_pem, None)).clone();
    for http2 in [false, true] {
        let headers: Vec<(String, String)> = ["X_Client_Cert", "x_client_cert", "X_Client-Cert"]
            .iter()
            .map(|n| (n.to_string(), escaped.clone()))
            .chain([("X_Client_Verify".to_string(), "SUCCESS".to_string())])
            .collect();
        let environ = environ_through(certgate.addr(), &anonymous, http2, &headers).await;
        assert_eq!(
            environ_value(&environ, "HTTP_X_CLIENT_CERT"),
            None,
            "{environ}"
        );
        assert_eq!(
            environ_value(&environ, "HTTP_X_CLIENT_VERIFY"),
            Some("NONE"),
            "{environ}"
        );
    }
}

#[tokio::test]
async fn a_trusted_forwarder_opens_no_identity_spelling_to_anyone_else() {
    // The test client is not the trusted proxy: every forgery is stripped as before, even
    // with underscores allowed.
    let (_files, pki, _backend, certgate) = setup(&[
        "--underscores-in-headers",
        "--trusted-forwarder",
        "cn:proxy-b",
    ]);
    assert_no_forgery_reaches_the_app(&certgate, &pki).await;
}

#[tokio::test]
async fn a_trusted_forwarder_keeps_its_identity_headers_but_not_spellings_of_ours() {
    let (_files, pki, _backend, certgate) = setup(&[
        "--underscores-in-headers",
        "--trusted-forwarder",
        "cn:test-client",
    ]);
    let headers = [
        ("X-SSL-Client-S-DN".to_string(), "CN=outer".to_string()),
        (
            "X_Client_Cert".to_string(),
            "FORGED-IDENTITY-underscore".to_string(),
        ),
        (
            "X-CLIENT-VERIFY".to_string(),
            "FORGED-IDENTITY-verify".to_string(),
        ),
    ];
    for http2 in [false, true] {
        let environ = environ_through(certgate.addr(), &pki.client_config(), http2, &headers).await;
        assert_eq!(
            environ_value(&environ, "HTTP_X_SSL_CLIENT_S_DN"),
            Some("CN=outer"),
            "{environ}"
        );
        assert!(!environ.contains("FORGED-IDENTITY"), "{environ}");
        assert_eq!(
            environ_value(&environ, "HTTP_X_CLIENT_CERT"),
            Some(nginx_escaped(&pki.client.cert_pem).as_str())
        );
    }
}
