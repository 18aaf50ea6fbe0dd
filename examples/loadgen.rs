//! certgate's load generator for `bench/run.sh`: what wrk and `openssl s_time` cannot do at
//! scale, namely open TLS connections presenting a client certificate.
//!
//! `loadgen pki`        writes a throwaway PKI (root, intermediate, server and client leaves)
//! `loadgen handshakes` full or resumed mTLS handshakes (each with one request) per second
//! `loadgen idle`       holds N idle mTLS connections open
//! `loadgen upload`     streams a large body through a plain-HTTP proxy
//! `loadgen echo`       a backend that reads whole bodies before answering (for uploads)
//!
//! Results are printed as one JSON object on stdout.

use certgate::pki::{Authority, KeyType, LeafSpec, Usage};
use clap::{Parser, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write ca.pem, server.pem (+intermediate), server.key, client.pem (+intermediate), client.key.
    Pki {
        #[arg(long)]
        dir: PathBuf,
        /// p256 or rsa2048.
        #[arg(long, default_value = "p256")]
        key_type: String,
    },
    /// New TLS connections with a client certificate, each sending one request.
    Handshakes {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Resume TLS sessions (after one full handshake per task).
        #[arg(long)]
        resume: bool,
    },
    /// Hold idle mTLS connections open until stdin closes (prints once they are all open).
    Idle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    /// Serve certgate's echo backend (answers after reading the whole body).
    Echo {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// POST a body of zeros through a plain-HTTP address; reports MiB/s.
    Upload {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
    },
}

fn write_pki(dir: &std::path::Path, key_type: &str) -> anyhow::Result<()> {
    let key_type = match key_type {
        "p256" => KeyType::EcdsaP256,
        "rsa2048" => KeyType::Rsa2048,
        other => anyhow::bail!("unknown key type {other}: use p256 or rsa2048"),
    };
    std::fs::create_dir_all(dir)?;
    let root = Authority::root("bench root CA", key_type)?;
    let intermediate = root.intermediate("bench intermediate CA")?;
    let server = intermediate.leaf(
        &LeafSpec::new("localhost", Usage::Server)
            .names(&["localhost", "127.0.0.1"])
            .key_type(key_type),
    )?;
    let client =
        intermediate.leaf(&LeafSpec::new("bench-client", Usage::Client).key_type(key_type))?;
    let write = |name: &str, text: &str, mode: u32| -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
    };
    write("ca.pem", &root.issued.cert_pem, 0o644)?;
    write(
        "server.pem",
        &format!("{}{}", server.cert_pem, intermediate.issued.cert_pem),
        0o644,
    )?;
    write("server.key", &server.key_pem, 0o600)?;
    write(
        "client.pem",
        &format!("{}{}", client.cert_pem, intermediate.issued.cert_pem),
        0o644,
    )?;
    write("client.key", &client.key_pem, 0o600)?;
    Ok(())
}

fn client_config(dir: &std::path::Path, resume: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("ca.pem"))? {
        roots.add(cert?)?;
    }
    let chain =
        CertificateDer::pem_file_iter(dir.join("client.pem"))?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("client.key"))?;
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.resumption = if resume {
        rustls::client::Resumption::in_memory_sessions(1024)
    } else {
        rustls::client::Resumption::disabled()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// One connection: handshake, one request, read the answer to the end.
async fn one_exchange(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> anyhow::Result<bool> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    tls.write_all(REQUEST).await?;
    let mut sink = Vec::with_capacity(1024);
    tls.read_to_end(&mut sink).await?;
    anyhow::ensure!(
        sink.starts_with(b"HTTP/1.1 200"),
        "unexpected answer: {}",
        String::from_utf8_lossy(&sink)
    );
    Ok(resumed)
}

async fn handshakes(
    addr: SocketAddr,
    dir: PathBuf,
    seconds: f64,
    concurrency: usize,
    resume: bool,
) -> anyhow::Result<()> {
    let done = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..concurrency {
        // One config per task: its session cache holds the task's own ticket.
        let connector = tokio_rustls::TlsConnector::from(client_config(&dir, resume)?);
        if resume {
            one_exchange(addr, &connector).await?; // the full handshake that primes the cache
        }
        let (done, resumed, errors) = (done.clone(), resumed.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match one_exchange(addr, &connector).await {
                    Ok(was_resumed) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        if was_resumed {
                            resumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    println!(
        "{{\"handshakes\": {done}, \"resumed\": {}, \"errors\": {}, \"seconds\": {elapsed:.3}, \"per_second\": {:.1}}}",
        resumed.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        done as f64 / elapsed
    );
    Ok(())
}

async fn idle(addr: SocketAddr, dir: PathBuf, connections: usize) -> anyhow::Result<()> {
    let connector = tokio_rustls::TlsConnector::from(client_config(&dir, false)?);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(64));
    let mut opening = Vec::with_capacity(connections);
    for _ in 0..connections {
        let permit = semaphore.clone().acquire_owned().await?;
        let connector = connector.clone();
        opening.push(tokio::spawn(async move {
            let _permit = permit;
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let mut tls = connector
                .connect(ServerName::try_from("localhost")?, tcp)
                .await?;
            // A first read would block: flush instead, so the server sees our Finished.
            tls.flush().await?;
            anyhow::Ok(tls)
        }));
    }
    let mut open = Vec::with_capacity(connections);
    let mut failed = 0;
    for task in opening {
        match task.await? {
            Ok(tls) => open.push(tls),
            Err(_) => failed += 1,
        }
    }
    println!("{{\"open\": {}, \"failed\": {failed}}}", open.len());
    // Hold them until whoever started us closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await??;
    drop(open);
    Ok(())
}

async fn upload(addr: SocketAddr, bytes: u64) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post("/upload")
        .header("host", "localhost")
        .body(certgate::echo::Zeros { remaining: bytes })?;
    let started = Instant::now();
    let response = sender.send_request(request).await?;
    let status = response.status();
    let answer = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(status.is_success(), "upload answered {status}");
    let answer = String::from_utf8_lossy(&answer);
    anyhow::ensure!(
        certgate::echo::header(&answer, "body-bytes") == Some(&bytes.to_string()),
        "the backend did not receive the whole body: {answer}"
    );
    println!(
        "{{\"bytes\": {bytes}, \"seconds\": {elapsed:.3}, \"mib_per_second\": {:.1}}}",
        bytes as f64 / elapsed / 1048576.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Pki { dir, key_type } => write_pki(&dir, &key_type),
        Command::Handshakes {
            addr,
            dir,
            seconds,
            concurrency,
            resume,
        } => handshakes(addr, dir, seconds, concurrency, resume).await,
        Command::Idle {
            addr,
            dir,
            connections,
        } => idle(addr, dir, connections).await,
        Command::Upload { addr, bytes } => upload(addr, bytes).await,
        Command::Echo { listen } => {
            certgate::echo::serve(tokio::net::TcpListener::bind(listen).await?).await;
            Ok(())
        }
    }
}
