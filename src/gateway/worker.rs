//! One worker's gateway state ([`GatewayWorker`]), shared by the worker's
//! connections: the snapshot handle, the head and body limits, the pool of
//! backend connections, the request-id generator and the worker's row of
//! outcome counters.

#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use super::outcome::{Outcome, OutcomeTable};
use super::request_id::{entropy_seed, IdGenerator, RequestId};
use super::service::Published;
use super::snapshot::Snapshot;
use crate::http::HeadLimits;
use crate::observe::access_log::{AccessLog, ClfClock, LogBuffer};
use crate::observe::metrics::{Metrics, Sample};
use crate::throttle::now_ns;
use crate::tls::TlsAcceptor;
use crate::upstream::pool::Pool;

/// One worker's gateway state, shared by the worker's connections.
pub struct GatewayWorker {
    id: usize,
    /// Where the control side publishes new snapshots.
    published: Arc<Published>,
    /// The snapshot new requests start on, and its generation. A request
    /// holds its own `Rc`: a non-atomic count, where cloning the `Arc` would
    /// make every worker write the snapshot's shared count per request.
    #[allow(clippy::redundant_allocation)]
    current: RefCell<Rc<Arc<Snapshot>>>,
    generation: Cell<u64>,
    /// xorshift64* state for canary rolls.
    rng: Cell<u64>,
    /// Limits on a request head.
    pub(super) head_limits: HeadLimits,
    /// Largest request body accepted.
    pub(super) max_body: u64,
    /// Keep-alive connections to backends.
    pub(super) pool: Pool,
    ids: RefCell<IdGenerator>,
    outcomes: Arc<OutcomeTable>,
    /// Per-series metrics, when `[metrics] enabled`.
    pub(super) metrics: Option<Arc<Metrics>>,
    /// The worker's access log lines and CLF clock, when `[access_log]`
    /// is set.
    pub(super) log: Option<RefCell<WorkerLog>>,
    /// `[server] health_path`, if set, and how many workers there are.
    pub(super) health_path: Option<(Box<str>, usize)>,
    /// The TLS listeners' certificates: a request's `Host` is checked
    /// against the one its connection's handshake chose.
    pub(super) tls: Option<Arc<TlsAcceptor>>,
    /// Debug builds: honour `x-ringgate-fault`.
    #[cfg(debug_assertions)]
    pub(super) fault_injection: bool,
}

impl GatewayWorker {
    /// The snapshot a request starting now runs on: the last published
    /// one. Costs one atomic load when nothing changed.
    #[inline]
    #[allow(clippy::redundant_allocation)]
    pub(super) fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        if self.published.generation() != self.generation.get() {
            let (generation, snapshot) = self.published.load();
            self.generation.set(generation);
            *self.current.borrow_mut() = Rc::new(snapshot);
        }
        self.current.borrow().clone()
    }

    /// A uniform random `u32` (xorshift64*), for canary selection.
    pub(super) fn roll(&self) -> u32 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// The client's request id if sane, else a new one.
    #[inline]
    pub(super) fn new_request_id<'a>(&self, client: Option<&'a [u8]>) -> RequestId<'a> {
        self.ids.borrow_mut().from_client_or_new(client)
    }

    /// The worker's id (its row in per-worker counters).
    #[inline]
    pub(super) fn id(&self) -> usize {
        self.id
    }

    /// Counts how a request ended; with metrics on, times and counts it
    /// under its series too.
    #[inline]
    pub(super) fn record(&self, outcome: Outcome, sample: Option<&Sample>) {
        self.outcomes.record(self.id, outcome);
        if let (Some(m), Some(s)) = (&self.metrics, sample) {
            m.record(self.id, s);
        }
    }
}

/// `[server] health_path` and how many workers there are.
type HealthPath = Option<(Box<str>, usize)>;

/// One worker's access log state.
pub(super) struct WorkerLog {
    /// Lines not yet shipped to the writer.
    pub lines: LogBuffer,
    /// `$context.requestTime`, formatted once a second.
    pub clock: ClfClock,
    /// Wall-clock time minus the monotonic clock ([`now_ns`]), in ns,
    /// refreshed each second: a request's start on the monotonic clock
    /// plus this is its wall-clock time, without a second clock read.
    pub epoch_offset_ns: u64,
}

impl WorkerLog {
    /// The wall-clock offset of the monotonic clock now.
    fn epoch_offset_ns() -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        wall.saturating_sub(now_ns())
    }

    /// Milliseconds since the epoch at `mono_ns` on the monotonic clock.
    pub fn epoch_ms(&self, mono_ns: u64) -> u64 {
        (mono_ns + self.epoch_offset_ns) / 1_000_000
    }
}

impl GatewayWorker {
    /// Ships the buffered access log lines to the writer (each second, and
    /// when the worker stops).
    pub(super) fn flush_log(&self) {
        if let Some(l) = &self.log {
            let mut l = l.borrow_mut();
            l.lines.flush();
            l.epoch_offset_ns = WorkerLog::epoch_offset_ns();
        }
    }
}

impl GatewayWorker {
    /// Worker `id`'s state: `limits` are the head limits and the largest
    /// body accepted.
    pub(super) fn new(
        id: usize,
        published: Arc<Published>,
        (head_limits, max_body): (HeadLimits, u64),
        outcomes: Arc<OutcomeTable>,
        (metrics, log): (Option<Arc<Metrics>>, Option<&AccessLog>),
        (health_path, tls): (HealthPath, Option<Arc<TlsAcceptor>>),
        #[cfg(debug_assertions)] fault_injection: bool,
    ) -> GatewayWorker {
        let (generation, snapshot) = published.load();
        GatewayWorker {
            id,
            published,
            current: RefCell::new(Rc::new(snapshot)),
            generation: Cell::new(generation),
            rng: Cell::new(entropy_seed() | 1),
            head_limits,
            max_body,
            pool: Pool::new(),
            ids: RefCell::new(IdGenerator::new(entropy_seed() ^ ((id as u64) << 56))),
            outcomes,
            metrics,
            log: log.map(|l| {
                RefCell::new(WorkerLog {
                    lines: l.buffer(),
                    clock: ClfClock::new(),
                    epoch_offset_ns: WorkerLog::epoch_offset_ns(),
                })
            }),
            health_path,
            tls,
            #[cfg(debug_assertions)]
            fault_injection,
        }
    }
}
