//! Start-up refuses bad input with a non-zero exit and a message naming the file; `check`
//! validates a config without binding; `--help` explains every flag.

mod support;

use certgate::pki::{Authority, KeyType, LeafSpec, Usage};
use support::*;

fn server_args<'a>(cert: &'a str, key: &'a str, ca: &'a str) -> Vec<&'a str> {
    vec![
        "server",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
        "--cert",
        cert,
        "--key",
        key,
        "--client-ca",
        ca,
    ]
}

fn paths(files: &Files) -> (String, String, String) {
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    (p("server.pem"), p("server.key"), p("ca.pem"))
}

#[test]
fn missing_certificate_file_is_named() {
    let files = Files::new();
    TestPki::new().write(&files);
    let (_, key, ca) = paths(&files);
    let missing = files.path("nope.pem").to_string_lossy().into_owned();
    let (code, output) = run_to_exit(&server_args(&missing, &key, &ca));
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("--cert: cannot read {missing}")),
        "{output}"
    );
}

#[test]
fn key_not_matching_certificate_is_refused() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let (cert, _, ca) = paths(&files);
    let client_key = files.path("client.key").to_string_lossy().into_owned();
    let (code, output) = run_to_exit(&server_args(&cert, &client_key, &ca));
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "private key {client_key} does not match certificate {cert}"
        )),
        "{output}"
    );
}

#[test]
fn ca_file_without_certificate_is_refused() {
    let files = Files::new();
    TestPki::new().write(&files);
    let (cert, key, _) = paths(&files);
    let empty = files.write("empty-ca.pem", "# no certificates here\n");
    let (code, output) = run_to_exit(&server_args(&cert, &key, &empty));
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{empty} holds no certificate")),
        "{output}"
    );
    assert!(output.contains("--client-ca"), "{output}");
}

#[test]
fn bad_listen_address_is_refused() {
    let files = Files::new();
    TestPki::new().write(&files);
    let (cert, key, ca) = paths(&files);
    let mut args = server_args(&cert, &key, &ca);
    args[2] = "localhost:notaport";
    let (code, output) = run_to_exit(&args);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("--listen: bad listen address \"localhost:notaport\""),
        "{output}"
    );
}

#[test]
fn loose_key_permissions_warn_and_strict_mode_refuses() {
    use std::os::unix::fs::PermissionsExt;
    let files = Files::new();
    TestPki::new().write(&files);
    let (cert, key, ca) = paths(&files);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let running = Certgate::start(&server_args(&cert, &key, &ca));
    running.wait_for_log(&[
        "WARN",
        &format!("private key {key} is readable by its group and other users (mode 0644)"),
    ]);
    drop(running);

    let mut strict = server_args(&cert, &key, &ca);
    strict.push("--strict-key-permissions");
    let (code, output) = run_to_exit(&strict);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("mode 0644"), "{output}");
}

/// Verifies a server certificate as a client whose clock says `at` would: the chain, the
/// name and the validity period all checked, against that date.
#[derive(Debug)]
struct VerifyAsOf {
    inner: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
    at: rustls::pki_types::UnixTime,
}

impl rustls::client::danger::ServerCertVerifier for VerifyAsOf {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            self.at,
        )
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
async fn expired_own_certificate_still_loads() {
    // Serving an expired certificate is the operator's call (nginx does too): certgate serves
    // it and says it has expired.
    let files = Files::new();
    let ca = Authority::root("ca", KeyType::EcdsaP256).unwrap();
    let old = ca
        .leaf(
            &LeafSpec::new("localhost", Usage::Server)
                .names(&["localhost"])
                .validity(
                    time::macros::datetime!(2020-01-01 0:00 UTC),
                    time::macros::datetime!(2021-01-01 0:00 UTC),
                ),
        )
        .unwrap();
    let client = ca.leaf(&LeafSpec::new("client", Usage::Client)).unwrap();
    let cert = files.write("old.pem", &old.cert_pem);
    let key = files.write_key("old.key", &old.key_pem);
    let ca_path = files.write("ca.pem", &ca.issued.cert_pem);
    let running = Certgate::start(&server_args(&cert, &key, &ca_path));
    running.wait_for_log(&["server certificate \"CN=localhost", &cert, "has expired"]);

    // A client living in 2020 accepts exactly that certificate; one living today does not.
    let config = |at: Option<rustls::pki_types::UnixTime>| {
        let mut config = (*tls_client(
            &ca.issued.cert_pem,
            Some((&client.cert_pem, &client.key_pem)),
        ))
        .clone();
        if let Some(at) = at {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls::pki_types::CertificateDer::from(
                    ca.issued.cert_der.clone(),
                ))
                .unwrap();
            let inner = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots))
                .build()
                .unwrap();
            config
                .dangerous()
                .set_certificate_verifier(std::sync::Arc::new(VerifyAsOf { inner, at }));
        }
        std::sync::Arc::new(config)
    };
    let mid_2020 = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        time::macros::datetime!(2020-06-01 0:00 UTC).unix_timestamp() as u64,
    ));
    let address = running.addr();
    let connect = |config| async move {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        tokio_rustls::TlsConnector::from(config)
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                stream,
            )
            .await
    };
    let tls = connect(config(Some(mid_2020)))
        .await
        .unwrap_or_else(|e| panic!("a 2020 client refused the certificate: {e}"));
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap()[0].as_ref(),
        &old.cert_der[..]
    );
    let today = connect(config(None)).await.unwrap_err().to_string();
    assert!(today.contains("expired"), "{today}");
}

