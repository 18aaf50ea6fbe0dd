//! Certificates and keys in every supported form: PEM and DER, PKCS#8, PKCS#1 and SEC1,
//! over every key type. Each case runs the whole chain (both modes) with those files.

mod support;

use base64::Engine;
use certgate::pki::{Authority, Issued, KeyType, LeafSpec, Usage};
use support::*;

/// How a certificate and its key are written to disk.
#[derive(Clone, Copy, Debug)]
enum Form {
    Pkcs8Pem,
    Pkcs8Der,
    /// PKCS#1 for RSA, SEC1 for ECDSA ("traditional" OpenSSL forms).
    TraditionalPem,
    TraditionalDer,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The key inside a PKCS#8 PrivateKeyInfo (the OCTET STRING privateKey field), which is the
/// PKCS#1 RSAPrivateKey or SEC1 ECPrivateKey.
fn traditional_key(pkcs8: &[u8]) -> Vec<u8> {
    use x509_parser::der_parser::ber::BerObjectContent;
    let (_, info) = x509_parser::der_parser::parse_der(pkcs8).unwrap();
    let BerObjectContent::Sequence(fields) = info.content else {
        panic!("PKCS#8 is a SEQUENCE")
    };
    match &fields[2].content {
        BerObjectContent::OctetString(inner) => inner.to_vec(),
        other => panic!("unexpected PKCS#8 privateKey field {other:?}"),
    }
}

/// Writes `issued` in `form` as NAME.crt / NAME.key; returns the two paths.
fn write_in_form(
    files: &Files,
    name: &str,
    issued: &Issued,
    key_type: KeyType,
    form: Form,
) -> (String, String) {
    let traditional_label = match key_type {
        KeyType::Rsa2048 => "RSA PRIVATE KEY",
        _ => "EC PRIVATE KEY",
    };
    let (cert, key): (Vec<u8>, Vec<u8>) = match form {
        Form::Pkcs8Pem => (
            issued.cert_pem.clone().into(),
            issued.key_pem.clone().into(),
        ),
        Form::Pkcs8Der => (issued.cert_der.clone(), issued.key_der.clone()),
        Form::TraditionalPem => (
            issued.cert_pem.clone().into(),
            pem(traditional_label, &traditional_key(&issued.key_der)).into(),
        ),
        Form::TraditionalDer => (issued.cert_der.clone(), traditional_key(&issued.key_der)),
    };
    (
        files.write(&format!("{name}.crt"), cert),
        files.write_key(&format!("{name}.key"), key),
    )
}

async fn chain_works_with(key_type: KeyType, form: Form) {
    let files = Files::new();
    let ca = Authority::root("key format CA", key_type).unwrap();
    let server = ca
        .leaf(
            &LeafSpec::new("localhost", Usage::Server)
                .names(&["localhost"])
                .key_type(key_type),
        )
        .unwrap();
    let client = ca
        .leaf(&LeafSpec::new("client", Usage::Client).key_type(key_type))
        .unwrap();
    let ca_path = match form {
        Form::Pkcs8Der | Form::TraditionalDer => files.write("ca.der", &ca.issued.cert_der),
        _ => files.write("ca.pem", &ca.issued.cert_pem),
    };
    let (server_cert, server_key) = write_in_form(&files, "server", &server, key_type, form);
    let (client_cert, client_key) = write_in_form(&files, "client", &client, key_type, form);
    let backend = spawn_echo().await;
    let backend_url = format!("http://{backend}");
    let server_a = Certgate::start(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &backend_url,
        "--cert",
        &server_cert,
        "--key",
        &server_key,
        "--client-ca",
        &ca_path,
    ]);
    let upstream = format!("https://localhost:{}", server_a.addr().port());
    let proxy_b = Certgate::start(&[
        "client",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream,
        "--cert",
        &client_cert,
        "--key",
        &client_key,
        "--ca",
        &ca_path,
    ]);
    let answer = http_get(proxy_b.addr(), "/", &[]).await;
    assert_eq!(
        answer.status,
        200,
        "{key_type:?} {form:?}: {}\n{}\n{}",
        answer.body,
        server_a.logs(),
        proxy_b.logs()
    );
    assert!(
        answer.body.contains("x-client-verify: SUCCESS"),
        "{key_type:?} {form:?}"
    );
}

async fn every_form(key_type: KeyType) {
    let forms: &[Form] = match key_type {
        // Ed25519 has no traditional form: PKCS#8 is its only encoding.
        KeyType::Ed25519 => &[Form::Pkcs8Pem, Form::Pkcs8Der],
        _ => &[
            Form::Pkcs8Pem,
            Form::Pkcs8Der,
            Form::TraditionalPem,
            Form::TraditionalDer,
        ],
    };
    for form in forms {
        chain_works_with(key_type, *form).await;
    }
}

#[tokio::test]
async fn ecdsa_p256_in_every_form() {
    every_form(KeyType::EcdsaP256).await;
}

#[tokio::test]
async fn ecdsa_p384_in_every_form() {
    every_form(KeyType::EcdsaP384).await;
}

#[tokio::test]
async fn rsa_2048_in_every_form() {
    every_form(KeyType::Rsa2048).await;
}

#[tokio::test]
async fn ed25519_in_every_form() {
    every_form(KeyType::Ed25519).await;
}
