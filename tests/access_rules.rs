//! Who may pass: listener-level allow rules refuse in the handshake; route-level rules answer
//! 403; both log the peer's subject, SANs and the rule set that refused it.

mod support;

use certgate::pki::{Issued, LeafSpec, Usage};
use support::nginx::RecordingBackend;
use support::*;

fn setup() -> (Files, TestPki) {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    (files, pki)
}

fn leaf(pki: &TestPki, spec: LeafSpec) -> Issued {
    pki.ca.leaf(&spec).unwrap()
}

async fn status(server: &Certgate, pki: &TestPki, who: &Issued, path: &str) -> Result<u16, String> {
    let client = tls_client(&pki.ca.issued.cert_pem, Some((&who.cert_pem, &who.key_pem)));
    https_get(server.addr(), client, path, &[])
        .await
        .map(|a| a.status)
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn allow_cn_admits_listed_names_and_refuses_others_in_the_handshake() {
    let (files, pki) = setup();
    let server =
        start_server_mode(&files, &["--allow-cn", "billing", "--allow-cn", "orders"]).await;
    let billing = leaf(&pki, LeafSpec::new("billing", Usage::Client));
    let intruder = leaf(
        &pki,
        LeafSpec::new("intruder", Usage::Client).names(&["intruder.internal"]),
    );
    assert_eq!(status(&server, &pki, &billing, "/").await, Ok(200));
    assert!(
        status(&server, &pki, &intruder, "/").await.is_err(),
        "refused in the handshake"
    );
    server.wait_for_log(&[
        "TLS handshake with 127.0.0.1:",
        "not allowed by this listener's rules",
        "subject \"CN=intruder,O=certgate test PKI\"",
        "SANs [DNS:intruder.internal]",
        "allowed: cn=[billing, orders]",
    ]);
}

#[tokio::test]
async fn allow_uri_matches_spiffe_ids_by_trust_domain_and_path() {
    let (files, pki) = setup();
    let server = start_server_mode(
        &files,
        &[
            "--allow-uri",
            "spiffe://example.org/ns/*/sa/api",
            "--allow-uri",
            "spiffe://example.org/jobs/**",
        ],
    )
    .await;
    let cases = [
        ("spiffe://example.org/ns/prod/sa/api", true),
        ("spiffe://example.org/ns/staging/sa/api", true),
        ("spiffe://example.org/jobs/nightly/report", true),
        ("spiffe://example.org/ns/prod/sa/web", false),
        ("spiffe://example.org/ns/prod/x/sa/api", false),
        ("spiffe://evil.org/ns/prod/sa/api", false),
        ("spiffe://example.org/jobs", false),
    ];
    for (spiffe_id, admitted) in cases {
        let who = leaf(
            &pki,
            LeafSpec::new("workload", Usage::Client).names(&[spiffe_id]),
        );
        let result = status(&server, &pki, &who, "/").await;
        assert_eq!(result.is_ok(), admitted, "{spiffe_id}: {result:?}");
    }
    server.wait_for_log(&[
        "URI:spiffe://evil.org/ns/prod/sa/api",
        "uri=[spiffe://example.org/ns/*/sa/api, spiffe://example.org/jobs/**]",
    ]);
}

#[tokio::test]
async fn allow_dns_ou_and_o_each_admit() {
    let (files, pki) = setup();
    let server = start_server_mode(
        &files,
        &[
            "--allow-dns",
            "*.payments.internal",
            "--allow-ou",
            "platform",
            "--allow-o",
            "partner corp",
        ],
    )
    .await;
    let by_dns = leaf(
        &pki,
        LeafSpec::new("a", Usage::Client).names(&["api.payments.internal"]),
    );
    let by_ou = leaf(&pki, LeafSpec::new("b", Usage::Client).org_unit("platform"));
    let by_o = leaf(
        &pki,
        LeafSpec::new("d", Usage::Client).organization("partner corp"),
    );
    let nobody = leaf(
        &pki,
        LeafSpec::new("c", Usage::Client)
            .names(&["a.b.payments.internal"])
            .org_unit("sales"),
    );
    // O is matched whole: another organization, even one that contains it, is not admitted.
    let other_o = leaf(
        &pki,
        LeafSpec::new("e", Usage::Client).organization("partner corp ltd"),
    );
    assert_eq!(status(&server, &pki, &by_dns, "/").await, Ok(200));
    assert_eq!(status(&server, &pki, &by_ou, "/").await, Ok(200));
    assert_eq!(status(&server, &pki, &by_o, "/").await, Ok(200));
    assert!(status(&server, &pki, &nobody, "/").await.is_err());
    assert!(status(&server, &pki, &other_o, "/").await.is_err());
    server.wait_for_log(&[
        "subject \"OU=sales,CN=c,O=certgate test PKI\"",
        "o=[partner corp] ou=[platform] dns=[*.payments.internal]",
    ]);
    server.wait_for_log(&["subject \"CN=e,O=partner corp ltd\"", "o=[partner corp]"]);
}

#[tokio::test]
async fn pins_match_the_certificate_or_its_public_key() {
    let (files, pki) = setup();
    let by_cert = leaf(&pki, LeafSpec::new("pinned-cert", Usage::Client));
    let by_key = leaf(&pki, LeafSpec::new("pinned-key", Usage::Client));
    let other = leaf(&pki, LeafSpec::new("unpinned", Usage::Client));
    let (_, parsed) = x509_parser::parse_x509_certificate(&by_key.cert_der).unwrap();
    let cert_pin = sha256_hex(&by_cert.cert_der);
    let spki_pin = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, parsed.public_key().raw),
    );
    let server = start_server_mode(
        &files,
        &[
            "--allow-pin-sha256",
            &cert_pin,
            "--allow-pin-sha256",
            &spki_pin,
        ],
    )
    .await;
    assert_eq!(status(&server, &pki, &by_cert, "/").await, Ok(200));
    assert_eq!(status(&server, &pki, &by_key, "/").await, Ok(200));
    assert!(status(&server, &pki, &other, "/").await.is_err());
    server.wait_for_log(&["CN=unpinned", "pin-sha256=["]);
}

