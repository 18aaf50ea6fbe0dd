//! Accept loops: TLS handshakes (server mode) with the listener's current TLS snapshot
//! (`tls/store.rs`), HTTP serving through the connection core, accept-error backoff,
//! shedding and drain.

use crate::config::{ConfigError, ListenerConfig};
use crate::connection::{self, Activity, Closed, HttpServer, OpenConnections};
use crate::log_limit::LogLimit;
use crate::metrics::{ConnectionGauge, Metrics, ResultLabels, Telemetry};
use crate::proxy::{ConnectionInfo, Proxy, TlsInfo};
use crate::tls::store::{Snapshot, TlsStore};
use crate::tls::{self, explain};
use hyper::service::service_fn;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per listener beyond which accepting pauses (nginx: worker_connections).
const MAX_CONNECTIONS: usize = 16 * 1024;
/// After an accept error wait before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Out of descriptors, this many idle connections are closed at once (nginx drains 32).
const SHED_BATCH: usize = 32;
/// After shedding, the closing connections need a moment to give their descriptors back.
const SHED_PAUSE: Duration = Duration::from_millis(10);

/// Failed handshakes logged per second per listener before the rest are only counted.
const HANDSHAKE_LOG_BURST: u32 = 20;
/// Accept failures logged per [`ACCEPT_LOG_WINDOW`] per listener: clients arriving while
/// descriptors are short make one failure per round of shedding, many a second, and each
/// would say the same.
const ACCEPT_LOG_BURST: u32 = 1;
const ACCEPT_LOG_WINDOW: Duration = Duration::from_secs(10);

pub use crate::tls::store::{ReloadOutcome, EXPIRY_WARNING_DAYS};
/// A listener ready to serve: its config, current TLS material and HTTP settings.
pub struct ListenerRuntime {
    pub config: ListenerConfig,
    /// HTTP/1 and HTTP/2 server settings and limits, shared by every connection.
    http: HttpServer,
    /// Open connections, for shedding the idle ones when descriptors run out.
    open: OpenConnections,
    /// The TLS snapshot and the request handler made with it, swapped whole on reload.
    store: TlsStore<Proxy>,
    metrics: Arc<Metrics>,
    handshake_log: LogLimit,
    accept_log: LogLimit,
}

impl ListenerRuntime {
    /// Loads and checks every file the listener needs; binds nothing.
    pub fn build(
        config: &ListenerConfig,
        telemetry: &Telemetry,
        warnings: &mut Vec<String>,
    ) -> Result<ListenerRuntime, ConfigError> {
        let metrics = &telemetry.metrics;
        let (handler_config, handler_telemetry) = (config.clone(), telemetry.clone());
        let make_handler: tls::store::MakeHandler<Proxy> =
            Box::new(move |client_tls, previous| match (client_tls, previous) {
                // Server mode's backend pool does not depend on certificates: keep it warm.
                (None, Some(previous)) => previous.clone(),
                (client_tls, _) => {
                    Arc::new(Proxy::new(&handler_config, client_tls, &handler_telemetry))
                }
            });
        Ok(ListenerRuntime {
            http: HttpServer::new(&config.client_limits),
            open: OpenConnections::default(),
            config: config.clone(),
            store: TlsStore::build(config, metrics, make_handler, warnings)?,
            metrics: metrics.clone(),
            handshake_log: LogLimit::new(HANDSHAKE_LOG_BURST),
            accept_log: LogLimit::per_window(ACCEPT_LOG_BURST, ACCEPT_LOG_WINDOW),
        })
    }

    /// Warns about every loaded certificate near or past its notAfter.
    pub fn warn_expiring(&self) {
        self.store.warn_expiring()
    }

    /// Exports (or withdraws) the notAfter series of this listener's certificates.
    pub fn publish_expiry(&self, serving: bool) {
        self.store.publish_expiry(serving)
    }

    /// Re-reads the listener's files now (SIGHUP, POST /reload, a file event).
    pub fn reload(&self) -> ReloadOutcome {
        self.store.reload()
    }

    /// The periodic check, which loads a change only once the files are quiet.
    pub fn poll(&self) -> ReloadOutcome {
        self.store.poll()
    }

    /// The certificates in use and the last reload, for `/status`.
    pub fn status(
        &self,
    ) -> (
        Vec<tls::CertificateInfo>,
        Option<(std::time::SystemTime, ReloadOutcome)>,
    ) {
        self.store.status()
    }

    fn current(&self) -> Arc<Snapshot<Proxy>> {
        self.store.current()
    }

    /// Logs a failed handshake, at most [`HANDSHAKE_LOG_BURST`] lines a second per listener,
    /// so a flood of bad clients cannot fill the disk; what is held back is counted and said.
    fn log_handshake_failure(&self, remote: std::net::SocketAddr, reason: &str) {
        self.handshake_log.log(
            tracing::Level::WARN,
            &self.config.name,
            "more failed handshakes were not logged (see certgate_handshakes_total)",
            format_args!("TLS handshake with {remote} failed: {reason}"),
        );
    }

