//! The admin listener (off unless `--admin ADDR`): health, readiness, status, metrics,
//! reload, and a status page for a person.
//!
//! | route | answers |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when every upstream accepts a TCP connection, else 503 naming which |
//! | `GET /status` | JSON: version, uptime, listeners, certificates with days left, last reload |
//! | `GET /metrics` | Prometheus (OpenMetrics text) |
//! | `POST /reload` | re-reads every listener's certificate files; JSON outcome per listener |
//! | `GET /` | the status as an HTML page |

use crate::config::{HttpUpstream, ModeConfig};
use crate::listener::{ListenerRuntime, EXPIRY_WARNING_DAYS};
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long `/readyz` waits for each upstream to accept a connection.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// What the admin listener reports on.
pub struct AdminState {
    pub listeners: crate::ListenerSet,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

impl AdminState {
    /// The listeners being served now (a config reload may change them).
    fn current(&self) -> Vec<(Arc<ListenerRuntime>, SocketAddr)> {
        self.listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The JSON document of `/status`.
    pub fn status(&self) -> serde_json::Value {
        let now = now_unix();
        let listeners: Vec<serde_json::Value> = self
            .current()
            .iter()
            .map(|(runtime, address)| {
                let config = &runtime.config;
                let (certificates, last_reload) = runtime.status();
                let certificates: Vec<serde_json::Value> = certificates
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "role": c.role,
                            "subject": c.subject,
                            "issuer": c.issuer,
                            "sans": c.sans,
                            "not_after": c.not_after,
                            "days_left": c.days_left(now),
                            "file": c.file,
                        })
                    })
                    .collect();
                let last_reload = last_reload.map(|(at, outcome)| {
                    serde_json::json!({
                        "at": at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default(),
                        "result": outcome,
                    })
                });
                serde_json::json!({
                    "name": config.name,
                    "address": address.to_string(),
                    "mode": config.mode().to_string(),
                    "upstream": config.upstream_display(),
                    "certificates": certificates,
                    "last_reload": last_reload,
                })
            })
            .collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "listeners": listeners,
        })
    }

    /// Every upstream that does not accept a TCP connection, with the reason.
    async fn unready(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (runtime, _) in &self.current() {
            let config = &runtime.config;
            let result = match &config.mode {
                ModeConfig::Server(server) => match &server.upstream {
                    HttpUpstream::Tcp { authority } => connect_tcp(authority).await,
                    HttpUpstream::Unix(path) => {
                        tokio::time::timeout(READY_TIMEOUT, tokio::net::UnixStream::connect(path))
                            .await
                            .map_err(|_| "timed out".to_string())
                            .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()))
                    }
                },
                ModeConfig::Client(client) => connect_tcp(&client.upstream_authority).await,
            };
            if let Err(reason) = result {
                problems.push(format!(
                    "listener \"{}\": upstream {} unreachable: {reason}",
                    config.name,
                    config.upstream_display()
                ));
            }
        }
        problems
    }

    async fn reload(&self) -> serde_json::Value {
        let mut outcomes = serde_json::Map::new();
        for (runtime, _) in &self.current() {
            let runtime = runtime.clone();
            let name = runtime.config.name.clone();
            let outcome = tokio::task::spawn_blocking(move || runtime.reload())
                .await
                .ok();
            outcomes.insert(name, serde_json::json!(outcome));
        }
        serde_json::Value::Object(outcomes)
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        const TEXT: &str = "text/plain; charset=utf-8";
        const JSON: &str = "application/json";
        Ok(match (request.method(), request.uri().path()) {
            (&Method::GET, "/healthz") => respond(StatusCode::OK, TEXT, "ok\n".into()),
            (&Method::GET, "/readyz") => {
                let problems = self.unready().await;
                if problems.is_empty() {
                    respond(StatusCode::OK, TEXT, "ready\n".into())
                } else {
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        format!("not ready:\n{}\n", problems.join("\n")),
                    )
                }
            }
            (&Method::GET, "/status") => {
                respond(StatusCode::OK, JSON, format!("{:#}\n", self.status()))
            }
            (&Method::GET, "/metrics") => respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(),
            ),
            (&Method::POST, "/reload") => {
                respond(StatusCode::OK, JSON, format!("{:#}\n", self.reload().await))
            }
            (&Method::GET, "/") => respond(StatusCode::OK, "text/html; charset=utf-8", self.page()),
            (_, "/reload") => respond(
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "use POST /reload\n".into(),
            ),
            _ => respond(
                StatusCode::NOT_FOUND,
                TEXT,
                "not found; try /, /healthz, /readyz, /status, /metrics or POST /reload\n".into(),
            ),
        })
    }

    /// The status for a person: certificates by days left, those inside the warning window
    /// in red, and the request and handshake counters.
    fn page(&self) -> String {
        let now = now_unix();
        let mut rows: Vec<(i64, String)> = Vec::new();
        for (runtime, _) in &self.current() {
            for cert in runtime.status().0 {
                let days = cert.days_left(now);
                let class = if days < EXPIRY_WARNING_DAYS {
                    " class=\"expiring\""
                } else {
                    ""
                };
                rows.push((
                    days,
                    format!(
                        "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{days}</td><td>{}</td></tr>",
                        escape(&runtime.config.name),
                        cert.role,
                        escape(&cert.subject),
                        escape(&cert.issuer),
                        escape(&cert.file.display().to_string()),
                    ),
                ));
            }
        }
        rows.sort_by_key(|(days, _)| *days);
        let listeners: String = self
            .current()
            .iter()
            .map(|(runtime, address)| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{address}</td><td>{}</td></tr>",
                    escape(&runtime.config.name),
                    runtime.config.mode(),
                    escape(&runtime.config.upstream_display())
                )
            })
            .collect();
        let counters: String = self
            .metrics
            .encode()
            .lines()
            .filter(|l| {
                l.starts_with("certgate_requests_total")
                    || l.starts_with("certgate_handshakes_total")
            })
            .map(|l| format!("{}\n", escape(l)))
            .collect();
        let counters = if counters.is_empty() {
            "no requests or handshakes yet\n".to_string()
        } else {
            counters
        };
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>certgate status</title><style>\
             body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
             tr.expiring td{{color:#b00;font-weight:bold}}</style></head><body>\
             <h1>certgate {}</h1><p>up {}s</p>\
             <h2>Listeners</h2><table><tr><th>name</th><th>mode</th><th>address</th><th>upstream</th></tr>{listeners}</table>\
             <h2>Certificates</h2><table id=\"certificates\"><tr><th>listener</th><th>role</th><th>subject</th><th>issuer</th><th>days left</th><th>file</th></tr>{}</table>\
             <h2>Counters</h2><pre>{counters}</pre></body></html>\n",
            env!("CARGO_PKG_VERSION"),
            self.started.elapsed().as_secs(),
            rows.into_iter().map(|(_, row)| row).collect::<String>(),
        )
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn connect_tcp(authority: &str) -> Result<(), String> {
    match tokio::time::timeout(READY_TIMEOUT, tokio::net::TcpStream::connect(authority)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {}s", READY_TIMEOUT.as_secs())),
    }
}

/// Serves the admin listener until `shutdown` flips.
pub async fn serve(tcp: TcpListener, state: Arc<AdminState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = tcp.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| state.clone().handle(request));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}
