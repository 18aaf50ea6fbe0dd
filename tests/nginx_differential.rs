//! The seed's nginx configurations under nginx and under certgate, side by side: the same
//! backend, the same requests, and a comparison of what the backend receives (method, path,
//! header names and values) and what the client gets (status, or a refused handshake).
//!
//! Needs nginx on the PATH, so it is ignored by a plain `cargo test`; run it with
//! `cargo test --test nginx_differential -- --ignored` (`.ci/run` does, after installing
//! nginx). Every difference found must be one of `DELIBERATE`, which docs/nginx.md lists under
//! "Deliberate differences".

mod support;

use certgate::pki::{Authority, KeyType, LeafSpec, Usage};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::nginx::*;
use support::*;

/// Differences certgate makes on purpose, as (the difference as reported, why); docs/nginx.md
/// lists them under "Deliberate differences".
const DELIBERATE: &[(&str, &str)] = &[
    (
        "header connection: nginx [\"close\"], certgate []",
        "nginx speaks HTTP/1.0 to upstreams and sends Connection: close; certgate keeps pooled HTTP/1.1 connections",
    ),
    (
        "outcome nginx Status(400), certgate Refused",
        "without an acceptable client certificate nginx completes the handshake and answers 400; certgate refuses the handshake, so no HTTP request is read from an unauthenticated client",
    ),
];

/// An nginx process running one fixture; stopped when dropped.
struct Nginx {
    child: Child,
    error_log: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Runs `fixture` (already in `files`) inside a minimal main config, as conf.d snippets
    /// run, and waits for `port` to accept connections.
    fn start(files: &Files, fixture: &Path, port: u16) -> Nginx {
        let dir = files.dir.path();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let d = dir.display();
        let main = files.write(
            "nginx-main.conf",
            format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log info;\nevents {{ worker_connections 64; }}\nhttp {{\n    access_log off;\n    client_body_temp_path {d}/tmp/body;\n    proxy_temp_path {d}/tmp/proxy;\n    fastcgi_temp_path {d}/tmp/fastcgi;\n    uwsgi_temp_path {d}/tmp/uwsgi;\n    scgi_temp_path {d}/tmp/scgi;\n    include {};\n}}\n",
                fixture.display()
            ),
        );
        let error_log = dir.join("nginx-error.log");
        let child = Command::new("nginx")
            .args(["-p", &format!("{d}/"), "-c", &main, "-e"])
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx must be installed for the differential suite (apt-get install nginx)");
        let nginx = Nginx { child, error_log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not start on {port}:\n{}",
                nginx.errors()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }
}

/// What the client saw.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    /// The TLS handshake (or the first read after it) failed.
    Refused,
}

/// One request a scenario sends.
struct Scenario {
    name: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// Server A only: present the test client certificate, another CA's, or none.
    client_cert: ClientCert,
}

#[derive(Clone, Copy)]
enum ClientCert {
    Trusted,
    Untrusted,
    None,
}

async fn send(address: SocketAddr, tls: bool, pki: &TestPki, scenario: &Scenario) -> Outcome {
    if !tls {
        return Outcome::Status(
            http_get(address, "/orders?id=7", scenario.headers)
                .await
                .status,
        );
    }
    let other = Authority::root("stranger CA", KeyType::EcdsaP256).unwrap();
    let stranger = other
        .leaf(&LeafSpec::new("stranger", Usage::Client))
        .unwrap();
    let ca = &pki.ca.issued.cert_pem;
    let config = match scenario.client_cert {
        ClientCert::Trusted => pki.client_config(),
        ClientCert::Untrusted => tls_client(ca, Some((&stranger.cert_pem, &stranger.key_pem))),
        ClientCert::None => tls_client(ca, None),
    };
    match https_get(address, config, "/orders?id=7", scenario.headers).await {
        Ok(answer) => Outcome::Status(answer.status),
        Err(_) => Outcome::Refused,
    }
}

/// The differences between nginx's and certgate's handling of one scenario, in words.
fn differences(
    scenario: &str,
    nginx: (&Outcome, &[Received]),
    certgate: (&Outcome, &[Received]),
) -> Vec<String> {
    let mut found = Vec::new();
    if nginx.0 != certgate.0 {
        found.push(format!(
            "{scenario}: outcome nginx {:?}, certgate {:?}",
            nginx.0, certgate.0
        ));
    }
    if nginx.1.len() != certgate.1.len() {
        found.push(format!(
            "{scenario}: backend got {} request(s) from nginx, {} from certgate",
            nginx.1.len(),
            certgate.1.len()
        ));
        return found;
    }
    for (n, c) in nginx.1.iter().zip(certgate.1) {
        if (&n.method, &n.path) != (&c.method, &c.path) {
            found.push(format!(
                "{scenario}: request line nginx {} {}, certgate {} {}",
                n.method, n.path, c.method, c.path
            ));
        }
        let mut names: Vec<&String> = n.headers.iter().chain(&c.headers).map(|(k, _)| k).collect();
        names.sort();
        names.dedup();
        for name in names {
            let values = |r: &Received| -> Vec<String> {
                let mut v: Vec<String> = r
                    .headers
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .collect();
                v.sort();
                v
            };
            if values(n) != values(c) {
                found.push(format!(
                    "{scenario}: header {name}: nginx {:?}, certgate {:?}",
                    values(n),
                    values(c)
                ));
            }
        }
    }
    found
}

