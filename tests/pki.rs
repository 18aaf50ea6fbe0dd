//! `certgate pki init` and `certgate pki issue`: a development CA on disk whose certificates
//! really serve mTLS, with keys 0600 and the mistakes refused.

mod support;

use std::os::unix::fs::PermissionsExt;
use support::*;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn run(args: &[&str]) -> String {
    let (code, output) = run_to_exit(args);
    assert_eq!(code, 0, "certgate {args:?}:\n{output}");
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_with_an_intermediate_issues_certificates_that_serve_mutual_tls() {
    let files = Files::new();
    let ca = files.path("dev-ca");
    let ca_text = ca.to_string_lossy().into_owned();
    let out = files.dir.path().to_string_lossy().into_owned();
    let output = run(&["pki", "init", &ca_text, "--intermediate"]);
    assert!(
        output.contains("ca.crt: CA \"certgate development CA "),
        "{output}"
    );
    assert_eq!(mode(&ca), 0o700);
    for key in ["ca.key", "intermediate.key"] {
        assert_eq!(mode(&ca.join(key)), 0o600, "{key}");
    }

    let output = run(&[
        "pki",
        "issue",
        "--ca",
        &ca_text,
        "localhost",
        "--server",
        "--san",
        "127.0.0.1",
        "--out",
        &out,
    ]);
    assert!(output.contains("followed by the intermediate"), "{output}");
    run(&[
        "pki",
        "issue",
        "--ca",
        &ca_text,
        "billing",
        "--client",
        "--san",
        "spiffe://example.org/billing",
        "--out",
        &out,
    ]);
    for key in ["localhost.key", "billing.key"] {
        assert_eq!(mode(&files.path(key)), 0o600, "{key}");
    }

    // The server certificate passes every check of `cert check` for its role and name.
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    let root = ca.join("ca.crt").to_string_lossy().into_owned();
    let (code, output) = run_to_exit(&[
        "cert",
        "check",
        "--cert",
        &p("localhost.crt"),
        "--key",
        &p("localhost.key"),
        "--ca",
        &root,
        "--role",
        "server",
        "--name",
        "localhost",
    ]);
    assert_eq!(code, 0, "{output}");

    // And the pair really does mutual TLS: certgate server mode with the server certificate,
    // probed with the client certificate.
    let backend = spawn_echo().await;
    let server = Certgate::start(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &backend.to_string(),
        "--cert",
        &p("localhost.crt"),
        "--key",
        &p("localhost.key"),
        "--client-ca",
        &root,
    ]);
    let address = server.addr().to_string();
    let (cert, key) = (p("billing.crt"), p("billing.key"));
    let (code, output) = tokio::task::spawn_blocking(move || {
        run_to_exit(&[
            "probe",
            &address,
            "--server-name",
            "localhost",
            "--ca",
            &root,
            "--cert",
            &cert,
            "--key",
            &key,
            "--get",
            "/",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("our certificate was accepted"), "{output}");
    assert!(output.contains("GET / -> 200 OK"), "{output}");
}

#[test]
fn issue_honours_key_type_usage_names_and_days() {
    let files = Files::new();
    let ca = files.path("ca").to_string_lossy().into_owned();
    let out = files.dir.path().to_string_lossy().into_owned();
    run(&[
        "pki",
        "init",
        &ca,
        "--name",
        "team CA",
        "--key-type",
        "ecdsa-p384",
    ]);
    for (name, key_type, usage, words) in [
        ("rsa-svc", "rsa-2048", "--client", "RSA 2048 bits"),
        ("ed-svc", "ed25519", "--server", "Ed25519"),
    ] {
        run(&[
            "pki",
            "issue",
            "--ca",
            &ca,
            name,
            usage,
            "--key-type",
            key_type,
            "--days",
            "30",
            "--san",
            "spiffe://example.org/svc",
            "--out",
            &out,
        ]);
        let cert = files
            .path(&format!("{name}.crt"))
            .to_string_lossy()
            .into_owned();
        let output = run(&["cert", "inspect", &cert]);
        let eku = if usage == "--client" {
            "clientAuth"
        } else {
            "serverAuth"
        };
        for expected in [
            format!("subject      CN={name},O=certgate development PKI"),
            "issuer       CN=team CA,O=certgate development PKI".to_string(),
            format!("names        DNS:{name}, URI:spiffe://example.org/svc"),
            format!("key          {words}"),
            format!("ext. usage   {eku}"),
        ] {
            assert!(
                output.contains(&expected),
                "missing {expected:?}:\n{output}"
            );
        }
        assert!(
            output.contains("(29 days left)") || output.contains("(30 days left)"),
            "{output}"
        );
    }
    let ca_output = run(&["cert", "inspect", &format!("{ca}/ca.crt")]);
    assert!(
        ca_output.contains("key          ECDSA P-384"),
        "{ca_output}"
    );
}

#[test]
fn mistakes_are_refused_with_the_file_named() {
    let files = Files::new();
    let ca = files.path("ca").to_string_lossy().into_owned();
    let out = files.dir.path().to_string_lossy().into_owned();
    run(&["pki", "init", &ca, "--days", "100"]);

    // A second init would replace a CA that has issued certificates.
    let (code, output) = run_to_exit(&["pki", "init", &ca]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "{ca}/ca.crt already exists: refusing to overwrite it"
        )),
        "{output}"
    );

    // Nonsense validity is refused before anything is made.
    for days in ["0", "99999999"] {
        let (code, output) = run_to_exit(&["pki", "issue", "--ca", &ca, "web", "--days", days]);
        assert_eq!(code, 1, "{output}");
        assert!(
            output.contains("give a number of days from 1 to 36500"),
            "{output}"
        );
    }

    // A leaf may not outlive its CA.
    let (code, output) = run_to_exit(&["pki", "issue", "--ca", &ca, "web", "--days", "365"]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("--days 365 would outlive the issuing CA"),
        "{output}"
    );

    // An existing certificate is not overwritten.
    run(&[
        "pki", "issue", "--ca", &ca, "web", "--days", "10", "--out", &out,
    ]);
    let (code, output) = run_to_exit(&[
        "pki", "issue", "--ca", &ca, "web", "--out", &out, "--days", "10",
    ]);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("web.crt already exists"), "{output}");

    // A CA key that belongs to another CA.
    let other = files.path("other").to_string_lossy().into_owned();
    run(&["pki", "init", &other]);
    std::fs::copy(format!("{other}/ca.key"), format!("{ca}/ca.key")).unwrap();
    let (code, output) = run_to_exit(&[
        "pki", "issue", "--ca", &ca, "api", "--out", &out, "--days", "10",
    ]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("the CA key does not belong to the CA certificate"),
        "{output}"
    );

    // Not a CA directory at all.
    let (code, output) = run_to_exit(&["pki", "issue", "--ca", &out, "api"]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("is it a directory made by certgate pki init?"),
        "{output}"
    );

    // Two development CAs never share a name.
    let first = run(&["cert", "inspect", &format!("{ca}/ca.crt")]);
    let second = run(&["cert", "inspect", &format!("{other}/ca.crt")]);
    let subject = |text: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with("subject"))
            .unwrap()
            .to_string()
    };
    assert_ne!(subject(&first), subject(&second));
}
