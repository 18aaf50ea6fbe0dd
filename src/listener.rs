//! Accept loops: TLS handshakes (server mode), HTTP serving, accept-error backoff, drain; and
//! each listener's TLS material as one snapshot that a reload replaces whole.

use crate::config::{ConfigError, ListenerConfig, ModeConfig};
use crate::connection::{self, Activity, Closed, HttpServer, OpenConnections};
use crate::log_limit::LogLimit;
use crate::metrics::{CertificateLabels, ConnectionGauge, Metrics, ResultLabels, Telemetry};
use crate::proxy::{ConnectionInfo, Proxy, TlsInfo};
use crate::tls::{self, explain, server::ServerTls};
use hyper::service::service_fn;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};
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

/// Everything that depends on a listener's certificate files, built and checked together and
/// replaced whole: a connection sees either the old snapshot or the new one, never a mix.
struct Material {
    /// Server mode: the TLS acceptor's configuration and client verification.
    server_tls: Option<ServerTls>,
    /// The request handler; in client mode it owns the upstream pool, whose connections
    /// carry the client certificate, so a reload builds a new one and the old pool goes
    /// away with the last request using it.
    proxy: Arc<Proxy>,
    /// Hash of the files' contents when they were read.
    fingerprint: u64,
    /// The certificates loaded, for `/status` and the expiry metric.
    certificates: Vec<tls::CertificateInfo>,
    /// The chain this listener presents (leaf first) and its file, as read.
    chain: Option<(std::path::PathBuf, Vec<Vec<u8>>)>,
}

impl Material {
    fn build(
        config: &ListenerConfig,
        fingerprint: u64,
        previous: Option<&Material>,
        telemetry: &Telemetry,
        warnings: &mut Vec<String>,
    ) -> Result<Material, ConfigError> {
        let certificates = tls::certificates_of(config);
        let chain = presented_chain(config);
        Ok(match &config.mode {
            ModeConfig::Server(server) => Material {
                server_tls: Some(ServerTls::build(config, server, warnings)?),
                // The backend pool does not depend on certificates: keep it warm.
                proxy: match previous {
                    Some(previous) => previous.proxy.clone(),
                    None => Arc::new(Proxy::new(config, None, telemetry)),
                },
                fingerprint,
                certificates,
                chain,
            },
            ModeConfig::Client(client) => {
                let client_tls = tls::client::build(config, client, warnings)?;
                Material {
                    server_tls: None,
                    proxy: Arc::new(Proxy::new(config, Some(client_tls), telemetry)),
                    fingerprint,
                    certificates,
                    chain,
                }
            }
        })
    }
}

/// The contents of every file the listener reads, hashed: what "the files changed" means.
fn fingerprint(config: &ListenerConfig) -> Result<u64, ConfigError> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in config.files() {
        let bytes = std::fs::read(path)
            .map_err(|e| ConfigError::general(format!("cannot read {}: {e}", path.display())))?;
        path.hash(&mut hasher);
        bytes.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

/// The certificate chain a listener presents (server mode: its certificate; client mode: its
/// client certificate), leaf first, and the file it is in.
fn presented_chain(config: &ListenerConfig) -> Option<(std::path::PathBuf, Vec<Vec<u8>>)> {
    let file = match &config.mode {
        ModeConfig::Server(server) => &server.cert.value,
        ModeConfig::Client(client) => &client.identity.as_ref()?.0.value,
    };
    let chain = tls::load::certificates(file).ok()?;
    Some((file.clone(), chain.iter().map(|c| c.to_vec()).collect()))
}

/// What to tell the operator when a reload shortens the presented chain or drops one of its
/// intermediates: peers that relied on being sent it stop verifying the certificate. (A file
/// still being written is not read until it is quiet, see `reload`; this is what remains.)
fn chain_warning(
    mode: &ModeConfig,
    previous: &(std::path::PathBuf, Vec<Vec<u8>>),
    new: &(std::path::PathBuf, Vec<Vec<u8>>),
) -> Option<String> {
    let (old, (file, chain)) = (&previous.1, new);
    let intermediates = |c: &[Vec<u8>]| c.iter().skip(1).cloned().collect::<Vec<_>>();
    let kept = intermediates(chain);
    let dropped: Vec<String> = intermediates(old)
        .iter()
        .filter(|c| !kept.contains(c))
        .map(|der| match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => format!("\"{}\"", tls::identity::distinguished_name(cert.subject())),
            Err(_) => "an unparsable certificate".to_string(),
        })
        .collect();
    if chain.len() >= old.len() && dropped.is_empty() {
        return None;
    }
    let peers = match mode {
        ModeConfig::Server(_) => "clients",
        ModeConfig::Client(_) => "upstreams",
    };
    let mut text = format!(
        "the new certificate chain in {} has {} certificate(s), the previous one {}",
        file.display(),
        chain.len(),
        old.len()
    );
    if !dropped.is_empty() {
        text.push_str(&format!(
            "; it no longer includes the intermediate {}",
            dropped.join(", ")
        ));
    }
    text.push_str(&format!(
        "; {peers} that do not have the missing intermediate cannot verify this certificate: append it to the file after the leaf"
    ));
    Some(text)
}