#[tokio::test]
async fn rules_apply_to_clients_below_an_intermediate() {
    let (files, pki) = setup();
    let intermediate = pki.ca.intermediate("team CA").unwrap();
    let member = intermediate
        .leaf(&LeafSpec::new("svc", Usage::Client).names(&["spiffe://example.org/team/svc"]))
        .unwrap();
    let chain = format!("{}{}", member.cert_pem, intermediate.issued.cert_pem);
    let server = start_server_mode(&files, &["--allow-uri", "spiffe://example.org/team/*"]).await;
    let client = tls_client(&pki.ca.issued.cert_pem, Some((&chain, &member.key_pem)));
    let answer = https_get(server.addr(), client, "/", &[]).await.unwrap();
    assert_eq!(answer.status, 200);
}

fn routes_config(files: &Files, admin_backend: &str, api_backend: &str) -> String {
    files.write(
        "certgate.toml",
        format!(
            r#"
[[listener]]
name = "edge"
mode = "server"
listen = "127.0.0.1:0"
upstream = "http://{api_backend}"
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"

[[listener.route]]
path = "/admin"
upstream = "http://{admin_backend}"
allow_cn = ["operator"]

[[listener.route]]
path = "/admin/public"

[[listener.route]]
path = "/api"
allow_uri = ["spiffe://example.org/ns/*/sa/billing"]
"#
        ),
    )
}

