//! Accept loops: TLS handshakes (server mode), HTTP serving, accept-error backoff, drain.

use crate::config::{ConfigError, ListenerConfig, ModeConfig};
use crate::proxy::{ConnectionInfo, Proxy, TlsInfo};
use crate::tls::{self, explain, server::ServerTls};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per listener beyond which accepting pauses (nginx: worker_connections).
const MAX_CONNECTIONS: usize = 16 * 1024;
/// A client must send its request headers within this time (nginx: client_header_timeout).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// After an accept error (out of file descriptors, say) wait before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listener ready to serve: its config, TLS material and request handler.
pub struct ListenerRuntime {
    pub config: ListenerConfig,
    /// HTTP/1 and HTTP/2 server settings, shared by every connection.
    http: auto::Builder<TokioExecutor>,
    server_tls: Option<ServerTls>,
    proxy: Arc<Proxy>,
}

impl ListenerRuntime {
    /// Loads and checks every file the listener needs; binds nothing.
    pub fn build(
        config: &ListenerConfig,
        warnings: &mut Vec<String>,
    ) -> Result<ListenerRuntime, ConfigError> {
        let (server_tls, client_tls) = match &config.mode {
            ModeConfig::Server(server) => (Some(ServerTls::build(config, server, warnings)?), None),
            ModeConfig::Client(client) => {
                (None, Some(tls::client::build(config, client, warnings)?))
            }
        };
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        http.http2().timer(hyper_util::rt::TokioTimer::new());
        Ok(ListenerRuntime {
            http,
            proxy: Arc::new(Proxy::new(config, client_tls)),
            config: config.clone(),
            server_tls,
        })
    }

    /// Accepts connections until `shutdown` flips, then lets open requests finish within
    /// `drain_timeout`.
    pub async fn serve(
        self: Arc<Self>,
        tcp: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        drain_timeout: Duration,
    ) {
        let graceful = GracefulShutdown::new();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut warned_full = false;
        loop {
            // At the connection limit, stop accepting (the kernel backlog holds newcomers)
            // rather than fail connections already open.
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    warned_full = false;
                    slot
                }
                Err(_) => {
                    if !warned_full {
                        tracing::warn!(
                            "listener \"{}\": {MAX_CONNECTIONS} connections open, the limit; new ones wait",
                            self.config.name
                        );
                        warned_full = true;
                    }
                    tokio::select! {
                        slot = slots.clone().acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_) => break,
                        },
                        _ = shutdown.changed() => break,
                    }
                }
            };
            tokio::select! {
                accepted = tcp.accept() => match accepted {
                    Ok((stream, remote)) => {
                        let this = self.clone();
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            this.connection(stream, remote, watcher).await;
                            drop(slot);
                        });
                    }
                    Err(error) => {
                        tracing::error!("listener \"{}\": accept failed: {error}; retrying", self.config.name);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
        drop(tcp);
        if tokio::time::timeout(drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "listener \"{}\": requests still open after {}s; closing them",
                self.config.name,
                drain_timeout.as_secs()
            );
        }
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        remote: std::net::SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        let name = &self.config.name;
        match &self.server_tls {
            None => {
                let info = Arc::new(ConnectionInfo {
                    remote,
                    local,
                    tls: None,
                });
                self.serve_http(TokioIo::new(stream), info, watcher).await;
            }
            Some(server_tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(server_tls.config.clone());
                let tls_stream = match tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    acceptor.accept(stream),
                )
                .await
                {
                    Ok(Ok(tls_stream)) => tls_stream,
                    Ok(Err(error)) => {
                        let reason = match explain::find_rustls_error(&error) {
                            Some(tls_error) => explain::tls_error(tls_error),
                            None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                                "the peer closed the connection during the handshake".to_string()
                            }
                            None => error.to_string(),
                        };
                        tracing::warn!(
                            "listener \"{name}\": TLS handshake with {remote} failed: {reason}"
                        );
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(
                            "listener \"{name}\": TLS handshake with {remote} failed: no handshake within {}s",
                            HANDSHAKE_TIMEOUT.as_secs()
                        );
                        return;
                    }
                };
                let connection = tls_stream.get_ref().1;
                let (verdict, peer) = server_tls.verdict(connection);
                let identity_headers = peer
                    .as_ref()
                    .map(|p| self.proxy.edits.identity_headers(p))
                    .unwrap_or_default();
                let info = TlsInfo {
                    identity_headers,
                    protocol: connection
                        .protocol_version()
                        .map(tls::protocol_name)
                        .unwrap_or(""),
                    cipher: connection
                        .negotiated_cipher_suite()
                        .map(|s| crate::config::ciphers::openssl_name(s.suite()))
                        .unwrap_or(""),
                    verdict,
                    peer,
                };
                let handshake = match connection.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => "resumed",
                    _ => "full",
                };
                let alpn = connection
                    .alpn_protocol()
                    .map(String::from_utf8_lossy)
                    .unwrap_or("none".into());
                tracing::debug!(
                    "listener \"{name}\": {remote} connected with {} {} ({handshake} handshake, ALPN {alpn}), client certificate {}",
                    info.protocol,
                    info.cipher,
                    info.verdict
                );
                let info = Arc::new(ConnectionInfo {
                    remote,
                    local,
                    tls: Some(info),
                });
                self.serve_http(TokioIo::new(tls_stream), info, watcher)
                    .await;
            }
        }
    }

    async fn serve_http<IO>(
        &self,
        io: TokioIo<IO>,
        info: Arc<ConnectionInfo>,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let proxy = self.proxy.clone();
        let service = service_fn(move |request| proxy.clone().handle(request, info.clone()));
        let connection = self.http.serve_connection_with_upgrades(io, service);
        if let Err(error) = watcher.watch(connection.into_owned()).await {
            tracing::debug!(
                "listener \"{}\": connection ended: {error}",
                self.config.name
            );
        }
    }
}
