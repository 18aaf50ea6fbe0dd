//! certgate: a mutual-TLS proxy.
//!
//! Data flows one way: [`config`] turns raw input into a validated [`config::Config`];
//! [`tls`] turns it into rustls configurations; [`listener`] accepts connections and hands
//! each request to [`proxy`], which edits headers and forwards upstream. [`process`] runs
//! them as the `certgate` command does, with the access log and the admin listener.

#![forbid(unsafe_code)]

pub mod access;
pub mod access_log;
pub mod admin;
pub mod certtool;
pub mod config;
pub mod connection;
pub mod listener;
pub mod log_limit;
pub mod logging;
pub mod metrics;
pub mod pki;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod reload;
pub mod tls;
pub mod workers;

// Not the library's surface: `certgate demo` (the binary) and the echo backend it shares
// with the tests (tests/support, tests/streaming.rs) and examples/loadgen.rs must be public
// to reach those other crates; hidden so that nothing else takes them for API. They may
// use anyhow, as main.rs does.
#[doc(hidden)]
pub mod demo;
#[doc(hidden)]
pub mod echo;

use config::{Config, ConfigError};
use listener::ListenerRuntime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use process::{run, ProcessError, ProcessSettings};

/// How long open requests may take to finish after a shutdown signal.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Loads every listener's TLS material and checks it, binding nothing: `certgate check`,
/// and the first half of `run`. Returns the runtimes and the warnings to show.
pub fn prepare(
    config: &Config,
    telemetry: &metrics::Telemetry,
) -> Result<(Vec<ListenerRuntime>, Vec<String>), ConfigError> {
    let mut warnings = config.warnings.clone();
    let runtimes = config
        .listeners
        .iter()
        .map(|listener| {
            ListenerRuntime::build(listener, telemetry, &mut warnings)
                .map_err(|e| ConfigError::general(format!("listener \"{}\": {e}", listener.name)))
        })
        .collect::<Result<_, _>>()?;
    Ok((runtimes, warnings))
}

/// The listeners being served and their addresses, shared with the admin listener so that
/// it always reports the current set.
pub type ListenerSet = Arc<std::sync::RwLock<Vec<(Arc<ListenerRuntime>, SocketAddr)>>>;

/// One listener being served, on every worker.
struct Serving {
    /// The first worker's runtime: the listener's config and TLS store, which all share.
    runtime: Arc<ListenerRuntime>,
    address: SocketAddr,
    stop: watch::Sender<bool>,
    /// Each fires once its worker's listening socket is closed; when all have, the address
    /// can be bound again.
    socket_closed: Vec<tokio::sync::oneshot::Receiver<()>>,
    /// Each worker's accept loop, ending when its connections have drained.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Stops accepting and waits until the address is free; open requests keep draining.
    async fn stop_accepting(&mut self) {
        let _ = self.stop.send(true);
        for closed in self.socket_closed.drain(..) {
            let _ = closed.await;
        }
        self.runtime.tls.publish_expiry(false);
    }
}

/// A started set of listeners.
pub struct Running {
    serving: Vec<Serving>,
    /// The same listeners, for the admin listener.
    pub listeners: ListenerSet,
    reload: reload::ReloadHandle,
    reload_stop: watch::Sender<bool>,
    reload_task: tokio::task::JoinHandle<()>,
    drain_timeout: Duration,
    telemetry: metrics::Telemetry,
    /// The threads the listeners serve on. Declared last: dropped (stopped) after the rest.
    workers: workers::Workers,
}

/// What applying a new configuration did.
#[derive(Debug, Default)]
pub struct ConfigChange {
    pub kept: Vec<String>,
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
}

impl Running {
    /// Stops accepting, lets open requests finish (up to the drain timeout), and returns.
    pub async fn stop(self) {
        let _ = self.reload_stop.send(true);
        for serving in &self.serving {
            let _ = serving.stop.send(true);
        }
        for serving in self.serving {
            for task in serving.tasks {
                let _ = task.await;
            }
        }
        let _ = self.reload_task.await;
    }

    /// Asks every listener to re-read its certificate files now (SIGHUP).
    pub fn reload(&self) {
        self.reload.request();
    }