#[tokio::test]
async fn routes_pick_the_longest_prefix_and_answer_403_without_revealing_rules() {
    let (files, pki) = setup();
    let api_backend = spawn_echo().await;
    let admin_backend = spawn_echo().await;
    let config = routes_config(&files, &admin_backend.to_string(), &api_backend.to_string());
    let server = Certgate::start(&["run", "--config", &config]);
    let operator = leaf(&pki, LeafSpec::new("operator", Usage::Client));
    let billing = leaf(
        &pki,
        LeafSpec::new("billing", Usage::Client).names(&["spiffe://example.org/ns/prod/sa/billing"]),
    );

    let get = |who: &Issued, path: &str| {
        let client = tls_client(&pki.ca.issued.cert_pem, Some((&who.cert_pem, &who.key_pem)));
        let path = path.to_string();
        let address = server.addr();
        async move { https_get(address, client, &path, &[]).await.unwrap() }
    };

    // /admin goes to its own backend, for the operator only.
    let answer = get(&operator, "/admin/users").await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.body.starts_with("GET /admin/users "),
        "{}",
        answer.body
    );
    let denied = get(&billing, "/admin/users").await;
    assert_eq!(denied.status, 403);
    assert!(
        !denied.body.contains("operator"),
        "the 403 body reveals the rules: {}",
        denied.body
    );
    server.wait_for_log(&[
        "listener \"edge\"",
        "route \"/admin\" does not allow subject \"CN=billing,O=certgate test PKI\"",
        "SANs [URI:spiffe://example.org/ns/prod/sa/billing]",
        "allowed: cn=[operator]",
    ]);

    // Disguised paths are matched as nginx matches locations: decoded and resolved.
    for disguise in [
        "//admin/users",
        "/%61dmin/users",
        "/api/../admin/users",
        "/./admin/users",
    ] {
        assert_eq!(get(&billing, disguise).await.status, 403, "{disguise}");
    }
    assert_eq!(get(&billing, "/../admin").await.status, 400);
    // The longer prefix /admin/public has no rules: anyone verified passes.
    assert_eq!(get(&billing, "/admin/public/status").await.status, 200);
    // /api admits the SPIFFE workload, not the operator.
    assert_eq!(get(&billing, "/api/charge").await.status, 200);
    assert_eq!(get(&operator, "/api/charge").await.status, 403);
    // No route: the listener's upstream, no extra rules.
    assert_eq!(get(&operator, "/health").await.status, 200);
}

#[tokio::test]
async fn route_upstreams_are_separate_backends() {
    let (files, pki) = setup();
    // The admin "backend" is not running: only /admin requests fail, with the admin upstream named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let api_backend = spawn_echo().await;
    let config = routes_config(&files, &closed.to_string(), &api_backend.to_string());
    let server = Certgate::start(&["run", "--config", &config]);
    let operator = leaf(&pki, LeafSpec::new("operator", Usage::Client));
    let client = tls_client(
        &pki.ca.issued.cert_pem,
        Some((&operator.cert_pem, &operator.key_pem)),
    );
    let admin = https_get(server.addr(), client.clone(), "/admin", &[])
        .await
        .unwrap();
    assert_eq!(admin.status, 502);
    assert!(
        admin
            .body
            .contains(&format!("upstream http://{closed} refused")),
        "{}",
        admin.body
    );
    assert_eq!(
        https_get(server.addr(), client, "/other", &[])
            .await
            .unwrap()
            .status,
        200
    );
}

/// A listener whose `/admin` goes to `admin` for the operator only and whose
/// `/admin/health` is open to any verified client; `settings` are extra listener keys.
fn health_config(files: &Files, settings: &str, admin: &str, default: &str) -> String {
    files.write(
        "certgate.toml",
        format!(
            r#"
[[listener]]
name = "edge"
mode = "server"
listen = "127.0.0.1:0"
upstream = "http://{default}"
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
{settings}

[[listener.route]]
path = "/admin"
upstream = "http://{admin}"
allow_cn = ["operator"]

[[listener.route]]
path = "/admin/health"
"#
        ),
    )
}

/// What the backends behind `/admin` and behind everything else received.
struct Backends {
    admin: RecordingBackend,
    default: RecordingBackend,
}

impl Backends {
    async fn start() -> Backends {
        Backends {
            admin: RecordingBackend::plain().await,
            default: RecordingBackend::plain().await,
        }
    }

    fn config(&self, files: &Files, settings: &str) -> String {
        health_config(
            files,
            settings,
            &self.admin.address.to_string(),
            &self.default.address.to_string(),
        )
    }

    /// The paths each received since the last call.
    fn take(&self) -> (Vec<String>, Vec<String>) {
        let paths = |b: &RecordingBackend| b.take().into_iter().map(|r| r.path).collect();
        (paths(&self.admin), paths(&self.default))
    }
}

async fn answer(server: &Certgate, pki: &TestPki, who: &Issued, path: &str) -> Answer {
    let client = tls_client(&pki.ca.issued.cert_pem, Some((&who.cert_pem, &who.key_pem)));
    https_get(server.addr(), client, path, &[]).await.unwrap()
}

