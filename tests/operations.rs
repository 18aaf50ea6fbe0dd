//! Live operations: certificates rotate without a restart, however the files change, a broken
//! file never replaces working material, and SIGTERM lets open requests finish.

mod support;

use certgate::pki::{Issued, LeafSpec, Usage};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;

/// The leaf certificate server mode presents to a new connection.
async fn presented_certificate(server: &Certgate, pki: &TestPki) -> Vec<u8> {
    let client = pki.client_config();
    let stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            stream,
        )
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Waits until new connections get `expected` (rotation takes effect once the files have been
/// quiet for 2 seconds; the loop allows 10 for a loaded machine).
async fn wait_for_certificate(server: &Certgate, pki: &TestPki, expected: &Issued) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented_certificate(server, pki).await != expected.cert_der {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn new_server_cert(pki: &TestPki) -> Issued {
    pki.ca
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost", "127.0.0.1"]))
        .unwrap()
}

#[tokio::test]
async fn certificate_written_in_place_is_served_to_new_connections() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let server = start_server_mode(&files, &[]).await;
    assert_eq!(
        presented_certificate(&server, &pki).await,
        pki.server.cert_der
    );
    // A connection opened before the rotation, kept alive across it.
    let client = pki.client_config();
    let mut sender = keep_alive(server.addr(), client).await;
    assert_eq!(sender.send_request(get("/")).await.unwrap().status(), 200);

    let next = new_server_cert(&pki);
    files.write_key("server.key", &next.key_pem);
    files.write("server.pem", &next.cert_pem);
    wait_for_certificate(&server, &pki, &next).await;
    server.wait_for_log(&["listener \"edge\": reloaded its certificates"]);
    // Untouched by the rotation.
    assert_eq!(sender.send_request(get("/")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn certificate_written_elsewhere_and_renamed_is_served() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let server = start_server_mode(&files, &[]).await;
    let next = new_server_cert(&pki);
    let key = files.write_key("server.key.new", &next.key_pem);
    let cert = files.write("server.pem.new", &next.cert_pem);
    std::fs::rename(key, files.path("server.key")).unwrap();
    std::fs::rename(cert, files.path("server.pem")).unwrap();
    wait_for_certificate(&server, &pki, &next).await;
}

#[tokio::test]
async fn kubernetes_secret_volume_symlink_swap_is_served() {
    use std::os::unix::fs::symlink;
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    // A secret volume: tls.crt -> ..data/tls.crt, ..data -> ..2026_11_27_v1
    let volume = files.path("secret");
    let write_version = |version: &str, issued: &Issued| {
        let dir = volume.join(version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), &issued.cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &issued.key_pem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("tls.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    };
    write_version("..2026_11_27_v1", &pki.server);
    symlink("..2026_11_27_v1", volume.join("..data")).unwrap();
    symlink("..data/tls.crt", volume.join("tls.crt")).unwrap();
    symlink("..data/tls.key", volume.join("tls.key")).unwrap();
    let backend = spawn_echo().await;
    let (cert, key) = (volume.join("tls.crt"), volume.join("tls.key"));
    let server = Certgate::start(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &backend.to_string(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--client-ca",
        files.path("ca.pem").to_str().unwrap(),
    ]);
    assert_eq!(
        presented_certificate(&server, &pki).await,
        pki.server.cert_der
    );

    // The kubelet's update: a new timestamped directory, then an atomic swap of ..data.
    let next = new_server_cert(&pki);
    write_version("..2026_11_27_v2", &next);
    symlink("..2026_11_27_v2", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    std::fs::remove_dir_all(volume.join("..2026_11_27_v1")).unwrap();
    wait_for_certificate(&server, &pki, &next).await;
}

#[tokio::test]
async fn broken_certificate_keeps_the_old_one_serving_and_says_why() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let server = start_server_mode(&files, &[]).await;
    // Half a certificate, as a crashed writer leaves it.
    let next = new_server_cert(&pki);
    let cert = files.write("server.pem", &next.cert_pem[..next.cert_pem.len() / 2]);
    server.wait_for_log(&[
        "listener \"edge\": certificate reload failed, still serving the previous ones",
        &cert,
    ]);
    assert_eq!(
        presented_certificate(&server, &pki).await,
        pki.server.cert_der
    );
    let answer = https_get(server.addr(), pki.client_config(), "/", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, 200);

    // Finishing the job makes the new pair live.
    files.write_key("server.key", &next.key_pem);
    files.write("server.pem", &next.cert_pem);
    wait_for_certificate(&server, &pki, &next).await;
}

/// Server mode with a certificate from an intermediate (cert file: leaf, then intermediate),
/// and a client that trusts only the root, so it needs the intermediate from the server.
struct ChainedServer {
    files: Files,
    pki: TestPki,
    intermediate: certgate::pki::Authority,
    server: Certgate,
}

async fn chained_server() -> ChainedServer {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let intermediate = pki.ca.intermediate("server intermediate").unwrap();
    let leaf = intermediate
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost", "127.0.0.1"]))
        .unwrap();
    files.write_key("server.key", &leaf.key_pem);
    files.write(
        "server.pem",
        format!("{}{}", leaf.cert_pem, intermediate.issued.cert_pem),
    );
    let server = start_server_mode(&files, &[]).await;
    ChainedServer {
        files,
        pki,
        intermediate,
        server,
    }
}

/// Handshakes with `address` every 20 ms until `stop`, verifying the chain to the root;
/// returns the errors of those that failed, how many succeeded, and the last leaf seen.
fn verify_continuously(
    address: SocketAddr,
    client: std::sync::Arc<rustls::ClientConfig>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<String>, usize, Vec<u8>)> {
    tokio::spawn(async move {
        let (mut failures, mut successes, mut leaf) = (Vec::new(), 0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let stream = tokio::net::TcpStream::connect(address).await.unwrap();
            match tokio_rustls::TlsConnector::from(client.clone())
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    stream,
                )
                .await
            {
                Ok(tls) => {
                    successes += 1;
                    leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
                }
                Err(error) => failures.push(error.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (failures, successes, leaf)
    })
}

#[tokio::test]
async fn a_chain_file_written_in_place_in_two_steps_is_loaded_whole() {
    let ChainedServer {
        files,
        pki,
        intermediate,
        server,
    } = chained_server().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = verify_continuously(server.addr(), pki.client_config(), stop.clone());

    // A slow writer: the key and the leaf, then the intermediate appended 1.5 s later.
    let next = intermediate
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost", "127.0.0.1"]))
        .unwrap();
    files.write_key("server.key", &next.key_pem);
    files.write("server.pem", &next.cert_pem);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(files.path("server.pem"))
            .unwrap();
        file.write_all(intermediate.issued.cert_pem.as_bytes())
            .unwrap();
    }
    server.wait_for_log(&["listener \"edge\": reloaded its certificates"]);
    // A few more handshakes with the new chain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (failures, successes, leaf) = client.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} handshakes failed during the rotation, first: {}\n{}",
        failures.len(),
        failures.len() + successes,
        failures[0],
        server.logs()
    );
    assert!(successes > 10, "only {successes} handshakes");
    assert_eq!(leaf, next.cert_der, "the new certificate was not served");
    let logs = server.logs();
    assert!(!logs.contains("the new certificate chain"), "{logs}");
}

#[tokio::test]
async fn a_chain_that_loses_its_intermediate_is_warned_about() {
    let ChainedServer {
        files,
        pki,
        intermediate,
        server,
    } = chained_server().await;
    let next = intermediate
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost", "127.0.0.1"]))
        .unwrap();
    files.write_key("server.key", &next.key_pem);
    let cert = files.write("server.pem", &next.cert_pem);
    let warning = server.wait_for_log(&[
        "WARN",
        "listener \"edge\": the new certificate chain in",
        &cert,
        "has 1 certificate(s), the previous one 2",
        "no longer includes the intermediate \"CN=server intermediate",
        "clients that do not have the missing intermediate cannot verify this certificate",
    ]);
    assert!(warning.contains("append it to the file"), "{warning}");
    // Served as written: a client that has the intermediate gets the lone leaf.
    let has_intermediate = tls_client(
        &format!("{}{}", pki.ca.issued.cert_pem, intermediate.issued.cert_pem),
        Some((&pki.client.cert_pem, &pki.client.key_pem)),
    );
    let stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(has_intermediate)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            stream,
        )
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap(),
        [rustls::pki_types::CertificateDer::from(
            next.cert_der.clone()
        )]
    );
}

#[tokio::test]
async fn sighup_rereads_the_files() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    // No watching and no periodic check: only a request can reload.
    let server = Certgate::start_env(
        &server_mode_args(&files, &format!("http://{backend}"), &[]),
        1,
        &[("CERTGATE_RELOAD_WATCH", "off")],
    );
    server.wait_for_log(&["CERTGATE_RELOAD_WATCH=off"]);
    let next = new_server_cert(&pki);
    files.write_key("server.key", &next.key_pem);
    files.write("server.pem", &next.cert_pem);
    // Longer than the quiet period and two periodic checks: nothing else picks the files up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        presented_certificate(&server, &pki).await,
        pki.server.cert_der,
        "reloaded without a request:\n{}",
        server.logs()
    );

    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    wait_for_certificate(&server, &pki, &next).await;
    server.wait_for_log(&["listener \"edge\": reloaded its certificates"]);
}

#[tokio::test]
async fn client_mode_presents_its_new_certificate_and_retires_old_pooled_connections() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let (_server_a, proxy_b) = start_chain(&files, &[], &[]).await;
    let first = http_get(proxy_b.addr(), "/", &[]).await;
    assert_eq!(
        echoed_header(&first.body, "x-client-cert"),
        vec![nginx_escaped(&pki.client.cert_pem)]
    );

    let next = pki
        .ca
        .leaf(&LeafSpec::new("rotated-client", Usage::Client))
        .unwrap();
    let key = files.write_key("client.key.new", &next.key_pem);
    let cert = files.write("client.pem.new", &next.cert_pem);
    std::fs::rename(key, files.path("client.key")).unwrap();
    std::fs::rename(cert, files.path("client.pem")).unwrap();
    proxy_b.wait_for_log(&["listener \"proxy-b\": reloaded its certificates"]);
    // The pooled upstream connection still carries the old certificate; it must not be reused.
    let after = http_get(proxy_b.addr(), "/", &[]).await;
    assert_eq!(
        echoed_header(&after.body, "x-client-cert"),
        vec![nginx_escaped(&next.cert_pem)]
    );
}

