//! When to re-read certificate files: on a change seen by inotify (through `notify`), on a
//! periodic check as a fallback (network filesystems, missed events), and on request
//! (SIGHUP). Each check is cheap when nothing changed: a listener compares a hash of its
//! files' contents and does nothing if it is the same.
//!
//! Directories are watched, not files, so every way files really change is seen: written in
//! place, written elsewhere and renamed over (editors, certbot), and Kubernetes secret volumes,
//! where the `..data` symlink is swapped to a new timestamped directory.

use crate::listener::ListenerRuntime;
use notify::Watcher;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often files are checked even without a change notification.
pub const FALLBACK_INTERVAL: Duration = Duration::from_secs(2);
/// How often certificates close to expiry are warned about again.
const EXPIRY_WARNING_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Events within this window are one change (a rename, a symlink swap, a multi-write save).
const SETTLE: Duration = Duration::from_millis(150);

/// Asks every listener to check its files now (SIGHUP, `POST /reload`).
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<()>);

impl ReloadHandle {
    pub fn request(&self) {
        let _ = self.0.try_send(());
    }
}

/// Starts the watcher and the fallback timer for `listeners`; stops with `shutdown`.
pub fn spawn(
    listeners: Vec<Arc<ListenerRuntime>>,
    mut shutdown: watch::Receiver<bool>,
) -> (ReloadHandle, tokio::task::JoinHandle<()>) {
    let (sender, mut requests) = mpsc::channel::<()>(16);
    let handle = ReloadHandle(sender.clone());
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
    let task = tokio::spawn(async move {
        // Kept alive for as long as the task runs; dropping it stops the notifications.
        let _watcher = watch_directories(&directories, sender);
        let mut fallback = tokio::time::interval(FALLBACK_INTERVAL);
        fallback.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry_warning = tokio::time::Instant::now();
        for listener in &listeners {
            listener.warn_expiring();
        }
        loop {
            tokio::select! {
                Some(()) = requests.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while requests.try_recv().is_ok() {}
                }
                _ = fallback.tick() => {}
                _ = shutdown.changed() => break,
            }
            for listener in &listeners {
                let listener = listener.clone();
                // Reading and parsing files is blocking work.
                let _ = tokio::task::spawn_blocking(move || listener.reload()).await;
            }
            if last_expiry_warning.elapsed() >= EXPIRY_WARNING_INTERVAL {
                last_expiry_warning = tokio::time::Instant::now();
                for listener in &listeners {
                    listener.warn_expiring();
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