fn config_file(files: &Files, body: &str) -> String {
    files.write("certgate.toml", body)
}

#[test]
fn check_accepts_a_valid_config_without_binding() {
    let files = Files::new();
    TestPki::new().write(&files);
    // Port 1 would need privileges to bind: check must not try.
    let config = config_file(
        &files,
        r#"
[[listener]]
name = "server-a"
mode = "server"
listen = "127.0.0.1:1"
upstream = "http://127.0.0.1:8000"
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
verify_depth = 2
ciphers = "HIGH:!aNULL:!MD5"

[[listener]]
name = "proxy-b"
mode = "client"
listen = "127.0.0.1:2"
upstream = "https://localhost:443"
cert = "client.pem"
key = "client.key"
ca = "ca.pem"
min_tls_version = "TLSv1.2"
max_tls_version = "TLSv1.3"
set_header = [["Host", "$host"], { name = "X-Real-IP", value = "$remote_addr" }]
"#,
    );
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("configuration is valid (2 listeners)"),
        "{output}"
    );
}

#[test]
fn check_names_file_line_and_key_of_a_missing_file() {
    let files = Files::new();
    TestPki::new().write(&files);
    let config = config_file(
        &files,
        "[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:8000\"\ncert = \"server.pem\"\nkey = \"missing.key\"\nclient_ca = \"ca.pem\"\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{config}:6: key 'key'")),
        "{output}"
    );
    assert!(output.contains("missing.key"), "{output}");
}

#[test]
fn check_names_the_line_of_an_unknown_key() {
    let files = Files::new();
    let config = config_file(&files, "[[listener]]\nmode = \"server\"\nverify_dept = 2\n");
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{config}:3: key 'verify_dept': unknown key")),
        "{output}"
    );
}

#[test]
fn check_refuses_a_bad_upstream_max_connections_naming_file_line_and_key() {
    let files = Files::new();
    TestPki::new().write(&files);
    let listener = "[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:8000\"\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n";
    let good = config_file(
        &files,
        &format!("{listener}upstream_max_connections = 0\nupstream_queue_timeout = \"500ms\"\n"),
    );
    let (code, output) = run_to_exit(&["check", "--config", &good]);
    assert_eq!(code, 0, "{output}");

    for (setting, expected) in [
        (
            "upstream_max_connections = -1",
            "key 'upstream_max_connections': upstream_max_connections must be between 0 (no limit) and 1000000",
        ),
        (
            "upstream_queue_timeout = \"soon\"",
            "key 'upstream_queue_timeout': bad duration \"soon\"",
        ),
    ] {
        let bad = config_file(&files, &format!("{listener}{setting}\n"));
        let (code, output) = run_to_exit(&["check", "--config", &bad]);
        assert_eq!(code, 1, "{output}");
        assert!(
            output.contains(&format!("{bad}:8: {expected}")),
            "{setting}: {output}"
        );
    }
    let (code, output) = run_to_exit(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:8000",
        "--cert",
        &files.path("server.pem").to_string_lossy(),
        "--key",
        &files.path("server.key").to_string_lossy(),
        "--client-ca",
        &files.path("ca.pem").to_string_lossy(),
        "--upstream-max-connections",
        "2000000",
    ]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("--upstream-max-connections: upstream_max_connections must be between"),
        "{output}"
    );
}

