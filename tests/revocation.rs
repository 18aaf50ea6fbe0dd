//! Revocation (CRLs) in both modes, and OCSP stapling of our own certificate.

mod support;

use certgate::pki::{LeafSpec, Usage};
use std::sync::{Arc, Mutex};
use support::*;
use time::{Duration, OffsetDateTime};

fn serial_hex(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.tbs_certificate.serial.to_str_radix(16).to_uppercase()
}

fn in_a_week() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::days(7)
}

/// The test PKI on disk and a client certificate of its CA to revoke.
fn with_a_revoked_client() -> (Files, TestPki, certgate::pki::Issued) {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let revoked = pki
        .ca
        .leaf(&LeafSpec::new("revoked-client", Usage::Client))
        .unwrap();
    (files, pki, revoked)
}

#[tokio::test]
async fn revoked_client_is_refused_with_its_serial_and_others_pass() {
    let (files, pki, revoked) = with_a_revoked_client();
    let crl = files.write(
        "ca.crl",
        pki.ca.crl(&[&revoked.cert_der], in_a_week()).unwrap(),
    );
    let server = start_server_mode(&files, &["--crl", &crl]).await;

    let refused = tls_client(
        &pki.ca.issued.cert_pem,
        Some((&revoked.cert_pem, &revoked.key_pem)),
    );
    assert!(https_get(server.addr(), refused, "/", &[]).await.is_err());
    let serial = serial_hex(&revoked.cert_der);
    server.wait_for_log(&[
        "TLS handshake with",
        "certificate revoked",
        &serial,
        "CN=revoked-client",
    ]);

    let good = pki.client_config();
    assert_eq!(
        https_get(server.addr(), good, "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn revoked_intermediate_refuses_its_whole_branch() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let intermediate = pki.ca.intermediate("compromised CA").unwrap();
    let leaf = intermediate
        .leaf(&LeafSpec::new("under-compromised", Usage::Client))
        .unwrap();
    let root_crl = pki
        .ca
        .crl(&[&intermediate.issued.cert_der], in_a_week())
        .unwrap();
    let crl = files.write("root.crl", root_crl);
    let intermediate_crl = files.write(
        "intermediate.crl",
        intermediate.crl(&[], in_a_week()).unwrap(),
    );
    let server = start_server_mode(&files, &["--crl", &crl, "--crl", &intermediate_crl]).await;
    let chain = format!("{}{}", leaf.cert_pem, intermediate.issued.cert_pem);
    let client = tls_client(&pki.ca.issued.cert_pem, Some((&chain, &leaf.key_pem)));
    assert!(https_get(server.addr(), client, "/", &[]).await.is_err());
    server.wait_for_log(&[
        "certificate revoked",
        &serial_hex(&intermediate.issued.cert_der),
        "CN=compromised CA",
    ]);
}

#[tokio::test]
async fn a_ca_without_a_crl_refuses_its_chain_as_nginx_does() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let intermediate = pki.ca.intermediate("forgotten CA").unwrap();
    let leaf = intermediate
        .leaf(&LeafSpec::new("under-forgotten", Usage::Client))
        .unwrap();
    // Only the root's CRL: nothing says whether the intermediate's leaves are revoked.
    let crl = files.write("root.crl", pki.ca.crl(&[], in_a_week()).unwrap());
    let server = start_server_mode(&files, &["--crl", &crl]).await;
    let chain = format!("{}{}", leaf.cert_pem, intermediate.issued.cert_pem);
    let client = tls_client(&pki.ca.issued.cert_pem, Some((&chain, &leaf.key_pem)));
    assert!(https_get(server.addr(), client, "/", &[]).await.is_err());
    server.wait_for_log(&["no CRL for issuer \"CN=forgotten CA,O=certgate test PKI\""]);
}

#[tokio::test]
async fn der_crl_is_read_too() {
    let (files, pki, revoked) = with_a_revoked_client();
    let pem = pki.ca.crl(&[&revoked.cert_der], in_a_week()).unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|crl: rustls::pki_types::CertificateRevocationListDer<'_>| crl.to_vec())
        .unwrap();
    let crl = files.write("ca.crl.der", der);
    let server = start_server_mode(&files, &["--crl", &crl]).await;
    let refused = tls_client(
        &pki.ca.issued.cert_pem,
        Some((&revoked.cert_pem, &revoked.key_pem)),
    );
    assert!(https_get(server.addr(), refused, "/", &[]).await.is_err());
    server.wait_for_log(&["certificate revoked"]);
}

#[tokio::test]
async fn expired_crl_is_reported_and_refuses_by_default() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let stale = pki
        .ca
        .crl(&[], OffsetDateTime::now_utc() - Duration::minutes(30))
        .unwrap();
    let crl = files.write("stale.crl", stale);
    let server = start_server_mode(&files, &["--crl", &crl]).await;
    server.wait_for_log(&[
        "WARN",
        &format!("CRL {crl}"),
        "expired at",
        "refused until it is renewed",
    ]);
    let client = pki.client_config();
    assert!(https_get(server.addr(), client, "/", &[]).await.is_err());
    server.wait_for_log(&["TLS handshake with", "the CRL for this chain expired at"]);
}

