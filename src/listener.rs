//! The serving core: a listener accepts, limits, handshakes and drains; what runs on an
//! accepted, handshaken connection is a [`ConnectionHandler`] chosen by the listener's mode.
//!
//! - [`AcceptLoop`] owns one listening socket: the connection limit ([`MAX_CONNECTIONS`],
//!   past which accepting pauses), accept-error backoff, shedding the idlest connections when
//!   descriptors run out, and the drain on shutdown. The admin listener uses it too.
//! - [`ListenerRuntime`] adds the TLS handshake, made with the listener's current snapshot
//!   from [`TlsStore`] (read per connection, so a reload reaches the next handshake), the
//!   handshake metrics and failure log, and hands the connection to its handler as an
//!   [`Accepted`]: the stream ([`Downstream`]: TLS in server mode, plain TCP in client mode),
//!   its [`ConnectionInfo`], the drain signal and the table idle connections register in.
//! - A handler serves the connection however its protocol wants. Today there is one,
//!   [`crate::proxy::handler::HttpProxy`] (hyper through `connection.rs`, each request to
//!   [`crate::proxy::Proxy`]). A TCP tunnel (`protocol = "tcp"`, copying bytes both ways
//!   to an upstream) is another implementation picked in [`handler_for`]; a relay for
//!   upgraded connections (WebSocket, CONNECT) runs inside the HTTP handler once hyper
//!   hands over the upgraded stream (`connection.rs` serves with upgrades on), and can
//!   share the tunnel's byte copying. Neither touches the accept or handshake code.
//!
//! With several workers ([`crate::workers`]) each runs its own [`ListenerRuntime`] of every
//! listener, made by [`ListenerRuntime::worker`], on its own listening socket: the TLS store
//! and the connection limit are the listener's and shared (read per connection), the
//! handler with its upstream pool, the open-connection table and the accept loop are the
//! worker's. Nothing on this path is process-wide: metrics and the TLS snapshot come in as
//! arguments.

use crate::config::{ConfigError, ListenerConfig};
use crate::connection::{self, OpenConnections};
use crate::log_limit::LogLimit;
use crate::metrics::{
    ConnectionGauge, ListenerLabel, Metrics, ResultLabels, Telemetry, WorkerLabels,
};
pub use crate::proxy::{ConnectionInfo, TlsInfo};
use crate::tls::store::TlsStore;
use crate::tls::{self, explain, server::ServerTls};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per listener (all workers together) beyond which accepting pauses
/// (nginx: worker_connections, which is per worker).
pub const MAX_CONNECTIONS: usize = 16 * 1024;
/// After an accept error wait before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Out of descriptors, this many idle connections of a listener are closed at once (nginx
/// drains 32).
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

/// An accepted connection, after its handshake in server mode.
// The TLS variant is much larger, but a `Downstream` is moved once, into its handler, and
// boxing it would add an indirection to every read and write.
#[allow(clippy::large_enum_variant)]
pub enum Downstream {
    Tls(tokio_rustls::server::TlsStream<TcpStream>),
    Plain(TcpStream),
}

/// What the core hands a handler with each connection.
pub struct Accepted {
    pub stream: Downstream,
    pub info: ConnectionInfo,
    /// Flips (or its sender goes away) when the listener drains: finish what is in flight
    /// and close. Connections still open after the drain timeout are dropped.
    pub drain: watch::Receiver<bool>,
    /// Where the connection registers its activity, so that the core can ask the idlest to
    /// close when descriptors run out.
    pub open: Arc<OpenConnections>,
}

/// What runs on an accepted connection: serves it until it closes or `drain` says to stop.
pub trait ConnectionHandler: Send + Sync + 'static {
    fn serve(self: Arc<Self>, connection: Accepted) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The handler for `config`'s mode, built on `tls` (which it may read per request).
fn handler_for(
    config: &ListenerConfig,
    tls: &Arc<TlsStore>,
    telemetry: &Telemetry,
) -> Arc<dyn ConnectionHandler> {
    // Every mode serves HTTP today; `protocol = "tcp"` (issue #17) would pick a tunnel here.
    Arc::new(crate::proxy::handler::HttpProxy::new(
        config, tls, telemetry,
    ))
}

