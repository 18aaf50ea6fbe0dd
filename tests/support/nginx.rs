//! The seed's nginx configurations as test fixtures, and a backend that records exactly what
//! arrives (parsed leniently, so nginx's folded `$ssl_client_cert` header can be read too).

use super::{Files, TestPki};
use certgate::pki::{Issued, LeafSpec, Usage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nginx");

/// Writes the PKI a fixture refers to under `ssl/` in `files`: server.crt/key, ca.crt,
/// client.crt/key, and client_chain.pem/key (a client certificate from an intermediate, with
/// the intermediate after it).
pub fn write_ssl_dir(files: &Files, pki: &TestPki) {
    std::fs::create_dir_all(files.path("ssl")).unwrap();
    files.write("ssl/server.crt", &pki.server.cert_pem);
    files.write_key("ssl/server.key", &pki.server.key_pem);
    files.write("ssl/ca.crt", &pki.ca.issued.cert_pem);
    files.write("ssl/client.crt", &pki.client.cert_pem);
    files.write_key("ssl/client.key", &pki.client.key_pem);
    let intermediate = pki.ca.intermediate("client intermediate").unwrap();
    let chained = intermediate
        .leaf(&LeafSpec::new("chained-client", Usage::Client))
        .unwrap();
    files.write(
        "ssl/client_chain.pem",
        format!("{}{}", chained.cert_pem, intermediate.issued.cert_pem),
    );
    files.write_key("ssl/client_chain.key", &chained.key_pem);
}

/// Copies fixture `name` into `files` with its `@NAME@` placeholders filled in.
pub fn fixture(files: &Files, name: &str, values: &[(&str, String)]) -> PathBuf {
    let mut text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
    for (placeholder, value) in values {
        text = text.replace(&format!("@{placeholder}@"), value);
    }
    let unfilled = text
        .match_indices('@')
        .any(|(at, _)| text[at + 1..].starts_with(|c: char| c.is_ascii_uppercase()));
    assert!(!unfilled, "unfilled placeholder in {name}:\n{text}");
    files.write(name, text);
    files.path(name)
}

/// One request as the backend received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lowercased names, values as received (folded lines joined with a space).
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A backend that records every request and answers 200 "ok", closing the connection.
pub struct RecordingBackend {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl RecordingBackend {
    pub async fn plain() -> RecordingBackend {
        Self::start(None).await
    }

    /// Over TLS with `identity` (chain and key PEM), requiring client certificates of `ca`.
    pub async fn tls(identity: &Issued, ca: &Issued) -> RecordingBackend {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der.clone()))
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
                    .map(|c| c.unwrap())
                    .collect(),
                PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        Self::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> RecordingBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tls, log) = (tls.clone(), log.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                record(stream, log).await;
                            }
                        }
                        None => record(stream, log).await,
                    }
                });
            }
        });
        RecordingBackend { address, received }
    }

    /// The requests received so far, emptying the record.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut self.received.lock().unwrap())
    }
}

/// Reads one request head (and a Content-Length body), records it and answers.
async fn record<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, log: Arc<Mutex<Vec<Received>>>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
        if data.len() > 1 << 20 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        // nginx folds $ssl_client_cert with "\n\t" (bare LF); RFC 9112 obs-fold -> one space.
        for (index, piece) in line.split('\n').enumerate() {
            if index > 0 || piece.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(piece.trim());
                }
                continue;
            }
            if let Some((name, value)) = piece.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut body = data[head_end + 4..].to_vec();
    // Read the whole body before answering, as a real backend would.
    while (chunked && !body.ends_with(b"0\r\n\r\n")) || (!chunked && body.len() < length) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    log.lock().unwrap().push(Received {
        method,
        path,
        headers,
    });
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .await;
    let _ = stream.shutdown().await;
}

/// nginx's `$ssl_client_cert` as a lenient parser reads it: the PEM lines joined by spaces.
pub fn unfolded_pem(pem: &str) -> String {
    pem.trim_end().lines().collect::<Vec<_>>().join(" ")
}