/// Sets `certgate_certificate_not_after_timestamp_seconds` for the new material's
/// certificates, dropping the series of certificates no longer loaded.
fn publish_expiry(
    metrics: &Metrics,
    listener: &str,
    previous: Option<&Material>,
    material: &Material,
) {
    let labels = |info: &tls::CertificateInfo| CertificateLabels {
        listener: listener.to_string(),
        role: info.role.to_string(),
        subject: info.subject.clone(),
    };
    for info in previous
        .map(|p| p.certificates.as_slice())
        .unwrap_or_default()
    {
        metrics.certificate_not_after.remove(&labels(info));
    }
    for info in &material.certificates {
        metrics
            .certificate_not_after
            .get_or_create(&labels(info))
            .set(info.not_after);
    }
}

/// Failed handshakes logged per second per listener before the rest are only counted.
const HANDSHAKE_LOG_BURST: u32 = 20;
/// Accept failures logged per [`ACCEPT_LOG_WINDOW`] per listener: clients arriving while
/// descriptors are short make one failure per round of shedding, many a second, and each
/// would say the same.
const ACCEPT_LOG_BURST: u32 = 1;
const ACCEPT_LOG_WINDOW: Duration = Duration::from_secs(10);
/// Certificates closer than this to their notAfter are warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// What a reload attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadOutcome {
    /// Nothing new since the last attempt: the files are what is loaded, or what was last
    /// refused (counted once, when it was refused). Not counted.
    Unchanged,
    Reloaded,
    /// The new files were refused; the previous material keeps serving.
    Failed,
}

/// A listener ready to serve: its config, current TLS material and HTTP settings.
pub struct ListenerRuntime {
    pub config: ListenerConfig,
    /// HTTP/1 and HTTP/2 server settings and limits, shared by every connection.
    http: HttpServer,
    /// Open connections, for shedding the idle ones when descriptors run out.
    open: OpenConnections,
    material: RwLock<Arc<Material>>,
    /// The fingerprint of files that failed to load (or of the error reading them), so a
    /// broken file is reported and counted once, not on every check.
    refused: Mutex<Option<u64>>,
    /// What the periodic check last found the files to be, when not what is loaded: a
    /// change is loaded once two checks in a row find it (the file is no longer changing).
    polled: Mutex<Option<u64>>,
    metrics: Arc<Metrics>,
    telemetry: Telemetry,
    reloading: Mutex<()>,
    handshake_log: LogLimit,
    accept_log: LogLimit,
    /// When the last reload that changed something happened, and how it ended.
    last_reload: Mutex<Option<(std::time::SystemTime, ReloadOutcome)>>,
}