#[tokio::test]
async fn run_serves_every_listener_of_a_config() {
    let files = Files::new();
    TestPki::new().write(&files);
    let backend = spawn_echo().await;
    // Server A on a port picked first so that proxy B's config can name it.
    let port = free_port();
    let config = config_file(
        &files,
        &format!(
            r#"
[[listener]]
name = "server-a"
mode = "server"
listen = "127.0.0.1:{port}"
upstream = "http://{backend}"
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"

[[listener]]
name = "proxy-b"
mode = "client"
listen = "127.0.0.1:0"
upstream = "https://localhost:{port}"
cert = "client.pem"
key = "client.key"
ca = "ca.pem"
set_header = [["X-Original", "$http_x_original"]]
"#
        ),
    );
    let running = Certgate::start_with(&["run", "--config", &config], 2);
    let proxy_b = running
        .addresses
        .iter()
        .find(|(n, _)| n == "proxy-b")
        .unwrap()
        .1;
    let answer = http_get(proxy_b, "/", &[("X-Original", "kept")]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("x-original: kept"), "{}", answer.body);
    assert!(
        answer.body.contains("x-client-verify: SUCCESS"),
        "{}",
        answer.body
    );
    assert_eq!(running.signal_and_wait("TERM"), 0);
}

#[test]
fn help_explains_every_flag() {
    for (command, flags) in [
        (
            "server",
            &[
                "--listen",
                "--upstream",
                "--cert",
                "--key",
                "--client-ca",
                "--verify-depth",
                "--verify-client",
                "--ciphers",
                "--set-header",
                "--upstream-max-connections",
                "--upstream-queue-timeout",
            ][..],
        ),
        (
            "client",
            &[
                "--listen",
                "--upstream",
                "--cert",
                "--key",
                "--ca",
                "--verify-depth",
                "--server-name",
                "--upstream-max-connections",
            ][..],
        ),
        ("run", &["--config"][..]),
        ("check", &["--config"][..]),
        ("demo", &["--once"][..]),
    ] {
        let (code, output) = run_to_exit(&[command, "--help"]);
        assert_eq!(code, 0, "{output}");
        let explained = flag_descriptions(&output);
        for flag in flags {
            assert!(
                explained.iter().any(|(f, _)| f == flag),
                "{command} --help lacks {flag}:\n{output}"
            );
        }
        // Every flag the command has, not only those named above.
        for (flag, description) in &explained {
            if ["--help", "--version"].contains(&flag.as_str()) {
                continue; // clap's own
            }
            assert!(
                is_a_description(description),
                "{command} {flag} has no explanation (\"{description}\"):\n{output}"
            );
        }
    }
}

/// Each flag in clap's help output with its description: the text after the flag, its short
/// form and its value placeholder, on the same line (short help) or on the more indented
/// lines below it (long help, used once any flag has a long description).
fn flag_descriptions(help: &str) -> Vec<(String, String)> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut flags: Vec<(String, String)> = Vec::new();
    // Whether the lines below still belong to the last flag.
    let mut in_flag = false;
    for line in help.lines() {
        let text = line.trim();
        if indent(line) <= 6 && text.starts_with('-') {
            // "-h, --help  Print help" or "--listen <LISTEN>": the flag part has single spaces.
            let (names, rest) = text.split_once("  ").unwrap_or((text, ""));
            let flag = names
                .split([' ', ','])
                .find(|word| word.starts_with("--"))
                .unwrap_or(names)
                .to_string();
            flags.push((flag, rest.trim().to_string()));
            in_flag = true;
        } else if indent(line) > 6 && in_flag {
            let description = &mut flags.last_mut().expect("in a flag").1;
            if !description.is_empty() {
                description.push(' ');
            }
            description.push_str(text);
        } else if !text.is_empty() {
            // A heading or text of its own: what follows is no flag's description.
            in_flag = false;
        }
    }
    flags
}

/// At least three words of prose once clap's notes ("[default: 30]", "[aliases: ...]") and
/// value placeholders ("<FILE>") are taken out.
fn is_a_description(description: &str) -> bool {
    let mut prose = String::new();
    let mut depth = 0;
    for c in description.chars() {
        match c {
            '[' | '<' => depth += 1,
            ']' | '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => prose.push(c),
            _ => {}
        }
    }
    prose
        .split_whitespace()
        .filter(|word| word.chars().filter(|c| c.is_alphabetic()).count() >= 2)
        .count()
        >= 3
}

