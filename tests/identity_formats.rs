//! Each identity header format, checked byte for byte against a value computed here from the
//! format's definition; and no format can be forged by a client.

mod support;

use base64::Engine;
use certgate::pki::{Authority, Issued, LeafSpec, Usage};
use support::echoed_header as header;
use support::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A client certificate below an intermediate, with DNS and SPIFFE SANs and an OU.
struct ChainedClient {
    intermediate: Authority,
    leaf: Issued,
}

impl ChainedClient {
    fn new(pki: &TestPki) -> ChainedClient {
        let intermediate = pki.ca.intermediate("issuing CA").unwrap();
        let leaf = intermediate
            .leaf(
                &LeafSpec::new("billing", Usage::Client)
                    .org_unit("payments")
                    .names(&[
                        "billing.internal",
                        "spiffe://example.org/ns/prod/sa/billing",
                    ]),
            )
            .unwrap();
        ChainedClient { intermediate, leaf }
    }

    fn chain_pem(&self) -> String {
        format!(
            "{}{}",
            self.leaf.cert_pem, self.intermediate.issued.cert_pem
        )
    }
}

async fn request(
    server: &Certgate,
    pki: &TestPki,
    chain: &str,
    key: &str,
    headers: &[(&str, &str)],
) -> String {
    let client = tls_client(&pki.ca.issued.cert_pem, Some((chain, key)));
    let answer = https_get(server.addr(), client, "/", headers)
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, server.logs());
    answer.body
}

fn setup() -> (Files, TestPki, ChainedClient) {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let client = ChainedClient::new(&pki);
    (files, pki, client)
}

#[tokio::test]
async fn rfc9440_headers_are_sf_byte_sequences_of_the_der() {
    let (files, pki, client) = setup();
    let server = start_server_mode(
        &files,
        &["--client-cert-format", "rfc9440", "--verify-depth", "2"],
    )
    .await;
    let body = request(
        &server,
        &pki,
        &client.chain_pem(),
        &client.leaf.key_pem,
        &[],
    )
    .await;
    let leaf = format!(":{}:", B64.encode(&client.leaf.cert_der));
    let chain = format!(":{}:", B64.encode(&client.intermediate.issued.cert_der));
    assert_eq!(header(&body, "client-cert"), vec![leaf.as_str()]);
    assert_eq!(header(&body, "client-cert-chain"), vec![chain.as_str()]);
    // Only the chosen format is sent.
    assert!(header(&body, "x-client-cert").is_empty(), "{body}");
    assert!(
        header(&body, "x-forwarded-client-cert").is_empty(),
        "{body}"
    );
}

#[tokio::test]
async fn rfc9440_chain_is_absent_when_the_client_sent_only_its_leaf() {
    let (files, pki, _) = setup();
    let server = start_server_mode(&files, &["--client-cert-format", "rfc9440"]).await;
    let body = request(
        &server,
        &pki,
        &pki.client.cert_pem,
        &pki.client.key_pem,
        &[],
    )
    .await;
    assert_eq!(header(&body, "client-cert").len(), 1);
    assert!(header(&body, "client-cert-chain").is_empty(), "{body}");
}

#[tokio::test]
async fn xfcc_element_matches_envoy_and_its_cert_equals_the_escaped_pem() {
    let (files, pki, client) = setup();
    let server = start_server_mode(
        &files,
        &[
            "--client-cert-format",
            "escaped-pem",
            "--client-cert-format",
            "xfcc",
            "--verify-depth",
            "2",
        ],
    )
    .await;
    let body = request(
        &server,
        &pki,
        &client.chain_pem(),
        &client.leaf.key_pem,
        &[],
    )
    .await;
    let hash: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &client.leaf.cert_der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cert = nginx_escaped(&client.leaf.cert_pem);
    let chain = format!(
        "{cert}{}",
        nginx_escaped(&client.intermediate.issued.cert_pem)
    );
    let expected = format!(
        "Hash={hash};Cert=\"{cert}\";Chain=\"{chain}\";Subject=\"OU=payments,CN=billing,O=certgate test PKI\";URI=spiffe://example.org/ns/prod/sa/billing;DNS=billing.internal"
    );
    assert_eq!(
        header(&body, "x-forwarded-client-cert"),
        vec![expected.as_str()]
    );
    // Envoy's Cert= and nginx's $ssl_client_escaped_cert are the same bytes.
    assert_eq!(header(&body, "x-client-cert"), vec![cert.as_str()]);
}

