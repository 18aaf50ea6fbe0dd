//! Thread-per-core serving: one single-threaded tokio runtime per worker thread, each
//! accepting on its own listening socket, so that a connection, its requests and their
//! upstream exchanges never leave the thread that accepted it (no task handed between
//! threads, no work stealing: what nginx's worker processes do, in one process).
//!
//! - [`Workers`] starts the threads and hands out their runtimes' handles; the main runtime
//!   (signals, the admin listener, the reload watcher) stays on the process's main thread.
//! - [`bind`] makes one listening socket per worker on the same address: with more than one
//!   worker they share the port with `SO_REUSEPORT`, and the kernel spreads new connections
//!   over them by a hash of the connection's addresses.
//!
//! What a listener's workers share is touched per connection (its TLS snapshot, its
//! connection limit; see [`crate::listener::ListenerRuntime::worker`]) and, per request, only
//! the metrics (a counter and the duration histogram's lock) and the access log's writer.
//! Each worker has its own upstream pool, open-connection table and accept loop.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub use crate::config::MAX_WORKERS;
/// Pending connections the kernel queues per listening socket before refusing (tokio's and
/// Rust's own default for `bind`).
const BACKLOG: u32 = 1024;
/// On exit, how long a worker waits for its blocking tasks (a file read, a key operation).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// The number of workers by default: the CPUs this process may run on (its affinity mask
/// and cgroup quota included), as nginx's `worker_processes auto`.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The running worker threads. Dropping it stops them; tasks still running on them are
/// cancelled, so drain first ([`crate::Running::stop`]).
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` worker threads (at least one), each driving its own runtime.
    pub fn start(count: usize) -> io::Result<Workers> {
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("certgate-worker-{index}"))
                .spawn(move || {
                    // Tasks spawned through the handle run while this thread drives the
                    // runtime, that is until the stop signal (or its sender's drop).
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    runtime.shutdown_timeout(SHUTDOWN_WAIT);
                })?;
            workers.push(Worker {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { workers })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Each worker's runtime, in worker order: what is spawned there runs on its thread.
    pub fn handles(&self) -> impl Iterator<Item = &Handle> {
        self.workers.iter().map(|w| &w.handle)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// `count` listening sockets on `address`, one per worker, for the workers to register with
/// their own runtimes (`tokio::net::TcpListener::from_std`). The sockets are listening when
/// this returns, so a client may connect at once. Port 0 is resolved by the first socket
/// and the others take the same port.
///
/// With one worker the socket is exclusive, as a plain `bind`. With more, the sockets share
/// the port by `SO_REUSEPORT`, which would also let another process of the same user join
/// the group unnoticed (and take a share of the connections): so the address is first bound
/// alone, which fails if anything listens there already, as it would for a single socket.
/// Must be called within a tokio runtime (the sockets pass through its reactor).
pub fn bind(address: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let shared = count > 1;
    if shared && address.port() != 0 {
        drop(std::net::TcpListener::bind(address)?);
    }
    let mut sockets = Vec::with_capacity(count.max(1));
    let mut address = address;
    for _ in 0..count.max(1) {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As a plain bind does: a restart may bind while old connections are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        if shared {
            socket.set_reuseport(true)?;
        }
        socket.bind(address)?;
        let listener = socket.listen(BACKLOG)?;
        address = listener.local_addr()?;
        sockets.push(listener.into_std()?);
    }
    Ok(sockets)
}
