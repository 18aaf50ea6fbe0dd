//! Certificates, CRLs and keys as users make them with other tools than rcgen: `openssl req`,
//! `openssl ca` (a CA directory without a `crlnumber` file), `openssl genpkey -algorithm
//! RSA-PSS`, and Python `cryptography`; with `openssl s_client` and `s_server` as peers.
//!
//! Needs `openssl` and Python's `cryptography` on the PATH, so it is ignored by a plain `cargo
//! test`; run it with `cargo test --test foreign_pki -- --ignored` (`.ci/run` does).

mod support;

use certgate::pki::{Authority, Issued};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Runs openssl (or any tool), failing the test with its output when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn openssl(args: &[&str]) -> String {
    run("openssl", args)
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A certificate and key written by openssl, in the harness's form.
fn issued_from(cert: &Path, key: &Path) -> Issued {
    let cert_pem = std::fs::read_to_string(cert).unwrap();
    let key_pem = std::fs::read_to_string(key).unwrap();
    Issued {
        cert_der: CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .unwrap()
            .to_vec(),
        key_der: PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .unwrap()
            .secret_der()
            .to_vec(),
        cert_pem,
        key_pem,
    }
}

/// A CA as `openssl ca` keeps one: a directory with index.txt and serial, and no `crlnumber`
/// file, so `openssl ca -gencrl` writes version 1 CRLs.
struct OpensslCa {
    dir: PathBuf,
    config: PathBuf,
}

impl OpensslCa {
    fn new(files: &Files, dir: &str, common_name: &str) -> OpensslCa {
        let dir = files.path(dir);
        std::fs::create_dir_all(dir.join("newcerts")).unwrap();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("serial"), "1000\n").unwrap();
        let config = dir.join("openssl.cnf");
        std::fs::write(
            &config,
            format!(
                r#"[ ca ]
default_ca = CA_default
[ CA_default ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_days = 365
default_crl_days = 7
policy = policy_any
unique_subject = no
[ policy_any ]
commonName = supplied
[ req ]
distinguished_name = req_dn
[ req_dn ]
[ client_ext ]
basicConstraints = CA:FALSE
extendedKeyUsage = clientAuth
[ server_ext ]
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
[ cn_only_ext ]
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth
"#,
                dir = dir.display()
            ),
        )
        .unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &text(&dir.join("ca.key")),
            "-out",
            &text(&dir.join("ca.pem")),
            "-subj",
            &format!("/CN={common_name}"),
            "-days",
            "365",
        ]);
        OpensslCa { dir, config }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn authority(&self) -> Authority {
        Authority::from_pem(
            &std::fs::read_to_string(self.dir.join("ca.pem")).unwrap(),
            &std::fs::read_to_string(self.dir.join("ca.key")).unwrap(),
        )
        .unwrap()
    }

    /// `openssl req` for a P-256 key and CSR, then `openssl ca` with the extensions of
    /// `section` of the CA's config.
    fn issue(&self, name: &str, common_name: &str, section: &str) -> Issued {
        let key = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let cert = self.dir.join(format!("{name}.pem"));
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &text(&key),
            "-out",
            &text(&csr),
            "-subj",
            &format!("/CN={common_name}"),
        ]);
        openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            &text(&self.config),
            "-extensions",
            section,
            "-in",
            &text(&csr),
            "-out",
            &text(&cert),
        ]);
        issued_from(&cert, &key)
    }

    fn revoke(&self, name: &str) {
        openssl(&[
            "ca",
            "-config",
            &text(&self.config),
            "-revoke",
            &text(&self.dir.join(format!("{name}.pem"))),
        ]);
    }

    /// `openssl ca -gencrl` (a v1 CRL: no crlnumber file), PEM or converted to DER.
    fn gencrl(&self, out: &Path, der: bool) {
        let pem = self.dir.join("gencrl.pem");
        openssl(&[
            "ca",
            "-gencrl",
            "-config",
            &text(&self.config),
            "-out",
            &text(&pem),
        ]);
        let listing = openssl(&["crl", "-in", &text(&pem), "-noout", "-text"]);
        assert!(listing.contains("Version 1 (0x0)"), "{listing}");
        match der {
            true => {
                openssl(&[
                    "crl",
                    "-in",
                    &text(&pem),
                    "-outform",
                    "DER",
                    "-out",
                    &text(out),
                ]);
            }
            false => {
                std::fs::copy(&pem, out).unwrap();
            }
        }
    }

    /// A CRL from Python `cryptography`'s CertificateRevocationListBuilder with its defaults:
    /// version 2, no extensions at all.
    fn python_crl(&self, revoked: &Issued, out: &Path, der: bool) {
        let revoked_path = self.dir.join("python-revoked.pem");
        std::fs::write(&revoked_path, &revoked.cert_pem).unwrap();
        let script = r#"
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
ca = x509.load_pem_x509_certificate(open(sys.argv[1], 'rb').read())
key = serialization.load_pem_private_key(open(sys.argv[2], 'rb').read(), None)
revoked = x509.load_pem_x509_certificate(open(sys.argv[3], 'rb').read())
now = datetime.datetime.now(datetime.timezone.utc)
entry = x509.RevokedCertificateBuilder().serial_number(revoked.serial_number) \
    .revocation_date(now - datetime.timedelta(hours=1)).build()
crl = x509.CertificateRevocationListBuilder().issuer_name(ca.subject) \
    .last_update(now - datetime.timedelta(hours=1)) \
    .next_update(now + datetime.timedelta(days=7)) \
    .add_revoked_certificate(entry).sign(key, hashes.SHA256())
encoding = serialization.Encoding.DER if sys.argv[5] == 'der' else serialization.Encoding.PEM
open(sys.argv[4], 'wb').write(crl.public_bytes(encoding))
"#;
        run(
            "python3",
            &[
                "-c",
                script,
                &text(&self.dir.join("ca.pem")),
                &text(&self.dir.join("ca.key")),
                &text(&revoked_path),
                &text(out),
                if der { "der" } else { "pem" },
            ],
        );
        let inform = if der { "DER" } else { "PEM" };
        let listing = openssl(&[
            "crl",
            "-inform",
            inform,
            "-in",
            &text(out),
            "-noout",
            "-text",
        ]);
        assert!(listing.contains("Version 2 (0x1)"), "{listing}");
        assert!(!listing.contains("CRL extensions"), "{listing}");
    }
}