/// Go's `url.QueryEscape`, written out here from its definition.
fn go_query_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn traefik_headers_carry_base64_der_and_escaped_info() {
    let (files, pki, client) = setup();
    let server = start_server_mode(
        &files,
        &["--client-cert-format", "traefik", "--verify-depth", "2"],
    )
    .await;
    let body = request(
        &server,
        &pki,
        &client.chain_pem(),
        &client.leaf.key_pem,
        &[],
    )
    .await;
    let certs = format!(
        "{},{}",
        B64.encode(&client.leaf.cert_der),
        B64.encode(&client.intermediate.issued.cert_der)
    );
    assert_eq!(
        header(&body, "x-forwarded-tls-client-cert"),
        vec![certs.as_str()]
    );

    let (_, parsed) = x509_parser::parse_x509_certificate(&client.leaf.cert_der).unwrap();
    let info = format!(
        "Subject=\"O=certgate test PKI,OU=payments,CN=billing\";Issuer=\"O=certgate test PKI,CN=issuing CA\";SerialNumber=\"{}\";NB=\"{}\";NA=\"{}\";SAN=\"billing.internal,spiffe://example.org/ns/prod/sa/billing\"",
        parsed.tbs_certificate.serial.to_str_radix(10),
        parsed.validity().not_before.timestamp(),
        parsed.validity().not_after.timestamp(),
    );
    assert_eq!(
        header(&body, "x-forwarded-tls-client-cert-info"),
        vec![go_query_escape(&info).as_str()]
    );
}

/// Every identity header of every format, in odd letter cases.
const FORGERIES: &[(&str, &str)] = &[
    ("X-Client-Cert", "forged"),
    ("x-client-cert", "forged-again"),
    ("X-CLIENT-VERIFY", "forged"),
    ("Client-Cert", ":Zm9yZ2Vk:"),
    ("CLIENT-CERT-CHAIN", ":Zm9yZ2Vk:"),
    ("X-Forwarded-Client-Cert", "Hash=forged"),
    ("x-forwarded-client-CERT", "By=forged"),
    ("X-Forwarded-Tls-Client-Cert", "forged"),
    ("x-forwarded-tls-client-cert-INFO", "Subject%3D%22forged"),
    // Variants other proxies' backends read, stripped by prefix.
    ("X-SSL-Client-CN", "forged"),
    ("X-Client-Cert-Chain-0", "forged"),
];

#[tokio::test]
async fn no_format_can_be_forged_when_all_are_on() {
    let (files, pki, client) = setup();
    let server = start_server_mode(
        &files,
        &[
            "--client-cert-format",
            "escaped-pem",
            "--client-cert-format",
            "rfc9440",
            "--client-cert-format",
            "xfcc",
            "--client-cert-format",
            "traefik",
            "--verify-depth",
            "2",
        ],
    )
    .await;
    let body = request(
        &server,
        &pki,
        &client.chain_pem(),
        &client.leaf.key_pem,
        FORGERIES,
    )
    .await;
    assert!(
        !body.contains("forged") && !body.contains("Zm9yZ2Vk"),
        "a forgery got through:\n{body}"
    );
    for name in [
        "x-client-cert",
        "client-cert",
        "client-cert-chain",
        "x-forwarded-client-cert",
        "x-forwarded-tls-client-cert",
        "x-forwarded-tls-client-cert-info",
        "x-client-verify",
    ] {
        assert_eq!(
            header(&body, name).len(),
            1,
            "{name} should appear once:\n{body}"
        );
    }
}

#[tokio::test]
async fn no_format_can_be_forged_when_only_the_default_is_on() {
    let (files, pki, _) = setup();
    let server = start_server_mode(&files, &[]).await;
    let body = request(
        &server,
        &pki,
        &pki.client.cert_pem,
        &pki.client.key_pem,
        FORGERIES,
    )
    .await;
    assert!(
        !body.contains("forged") && !body.contains("Zm9yZ2Vk"),
        "a forgery got through:\n{body}"
    );
    for name in [
        "client-cert",
        "client-cert-chain",
        "x-forwarded-client-cert",
        "x-forwarded-tls-client-cert",
    ] {
        assert!(
            header(&body, name).is_empty(),
            "{name} was not asked for:\n{body}"
        );
    }
}

#[tokio::test]
async fn xfcc_append_keeps_inbound_elements_only_from_trusted_peers() {
    let (files, pki, _) = setup();
    let edge = pki
        .ca
        .leaf(&LeafSpec::new("edge-proxy", Usage::Client))
        .unwrap();
    let server = start_server_mode(
        &files,
        &[
            "--client-cert-format",
            "xfcc",
            "--xfcc-mode",
            "append",
            "--xfcc-trusted",
            "cn:edge-proxy",
        ],
    )
    .await;
    let inbound = [(
        "x-forwarded-client-cert",
        "By=spiffe://example.org/edge;Hash=0011",
    )];

    let trusted = request(&server, &pki, &edge.cert_pem, &edge.key_pem, &inbound).await;
    let element = header(&trusted, "x-forwarded-client-cert");
    assert_eq!(element.len(), 1, "{trusted}");
    assert!(
        element[0].starts_with("By=spiffe://example.org/edge;Hash=0011,Hash="),
        "{trusted}"
    );
    assert!(
        element[0].contains("Subject=\"CN=edge-proxy,O=certgate test PKI\""),
        "{trusted}"
    );

    let untrusted = request(
        &server,
        &pki,
        &pki.client.cert_pem,
        &pki.client.key_pem,
        &inbound,
    )
    .await;
    let element = header(&untrusted, "x-forwarded-client-cert");
    assert_eq!(element.len(), 1, "{untrusted}");
    assert!(
        element[0].starts_with("Hash="),
        "untrusted inbound element kept: {untrusted}"
    );
}

