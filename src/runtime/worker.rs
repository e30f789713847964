//! One worker: a thread pinned to a core, running a monoio runtime with its
//! own SO_REUSEPORT listener(s), accepting and serving connections.
//!
//! Driver choice (measured on the project's 2-core machine): io_uring with
//! COOP_TASKRUN + SINGLE_ISSUER + DEFER_TASKRUN is the cheapest per request
//! and the steadiest. Measured earlier on the same machine, monoio's default
//! ring (no setup flags) was slower than its own epoll driver; ringgate's A/B
//! (`perf/driver-ab.sh 5`, mock route, one worker on CPU 0, wrk on CPU 1,
//! 5 alternating rounds, 2026-11-22) measured the tuned ring with 4096
//! entries at a median 6.57 µs of CPU per request (6.46–6.70), 256 entries
//! 6.57 but erratic (6.35–8.88), 32768 entries 6.89, epoll 7.85. So `auto`
//! builds the tuned ring with 4096 entries (`ring_entries`), and falls back
//! to epoll only when the kernel refuses to set it up (old kernel, seccomp,
//! memlock). Each worker logs which driver it runs.

#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use monoio::net::TcpListener;
use monoio::time::Instant;

use super::buffers::BufPool;
use super::conn::ConnLimits;
use super::drain::Drain;
use super::reaper::Reaper;
use super::slab::FutureSlab;
use super::{contain, LocalService, Service, Shared};
use crate::config::IoDriver;
use crate::http::date::HttpDate;
use crate::tls::TlsAcceptor;

/// What one worker thread keeps for its connections: shared by the
/// worker's tasks (never across threads).
pub struct Worker {
    /// The worker's index (0-based).
    pub id: usize,
    /// Limits on each client connection.
    pub limits: ConnLimits,
    /// The worker's drain signal (set when shutdown starts).
    pub drain: Drain,
    pub(crate) reaper: Reaper,
    /// What containment caught (shared by all workers).
    pub counters: Arc<super::contain::Counters>,
    /// I/O buffers, lent to busy connections only.
    pub buffers: BufPool,
    /// Blocks for busy connections' serving state (see [`super::slab`]).
    pub slab: FutureSlab,
    /// What other threads see of this worker's load.
    gauge: Arc<Gauge>,
    /// The listening sockets, for [`block_on_worker`]'s last resort.
    listener_fds: RefCell<Vec<std::os::fd::RawFd>>,
    date: Cell<HttpDate>,
    active: Cell<usize>,
    /// Accept loops waiting for the connection count to drop below the cap.
    room_waiters: RefCell<Vec<Waker>>,
    /// Tasks that yielded (see [`Worker::yield_now`]), and the waker of the
    /// task that wakes them.
    yielded: RefCell<Vec<Waker>>,
    yield_pump: RefCell<Option<Waker>>,
    /// Connections parked so far.
    pub(crate) parked: Cell<u64>,
}

/// Most free serving-state blocks a worker keeps.
const MAX_FREE_BLOCKS: usize = 1024;
/// What the pools keep through their once-a-second trim (see
/// [`BufPool::trim`]).
const POOL_FLOOR: usize = 32;

/// A worker's load as other threads see it: written by the worker, read
/// by anyone (status lines, tests, metrics later).
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    connections: AtomicUsize,
    accepted: AtomicU64,
    pooled_buffers: AtomicUsize,
    buffers_allocated: AtomicU64,
    free_blocks: AtomicUsize,
    blocks_allocated: AtomicU64,
    parked: AtomicU64,
}