impl ListenerRuntime {
    /// Loads and checks every file the listener needs; binds nothing.
    pub fn build(
        config: &ListenerConfig,
        telemetry: &Telemetry,
        warnings: &mut Vec<String>,
    ) -> Result<ListenerRuntime, ConfigError> {
        let metrics = &telemetry.metrics;
        // Hashed before reading, so a change while loading shows as a change on the next
        // check; an unreadable file is reported by the load, naming its key or flag.
        let fingerprint = fingerprint(config).unwrap_or_default();
        let material = Material::build(config, fingerprint, None, telemetry, warnings)?;
        Ok(ListenerRuntime {
            http: HttpServer::new(&config.client_limits),
            open: OpenConnections::default(),
            config: config.clone(),
            material: RwLock::new(Arc::new(material)),
            refused: Mutex::new(None),
            polled: Mutex::new(None),
            metrics: metrics.clone(),
            telemetry: telemetry.clone(),
            reloading: Mutex::new(()),
            handshake_log: LogLimit::new(HANDSHAKE_LOG_BURST),
            accept_log: LogLimit::per_window(ACCEPT_LOG_BURST, ACCEPT_LOG_WINDOW),
            last_reload: Mutex::new(None),
        })
    }

    /// Logs a failed handshake, at most [`HANDSHAKE_LOG_BURST`] lines a second per listener,
    /// so a flood of bad clients cannot fill the disk; what is held back is counted and said.
    fn log_handshake_failure(&self, remote: std::net::SocketAddr, reason: &str) {
        let name = &self.config.name;
        if let Some(held_back) = self.handshake_log.admit() {
            if held_back > 0 {
                tracing::warn!(
                    "listener \"{name}\": {held_back} more failed handshakes were not logged (see certgate_handshakes_total)"
                );
            }
            tracing::warn!("listener \"{name}\": TLS handshake with {remote} failed: {reason}");
        }
    }

    /// Logs a failed accept, at most [`ACCEPT_LOG_BURST`] lines per [`ACCEPT_LOG_WINDOW`]; what
    /// is held back is counted and said with the next line.
    fn log_accept_failure(&self, level: tracing::Level, line: std::fmt::Arguments<'_>) {
        let name = &self.config.name;
        let Some(held_back) = self.accept_log.admit() else {
            return;
        };
        if held_back > 0 {
            tracing::warn!("listener \"{name}\": {held_back} more accept failures were not logged");
        }
        match level {
            tracing::Level::ERROR => tracing::error!("listener \"{name}\": {line}"),
            _ => tracing::warn!("listener \"{name}\": {line}"),
        }
    }

    /// Warns about every loaded certificate within [`EXPIRY_WARNING_DAYS`] of its notAfter
    /// (at load, after a reload, and daily).
    pub fn warn_expiring(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        for cert in &self.current().certificates {
            let days = cert.days_left(now);
            if days < EXPIRY_WARNING_DAYS {
                let when = if days < 0 {
                    "has expired".to_string()
                } else {
                    format!("expires in {days} days")
                };
                tracing::warn!(
                    "listener \"{}\": {} certificate \"{}\" in {} {when}; renew it (certgate reloads it without a restart)",
                    self.config.name,
                    cert.role,
                    cert.subject,
                    cert.file.display(),
                );
            }
        }
    }

    /// Exports (or, when `serving` is false, withdraws) the notAfter series of this listener's
    /// certificates: only listeners being served are reported, so a refused config or a
    /// stopped listener leaves no stale series behind for expiry alerts to fire on.
    pub fn publish_expiry(&self, serving: bool) {
        let current = self.current();
        if serving {
            publish_expiry(&self.metrics, &self.config.name, None, &current);
        } else {
            for info in &current.certificates {
                self.metrics
                    .certificate_not_after
                    .remove(&CertificateLabels {
                        listener: self.config.name.clone(),
                        role: info.role.to_string(),
                        subject: info.subject.clone(),
                    });
            }
        }
    }

