//! Every handshake failure cause is refused and logged in plain words with listener and peer;
//! verify depth is counted as nginx counts it.

mod support;

use certgate::pki::{Authority, Issued, KeyType, LeafSpec, Usage};
use rustls::crypto::aws_lc_rs::cipher_suite;
use support::*;
use time::macros::datetime;

struct ServerA {
    _files: Files,
    pki: TestPki,
    process: Certgate,
}

async fn server_a(extra: &[&str]) -> ServerA {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let process = start_server_mode(&files, extra).await;
    ServerA {
        _files: files,
        pki,
        process,
    }
}

impl ServerA {
    /// Connects with `identity` and asserts the connection is refused.
    async fn refuses(&self, identity: Option<(&str, &str)>) {
        let client = tls_client(&self.pki.ca.issued.cert_pem, identity);
        let result = https_get(self.process.addr(), client, "/", &[]).await;
        assert!(result.is_err(), "expected a refusal, got {result:?}");
    }

    async fn accepts(&self, chain: &str, key: &str) {
        let client = tls_client(&self.pki.ca.issued.cert_pem, Some((chain, key)));
        let answer = https_get(self.process.addr(), client, "/", &[]).await;
        assert_eq!(
            answer.as_ref().map(|a| a.status).ok(),
            Some(200),
            "{answer:?}\n{}",
            self.process.logs()
        );
    }

    /// The failure line: listener, peer and the given reason fragments.
    fn logged(&self, reason: &[&str]) -> String {
        let mut needles = vec!["listener \"edge\"", "TLS handshake with 127.0.0.1:"];
        needles.extend_from_slice(reason);
        self.process.wait_for_log(&needles)
    }
}

fn client_leaf(ca: &Authority, spec: LeafSpec) -> Issued {
    ca.leaf(&spec).unwrap()
}

#[tokio::test]
async fn refuses_client_without_certificate() {
    let server = server_a(&[]).await;
    server.refuses(None).await;
    server.logged(&["no client certificate sent"]);
}

#[tokio::test]
async fn refuses_expired_client_cert_naming_not_after() {
    let server = server_a(&[]).await;
    let expired = client_leaf(
        &server.pki.ca,
        LeafSpec::new("expired-client", Usage::Client).validity(
            datetime!(2020-01-01 0:00 UTC),
            datetime!(2021-01-01 0:00 UTC),
        ),
    );
    server
        .refuses(Some((&expired.cert_pem, &expired.key_pem)))
        .await;
    server.logged(&["certificate expired: notAfter 2021-01-01 00:00:00 UTC"]);
}

#[tokio::test]
async fn refuses_not_yet_valid_client_cert_naming_not_before() {
    let server = server_a(&[]).await;
    let future = client_leaf(
        &server.pki.ca,
        LeafSpec::new("future-client", Usage::Client).validity(
            datetime!(2090-01-01 0:00 UTC),
            datetime!(2091-01-01 0:00 UTC),
        ),
    );
    server
        .refuses(Some((&future.cert_pem, &future.key_pem)))
        .await;
    server.logged(&["certificate not yet valid: notBefore 2090-01-01 00:00:00 UTC"]);
}

#[tokio::test]
async fn refuses_unknown_issuer_naming_the_issuer() {
    let server = server_a(&[]).await;
    let stranger_ca = Authority::root("wrong issuer CA", KeyType::EcdsaP256).unwrap();
    let stranger = client_leaf(
        &stranger_ca,
        LeafSpec::new("wrong-issuer-client", Usage::Client),
    );
    server
        .refuses(Some((&stranger.cert_pem, &stranger.key_pem)))
        .await;
    server.logged(&["unknown issuer", "CN=wrong issuer CA,O=certgate test PKI"]);
}

#[tokio::test]
async fn refuses_certificate_without_client_auth_usage() {
    let server = server_a(&[]).await;
    let server_only = client_leaf(&server.pki.ca, LeafSpec::new("server-only", Usage::Server));
    server
        .refuses(Some((&server_only.cert_pem, &server_only.key_pem)))
        .await;
    server.logged(&["wrong key usage", "clientAuth"]);
}

