//! When to re-read certificate files: on a change seen by inotify (through `notify`), on a
//! periodic check as a fallback (network filesystems, missed events), and on request
//! (SIGHUP, `POST /reload`). Each check is cheap when nothing changed: a listener compares a
//! hash of its files' contents and does nothing if it is the same.
//!
//! Directories are watched, not files, so every way files really change is seen: written in
//! place, written elsewhere and renamed over (editors, certbot), and Kubernetes secret volumes,
//! where the `..data` symlink is swapped to a new timestamped directory.
//!
//! A file written in place is read only once it has been quiet for [`QUIET`]: a chain file
//! written leaf first and its intermediate a second later must not be served as a lone leaf
//! in between. The periodic check waits the same way (the files must read the same at two
//! checks in a row, see [`crate::tls::store::TlsStore::poll`]); a request is explicit and
//! reads at once.
//!
//! `CERTGATE_RELOAD_WATCH=off` ([`WATCH_ENV`]) leaves only the requests, for tests and
//! debugging.

use crate::listener::ListenerRuntime;
use notify::Watcher;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often files are checked even without a change notification.
pub const FALLBACK_INTERVAL: Duration = Duration::from_secs(2);
/// Set to `off`, files are re-read only on request (SIGHUP, `POST /reload`): no watching and
/// no periodic check. For tests and debugging, to see that a request by itself reloads; not
/// for production, where a missed renewal would go unnoticed.
pub const WATCH_ENV: &str = "CERTGATE_RELOAD_WATCH";
/// How often certificates close to expiry are warned about again.
const EXPIRY_WARNING_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the watched directories must be free of change events before changed files are
/// read: long enough for a writer that puts a chain together in several writes.
pub const QUIET: Duration = Duration::from_secs(2);

/// Asks every listener to check its files now (SIGHUP, `POST /reload`).
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<()>);

impl ReloadHandle {
    pub fn request(&self) {
        let _ = self.0.try_send(());
    }
}

/// Why the listeners' files are checked.
#[derive(Clone, Copy)]
enum Check {
    /// Asked for, or the files have been quiet since their last change event: read them.
    Now,
    /// The periodic check: read changed files only when they read the same as last time.
    Poll,
    /// The timer, with the periodic check turned off ([`WATCH_ENV`]).
    Nothing,
}

/// Starts the watcher and the fallback timer for `listeners`; stops with `shutdown`.
pub fn spawn(
    listeners: Vec<Arc<ListenerRuntime>>,
    mut shutdown: watch::Receiver<bool>,
) -> (ReloadHandle, tokio::task::JoinHandle<()>) {
    let (sender, mut requests) = mpsc::channel::<()>(16);
    let handle = ReloadHandle(sender);
    let (events_sender, mut events) = mpsc::channel::<()>(16);
    let directories: BTreeSet<PathBuf> = listeners
        .iter()
        .flat_map(|l| l.config.files())
        .filter_map(|file| file.parent().map(|d| d.to_path_buf()))
        .map(|d| {
            if d.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                d
            }
        })
        .collect();
    let watching = std::env::var_os(WATCH_ENV).is_none_or(|value| value != "off");
    if !watching {
        tracing::warn!(
            "{WATCH_ENV}=off: certificate files are re-read only on SIGHUP or POST /reload, not when they change"
        );
    }
    let task = tokio::spawn(async move {
        // Kept alive for as long as the task runs; dropping it stops the notifications.
        let _watcher = watching.then(|| watch_directories(&directories, events_sender));
        let mut fallback = tokio::time::interval(FALLBACK_INTERVAL);
        fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Not watching, the timer still wakes the loop for the daily expiry warning.
        let fallback_check = if watching {
            Check::Poll
        } else {
            Check::Nothing
        };
        let mut last_expiry_warning = tokio::time::Instant::now();
        // When the last change event is QUIET old; None without one pending.
        let mut quiet_at: Option<tokio::time::Instant> = None;
        for listener in &listeners {
            listener.tls.warn_expiring();
        }
        loop {
            let quiet = async {
                match quiet_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let check = tokio::select! {
                Some(()) = requests.recv() => {
                    while requests.try_recv().is_ok() {}
                    Check::Now
                }
                Some(()) = events.recv() => {
                    quiet_at = Some(tokio::time::Instant::now() + QUIET);
                    continue;
                }
                _ = quiet => {
                    quiet_at = None;
                    Check::Now
                }
                _ = fallback.tick() => fallback_check,
                _ = shutdown.changed() => break,
            };
            for listener in &listeners {
                let listener = listener.clone();
                // Reading and parsing files is blocking work.
                let _ = match check {
                    Check::Now => tokio::task::spawn_blocking(move || listener.tls.reload()).await,
                    Check::Poll => tokio::task::spawn_blocking(move || listener.tls.poll()).await,
                    Check::Nothing => continue,
                };
            }
            if last_expiry_warning.elapsed() >= EXPIRY_WARNING_INTERVAL {
                last_expiry_warning = tokio::time::Instant::now();
                for listener in &listeners {
                    listener.tls.warn_expiring();
                }
            }
        }
    });
    (handle, task)
}

fn watch_directories(
    directories: &BTreeSet<PathBuf>,
    sender: mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = sender.try_send(());
            }
        }) {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::warn!(
                    "cannot watch certificate files ({error}); checking them every {}s instead",
                    FALLBACK_INTERVAL.as_secs()
                );
                return None;
            }
        };
    for directory in directories {
        if let Err(error) = watcher.watch(directory, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(
                "cannot watch {} ({error}); checking it every {}s instead",
                directory.display(),
                FALLBACK_INTERVAL.as_secs()
            );
        }
    }
    Some(watcher)
}
