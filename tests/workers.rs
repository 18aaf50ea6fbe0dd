//! Thread-per-core serving (`--workers N`): connections are spread over every worker, each
//! on its own listening socket, and a certificate or config reload reaches all of them.

mod support;

use certgate::pki::{LeafSpec, Usage};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

/// Connections each test opens: with two workers, the chance that the kernel's hash sends
/// all of them to one is 2^-39.
const CONNECTIONS: usize = 40;

/// `certgate_connections_total` of `listener` per worker, from the admin listener.
async fn connections_per_worker(admin: SocketAddr, listener: &str) -> Vec<u64> {
    let metrics = http_get(admin, "/metrics", &[("host", &admin.to_string())]).await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let prefix = format!("certgate_connections_total{{listener=\"{listener}\",worker=\"");
    let mut counts = Vec::new();
    for line in metrics.body.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let (worker, value) = rest.split_once("\"} ").expect("a labelled sample");
        let worker: usize = worker.parse().unwrap();
        if counts.len() <= worker {
            counts.resize(worker + 1, 0);
        }
        counts[worker] = value.trim().parse().unwrap();
    }
    counts
}

/// Opens [`CONNECTIONS`] new mTLS connections to `address`, one request each; returns the
/// certificate each was shown and each answer's body.
async fn one_request_per_connection(address: SocketAddr, pki: &TestPki) -> Vec<(Vec<u8>, String)> {
    let connector = tokio_rustls::TlsConnector::from(pki.client_config());
    let mut seen = Vec::new();
    for _ in 0..CONNECTIONS {
        let stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let tls = connector
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                stream,
            )
            .await
            .unwrap();
        let certificate = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let response = sender.send_request(get("/")).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        seen.push((certificate, String::from_utf8_lossy(&body).into_owned()));
    }
    seen
}

/// Each worker's count grew between `before` and `after`, and all together by `expected`.
fn every_worker_served(before: &[u64], after: &[u64], workers: usize, expected: usize) {
    assert_eq!(after.len(), workers, "one counter per worker: {after:?}");
    let grown: Vec<u64> = (0..workers)
        .map(|w| after[w] - before.get(w).copied().unwrap_or(0))
        .collect();
    assert!(
        grown.iter().all(|&n| n > 0),
        "a worker served nothing: {grown:?}"
    );
    assert_eq!(grown.iter().sum::<u64>(), expected as u64, "{grown:?}");
}

/// [`one_request_per_connection`] to the listener "edge" of a 2-worker process, checking on
/// its admin listener that both workers took some of the connections.
async fn across_both_workers(
    edge: SocketAddr,
    admin: SocketAddr,
    pki: &TestPki,
) -> Vec<(Vec<u8>, String)> {
    let counted = connections_per_worker(admin, "edge").await;
    let seen = one_request_per_connection(edge, pki).await;
    every_worker_served(
        &counted,
        &connections_per_worker(admin, "edge").await,
        2,
        CONNECTIONS,
    );
    seen
}

/// Server mode ("edge") on two workers in front of `backend`, with an admin listener.
fn server_on_two_workers(files: &Files, backend: SocketAddr, env: &[(&str, &str)]) -> Certgate {
    Certgate::start_env(
        &server_mode_args(
            files,
            &format!("http://{backend}"),
            &["--workers", "2", "--admin", "127.0.0.1:0"],
        ),
        2,
        env,
    )
}

fn hangup(server: &Certgate) {
    std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
}

#[tokio::test]
async fn connections_are_served_by_every_worker_in_both_modes() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let server = server_on_two_workers(&files, backend, &[]);
    server.wait_for_log(&["listener \"edge\"", "2 workers"]);
    let answers =
        across_both_workers(server.listener("edge"), server.listener("admin"), &pki).await;
    assert!(answers.iter().all(|(_, body)| body.contains("GET /")));

    // Client mode: plain HTTP in, each worker with its own pool towards server A.
    let args = client_mode_args(
        &files,
        server.listener("edge"),
        &["--workers", "2", "--admin", "127.0.0.1:0"],
    );
    let proxy = Certgate::start_with(&args, 2);
    for _ in 0..CONNECTIONS {
        let answer = http_get(proxy.listener("proxy-b"), "/", &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    every_worker_served(
        &[],
        &connections_per_worker(proxy.listener("admin"), "proxy-b").await,
        2,
        CONNECTIONS,
    );
}

#[tokio::test]
async fn a_certificate_reload_reaches_every_worker() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    // Only SIGHUP reloads, so that what the workers serve changes at one known moment.
    let server = server_on_two_workers(&files, backend, &[("CERTGATE_RELOAD_WATCH", "off")]);
    let (edge, admin) = (server.listener("edge"), server.listener("admin"));
    let before = one_request_per_connection(edge, &pki).await;
    assert!(before.iter().all(|(cert, _)| *cert == pki.server.cert_der));

    let next = pki
        .ca
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost", "127.0.0.1"]))
        .unwrap();
    files.write_key("server.key", &next.key_pem);
    files.write("server.pem", &next.cert_pem);
    hangup(&server);
    server.wait_for_log(&["listener \"edge\": reloaded its certificates"]);

    let after = across_both_workers(edge, admin, &pki).await;
    assert!(
        after.iter().all(|(cert, _)| *cert == next.cert_der),
        "a connection got the old certificate after the reload"
    );
}

#[tokio::test]
async fn a_config_reload_reaches_every_worker() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let backend = spawn_echo().await;
    let edge = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let table = |extra: &str| {
        format!(
            "[[listener]]\nname = \"edge\"\nmode = \"server\"\nlisten = \"{edge}\"\nupstream = \"http://{backend}\"\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n{extra}\n"
        )
    };
    let config = files.write("certgate.toml", table(""));
    let server = Certgate::start_with(
        &[
            "run",
            "--config",
            &config,
            "--workers",
            "2",
            "--admin",
            "127.0.0.1:0",
        ],
        2,
    );
    let admin = server.listener("admin");
    files.write(
        "certgate.toml",
        table("set_header = [[\"X-Changed\", \"yes\"]]"),
    );
    hangup(&server);
    server.wait_for_log(&["SIGHUP: applied", "restarted [\"edge\"]"]);
    let answers = across_both_workers(edge, admin, &pki).await;
    assert!(
        answers
            .iter()
            .all(|(_, body)| body.contains("x-changed: yes")),
        "a worker still runs the old settings"
    );
}

#[tokio::test]
async fn a_port_taken_by_another_process_is_refused_even_with_several_workers() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let first = Certgate::start(&server_mode_args(
        &files,
        "http://127.0.0.1:9",
        &["--workers", "2"],
    ));
    let taken = first.addr().to_string();
    // The second process's sockets would join the first's SO_REUSEPORT group (same user)
    // and take half its connections, unless certgate checks that the address is free.
    let mut args = server_mode_args(&files, "http://127.0.0.1:9", &["--workers", "2"]);
    let listen = args.iter().position(|a| a == "127.0.0.1:0").unwrap();
    args[listen] = taken.clone();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, output) = run_to_exit(&args);
    assert_ne!(code, 0, "{output}");
    assert!(
        output.contains(&format!("cannot listen on {taken}")),
        "{output}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(first);

    let (code, output) = run_to_exit(&["server", "--workers", "0"]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("expected a number of threads from 1 to 1024"),
        "{output}"
    );
}
