//! Test harness: a per-test PKI on disk, certgate as a real process, an echo backend, and
//! HTTP(S) clients. Everything binds port 0 on 127.0.0.1.
#![allow(dead_code)] // each test binary uses a different part of the harness

use certgate::pki::{Authority, Issued, KeyType, LeafSpec, Usage};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod hsm;
pub mod nginx;

pub const BIN: &str = env!("CARGO_BIN_EXE_certgate");

/// A temporary directory for one test's certificates, keys and configs.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Files {
        Files {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn write_mode(&self, name: &str, contents: &[u8], mode: u32) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write test file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path.to_string_lossy().into_owned()
    }

    /// A public file (certificate, CA bundle, config).
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        self.write_mode(name, contents.as_ref(), 0o644)
    }

    /// A private key, mode 0600 as the seed asks.
    pub fn write_key(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        self.write_mode(name, contents.as_ref(), 0o600)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A root CA with a server certificate for 127.0.0.1/localhost and a client certificate.
pub struct TestPki {
    pub ca: Authority,
    pub server: Issued,
    pub client: Issued,
}

impl TestPki {
    pub fn new() -> TestPki {
        let ca = Authority::root("test root CA", KeyType::EcdsaP256).unwrap();
        let server = ca
            .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost", "127.0.0.1"]))
            .unwrap();
        let client = ca
            .leaf(&LeafSpec::new("test-client", Usage::Client))
            .unwrap();
        TestPki { ca, server, client }
    }

    /// A rustls client trusting the CA and presenting the client certificate.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        tls_client(
            &self.ca.issued.cert_pem,
            Some((&self.client.cert_pem, &self.client.key_pem)),
        )
    }

    /// Writes ca.pem, server.pem, server.key, client.pem, client.key.
    pub fn write(&self, files: &Files) {
        files.write("ca.pem", &self.ca.issued.cert_pem);
        files.write("server.pem", &self.server.cert_pem);
        files.write_key("server.key", &self.server.key_pem);
        files.write("client.pem", &self.client.cert_pem);
        files.write_key("client.key", &self.client.key_pem);
    }
}

/// A running certgate process; killed when dropped.
pub struct Certgate {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub addresses: Vec<(String, SocketAddr)>,
}

fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
    logs: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            logs.lock().unwrap().push(line);
        }
    })
}

/// The listener name and address in a start-up line.
fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    let name = line
        .split("listener \"")
        .nth(1)?
        .split('"')
        .next()?
        .to_string();
    let address = line
        .split("listening on ")
        .nth(1)?
        .split(',')
        .next()?
        .trim();
    Some((name, address.parse().ok()?))
}

impl Certgate {
    /// Starts `certgate ARGS` and waits until `listeners` listeners are bound.
    pub fn start_with<S: AsRef<std::ffi::OsStr>>(args: &[S], listeners: usize) -> Certgate {
        Certgate::start_env(args, listeners, &[])
    }

    /// `start_with`, with extra environment variables.
    pub fn start_env<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        listeners: usize,
        env: &[(&str, &str)],
    ) -> Certgate {
        Certgate::spawn(Command::new(BIN).args(args), listeners, env)
    }

    /// certgate started by another program (a shell that sets limits first, say).
    pub fn start_with_program<S: AsRef<std::ffi::OsStr>>(
        program: &str,
        args: &[S],
        listeners: usize,
    ) -> Certgate {
        Certgate::spawn(Command::new(program).args(args), listeners, &[])
    }

    fn spawn(command: &mut Command, listeners: usize, env: &[(&str, &str)]) -> Certgate {
        let mut child = command
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,certgate=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start certgate");
        let logs = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stderr.take().unwrap(), logs.clone());
        collect_lines(child.stdout.take().unwrap(), logs.clone());
        let mut process = Certgate {
            child,
            logs,
            addresses: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            process.addresses = process
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| parse_listening(l))
                .collect();
            if process.addresses.len() >= listeners {
                return process;
            }
            if let Ok(Some(status)) = process.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "certgate exited ({status}) before listening:\n{}",
                    process.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "certgate did not start:\n{}",
                process.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Certgate {
        Certgate::start_with(args, 1)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addresses[0].1
    }

    /// The address of the listener named `name` (e.g. "admin" beside "edge").
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.addresses
            .iter()
            .find(|(listener, _)| listener == name)
            .unwrap_or_else(|| panic!("no listener \"{name}\"; logs:\n{}", self.logs()))
            .1
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Waits for a log line containing every one of `needles`; returns it.
    pub fn wait_for_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line containing {needles:?}; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal and waits for the exit code.
    pub fn signal_and_wait(mut self, signal: &str) -> i32 {
        Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "certgate did not exit:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Certgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs certgate to completion (for commands that should fail or finish), with a timeout.
pub fn run_to_exit(args: &[&str]) -> (i32, String) {
    run_to_exit_env(args, &[])
}

/// `run_to_exit`, with extra environment variables.
pub fn run_to_exit_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start certgate");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        collect_lines(child.stderr.take().unwrap(), logs.clone()),
        collect_lines(child.stdout.take().unwrap(), logs.clone()),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "certgate {args:?} did not exit:\n{}",
                logs.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipes close with the process: every line is in once the readers end.
    for reader in readers {
        let _ = reader.join();
    }
    let output = logs.lock().unwrap().join("\n");
    (status.code().unwrap_or(-1), output)
}

