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

/// The listeners being served and their addresses, shared with the admin listener so that
/// it always reports the current set.
pub type ListenerSet = Arc<std::sync::RwLock<Vec<(Arc<ListenerRuntime>, SocketAddr)>>>;

/// One listener being served.
struct Serving {
    runtime: Arc<ListenerRuntime>,
    address: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
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
            let _ = serving.task.await;
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
    /// first: a bad configuration changes nothing. Listeners whose settings are the same keep
    /// running with their connections; changed ones are restarted (their open requests
    /// drain), removed ones stop, new ones start.
    pub async fn apply(&mut self, config: &Config) -> Result<ConfigChange, ConfigError> {
        let (runtimes, warnings) = prepare(config, &self.telemetry)?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        let mut change = ConfigChange::default();
        let mut old: Vec<Serving> = std::mem::take(&mut self.serving);
        let mut next = Vec::new();
        for runtime in runtimes {
            let name = runtime.config.name.clone();
            match old.iter().position(|s| s.runtime.config.name == name) {
                Some(index) if old[index].runtime.config.same_settings(&runtime.config) => {
                    next.push(old.remove(index));
                    change.kept.push(name);
                }
                Some(index) => {
                    // Free the address first: the new listener may bind the same one.
                    let previous = old.remove(index);
                    let _ = previous.stop.send(true);
                    let _ = previous.task.await;
                    next.push(serve(Arc::new(runtime), self.drain_timeout).await?);
                    change.restarted.push(name);
                }
                None => {
                    next.push(serve(Arc::new(runtime), self.drain_timeout).await?);
                    change.started.push(name);
                }
            }
        }
        for removed in old {
            let _ = removed.stop.send(true);
            change.stopped.push(removed.runtime.config.name.clone());
            tokio::spawn(removed.task);
        }
        self.serving = next;
        self.publish();
        // The watcher follows the new set of files.
        let _ = self.reload_stop.send(true);
        let (reload_stop, stopped) = watch::channel(false);
        let (reload, reload_task) = reload::spawn(self.runtimes(), stopped);
        self.reload = reload;
        self.reload_stop = reload_stop;
        self.reload_task = reload_task;
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

/// Binds one prepared listener and starts serving it.
async fn serve(
    runtime: Arc<ListenerRuntime>,
    drain_timeout: Duration,
) -> Result<Serving, ConfigError> {
    let config = &runtime.config;
    let listen = &config.listen;
    let tcp = tokio::net::TcpListener::bind(listen.value)
        .await
        .map_err(|e| {
            ConfigError::at(
                &listen.origin,
                format!(
                    "listener \"{}\": cannot listen on {}: {e}",
                    config.name, listen.value
                ),
            )
        })?;
    let address = tcp.local_addr().unwrap_or(listen.value);
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
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(runtime.clone().serve(tcp, stopped, drain_timeout));
    Ok(Serving {
        runtime,
        address,
        stop,
        task,
    })
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
    let mut serving: Vec<Serving> = Vec::new();
    for runtime in runtimes {
        match serve(Arc::new(runtime), drain_timeout).await {
            Ok(one) => serving.push(one),
            Err(error) => {
                // Nothing half-started: stop what was already bound.
                for started in serving {
                    let _ = started.stop.send(true);
                }
                return Err(error);
            }
        }
    }
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
    };
    running.publish();
    Ok(running)
}
