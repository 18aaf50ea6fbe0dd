//! `certgate run --config nginx.conf`: the seed's nginx configurations run unchanged (only
//! paths and addresses filled in), with nginx's behaviour; errors name file and line. These
//! need no nginx; `tests/nginx_differential.rs` compares against nginx itself.

mod support;

use certgate::pki::{Authority, KeyType, LeafSpec, Usage};
use support::nginx::*;
use support::*;

fn run_fixture(files: &Files, name: &str, values: &[(&str, String)]) -> Certgate {
    let path = fixture(files, name, values);
    Certgate::start(&["run", "--config", path.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_server_a_forwards_the_verified_certificate_as_nginx_renders_it() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let backend = RecordingBackend::plain().await;
    let server_a = run_fixture(
        &files,
        "server_a.conf",
        &[
            ("LISTEN_PORT", "0".into()),
            ("BACKEND_PORT", backend.address.port().to_string()),
        ],
    );
    server_a.wait_for_log(&["listener \"serverA.example.com:0\""]);
    server_a.wait_for_log(&["server_a.conf:18: nginx sends $ssl_client_cert folded"]);

    let answer = https_get(
        server_a.addr(),
        pki.client_config(),
        "/orders?id=7",
        &[("x-client-cert", "forged"), ("x-forwarded-for", "10.0.0.1")],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let received = backend.take();
    let request = &received[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/orders?id=7")
    );
    // nginx's $ssl_client_cert, unfolded onto one line; the forged value is gone.
    assert_eq!(
        request.header("x-client-cert"),
        Some(unfolded_pem(&pki.client.cert_pem).as_str())
    );
    // nginx's default Host is $proxy_host; it adds no X-Real-IP or X-Forwarded-* of its own.
    assert_eq!(
        request.header("host"),
        Some(format!("127.0.0.1:{}", backend.address.port()).as_str())
    );
    assert_eq!(request.header("x-forwarded-for"), Some("10.0.0.1"));
    for absent in ["x-real-ip", "x-forwarded-proto", "x-client-verify"] {
        assert_eq!(request.header(absent), None, "{absent}: {request:?}");
    }

    // ssl_verify_client on: no certificate, no request.
    let refused = https_get(
        server_a.addr(),
        tls_client(&pki.ca.issued.cert_pem, None),
        "/",
        &[],
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(backend.take().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_proxy_b_verifies_the_upstream_and_sends_host_and_real_ip() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let upstream = RecordingBackend::tls(&pki.server, &pki.ca.issued).await;
    let proxy_b = run_fixture(
        &files,
        "proxy_b.conf",
        &[
            ("LISTEN_PORT", "0".into()),
            ("UPSTREAM_PORT", upstream.address.port().to_string()),
        ],
    );
    let answer = http_get(proxy_b.addr(), "/status", &[("x-client-cert", "as sent")]).await;
    assert_eq!(answer.status, 200, "{}", proxy_b.logs());
    let request = &upstream.take()[0];
    assert_eq!(request.path, "/status");
    assert_eq!(request.header("host"), Some("backend.example"));
    assert_eq!(request.header("x-real-ip"), Some("127.0.0.1"));
    // Client mode forwards what its caller sent; server A decides what to trust.
    assert_eq!(request.header("x-client-cert"), Some("as sent"));

    // The same config against an upstream whose certificate the CA did not issue: 502.
    let impostor_ca = Authority::root("impostor CA", KeyType::EcdsaP256).unwrap();
    let impostor_cert = impostor_ca
        .leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost"]))
        .unwrap();
    let impostor = RecordingBackend::tls(&impostor_cert, &pki.ca.issued).await;
    let files2 = Files::new();
    write_ssl_dir(&files2, &pki);
    let proxy = run_fixture(
        &files2,
        "proxy_b.conf",
        &[
            ("LISTEN_PORT", "0".into()),
            ("UPSTREAM_PORT", impostor.address.port().to_string()),
        ],
    );
    let answer = http_get(proxy.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502);
    assert!(impostor.take().is_empty());
    proxy.wait_for_log(&["unknown issuer"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_if_block_passes_x_ssl_cert_only_when_present_and_says_nginx_would_refuse() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let upstream = RecordingBackend::tls(&pki.server, &pki.ca.issued).await;
    let proxy = run_fixture(
        &files,
        "proxy_b_passthrough.conf",
        &[
            ("LISTEN_PORT", "0".into()),
            ("UPSTREAM_PORT", upstream.address.port().to_string()),
        ],
    );
    proxy.wait_for_log(&[
        "proxy_b_passthrough.conf:18: nginx refuses \"proxy_set_header\" inside \"if\"",
    ]);
    // The SNI default is warned about too.
    proxy.wait_for_log(&["no \"proxy_ssl_server_name on\""]);

    assert_eq!(
        http_get(proxy.addr(), "/", &[("x-ssl-cert", "abc")])
            .await
            .status,
        200
    );
    assert_eq!(http_get(proxy.addr(), "/", &[]).await.status, 200);
    let received = upstream.take();
    assert_eq!(received[0].header("x-ssl-cert"), Some("abc"));
    assert_eq!(received[1].header("x-ssl-cert"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_proxy_ssl_verify_the_upstream_is_not_verified_as_in_nginx_and_a_warning_says_so() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let other = TestPki::new();
    let unverified = RecordingBackend::tls(&other.server, &pki.ca.issued).await;
    files.write(
        "unverified.conf",
        format!(
            "server {{\n    listen 127.0.0.1:0;\n    location / {{\n        proxy_pass https://localhost:{};\n        proxy_ssl_certificate ssl/client.crt;\n        proxy_ssl_certificate_key ssl/client.key;\n    }}\n}}\n",
            unverified.address.port()
        ),
    );
    let proxy = Certgate::start(&[
        "run",
        "--config",
        files.path("unverified.conf").to_str().unwrap(),
    ]);
    proxy.wait_for_log(&[
        "unverified.conf:4: no \"proxy_ssl_verify on\"",
        "can pose as it",
    ]);
    assert_eq!(http_get(proxy.addr(), "/", &[]).await.status, 200);
    assert_eq!(unverified.take().len(), 1);
}

#[test]
fn unsupported_directives_stop_check_with_file_and_line_and_harmless_ones_warn() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let config = files.write(
        "nginx.conf",
        "worker_processes auto;\nevents {\n    worker_connections 1024;\n}\nhttp {\n    sendfile on;\n    server {\n        listen 127.0.0.1:8443 ssl;\n        ssl_certificate ssl/server.crt;\n        ssl_certificate_key ssl/server.key;\n        location / {\n            proxy_pass http://127.0.0.1:8000;\n            gzip_types text/plain;\n        }\n    }\n}\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "{config}:13: directive \"gzip_types\" is not supported (see the list of nginx directives in docs/nginx.md)"
        )),
        "{output}"
    );

    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("            gzip_types text/plain;\n", ""),
    )
    .unwrap();
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 0, "{output}");
    for expected in [
        format!("warning: {config}:3: \"worker_connections\" is accepted and ignored"),
        format!("warning: {config}:6: \"sendfile\" is accepted and ignored"),
        format!("{config}: configuration is valid (1 listener)"),
    ] {
        assert!(
            output.contains(&expected),
            "missing {expected:?}:\n{output}"
        );
    }
}

#[test]
fn worker_processes_sets_the_worker_threads_unless_the_flag_does() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let config = |workers: &str| {
        files.write(
            "nginx.conf",
            format!("worker_processes {workers};\nevents {{ }}\nhttp {{\n    server {{\n        listen 127.0.0.1:0 ssl;\n        ssl_certificate ssl/server.crt;\n        ssl_certificate_key ssl/server.key;\n        location / {{\n            proxy_pass http://127.0.0.1:9;\n        }}\n    }}\n}}\n"),
        )
    };
    let path = config("1");
    let one = Certgate::start(&["run", "--config", &path]);
    one.wait_for_log(&["listening on", "1 worker"]);
    let two = Certgate::start(&["run", "--config", &path, "--workers", "2"]);
    two.wait_for_log(&["listening on", "2 workers"]);
    let (code, output) = run_to_exit(&["convert-nginx", &path]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("# worker_processes 1: run certgate with --workers 1"),
        "{output}"
    );

    let path = config("0");
    let (code, output) = run_to_exit(&["check", "--config", &path]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "{path}:1: invalid worker_processes \"0\": give auto or a number from 1 to 1024"
        )),
        "{output}"
    );
}

#[test]
fn mistakes_name_the_file_and_line() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    for (text, expected) in [
        ("server {\n    listen 8080;\n", ":3: unexpected end of file, expecting \"}\""),
        (
            "server {\n    listen 8080\n    location / { proxy_pass https://a; }\n}\n",
            ":3: directive \"listen\" is not terminated by \";\"",
        ),
        (
            "server {\n    listen 8080 ssl;\n    ssl_certificate ssl/missing.crt;\n    ssl_certificate_key ssl/server.key;\n    location / { proxy_pass http://127.0.0.1:1; }\n}\n",
            ":3: ssl_certificate: cannot read",
        ),
        (
            "server {\n    listen 8080;\n    location ~ \\.php$ { proxy_pass https://a; }\n}\n",
            ":3: regular-expression locations are not supported",
        ),
        (
            "server {\n    listen 8080;\n    location / { proxy_pass http://127.0.0.1:1; }\n}\n",
            ":3: neither side of this server uses TLS",
        ),
        (
            "server {\n    listen 8080;\n    location / {\n        proxy_pass https://a;\n        proxy_set_header X-A $nope;\n    }\n}\n",
                        ":5: proxy_set_header X-A: unknown variable $nope",
        ),
        (
            "server {\n    listen 8443 ssl;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    location / { proxy_pass http://127.0.0.1:1; }\n    location /api/ { proxy_pass http://127.0.0.1:2/; }\n}\n",
            ":6: proxy_pass ending in \"/\" in location /api/: nginx then replaces the /api/ prefix",
        ),
        (
            "server {\n    listen 8443 ssl;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    location / { proxy_pass http://127.0.0.1:1; }\n    location /up { client_max_body_size 1k; proxy_pass http://127.0.0.1:1; }\n}\n",
            ":6: location /up sets another \"client_max_body_size\" than location /",
        ),
        (
            "server {\n    listen 8443 ssl;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    location / { proxy_pass http://127.0.0.1:1; }\n    location /x { return 444; }\n}\n",
            ":6: return 444 (close without answering) is not supported",
        ),
                (
            "server {\n    listen 8443 ssl;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    location / { proxy_pass http://127.0.0.1:1; }\n    location /x { return 301; }\n}\n",
            ":6: return 301 needs the URL to redirect to",
        ),
        (
            "server {\n    listen 8443 ssl;\n    server_name a;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    location / { proxy_pass http://127.0.0.1:1; }\n}\nserver {\n    listen 8443 ssl;\n    server_name b;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    location / { proxy_pass http://127.0.0.1:2; }\n}\n",
            ":9: listen: a second server on 0.0.0.0:8443 (the first is at ",
        ),
    ] {
        let config = files.write("bad.conf", text);
        let (code, output) = run_to_exit(&["check", "--config", &config]);
        assert_eq!(code, 1, "{text}\n{output}");
        assert!(
            output.contains(&format!("{config}{expected}")),
            "expected {expected:?} for:\n{text}\n{output}"
        );
    }
}