/// A port on 127.0.0.1 that was free a moment ago, for a config that must name its port
/// before certgate binds it.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the echo backend on 127.0.0.1:0.
pub async fn spawn_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(certgate::echo::serve(listener));
    address
}

/// A response: status and body text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// How long one test exchange may take before the test fails saying so, rather than hanging
/// a CI run.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

async fn send<IO>(io: IO, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(io, path, headers)).await {
        Ok(result) => result,
        Err(_) => panic!("GET {path}: no complete answer within {EXCHANGE_TIMEOUT:?}"),
    }
}

async fn exchange<IO>(io: IO, path: &str, headers: &[(&str, &str)]) -> Result<Answer, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path);
    // A Host given by the caller replaces the default one.
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", "backend.example");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .map_err(|e| format!("request: {e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A plain HTTP/1.1 GET (to client mode or a backend).
pub async fn http_get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    send(stream, path, headers).await.unwrap()
}

/// A rustls client config trusting `ca_pem`, presenting `identity` (chain PEM, key PEM).
pub fn tls_client(ca_pem: &str, identity: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    tls_client_with(
        ca_pem,
        identity,
        &[&rustls::version::TLS12, &rustls::version::TLS13],
        None,
    )
}

pub fn tls_client_with(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(suites) = suites {
        provider.cipher_suites = suites;
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// An HTTPS GET to server mode. Errors (handshake or first read) come back as text.
pub async fn https_get(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let handshake = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), stream);
    let tls = tokio::time::timeout(EXCHANGE_TIMEOUT, handshake)
        .await
        .unwrap_or_else(|_| panic!("no TLS handshake with {address} within {EXCHANGE_TIMEOUT:?}"))
        .map_err(|e| format!("tls: {e}"))?;
    send(tls, path, headers).await
}

/// A TLS upstream (standing in for server A) that counts handshakes and resumptions.
pub struct CountingUpstream {
    pub address: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub full_handshakes: Arc<AtomicUsize>,
    pub resumed_handshakes: Arc<AtomicUsize>,
}

impl CountingUpstream {
    /// Requires client certificates from `ca`; answers "ok", closing the connection after each
    /// response when `close_each` (to force new connections).
    pub async fn start(pki: &TestPki, close_each: bool) -> CountingUpstream {
        CountingUpstream::serve(pki, pki, close_each).await
    }

    /// Presents `identity.server` (a PEM chain) and trusts clients of `trust.ca`.
    pub async fn start_with_chain(identity: &TestPki, trust: &TestPki) -> CountingUpstream {
        CountingUpstream::serve(identity, trust, false).await
    }

