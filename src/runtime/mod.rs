//! Workers: one monoio runtime per core, pinned, each with its own
//! SO_REUSEPORT listener; signals and graceful drain.
//!
//! [`Server::start`] compiles the configuration into a
//! [`crate::gateway::Snapshot`], binds one listening socket per
//! worker and address (`SO_REUSEPORT`, backlog 4096; a port of 0 is
//! resolved by the first bind and reused by the others, so all workers share
//! it), and starts the worker threads. It returns once every worker has its
//! runtime up, with the bound addresses and the driver each worker runs.
//!
//! Shutdown ([`Server::shutdown`], or SIGINT/SIGTERM in the binary): each
//! worker stops accepting, closes its idle keep-alive connections, lets
//! requests in flight finish (their responses carry `Connection: close`),
//! and exits when its last connection closes or `drain_timeout` passes.
//!
//! Modules: `worker` (runtime, accept loop, clock), `connection` (the
//! per-connection HTTP/1.1 loop), `proxy` (the `http_proxy` forwarder and
//! the upgrade tunnel), `cached` (the stage cache on the request path), `reaper` (timeouts without a timer per read),
//! `drain` and `shutdown` (the signals). The server also runs the upstream
//! health thread ([`crate::upstream::health`]) when backends are configured.

mod cached;
mod connection;
mod drain;
mod proxy;
mod reaper;
mod shutdown;
mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

pub use shutdown::Shutdown;
pub use worker::DriverKind;

use crate::config::Config;
use crate::gateway::{BuildError, Snapshot};

/// A hook run on each worker thread as it starts (its argument is the
/// worker index); tests use it to mark threads for allocation counting.
pub type WorkerHook = Arc<dyn Fn(usize) + Send + Sync>;

/// Options for [`Server::start`] beyond the configuration.
#[derive(Default, Clone)]
pub struct StartOptions {
    /// Run on each worker thread before its runtime starts.
    pub on_worker_start: Option<WorkerHook>,
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration could not be compiled.
    Build(BuildError),
    /// A listening socket could not be set up.
    Bind(SocketAddr, std::io::Error),
    /// A worker thread could not be spawned.
    Spawn(std::io::Error),
    /// A worker could not start its runtime (see the log for why).
    Runtime(usize),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Build(e) => write!(f, "{e}"),
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Spawn(e) => write!(f, "cannot start a worker thread: {e}"),
            StartError::Runtime(id) => write!(f, "worker {id} could not start its runtime"),
        }
    }
}

impl std::error::Error for StartError {}

/// State shared by all workers (read-only after start, but for the signal).
pub(crate) struct Shared {
    pub config: Config,
    pub snapshot: Arc<Snapshot>,
    pub shutdown: Shutdown,
    pub cores: Vec<core_affinity::CoreId>,
    pub on_worker_start: Option<WorkerHook>,
    started: Mutex<Vec<Option<Option<DriverKind>>>>,
    started_cv: Condvar,
}

impl Shared {
    fn report(&self, id: usize, outcome: Option<DriverKind>) {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        started[id] = Some(outcome);
        self.started_cv.notify_all();
    }

    pub(crate) fn report_driver(&self, id: usize, kind: DriverKind) {
        self.report(id, Some(kind));
    }

    pub(crate) fn report_driver_failed(&self, id: usize) {
        self.report(id, None);
    }
}

/// A running gateway.
pub struct Server {
    shared: Arc<Shared>,
    /// Active health checks and name refresh for the backends.
    health: Option<crate::upstream::health::Checker>,
    threads: Vec<JoinHandle<()>>,
    addrs: Vec<SocketAddr>,
    drivers: Vec<DriverKind>,
}

/// A cloneable handle that can stop the server from another thread.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        self.0.shutdown.trigger();
    }
}

impl Server {
    /// Compiles `config`, binds its listeners and starts the workers.
    pub fn start(config: Config, options: StartOptions) -> Result<Server, StartError> {
        let snapshot = Arc::new(Snapshot::build(&config).map_err(StartError::Build)?);
        let workers = config.server.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let cores = if config.server.pin_workers {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let cores: Vec<_> = if cores.is_empty() {
            Vec::new()
        } else {
            (0..workers).map(|i| cores[i % cores.len()]).collect()
        };

        // One socket per (worker, address); port 0 resolved by the first.
        let mut per_worker: Vec<Vec<std::net::TcpListener>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::with_capacity(config.server.listen.len());
        for &want in &config.server.listen {
            let mut addr = want;
            for listeners in per_worker.iter_mut() {
                let l = bind(addr).map_err(|e| StartError::Bind(addr, e))?;
                addr = l.local_addr().map_err(|e| StartError::Bind(addr, e))?;
                listeners.push(l);
            }
            addrs.push(addr);
        }

        let shared = Arc::new(Shared {
            config,
            snapshot,
            shutdown: Shutdown::new(),
            cores,
            on_worker_start: options.on_worker_start,
            started: Mutex::new(vec![None; workers]),
            started_cv: Condvar::new(),
        });
        let mut threads = Vec::with_capacity(workers);
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let shared = shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("ringgate-worker-{id}"))
                .spawn(move || worker::run(id, listeners, shared))
                .map_err(StartError::Spawn)?;
            threads.push(t);
        }

        // Wait for every worker to report its driver.
        let mut drivers = Vec::with_capacity(workers);
        {
            let mut started = shared.started.lock().unwrap_or_else(|e| e.into_inner());
            while started.iter().any(Option::is_none) {
                let (guard, timeout) = shared
                    .started_cv
                    .wait_timeout(started, Duration::from_secs(30))
                    .unwrap_or_else(|e| e.into_inner());
                started = guard;
                if timeout.timed_out() {
                    break;
                }
            }
            for (id, s) in started.iter().enumerate() {
                match s {
                    Some(Some(kind)) => drivers.push(*kind),
                    _ => {
                        drop(started);
                        shared.shutdown.trigger();
                        for t in threads {
                            let _ = t.join();
                        }
                        return Err(StartError::Runtime(id));
                    }
                }
            }
        }
        let health = if shared.snapshot.upstreams.targets.is_empty() {
            None
        } else {
            Some(
                crate::upstream::health::Checker::start(shared.snapshot.upstreams.clone())
                    .map_err(StartError::Spawn)?,
            )
        };
        Ok(Server {
            shared,
            health,
            threads,
            addrs,
            drivers,
        })
    }

    /// The bound addresses, in the order of `server.listen`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The configuration being served (stage caches, upstreams and their
    /// counters are reachable from it).
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.shared.snapshot
    }

    /// The driver each worker runs.
    pub fn drivers(&self) -> &[DriverKind] {
        &self.drivers
    }

    /// A handle that can start the shutdown from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// Starts a graceful shutdown (see the module docs).
    pub fn shutdown(&self) {
        self.shared.shutdown.trigger();
    }

    /// Waits for every worker to finish.
    pub fn join(mut self) {
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        if let Some(mut h) = self.health.take() {
            h.stop();
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