#[test]
fn snippets_take_http_level_settings_and_warnings_come_once() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    // A conf.d snippet: settings at its top level are http-level ones.
    let snippet = files.write(
        "snippet.conf",
        "client_max_body_size 2m;\nsendfile on;\nproxy_set_header X-From snippet;\nserver {\n    listen 127.0.0.1:18443 ssl;\n    listen [::1]:18443 ssl;\n    server_name api;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    location / { proxy_pass http://127.0.0.1:8000; }\n}\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &snippet]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("configuration is valid (2 listeners)"),
        "{output}"
    );
    assert_eq!(
        output
            .matches("\"sendfile\" is accepted and ignored")
            .count(),
        1,
        "{output}"
    );
    let toml = run_to_exit(&["convert-nginx", &snippet]).1;
    for expected in [
        "max_body_size = \"2m\"",
        "[\"X-From\", \"snippet\"]",
        "name = \"api 127.0.0.1:18443\"",
        "name = \"api [::1]:18443\"",
    ] {
        assert!(toml.contains(expected), "missing {expected:?}:\n{toml}");
    }

    // In a full config, http-level warnings come once too.
    let full = files.write(
        "nginx.conf",
        "events {}\nhttp {\n    sendfile on;\n    server {\n        listen 127.0.0.1:18444;\n        location / { proxy_pass https://localhost:8443; }\n    }\n}\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &full]);
    assert_eq!(code, 0, "{output}");
    assert_eq!(
        output
            .matches("\"sendfile\" is accepted and ignored")
            .count(),
        1,
        "{output}"
    );
    assert_eq!(
        output.matches("set a CA and verify it").count(),
        0,
        "{output}"
    );
    assert_eq!(
        output.matches("no \"proxy_ssl_verify on\"").count(),
        1,
        "{output}"
    );
}