/// The ```toml blocks of a Markdown file.
fn toml_examples(markdown: &str) -> Vec<String> {
    markdown
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_string())
        .collect()
}

/// Every config example in the README and in the topic pages under docs/ passes `certgate
/// check` (docs/configuration.md, generated from the key table, holds none).
#[test]
fn readme_and_docs_config_examples_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut examples: Vec<(String, String)> = toml_examples(&readme)
        .into_iter()
        .map(|block| ("README.md".to_string(), block))
        .collect();
    assert!(
        !examples.is_empty(),
        "the README should show a config example"
    );
    let mut pages: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    for page in pages {
        let name = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        for block in toml_examples(&std::fs::read_to_string(&page).unwrap()) {
            examples.push((name.clone(), block));
        }
    }
    assert!(
        examples.iter().any(|(file, _)| file.starts_with("docs/")),
        "the pages under docs/ should show config examples (docs/access-rules.md has one)"
    );
    let files = Files::new();
    let pki = TestPki::new();
    for (name, contents) in [
        ("server.crt", &pki.server.cert_pem),
        ("ca.crt", &pki.ca.issued.cert_pem),
        ("client_chain.pem", &pki.client.cert_pem),
    ] {
        files.write(name, contents);
    }
    files.write_key("server.key", &pki.server.key_pem);
    files.write_key("client.key", &pki.client.key_pem);
    for (index, (file, block)) in examples.iter().enumerate() {
        let config = files.write(&format!("example-{index}.toml"), block);
        let (code, output) = run_to_exit(&["check", "--config", &config]);
        assert_eq!(
            code, 0,
            "a config example in {file} fails check:\n{block}\n{output}"
        );
    }
}

#[test]
fn key_problems_name_the_key_and_certificate_problems_the_certificate() {
    let files = Files::new();
    TestPki::new().write(&files);
    let (cert, key, ca) = paths(&files);
    let garbage = files.write_key("garbage.key", "not a key\n");
    let (code, output) = run_to_exit(&server_args(&cert, &garbage, &ca));
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("--key: {garbage} holds no private key")),
        "{output}"
    );
    let not_cert = files.write("not-a-cert.pem", "hello\n");
    let (code, output) = run_to_exit(&server_args(&not_cert, &key, &ca));
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("--cert: {not_cert} holds no certificate")),
        "{output}"
    );
}

#[test]
fn chain_with_the_wrong_intermediate_is_refused_naming_both() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let right = pki.ca.intermediate("right intermediate").unwrap();
    let wrong = pki.ca.intermediate("wrong intermediate").unwrap();
    let leaf = right
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost"]))
        .unwrap();
    let chain = files.write(
        "chain.pem",
        format!("{}{}", leaf.cert_pem, wrong.issued.cert_pem),
    );
    let key = files.write_key("leaf.key", &leaf.key_pem);
    let (_, _, ca) = paths(&files);
    let (code, output) = run_to_exit(&server_args(&chain, &key, &ca));
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "--cert: {chain}: certificate #2 (\"CN=wrong intermediate,O=certgate test PKI\") did not issue certificate #1 (\"CN=localhost,O=certgate test PKI\")"
        )),
        "{output}"
    );
    // In the right order it starts.
    let good = files.write(
        "good.pem",
        format!("{}{}", leaf.cert_pem, right.issued.cert_pem),
    );
    let running = Certgate::start(&server_args(&good, &key, &ca));
    assert!(running.addr().port() > 0);
}

#[test]
fn partial_chain_and_verify_name_in_cn_are_checked_with_file_and_line() {
    let files = Files::new();
    TestPki::new().write(&files);
    let server = "[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:8000\"\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n";
    let config = config_file(&files, &format!("{server}partial_chain = false\n"));
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 0, "{output}");

    let config = config_file(&files, &format!("{server}partial_chain = \"no\"\n"));
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{config}:8: key 'partial_chain'")),
        "{output}"
    );
    assert!(output.contains("expected true or false"), "{output}");

    let config = config_file(&files, &format!("{server}verify_name_in_cn = true\n"));
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{config}:8: key 'verify_name_in_cn'")),
        "{output}"
    );
    assert!(output.contains("is for client mode"), "{output}");

    let client = config_file(
        &files,
        "[[listener]]\nmode = \"client\"\nlisten = \"127.0.0.1:0\"\nupstream = \"https://localhost:8443\"\nca = \"ca.pem\"\nverify_name_in_cn = true\npartial_chain = false\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &client]);
    assert_eq!(code, 0, "{output}");
}
