//! Workers: one monoio runtime per core, pinned, each with its own
//! SO_REUSEPORT listener; the supervisor that keeps them running; the client
//! connection type; timeouts, signals and graceful drain.
//!
//! This module knows nothing of APIs, caches or backends. What a worker
//! does with a connection is a [`Service`]'s business: [`Workers::start`]
//! binds one listening socket per worker and address (`SO_REUSEPORT`,
//! backlog 4096; a port of 0 is resolved by the first bind and reused by the
//! others, so all workers share it), starts the worker threads, and on each
//! one asks the service for its per-worker part ([`Service::local`]), which
//! then serves every connection the worker accepts
//! ([`LocalService::serve`]) as a [`ClientConn`]; a listener of
//! `listen_tls` does the TLS handshake first (within `header_read_timeout`)
//! and hands over a [`ClientConn`] of a TLS stream
//! ([`LocalService::serve_tls`]). It returns once every
//! worker has its runtime up, with the bound addresses and the driver each
//! worker runs.
//!
//! Failure containment: a panic while serving a connection closes that
//! connection only (`contain`); a worker thread that ends anyway is started
//! again by the supervisor thread with a fresh ring and listener, and if it
//! cannot be kept running the server shuts down rather than run with fewer
//! workers than configured (see `supervise`). [`Workers::counters`] counts
//! both.
//!
//! Shutdown ([`Workers::shutdown`], or SIGINT/SIGTERM in the binary): each
//! worker stops accepting, closes its idle keep-alive connections, lets
//! requests in flight finish (their responses carry `Connection: close`),
//! and exits when its last connection closes or `drain_timeout` passes.
//!
//! Memory follows busy connections, not open ones: a keep-alive connection
//! silent for 1 to 2 s parks and waits for readiness holding no buffer
//! ([`conn`], `reaper`); buffers come from the worker's bounded pool
//! ([`buffers`]) and the large state of serving requests lives in a pooled
//! block only while the connection is busy ([`slab`]). [`Workers::loads`] shows each worker's open
//! connections and pools; at `max_connections_per_worker` a worker stops
//! accepting (the kernel's backlog holds new connections) until one of its
//! connections closes.
//!
//! Modules: `worker` (runtime, accept loop, clock), [`conn`] (the client
//! connection), [`stream`] (what its stream must do, for TCP and TLS), [`buffers`] and [`slab`] (the pools), `contain` (panics on
//! a connection), `reaper` (timeouts without a timer per read), `drain` and
//! `shutdown` (the signals).

pub mod buffers;
pub mod conn;
mod contain;
mod drain;
mod reaper;
mod shutdown;
pub mod slab;
pub mod stream;
mod worker;

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::tls::{ClientAuth, TlsAcceptor, TlsStream};
use socket2::{Domain, Protocol, Socket, Type};

pub use buffers::BufPool;
pub use conn::{ClientConn, ClientIo, ClientStop, ConnLimits, Fill, NextRequest, ReadBuf};
pub use contain::Counters;
pub use drain::Drain;
pub use shutdown::Shutdown;
pub use stream::ClientStream;
pub use worker::{log, DriverKind, Load, Worker};

use crate::config::{Config, IoDriver};

/// Turns transparent huge pages off for this process (`prctl(2)`
/// `PR_SET_THP_DISABLE`); for the binary to call first thing.
///
/// mimalloc asks for huge pages (`madvise(MADV_HUGEPAGE)`) on the arenas it
/// reserves, so on a kernel with THP in `madvise` mode (the common default)
/// a worker's memory grows in 2 MiB pages: a connection's few hundred bytes
/// make a whole huge page resident. Measured with 10,000 idle keep-alive
/// connections on one worker: 1,887 bytes of RSS per connection with huge
/// pages, 847 without; the process starts at 5.6 MB instead of 12.5 MB.
/// nginx (glibc malloc, no madvise) does not use them either.
#[allow(unsafe_code)]
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integer arguments
    // and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What the workers serve. Shared by all worker threads.
pub trait Service: Send + Sync + 'static {
    /// The per-worker part, built on the worker's thread and used only
    /// there.
    type Local: LocalService;

    /// Builds worker `worker.id`'s part.
    fn local(&self, worker: &Rc<Worker>) -> Self::Local;
}

/// A service's per-worker part.
pub trait LocalService: 'static {
    /// Serves one accepted connection until it closes. `local_port` is the
    /// listening port that accepted it.
    fn serve(
        self: Rc<Self>,
        conn: ClientConn<TcpStream>,
        peer: SocketAddr,
        local_port: u16,
    ) -> impl Future<Output = ()>;

    /// Serves one TLS connection, handshake done, until it closes. `cert`
    /// is the certificate entry the handshake chose
    /// ([`TlsAcceptor::certificate_for`]), `auth` where the client's
    /// certificate stands (mutual TLS).
    fn serve_tls(
        self: Rc<Self>,
        conn: ClientConn<TlsStream>,
        peer: SocketAddr,
        local_port: u16,
        cert: u16,
        auth: ClientAuth,
    ) -> impl Future<Output = ()>;

    /// The worker is about to end (after its drain): release what it holds.
    fn stop(&self);

    /// Called on the worker once a second (at its clock's tick), for
    /// periodic work such as shipping buffered log lines. Default: nothing.
    fn tick(&self) {}
}