#[test]
fn includes_with_globs_and_upstream_blocks_are_followed() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    std::fs::create_dir_all(files.path("conf.d")).unwrap();
    for (name, port) in [("a.conf", 18001), ("b.conf", 18002)] {
        files.write(
            &format!("conf.d/{name}"),
            format!("server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    location / {{ proxy_pass http://backend; }}\n}}\n"),
        );
    }
    files.write("conf.d/ignored.txt", "not included");
    let config = files.write(
        "nginx.conf",
        "http {\n    upstream backend {\n        server 127.0.0.1:8000;\n        keepalive 16;\n    }\n    include conf.d/*.conf;\n}\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("configuration is valid (2 listeners)"),
        "{output}"
    );

    let toml = run_to_exit(&["convert-nginx", &config]).1;
    assert!(
        toml.contains("upstream = \"http://127.0.0.1:8000\""),
        "{toml}"
    );
    assert!(
        toml.contains("[\"Host\", \"backend\"]"),
        "nginx sends the upstream's name as Host:\n{toml}"
    );
}

#[test]
fn max_conns_of_an_upstream_server_becomes_upstream_max_connections() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let server = |location: &str| {
        format!("http {{\n    upstream backend {{\n        server 127.0.0.1:8000 max_conns=32 max_fails=3;\n    }}\n    upstream other {{\n        server 127.0.0.1:8001;\n    }}\n    server {{\n        listen 127.0.0.1:18443 ssl;\n        ssl_certificate ssl/server.crt;\n        ssl_certificate_key ssl/server.key;\n        location / {{ proxy_pass http://backend; }}\n{location}    }}\n}}\n")
    };
    let config = files.write("nginx.conf", server(""));
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 0, "{output}");
    assert!(!output.contains("max_conns=32\" is ignored"), "{output}");
    let toml = run_to_exit(&["convert-nginx", &config]).1;
    assert!(
        toml.contains("upstream_max_connections = 32  # server (nginx.conf:3)"),
        "{toml}"
    );

    // certgate applies one limit per server: locations must not ask for different ones.
    let mixed = files.write(
        "mixed.conf",
        server("        location /other { proxy_pass http://other; }\n"),
    );
    let (code, output) = run_to_exit(&["check", "--config", &mixed]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "{mixed}:13: location /other proxies to an upstream with another max_conns than location /"
        )),
        "{output}"
    );

    let bad = files.write(
        "bad.conf",
        server("").replace("max_conns=32", "max_conns=many"),
    );
    let (code, output) = run_to_exit(&["check", "--config", &bad]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{bad}:3: invalid max_conns \"many\"")),
        "{output}"
    );
}