/// The openssl CA's server and client certificates, written as the harness's TestPki files
/// (ca.pem, server.pem, client.pem, ...).
fn openssl_pki(files: &Files, ca: &OpensslCa) -> TestPki {
    let pki = TestPki {
        ca: ca.authority(),
        server: ca.issue("server", "localhost", "server_ext"),
        client: ca.issue("client", "good-client", "client_ext"),
    };
    pki.write(files);
    pki
}

/// The four CRLs users bring: openssl's v1 and Python's extension-less v2, each PEM and DER.
#[derive(Clone, Copy, Debug)]
enum CrlKind {
    Openssl,
    Python,
}

const CRL_VARIANTS: [(CrlKind, bool); 4] = [
    (CrlKind::Openssl, false),
    (CrlKind::Openssl, true),
    (CrlKind::Python, false),
    (CrlKind::Python, true),
];

/// Revokes `name` (issued by `ca`) with a CRL of `kind`, written to `out`.
fn revoking_crl(
    ca: &OpensslCa,
    name: &str,
    revoked: &Issued,
    kind: CrlKind,
    der: bool,
    out: &Path,
) {
    match kind {
        CrlKind::Openssl => {
            ca.revoke(name);
            ca.gencrl(out, der);
        }
        CrlKind::Python => ca.python_crl(revoked, out, der),
    }
}

fn serial_hex(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.tbs_certificate.serial.to_str_radix(16).to_uppercase()
}

#[tokio::test]
#[ignore = "needs openssl and Python cryptography; run with --ignored"]
async fn crls_from_openssl_ca_and_python_cryptography_revoke_clients_in_server_mode() {
    for (kind, der) in CRL_VARIANTS {
        let files = Files::new();
        let ca = OpensslCa::new(&files, "ca", "openssl test CA");
        let pki = openssl_pki(&files, &ca);
        let revoked = ca.issue("revoked", "revoked-client", "client_ext");
        let crl = files.path(if der { "ca.crl.der" } else { "ca.crl" });
        revoking_crl(&ca, "revoked", &revoked, kind, der, &crl);

        let server = start_server_mode(&files, &["--crl", &text(&crl)]).await;
        let refused = tls_client(
            &pki.ca.issued.cert_pem,
            Some((&revoked.cert_pem, &revoked.key_pem)),
        );
        assert!(
            https_get(server.addr(), refused, "/", &[]).await.is_err(),
            "{kind:?} der={der}: the revoked client got through"
        );
        server.wait_for_log(&[
            "certificate revoked",
            &serial_hex(&revoked.cert_der),
            "CN=revoked-client",
        ]);
        let answer = https_get(server.addr(), pki.client_config(), "/", &[])
            .await
            .unwrap_or_else(|e| panic!("{kind:?} der={der}: {e}\n{}", server.logs()));
        assert_eq!(answer.status, 200);
    }
}

