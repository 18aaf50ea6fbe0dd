//! Prometheus metrics: what an operator alerts on. One [`Metrics`] is made by the caller and
//! passed down to listeners, proxies and connectors; `/metrics` on the admin listener reads it.
//!
//! Label values are bounded: listener names and routes come from the config, handshake
//! failure reasons from a fixed list ([`crate::tls::explain::reason_label`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};
use std::sync::{Arc, OnceLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

/// A listener on one worker thread (see `--workers`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub listener: String,
    /// The worker's number, from 0.
    pub worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    /// The matched route's path prefix, or "" for the listener's default upstream.
    pub route: String,
    /// "2xx", "3xx", "4xx" or "5xx".
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub listener: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub listener: String,
    /// "server", "client" or "ca".
    pub role: String,
    pub subject: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 us to ~26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Registers each metric where it is made, so its field, name and help are one entry.
struct Registrar<'a>(&'a mut Registry);

impl Registrar<'_> {
    fn metric<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

/// Every metric certgate exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<ListenerLabel>,
    pub handshakes: Family<ResultLabels, Counter>,
    pub resumed_handshakes: Family<ListenerLabel, Counter>,
    pub active_connections: Family<ListenerLabel, Gauge>,
    pub connections: Family<WorkerLabels, Counter>,
    pub upstream_connect_duration: HistogramFamily<ListenerLabel>,
    pub upstream_errors: Family<ListenerLabel, Counter>,
    pub upstream_connections: Family<ListenerLabel, Gauge>,
    pub reloads: Family<ResultLabels, Counter>,
    pub certificate_not_after: Family<CertificateLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("certgate");
        let mut add = Registrar(&mut registry);
        // Registration order is the exposition's order.
        Arc::new(Metrics {
            requests: add.metric(
                "requests",
                "Requests by listener, route and status class",
                Family::default(),
            ),
            request_duration: add.metric(
                "request_duration_seconds",
                "Time from request to response headers",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
            handshakes: add.metric(
                "handshakes",
                "TLS handshakes by listener and result (ok or the failure reason)",
                Family::default(),
            ),
            resumed_handshakes: add.metric(
                "resumed_handshakes",
                "TLS handshakes that resumed a session",
                Family::default(),
            ),
            active_connections: add.metric(
                "active_connections",
                "Open downstream connections",
                Family::default(),
            ),
            connections: add.metric(
                "connections",
                "Downstream connections accepted, by listener and worker thread",
                Family::default(),
            ),
            upstream_connect_duration: add.metric(
                "upstream_connect_duration_seconds",
                "Time to connect to the upstream (TLS included in client mode)",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
            upstream_errors: add.metric(
                "upstream_errors",
                "Requests that failed because of the upstream",
                Family::default(),
            ),
            upstream_connections: add.metric(
                "upstream_connections",
                "Open upstream connections, pooled or in use",
                Family::default(),
            ),
            reloads: add.metric(
                "reloads",
                "Certificate reloads by listener and result (ok or failed)",
                Family::default(),
            ),
            certificate_not_after: add.metric(
                "certificate_not_after_timestamp_seconds",
                "notAfter of every loaded certificate, as a Unix timestamp",
                Family::default(),
            ),
            registry,
        })
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub fn listener(name: &str) -> ListenerLabel {
        ListenerLabel {
            listener: name.to_string(),
        }
    }
}

/// What listeners report to: metrics always, an access log when configured. Made by the
/// caller and passed down, so tests and embedders choose where reports go.
#[derive(Clone)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
}

impl Telemetry {
    /// Metrics only.
    pub fn new() -> Telemetry {
        Telemetry {
            metrics: Metrics::new(),
            access_log: None,
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

/// Counts an open connection for as long as it lives.
pub struct ConnectionGauge(Gauge);

impl ConnectionGauge {
    pub fn open(gauge: Gauge) -> ConnectionGauge {
        gauge.inc();
        ConnectionGauge(gauge)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One listener's per-request metrics on one worker, each series looked up in its family
/// once, on first use (so `/metrics` shows only series that happened): a request then
/// increments what it already holds instead of building a label set (three strings) and
/// taking each family's lock, which every worker would share.
pub struct RequestMetrics {
    metrics: Arc<Metrics>,
    listener: String,
    /// Per route ("" first: the listener's own upstream), a counter per status class
    /// (1xx to 5xx).
    requests: Vec<(String, [OnceLock<Counter>; 5])>,
    duration: OnceLock<Histogram>,
    upstream_errors: OnceLock<Counter>,
}

impl RequestMetrics {
    pub fn new<'r>(
        metrics: &Arc<Metrics>,
        listener: &str,
        routes: impl Iterator<Item = &'r str>,
    ) -> RequestMetrics {
        RequestMetrics {
            metrics: metrics.clone(),
            listener: listener.to_string(),
            requests: std::iter::once("")
                .chain(routes)
                .map(|route| (route.to_string(), Default::default()))
                .collect(),
            duration: OnceLock::new(),
            upstream_errors: OnceLock::new(),
        }
    }

    /// A request answered with `status` after `elapsed`, on `route` ("" for none).
    pub fn request(&self, route: &str, status: u16, elapsed: std::time::Duration) {
        let class = usize::from(status / 100);
        let slot = self
            .requests
            .iter()
            .find(|(r, _)| r == route)
            .and_then(|(_, classes)| classes.get(class.wrapping_sub(1)));
        let labels = || RequestLabels {
            listener: self.listener.clone(),
            route: route.to_string(),
            status: format!("{class}xx"),
        };
        match slot {
            Some(slot) => slot
                .get_or_init(|| self.metrics.requests.get_or_create_owned(&labels()))
                .inc(),
            // A status beyond 5xx (hyper allows up to 999): looked up each time.
            None => self.metrics.requests.get_or_create(&labels()).inc(),
        };
        self.duration
            .get_or_init(|| {
                self.metrics
                    .request_duration
                    .get_or_create_owned(&Metrics::listener(&self.listener))
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A request that failed on the upstream's side.
    pub fn upstream_error(&self) {
        self.upstream_errors
            .get_or_init(|| {
                self.metrics
                    .upstream_errors
                    .get_or_create_owned(&Metrics::listener(&self.listener))
            })
            .inc();
    }
}