/// Whether a difference is one of the deliberate ones.
fn deliberate(difference: &str) -> bool {
    DELIBERATE
        .iter()
        .any(|(reported, _)| difference.ends_with(reported))
}

/// Runs one fixture under both, every scenario against each, and returns the differences.
async fn compare(
    fixture_name: &str,
    nginx_fixture: &str,
    tls_in: bool,
    upstream_ca_mismatch: bool,
    scenarios: &[Scenario],
) -> Vec<String> {
    let pki = TestPki::new();
    let backend = if tls_in {
        RecordingBackend::plain().await
    } else if upstream_ca_mismatch {
        let impostor = Authority::root("impostor CA", KeyType::EcdsaP256).unwrap();
        let cert = impostor
            .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost", "127.0.0.1"]))
            .unwrap();
        RecordingBackend::tls(&cert, &pki.ca.issued).await
    } else {
        RecordingBackend::tls(&pki.server, &pki.ca.issued).await
    };
    let peer_port = ("BACKEND_PORT", backend.address.port().to_string());
    let upstream_port = ("UPSTREAM_PORT", backend.address.port().to_string());
    let values = |listen: u16| {
        let mut v = vec![("LISTEN_PORT", listen.to_string())];
        v.push(if tls_in {
            peer_port.clone()
        } else {
            upstream_port.clone()
        });
        v
    };

    let nginx_files = Files::new();
    write_ssl_dir(&nginx_files, &pki);
    let nginx_port = free_port();
    let path = fixture(&nginx_files, nginx_fixture, &values(nginx_port));
    let nginx = Nginx::start(&nginx_files, &path, nginx_port);

    let certgate_files = Files::new();
    write_ssl_dir(&certgate_files, &pki);
    let path = fixture(&certgate_files, fixture_name, &values(0));
    let certgate = Certgate::start(&["run", "--config", path.to_str().unwrap()]);

    let mut found = Vec::new();
    for scenario in scenarios {
        let label = format!("{fixture_name} {}", scenario.name);
        let nginx_outcome = send(
            SocketAddr::from(([127, 0, 0, 1], nginx_port)),
            tls_in,
            &pki,
            scenario,
        )
        .await;
        let from_nginx = backend.take();
        let certgate_outcome = send(certgate.addr(), tls_in, &pki, scenario).await;
        let from_certgate = backend.take();
        eprintln!(
            "{label}: nginx {nginx_outcome:?} with {} request(s) at the backend, certgate {certgate_outcome:?} with {}",
            from_nginx.len(),
            from_certgate.len()
        );
        found.extend(differences(
            &label,
            (&nginx_outcome, &from_nginx),
            (&certgate_outcome, &from_certgate),
        ));
    }
    for difference in &found {
        eprintln!("  difference: {difference}");
    }
    if found.iter().any(|d| !deliberate(d)) {
        eprintln!("nginx error log:\n{}", nginx.errors());
        eprintln!("certgate log:\n{}", certgate.logs());
    }
    found
}

const PROXY_B_SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "plain request",
        headers: &[("accept", "*/*")],
        client_cert: ClientCert::None,
    },
    Scenario {
        name: "with the caller's X-Client-Cert and X-SSL-CERT",
        headers: &[
            ("x-client-cert", "-----BEGIN%20CERTIFICATE-----%0Aforged"),
            ("x-ssl-cert", "abc"),
        ],
        client_cert: ClientCert::None,
    },
];