#[tokio::test]
async fn sigterm_lets_an_open_request_finish_and_exits_zero() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    // A backend that takes a second and a half to answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(hyper::body::Bytes::from("slow but complete")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let server = Certgate::start(&server_mode_args(
        &files,
        &backend.to_string(),
        &["--shutdown-timeout", "10"],
    ));
    let address = server.addr();
    let client = pki.client_config();
    let slow = tokio::spawn(async move { https_get(address, client, "/slow", &[]).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = server.pid();
    let exit = tokio::task::spawn_blocking(move || server.signal_and_wait("TERM"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No new connections once the signal arrived...
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "still accepting after SIGTERM"
    );
    // ...but the open request completes.
    let answer = slow.await.unwrap().unwrap();
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "slow but complete")
    );
    assert_eq!(exit.await.unwrap(), 0, "certgate (pid {pid}) exit code");
}

#[tokio::test]
async fn certificates_near_expiry_are_warned_about_at_load() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let soon = server_cert_expiring_in(&pki, 10);
    let cert = files.write("server.pem", &soon.cert_pem);
    files.write_key("server.key", &soon.key_pem);
    let server = start_server_mode(&files, &[]).await;
    server.wait_for_log(&[
        "WARN",
        "server certificate \"CN=localhost,O=certgate test PKI\"",
        &cert,
        " days; renew it",
        " expires in ",
    ]);
}

