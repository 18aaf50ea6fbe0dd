//! `certgate demo`: the seed's topology on one machine, with nothing prepared.
//!
//! client (curl) -> client mode (plain HTTP) -> mTLS -> server mode -> echo backend.
//! A throwaway PKI is written to a temporary directory (keys 0600) and removed at exit.

use crate::config::{Config, ListenerSpec, Origin, SpecValue};
use crate::pki::{Authority, KeyType, LeafSpec, Usage};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)
}

fn spec(pairs: &[(&str, &str)], depth: i64) -> ListenerSpec {
    let mut spec = ListenerSpec::default();
    for (key, value) in pairs {
        // Keys and values here are fixed by the demo and always valid.
        let _ = spec.set(
            key,
            Origin::Flag(format!("demo {key}")),
            SpecValue::Text(value.to_string()),
        );
    }
    let _ = spec.set(
        "verify_depth",
        Origin::Flag("demo verify_depth".into()),
        SpecValue::Integer(depth),
    );
    spec
}

/// Binds the seed's port when free, any port otherwise.
fn pick_port(preferred: u16, once: bool) -> u16 {
    if !once && std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        preferred
    } else {
        0
    }
}

/// Runs the demo; with `once`, sends one request, prints what the backend saw, and returns.
pub async fn run(
    once: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let dir = TempDir(std::env::temp_dir().join(format!("certgate-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let ca = Authority::root("certgate demo CA", KeyType::EcdsaP256)?;
    let server =
        ca.leaf(&LeafSpec::new("localhost", Usage::Server).names(&["localhost", "127.0.0.1"]))?;
    let client = ca.leaf(&LeafSpec::new("demo-client", Usage::Client))?;
    let path = |name: &str| dir.0.join(name);
    write_file(&path("ca.crt"), ca.issued.cert_pem.as_bytes(), 0o644)?;
    write_file(&path("server.crt"), server.cert_pem.as_bytes(), 0o644)?;
    write_file(&path("server.key"), server.key_pem.as_bytes(), 0o600)?;
    write_file(&path("client.crt"), client.cert_pem.as_bytes(), 0o644)?;
    write_file(&path("client.key"), client.key_pem.as_bytes(), 0o600)?;
    let text = |p: PathBuf| p.to_string_lossy().into_owned();

    let backend = tokio::net::TcpListener::bind(("127.0.0.1", pick_port(8000, once))).await?;
    let backend_addr = backend.local_addr()?;
    tokio::spawn(crate::echo::serve(backend));

    let server_listen = SocketAddr::from(([127, 0, 0, 1], pick_port(8443, once)));
    let server_spec = spec(
        &[
            ("name", "server-a"),
            ("mode", "server"),
            ("listen", &server_listen.to_string()),
            ("upstream", &format!("http://{backend_addr}")),
            ("cert", &text(path("server.crt"))),
            ("key", &text(path("server.key"))),
            ("client_ca", &text(path("ca.crt"))),
        ],
        2,
    );
    let server_config = Config::from_specs(vec![server_spec])?;
    let telemetry = crate::metrics::Telemetry::new();
    let workers = crate::workers::default_count();
    let server_running = crate::start(
        &server_config,
        crate::DEFAULT_DRAIN_TIMEOUT,
        workers,
        &telemetry,
    )
    .await?;
    let server_addr = server_running.addresses()[0].1;

    let client_listen = SocketAddr::from(([127, 0, 0, 1], pick_port(8080, once)));
    let client_spec = spec(
        &[
            ("name", "proxy-b"),
            ("mode", "client"),
            ("listen", &client_listen.to_string()),
            (
                "upstream",
                &format!("https://localhost:{}", server_addr.port()),
            ),
            ("cert", &text(path("client.crt"))),
            ("key", &text(path("client.key"))),
            ("ca", &text(path("ca.crt"))),
        ],
        2,
    );
    let client_config = Config::from_specs(vec![client_spec])?;
    let client_running = crate::start(
        &client_config,
        crate::DEFAULT_DRAIN_TIMEOUT,
        workers,
        &telemetry,
    )
    .await?;
    let client_addr = client_running.addresses()[0].1;

    if once {
        let echoed = get(client_addr).await?;
        println!(
            "The backend received, through proxy B (client mode) and server A (server mode):\n"
        );
        print!("{echoed}");
        let verified = crate::echo::header(&echoed, "x-client-verify") == Some("SUCCESS")
            && crate::echo::header(&echoed, "x-client-cert").is_some();
        client_running.stop().await;
        server_running.stop().await;
        anyhow::ensure!(
            verified,
            "the backend did not receive a verified client certificate"
        );
        return Ok(());
    }

    println!(
        "certgate demo: the seed topology on this machine\n\n  \
         backend (echo)         http://{backend_addr}\n  \
         server A (server mode) https://localhost:{} -> backend, client certificates required\n  \
         proxy B (client mode)  http://{client_addr} -> server A, presenting {}\n\n\
         Try:\n  curl http://{client_addr}/hello\n  \
         curl --cacert {} --cert {} --key {} https://localhost:{}/direct\n\n\
         Files (removed at exit): {}\nCtrl-C to stop.",
        server_addr.port(),
        text(path("client.crt")),
        text(path("ca.crt")),
        text(path("client.crt")),
        text(path("client.key")),
        server_addr.port(),
        dir.0.display()
    );
    shutdown.await;
    client_running.stop().await;
    server_running.stop().await;
    Ok(())
}

/// One plain HTTP/1.1 GET, returning the body.
async fn get(address: SocketAddr) -> anyhow::Result<String> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(address).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/hello")
        .header("host", "localhost")
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    anyhow::ensure!(
        status.is_success(),
        "request through the demo chain failed with {status}: {text}"
    );
    Ok(text)
}
