//! The HTTP proxy as a [`ConnectionHandler`]: serves HTTP/1.1 and HTTP/2 on an accepted
//! connection under its deadlines (`connection.rs`) and hands each request to the
//! listener's [`Proxy`].

use super::Proxy;
use crate::config::ListenerConfig;
use crate::connection::{Closed, HttpServer};
use crate::listener::{Accepted, ConnectionHandler};
use crate::metrics::Telemetry;
use crate::tls::store::TlsStore;
use hyper::service::service_fn;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One listener's HTTP serving: the server settings and the proxy requests go to.
pub struct HttpProxy {
    listener: String,
    /// For the log line of a connection closed without a request.
    header_timeout: Duration,
    http: HttpServer,
    proxies: Proxies,
}

/// The proxy a request goes to.
enum Proxies {
    /// Server mode: the upstream pool does not depend on certificates, so a reload keeps it
    /// warm.
    Fixed(Arc<Proxy>),
    /// Client mode: the pool's connections carry the client certificate, so each TLS
    /// snapshot gets its own pool. It is made by the first request that finds a new snapshot
    /// (on the worker that will use it), and the old pool goes away with the last request
    /// using it. Looked up per request, so that after a reload even a long-lived keep-alive
    /// connection moves to the new pool.
    PerSnapshot {
        tls: Arc<TlsStore>,
        config: Box<ListenerConfig>,
        telemetry: Telemetry,
        /// This worker's proxy for the current snapshot. Per worker, so its lock is
        /// uncontended; a request finds the snapshot unchanged by one atomic read of the
        /// store's generation.
        built: RwLock<Built>,
    },
}

/// A proxy, the client TLS config it was made with, and the generation of the store it was
/// last found current at.
struct Built {
    generation: u64,
    client_tls: Arc<rustls::ClientConfig>,
    proxy: Arc<Proxy>,
}

impl Proxies {
    fn current(&self) -> Arc<Proxy> {
        let (tls, config, telemetry, built) = match self {
            Proxies::Fixed(proxy) => return proxy.clone(),
            Proxies::PerSnapshot {
                tls,
                config,
                telemetry,
                built,
            } => (tls, config, telemetry, built),
        };
        let generation = tls.generation();
        {
            let built = read(built);
            if built.generation == generation {
                return built.proxy.clone();
            }
        }
        let Some(client_tls) = tls.current().client_tls.clone() else {
            // A client-mode snapshot always has a client config; keep what there is.
            return read(built).proxy.clone();
        };
        let mut built = built.write().unwrap_or_else(|p| p.into_inner());
        // A reload may have kept the client config; or another request made the proxy.
        if !Arc::ptr_eq(&built.client_tls, &client_tls) {
            built.proxy = Arc::new(Proxy::new(config, Some(client_tls.clone()), telemetry));
            built.client_tls = client_tls;
        }
        // Read before the snapshot: if a swap came between, the next request looks again.
        built.generation = generation;
        built.proxy.clone()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

impl HttpProxy {
    /// The HTTP handler of `config`, its proxy made with `tls`'s current snapshot.
    pub fn new(config: &ListenerConfig, tls: &Arc<TlsStore>, telemetry: &Telemetry) -> HttpProxy {
        let generation = tls.generation();
        let client_tls = tls.current().client_tls.clone();
        let proxy = Arc::new(Proxy::new(config, client_tls.clone(), telemetry));
        let proxies = match client_tls {
            None => Proxies::Fixed(proxy),
            Some(client_tls) => Proxies::PerSnapshot {
                tls: tls.clone(),
                config: Box::new(config.clone()),
                telemetry: telemetry.clone(),
                built: RwLock::new(Built {
                    generation,
                    client_tls,
                    proxy,
                }),
            },
        };
        HttpProxy {
            listener: config.name.clone(),
            header_timeout: config.client_limits.header_timeout,
            http: HttpServer::new(&config.client_limits),
            proxies,
        }
    }

    async fn serve_http(self: Arc<Self>, connection: Accepted) {
        let Accepted {
            stream,
            mut info,
            drain,
            open,
        } = connection;
        // The identity headers are fixed for the connection, by the rules in use when it
        // was made.
        if let Some(tls) = &mut info.tls {
            if let Some(peer) = &tls.peer {
                tls.identity_headers = self.proxies.current().edits.identity_headers(peer);
            }
        }
        let info = Arc::new(info);
        let remote = info.remote;
        let this = self.clone();
        let service =
            service_fn(move |request| this.proxies.current().handle(request, info.clone()));
        let (closed, result) = self
            .http
            .serve_accepted(stream, &open, service, drain)
            .await;
        let name = &self.listener;
        match (closed, result) {
            (Closed::NoRequest, _) => tracing::debug!(
                "listener \"{name}\": closed the connection from {remote}: no request within client_header_timeout ({:?})",
                self.header_timeout
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

impl ConnectionHandler for HttpProxy {
    fn serve(self: Arc<Self>, connection: Accepted) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.serve_http(connection))
    }
}