#[tokio::test]
async fn a_flood_of_failed_handshakes_is_logged_at_a_bounded_rate() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let server = start_server_mode(&files, &[]).await;
    let anonymous = tls_client(&pki.ca.issued.cert_pem, None);
    for _ in 0..60 {
        let _ = https_get(server.addr(), anonymous.clone(), "/", &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = https_get(server.addr(), anonymous, "/", &[]).await;
    server.wait_for_log(&["more failed handshakes were not logged"]);
    let logged = server.logs().matches("TLS handshake with").count();
    assert!(
        logged <= 41,
        "{logged} lines for 61 failures in two seconds"
    );
}

fn wait_for_file_line(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needle:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn json_access_log_records_each_request_with_its_client_certificate() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let log = files.path("access.log");
    let server = start_server_mode(
        &files,
        &[
            "--access-log",
            "json",
            "--access-log-file",
            log.to_str().unwrap(),
        ],
    )
    .await;
    let client = pki.client_config();
    let answer = https_get(
        server.addr(),
        client,
        "/orders?id=7",
        &[("user-agent", "test-agent")],
    )
    .await
    .unwrap();
    let line = wait_for_file_line(&log, "/orders?id=7");
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["listener"], "edge");
    assert!(
        record["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    assert_eq!(
        record["client_subject"],
        "CN=test-client,O=certgate test PKI"
    );
    assert_eq!(record["method"], "GET");
    assert_eq!(record["status"], 200);
    assert_eq!(record["bytes"], answer.body.len());
    assert!(
        record["upstream"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{line}"
    );
    assert!(record["upstream_ms"].as_f64().unwrap() >= 0.0, "{line}");
    assert!(
        record["duration_ms"].as_f64().unwrap() >= record["upstream_ms"].as_f64().unwrap(),
        "{line}"
    );
    assert!(record["time"].as_str().unwrap().ends_with('Z'), "{line}");
}

#[tokio::test]
async fn combined_access_log_is_nginx_combined_on_stdout() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let server = start_server_mode(&files, &["--access-log", "combined"]).await;
    let client = pki.client_config();
    let answer = https_get(
        server.addr(),
        client,
        "/x",
        &[
            ("user-agent", "test-agent"),
            ("referer", "https://a.example/"),
        ],
    )
    .await
    .unwrap();
    let line = server.wait_for_log(&["\"GET /x HTTP/1.1\""]);
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains(" +0000] "), "{line}");
    assert!(
        line.ends_with(&format!(
            "\"GET /x HTTP/1.1\" 200 {} \"https://a.example/\" \"test-agent\"",
            answer.body.len()
        )),
        "{line}"
    );
}