    /// Each listener's name and the address it is bound to (port 0 resolved).
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.serving
            .iter()
            .map(|s| (s.runtime.config.name.clone(), s.address))
            .collect()
    }

    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.serving
            .iter()
            .find(|s| s.runtime.config.name == name)
            .map(|s| s.address)
    }

    /// Moves to a new configuration (SIGHUP with `run`). Everything is loaded and checked
    /// first, and a bad configuration changes nothing. Listeners whose settings are the same
    /// keep running with their connections; changed and removed ones stop accepting (their
    /// open requests drain); changed and new ones are bound. If a bind fails, the stopped
    /// listeners are bound again and the old configuration goes on.
    pub async fn apply(&mut self, config: &Config) -> Result<ConfigChange, ConfigError> {
        let (runtimes, warnings) = prepare(config, &self.telemetry)?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        let mut change = ConfigChange::default();
        // Which running listeners go on untouched, and which new ones must be bound.
        let mut keep = vec![false; self.serving.len()];
        let mut to_bind: Vec<ListenerRuntime> = Vec::new();
        for runtime in runtimes {
            let name = runtime.config.name.clone();
            match self
                .serving
                .iter()
                .position(|s| s.runtime.config.name == name)
            {
                Some(index)
                    if self.serving[index]
                        .runtime
                        .config
                        .same_settings(&runtime.config) =>
                {
                    keep[index] = true;
                    change.kept.push(name);
                }
                Some(_) => {
                    change.restarted.push(name);
                    to_bind.push(runtime);
                }
                None => {
                    change.started.push(name);
                    to_bind.push(runtime);
                }
            }
        }
        // Free the addresses of everything that changes (a new listener may take one).
        for (serving, kept) in self.serving.iter_mut().zip(&keep) {
            if !kept {
                serving.stop_accepting().await;
                if !change.restarted.contains(&serving.runtime.config.name) {
                    change.stopped.push(serving.runtime.config.name.clone());
                }
            }
        }
        let mut bound = Vec::new();
        for runtime in to_bind {
            match bind(Arc::new(runtime), self.workers.len()) {
                Ok(one) => bound.push(one),
                Err(error) => {
                    // Back to the old configuration: rebind what was stopped.
                    for (serving, kept) in self.serving.iter_mut().zip(&keep) {
                        if !kept {
                            match bind(serving.runtime.clone(), self.workers.len()) {
                                Ok(again) => {
                                    *serving = start_serving(
                                        again,
                                        &self.workers,
                                        self.drain_timeout,
                                        &self.telemetry,
                                    )
                                }
                                Err(rebind) => tracing::error!(
                                    "config reload: cannot rebind listener \"{}\": {rebind}",
                                    serving.runtime.config.name
                                ),
                            }
                        }
                    }
                    return Err(error);
                }
            }
        }
        let old = std::mem::take(&mut self.serving);
        self.serving = old
            .into_iter()
            .zip(keep)
            .filter_map(|(serving, kept)| kept.then_some(serving))
            .collect();
        // (Stopped listeners were dropped above: their tasks drain on by themselves.)
        self.serving.extend(
            bound
                .into_iter()
                .map(|b| start_serving(b, &self.workers, self.drain_timeout, &self.telemetry)),
        );
        self.publish();
        // The watcher follows the new set of files; the old one ends before the new starts.
        let _ = self.reload_stop.send(true);
        let (reload_stop, stopped) = watch::channel(false);
        let (reload, reload_task) = reload::spawn(self.runtimes(), stopped);
        let old_task = std::mem::replace(&mut self.reload_task, reload_task);
        let _ = old_task.await;
        self.reload = reload;
        self.reload_stop = reload_stop;
        Ok(change)
    }

    fn runtimes(&self) -> Vec<Arc<ListenerRuntime>> {
        self.serving.iter().map(|s| s.runtime.clone()).collect()
    }

    fn publish(&self) {
        let current = self
            .serving
            .iter()
            .map(|s| (s.runtime.clone(), s.address))
            .collect();
        *self.listeners.write().unwrap_or_else(|p| p.into_inner()) = current;
    }
}

/// A prepared listener with its sockets bound, one per worker.
struct Bound {
    runtime: Arc<ListenerRuntime>,
    sockets: Vec<std::net::TcpListener>,
    address: SocketAddr,
}