    /// The material new connections and requests use now.
    fn current(&self) -> Arc<Material> {
        match self.material.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the listener's files and, if they changed and check out, swaps in new
    /// material. Open connections keep the material they started with.
    pub fn reload(&self) -> ReloadOutcome {
        self.check_files(false)
    }

    /// The periodic check: as [`reload`](Self::reload), but files that changed are loaded
    /// only once they read the same at two checks in a row, so a file in the middle of being
    /// written (a leaf without its intermediate yet) is not taken.
    pub fn poll(&self) -> ReloadOutcome {
        self.check_files(true)
    }

    fn check_files(&self, settled_only: bool) -> ReloadOutcome {
        // One reload at a time per listener (file events, the timer, SIGHUP, POST /reload).
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = self.reload_files(settled_only);
        if outcome != ReloadOutcome::Unchanged {
            let result = if outcome == ReloadOutcome::Reloaded {
                "ok"
            } else {
                "failed"
            };
            let labels = ResultLabels {
                listener: self.config.name.clone(),
                result: result.to_string(),
            };
            self.metrics.reloads.get_or_create(&labels).inc();
            *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((std::time::SystemTime::now(), outcome));
        }
        outcome
    }

    /// The certificates in use and the last reload, for `/status`.
    pub fn status(
        &self,
    ) -> (
        Vec<tls::CertificateInfo>,
        Option<(std::time::SystemTime, ReloadOutcome)>,
    ) {
        let last = *self.last_reload.lock().unwrap_or_else(|p| p.into_inner());
        (self.current().certificates.clone(), last)
    }

    fn reload_files(&self, settled_only: bool) -> ReloadOutcome {
        let name = &self.config.name;
        let current = self.current();
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let observed = fingerprint(&self.config);
        let problem = |error: &ConfigError| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            error.message.hash(&mut hasher);
            hasher.finish()
        };
        {
            let mut polled = self.polled.lock().unwrap_or_else(|p| p.into_inner());
            let seen = match &observed {
                Ok(f) if *f == current.fingerprint => {
                    // Back to what is loaded: a broken file written again later is news.
                    *polled = None;
                    *refused = None;
                    return ReloadOutcome::Unchanged;
                }
                Ok(f) => *f,
                Err(error) => problem(error),
            };
            if settled_only && *polled != Some(seen) {
                *polled = Some(seen);
                return ReloadOutcome::Unchanged;
            }
        }
        // Files already refused as they are now were counted and said when they were refused;
        // until they change again every check (the timer's every 2 s, a SIGHUP) finds nothing
        // new, so it is not counted again nor moves `last_reload`.
        let new_fingerprint = match observed {
            Ok(f) => f,
            Err(error) => {
                let problem = problem(&error);
                if *refused == Some(problem) {
                    return ReloadOutcome::Unchanged;
                }
                *refused = Some(problem);
                tracing::error!("listener \"{name}\": certificate reload failed, still serving the previous ones: {error}");
                return ReloadOutcome::Failed;
            }
        };
        if *refused == Some(new_fingerprint) {
            return ReloadOutcome::Unchanged;
        }
        let mut warnings = Vec::new();
        match Material::build(
            &self.config,
            new_fingerprint,
            Some(&current),
            &self.telemetry,
            &mut warnings,
        ) {
            Ok(material) => {
                publish_expiry(&self.metrics, name, Some(&current), &material);
                if let (Some(previous), Some(new)) = (&current.chain, &material.chain) {
                    warnings.extend(chain_warning(&self.config.mode, previous, new));
                }
                for warning in warnings {
                    tracing::warn!("listener \"{name}\": {warning}");
                }
                *self.material.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(material);
                *refused = None;
                tracing::info!(
                    "listener \"{name}\": reloaded its certificates; new connections use them"
                );
                drop(refused);
                self.warn_expiring();
                ReloadOutcome::Reloaded
            }
            Err(error) => {
                *refused = Some(new_fingerprint);
                tracing::error!("listener \"{name}\": certificate reload failed, still serving the previous ones: {error}");
                ReloadOutcome::Failed
            }
        }
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
        let mut warned_descriptors = false;
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
                        warned_descriptors = false;
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
                        if !warned_descriptors {
                            self.log_accept_failure(tracing::Level::WARN, format_args!(
                                "accept failed: {error}; closed {shed} idle connection(s) to make room (raise the descriptor limit: ulimit -n, systemd LimitNOFILE)"
                            ));
                            warned_descriptors = true;
                        }
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
                    .map(|p| material.proxy.edits.identity_headers(p))
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
            service_fn(move |request| this.current().proxy.clone().handle(request, info.clone()));
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