#[tokio::test]
async fn a_route_ends_at_a_segment_boundary_so_longer_names_keep_the_parents_rules() {
    let (files, pki) = setup();
    let backends = Backends::start().await;
    let server = Certgate::start(&["run", "--config", &backends.config(&files, "")]);
    let billing = leaf(&pki, LeafSpec::new("billing", Usage::Client));
    let operator = leaf(&pki, LeafSpec::new("operator", Usage::Client));

    // /admin/health and below: open, and forwarded to the listener's upstream.
    for path in ["/admin/health", "/admin/health/", "/admin/health/live"] {
        assert_eq!(
            status(&server, &pki, &billing, path).await,
            Ok(200),
            "{path}"
        );
    }
    assert_eq!(
        backends.take(),
        (
            vec![],
            vec![
                "/admin/health".to_string(),
                "/admin/health/".into(),
                "/admin/health/live".into()
            ]
        )
    );
    // Longer names are not under /admin/health: they are /admin's, with its rules.
    for path in ["/admin/healthsecret", "/admin/health-internal/users"] {
        assert_eq!(
            status(&server, &pki, &billing, path).await,
            Ok(403),
            "{path}"
        );
        assert_eq!(
            status(&server, &pki, &operator, path).await,
            Ok(200),
            "{path}"
        );
    }
    assert_eq!(
        backends.take(),
        (
            vec![
                "/admin/healthsecret".to_string(),
                "/admin/health-internal/users".into()
            ],
            vec![]
        )
    );
    server.wait_for_log(&[
        "403 for /admin/healthsecret: route \"/admin\" does not allow subject \"CN=billing",
    ]);
}

#[tokio::test]
async fn route_match_prefix_restores_nginx_string_prefixes_and_warns() {
    let (files, pki) = setup();
    let backends = Backends::start().await;
    let config = backends.config(&files, "route_match = \"prefix\"");
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 0, "{output}");
    // Each route is named with its line.
    for (line, path) in [(13, "/admin"), (18, "/admin/health")] {
        assert!(
            output.contains(&format!(
                ":{line}: key 'path': with route_match = \"prefix\" (",
            )) && output.contains(&format!(
                "route \"{path}\" also takes longer paths such as {path}x and {path}-x/y"
            )),
            "{path}: {output}"
        );
    }

    let server = Certgate::start(&["run", "--config", &config]);
    let billing = leaf(&pki, LeafSpec::new("billing", Usage::Client));
    for path in ["/admin/healthsecret", "/admin/health-internal/users"] {
        assert_eq!(
            status(&server, &pki, &billing, path).await,
            Ok(200),
            "{path}"
        );
    }
    assert_eq!(
        backends.take(),
        (
            vec![],
            vec![
                "/admin/healthsecret".to_string(),
                "/admin/health-internal/users".into()
            ]
        )
    );
}

/// Paths that reach a route-less path here but `/admin/secret` (or an escape of it) in some
/// backend: path parameters, backslashes, escaped slashes, double escapes, letter case.
const DISGUISES: [&str; 7] = [
    "/admin;x/secret",
    "/admin%2fsecret",
    "/admin%5csecret",
    "/admin\\secret",
    "/%2561dmin/secret",
    "/%c0%afadmin/secret",
    "/ADMIN/secret",
];

#[tokio::test]
async fn strict_listeners_refuse_paths_a_backend_may_read_as_another_route() {
    let (files, pki) = setup();
    let backends = Backends::start().await;
    // Strict is the default: /admin has allow rules.
    let server = Certgate::start(&["run", "--config", &backends.config(&files, "")]);
    let billing = leaf(&pki, LeafSpec::new("billing", Usage::Client));
    for disguise in DISGUISES {
        let refused = answer(&server, &pki, &billing, disguise).await;
        assert_eq!(refused.status, 400, "{disguise}: {}", refused.body);
        assert!(
            refused
                .body
                .contains("which a backend may read as another path")
                || refused.body.contains("in other letter case"),
            "{disguise}: {}",
            refused.body
        );
        assert!(
            refused.body.contains("path_normalization = \"strict\""),
            "{disguise}: {}",
            refused.body
        );
    }
    assert_eq!(backends.take(), (vec![], vec![]), "nothing was forwarded");
    server.wait_for_log(&[
        "listener \"edge\": request from 127.0.0.1:",
        "failed: 400 for \"/admin;x/secret\": the path has a path parameter",
    ]);
    server.wait_for_log(&["400 for \"/admin\\\\secret\": the path has a backslash"]);
    server.wait_for_log(&[
        "400 for \"/ADMIN/secret\": the path is no route but route \"/admin\" in other letter case",
    ]);
    // The undisguised path is judged as usual.
    assert_eq!(
        status(&server, &pki, &billing, "/admin/secret").await,
        Ok(403)
    );
}

