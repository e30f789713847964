//! Workers: one monoio runtime per core, pinned, each with its own
//! SO_REUSEPORT listener; the supervisor that keeps them running; signals
//! and graceful drain.
//!
//! [`Server::start`] compiles the configuration into a
//! [`crate::gateway::Snapshot`], binds one listening socket per
//! worker and address (`SO_REUSEPORT`, backlog 4096; a port of 0 is
//! resolved by the first bind and reused by the others, so all workers share
//! it), and starts the worker threads. It returns once every worker has its
//! runtime up, with the bound addresses and the driver each worker runs.
//!
//! Failure containment: a panic while serving a connection closes that
//! connection only (`contain`); a worker thread that ends anyway is started
//! again by the supervisor thread with a fresh ring and listener, and if it
//! cannot be kept running the server shuts down rather than run with fewer
//! workers than configured (see `supervise`). [`Server::counters`] counts
//! both.
//!
//! Shutdown ([`Server::shutdown`], or SIGINT/SIGTERM in the binary): each
//! worker stops accepting, closes its idle keep-alive connections, lets
//! requests in flight finish (their responses carry `Connection: close`),
//! and exits when its last connection closes or `drain_timeout` passes.
//!
//! Modules: `worker` (runtime, accept loop, clock), `contain` (panics on a
//! connection), `connection` (the per-connection HTTP/1.1 loop), `proxy`
//! (the `http_proxy` forwarder and the upgrade tunnel), `cached` (the stage
//! cache on the request path), `reaper` (timeouts without a timer per
//! read), `drain` and `shutdown` (the signals). The server also runs the
//! upstream health thread ([`crate::upstream::health`]) when backends are
//! configured.

mod cached;
mod connection;
mod contain;
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

pub use contain::Counters;
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
    /// Debug builds only: honour the `x-ringgate-fault` request header,
    /// which panics on the request path (`panic`) or in a worker task
    /// (`kill-worker`), to test containment and the supervisor.
    #[cfg(debug_assertions)]
    pub fault_injection: bool,
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
    /// The bound addresses (ports resolved), for a restarted worker's
    /// listeners.
    pub addrs: Vec<SocketAddr>,
    pub counters: Arc<Counters>,
    #[cfg(debug_assertions)]
    pub fault_injection: bool,
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
    /// Owns the worker threads; returns once all have ended after shutdown.
    supervisor: Option<JoinHandle<()>>,
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

        contain::install_hook();
        let shared = Arc::new(Shared {
            config,
            snapshot,
            shutdown: Shutdown::new(),
            cores,
            on_worker_start: options.on_worker_start,
            addrs,
            counters: Arc::new(Counters::default()),
            #[cfg(debug_assertions)]
            fault_injection: options.fault_injection,
            started: Mutex::new(vec![None; workers]),
            started_cv: Condvar::new(),
        });
        let (exits, exited) = crossbeam::channel::unbounded();
        let mut threads = Vec::with_capacity(workers);
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let t = spawn_worker(id, listeners, shared.clone(), exits.clone())
                .map_err(StartError::Spawn)?;
            threads.push(Some(t));
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
                        for t in threads.into_iter().flatten() {
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
        let supervisor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("ringgate-supervisor".to_string())
                .spawn(move || supervise(shared, threads, exits, exited))
                .map_err(StartError::Spawn)?
        };
        Ok(Server {
            shared,
            health,
            supervisor: Some(supervisor),
            drivers,
        })
    }

    /// The bound addresses, in the order of `server.listen`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.addrs
    }

    /// What containment caught: connections closed by a panic, workers
    /// restarted, workers running now.
    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
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
        if let Some(s) = self.supervisor.take() {
            let _ = s.join();
        }
        if let Some(mut h) = self.health.take() {
            h.stop();
        }
    }
}

/// Starts worker `id`'s thread; `exits` hears of its end, however it ends.
fn spawn_worker(
    id: usize,
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    exits: crossbeam::channel::Sender<usize>,
) -> std::io::Result<JoinHandle<()>> {
    /// Sends the worker's id when dropped: at the thread's end, or while a
    /// panic unwinds it.
    struct ExitNotice(usize, crossbeam::channel::Sender<usize>);
    impl Drop for ExitNotice {
        fn drop(&mut self) {
            let _ = self.1.send(self.0);
        }
    }
    std::thread::Builder::new()
        .name(format!("ringgate-worker-{id}"))
        .spawn(move || {
            let _notice = ExitNotice(id, exits);
            worker::run(id, listeners, shared);
        })
}

/// Restarts of one worker within [`RESTART_WINDOW`] after which the
/// supervisor gives up and shuts the server down rather than run short.
const MAX_QUICK_RESTARTS: u32 = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(10);

/// The supervisor: keeps every configured worker running until shutdown.
///
/// A worker thread that ends while the server is not shutting down (a panic
/// outside connection containment, or a runtime that stopped) is joined and
/// started again on the same core, with a fresh ring and fresh listeners on
/// the same addresses (`SO_REUSEPORT` lets them join the others). If one
/// worker cannot be kept running — it cannot bind, or it died
/// [`MAX_QUICK_RESTARTS`] times within [`RESTART_WINDOW`] — the server shuts
/// down instead of running with fewer workers than configured.
fn supervise(
    shared: Arc<Shared>,
    mut threads: Vec<Option<JoinHandle<()>>>,
    exits: crossbeam::channel::Sender<usize>,
    exited: crossbeam::channel::Receiver<usize>,
) {
    let mut live = threads.iter().flatten().count();
    let mut recent: Vec<(std::time::Instant, u32)> =
        vec![(std::time::Instant::now(), 0); threads.len()];
    while live > 0 {
        let Ok(id) = exited.recv() else { return };
        let panicked = threads
            .get_mut(id)
            .and_then(Option::take)
            .is_some_and(|t| t.join().is_err());
        if shared.shutdown.is_triggered() {
            live -= 1;
            continue;
        }
        let how = if panicked { "panicked" } else { "stopped" };
        let (since, count) = &mut recent[id];
        if since.elapsed() > RESTART_WINDOW {
            *since = std::time::Instant::now();
            *count = 0;
        }
        *count += 1;
        let restarted = if *count > MAX_QUICK_RESTARTS {
            Err(format!(
                "it ended {MAX_QUICK_RESTARTS} times within {RESTART_WINDOW:?}"
            ))
        } else {
            shared
                .addrs
                .iter()
                .map(|&a| bind(a).map_err(|e| format!("cannot listen on {a}: {e}")))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|listeners| {
                    spawn_worker(id, listeners, shared.clone(), exits.clone())
                        .map_err(|e| format!("cannot start a thread: {e}"))
                })
        };
        match restarted {
            Ok(t) => {
                threads[id] = Some(t);
                shared
                    .counters
                    .worker_restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                worker::log(&format!(
                    "worker {id} {how}; started a new one with a fresh ring and listener"
                ));
            }
            Err(why) => {
                worker::log(&format!(
                    "worker {id} {how} and cannot be restarted ({why}); shutting down"
                ));
                live -= 1;
                shared.shutdown.trigger();
            }
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