#[tokio::test]
async fn expired_crl_can_be_allowed() {
    let (files, pki, revoked) = with_a_revoked_client();
    let stale = pki
        .ca
        .crl(
            &[&revoked.cert_der],
            OffsetDateTime::now_utc() - Duration::minutes(30),
        )
        .unwrap();
    let crl = files.write("stale.crl", stale);
    let server = start_server_mode(&files, &["--crl", &crl, "--crl-expired", "allow"]).await;
    server.wait_for_log(&["WARN", "expired at", "still checked against it"]);
    let good = pki.client_config();
    assert_eq!(
        https_get(server.addr(), good, "/", &[])
            .await
            .unwrap()
            .status,
        200
    );
    // Still a revocation list: what it revokes stays revoked.
    let refused = tls_client(
        &pki.ca.issued.cert_pem,
        Some((&revoked.cert_pem, &revoked.key_pem)),
    );
    assert!(https_get(server.addr(), refused, "/", &[]).await.is_err());
}

#[tokio::test]
async fn client_mode_refuses_a_revoked_upstream_with_502() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let upstream = CountingUpstream::start(&pki, false).await;
    let crl = files.write(
        "ca.crl",
        pki.ca.crl(&[&pki.server.cert_der], in_a_week()).unwrap(),
    );
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    let url = format!("https://localhost:{}", upstream.address.port());
    let proxy = Certgate::start(&[
        "client",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &url,
        "--cert",
        &p("client.pem"),
        "--key",
        &p("client.key"),
        "--ca",
        &p("ca.pem"),
        "--crl",
        &crl,
    ]);
    let answer = http_get(proxy.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.body.contains("certificate revoked"),
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains(&serial_hex(&pki.server.cert_der)),
        "{}",
        answer.body
    );
}

#[test]
fn a_file_that_is_not_a_crl_is_refused_at_start() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let not_a_crl = files.path("ca.pem").to_string_lossy().into_owned();
    let args = server_mode_args(&files, "127.0.0.1:9", &["--crl", &not_a_crl]);
    let (code, output) = run_to_exit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("--crl"), "{output}");
}

/// Records the OCSP response the server staples, then verifies normally.
#[derive(Debug)]
struct StapleRecorder {
    inner: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    seen: Arc<Mutex<Option<Vec<u8>>>>,
}

impl rustls::client::danger::ServerCertVerifier for StapleRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(ocsp_response.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[tokio::test]
async fn ocsp_response_is_stapled_for_clients_that_ask() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    // The response is opaque to the server: it staples the file's bytes as they are.
    let response: Vec<u8> = (0..=255u8).cycle().take(700).collect();
    let ocsp = files.write("server.ocsp", &response);
    let server = start_server_mode(&files, &["--ocsp-response", &ocsp]).await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            pki.ca.issued.cert_der.clone(),
        ))
        .unwrap();
    let seen = Arc::new(Mutex::new(None));
    let recorder = StapleRecorder {
        inner: rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .unwrap(),
        seen: seen.clone(),
    };
    let base = pki.client_config();
    let mut config = (*base).clone();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(recorder));
    let answer = https_get(server.addr(), Arc::new(config), "/", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(seen.lock().unwrap().as_deref(), Some(&response[..]));
}

/// A CA with the same name as the test PKI's root but another key: what it signs looks like
/// the root's CRL to anything that compares names only.
fn impostor_root() -> certgate::pki::Authority {
    certgate::pki::Authority::root("test root CA", certgate::pki::KeyType::EcdsaP256).unwrap()
}