#[tokio::test]
async fn strict_listeners_forward_the_normalised_path_they_judged() {
    let (files, pki) = setup();
    let backends = Backends::start().await;
    let server = Certgate::start(&["run", "--config", &backends.config(&files, "")]);
    let operator = leaf(&pki, LeafSpec::new("operator", Usage::Client));
    for path in [
        "/%61dmin/./users//7?q=%2F;x",
        "//admin/users/../users/7?q=%2F;x",
    ] {
        assert_eq!(
            status(&server, &pki, &operator, path).await,
            Ok(200),
            "{path}"
        );
    }
    assert_eq!(
        backends.take(),
        (
            vec![
                "/admin/users/7?q=%2F;x".to_string(),
                "/admin/users/7?q=%2F;x".into()
            ],
            vec![]
        ),
        "unreserved escapes decoded, dots resolved, slashes merged, the query as sent"
    );
    // Other escapes stay escaped: decoding them would change what the path says.
    assert_eq!(
        status(&server, &pki, &operator, "/files/a%20b%3Fc%25").await,
        Ok(200)
    );
    assert_eq!(
        backends.take(),
        (vec![], vec!["/files/a%20b%3Fc%25".to_string()])
    );
}

#[tokio::test]
async fn with_path_normalization_off_paths_are_forwarded_as_sent() {
    let (files, pki) = setup();
    let backends = Backends::start().await;
    let config = backends.config(&files, "path_normalization = \"off\"");
    let server = Certgate::start(&["run", "--config", &config]);
    let operator = leaf(&pki, LeafSpec::new("operator", Usage::Client));
    for disguise in DISGUISES {
        assert_eq!(
            status(&server, &pki, &operator, disguise).await,
            Ok(200),
            "{disguise}"
        );
    }
    let (admin, default) = backends.take();
    let mut received: Vec<String> = admin.into_iter().chain(default).collect();
    received.sort();
    let mut sent: Vec<String> = DISGUISES.iter().map(|d| d.to_string()).collect();
    sent.sort();
    assert_eq!(received, sent, "each reached a backend as sent");
    assert_eq!(
        status(&server, &pki, &operator, "/%61dmin/./x").await,
        Ok(200)
    );
    assert_eq!(backends.take().0, vec!["/%61dmin/./x".to_string()]);
}

#[tokio::test]
async fn the_path_normalization_flag_makes_a_listener_without_routes_strict() {
    let (files, pki) = setup();
    let backend = RecordingBackend::plain().await;
    let args = server_mode_args(
        &files,
        &format!("http://{}", backend.address),
        &["--path-normalization", "strict"],
    );
    let server = Certgate::start(&args);
    let client = leaf(&pki, LeafSpec::new("billing", Usage::Client));
    assert_eq!(
        status(&server, &pki, &client, "/app;x/secret").await,
        Ok(400)
    );
    assert_eq!(
        status(&server, &pki, &client, "/app/x/../%7Euser").await,
        Ok(200)
    );
    let paths: Vec<String> = backend.take().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/app/~user".to_string()]);

    let args = server_mode_args(
        &files,
        "http://127.0.0.1:9",
        &["--path-normalization", "on"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, output) = run_to_exit(&args);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains("--path-normalization: unknown path_normalization \"on\""),
        "{output}"
    );
}

