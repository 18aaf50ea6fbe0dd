//! A listener's TLS material as one immutable snapshot: everything that depends on its
//! certificate, key, CA and CRL files, built and checked together and replaced whole by a
//! reload, so a connection sees either the old snapshot or the new one, never a mix. The
//! listener reads the current one per connection; a reload that finds the files changed and
//! sound publishes a new one, and one that finds them broken keeps the old one serving and
//! says why, once (a reload attempt is counted only when something changed).

use crate::config::{ConfigError, ListenerConfig, ModeConfig};
use crate::metrics::{CertificateLabels, Metrics, ResultLabels};
use crate::tls::{self, server::ServerTls};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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

/// Everything that depends on a listener's certificate files, built and checked together and
/// replaced whole: a connection sees either the old snapshot or the new one, never a mix.
///
/// Only TLS material: what a connection handler builds from it (client mode's upstream pool,
/// whose connections carry the client certificate) is the handler's, so that one snapshot
/// can be shared by every worker while each keeps its own pool.
pub struct Snapshot {
    /// Server mode: the TLS acceptor's configuration and client verification.
    pub server_tls: Option<ServerTls>,
    /// Client mode: the configuration upstream connections are made with. A new `Arc` per
    /// reload, so a handler tells by its address whether it built its pool for this one.
    pub client_tls: Option<Arc<rustls::ClientConfig>>,
    /// Hash of the files' contents when they were read.
    fingerprint: u64,
    /// The certificates loaded, for `/status` and the expiry metric.
    pub certificates: Vec<tls::CertificateInfo>,
    /// The chain this listener presents (leaf first) and its file, as read.
    chain: Option<(std::path::PathBuf, Vec<Vec<u8>>)>,
}

impl Snapshot {
    fn build(
        config: &ListenerConfig,
        fingerprint: u64,
        warnings: &mut Vec<String>,
    ) -> Result<Snapshot, ConfigError> {
        let (server_tls, client_tls) = match &config.mode {
            ModeConfig::Server(server) => (Some(ServerTls::build(config, server, warnings)?), None),
            ModeConfig::Client(client) => {
                (None, Some(tls::client::build(config, client, warnings)?))
            }
        };
        Ok(Snapshot {
            server_tls,
            client_tls,
            fingerprint,
            certificates: tls::certificates_of(config),
            chain: presented_chain(config),
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
    previous: Option<&Snapshot>,
    material: &Snapshot,
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

/// The current snapshot of one listener and what its reloads need. Shared (read-mostly) by
/// everything serving the listener; reloads, `/status` and the expiry metric use it directly.
pub struct TlsStore {
    config: ListenerConfig,
    metrics: Arc<Metrics>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Counts the snapshots swapped in, bumped after each swap: a worker that has what the
    /// snapshot gave it reads only this (written once per reload, so it stays in every
    /// core's cache) instead of taking the lock and the snapshot's reference count, which
    /// every worker's requests would share.
    generation: AtomicU64,
    /// The fingerprint of files that failed to load (or of the error reading them), so a
    /// broken file is reported and counted once, not on every check.
    refused: Mutex<Option<u64>>,
    /// What the periodic check last found the files to be, when not what is loaded: a
    /// change is loaded once two checks in a row find it (the file is no longer changing).
    polled: Mutex<Option<u64>>,
    reloading: Mutex<()>,
    /// When the last reload that changed something happened, and how it ended.
    last_reload: Mutex<Option<(std::time::SystemTime, ReloadOutcome)>>,
}

impl TlsStore {
    /// Loads and checks every file the listener needs.
    pub fn build(
        config: &ListenerConfig,
        metrics: &Arc<Metrics>,
        warnings: &mut Vec<String>,
    ) -> Result<TlsStore, ConfigError> {
        // Hashed before reading, so a change while loading shows as a change on the next
        // check; an unreadable file is reported by the load, naming its key or flag.
        let fingerprint = fingerprint(config).unwrap_or_default();
        let snapshot = Snapshot::build(config, fingerprint, warnings)?;
        Ok(TlsStore {
            config: config.clone(),
            metrics: metrics.clone(),
            snapshot: RwLock::new(Arc::new(snapshot)),
            generation: AtomicU64::new(0),
            refused: Mutex::new(None),
            polled: Mutex::new(None),
            reloading: Mutex::new(()),
            last_reload: Mutex::new(None),
        })
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

    /// Which snapshot is current: changes (grows) with every swap. Read it before
    /// [`TlsStore::current`]: what was made from that snapshot is then at least as new.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The snapshot new connections and requests use now.
    pub fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
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
        match Snapshot::build(&self.config, new_fingerprint, &mut warnings) {
            Ok(material) => {
                publish_expiry(&self.metrics, name, Some(&current), &material);
                if let (Some(previous), Some(new)) = (&current.chain, &material.chain) {
                    warnings.extend(chain_warning(&self.config.mode, previous, new));
                }
                for warning in warnings {
                    tracing::warn!("listener \"{name}\": {warning}");
                }
                *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(material);
                self.generation.fetch_add(1, Ordering::Release);
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
}
