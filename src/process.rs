//! A serving process (`certgate server`, `client` and `run`): the access log, the listeners,
//! the admin listener and the signals, from start to drained stop. `main.rs` only turns
//! arguments into a [`Config`] and [`ProcessSettings`] and an error into an exit code.

use crate::access_log::{self, AccessLogChoice, AccessLogError};
use crate::admin::{self, AdminError, AdminSettings};
use crate::config::{self, Config, ConfigError, Format};
use crate::metrics::Telemetry;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Process-wide settings of the serving commands, from the global flags.
#[derive(Clone, Debug)]
pub struct ProcessSettings {
    /// How long open requests may take to finish after SIGTERM or SIGINT.
    pub drain_timeout: Duration,
    /// `--admin`, as given: checked (with `--admin-host`) when the process starts.
    pub admin: Option<String>,
    /// `--admin-host`, as given.
    pub admin_hosts: Vec<String>,
    /// `--access-log` and `--access-log-file`; without them the config's `access_log`.
    pub access_log: Option<AccessLogChoice>,
    /// `--pkcs11-module`: given to every config the process loads (a reloaded one too) for
    /// the token keys whose URI names no module.
    pub pkcs11_module: Option<PathBuf>,
    /// `--workers`: serving threads; without it the config's (nginx `worker_processes`), or
    /// one per CPU the process may use.
    pub workers: Option<usize>,
}

/// Why a serving process could not start; each variant says which setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The SIGHUP handler could not be installed.
    #[error(transparent)]
    Signal(std::io::Error),
    /// A listener could not be loaded or bound.
    #[error(transparent)]
    Start(#[from] ConfigError),
}

/// Serves `config` until SIGTERM or SIGINT, then drains. SIGHUP re-reads every listener's
/// certificate files and, with `config_file` (`certgate run`), the configuration itself.
pub async fn run(
    config: Config,
    config_file: Option<(&Path, Option<Format>)>,
    settings: &ProcessSettings,
) -> Result<(), ProcessError> {
    let drain_timeout = settings.drain_timeout;
    let mut telemetry = Telemetry::new();
    telemetry.access_log = access_log::open_chosen(settings.access_log.as_ref(), &config)?;
    let admin = AdminSettings::from_flags(settings.admin.as_deref(), &settings.admin_hosts)?;
    // Signal handlers first: a SIGHUP or SIGTERM sent as soon as "listening" is logged must
    // find them in place.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(ProcessError::Signal)?;
    let stop = stop_signal();
    let workers = settings
        .workers
        .or(config.workers.as_ref().map(|w| w.value))
        .unwrap_or_else(crate::workers::default_count);
    let mut running = crate::start(&config, drain_timeout, workers, &telemetry).await?;
    let (admin_stop, admin_stopped) = tokio::sync::watch::channel(false);
    if let Some(admin) = &admin {
        admin::start(
            admin,
            running.listeners.clone(),
            telemetry.metrics.clone(),
            admin_stopped,
        )
        .await?;
    }
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: re-reading certificate files");
                running.reload();
                if let Some((path, format)) = config_file {
                    reload_config(&mut running, path, format, settings.pkcs11_module.as_deref())
                        .await;
                }
            }
        }
    }
    tracing::info!(
        "stopping: no new connections; open requests get up to {}s to finish",
        drain_timeout.as_secs()
    );
    let _ = admin_stop.send(true);
    running.stop().await;
    Ok(())
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM). The handlers are
/// installed by the call itself, not when the future is first polled, so that a signal that
/// arrives while listeners start is handled rather than killing the process.
pub fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Re-reads the `run` config after SIGHUP and moves to it, or says why not.
async fn reload_config(
    running: &mut crate::Running,
    path: &Path,
    format: Option<Format>,
    pkcs11_module: Option<&Path>,
) {
    let loaded =
        config::load_file(path, format).map(|c| c.with_default_pkcs11_module(pkcs11_module));
    let applied = match loaded {
        Ok(config) => running.apply(&config).await,
        Err(error) => Err(error),
    };
    match applied {
        Ok(change) => tracing::info!(
            "SIGHUP: applied {}: kept {:?}, restarted {:?}, started {:?}, stopped {:?}",
            path.display(),
            change.kept,
            change.restarted,
            change.started,
            change.stopped
        ),
        Err(error) => tracing::error!(
            "SIGHUP: refused {}, the running configuration stays: {error}",
            path.display()
        ),
    }
}