/// How the workers run: the `[server]` settings and the per-connection
/// limits.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// Addresses to listen on with TLS (served with `tls`).
    pub listen_tls: Vec<SocketAddr>,
    /// The TLS listeners' certificates and rustls configuration.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// Worker threads.
    pub workers: usize,
    /// Pin worker i to core i (modulo the cores there are).
    pub pin_workers: bool,
    /// Which I/O driver to run.
    pub io_driver: IoDriver,
    /// io_uring submission queue entries.
    pub ring_entries: u32,
    /// How long a drain may take.
    pub drain_timeout: Duration,
    /// Limits on each client connection.
    pub conn: ConnLimits,
}

impl Settings {
    /// The settings a configuration asks for (`workers = "auto"`: one per
    /// available CPU).
    pub fn from_config(config: &Config) -> Settings {
        let limits = &config.limits;
        Settings {
            listen: config.server.listen.clone(),
            listen_tls: config.server.listen_tls.clone(),
            tls: None,
            workers: config.server.workers.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            }),
            pin_workers: config.server.pin_workers,
            io_driver: config.server.io_driver,
            ring_entries: config.server.ring_entries,
            drain_timeout: config.server.drain_timeout,
            conn: ConnLimits {
                header_read_timeout: limits.header_read_timeout,
                keepalive_timeout: limits.keepalive_timeout,
                max_connections: limits.max_connections_per_worker,
                max_read_buffer: (limits.max_url_bytes + limits.max_header_bytes + 1024)
                    .next_power_of_two(),
            },
        }
    }
}

/// A hook run on each worker thread as it starts (its argument is the
/// worker index); tests use it to mark threads for allocation counting.
pub type WorkerHook = Arc<dyn Fn(usize) + Send + Sync>;

/// Why the workers could not start.
#[derive(Debug)]
pub enum StartError {
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
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Spawn(e) => write!(f, "cannot start a worker thread: {e}"),
            StartError::Runtime(id) => write!(f, "worker {id} could not start its runtime"),
        }
    }
}

impl std::error::Error for StartError {}

/// State shared by all workers (read-only after start, but for the signal).
pub(crate) struct Shared<S> {
    pub settings: Settings,
    pub service: Arc<S>,
    pub shutdown: Arc<Shutdown>,
    pub cores: Vec<core_affinity::CoreId>,
    pub on_worker_start: Option<WorkerHook>,
    /// The bound addresses (ports resolved), for a restarted worker's
    /// listeners.
    pub addrs: Vec<SocketAddr>,
    pub counters: Arc<Counters>,
    /// Each worker's published load.
    pub gauges: Vec<Arc<worker::Gauge>>,
    started: Mutex<Vec<Option<Option<DriverKind>>>>,
    started_cv: Condvar,
}

impl<S> Shared<S> {
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

/// A handle on the workers' published load, for any thread.
#[derive(Clone, Debug)]
pub struct Loads(Vec<Arc<worker::Gauge>>);

impl Loads {
    /// Each worker's load now: open connections, pooled buffers and
    /// serving-state blocks (see [`Load`]).
    pub fn read(&self) -> Vec<Load> {
        self.0.iter().map(|g| g.read()).collect()
    }
}

/// The running worker threads.
pub struct Workers<S: Service> {
    shared: Arc<Shared<S>>,
    /// Owns the worker threads; returns once all have ended after shutdown.
    supervisor: Option<JoinHandle<()>>,
    drivers: Vec<DriverKind>,
}

impl<S: Service> Workers<S> {
    /// Binds the listeners and starts `settings.workers` workers serving
    /// `service`; `on_worker_start` runs first on each worker thread.
    pub fn start(
        settings: Settings,
        service: Arc<S>,
        on_worker_start: Option<WorkerHook>,
    ) -> Result<Workers<S>, StartError> {
        let workers = settings.workers.max(1);
        let cores = if settings.pin_workers {
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
        let mut addrs = Vec::with_capacity(settings.listen.len() + settings.listen_tls.len());
        for &want in settings.listen.iter().chain(&settings.listen_tls) {
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
            settings,
            service,
            shutdown: Arc::new(Shutdown::new()),
            cores,
            on_worker_start,
            addrs,
            counters: Arc::new(Counters::default()),
            gauges: (0..workers).map(|_| Arc::default()).collect(),
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
        let supervisor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("ringgate-supervisor".to_string())
                .spawn(move || supervise(shared, threads, exits, exited))
                .map_err(StartError::Spawn)?
        };
        Ok(Workers {
            shared,
            supervisor: Some(supervisor),
            drivers,
        })
    }

    /// The bound addresses, in the order of `settings.listen`, then those
    /// of `settings.listen_tls`.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.addrs
    }

    /// What containment caught: connections closed by a panic, workers
    /// restarted, workers running now.
    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    /// Each worker's load, readable from any thread (see [`Loads`]).
    pub fn loads(&self) -> Loads {
        Loads(self.shared.gauges.clone())
    }

    /// The driver each worker runs.
    pub fn drivers(&self) -> &[DriverKind] {
        &self.drivers
    }

    /// The shutdown signal (triggering it starts the drain).
    pub fn shutdown_signal(&self) -> Arc<Shutdown> {
        self.shared.shutdown.clone()
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
    }
}

/// Starts worker `id`'s thread; `exits` hears of its end, however it ends.
fn spawn_worker<S: Service>(
    id: usize,
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared<S>>,
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
fn supervise<S: Service>(
    shared: Arc<Shared<S>>,
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