fn assert_only_deliberate(found: Vec<String>) {
    let unexpected: Vec<&String> = found.iter().filter(|d| !deliberate(d)).collect();
    assert!(
        unexpected.is_empty(),
        "differences from nginx that are not listed as deliberate:\n{}",
        unexpected
            .iter()
            .map(|d| format!("  {d}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn seed_server_a_behaves_as_under_nginx() {
    let found = compare(
        "server_a.conf",
        "server_a.conf",
        true,
        false,
        &[
            Scenario {
                name: "with the client certificate",
                headers: &[("accept", "*/*"), ("x-forwarded-for", "10.0.0.1")],
                client_cert: ClientCert::Trusted,
            },
            Scenario {
                name: "with a forged X-Client-Cert",
                headers: &[("x-client-cert", "forged")],
                client_cert: ClientCert::Trusted,
            },
            Scenario {
                name: "no client certificate",
                headers: &[],
                client_cert: ClientCert::None,
            },
            Scenario {
                name: "untrusted client certificate",
                headers: &[],
                client_cert: ClientCert::Untrusted,
            },
        ],
    )
    .await;
    // The refusals must actually be there, not merely tolerated.
    assert!(
        found
            .iter()
            .any(|d| d
                .contains("no client certificate: outcome nginx Status(400), certgate Refused")),
        "{found:?}"
    );
    assert_only_deliberate(found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn seed_proxy_b_behaves_as_under_nginx() {
    assert_only_deliberate(
        compare(
            "proxy_b.conf",
            "proxy_b.conf",
            false,
            false,
            PROXY_B_SCENARIOS,
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn seed_proxy_b_forwarding_x_client_cert_behaves_as_under_nginx() {
    assert_only_deliberate(
        compare(
            "proxy_b_forward.conf",
            "proxy_b_forward.conf",
            false,
            false,
            PROXY_B_SCENARIOS,
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn seed_pass_through_block_behaves_as_nginx_meant_it() {
    assert_only_deliberate(
        compare(
            "proxy_b_passthrough.conf",
            "proxy_b_passthrough.nginx.conf",
            false,
            false,
            PROXY_B_SCENARIOS,
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn seed_complex_block_with_a_chain_file_behaves_as_under_nginx() {
    assert_only_deliberate(
        compare(
            "proxy_b_complex.conf",
            "proxy_b_complex.conf",
            false,
            false,
            PROXY_B_SCENARIOS,
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn an_untrusted_upstream_certificate_is_a_502_under_both() {
    for fixture in [
        "proxy_b.conf",
        "proxy_b_forward.conf",
        "proxy_b_complex.conf",
    ] {
        let found = compare(fixture, fixture, false, true, &PROXY_B_SCENARIOS[..1]).await;
        assert_only_deliberate(found);
    }
}

#[test]
#[ignore = "needs nginx; run with --ignored"]
fn nginx_itself_refuses_the_seeds_if_block_as_the_warning_says() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let path = fixture(
        &files,
        "proxy_b_passthrough.conf",
        &[
            ("LISTEN_PORT", "8080".into()),
            ("UPSTREAM_PORT", "8443".into()),
        ],
    );
    let main = files.write(
        "nginx-test.conf",
        format!(
            "events {{}}\nhttp {{\n    include {};\n}}\n",
            path.display()
        ),
    );
    let output = Command::new("nginx")
        .args([
            "-t",
            "-p",
            &format!("{}/", files.dir.path().display()),
            "-c",
            &main,
        ])
        .output()
        .expect("nginx must be installed");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    assert!(
        text.contains("\"proxy_set_header\" directive is not allowed here"),
        "{text}"
    );
}

/// nginx as the seed's server A has it (`ssl_verify_client on` with the test CA), TLS 1.2 and
/// 1.3, answering "ok" itself once a certificate passes; with the files its clients use:
/// `ssl/client.crt` (good) and `stranger.crt` (another CA's).
fn nginx_requiring_client_certificates(files: &Files, pki: &TestPki) -> (Nginx, SocketAddr) {
    write_ssl_dir(files, pki);
    let stranger = Authority::root("stranger CA", KeyType::EcdsaP256)
        .unwrap()
        .leaf(&LeafSpec::new("stranger", Usage::Client))
        .unwrap();
    files.write("stranger.crt", &stranger.cert_pem);
    files.write_key("stranger.key", &stranger.key_pem);
    let port = free_port();
    files.write(
        "verify-on.conf",
        format!(
            "server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_client_certificate ssl/ca.crt;\n    ssl_verify_client on;\n    location / {{\n        return 200 \"ok\\n\";\n    }}\n    location /bad {{\n        return 400;\n    }}\n}}\n"
        ),
    );
    let nginx = Nginx::start(files, &files.path("verify-on.conf"), port);
    (nginx, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// `certgate probe ADDRESS` with `args`, from the directory of `files`.
fn probe(files: &Files, address: SocketAddr, args: &[&str]) -> (i32, String) {
    let ca = files.path("ssl/ca.crt").to_string_lossy().into_owned();
    let address = address.to_string();
    let mut all = vec!["probe", &address, "--ca", &ca, "--server-name", "localhost"];
    all.extend_from_slice(args);
    run_to_exit(&all)
}

fn diagnosis(output: &str) -> &str {
    output
        .lines()
        .find(|l| l.starts_with("FAIL  diagnosis"))
        .unwrap_or_else(|| panic!("no diagnosis in:\n{output}"))
}

#[test]
#[ignore = "needs nginx; run with --ignored"]
fn probe_reads_nginx_refusing_a_certificate_of_another_ca() {
    let (files, pki) = (Files::new(), TestPki::new());
    let (_nginx, address) = nginx_requiring_client_certificates(&files, &pki);
    let cert = files.path("stranger.crt").to_string_lossy().into_owned();
    let key = files.path("stranger.key").to_string_lossy().into_owned();
    for version in ["--tls1.2", "--tls1.3"] {
        // The default request (HEAD /, asked again with GET for the page) and --get.
        for get in [&[][..], &["--get", "/"][..]] {
            let mut args = vec!["--cert", &cert, "--key", &key, version];
            args.extend_from_slice(get);
            let (code, output) = probe(&files, address, &args);
            assert_eq!(code, 2, "{version} {get:?}:\n{output}");
            for expected in [
                "WARN  client cert  the issuer of our certificate (\"CN=stranger CA,O=certgate test PKI\") is not among the CA names the server accepts: expect a refusal",
                "titled \"400 The SSL certificate error\"",
                "FAIL  client cert  refused after the handshake: the server answered 400 \"The SSL certificate error\"",
            ] {
                assert!(output.contains(expected), "{version} {get:?}: {expected:?} in:\n{output}");
            }
            assert_eq!(
                diagnosis(&output),
                "FAIL  diagnosis    the server refused our certificate (it answered 400 \"The SSL certificate error\" after the handshake): the server does not trust the issuer of our certificate (\"CN=stranger CA,O=certgate test PKI\"); it accepts certificates issued by: \"CN=test root CA,O=certgate test PKI\"; if our issuer is an intermediate of one of those, append it to the --cert file",
                "{version} {get:?}:\n{output}"
            );
            assert!(!output.contains("was accepted"), "{output}");
            if get.is_empty() {
                assert!(
                    output.contains(
                        "asked again with GET / to read why (a HEAD gets no page): 400 Bad Request"
                    ),
                    "{output}"
                );
            }
        }
        // Without a request nothing says "accepted", and the issuer warning still counts.
        let (code, output) = probe(
            &files,
            address,
            &["--cert", &cert, "--key", &key, version, "--no-request"],
        );
        assert_eq!(code, 1, "{version} --no-request:\n{output}");
        assert!(!output.contains("was accepted"), "{output}");
        assert!(!output.contains("ok    http"), "{output}");
    }
}

#[test]
#[ignore = "needs nginx; run with --ignored"]
fn probe_reads_nginx_refusing_a_missing_certificate() {
    let (files, pki) = (Files::new(), TestPki::new());
    let (_nginx, address) = nginx_requiring_client_certificates(&files, &pki);
    for version in ["--tls1.2", "--tls1.3"] {
        let (code, output) = probe(&files, address, &[version]);
        assert_eq!(code, 2, "{version}:\n{output}");
        assert_eq!(
            diagnosis(&output),
            "FAIL  diagnosis    the server requires a client certificate and we sent none (it answered 400 \"No required SSL certificate was sent\" after the handshake): pass --cert and --key with a certificate issued by one of: \"CN=test root CA,O=certgate test PKI\"",
            "{version}:\n{output}"
        );
        assert!(!output.contains("accepted the handshake"), "{output}");
    }
}

#[test]
#[ignore = "needs nginx; run with --ignored"]
fn probe_reports_nginx_accepting_a_good_certificate() {
    let (files, pki) = (Files::new(), TestPki::new());
    let (_nginx, address) = nginx_requiring_client_certificates(&files, &pki);
    let cert = files.path("ssl/client.crt").to_string_lossy().into_owned();
    let key = files.path("ssl/client.key").to_string_lossy().into_owned();
    for version in ["--tls1.2", "--tls1.3"] {
        let (code, output) = probe(&files, address, &["--cert", &cert, "--key", &key, version]);
        assert_eq!(code, 0, "{version}:\n{output}");
        for expected in [
            "ok    http         HEAD / -> 200 OK",
            "ok    client cert  our certificate was accepted (the server answered the request)",
        ] {
            assert!(
                output.contains(expected),
                "{version}: {expected:?} in:\n{output}"
            );
        }
        assert!(!output.contains("WARN"), "{output}");
        // A 400 that is not about the certificate is a warning naming nginx's page.
        let (code, output) = probe(
            &files,
            address,
            &["--cert", &cert, "--key", &key, version, "--get", "/bad"],
        );
        assert_eq!(code, 1, "{version}:\n{output}");
        for expected in [
            "WARN  http         GET /bad -> 400 Bad Request (",
            "titled \"400 Bad Request\")",
            "WARN  client cert  not known: the server answered 400 to the request, which is not a refusal of a certificate",
        ] {
            assert!(output.contains(expected), "{version}: {expected:?} in:\n{output}");
        }
        assert!(!output.contains("FAIL"), "{output}");
    }
}

/// Client mode in front of nginx, presenting `identity` (cert and key files) or none.
fn client_mode_before(
    files: &Files,
    upstream: SocketAddr,
    identity: Option<(&str, &str)>,
) -> Certgate {
    let ca = files.path("ssl/ca.crt").to_string_lossy().into_owned();
    let upstream = format!("https://localhost:{}", upstream.port());
    let mut args = vec![
        "client".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--upstream".into(),
        upstream,
        "--ca".into(),
        ca,
    ];
    if let Some((cert, key)) = identity {
        for (flag, name) in [("--cert", cert), ("--key", key)] {
            args.push(flag.into());
            args.push(files.path(name).to_string_lossy().into_owned());
        }
    }
    Certgate::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn client_mode_logs_nginx_refusing_its_certificate_and_passes_the_400_on() {
    let (files, pki) = (Files::new(), TestPki::new());
    let (nginx, address) = nginx_requiring_client_certificates(&files, &pki);

    let stranger = client_mode_before(&files, address, Some(("stranger.crt", "stranger.key")));
    let answer = http_get(stranger.addr(), "/orders", &[("host", "localhost")]).await;
    assert_eq!(answer.status, 400, "{answer:?}\n{}", nginx.errors());
    assert!(
        answer
            .body
            .contains("<title>400 The SSL certificate error</title>"),
        "{answer:?}"
    );
    let line = stranger.wait_for_log(&["refused our client certificate"]);
    assert!(
        line.contains("stranger.crt after the handshake: it answered 400 \"The SSL certificate error\", nginx's answer when the certificate does not verify against its ssl_client_certificate"),
        "{line}"
    );
    assert!(
        line.contains("https://localhost:"),
        "names the upstream: {line}"
    );

    let without = client_mode_before(&files, address, None);
    let answer = http_get(without.addr(), "/", &[("host", "localhost")]).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    without.wait_for_log(&[
        "requires a client certificate and this listener sends none: it answered 400 \"No required SSL certificate was sent\"; set cert and key for this listener",
    ]);

    let good = client_mode_before(&files, address, Some(("ssl/client.crt", "ssl/client.key")));
    let answer = http_get(good.addr(), "/", &[("host", "localhost")]).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "ok\n"));
    assert!(!good.logs().contains("refused"), "{}", good.logs());
}

/// Paths around `location /admin/health` (which answers itself) and `location /api/`.
const LOCATION_PATHS: &[&str] = &[
    "/admin/health",
    "/admin/health/live",
    "/admin/healthsecret",
    "/admin/health-internal/users",
    "/admin/heal",
    // Not "/api": nginx answers it with a 301 to /api/ (a location ending in / with
    // proxy_pass), certgate forwards it to location /.
    "/api/",
    "/api/charge",
    "//admin//healthz",
    "/%61dmin/health",
    "/admin%2fhealth",
    "/admin;x/health",
    "/ADMIN/health",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn locations_take_the_same_paths_as_under_nginx() {
    let pki = TestPki::new();
    let backend = RecordingBackend::plain().await;
    let conf = |listen: u16| {
        format!(
            "server {{\n    listen 127.0.0.1:{listen} ssl;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    location / {{\n        proxy_pass http://127.0.0.1:{};\n    }}\n    location /admin/health {{\n        return 200 \"healthy\";\n    }}\n    location /api/ {{\n        proxy_pass http://127.0.0.1:{};\n    }}\n}}\n",
            backend.address.port(),
            backend.address.port()
        )
    };
    let nginx_files = Files::new();
    write_ssl_dir(&nginx_files, &pki);
    let nginx_port = free_port();
    nginx_files.write("locations.conf", conf(nginx_port));
    let nginx = Nginx::start(
        &nginx_files,
        &nginx_files.path("locations.conf"),
        nginx_port,
    );
    let certgate_files = Files::new();
    write_ssl_dir(&certgate_files, &pki);
    let config = certgate_files.write("locations.conf", conf(0));
    let certgate = Certgate::start(&["run", "--config", &config]);

    let client = tls_client(&pki.ca.issued.cert_pem, None);
    let mut found = Vec::new();
    for path in LOCATION_PATHS {
        let mut seen = Vec::new();
        for address in [
            SocketAddr::from(([127, 0, 0, 1], nginx_port)),
            certgate.addr(),
        ] {
            let answer = https_get(address, client.clone(), path, &[]).await.unwrap();
            let forwarded: Vec<String> = backend.take().into_iter().map(|r| r.path).collect();
            seen.push((answer.status, answer.body, forwarded));
        }
        eprintln!("{path}: nginx {:?}, certgate {:?}", seen[0], seen[1]);
        if seen[0] != seen[1] {
            found.push(format!(
                "{path}: nginx {:?}, certgate {:?}",
                seen[0], seen[1]
            ));
        }
    }
    if !found.is_empty() {
        eprintln!("nginx error log:\n{}", nginx.errors());
        eprintln!("certgate log:\n{}", certgate.logs());
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// certgate client mode (its default HTTP/2) in front of nginx A listening with `ssl http2`:
/// the Host rule's value must arrive as `:authority` only. nginx 1.22 answers 400 ("client sent
/// duplicate host header") to a request that also carries a `host` field, as RFC 9113 8.3.1
/// lets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn client_mode_over_http2_to_nginx_sends_the_host_as_authority_only() {
    let pki = TestPki::new();
    let backend = RecordingBackend::plain().await;
    let files = Files::new();
    write_ssl_dir(&files, &pki);
    let port = free_port();
    // $http_host is the authority nginx took from the request; $server_protocol proves HTTP/2.
    files.write(
        "server_a_http2.conf",
        format!(
            "server {{\n    listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    ssl_client_certificate ssl/ca.crt;\n    ssl_verify_client on;\n    location / {{\n        proxy_pass http://127.0.0.1:{};\n        proxy_set_header Host $http_host;\n        proxy_set_header X-Protocol $server_protocol;\n    }}\n}}\n",
            backend.address.port()
        ),
    );
    let nginx = Nginx::start(&files, &files.path("server_a_http2.conf"), port);
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    let upstream = format!("https://localhost:{port}");
    let default_host = format!("localhost:{port}");
    // The same Host rules over HTTP/1.1 (`--no-http2`) too, where hyper-util writes the Host
    // from the URI's authority.
    let api_host = ["--set-header", "Host api.example:8443"];
    for (rules, expected_host, protocol) in [
        (vec![], default_host.as_str(), "HTTP/2.0"),
        (api_host.to_vec(), "api.example:8443", "HTTP/2.0"),
        (
            vec!["--set-header", "Host $http_host"],
            "caller.example",
            "HTTP/2.0",
        ),
        (
            [&api_host[..], &["--no-http2"]].concat(),
            "api.example:8443",
            "HTTP/1.1",
        ),
        (vec!["--no-http2"], default_host.as_str(), "HTTP/1.1"),
    ] {
        let mut args = vec!["client", "--listen", "127.0.0.1:0", "--upstream", &upstream];
        let (cert, key, ca) = (p("ssl/client.crt"), p("ssl/client.key"), p("ssl/ca.crt"));
        args.extend(["--cert", &cert, "--key", &key, "--ca", &ca]);
        args.extend(rules.iter().copied());
        let certgate = Certgate::start(&args);
        for _ in 0..2 {
            let answer = http_get(certgate.addr(), "/orders", &[("host", "caller.example")]).await;
            assert_eq!(
                answer.status,
                200,
                "{rules:?}: {}\nnginx error log:\n{}\ncertgate log:\n{}",
                answer.body,
                nginx.errors(),
                certgate.logs()
            );
        }
        let received = backend.take();
        assert_eq!(received.len(), 2, "{received:?}");
        for request in &received {
            assert_eq!(request.header("host"), Some(expected_host), "{rules:?}");
            assert_eq!(request.header("x-protocol"), Some(protocol), "{rules:?}");
        }
    }
}

/// What a client presents in the CA-bundle cases.
#[derive(Clone, Copy, Debug)]
enum Presented {
    /// A leaf of the intermediate, alone.
    IntermediateLeaf,
    /// That leaf with the intermediate after it.
    IntermediateLeafAndIntermediate,
    /// A leaf of the root, alone.
    RootLeaf,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn ca_bundles_with_intermediates_end_chains_as_under_nginx() {
    let pki = TestPki::new();
    let intermediate = pki.ca.intermediate("bundle intermediate").unwrap();
    let leaf = intermediate
        .leaf(&LeafSpec::new("intermediate-client", Usage::Client))
        .unwrap();
    let with_intermediate = format!("{}{}", leaf.cert_pem, intermediate.issued.cert_pem);
    let backend = RecordingBackend::plain().await;
    let only_intermediate = intermediate.issued.cert_pem.clone();
    let intermediate_and_root =
        format!("{}{}", intermediate.issued.cert_pem, pki.ca.issued.cert_pem);
    // (bundle, ssl_verify_depth, what the client sends, whether nginx admits it)
    let cases = [
        // OpenSSL wants a chain to a self-signed root; an intermediate alone ends none.
        (&only_intermediate, 1, Presented::IntermediateLeaf, false),
        (
            &only_intermediate,
            1,
            Presented::IntermediateLeafAndIntermediate,
            false,
        ),
        // The bundle's intermediate counts against the depth.
        (
            &intermediate_and_root,
            0,
            Presented::IntermediateLeaf,
            false,
        ),
        (&intermediate_and_root, 1, Presented::IntermediateLeaf, true),
        (&intermediate_and_root, 0, Presented::RootLeaf, true),
    ];
    let mut found = Vec::new();
    for (bundle, depth, presented, admitted) in cases {
        let conf = |listen: u16| {
            format!(
                "server {{\n    listen 127.0.0.1:{listen} ssl;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    ssl_client_certificate ssl/bundle.pem;\n    ssl_verify_client on;\n    ssl_verify_depth {depth};\n    location / {{\n        proxy_pass http://127.0.0.1:{};\n    }}\n}}\n",
                backend.address.port()
            )
        };
        let nginx_files = Files::new();
        write_ssl_dir(&nginx_files, &pki);
        nginx_files.write("ssl/bundle.pem", bundle);
        let nginx_port = free_port();
        nginx_files.write("bundle.conf", conf(nginx_port));
        let nginx = Nginx::start(&nginx_files, &nginx_files.path("bundle.conf"), nginx_port);
        let certgate_files = Files::new();
        write_ssl_dir(&certgate_files, &pki);
        certgate_files.write("ssl/bundle.pem", bundle);
        let config = certgate_files.write("bundle.conf", conf(0));
        let certgate = Certgate::start(&["run", "--config", &config]);

        let client = match presented {
            Presented::IntermediateLeaf => tls_client(
                &pki.ca.issued.cert_pem,
                Some((&leaf.cert_pem, &leaf.key_pem)),
            ),
            Presented::IntermediateLeafAndIntermediate => tls_client(
                &pki.ca.issued.cert_pem,
                Some((&with_intermediate, &leaf.key_pem)),
            ),
            Presented::RootLeaf => pki.client_config(),
        };
        let mut seen = Vec::new();
        for address in [
            SocketAddr::from(([127, 0, 0, 1], nginx_port)),
            certgate.addr(),
        ] {
            let outcome = match https_get(address, client.clone(), "/", &[]).await {
                Ok(answer) => Outcome::Status(answer.status),
                Err(_) => Outcome::Refused,
            };
            seen.push((outcome == Outcome::Status(200), outcome));
        }
        let label = format!(
            "bundle of {} CA(s), depth {depth}, {presented:?}",
            bundle.matches("BEGIN").count()
        );
        eprintln!("{label}: nginx {:?}, certgate {:?}", seen[0].1, seen[1].1);
        assert_eq!(
            seen[0].0,
            admitted,
            "{label}: nginx itself\n{}",
            nginx.errors()
        );
        if seen[0].0 != seen[1].0 {
            found.push(format!(
                "{label}: nginx {:?}, certgate {:?}\n{}",
                seen[0].1,
                seen[1].1,
                certgate.logs()
            ));
        }
        if !admitted {
            certgate.wait_for_log(&[
                "TLS handshake with",
                if depth == 0 {
                    "chain longer than verify depth"
                } else {
                    "not a self-signed root"
                },
            ]);
        }
        backend.take();
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn an_upstream_certificate_with_only_a_cn_is_accepted_as_under_nginx() {
    let pki = TestPki::new();
    let cn_only = pki
        .ca
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&[]))
        .unwrap();
    let backend = RecordingBackend::tls(&cn_only, &pki.ca.issued).await;
    let values = |listen: u16| {
        vec![
            ("LISTEN_PORT", listen.to_string()),
            ("UPSTREAM_PORT", backend.address.port().to_string()),
        ]
    };
    let nginx_files = Files::new();
    write_ssl_dir(&nginx_files, &pki);
    let nginx_port = free_port();
    let path = fixture(&nginx_files, "proxy_b.conf", &values(nginx_port));
    let nginx = Nginx::start(&nginx_files, &path, nginx_port);
    let certgate_files = Files::new();
    write_ssl_dir(&certgate_files, &pki);
    let path = fixture(&certgate_files, "proxy_b.conf", &values(0));
    let certgate = Certgate::start(&["run", "--config", path.to_str().unwrap()]);

    let from_nginx = http_get(SocketAddr::from(([127, 0, 0, 1], nginx_port)), "/", &[]).await;
    assert_eq!(from_nginx.status, 200, "{}", nginx.errors());
    let from_certgate = http_get(certgate.addr(), "/", &[]).await;
    assert_eq!(
        from_certgate.status,
        200,
        "{}\n{}",
        from_certgate.body,
        certgate.logs()
    );
    assert_eq!(backend.take().len(), 2);
}

/// The seed's proxy B on nginx (TLS 1.2 only, session reuse on, no upstream keepalive) in
/// front of certgate as server A: every connection after the first resumes. rustls used to
/// send a new ticket in every resumed TLS 1.2 handshake, after which OpenSSL drops the
/// session nginx holds, so only every other connection resumed (3 of 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn nginx_as_proxy_b_resumes_every_tls12_connection_to_certgate() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    write_ssl_dir(&files, &pki);
    let server_a = start_server_mode(&files, &[]).await;
    let nginx_port = free_port();
    // 127.0.0.1 rather than localhost, so that nginx has one peer (not ::1 as well).
    let conf = files.write(
        "proxy_b_tls12.conf",
        format!(
            "server {{\n    listen 127.0.0.1:{nginx_port};\n    location / {{\n        proxy_pass https://127.0.0.1:{};\n        proxy_ssl_certificate ssl/client.crt;\n        proxy_ssl_certificate_key ssl/client.key;\n        proxy_ssl_trusted_certificate ssl/ca.crt;\n        proxy_ssl_verify on;\n        proxy_ssl_name localhost;\n        proxy_ssl_protocols TLSv1.2;\n        proxy_ssl_session_reuse on;\n    }}\n}}\n",
            server_a.addr().port()
        ),
    );
    let nginx = Nginx::start(&files, Path::new(&conf), nginx_port);
    let proxy_b = SocketAddr::from(([127, 0, 0, 1], nginx_port));
    for _ in 0..6 {
        let answer = http_get(proxy_b, "/", &[]).await;
        assert_eq!(answer.status, 200, "{}\n{}", answer.body, nginx.errors());
    }
    let connected =
        |log: &str| log.contains("listener \"edge\"") && log.contains(" connected with TLSv1.2 ");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server_a.logs().lines().filter(|l| connected(l)).count() < 6 {
        assert!(Instant::now() < deadline, "{}", server_a.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = server_a.logs();
    let resumed = logs
        .lines()
        .filter(|l| connected(l) && l.contains("(resumed handshake"))
        .count();
    assert_eq!(
        resumed,
        5,
        "of 6 connections from nginx, {resumed} resumed:\n{logs}\nnginx:\n{}",
        nginx.errors()
    );
}

/// The seed's pass-through: certgate as proxy B (the seed's last block) hands its caller's
/// `X-SSL-CERT` on to server A, run once as nginx (the seed's server A) and once as certgate
/// (the same config converted, with proxy B named in `trusted_forwarders`). The backend must
/// get the same from both; certgate A without the key strips the header, as its load warning
/// for such configs says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx; run with --ignored"]
async fn the_seeds_pass_through_reaches_the_backend_through_certgate_a_as_through_nginx_a() {
    let pki = TestPki::new();
    let backend = RecordingBackend::plain().await;
    let backend_port = ("BACKEND_PORT", backend.address.port().to_string());

    let nginx_files = Files::new();
    write_ssl_dir(&nginx_files, &pki);
    let nginx_port = free_port();
    let path = fixture(
        &nginx_files,
        "server_a.conf",
        &[
            ("LISTEN_PORT", nginx_port.to_string()),
            backend_port.clone(),
        ],
    );
    let nginx = Nginx::start(&nginx_files, &path, nginx_port);

    // certgate A: the same server block, converted, with and without the trusted forwarder.
    let certgate_files = Files::new();
    write_ssl_dir(&certgate_files, &pki);
    let path = fixture(
        &certgate_files,
        "server_a.conf",
        &[("LISTEN_PORT", "0".into()), backend_port],
    );
    let (code, toml) = run_to_exit(&["convert-nginx", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{toml}");
    let plain = certgate_files.write("server_a.toml", &toml);
    let trusting = certgate_files.write(
        "server_a_trusting_b.toml",
        format!("{toml}trusted_forwarders = [\"cn:test-client\"]\n"),
    );
    let certgate_trusting = Certgate::start(&["run", "--config", &trusting]);
    let certgate_plain = Certgate::start(&["run", "--config", &plain]);

    // A proxy B (certgate, the seed's last block) in front of each server A.
    let proxy_b = |a_port: u16| {
        let files = Files::new();
        write_ssl_dir(&files, &pki);
        let path = fixture(
            &files,
            "proxy_b_passthrough.conf",
            &[
                ("LISTEN_PORT", "0".into()),
                ("UPSTREAM_PORT", a_port.to_string()),
            ],
        );
        let b = Certgate::start(&["run", "--config", path.to_str().unwrap()]);
        (files, b)
    };
    let (_nginx_b_files, b_to_nginx) = proxy_b(nginx_port);
    let (_trusting_b_files, b_to_trusting) = proxy_b(certgate_trusting.addr().port());
    let (_plain_b_files, b_to_plain) = proxy_b(certgate_plain.addr().port());

    let outer = pki
        .ca
        .leaf(&LeafSpec::new("outer-client", Usage::Client))
        .unwrap();
    let outer_cert = nginx_escaped(&outer.cert_pem);
    let scenarios: [(&str, Vec<(&str, &str)>); 2] = [
        (
            "with the outer client's X-SSL-CERT",
            vec![
                ("x-ssl-cert", outer_cert.as_str()),
                ("x-client-cert", "forged-by-the-outer-client"),
            ],
        ),
        ("without X-SSL-CERT", vec![("accept", "*/*")]),
    ];
    let (mut found, mut untrusted_found) = (Vec::new(), Vec::new());
    for (name, headers) in &scenarios {
        let outcome = |b: &Certgate| {
            let b = b.addr();
            let headers = headers.clone();
            let backend = &backend;
            async move {
                let status = Outcome::Status(http_get(b, "/orders?id=7", &headers).await.status);
                (status, backend.take())
            }
        };
        let (nginx_outcome, from_nginx) = outcome(&b_to_nginx).await;
        let (trusting_outcome, from_trusting) = outcome(&b_to_trusting).await;
        let (plain_outcome, from_plain) = outcome(&b_to_plain).await;
        if *name == scenarios[0].0 {
            assert_eq!(
                from_nginx.first().and_then(|r| r.header("x-ssl-cert")),
                Some(outer_cert.as_str()),
                "nginx A passes X-SSL-CERT on:\n{from_nginx:?}\n{}",
                nginx.errors()
            );
        }
        found.extend(differences(
            &format!("pass-through {name}"),
            (&nginx_outcome, &from_nginx),
            (&trusting_outcome, &from_trusting),
        ));
        untrusted_found.extend(differences(
            &format!("pass-through without trusted_forwarders {name}"),
            (&nginx_outcome, &from_nginx),
            (&plain_outcome, &from_plain),
        ));
    }
    for difference in &found {
        eprintln!("  difference: {difference}");
    }
    if found.iter().any(|d| !deliberate(d)) {
        eprintln!("certgate A log:\n{}", certgate_trusting.logs());
    }
    assert_only_deliberate(found);
    // Without the key, the header is what differs (and only in the scenario that sends it).
    let stripped: Vec<&String> = untrusted_found.iter().filter(|d| !deliberate(d)).collect();
    assert_eq!(stripped.len(), 1, "{untrusted_found:?}");
    assert!(
        stripped[0].starts_with(
            "pass-through without trusted_forwarders with the outer client's X-SSL-CERT: header x-ssl-cert: nginx ["
        ) && stripped[0].ends_with("certgate []"),
        "{stripped:?}"
    );
}