#[tokio::test]
async fn error_log_can_go_to_a_file() {
    let files = Files::new();
    TestPki::new().write(&files);
    let log = files.path("error.log");
    let port = free_port();
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(BIN)
        .args([
            "server",
            "--listen",
            &listen,
            "--upstream",
            "127.0.0.1:9",
            "--cert",
            &p("server.pem"),
            "--key",
            &p("server.key"),
            "--client-ca",
            &p("ca.pem"),
            "--log-file",
            log.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = wait_for_file_line(&log, "listening on");
    assert!(line.contains(&listen), "{line}");
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&output.stderr).is_empty(),
        "the log went to stderr too"
    );
}

fn listener_table(name: &str, port: u16, backend: SocketAddr, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nmode = \"server\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"http://{backend}\"\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n{extra}\n"
    )
}

#[tokio::test]
async fn sighup_applies_a_changed_config_and_keeps_unchanged_listeners_connections() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let config = files.write(
        "certgate.toml",
        listener_table("edge-a", port_a, backend, "")
            + &listener_table("edge-b", port_b, backend, ""),
    );
    let server = Certgate::start_with(&["run", "--config", &config], 2);

    // A keep-alive connection to edge-a, open across the reload.
    let client = pki.client_config();
    let mut sender = keep_alive(SocketAddr::from(([127, 0, 0, 1], port_a)), client.clone()).await;
    assert_eq!(
        sender.send_request(get("/before")).await.unwrap().status(),
        200
    );

    files.write(
        "certgate.toml",
        listener_table("edge-a", port_a, backend, "")
            + &listener_table(
                "edge-b",
                port_b,
                backend,
                "set_header = [[\"X-Changed\", \"yes\"]]",
            )
            + &listener_table("edge-c", port_c, backend, ""),
    );
    let hup = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
    };
    hup(server.pid());
    server.wait_for_log(&[
        "SIGHUP: applied",
        "kept [\"edge-a\"], restarted [\"edge-b\"], started [\"edge-c\"], stopped []",
    ]);
    // The unchanged listener kept its connection...
    assert_eq!(
        sender.send_request(get("/after")).await.unwrap().status(),
        200
    );
    // ...the changed one runs its new settings, and the new one serves.
    let b = https_get(
        SocketAddr::from(([127, 0, 0, 1], port_b)),
        client.clone(),
        "/",
        &[],
    )
    .await
    .unwrap();
    assert!(b.body.contains("x-changed: yes"), "{}", b.body);
    let c = https_get(
        SocketAddr::from(([127, 0, 0, 1], port_c)),
        client.clone(),
        "/",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(c.status, 200);

    // A broken config is refused with its line, and everything keeps running.
    files.write(
        "certgate.toml",
        listener_table("edge-a", port_a, backend, "verify_dept = 2"),
    );
    hup(server.pid());
    server.wait_for_log(&[
        "SIGHUP: refused",
        &format!("{config}:9: key 'verify_dept': unknown key"),
    ]);
    assert_eq!(
        sender.send_request(get("/still")).await.unwrap().status(),
        200
    );
    let c = https_get(SocketAddr::from(([127, 0, 0, 1], port_c)), client, "/", &[])
        .await
        .unwrap();
    assert_eq!(c.status, 200);
}

#[tokio::test]
async fn requests_still_open_after_the_shutdown_timeout_are_closed_and_exit_is_zero() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    // A backend that never answers in time.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let server = Certgate::start(&server_mode_args(
        &files,
        &backend.to_string(),
        &["--shutdown-timeout", "1"],
    ));
    let address = server.addr();
    let client = pki.client_config();
    let stuck = tokio::spawn(async move { https_get(address, client, "/stuck", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let code = tokio::task::spawn_blocking(move || server.signal_and_wait("TERM"))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request should have been cut off"
    );
}

#[tokio::test]
async fn a_config_reload_that_cannot_bind_keeps_the_old_listeners() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let port = free_port();
    let config = files.write("certgate.toml", listener_table("edge", port, backend, ""));
    let server = Certgate::start(&["run", "--config", &config]);
    // The new config moves the listener to a port something else holds.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    files.write(
        "certgate.toml",
        listener_table("edge", taken_port, backend, ""),
    );
    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    server.wait_for_log(&[
        "SIGHUP: refused",
        &format!("cannot listen on 127.0.0.1:{taken_port}"),
    ]);
    let client = pki.client_config();
    let answer = https_get(SocketAddr::from(([127, 0, 0, 1], port)), client, "/", &[])
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "the old listener must be serving again");
    drop(taken);
}