#[test]
fn convert_nginx_prints_a_toml_config_that_certgate_accepts_with_the_comments() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let path = fixture(
        &files,
        "server_a.conf",
        &[
            ("LISTEN_PORT", "8443".into()),
            ("BACKEND_PORT", "8000".into()),
        ],
    );
    let (code, toml) = run_to_exit(&["convert-nginx", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{toml}");
    for expected in [
        "# Require client certificate\nclient_ca = \"ssl/ca.crt\"  # ssl_client_certificate (server_a.conf:12)",
        "verify_client = \"required\"  # ssl_verify_client (server_a.conf:13)",
        "set_header = [[\"Host\", \"127.0.0.1:8000\"], [\"X-Client-Cert\", \"$ssl_client_cert\"]]",
        "default_headers = false",
    ] {
        assert!(toml.contains(expected), "missing {expected:?}:\n{toml}");
    }
    let converted = files.write("converted.toml", &toml);
    let (code, output) = run_to_exit(&["check", "--config", &converted]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("configuration is valid (1 listener)"),
        "{output}"
    );
}

/// A server with a `location /admin/health` that answers itself and a `location /api/`.
fn locations_conf(listens: &str, backend: u16) -> String {
    format!(
        "server {{\n{listens}    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    location / {{\n        proxy_pass http://127.0.0.1:{backend};\n    }}\n    location /admin/health {{\n        return 200 \"healthy\";\n    }}\n    location /api/ {{\n        proxy_pass http://127.0.0.1:{backend};\n    }}\n}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_keep_nginx_string_prefixes_and_each_one_without_a_trailing_slash_is_warned_about(
) {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    // Two listens, one warning: it is about the location, not the listener.
    let config = files.write(
        "locations.conf",
        locations_conf(
            "    listen 127.0.0.1:18453 ssl;\n    listen [::1]:18453 ssl;\n",
            8000,
        ),
    );
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 0, "{output}");
    let warning = format!(
        "warning: {config}:9: as in nginx, location /admin/health also matches longer paths such as /admin/healthx and /admin/health-x/y, which it then answers instead of the shorter location that covers them"
    );
    assert_eq!(output.matches(&warning).count(), 1, "{output}");
    assert!(
        output.contains("end it with / (then /admin/health itself goes to location /) or run a TOML config (certgate convert-nginx) without route_match = \"prefix\""),
        "{output}"
    );
    assert!(!output.contains("location /api/ also"), "{output}");
    let toml = run_to_exit(&["convert-nginx", &config]).1;
    assert!(
        toml.contains("route_match = \"prefix\"  # nginx's location is a string prefix: location /a/b also takes /a/bc"),
        "{toml}"
    );

    // And it runs as nginx does: the longer names take the location's answer.
    let backend = RecordingBackend::plain().await;
    let config = files.write(
        "locations.conf",
        locations_conf("    listen 127.0.0.1:0 ssl;\n", backend.address.port()),
    );
    let server = Certgate::start(&["run", "--config", &config]);
    let client = tls_client(&pki.ca.issued.cert_pem, None);
    for path in [
        "/admin/health",
        "/admin/healthsecret",
        "/admin/health-internal/users",
    ] {
        let answer = https_get(server.addr(), client.clone(), path, &[])
            .await
            .unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "healthy"),
            "{path}"
        );
    }
    assert!(backend.take().is_empty());
    assert_eq!(
        https_get(server.addr(), client, "/api", &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(backend.take()[0].path, "/api");
}

/// A request body sent in 1 KiB chunks with no length announced (so, chunked encoding).
struct Chunks(std::collections::VecDeque<hyper::body::Bytes>);

impl hyper::body::Body for Chunks {
    type Data = hyper::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

/// POSTs `body` over TLS (trusting `ca`), with Content-Length or chunked; returns the status.
async fn post(address: std::net::SocketAddr, ca: &str, body: Vec<u8>, chunked: bool) -> u16 {
    use http_body_util::BodyExt;
    use hyper::body::Bytes;
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(tls_client(ca, None))
        .connect("localhost".try_into().unwrap(), stream)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post("/upload").header("host", "backend.example");
    let body = if chunked {
        Chunks(body.chunks(1024).map(Bytes::copy_from_slice).collect()).boxed()
    } else {
        http_body_util::Full::new(Bytes::from(body)).boxed()
    };
    match sender.send_request(request.body(body).unwrap()).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_max_body_size_return_and_timeouts_behave_as_in_nginx() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let backend = RecordingBackend::plain().await;
    files.write(
        "limits.conf",
        format!(
            "server {{\n    listen 127.0.0.1:0 ssl;\n    ssl_certificate ssl/server.crt;\n    ssl_certificate_key ssl/server.key;\n    client_max_body_size 4k;\n    proxy_connect_timeout 3s;\n    proxy_read_timeout 30s;\n    location / {{\n        proxy_pass http://127.0.0.1:{};\n    }}\n    location /healthz {{\n        return 200 \"alive\";\n    }}\n    location /old {{\n        return 301 https://example.com/new;\n    }}\n}}\n",
            backend.address.port()
        ),
    );
    let path = files.path("limits.conf");
    let toml = run_to_exit(&["convert-nginx", path.to_str().unwrap()]).1;
    for expected in [
        "max_body_size = \"4k\"",
        "connect_timeout = \"3s\"",
        "response_timeout = \"30s\"",
        "return_code = 200",
        "return_text = \"alive\"",
    ] {
        assert!(toml.contains(expected), "missing {expected:?}:\n{toml}");
    }
    let server = Certgate::start(&["run", "--config", path.to_str().unwrap()]);
    let ca = pki.ca.issued.cert_pem.as_str();

    // Within the limit, in one piece and chunked: forwarded.
    assert_eq!(post(server.addr(), ca, vec![b'a'; 4096], false).await, 200);
    assert_eq!(post(server.addr(), ca, vec![b'a'; 4096], true).await, 200);
    assert_eq!(backend.take().len(), 2);
    // Over it: 413, announced or discovered while streaming.
    assert_eq!(post(server.addr(), ca, vec![b'a'; 4097], false).await, 413);
    assert!(
        backend.take().is_empty(),
        "an announced oversize body is not forwarded"
    );
    assert_eq!(
        post(server.addr(), ca, vec![b'a'; 64 * 1024], true).await,
        413
    );
    server.wait_for_log(&["over max_body_size (4096 bytes)"]);
    // certgate streams: the upstream saw the start of that request before it was cut off
    // (nginx buffers the whole body first). One of the deliberate differences in docs/nginx.md.
    backend.take();

    // return: a fixed answer, and a redirect with its Location; neither reaches the backend.
    let client = tls_client(ca, None);
    let answer = https_get(server.addr(), client.clone(), "/healthz", &[])
        .await
        .unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "alive"));
    let mut sender = keep_alive(server.addr(), client).await;
    let response = sender.send_request(get("/old/page")).await.unwrap();
    assert_eq!(response.status(), 301);
    assert_eq!(response.headers()["location"], "https://example.com/new");
    assert!(backend.take().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_an_nginx_config_and_refuses_a_broken_one() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let upstream = RecordingBackend::tls(&pki.server, &pki.ca.issued).await; // A fixed port, so that the restarted listener is found where it was.
    let port = free_port();
    let values = [
        ("LISTEN_PORT", port.to_string()),
        ("UPSTREAM_PORT", upstream.address.port().to_string()),
    ];
    let path = fixture(&files, "proxy_b_forward.conf", &values);
    let proxy = Certgate::start(&["run", "--config", path.to_str().unwrap()]);
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &proxy.pid().to_string()])
            .status()
            .unwrap()
    };
    assert_eq!(
        http_get(proxy.addr(), "/", &[("x-client-cert", "a")])
            .await
            .status,
        200
    );
    assert_eq!(
        upstream.take()[0].header("x-original-client-cert"),
        Some("a")
    );

    // Rename the header; the listener keeps its address and picks up the new rule.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("X-Original-Client-Cert", "X-Caller-Cert"),
    )
    .unwrap();
    hup();
    proxy.wait_for_log(&["SIGHUP: applied"]);
    assert_eq!(
        http_get(proxy.addr(), "/", &[("x-client-cert", "b")])
            .await
            .status,
        200
    );
    let request = &upstream.take()[0];
    assert_eq!(request.header("x-caller-cert"), Some("b"));
    assert_eq!(request.header("x-original-client-cert"), None);

    // A broken file is refused with its line; the running config stays.
    std::fs::write(
        &path,
        "server {\n    listen 127.0.0.1:0;\n    bogus on;\n}\n",
    )
    .unwrap();
    hup();
    proxy.wait_for_log(&[
        "SIGHUP: refused",
        "proxy_b_forward.conf:3: directive \"bogus\" is not supported",
    ]);
    assert_eq!(http_get(proxy.addr(), "/", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_writes_nginx_combined_lines_to_its_file() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let backend = RecordingBackend::plain().await;
    let config = files.write(
        "nginx.conf",
        format!(
            "http {{\n    access_log access.log combined;\n    server {{\n        listen 127.0.0.1:0 ssl;\n        ssl_certificate ssl/server.crt;\n        ssl_certificate_key ssl/server.key;\n        access_log elsewhere.log main;\n        location / {{ proxy_pass http://127.0.0.1:{}; }}\n    }}\n}}\n",
            backend.address.port()
        ),
    );
    let server = Certgate::start(&["run", "--config", &config]);
    server
        .wait_for_log(&["nginx.conf:7: certgate writes one access log; elsewhere.log is ignored"]);
    server.wait_for_log(&["nginx.conf:7: access_log format \"main\" is ignored"]);
    let client = tls_client(&pki.ca.issued.cert_pem, None);
    let answer = https_get(
        server.addr(),
        client,
        "/orders?id=7",
        &[("user-agent", "probe/1")],
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let log = files.path("access.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("GET /orders?id=7") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(text.starts_with("127.0.0.1 - - ["), "{text}");
    assert!(
        text.contains("\"GET /orders?id=7 HTTP/1.1\" 200 2 \"-\" \"probe/1\""),
        "{text}"
    );
    assert!(!files.path("elsewhere.log").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_timeouts_header_buffers_and_underscores_map_to_their_keys() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let backend = RecordingBackend::plain().await;
    files.write(
        "client.conf",
        format!(
            "http {{\n    underscores_in_headers on;\n    keepalive_timeout 1s 30;\n    client_header_timeout 10s;\n    http2_idle_timeout 20s;\n    large_client_header_buffers 4 16k;\n    server {{\n        listen 127.0.0.1:0 ssl;\n        ssl_certificate ssl/server.crt;\n        ssl_certificate_key ssl/server.key;\n        location / {{\n            proxy_pass http://127.0.0.1:{};\n        }}\n    }}\n}}\n",
            backend.address.port()
        ),
    );
    let path = files.path("client.conf");
    let (code, toml) = run_to_exit(&["convert-nginx", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{toml}");
    for expected in [
        "underscores_in_headers = true",
        "keepalive_timeout = \"1s\"",
        "client_header_timeout = \"10s\"",
        "http2_idle_timeout = \"20s\"",
        "max_header_size = 65536",
    ] {
        assert!(toml.contains(expected), "missing {expected:?}:\n{toml}");
    }
    let (code, output) = run_to_exit(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("client.conf:3: the second \"keepalive_timeout\" argument"),
        "{output}"
    );
    // And they act: an underscored header passes, an idle connection closes after 1 s.
    let server = Certgate::start(&["run", "--config", path.to_str().unwrap()]);
    let client = tls_client(&pki.ca.issued.cert_pem, None);
    let mut sender = keep_alive(server.addr(), client).await;
    let request = hyper::Request::get("/")
        .header("host", "localhost")
        .header("x_tenant", "blue")
        .body(http_body_util::Empty::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    assert_eq!(backend.take()[0].header("x_tenant"), Some("blue"));
    server.wait_for_log(&["closed the idle connection"]);
    drop(sender);
}

#[test]
fn nginx_configs_get_nginx_chain_and_name_rules_written_out() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let values = [
        ("LISTEN_PORT", "8443".to_string()),
        ("BACKEND_PORT", "8000".to_string()),
        ("UPSTREAM_PORT", "8443".to_string()),
    ];
    let server_a = fixture(&files, "server_a.conf", &values[..2]);
    let toml = run_to_exit(&["convert-nginx", server_a.to_str().unwrap()]).1;
    assert!(
        toml.contains("partial_chain = false  # nginx's behaviour: OpenSSL wants the chain to end at a self-signed root"),
        "{toml}"
    );
    assert!(!toml.contains("verify_name_in_cn"), "{toml}");
    let proxy_b = fixture(
        &files,
        "proxy_b.conf",
        &[values[0].clone(), values[2].clone()],
    );
    let toml = run_to_exit(&["convert-nginx", proxy_b.to_str().unwrap()]).1;
    for expected in [
        "partial_chain = false  # nginx's behaviour",
        "verify_name_in_cn = true  # nginx's behaviour: OpenSSL's X509_check_host",
    ] {
        assert!(toml.contains(expected), "missing {expected:?}:\n{toml}");
    }
}

/// Server A written as nginx, handing on what its clients send as `X-SSL-CERT` (the seed's
/// pass-through block) and `X-Client-Cert`.
const SERVER_A_PASS_THROUGH: &str = "server {
    listen 127.0.0.1:8443 ssl;
    ssl_certificate ssl/server.crt;
    ssl_certificate_key ssl/server.key;
    ssl_client_certificate ssl/ca.crt;
    ssl_verify_client on;
    location / {
        proxy_pass http://127.0.0.1:8000;
        proxy_set_header X-Original-Client-Cert $http_x_client_cert;
        if ($http_x_ssl_cert) {
            proxy_set_header X-SSL-CERT $http_x_ssl_cert;
        }
    }
}
";

#[test]
fn a_server_rule_copying_an_inbound_identity_header_is_warned_about_with_the_key_to_add() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let config = files.write("server_a_pass_through.conf", SERVER_A_PASS_THROUGH);
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 0, "{output}");
    for (line, rule, header) in [
        (
            9,
            "proxy_set_header X-Original-Client-Cert $http_x_client_cert",
            "x-client-cert",
        ),
        (
            11,
            "proxy_set_header X-SSL-CERT $http_x_ssl_cert",
            "x-ssl-cert",
        ),
    ] {
        let warning = format!(
            "warning: {config}:{line}: \"{rule}\" copies the client's {header} header, which nginx passes on but certgate strips from every client in server mode"
        );
        assert_eq!(output.matches(&warning).count(), 1, "{warning}\n{output}");
    }
    assert!(
        output.contains("trusted_forwarders = [\"cn:PROXY-CN\"] (or uri:, pin-sha256:) in a TOML config (certgate convert-nginx prints one)"),
        "{output}"
    );

    // Doing what it says: the converted config with the key added is valid.
    let toml = run_to_exit(&["convert-nginx", &config]).1;
    let converted = files.write(
        "converted.toml",
        format!("{toml}trusted_forwarders = [\"cn:proxy-b\"]\n"),
    );
    let (code, output) = run_to_exit(&["check", "--config", &converted]);
    assert_eq!(code, 0, "{output}");

    // Neither server A without such a rule nor a proxy B (which strips nothing) is warned.
    for (name, values) in [
        (
            "server_a.conf",
            [
                ("LISTEN_PORT", "8443".to_string()),
                ("BACKEND_PORT", "8000".to_string()),
            ],
        ),
        (
            "proxy_b_passthrough.conf",
            [
                ("LISTEN_PORT", "8080".to_string()),
                ("UPSTREAM_PORT", "8443".to_string()),
            ],
        ),
    ] {
        let path = fixture(&files, name, &values);
        let (code, output) = run_to_exit(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{output}");
        assert!(!output.contains("trusted_forwarders"), "{name}: {output}");
    }
}

#[test]
fn trusted_forwarders_is_a_server_mode_key_checked_like_the_others() {
    let (files, pki) = (Files::new(), TestPki::new());
    write_ssl_dir(&files, &pki);
    let client = files.write(
        "client.toml",
        "[[listener]]\nmode = \"client\"\nlisten = \"127.0.0.1:8080\"\nupstream = \"https://localhost:8443\"\nca = \"ssl/ca.crt\"\ntrusted_forwarders = [\"cn:proxy-b\"]\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &client]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!(
            "{client}:6: key 'trusted_forwarders': 'trusted_forwarders' is for server mode"
        )),
        "{output}"
    );
    let server = files.write(
        "server.toml",
        "[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:8443\"\nupstream = \"127.0.0.1:8000\"\ncert = \"ssl/server.crt\"\nkey = \"ssl/server.key\"\nclient_ca = \"ssl/ca.crt\"\ntrusted_forwarders = [\"cn:proxy-b\", \"uri:spiffe://example.org/ns/edge/sa/proxy-b\", \"pin-sha256:0000000000000000000000000000000000000000000000000000000000000000\"]\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &server]);
    assert_eq!(code, 0, "{output}");
    let bad = files.write(
        "bad.toml",
        "[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:8443\"\nupstream = \"127.0.0.1:8000\"\ncert = \"ssl/server.crt\"\nkey = \"ssl/server.key\"\nclient_ca = \"ssl/ca.crt\"\ntrusted_forwarders = [\"uri:spiffe://**\"]\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &bad]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{bad}:8: key 'trusted_forwarders'")),
        "{output}"
    );
}