    async fn serve(identity: &TestPki, trust: &TestPki, close_each: bool) -> CountingUpstream {
        let pki = identity;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(trust.ca.issued.cert_der.clone()))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                CertificateDer::pem_slice_iter(pki.server.cert_pem.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = CountingUpstream {
            address: listener.local_addr().unwrap(),
            connections: Arc::default(),
            full_handshakes: Arc::default(),
            resumed_handshakes: Arc::default(),
        };
        let (connections, full, resumed) = (
            upstream.connections.clone(),
            upstream.full_handshakes.clone(),
            upstream.resumed_handshakes.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                connections.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let (full, resumed) = (full.clone(), resumed.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    match tls.get_ref().1.handshake_kind() {
                        Some(rustls::HandshakeKind::Resumed) => {
                            resumed.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => full.fetch_add(1, Ordering::SeqCst),
                    };
                    let service = hyper::service::service_fn(move |_request| async move {
                        let mut response = hyper::Response::new(Full::new(Bytes::from("ok")));
                        if close_each {
                            response
                                .headers_mut()
                                .insert("connection", "close".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        upstream
    }
}

/// The arguments of server mode (named "edge") towards `upstream`, using the `TestPki` files
/// in `files`, plus `extra` flags.
pub fn server_mode_args(files: &Files, upstream: &str, extra: &[&str]) -> Vec<String> {
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    let mut args: Vec<String> = [
        "server",
        "--name",
        "edge",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        upstream,
        "--cert",
        &p("server.pem"),
        "--key",
        &p("server.key"),
        "--client-ca",
        &p("ca.pem"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Server mode (named "edge") in front of a fresh echo backend, using the `TestPki` files
/// already written to `files`, plus `extra` flags.
pub async fn start_server_mode(files: &Files, extra: &[&str]) -> Certgate {
    let backend = spawn_echo().await;
    Certgate::start(&server_mode_args(
        files,
        &format!("http://{backend}"),
        extra,
    ))
}

/// Every value of a header in an echo answer, in order.
pub fn echoed_header<'a>(echoed: &'a str, name: &str) -> Vec<&'a str> {
    echoed
        .lines()
        .filter_map(|line| line.split_once(": "))
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
        .collect()
}

/// nginx's `$ssl_client_escaped_cert`, written out independently of certgate's encoder:
/// every byte but A-Z a-z 0-9 - . _ ~ becomes %XX (uppercase).
pub fn nginx_escaped(pem: &str) -> String {
    pem.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Client mode ("proxy-b") towards `server_a`, presenting the `TestPki` client certificate
/// from `files`, plus `extra` flags.
pub fn start_client_mode(files: &Files, server_a: &Certgate, extra: &[&str]) -> Certgate {
    let args = client_mode_args(files, server_a.addr(), extra);
    Certgate::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The arguments of client mode ("proxy-b") towards server mode at `server_a`, presenting the
/// `TestPki` client certificate from `files`, plus `extra` flags.
pub fn client_mode_args(files: &Files, server_a: SocketAddr, extra: &[&str]) -> Vec<String> {
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    let upstream = format!("https://localhost:{}", server_a.port());
    let mut args: Vec<String> = [
        "client",
        "--name",
        "proxy-b",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--cert",
        &p("client.pem"),
        "--key",
        &p("client.key"),
        "--ca",
        &p("ca.pem"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The seed topology: server mode ("edge") in front of an echo backend, and client mode
/// ("proxy-b") in front of it, on the `TestPki` files in `files`.
pub async fn start_chain(
    files: &Files,
    server_extra: &[&str],
    client_extra: &[&str],
) -> (Certgate, Certgate) {
    let server_a = start_server_mode(files, server_extra).await;
    let proxy_b = start_client_mode(files, &server_a, client_extra);
    (server_a, proxy_b)
}

/// A server certificate for localhost that expires in `days` days (issued 80 days ago).
pub fn server_cert_expiring_in(pki: &TestPki, days: i64) -> Issued {
    let now = time::OffsetDateTime::now_utc();
    pki.ca
        .leaf(
            &LeafSpec::new("localhost", Usage::Server)
                .names(&["localhost"])
                .validity(
                    now - time::Duration::days(80),
                    now + time::Duration::days(days),
                ),
        )
        .unwrap()
}

/// An HTTP/1.1 keep-alive connection over mTLS, to send several requests on.
pub async fn keep_alive(
    address: SocketAddr,
    client: Arc<rustls::ClientConfig>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .unwrap();
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    sender
}

/// A GET for `keep_alive` senders.
pub fn get(path: &str) -> hyper::Request<http_body_util::Empty<Bytes>> {
    hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::new())
        .unwrap()
}