    /// Logs a failed accept, at most [`ACCEPT_LOG_BURST`] lines per [`ACCEPT_LOG_WINDOW`]; what
    /// is held back is counted and said with the next line.
    fn log_accept_failure(&self, level: tracing::Level, line: std::fmt::Arguments<'_>) {
        self.accept_log.log(
            level,
            &self.config.name,
            "more accept failures were not logged",
            line,
        );
    }

    /// Accepts connections until `shutdown` flips, then lets open requests finish within
    /// `drain_timeout`.
    pub async fn serve(
        self: Arc<Self>,
        tcp: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        drain_timeout: Duration,
        socket_closed: tokio::sync::oneshot::Sender<()>,
    ) {
        // Flipped to tell open connections to finish their requests and close.
        let (drain, draining) = watch::channel(false);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut warned_full = false;
        // Kept so that connections still open after the drain timeout can be closed.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
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
                        let draining = draining.clone();
                        connections.spawn(async move {
                            this.connection(stream, remote, draining).await;
                            drop(slot);
                        });
                    }
                    Err(error) if connection::out_of_descriptors(&error) => {
                        // Serving new clients matters more than keeping idle ones: close the
                        // connections idle longest, then accept again.
                        let shed = self.open.shed_idle(SHED_BATCH);
                        self.log_accept_failure(tracing::Level::WARN, format_args!(
                            "accept failed: {error}; closed {shed} idle connection(s) to make room (raise the descriptor limit: ulimit -n, systemd LimitNOFILE)"
                        ));
                        tokio::time::sleep(if shed > 0 { SHED_PAUSE } else { ACCEPT_BACKOFF }).await;
                    }
                    Err(error) => {
                        self.log_accept_failure(tracing::Level::ERROR, format_args!("accept failed: {error}; retrying"));
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
        drop(tcp);
        // The address is free again: a replacement listener may bind it while we drain.
        let _ = socket_closed.send(());
        let _ = drain.send(true);
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(drain_timeout, drained).await.is_err() {
            tracing::warn!(
                "listener \"{}\": {} connection(s) still open after {}s; closing them",
                self.config.name,
                connections.len(),
                drain_timeout.as_secs()
            );
            connections.abort_all();
        }
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        remote: std::net::SocketAddr,
        draining: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        let name = &self.config.name;
        let material = self.current();
        let listener_label = Metrics::listener(name);
        let _open = ConnectionGauge::open(
            self.metrics
                .active_connections
                .get_or_create_owned(&listener_label),
        );
        let handshake = |result: &str| {
            let labels = ResultLabels {
                listener: name.clone(),
                result: result.to_string(),
            };
            self.metrics.handshakes.get_or_create(&labels).inc();
        };
        match &material.server_tls {
            None => {
                let info = Arc::new(ConnectionInfo::new(remote, local, None));
                self.serve_http(stream, info, draining).await;
            }
            Some(server_tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(server_tls.config.clone());
                let tls_stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => tls_stream,
                        Ok(Err(error)) => {
                            handshake(
                                explain::find_rustls_error(&error)
                                    .map(explain::reason_label)
                                    .unwrap_or("other"),
                            );
                            let reason = match explain::find_rustls_error(&error) {
                                Some(tls_error) => explain::tls_error(tls_error),
                                None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                                    "the peer closed the connection during the handshake"
                                        .to_string()
                                }
                                None => error.to_string(),
                            };
                            self.log_handshake_failure(remote, &reason);
                            return;
                        }
                        Err(_) => {
                            handshake("timeout");
                            let reason =
                                format!("no handshake within {}s", HANDSHAKE_TIMEOUT.as_secs());
                            self.log_handshake_failure(remote, &reason);
                            return;
                        }
                    };
                let connection = tls_stream.get_ref().1;
                let (verdict, peer) = server_tls.verdict(connection);
                let identity_headers = peer
                    .as_ref()
                    .map(|p| material.handler.edits.identity_headers(p))
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
                handshake("ok");
                let handshake = match connection.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => {
                        self.metrics
                            .resumed_handshakes
                            .get_or_create(&listener_label)
                            .inc();
                        "resumed"
                    }
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
                let info = Arc::new(ConnectionInfo::new(remote, local, Some(info)));
                self.serve_http(tls_stream, info, draining).await;
            }
        }
    }

    async fn serve_http<IO>(
        self: &Arc<Self>,
        io: IO,
        info: Arc<ConnectionInfo>,
        draining: watch::Receiver<bool>,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let remote = info.remote;
        // The handler is looked up per request, so that after a reload even a long-lived
        // keep-alive connection moves to the new upstream pool (client mode).
        let this = self.clone();
        let service =
            service_fn(move |request| this.current().handler.clone().handle(request, info.clone()));
        let activity = Activity::new();
        let _registered = self.open.register(activity.clone());
        let (closed, result) = self.http.serve(io, service, activity, draining).await;
        let name = &self.config.name;
        match (closed, result) {
            (Closed::NoRequest, _) => tracing::debug!(
                "listener \"{name}\": closed the connection from {remote}: no request within client_header_timeout ({:?})",
                self.config.client_limits.header_timeout
            ),
            (Closed::Idle, _) => tracing::debug!(
                "listener \"{name}\": closed the idle connection from {remote} (keepalive_timeout / http2_idle_timeout)"
            ),
            (Closed::Shed, _) => tracing::debug!(
                "listener \"{name}\": closed the idle connection from {remote} to free a descriptor"
            ),
            (_, Err(error)) => {
                tracing::debug!("listener \"{name}\": connection from {remote} ended: {error}")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ListenerSpec, Origin, SpecValue};
    use crate::pki::{Authority, Issued, KeyType, LeafSpec, Usage};

    /// Writes `text` to `name` in `dir`; returns the path.
    fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// A server-mode listener on `server`'s certificate and key, written to `dir`.
    fn server_runtime(dir: &std::path::Path, ca: &Authority, server: &Issued) -> ListenerRuntime {
        let mut spec = ListenerSpec::default();
        for (key, value) in [
            ("mode", "server".to_string()),
            ("listen", "127.0.0.1:0".to_string()),
            ("upstream", "127.0.0.1:1".to_string()),
            ("cert", write(dir, "server.pem", &server.cert_pem)),
            ("key", write(dir, "server.key", &server.key_pem)),
            ("client_ca", write(dir, "ca.pem", &ca.issued.cert_pem)),
        ] {
            spec.set(key, Origin::Flag(key.into()), SpecValue::Text(value))
                .unwrap();
        }
        let config = Config::from_specs(vec![spec]).unwrap();
        ListenerRuntime::build(&config.listeners[0], &Telemetry::new(), &mut Vec::new()).unwrap()
    }

    #[test]
    fn the_periodic_check_loads_a_change_only_once_it_reads_the_same_twice() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| write(dir.path(), name, text);
        let ca = Authority::root("test CA", KeyType::EcdsaP256).unwrap();
        let server = ca.leaf(&LeafSpec::new("localhost", Usage::Server)).unwrap();
        let runtime = server_runtime(dir.path(), &ca, &server);
        assert_eq!(runtime.poll(), ReloadOutcome::Unchanged);

        let next = ca.leaf(&LeafSpec::new("localhost", Usage::Server)).unwrap();
        write("server.key", &next.key_pem);
        write("server.pem", &next.cert_pem);
        // First seen: perhaps still being written.
        assert_eq!(runtime.poll(), ReloadOutcome::Unchanged);
        // Changed again since: still not taken.
        write(
            "server.pem",
            &format!("{}{}", next.cert_pem, ca.issued.cert_pem),
        );
        assert_eq!(runtime.poll(), ReloadOutcome::Unchanged);
        // The same as at the last check: taken.
        assert_eq!(runtime.poll(), ReloadOutcome::Reloaded);
        assert_eq!(runtime.poll(), ReloadOutcome::Unchanged);

        // An explicit reload does not wait.
        write("server.pem", &server.cert_pem);
        write("server.key", &server.key_pem);
        assert_eq!(runtime.reload(), ReloadOutcome::Reloaded);
    }

    #[test]
    fn a_refused_file_is_a_failed_reload_once_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| write(dir.path(), name, text);
        let ca = Authority::root("test CA", KeyType::EcdsaP256).unwrap();
        let server = ca.leaf(&LeafSpec::new("localhost", Usage::Server)).unwrap();
        let runtime = server_runtime(dir.path(), &ca, &server);

        write("server.pem", "-----BEGIN CERTIFICATE-----\ntruncated");
        assert_eq!(runtime.reload(), ReloadOutcome::Failed);
        let (_, first) = runtime.status();
        // The same broken file again, by request or by the periodic check: nothing new.
        assert_eq!(runtime.reload(), ReloadOutcome::Unchanged);
        for _ in 0..3 {
            assert_eq!(runtime.poll(), ReloadOutcome::Unchanged);
        }
        assert_eq!(runtime.status().1, first);
        // Another problem is news.
        write("server.pem", "-----BEGIN CERTIFICATE-----\nstill truncated");
        assert_eq!(runtime.reload(), ReloadOutcome::Failed);
        // So is the first problem again, once the loaded files were back in between.
        write("server.pem", &server.cert_pem);
        assert_eq!(runtime.reload(), ReloadOutcome::Unchanged);
        write("server.pem", "-----BEGIN CERTIFICATE-----\nstill truncated");
        assert_eq!(runtime.reload(), ReloadOutcome::Failed);
        // An unreadable file likewise counts once.
        std::fs::remove_file(dir.path().join("server.key")).unwrap();
        assert_eq!(runtime.reload(), ReloadOutcome::Failed);
        assert_eq!(runtime.reload(), ReloadOutcome::Unchanged);
    }
}