/// One worker's load (see [`super::Workers::loads`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Open client connections, now.
    pub connections: usize,
    /// Client connections accepted since the worker started.
    pub accepted: u64,
    /// I/O buffers waiting in the worker's pool (refreshed each second).
    pub pooled_buffers: usize,
    /// I/O buffers allocated since the worker started because its pool was
    /// empty (refreshed each second): flat once the pool is warm.
    pub buffers_allocated: u64,
    /// Free serving-state blocks (refreshed each second).
    pub free_blocks: usize,
    /// Serving-state blocks allocated since the worker started (refreshed
    /// each second): grows only with the number of connections busy at
    /// once.
    pub blocks_allocated: u64,
    /// Times a connection parked (gave its buffers back after staying
    /// silent) since the worker started (refreshed each second).
    pub parked: u64,
}

impl Gauge {
    pub(crate) fn read(&self) -> Load {
        Load {
            connections: self.connections.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            pooled_buffers: self.pooled_buffers.load(Ordering::Relaxed),
            buffers_allocated: self.buffers_allocated.load(Ordering::Relaxed),
            free_blocks: self.free_blocks.load(Ordering::Relaxed),
            blocks_allocated: self.blocks_allocated.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
        }
    }
}

impl Worker {
    /// The cached `Date` value (refreshed at each second boundary).
    #[inline]
    pub fn date(&self) -> HttpDate {
        self.date.get()
    }

    /// Whether the worker is draining (shutdown has started).
    #[inline]
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// Open client connections on this worker.
    pub fn connections(&self) -> usize {
        self.active.get()
    }