#[tokio::test]
#[ignore = "needs openssl and Python cryptography; run with --ignored"]
async fn crls_from_openssl_ca_and_python_cryptography_revoke_upstreams_in_client_mode() {
    for (kind, der) in CRL_VARIANTS {
        let files = Files::new();
        let ca = OpensslCa::new(&files, "ca", "openssl test CA");
        let pki = openssl_pki(&files, &ca);
        let revoked_server = ca.issue("revoked-server", "localhost", "server_ext");
        let crl = files.path(if der { "ca.crl.der" } else { "ca.crl" });
        revoking_crl(&ca, "revoked-server", &revoked_server, kind, der, &crl);
        let crl = text(&crl);

        let good = CountingUpstream::start(&pki, false).await;
        let revoked_pki = TestPki {
            ca: ca.authority(),
            server: revoked_server,
            client: pki.client.clone(),
        };
        let revoked = CountingUpstream::start_with_chain(&revoked_pki, &pki).await;

        let to_revoked =
            Certgate::start(&client_mode_args(&files, revoked.address, &["--crl", &crl]));
        let answer = http_get(to_revoked.addr(), "/", &[]).await;
        assert_eq!(answer.status, 502, "{kind:?} der={der}: {}", answer.body);
        assert!(
            answer.body.contains("certificate revoked")
                && answer
                    .body
                    .contains(&serial_hex(&revoked_pki.server.cert_der)),
            "{kind:?} der={der}: {}",
            answer.body
        );

        let to_good = Certgate::start(&client_mode_args(&files, good.address, &["--crl", &crl]));
        let answer = http_get(to_good.addr(), "/", &[]).await;
        assert_eq!(answer.status, 200, "{kind:?} der={der}: {}", answer.body);
    }
}

#[test]
#[ignore = "needs openssl; run with --ignored"]
fn check_refuses_an_openssl_crl_signed_by_another_key() {
    let files = Files::new();
    let ca = OpensslCa::new(&files, "ca", "openssl test CA");
    openssl_pki(&files, &ca);
    // Same name, another key: `openssl ca -gencrl` in the wrong CA directory.
    let impostor = OpensslCa::new(&files, "impostor", "openssl test CA");
    let crl = files.path("ca.crl");
    impostor.gencrl(&crl, false);
    let config = files.write(
        "certgate.toml",
        "[[listener]]\nmode = \"client\"\nlisten = \"127.0.0.1:0\"\nupstream = \"https://localhost:9\"\nca = \"ca.pem\"\ncrl = \"ca.crl\"\n",
    );
    let (code, output) = run_to_exit(&["check", "--config", &config]);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{config}:6: key 'crl'")),
        "{output}"
    );
    assert!(output.contains(&text(&crl)), "{output}");
    assert!(
        output
            .contains("the CRL's signature does not verify against the CA \"CN=openssl test CA\""),
        "{output}"
    );
}