#[test]
fn contradictory_xfcc_settings_are_refused() {
    let files = Files::new();
    TestPki::new().write(&files);
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    let base = [
        "server",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
        "--cert",
        &p("server.pem"),
        "--key",
        &p("server.key"),
        "--client-ca",
        &p("ca.pem"),
    ];
    for (extra, expected) in [
        (
            &["--client-cert-format", "xfcc", "--xfcc-mode", "sanitize"][..],
            "--xfcc-mode: contradictory",
        ),
        (&["--xfcc-mode", "set"][..], "--xfcc-mode: contradictory"),
        (
            &["--client-cert-format", "xfcc", "--xfcc-trusted", "cn:x"][..],
            "--xfcc-trusted: contradictory",
        ),
        (
            &["--client-cert-format", "xfcc", "--xfcc-mode", "append"][..],
            "needs xfcc_trusted",
        ),
        (
            &["--client-cert-format", "pem"][..],
            "unknown client_cert_format \"pem\"",
        ),
        (
            &[
                "--trusted-forwarder",
                "cn:proxy-b",
                "--client-cert-format",
                "xfcc",
                "--xfcc-mode",
                "set",
            ][..],
            "--xfcc-mode: contradictory: xfcc_mode \"set\" drops every inbound x-forwarded-client-cert, but trusted_forwarders (set at --trusted-forwarder) keeps",
        ),
        (
            &["--trusted-forwarder", "cn:proxy-b", "--xfcc-mode", "sanitize"][..],
            "--xfcc-mode: contradictory: xfcc_mode \"sanitize\" drops",
        ),
        (
            &["--trusted-forwarder", "cn:proxy-b", "--verify-client", "off"][..],
            "--trusted-forwarder: contradictory: trusted_forwarders names peers by their certificate, but verify_client = \"off\" asks for none",
        ),
        (
            &["--trusted-forwarder", "proxy-b"][..],
            "--trusted-forwarder: \"proxy-b\": write KIND:VALUE",
        ),
        (
            &["--trusted-forwarder", "host:proxy-b"][..],
            "unknown identity kind \"host\"",
        ),
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let (code, output) = run_to_exit(&args);
        assert_eq!(code, 1, "{extra:?}: {output}");
        assert!(output.contains(expected), "{extra:?}: {output}");
    }
}

#[tokio::test]
async fn xfcc_is_appended_to_a_trusted_forwarders_element_and_replaced_for_others() {
    let (files, pki, _) = setup();
    let edge = pki
        .ca
        .leaf(&LeafSpec::new("edge-proxy", Usage::Client))
        .unwrap();
    // No xfcc_mode: with trusted_forwarders it appends.
    let server = start_server_mode(
        &files,
        &[
            "--client-cert-format",
            "xfcc",
            "--trusted-forwarder",
            "cn:edge-proxy",
        ],
    )
    .await;
    let inbound = [
        (
            "x-forwarded-client-cert",
            "By=spiffe://example.org/edge;Hash=0011",
        ),
        ("x-ssl-client-s-dn", "CN=outer"),
    ];
    let trusted = request(&server, &pki, &edge.cert_pem, &edge.key_pem, &inbound).await;
    let element = header(&trusted, "x-forwarded-client-cert");
    assert_eq!(element.len(), 1, "{trusted}");
    assert!(
        element[0].starts_with("By=spiffe://example.org/edge;Hash=0011,Hash="),
        "{trusted}"
    );
    assert_eq!(header(&trusted, "x-ssl-client-s-dn"), vec!["CN=outer"]);

    let untrusted = request(
        &server,
        &pki,
        &pki.client.cert_pem,
        &pki.client.key_pem,
        &inbound,
    )
    .await;
    let element = header(&untrusted, "x-forwarded-client-cert");
    assert_eq!(element.len(), 1, "{untrusted}");
    assert!(element[0].starts_with("Hash="), "{untrusted}");
    assert!(
        header(&untrusted, "x-ssl-client-s-dn").is_empty(),
        "{untrusted}"
    );
}