    /// Called as a connection is accepted.
    fn connection_opened(&self) {
        let n = self.active.get() + 1;
        self.active.set(n);
        self.gauge.connections.store(n, Ordering::Relaxed);
        // Only this worker writes its gauge: load and store.
        let a = &self.gauge.accepted;
        a.store(a.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Called by a connection task as it ends.
    pub(crate) fn connection_closed(&self) {
        let n = self.active.get() - 1;
        self.active.set(n);
        self.gauge.connections.store(n, Ordering::Relaxed);
        if n + 1 == self.limits.max_connections {
            for w in self.room_waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Resolves once the worker has room for another connection: at once
    /// below the cap, else when a connection closes (no polling).
    fn room(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.active.get() < self.limits.max_connections {
                Poll::Ready(())
            } else {
                self.room_waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Lets the worker's other tasks run before this one goes on: what a
    /// connection does after a run of requests that needed no waiting (on
    /// the epoll driver, reads and writes that can complete at once never
    /// yield by themselves).
    ///
    /// A task that wakes itself while being polled is run again at once by
    /// monoio (it goes to the front of the queue), so this does not: the
    /// task's waker is kept, and the worker's yield pump task, woken now and
    /// so queued behind every task already waiting, wakes it when it runs.
    pub fn yield_now(&self) -> impl Future<Output = ()> + '_ {
        let mut yielded = false;
        poll_fn(move |cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            let mut list = self.yielded.borrow_mut();
            list.push(cx.waker().clone());
            if list.len() == 1 {
                if let Some(pump) = self.yield_pump.borrow_mut().take() {
                    pump.wake();
                }
            }
            Poll::Pending
        })
    }

    /// Publishes the pool figures for other threads.
    fn publish(&self) {
        let b = self.buffers.stats();
        let g = &self.gauge;
        g.pooled_buffers.store(b.small + b.large, Ordering::Relaxed);
        g.buffers_allocated.store(b.allocated, Ordering::Relaxed);
        g.free_blocks
            .store(self.slab.free_blocks(), Ordering::Relaxed);
        g.blocks_allocated
            .store(self.slab.allocated(), Ordering::Relaxed);
        g.parked.store(self.parked.get(), Ordering::Relaxed);
    }
}

/// Which driver a worker ended up running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring with COOP_TASKRUN, SINGLE_ISSUER and DEFER_TASKRUN.
    IoUring,
    /// epoll (monoio's legacy driver).
    Epoll,
}

/// The tuned io_uring setup (see the module docs for why these flags).
fn uring_builder() -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun();
    b.setup_single_issuer();
    b.setup_defer_taskrun();
    b
}

/// Runs worker `id` on the current thread until shutdown completes.
pub(crate) fn run<S: Service>(
    id: usize,
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared<S>>,
) {
    let settings = &shared.settings;
    let core = shared.cores.get(id).copied();
    let pinned = match core {
        Some(c) => core_affinity::set_for_current(c),
        None => false,
    };
    if let Some(hook) = &shared.on_worker_start {
        hook(id);
    }
    let want = settings.io_driver;
    let pin_note = if pinned {
        format!("pinned to core {}", core.map_or(0, |c| c.id))
    } else {
        "not pinned".to_string()
    };
    if want != IoDriver::Epoll {
        let rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .uring_builder(uring_builder())
            .with_entries(settings.ring_entries)
            .enable_timer()
            .build();
        match rt {
            Ok(mut rt) => {
                log(&format!(
                    "worker {id}: io_uring driver (coop_taskrun, single_issuer, defer_taskrun, {} entries), {pin_note}",
                    settings.ring_entries
                ));
                block_on_worker(&mut rt, DriverKind::IoUring, id, listeners, &shared);
                return;
            }
            Err(e) if want == IoDriver::Auto => {
                log(&format!(
                    "worker {id}: io_uring unavailable ({e}); falling back to epoll"
                ));
            }
            Err(e) => {
                log(&format!("worker {id}: io_uring unavailable ({e}) and io_driver = \"io_uring\"; worker not started"));
                shared.report_driver_failed(id);
                return;
            }
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => {
            log(&format!("worker {id}: epoll driver, {pin_note}"));
            block_on_worker(&mut rt, DriverKind::Epoll, id, listeners, &shared);
        }
        Err(e) => {
            log(&format!("worker {id}: cannot build a runtime: {e}"));
            shared.report_driver_failed(id);
        }
    }
}

impl Worker {
    fn new(
        id: usize,
        limits: ConnLimits,
        counters: Arc<super::contain::Counters>,
        gauge: Arc<Gauge>,
    ) -> Worker {
        // A restarted worker starts from nothing.
        gauge.connections.store(0, Ordering::Relaxed);
        Worker {
            id,
            limits,
            drain: Drain::new(),
            reaper: Reaper::new(),
            counters,
            buffers: BufPool::new(),
            slab: FutureSlab::new(MAX_FREE_BLOCKS),
            gauge,
            listener_fds: RefCell::new(Vec::new()),
            date: Cell::new(HttpDate::now()),
            active: Cell::new(0),
            room_waiters: RefCell::new(Vec::new()),
            yielded: RefCell::new(Vec::new()),
            yield_pump: RefCell::new(None),
            parked: Cell::new(0),
        }
    }
}

/// Runs worker `id` on `rt` (reporting it live, with its driver, first).
/// Should a panic escape a task and unwind the
/// runtime, monoio never drops the tasks it was running (it keeps no list
/// of them): their sockets would stay open, clients hanging on them and the
/// kernel still queueing new connections on the listener. So, while that
/// panic unwinds, every connection and listener of the worker is shut down
/// (their file descriptors stay allocated: a small leak per such death,
/// which the supervisor logs).
fn block_on_worker<D: monoio::Driver, S: Service>(
    rt: &mut monoio::Runtime<D>,
    kind: DriverKind,
    id: usize,
    listeners: Vec<std::net::TcpListener>,
    shared: &Arc<Shared<S>>,
) {
    let worker = Rc::new(Worker::new(
        id,
        shared.settings.conn.clone(),
        shared.counters.clone(),
        shared.gauges[id].clone(),
    ));
    struct AbortOnUnwind(Rc<Worker>);
    impl Drop for AbortOnUnwind {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let w = &self.0;
                w.reaper.abort_all(&w.listener_fds.borrow());
            }
        }
    }
    let _abort = AbortOnUnwind(worker.clone());
    let _live = contain::LiveWorker::new(&shared.counters);
    shared.report_driver(id, kind);
    rt.block_on(worker_main(worker, listeners, shared.clone()));
}

async fn worker_main<S: Service>(
    worker: Rc<Worker>,
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared<S>>,
) {
    let id = worker.id;
    let local = Rc::new(shared.service.local(&worker));
    // The plain listeners come first, then the TLS ones.
    let plain = shared.settings.listen.len();
    for (i, l) in listeners.into_iter().enumerate() {
        worker.listener_fds.borrow_mut().push(l.as_raw_fd());
        let tls = if i < plain {
            None
        } else {
            shared.settings.tls.clone()
        };
        match TcpListener::from_std(l) {
            Ok(l) => {
                monoio::spawn(accept_loop(l, worker.clone(), local.clone(), tls));
            }
            Err(e) => log(&format!("worker {id}: cannot register listener: {e}")),
        }
    }
    monoio::spawn(clock(worker.clone(), local.clone()));
    monoio::spawn(yield_pump(worker.clone()));

    shared.shutdown.wait().await;
    worker.drain.start();
    // Idle keep-alive connections close now; busy ones finish their request.
    worker.reaper.tick(std::time::Instant::now(), true);
    let deadline = Instant::now() + shared.settings.drain_timeout;
    while worker.active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if worker.active.get() > 0 {
        log(&format!(
            "worker {id}: drain timeout reached with {} connection(s) open; closing them",
            worker.active.get()
        ));
        // Their tasks end with the runtime without being dropped: shut the
        // sockets down so the clients see the end.
        worker.reaper.abort_all(&[]);
    }
    // What the service holds (idle backend connections) goes with the worker.
    local.stop();
}

/// Accepts connections on `listener` and serves each in a task of its
/// own; with `tls`, after a TLS handshake.
async fn accept_loop<L: LocalService>(
    listener: TcpListener,
    w: Rc<Worker>,
    local: Rc<L>,
    tls: Option<Arc<TlsAcceptor>>,
) {
    let max = w.limits.max_connections;
    let local_port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        if w.active.get() >= max {
            // At the cap: new connections wait in the kernel's backlog
            // until one of ours closes (woken then, no polling).
            monoio::select! {
                _ = w.room() => {},
                _ = w.drain.wait() => return,
            }
        }
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = w.drain.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                w.connection_opened();
                match &tls {
                    None => {
                        monoio::spawn(contain::serve(&local, stream, peer, local_port, &w));
                    }
                    Some(tls) => {
                        let fut = contain::serve_tls(&local, tls, stream, peer, local_port, &w);
                        monoio::spawn(fut);
                    }
                }
            }
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                log(&format!("worker {}: accept failed: {e}", w.id));
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Wakes the tasks that yielded ([`Worker::yield_now`]) each time it is
/// woken, from behind the tasks that were queued before it.
async fn yield_pump(w: Rc<Worker>) {
    let mut woken = Vec::new();
    poll_fn(move |cx| {
        std::mem::swap(&mut woken, &mut *w.yielded.borrow_mut());
        for waker in woken.drain(..) {
            waker.wake();
        }
        *w.yield_pump.borrow_mut() = Some(cx.waker().clone());
        Poll::<()>::Pending
    })
    .await;
}

/// At each second boundary: refresh the `Date` value, run the reaper
/// (expired timeouts; during a drain, connections gone idle) and the
/// service's [`LocalService::tick`].
async fn clock<L: LocalService>(w: Rc<Worker>, local: Rc<L>) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let to_next = Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos()));
        monoio::time::sleep(to_next).await;
        w.date.set(HttpDate::now());
        w.buffers.trim(POOL_FLOOR);
        w.slab.trim(POOL_FLOOR);
        w.publish();
        w.reaper
            .tick(std::time::Instant::now(), w.drain.is_draining());
        local.tick();
    }
}

/// Writes one line to the log (stderr), prefixed `ringgate: `.
pub fn log(msg: &str) {
    eprintln!("ringgate: {msg}");
}