#[test]
fn check_rejects_unknown_and_contradictory_rule_keys_with_the_line() {
    let (files, _) = setup();
    let head = "[[listener]]\nmode = \"server\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:9\"\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n";
    let cases = [
        ("[[listener.route]]\npath = \"/a\"\nallow_common_name = [\"x\"]\n", ":10: key 'allow_common_name': unknown key"),
        ("[[listener.route]]\npath = \"/a\"\n[[listener.route]]\npath = \"/a\"\n", ":11: key 'path': contradictory: two routes for path \"/a\""),
        ("allow_uri = [\"spiffe://example.org/**/x\"]\n", ":8: key 'allow_uri': \"spiffe://example.org/**/x\": '**' may only be the last path segment"),
        ("allow_pin_sha256 = [\"abc\"]\n", ":8: key 'allow_pin_sha256'"),
        ("verify_client = \"off\"\nallow_cn = [\"x\"]\n", ":9: key 'allow_cn': contradictory: listener allow rules need verify_client = \"required\""),
        ("verify_client = \"optional\"\nallow_cn = [\"x\"]\n", ":9: key 'allow_cn': contradictory"),
        ("verify_client = \"off\"\n[[listener.route]]\npath = \"/a\"\nallow_cn = [\"x\"]\n", ":10: key 'path': contradictory: route \"/a\" has allow rules"),
        ("[[listener.route]]\nallow_cn = [\"x\"]\n", "missing 'path'"),
        ("route_match = \"exact\"\n", ":8: key 'route_match': unknown route_match \"exact\": use \"segment\""),
        ("route_match = 1\n", ":8: key 'route_match': expected a string"),
        ("path_normalization = \"lenient\"\n", ":8: key 'path_normalization': unknown path_normalization \"lenient\": use \"strict\""),
    ];
    for (tail, expected) in cases {
        let config = files.write("certgate.toml", format!("{head}{tail}"));
        let (code, output) = run_to_exit(&["check", "--config", &config]);
        assert_eq!(code, 1, "{tail}: {output}");
        assert!(
            output.contains(expected),
            "{tail}:\nexpected {expected}\ngot {output}"
        );
    }
    // Rules in client mode are a mistake: the server side checks identities.
    let client = files.write(
        "client.toml",
        "[[listener]]\nmode = \"client\"\nlisten = \"127.0.0.1:0\"\nupstream = \"a:1\"\nca = \"ca.pem\"\nallow_cn = [\"x\"]\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &client]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(":6: key 'allow_cn': 'allow_cn' is for server mode"),
        "{output}"
    );
    for key in [
        "route_match = \"prefix\"",
        "path_normalization = \"strict\"",
    ] {
        let client = files.write(
            "client.toml",
            format!("[[listener]]\nmode = \"client\"\nlisten = \"127.0.0.1:0\"\nupstream = \"a:1\"\nca = \"ca.pem\"\n{key}\n"),
        );
        let (code, output) = run_to_exit(&["check", "--config", &client]);
        assert_eq!(code, 1, "{output}");
        let name = key.split(' ').next().unwrap();
        assert!(
            output.contains(&format!(":6: key '{name}': '{name}' is for server mode")),
            "{output}"
        );
    }
    // Good values pass.
    let good = files.write(
        "certgate.toml",
        format!("{head}route_match = \"segment\"\npath_normalization = \"off\"\n[[listener.route]]\npath = \"/a\"\nallow_cn = [\"x\"]\n"),
    );
    let (code, output) = run_to_exit(&["check", "--config", &good]);
    assert_eq!(code, 0, "{output}");
}

#[tokio::test]
async fn an_allowed_name_does_not_excuse_an_expired_or_foreign_certificate() {
    let (files, pki) = setup();
    let server = start_server_mode(&files, &["--allow-cn", "billing"]).await;
    let expired = leaf(
        &pki,
        LeafSpec::new("billing", Usage::Client).validity(
            time::macros::datetime!(2020-01-01 0:00 UTC),
            time::macros::datetime!(2021-01-01 0:00 UTC),
        ),
    );
    assert!(status(&server, &pki, &expired, "/").await.is_err());
    server.wait_for_log(&["certificate expired"]);

    let foreign_ca =
        certgate::pki::Authority::root("foreign CA", certgate::pki::KeyType::EcdsaP256).unwrap();
    let foreign = foreign_ca
        .leaf(&LeafSpec::new("billing", Usage::Client))
        .unwrap();
    assert!(status(&server, &pki, &foreign, "/").await.is_err());
    server.wait_for_log(&["unknown issuer", "CN=foreign CA"]);
}