/// Binds `runtime`'s address once for each of `workers`. Needs a tokio runtime.
fn bind(runtime: Arc<ListenerRuntime>, workers: usize) -> Result<Bound, ConfigError> {
    let config = &runtime.config;
    let listen = &config.listen;
    let sockets = workers::bind(listen.value, workers).map_err(|e| {
        ConfigError::at(
            &listen.origin,
            format!(
                "listener \"{}\": cannot listen on {}: {e}",
                config.name, listen.value
            ),
        )
    })?;
    let address = sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .unwrap_or(listen.value);
    Ok(Bound {
        runtime,
        sockets,
        address,
    })
}

/// Starts accepting on a bound listener, each socket on its own worker.
fn start_serving(
    bound: Bound,
    workers: &workers::Workers,
    drain_timeout: Duration,
    telemetry: &metrics::Telemetry,
) -> Serving {
    let Bound {
        runtime,
        sockets,
        address,
    } = bound;
    log_listening(&runtime.config, address, sockets.len());
    runtime.tls.publish_expiry(true);
    let (stop, stopped) = watch::channel(false);
    let mut socket_closed = Vec::new();
    let mut tasks = Vec::new();
    for (index, (socket, worker)) in sockets.into_iter().zip(workers.handles()).enumerate() {
        let on_worker = match index {
            0 => runtime.clone(),
            _ => Arc::new(runtime.worker(index, telemetry)),
        };
        let (closed, closed_signal) = tokio::sync::oneshot::channel();
        socket_closed.push(closed_signal);
        let stopped = stopped.clone();
        tasks.push(worker.spawn(async move {
            // Registered with this worker's reactor: its connections are served here.
            match tokio::net::TcpListener::from_std(socket) {
                Ok(tcp) => on_worker.serve(tcp, stopped, drain_timeout, closed).await,
                Err(error) => tracing::error!(
                    "listener \"{}\": worker {index} cannot accept on {address}: {error}",
                    on_worker.config.name
                ),
            }
        }));
    }
    Serving {
        runtime,
        address,
        stop,
        socket_closed,
        tasks,
    }
}

/// The start-up line of a listener: where it listens, what it forwards to, how it verifies.
fn log_listening(config: &config::ListenerConfig, address: SocketAddr, workers: usize) {
    let tls_note = match &config.mode {
        config::ModeConfig::Server(server) => format!(
            ", {}, client certificates {}, verify depth {}",
            tls::describe_versions(&config.tls),
            server.verify_client,
            config.verify_depth
        ),
        config::ModeConfig::Client(_) => format!(
            ", upstream {}, verify depth {}",
            tls::describe_versions(&config.tls),
            config.verify_depth
        ),
    };
    tracing::info!(
        "listener \"{}\" ({} mode) listening on {address}, forwarding to {}{tls_note}, {workers} worker{}",
        config.name,
        config.mode(),
        config.upstream_display(),
        if workers == 1 { "" } else { "s" }
    );
}

/// Prepares, binds and starts every listener of `config`: all are bound before any serves,
/// so a port in use fails the start with nothing half-running.
pub async fn start(
    config: &Config,
    drain_timeout: Duration,
    workers: usize,
    telemetry: &metrics::Telemetry,
) -> Result<Running, ConfigError> {
    let (runtimes, warnings) = prepare(config, telemetry)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let mut bound = Vec::new();
    for runtime in runtimes {
        bound.push(bind(Arc::new(runtime), workers.max(1))?);
    }
    let workers = workers::Workers::start(workers)
        .map_err(|e| ConfigError::general(format!("cannot start {workers} worker threads: {e}")))?;
    let serving: Vec<Serving> = bound
        .into_iter()
        .map(|b| start_serving(b, &workers, drain_timeout, telemetry))
        .collect();
    let (reload_stop, stopped) = watch::channel(false);
    let (reload, reload_task) =
        reload::spawn(serving.iter().map(|s| s.runtime.clone()).collect(), stopped);
    let running = Running {
        serving,
        listeners: Arc::default(),
        reload,
        reload_stop,
        reload_task,
        drain_timeout,
        telemetry: telemetry.clone(),
        workers,
    };
    running.publish();
    Ok(running)
}
