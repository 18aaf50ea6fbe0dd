//! `certgate cert inspect` and `certgate cert convert`, on certificates made here.

mod support;

use certgate::pki::{KeyType, LeafSpec, Usage};
use std::os::unix::fs::PermissionsExt;
use support::*;

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn inspect_describes_each_certificate_of_a_bundle() {
    let files = Files::new();
    let pki = TestPki::new();
    let intermediate = pki.ca.intermediate("issuing CA").unwrap();
    let leaf = intermediate
        .leaf(
            &LeafSpec::new("billing", Usage::Client)
                .names(&["billing.internal", "spiffe://example.org/billing"]),
        )
        .unwrap();
    let bundle = files.write(
        "chain.pem",
        format!("{}{}", leaf.cert_pem, intermediate.issued.cert_pem),
    );
    let (code, output) = run_to_exit(&["cert", "inspect", &bundle]);
    assert_eq!(code, 0, "{output}");
    for expected in [
        format!("{bundle} #1"),
        "subject      CN=billing,O=certgate test PKI".to_string(),
        "issuer       CN=issuing CA,O=certgate test PKI".to_string(),
        "names        DNS:billing.internal, URI:spiffe://example.org/billing".to_string(),
        "key          ECDSA P-256".to_string(),
        "ext. usage   clientAuth".to_string(),
        "constraints  not a CA".to_string(),
        format!("sha256       {}", sha256_hex(&leaf.cert_der)),
        format!("{bundle} #2"),
        "constraints  CA".to_string(),
        "key usage    keyCertSign, cRLSign".to_string(),
    ] {
        assert!(
            output.contains(&expected),
            "missing {expected:?} in:\n{output}"
        );
    }
    assert!(output.contains("days left"), "{output}");
}

#[test]
fn inspect_json_reads_der_and_names_key_types() {
    let files = Files::new();
    let pki = TestPki::new();
    let rsa = pki
        .ca
        .leaf(&LeafSpec::new("rsa-server", Usage::Server).key_type(KeyType::Rsa2048))
        .unwrap();
    let expired = pki
        .ca
        .leaf(&LeafSpec::new("old", Usage::Server).validity(
            time::macros::datetime!(2020-01-01 0:00 UTC),
            time::macros::datetime!(2021-01-01 0:00 UTC),
        ))
        .unwrap();
    let der = files.write("rsa.der", &rsa.cert_der);
    let old = files.write("old.pem", &expired.cert_pem);
    let (code, output) = run_to_exit(&["cert", "inspect", "--json", &der, &old]);
    assert_eq!(code, 0, "{output}");
    let reports: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(reports[0]["key"], "RSA 2048 bits");
    assert_eq!(reports[0]["extended_key_usage"][0], "serverAuth");
    assert_eq!(reports[0]["sha256"], sha256_hex(&rsa.cert_der));
    assert_eq!(reports[1]["not_after"], "2021-01-01 00:00:00 UTC");
    assert!(reports[1]["days_left"].as_i64().unwrap() < -1000);
    let (_, text) = run_to_exit(&["cert", "inspect", &old]);
    assert!(text.contains("EXPIRED"), "{text}");
}

#[test]
fn inspect_of_a_file_without_certificates_fails_naming_it() {
    let files = Files::new();
    let nothing = files.write("notes.txt", "hello\n");
    let (code, output) = run_to_exit(&["cert", "inspect", &nothing]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{nothing} holds no certificate")),
        "{output}"
    );
}