/// Accepting on one listening socket: the connection limit, accept-error backoff, shedding
/// idle connections when descriptors run out, and the drain.
pub struct AcceptLoop {
    /// Who the log lines name.
    name: String,
    shed_batch: usize,
    /// One permit per open connection, [`MAX_CONNECTIONS`] in all; shared by the accept
    /// loops of one listener's workers.
    slots: Arc<Semaphore>,
    open: Arc<OpenConnections>,
    /// Shared like `slots`: the bound is per listener, however many workers it runs on.
    accept_log: Arc<LogLimit>,
}

impl AcceptLoop {
    /// `shed_batch`: how many idle connections to close at once when descriptors run out.
    pub fn new(name: &str, shed_batch: usize) -> AcceptLoop {
        AcceptLoop {
            name: name.to_string(),
            shed_batch,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            open: Arc::default(),
            accept_log: Arc::new(LogLimit::per_window(ACCEPT_LOG_BURST, ACCEPT_LOG_WINDOW)),
        }
    }

    /// Another worker's accept loop for the same listener: its own open-connection table,
    /// the same connection limit and log bound.
    fn sibling(&self) -> AcceptLoop {
        AcceptLoop {
            slots: self.slots.clone(),
            accept_log: self.accept_log.clone(),
            ..AcceptLoop::new(&self.name, self.shed_batch)
        }
    }

    /// The connections open on this socket, for their handlers to register in.
    pub fn open(&self) -> &Arc<OpenConnections> {
        &self.open
    }

    /// Logs a failed accept, at most [`ACCEPT_LOG_BURST`] lines per [`ACCEPT_LOG_WINDOW`]; what
    /// is held back is counted and said with the next line.
    fn log_accept_failure(&self, level: tracing::Level, line: std::fmt::Arguments<'_>) {
        self.accept_log.log(
            level,
            &self.name,
            "more accept failures were not logged",
            line,
        );
    }

    /// Accepts connections until `shutdown` flips, running `connection` on each as its own
    /// task; then closes the socket (and says so on `socket_closed`) and lets open
    /// connections finish within `drain_timeout`.
    pub async fn run<F, Fut>(
        &self,
        tcp: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        drain_timeout: Duration,
        socket_closed: Option<oneshot::Sender<()>>,
        mut connection: F,
    ) where
        F: FnMut(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Flipped to tell open connections to finish their requests and close.
        let (drain, draining) = watch::channel(false);
        let slots = &self.slots;
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
                            self.name
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
                        let serving = connection(stream, remote, draining.clone());
                        connections.spawn(async move {
                            serving.await;
                            drop(slot);
                        });
                    }
                    Err(error) if connection::out_of_descriptors(&error) => {
                        // Serving new clients matters more than keeping idle ones: close the
                        // connections idle longest, then accept again.
                        let shed = self.open.shed_idle(self.shed_batch);
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
        if let Some(socket_closed) = socket_closed {
            let _ = socket_closed.send(());
        }
        let _ = drain.send(true);
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(drain_timeout, drained).await.is_err() {
            tracing::warn!(
                "listener \"{}\": {} connection(s) still open after {}s; closing them",
                self.name,
                connections.len(),
                drain_timeout.as_secs()
            );
            connections.abort_all();
        }
    }
}

/// A listener ready to serve on one worker: its config, its TLS store, and what serves its
/// connections.
pub struct ListenerRuntime {
    pub config: ListenerConfig,
    /// The TLS snapshot, swapped whole on reload; reloads, `/status` and the expiry metric
    /// go to it directly. Shared by the listener's workers.
    pub tls: Arc<TlsStore>,
    handler: Arc<dyn ConnectionHandler>,
    accept: AcceptLoop,
    metrics: Arc<Metrics>,
    /// `listener` label of this listener's metrics, made once.
    label: ListenerLabel,
    /// This worker's counters, looked up once rather than per connection.
    accepted: Counter,
    active: Gauge,
    /// The log bounds are the listener's, shared by its workers.
    handshake_log: Arc<LogLimit>,
    /// Our own handshake failures have their own bound, so that a flood of bad clients
    /// cannot hide them.
    own_failure_log: Arc<LogLimit>,
}

