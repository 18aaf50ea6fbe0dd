//! certgate: a mutual-TLS proxy.
//!
//! Data flows one way: [`config`] turns raw input into a validated [`config::Config`];
//! [`tls`] turns it into rustls configurations; [`listener`] accepts connections and hands
//! each request to [`proxy`], which edits headers and forwards upstream.

#![forbid(unsafe_code)]

pub mod access;
pub mod access_log;
pub mod admin;
pub mod config;
pub mod demo;
pub mod echo;
pub mod listener;
pub mod metrics;
pub mod pki;
pub mod proxy;
pub mod reload;
pub mod tls;

use config::{Config, ConfigError};
use listener::ListenerRuntime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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

/// A started set of listeners.
pub struct Running {
    /// Each listener's name and the address it is bound to (port 0 resolved).
    pub addresses: Vec<(String, SocketAddr)>,
    /// The listeners and their addresses, for the admin listener.
    pub listeners: Vec<(Arc<ListenerRuntime>, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    reload: reload::ReloadHandle,
}

impl Running {
    /// Stops accepting, lets open requests finish (up to the drain timeout), and returns.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Asks every listener to re-read its certificate files now (SIGHUP).
    pub fn reload(&self) {
        self.reload.request();
    }

    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }
}

/// Prepares, binds and starts every listener of `config`.
pub async fn start(
    config: &Config,
    drain_timeout: Duration,
    telemetry: &metrics::Telemetry,
) -> Result<Running, ConfigError> {
    let (runtimes, warnings) = prepare(config, telemetry)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let mut bound = Vec::new();
    for runtime in runtimes {
        let listen = &runtime.config.listen;
        let tcp = tokio::net::TcpListener::bind(listen.value)
            .await
            .map_err(|e| {
                ConfigError::at(
                    &listen.origin,
                    format!(
                        "listener \"{}\": cannot listen on {}: {e}",
                        runtime.config.name, listen.value
                    ),
                )
            })?;
        bound.push((runtime, tcp));
    }
    let (shutdown, watch_shutdown) = watch::channel(false);
    let mut addresses = Vec::new();
    let mut tasks = Vec::new();
    let bound: Vec<(Arc<ListenerRuntime>, tokio::net::TcpListener)> =
        bound.into_iter().map(|(r, t)| (Arc::new(r), t)).collect();
    let (reload, reload_task) = reload::spawn(
        bound.iter().map(|(r, _)| r.clone()).collect(),
        watch_shutdown.clone(),
    );
    tasks.push(reload_task);
    let mut listeners = Vec::new();
    for (runtime, tcp) in bound {
        let address = tcp.local_addr().unwrap_or(runtime.config.listen.value);
        listeners.push((runtime.clone(), address));
        let config = &runtime.config;
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
            "listener \"{}\" ({} mode) listening on {address}, forwarding to {}{tls_note}",
            config.name,
            config.mode(),
            config.upstream_display()
        );
        addresses.push((config.name.clone(), address));
        tasks.push(tokio::spawn(runtime.serve(
            tcp,
            watch_shutdown.clone(),
            drain_timeout,
        )));
    }
    Ok(Running {
        addresses,
        listeners,
        shutdown,
        tasks,
        reload,
    })
}