#[test]
fn convert_round_trips_certificates_between_pem_and_der() {
    let files = Files::new();
    let pki = TestPki::new();
    let pem = files.write("cert.pem", &pki.server.cert_pem);
    let der = files.path("cert.der").to_string_lossy().into_owned();
    let (code, output) = run_to_exit(&["cert", "convert", &pem, &der]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(std::fs::read(&der).unwrap(), pki.server.cert_der);
    let back = files.path("back.pem").to_string_lossy().into_owned();
    let (code, output) = run_to_exit(&["cert", "convert", &der, &back]);
    assert_eq!(code, 0, "{output}");
    let text = std::fs::read_to_string(&back).unwrap();
    assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"), "{text}");
    assert!(text.lines().all(|l| l.len() <= 64), "{text}");
    assert_eq!(
        rustls::pki_types::pem::PemObject::from_pem_slice(text.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'_>| c.to_vec())
            .unwrap(),
        pki.server.cert_der
    );
}

#[test]
fn convert_refuses_a_bundle_into_one_der_file() {
    let files = Files::new();
    let pki = TestPki::new();
    let bundle = files.write(
        "two.pem",
        format!("{}{}", pki.server.cert_pem, pki.ca.issued.cert_pem),
    );
    let out = files.path("two.der").to_string_lossy().into_owned();
    let (code, output) = run_to_exit(&["cert", "convert", &bundle, &out, "--to", "der"]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("holds 2 certificates, and a DER file holds one"),
        "{output}"
    );
}

#[test]
fn convert_writes_keys_0600_and_refuses_a_readable_target() {
    let files = Files::new();
    let pki = TestPki::new();
    let key = files.write_key("key.pem", &pki.server.key_pem);
    let der = files.path("key.der");
    let (code, output) = run_to_exit(&["cert", "convert", &key, der.to_str().unwrap()]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(std::fs::read(&der).unwrap(), pki.server.key_der);
    assert_eq!(
        std::fs::metadata(&der).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let exposed = files.write("exposed.der", "old");
    let (code, output) = run_to_exit(&["cert", "convert", &key, &exposed]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("refusing to write a private key into {exposed}")),
        "{output}"
    );
    assert_eq!(std::fs::read_to_string(&exposed).unwrap(), "old");
}

/// Runs `cert check` and returns (exit code, output).
fn check(args: &[&str]) -> (i32, String) {
    let mut all = vec!["cert", "check"];
    all.extend_from_slice(args);
    run_to_exit(&all)
}

#[test]
fn check_passes_a_good_certificate_with_exit_0() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let p = |n: &str| files.path(n).to_string_lossy().into_owned();
    let (code, output) = check(&[
        "--cert",
        &p("server.pem"),
        "--key",
        &p("server.key"),
        "--ca",
        &p("ca.pem"),
        "--role",
        "server",
        "--name",
        "localhost",
    ]);
    assert_eq!(code, 0, "{output}");
    for expected in [
        "ok    key",
        "ok    permissions",
        "ok    usage",
        "ok    chain",
        "ok    name",
        "ok    validity",
    ] {
        assert!(output.contains(expected), "{expected:?} in:\n{output}");
    }
}

#[test]
fn check_fails_with_exit_2_naming_each_broken_thing() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let p = |n: &str| files.path(n).to_string_lossy().into_owned();
    // Mismatched key.
    let (code, output) = check(&["--cert", &p("server.pem"), "--key", &p("client.key")]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("FAIL  key") && output.contains("does not match certificate"),
        "{output}"
    );
    // Expired.
    let old = pki
        .ca
        .leaf(&LeafSpec::new("old", Usage::Server).validity(
            time::macros::datetime!(2020-01-01 0:00 UTC),
            time::macros::datetime!(2021-01-01 0:00 UTC),
        ))
        .unwrap();
    let old = files.write("old.pem", &old.cert_pem);
    let (code, output) = check(&["--cert", &old]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("FAIL  validity") && output.contains("expired 2021-01-01 00:00:00 UTC"),
        "{output}"
    );
    // Wrong issuer.
    let stranger = certgate::pki::Authority::root("stranger CA", KeyType::EcdsaP256).unwrap();
    let foreign = files.write(
        "foreign.pem",
        stranger
            .leaf(&LeafSpec::new("x", Usage::Server))
            .unwrap()
            .cert_pem,
    );
    let (code, output) = check(&["--cert", &foreign, "--ca", &p("ca.pem")]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("FAIL  chain")
            && output.contains("unknown issuer")
            && output.contains("CN=stranger CA"),
        "{output}"
    );
    // Missing intermediate.
    let intermediate = pki.ca.intermediate("issuing CA").unwrap();
    let leaf_only = files.write(
        "leaf-only.pem",
        intermediate
            .leaf(&LeafSpec::new("y", Usage::Server))
            .unwrap()
            .cert_pem,
    );
    let (code, output) = check(&["--cert", &leaf_only, "--ca", &p("ca.pem")]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("unknown issuer") && output.contains("CN=issuing CA"),
        "{output}"
    );
    // Wrong extended key usage for the role.
    let (code, output) = check(&["--cert", &p("server.pem"), "--role", "client"]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("FAIL  usage") && output.contains("does not allow clientAuth"),
        "{output}"
    );
    // A name it does not cover.
    let (code, output) = check(&["--cert", &p("server.pem"), "--name", "api.example.com"]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains(
            "does not cover \"api.example.com\"; it presents [DNS:localhost, IP:127.0.0.1]"
        ),
        "{output}"
    );
}

#[test]
fn check_warns_with_exit_1_about_expiry_windows_and_readable_keys() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let p = |n: &str| files.path(n).to_string_lossy().into_owned();
    let (code, output) = check(&["--cert", &p("server.pem"), "--warn-days", "120"]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("WARN  validity") && output.contains("within the 120-day warning window"),
        "{output}"
    );
    std::fs::set_permissions(p("server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, output) = check(&["--cert", &p("server.pem"), "--key", &p("server.key")]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("WARN  permissions") && output.contains("mode 0644"),
        "{output}"
    );
}

/// Without `--role`, `cert check` checks each usage the certificate's extended key usage
/// claims (the chain included) and says which; a client certificate is not a failed server one.
#[test]
fn check_without_a_role_checks_the_usage_the_certificate_claims() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let ca = files.path("ca.pem").to_string_lossy().into_owned();
    let both = pki
        .ca
        .leaf(&LeafSpec::new("both-ways", Usage::Both))
        .unwrap();
    let both = files.write("both.pem", &both.cert_pem);
    let client = files.path("client.pem").to_string_lossy().into_owned();
    let server = files.path("server.pem").to_string_lossy().into_owned();
    for (cert, usage, chain) in [
        (
            &client,
            "ok    usage        no --role given; its extended key usage (clientAuth) allows clientAuth only, so it is checked as a TLS client certificate",
            "for clientAuth",
        ),
        (
            &server,
            "ok    usage        no --role given; its extended key usage (serverAuth) allows serverAuth only, so it is checked as a TLS server certificate",
            "for serverAuth",
        ),
        (
            &both,
            "ok    usage        no --role given; its extended key usage (serverAuth, clientAuth) allows serverAuth and clientAuth, so it is checked as both a TLS server and a TLS client certificate",
            "for serverAuth and clientAuth",
        ),
    ] {
        let (code, output) = check(&["--cert", cert, "--ca", &ca]);
        assert_eq!(code, 0, "{cert}:\n{output}");
        assert!(output.contains(usage), "{cert}: {usage:?} in:\n{output}");
        let chain_line = output
            .lines()
            .find(|l| l.starts_with("ok    chain"))
            .unwrap_or_else(|| panic!("{cert}: no chain line in:\n{output}"));
        assert!(chain_line.ends_with(chain), "{cert}: {chain_line}");
    }
    // Asked for explicitly, the other role still fails.
    let (code, output) = check(&["--cert", &client, "--ca", &ca, "--role", "server"]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("FAIL  usage        its extended key usage does not allow serverAuth"),
        "{output}"
    );
}

/// A certificate without the extension may serve either role: checked as a server's, said so.
#[test]
fn check_without_a_role_or_an_extended_key_usage_says_either_role_fits() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let ca = files.path("ca.pem").to_string_lossy().into_owned();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "no-eku");
    let root = rcgen::Issuer::from_ca_cert_pem(
        &pki.ca.issued.cert_pem,
        rcgen::KeyPair::from_pem(&pki.ca.issued.key_pem).unwrap(),
    )
    .unwrap();
    let cert = params.signed_by(&key, &root).unwrap();
    let path = files.write("no-eku.pem", cert.pem());
    let (code, output) = check(&["--cert", &path, "--ca", &ca]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("ok    usage        no --role given and it has no extended key usage, so it may serve either role: checked as a TLS server certificate (serverAuth)"),
        "{output}"
    );
}