#[test]
fn check_refuses_a_crl_signed_by_another_key() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let crl = files.write("ca.crl", impostor_root().crl(&[], in_a_week()).unwrap());
    let config = files.write(
        "certgate.toml",
        "[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:8000\"\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\ncrl = \"ca.crl\"\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{config}:8: key 'crl'")),
        "{output}"
    );
    assert!(output.contains(&crl), "{output}");
    assert!(
        output.contains("signature does not verify against the CA \"CN=test root CA"),
        "{output}"
    );
}

#[tokio::test]
async fn a_crl_signed_by_another_key_at_reload_keeps_the_old_snapshot_serving() {
    let (files, pki, revoked) = with_a_revoked_client();
    let crl = files.write(
        "ca.crl",
        pki.ca.crl(&[&revoked.cert_der], in_a_week()).unwrap(),
    );
    let server = start_server_mode(&files, &["--crl", &crl]).await;
    files.write("ca.crl", impostor_root().crl(&[], in_a_week()).unwrap());
    server.wait_for_log(&[
        "listener \"edge\": certificate reload failed, still serving the previous ones",
        &crl,
        "signature does not verify against the CA",
    ]);
    // The old snapshot: good clients pass, and what it revoked stays revoked.
    let answer = https_get(server.addr(), pki.client_config(), "/", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let refused = tls_client(
        &pki.ca.issued.cert_pem,
        Some((&revoked.cert_pem, &revoked.key_pem)),
    );
    assert!(https_get(server.addr(), refused, "/", &[]).await.is_err());
}

#[tokio::test]
async fn a_crl_for_a_sent_intermediate_signed_by_another_key_refuses_that_branch() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let intermediate = pki.ca.intermediate("issuing CA").unwrap();
    let leaf = intermediate
        .leaf(&LeafSpec::new("under-issuing", Usage::Client))
        .unwrap();
    // Same name as the intermediate, another key; the intermediate is not in the bundle, so
    // only the handshake can tell.
    let impostor =
        certgate::pki::Authority::root("issuing CA", certgate::pki::KeyType::EcdsaP256).unwrap();
    assert_eq!(
        x509_parser::parse_x509_certificate(&impostor.issued.cert_der)
            .unwrap()
            .1
            .subject()
            .as_raw(),
        x509_parser::parse_x509_certificate(&intermediate.issued.cert_der)
            .unwrap()
            .1
            .subject()
            .as_raw()
    );
    let root_crl = files.write("root.crl", pki.ca.crl(&[], in_a_week()).unwrap());
    let forged = files.write("issuing.crl", impostor.crl(&[], in_a_week()).unwrap());
    let server = start_server_mode(&files, &["--crl", &root_crl, "--crl", &forged]).await;
    let chain = format!("{}{}", leaf.cert_pem, intermediate.issued.cert_pem);
    let client = tls_client(&pki.ca.issued.cert_pem, Some((&chain, &leaf.key_pem)));
    assert!(https_get(server.addr(), client, "/", &[]).await.is_err());
    server.wait_for_log(&[
        "the CRL for issuer \"CN=issuing CA,O=certgate test PKI\"",
        &forged,
        "is not signed by that CA",
    ]);
    // Clients of the root itself are unaffected.
    let answer = https_get(server.addr(), pki.client_config(), "/", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[test]
fn a_cut_short_crl_is_refused_in_words_naming_the_file() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let pem = pki.ca.crl(&[], in_a_week()).unwrap();
    let der: Vec<u8> = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|crl: rustls::pki_types::CertificateRevocationListDer<'_>| crl.to_vec())
        .unwrap();
    let crl = files.write("ca.crl", &der[..der.len() / 2]);
    let args = server_mode_args(&files, "127.0.0.1:9", &["--crl", &crl]);
    let (code, output) = run_to_exit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("--crl: {crl}: not a well-formed X.509 CRL")),
        "{output}"
    );
    assert!(
        output.contains("its DER encoding is broken or cut short"),
        "{output}"
    );
    assert!(output.contains("openssl ca -gencrl"), "{output}");
    for parser_word in ["BadDer", "Parsing Error", "Incomplete", "Err("] {
        assert!(!output.contains(parser_word), "{parser_word}: {output}");
    }
}