#[tokio::test]
#[ignore = "needs openssl; run with --ignored"]
async fn an_upstream_certificate_with_only_a_cn_is_refused_in_plain_words_unless_verify_name_in_cn()
{
    let files = Files::new();
    let ca = OpensslCa::new(&files, "ca", "openssl test CA");
    let mut pki = openssl_pki(&files, &ca);
    pki.server = ca.issue("cn-only", "localhost", "cn_only_ext");
    let listing = openssl(&[
        "x509",
        "-in",
        &text(&ca.dir.join("cn-only.pem")),
        "-noout",
        "-text",
    ]);
    assert!(!listing.contains("Subject Alternative Name"), "{listing}");
    let upstream = CountingUpstream::start(&pki, false).await;

    let strict = Certgate::start(&client_mode_args(&files, upstream.address, &[]));
    let answer = http_get(strict.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    for words in [
        "the certificate has no subjectAltName",
        "CN=localhost",
        "certgate does not match names against CN",
        "verify_name_in_cn = true",
    ] {
        assert!(answer.body.contains(words), "{words}: {}", answer.body);
    }
    strict.wait_for_log(&[
        "the certificate has no subjectAltName",
        "does not match names against CN",
    ]);

    let legacy = Certgate::start(&client_mode_args(
        &files,
        upstream.address,
        &["--verify-name-in-cn"],
    ));
    let answer = http_get(legacy.addr(), "/", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// An RSA-PSS key (id-RSASSA-PSS) and a certificate for it from `openssl req -x509` signed by
/// the CA, with the extensions of `section`.
fn rsa_pss_certificate(
    ca: &OpensslCa,
    name: &str,
    common_name: &str,
    section: &str,
) -> (PathBuf, PathBuf) {
    let key = ca.dir.join(format!("{name}.key"));
    let cert = ca.dir.join(format!("{name}.pem"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA-PSS",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &text(&key),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &text(&key),
        "-subj",
        &format!("/CN={common_name}"),
        "-CA",
        &text(&ca.cert_path()),
        "-CAkey",
        &text(&ca.dir.join("ca.key")),
        "-config",
        &text(&ca.config),
        "-extensions",
        section,
        "-days",
        "30",
        "-out",
        &text(&cert),
    ]);
    let listing = openssl(&["x509", "-in", &text(&cert), "-noout", "-text"]);
    assert!(
        listing.contains("Public Key Algorithm: rsassaPss"),
        "{listing}"
    );
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (cert, key)
}

#[test]
#[ignore = "needs openssl; run with --ignored"]
fn an_rsa_pss_key_is_refused_as_our_key_with_its_type_named() {
    let files = Files::new();
    let ca = OpensslCa::new(&files, "ca", "openssl test CA");
    openssl_pki(&files, &ca);
    let (cert, key) = rsa_pss_certificate(&ca, "pss-server", "localhost", "server_ext");
    let (code, output) = run_to_exit(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "127.0.0.1:9",
        "--cert",
        &text(&cert),
        "--key",
        &text(&key),
        "--verify-client",
        "off",
    ]);
    assert_eq!(code, 1, "{output}");
    for words in [
        "--key",
        &text(&key),
        "RSA-PSS key (id-RSASSA-PSS",
        "openssl genpkey -algorithm RSA",
    ] {
        assert!(output.contains(words), "{words}: {output}");
    }
}

#[tokio::test]
#[ignore = "needs openssl; run with --ignored"]
async fn a_client_presenting_an_rsa_pss_certificate_is_told_its_key_type_is_not_supported() {
    let files = Files::new();
    let ca = OpensslCa::new(&files, "ca", "openssl test CA");
    openssl_pki(&files, &ca);
    let (cert, key) = rsa_pss_certificate(&ca, "pss-client", "pss-client", "client_ext");
    let server = start_server_mode(&files, &[]).await;
    let output = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &server.addr().to_string(),
            "-servername",
            "localhost",
            "-CAfile",
            &text(&ca.cert_path()),
            "-cert",
            &text(&cert),
            "-key",
            &text(&key),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    server.wait_for_log(&[
        "TLS handshake with",
        "the client's certificate has an RSA-PSS key (id-RSASSA-PSS)",
        "does not support",
    ]);
    assert!(
        !server.logs().contains("no client certificate sent"),
        "{}\nopenssl: {said}",
        server.logs()
    );
}

/// `openssl s_server -www` on a free loopback port, killed when dropped.
struct OpensslServer {
    child: Child,
    port: u16,
}

impl OpensslServer {
    fn start(cert: &Path, key: &Path) -> OpensslServer {
        let port = free_port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                &text(cert),
                "-key",
                &text(key),
                "-www",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        OpensslServer { child, port }
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs openssl; run with --ignored"]
async fn an_upstream_presenting_an_rsa_pss_certificate_is_told_its_key_type_is_not_supported() {
    let files = Files::new();
    let ca = OpensslCa::new(&files, "ca", "openssl test CA");
    openssl_pki(&files, &ca);
    let (cert, key) = rsa_pss_certificate(&ca, "pss-server", "localhost", "server_ext");
    let upstream = OpensslServer::start(&cert, &key);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], upstream.port));
    let proxy = Certgate::start(&client_mode_args(&files, address, &[]));
    let answer = http_get(proxy.addr(), "/", &[]).await;
    assert_eq!(answer.status, 502, "{}", answer.body);
    assert!(
        answer
            .body
            .contains("the upstream's certificate has an RSA-PSS key (id-RSASSA-PSS), a key type certgate (rustls) does not support"),
        "{}",
        answer.body
    );
    proxy.wait_for_log(&["RSA-PSS key (id-RSASSA-PSS)"]);
}