impl ListenerRuntime {
    /// Loads and checks every file the listener needs; binds nothing. The runtime is the
    /// first worker's; [`ListenerRuntime::worker`] makes the others'.
    pub fn build(
        config: &ListenerConfig,
        telemetry: &Telemetry,
        warnings: &mut Vec<String>,
    ) -> Result<ListenerRuntime, ConfigError> {
        let tls = Arc::new(TlsStore::build(config, &telemetry.metrics, warnings)?);
        let accept = AcceptLoop::new(&config.name, SHED_BATCH);
        Ok(ListenerRuntime::on_worker(
            config, tls, accept, 0, telemetry,
        ))
    }

    /// The same listener on worker `index`: the same TLS store, connection limit and log
    /// bounds; its own handler (with its upstream pool) and open-connection table.
    pub fn worker(&self, index: usize, telemetry: &Telemetry) -> ListenerRuntime {
        ListenerRuntime {
            handshake_log: self.handshake_log.clone(),
            own_failure_log: self.own_failure_log.clone(),
            ..ListenerRuntime::on_worker(
                &self.config,
                self.tls.clone(),
                self.accept.sibling(),
                index,
                telemetry,
            )
        }
    }

    fn on_worker(
        config: &ListenerConfig,
        tls: Arc<TlsStore>,
        accept: AcceptLoop,
        worker: usize,
        telemetry: &Telemetry,
    ) -> ListenerRuntime {
        let metrics = telemetry.metrics.clone();
        let label = Metrics::listener(&config.name);
        let accepted = metrics.connections.get_or_create_owned(&WorkerLabels {
            listener: config.name.clone(),
            worker: worker.to_string(),
        });
        let active = metrics.active_connections.get_or_create_owned(&label);
        ListenerRuntime {
            handler: handler_for(config, &tls, telemetry),
            accept,
            config: config.clone(),
            tls,
            metrics,
            label,
            accepted,
            active,
            handshake_log: Arc::new(LogLimit::new(HANDSHAKE_LOG_BURST)),
            own_failure_log: Arc::new(LogLimit::new(HANDSHAKE_LOG_BURST)),
        }
    }

    /// Accepts connections until `shutdown` flips, then lets open requests finish within
    /// `drain_timeout`.
    pub async fn serve(
        self: Arc<Self>,
        tcp: TcpListener,
        shutdown: watch::Receiver<bool>,
        drain_timeout: Duration,
        socket_closed: oneshot::Sender<()>,
    ) {
        let this = self.clone();
        let connection =
            move |stream, remote, drain| this.clone().connection(stream, remote, drain);
        self.accept
            .run(
                tcp,
                shutdown,
                drain_timeout,
                Some(socket_closed),
                connection,
            )
            .await;
    }