#[tokio::test]
async fn refuses_protocol_version_mismatch() {
    let server = server_a(&["--min-tls-version", "TLSv1.3"]).await;
    let client = tls_client_with(
        &server.pki.ca.issued.cert_pem,
        Some((&server.pki.client.cert_pem, &server.pki.client.key_pem)),
        &[&rustls::version::TLS12],
        None,
    );
    assert!(https_get(server.process.addr(), client, "/", &[])
        .await
        .is_err());
    server.logged(&["protocol version mismatch"]);
}

#[tokio::test]
async fn refuses_cipher_mismatch() {
    let server = server_a(&[
        "--max-tls-version",
        "TLSv1.2",
        "--ciphers",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ])
    .await;
    let client = tls_client_with(
        &server.pki.ca.issued.cert_pem,
        Some((&server.pki.client.cert_pem, &server.pki.client.key_pem)),
        &[&rustls::version::TLS12],
        Some(vec![cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
    );
    assert!(https_get(server.process.addr(), client, "/", &[])
        .await
        .is_err());
    server.logged(&["cipher mismatch"]);
}

#[tokio::test]
async fn refusal_does_not_disturb_other_connections() {
    let server = server_a(&[]).await;
    server.refuses(None).await;
    server
        .accepts(&server.pki.client.cert_pem, &server.pki.client.key_pem)
        .await;
}

/// A client chain with `intermediates` intermediate CAs below the test root: leaf PEM first.
fn chain_with(pki: &TestPki, intermediates: usize) -> (String, String) {
    let mut authorities: Vec<Authority> = Vec::new();
    for level in 0..intermediates {
        let next = match authorities.last() {
            Some(parent) => parent.intermediate(&format!("intermediate {level}")),
            None => pki.ca.intermediate(&format!("intermediate {level}")),
        }
        .unwrap();
        authorities.push(next);
    }
    let signer = authorities.last().unwrap_or(&pki.ca);
    let leaf = signer
        .leaf(&LeafSpec::new("chained-client", Usage::Client))
        .unwrap();
    let mut chain = leaf.cert_pem.clone();
    for authority in authorities.iter().rev() {
        chain.push_str(&authority.issued.cert_pem);
    }
    (chain, leaf.key_pem)
}

#[tokio::test]
async fn verify_depth_1_accepts_one_intermediate_and_refuses_two() {
    let server = server_a(&["--verify-depth", "1"]).await;
    let (one, one_key) = chain_with(&server.pki, 1);
    server.accepts(&one, &one_key).await;
    let (two, two_key) = chain_with(&server.pki, 2);
    server.refuses(Some((&two, &two_key))).await;
    server.logged(&["chain longer than verify depth", "more than 1 intermediate"]);
}

#[tokio::test]
async fn verify_depth_2_accepts_two_intermediates_and_refuses_three() {
    let server = server_a(&["--verify-depth", "2"]).await;
    let (one, one_key) = chain_with(&server.pki, 1);
    server.accepts(&one, &one_key).await;
    let (two, two_key) = chain_with(&server.pki, 2);
    server.accepts(&two, &two_key).await;
    let (three, three_key) = chain_with(&server.pki, 3);
    server.refuses(Some((&three, &three_key))).await;
    server.logged(&["chain longer than verify depth", "more than 2 intermediate"]);
}

#[tokio::test]
async fn verify_depth_0_refuses_any_intermediate() {
    let server = server_a(&["--verify-depth", "0"]).await;
    server
        .accepts(&server.pki.client.cert_pem, &server.pki.client.key_pem)
        .await;
    let (one, one_key) = chain_with(&server.pki, 1);
    server.refuses(Some((&one, &one_key))).await;
    server.logged(&["chain longer than verify depth", "more than 0 intermediate"]);
}

#[tokio::test]
async fn default_verify_depth_is_nginx_default_of_1() {
    let server = server_a(&[]).await;
    let (one, one_key) = chain_with(&server.pki, 1);
    server.accepts(&one, &one_key).await;
    let (two, two_key) = chain_with(&server.pki, 2);
    server.refuses(Some((&two, &two_key))).await;
    server.logged(&["chain longer than verify depth"]);
}

/// A subject is the peer's to choose: a newline in it must not start a forged log line.
#[tokio::test]
async fn a_newline_in_a_refused_subject_cannot_forge_a_log_line() {
    let server = server_a(&["--allow-cn", "billing"]).await;
    let forged = "2026-01-01T00:00:00.000000Z  INFO listener \"edge\": reloaded its certificates";
    let evil = client_leaf(
        &server.pki.ca,
        LeafSpec::new(&format!("intruder\n{forged}"), Usage::Client).names(&["intruder"]),
    );
    server.refuses(Some((&evil.cert_pem, &evil.key_pem))).await;
    let line = server.logged(&["intruder\\x0A2026-01-01"]);
    assert!(
        line.contains("not allowed") || line.contains("allowed"),
        "{line}"
    );
    let logs = server.process.logs();
    assert!(
        !logs.lines().any(|l| l.starts_with(forged)),
        "a forged line:\n{logs}"
    );
}

/// Server mode whose `client_ca` bundle is `bundle_pem`, with the test PKI's server files.
async fn server_with_bundle(pki: &TestPki, bundle_pem: &str, extra: &[&str]) -> (Files, Certgate) {
    let files = Files::new();
    pki.write(&files);
    files.write("ca.pem", bundle_pem);
    let process = start_server_mode(&files, extra).await;
    (files, process)
}

async fn status_for(
    server: &Certgate,
    pki: &TestPki,
    chain: &str,
    key: &str,
) -> Result<u16, String> {
    let client = tls_client(&pki.ca.issued.cert_pem, Some((chain, key)));
    https_get(server.addr(), client, "/", &[])
        .await
        .map(|answer| answer.status)
}

#[tokio::test]
async fn an_intermediate_alone_in_client_ca_ends_chains_only_with_partial_chain() {
    let pki = TestPki::new();
    let intermediate = pki.ca.intermediate("issuing CA").unwrap();
    let leaf = intermediate
        .leaf(&LeafSpec::new("issued-client", Usage::Client))
        .unwrap();
    let (_files, trusting) = server_with_bundle(&pki, &intermediate.issued.cert_pem, &[]).await;
    assert_eq!(
        status_for(&trusting, &pki, &leaf.cert_pem, &leaf.key_pem).await,
        Ok(200)
    );

    // As nginx (OpenSSL without X509_V_FLAG_PARTIAL_CHAIN): the chain must reach a root.
    let (_files, strict) = server_with_bundle(
        &pki,
        &intermediate.issued.cert_pem,
        &["--partial-chain", "false"],
    )
    .await;
    assert!(status_for(&strict, &pki, &leaf.cert_pem, &leaf.key_pem)
        .await
        .is_err());
    strict.wait_for_log(&[
        "TLS handshake with",
        "the chain ends at \"CN=issuing CA,O=certgate test PKI\"",
        "not a self-signed root",
        "partial_chain = true",
    ]);
}

#[tokio::test]
async fn verify_depth_0_counts_an_intermediate_of_the_bundle_when_partial_chain_is_off() {
    let pki = TestPki::new();
    let intermediate = pki.ca.intermediate("issuing CA").unwrap();
    let leaf = intermediate
        .leaf(&LeafSpec::new("issued-client", Usage::Client))
        .unwrap();
    let bundle = format!("{}{}", intermediate.issued.cert_pem, pki.ca.issued.cert_pem);
    let (_files, partial) = server_with_bundle(&pki, &bundle, &["--verify-depth", "0"]).await;
    assert_eq!(
        status_for(&partial, &pki, &leaf.cert_pem, &leaf.key_pem).await,
        Ok(200)
    );

    // nginx counts the intermediate the bundle supplies: leaf, intermediate, root is depth 1.
    let (_files, strict) = server_with_bundle(
        &pki,
        &bundle,
        &["--verify-depth", "0", "--partial-chain", "false"],
    )
    .await;
    assert!(status_for(&strict, &pki, &leaf.cert_pem, &leaf.key_pem)
        .await
        .is_err());
    strict.wait_for_log(&["chain longer than verify depth", "more than 0 intermediate"]);
    // A leaf of the root itself is still within depth 0.
    assert_eq!(
        status_for(&strict, &pki, &pki.client.cert_pem, &pki.client.key_pem).await,
        Ok(200)
    );
}