    /// One accepted connection: its handshake (server mode), then its handler.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        drain: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        self.accepted.inc();
        let _open = ConnectionGauge::open(self.active.clone());
        let snapshot = self.tls.current();
        let (stream, tls) = match &snapshot.server_tls {
            None => (Downstream::Plain(stream), None),
            Some(server_tls) => match self.handshake(server_tls, stream, remote).await {
                Some((stream, tls)) => (Downstream::Tls(stream), Some(tls)),
                None => return,
            },
        };
        // The snapshot is not kept for the connection's lifetime: a reload's old material
        // goes away with the handshakes that used it.
        drop(snapshot);
        let accepted = Accepted {
            stream,
            info: ConnectionInfo::new(remote, local, tls),
            drain,
            open: self.accept.open().clone(),
        };
        self.handler.clone().serve(accepted).await;
    }

    fn count_handshake(&self, result: &str) {
        let labels = ResultLabels {
            listener: self.config.name.clone(),
            result: result.to_string(),
        };
        self.metrics.handshakes.get_or_create(&labels).inc();
    }

    /// The TLS handshake of server mode, counted, and its failure logged; None if it failed.
    async fn handshake(
        &self,
        server_tls: &ServerTls,
        stream: TcpStream,
        remote: SocketAddr,
    ) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, TlsInfo)> {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_tls.config.clone());
        let tls_stream =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => tls_stream,
                Ok(Err(error)) => {
                    self.handshake_failed(remote, &error);
                    return None;
                }
                Err(_) => {
                    self.count_handshake("timeout");
                    self.log_handshake_failure(
                        tracing::Level::WARN,
                        format_args!(
                            "TLS handshake with {remote} failed: no handshake within {}s",
                            HANDSHAKE_TIMEOUT.as_secs()
                        ),
                    );
                    return None;
                }
            };
        let connection = tls_stream.get_ref().1;
        let (verdict, peer) = server_tls.verdict(connection);
        let info = TlsInfo {
            // Set by a handler that sends identity headers, from its own rules.
            identity_headers: Default::default(),
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
        self.count_handshake("ok");
        let kind = match connection.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => {
                self.metrics
                    .resumed_handshakes
                    .get_or_create(&self.label)
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
            "listener \"{}\": {remote} connected with {} {} ({kind} handshake, ALPN {alpn}), client certificate {}",
            self.config.name,
            info.protocol,
            info.cipher,
            info.verdict
        );
        Some((tls_stream, info))
    }

    /// Counts and logs a failed handshake, saying whose failure it was: a peer's refusal or
    /// mistake is a warning; our own key failing to sign is an error the operator must fix.
    fn handshake_failed(&self, remote: SocketAddr, error: &std::io::Error) {
        let tls_error = explain::find_rustls_error(error);
        self.count_handshake(tls_error.map(explain::reason_label).unwrap_or("other"));
        if let Some(failed) = tls_error.and_then(explain::signing_failure) {
            self.own_failure_log.log(
                tracing::Level::ERROR,
                &self.config.name,
                "more handshakes our key failed to sign were not logged (see certgate_handshakes_total{result=\"signing_failed\"})",
                format_args!(
                    "our key in the token failed to sign the TLS handshake with {remote}: {failed}; check the token and its PIN (pkcs11-tool --list-objects), then reload"
                ),
            );
            return;
        }
        let reason = match tls_error {
            Some(tls_error) => explain::tls_error(tls_error),
            None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                "the peer closed the connection during the handshake".to_string()
            }
            None => error.to_string(),
        };
        self.log_handshake_failure(
            tracing::Level::WARN,
            format_args!("TLS handshake with {remote} failed: {reason}"),
        );
    }

    /// Logs a failed handshake, at most [`HANDSHAKE_LOG_BURST`] lines a second per listener,
    /// so a flood of bad clients cannot fill the disk; what is held back is counted and said.
    fn log_handshake_failure(&self, level: tracing::Level, line: std::fmt::Arguments<'_>) {
        self.handshake_log.log(
            level,
            &self.config.name,
            "more failed handshakes were not logged (see certgate_handshakes_total)",
            line,
        );
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

    /// A server-mode listener's TLS store on files in a new directory, its CA and server
    /// certificate.
    fn served() -> (tempfile::TempDir, Authority, Issued, Arc<TlsStore>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::root("test CA", KeyType::EcdsaP256).unwrap();
        let server = ca.leaf(&LeafSpec::new("localhost", Usage::Server)).unwrap();
        let tls = server_runtime(dir.path(), &ca, &server).tls;
        (dir, ca, server, tls)
    }

    #[test]
    fn the_periodic_check_loads_a_change_only_once_it_reads_the_same_twice() {
        let (dir, ca, server, runtime) = served();
        let write = |name: &str, text: &str| write(dir.path(), name, text);
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
        let (dir, _ca, server, runtime) = served();
        let write = |name: &str, text: &str| write(dir.path(), name, text);

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
