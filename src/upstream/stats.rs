//! What the gateway counts about its backends: why a forward failed
//! ([`FailReason`]), and per-target counters ([`TargetCounters`]) summed on
//! demand into [`Counts`] for the metrics page ([`super::Registry::stats`]).
//!
//! Counting is on the request path, so it follows the outcome table's
//! rules (`gateway::outcome`): each [`super::Target`] has one row of
//! counters per worker, each row padded to its own cache lines, and only
//! the worker that forwards writes its row — a relaxed load and a relaxed
//! store per counter, no locked instruction, no line shared between
//! workers. The worker's row is looked up once per forward
//! ([`TargetCounters::row`]); a worker id past the rows gets a [`Tally`]
//! that counts nothing (never a panic). Readers on any thread add the rows
//! up ([`TargetCounters::snapshot`]); a sum read while workers count may
//! miss the latest few increments, never more.
//!
//! Ejections (passive health) are rare and may happen on any worker: they
//! are one shared atomic per target.
//!
//! The counters live in their own `Arc`, apart from the [`super::Target`]:
//! a reload that renumbers the targets carries each target's counters over
//! to the target of the same group and authority (see
//! [`super::Registry::from_config_reusing`]), so Prometheus counters never
//! go back on a reload.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::utils::CachePadded;

/// Why a forward failed or was cut off: a metrics label and a log word
/// ([`FailReason::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// Every target of the group was ejected or unhealthy (no target is
    /// charged with it).
    NoHealthyTarget,
    /// The target refused the connection.
    ConnectRefused,
    /// No connection within the group's `connect_timeout`.
    ConnectTimeout,
    /// Any other connect failure: unreachable, unresolved name, a
    /// connection that broke mid-TLS-handshake, …
    ConnectError,
    /// An HTTPS backend's certificate was refused: untrusted, expired, or
    /// not for the name (502).
    TlsCertificate,
    /// An HTTPS backend's handshake failed otherwise: an alert, nothing in
    /// common, bytes that are not TLS (502).
    TlsHandshake,
    /// The backend reset or closed the connection before a response head.
    Reset,
    /// No response head within the route's integration timeout (or the
    /// backend stopped taking the request).
    Timeout,
    /// The backend's response head could not be parsed or framed.
    BadResponse,
    /// The backend failed mid-body (closed, reset, stalled past the
    /// timeout, bad chunking) after the head had gone to the client.
    CutOff,
    /// The client's body was malformed, too large or stalled, or the client
    /// left before the response head: not the backend's fault (passive
    /// health does not count it).
    ClientBody,
}

impl FailReason {
    /// How many reasons there are.
    pub const COUNT: usize = 11;

    /// Every reason, in [`FailReason::index`] order.
    pub const ALL: [FailReason; FailReason::COUNT] = [
        FailReason::NoHealthyTarget,
        FailReason::ConnectRefused,
        FailReason::ConnectTimeout,
        FailReason::ConnectError,
        FailReason::TlsCertificate,
        FailReason::TlsHandshake,
        FailReason::Reset,
        FailReason::Timeout,
        FailReason::BadResponse,
        FailReason::CutOff,
        FailReason::ClientBody,
    ];

    /// The reason's name: `no_healthy_target`, `connect_refused`,
    /// `connect_timeout`, `connect_error`, `reset`, `timeout`,
    /// `bad_response`, `cut_off` or `client_body`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailReason::NoHealthyTarget => "no_healthy_target",
            FailReason::ConnectRefused => "connect_refused",
            FailReason::ConnectTimeout => "connect_timeout",
            FailReason::ConnectError => "connect_error",
            FailReason::TlsCertificate => "tls_certificate",
            FailReason::TlsHandshake => "tls_handshake",
            FailReason::Reset => "reset",
            FailReason::Timeout => "timeout",
            FailReason::BadResponse => "bad_response",
            FailReason::CutOff => "cut_off",
            FailReason::ClientBody => "client_body",
        }
    }

    /// A dense index in `0..COUNT`, the position in [`FailReason::ALL`].
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds (inclusive, nanoseconds) of the connect-time buckets:
/// 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500 and 1000 ms; a last bucket
/// (`+Inf`) takes the rest.
pub const CONNECT_BUCKETS_NS: [u64; 11] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];

/// Connect-time buckets, `+Inf` included.
pub const BUCKETS: usize = CONNECT_BUCKETS_NS.len() + 1;

/// One worker's counters for one target.
#[derive(Debug, Default)]
struct Row {
    requests: AtomicU64,
    /// By status class: 1xx at 0 … 5xx at 4.
    responses: [AtomicU64; 5],
    /// Sum of the integration latencies of those responses.
    integration_ns: AtomicU64,
    failures: [AtomicU64; FailReason::COUNT],
    reused: AtomicU64,
    stale_retries: AtomicU64,
    connect_ns: AtomicU64,
    /// New connections by connect time (not cumulative).
    connect_buckets: [AtomicU64; BUCKETS],
}

/// Adds one to a counter only this thread writes: a load and a store.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// A target's counters: one cache-padded row per worker, and the shared
/// ejection count.
#[derive(Debug)]
pub struct TargetCounters {
    rows: Box<[CachePadded<Row>]>,
    ejections: AtomicU64,
}

impl TargetCounters {
    /// Counters with rows for `workers` workers (at least one).
    pub fn new(workers: usize) -> TargetCounters {
        TargetCounters {
            rows: (0..workers.max(1))
                .map(|_| CachePadded::new(Row::default()))
                .collect(),
            ejections: AtomicU64::new(0),
        }
    }

    /// How many workers have a row.
    pub fn workers(&self) -> usize {
        self.rows.len()
    }

    /// Worker `worker`'s row, to count one forward with. Only that
    /// worker's thread may count through it; past the rows it counts
    /// nothing.
    #[inline]
    pub fn row(&self, worker: usize) -> Tally<'_> {
        Tally(self.rows.get(worker).map(|r| &**r))
    }

    /// Counts a passive-health ejection (any thread).
    pub fn ejected(&self) {
        self.ejections.fetch_add(1, Ordering::Relaxed);
    }

    /// The sums over all rows, now.
    pub fn snapshot(&self) -> Counts {
        let mut c = Counts::default();
        let add = |total: &mut u64, a: &AtomicU64| *total += a.load(Ordering::Relaxed);
        for row in self.rows.iter() {
            add(&mut c.requests, &row.requests);
            for (t, a) in c.responses.iter_mut().zip(&row.responses) {
                add(t, a);
            }
            add(&mut c.integration_ns, &row.integration_ns);
            for (t, a) in c.failures.iter_mut().zip(&row.failures) {
                add(t, a);
            }
            add(&mut c.reused, &row.reused);
            add(&mut c.stale_retries, &row.stale_retries);
            add(&mut c.connect_ns, &row.connect_ns);
            for (t, a) in c.connect_buckets.iter_mut().zip(&row.connect_buckets) {
                add(t, a);
            }
        }
        c.ejections = self.ejections.load(Ordering::Relaxed);
        c
    }
}

/// One worker's row of a target's counters, for one forward: each method
/// is a relaxed load and store (nothing at all for a worker without a
/// row). `Copy`, so it is looked up once and passed around.
#[derive(Clone, Copy, Debug)]
pub struct Tally<'a>(Option<&'a Row>);

impl Tally<'_> {
    /// A row that counts nothing.
    pub const NONE: Tally<'static> = Tally(None);

    /// A request sent (or about to be sent) to the target.
    #[inline]
    pub fn request(self) {
        if let Some(r) = self.0 {
            bump(&r.requests, 1);
        }
    }

    /// A final response head with `status` arrived `integration_ns` after
    /// the request's first byte went out.
    #[inline]
    pub fn response(self, status: u16, integration_ns: u64) {
        if let Some(r) = self.0 {
            if let Some(c) = r.responses.get(usize::from(status / 100).wrapping_sub(1)) {
                bump(c, 1);
            }
            bump(&r.integration_ns, integration_ns);
        }
    }

    /// The forward failed (or was cut off) for `reason`.
    #[inline]
    pub fn failure(self, reason: FailReason) {
        if let Some(r) = self.0 {
            bump(&r.failures[reason.index()], 1);
        }
    }

    /// A pooled connection was taken.
    #[inline]
    pub fn reused(self) {
        if let Some(r) = self.0 {
            bump(&r.reused, 1);
        }
    }

    /// A pooled connection was stale: the request went again on a new one.
    #[inline]
    pub fn stale_retry(self) {
        if let Some(r) = self.0 {
            bump(&r.stale_retries, 1);
        }
    }

    /// A new connection was opened in `ns`.
    #[inline]
    pub fn connected(self, ns: u64) {
        if let Some(r) = self.0 {
            bump(&r.connect_ns, ns);
            let b = CONNECT_BUCKETS_NS
                .iter()
                .position(|&le| ns <= le)
                .unwrap_or(BUCKETS - 1);
            bump(&r.connect_buckets[b], 1);
        }
    }
}

/// A target's counters summed over the workers. Every field only grows
/// (also across reloads, see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Forwards that picked this target.
    pub requests: u64,
    /// Final response heads received, by status class: `[0]` 1xx (a
    /// `101` switch), `[1]` 2xx … `[4]` 5xx. A response then cut off counts
    /// here and as [`FailReason::CutOff`].
    pub responses: [u64; 5],
    /// Sum of the integration latencies (ns, first request byte written to
    /// response head received) of those responses: with their count, a
    /// Prometheus summary.
    pub integration_ns: u64,
    /// Failures by [`FailReason::index`] (see [`Counts::failures`]).
    pub failures: [u64; FailReason::COUNT],
    /// Requests that went over a pooled keep-alive connection (stale ones
    /// included).
    pub reused: u64,
    /// Of those, connections found closed by the backend, the request sent
    /// again on a new connection.
    pub stale_retries: u64,
    /// Sum of the connect times (ns) of the new connections.
    pub connect_ns: u64,
    /// New connections by connect time, per bucket (not cumulative): index
    /// `i` counts connects of at most [`CONNECT_BUCKETS_NS`]`[i]` and more
    /// than the bound before; the last, the slower ones (`+Inf`).
    pub connect_buckets: [u64; BUCKETS],
    /// Times passive health ejected the target.
    pub ejections: u64,
}

impl Counts {
    /// Failures counted for `reason`.
    pub fn failures(&self, reason: FailReason) -> u64 {
        self.failures[reason.index()]
    }

    /// Responses with a status in `class` (1 for 1xx … 5 for 5xx; 0 for
    /// another).
    pub fn responses(&self, class: u16) -> u64 {
        usize::from(class)
            .checked_sub(1)
            .and_then(|i| self.responses.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// New connections opened (the connect-time count).
    pub fn connections_opened(&self) -> u64 {
        self.connect_buckets.iter().sum()
    }

    /// The connect-time buckets as Prometheus wants them: `(le in
    /// seconds, connects at most that long)`, cumulative, ending with
    /// `(f64::INFINITY, connections_opened)`.
    pub fn connect_histogram(&self) -> [(f64, u64); BUCKETS] {
        let mut total = 0;
        std::array::from_fn(|i| {
            total += self.connect_buckets[i];
            let le = CONNECT_BUCKETS_NS
                .get(i)
                .map_or(f64::INFINITY, |&ns| ns as f64 / 1e9);
            (le, total)
        })
    }
}

/// What active health says about a target now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    /// Active checks pass (or have not failed enough yet).
    Healthy,
    /// Active checks failed: out of rotation until they pass again.
    Unhealthy,
    /// The group has no active check.
    Unchecked,
}

impl HealthState {
    /// `healthy`, `unhealthy` or `unchecked`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Unchecked => "unchecked",
        }
    }
}

/// One target's figures, for the metrics page ([`super::Registry::stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStats {
    /// The group's name: the `[[upstream]]` name, or the `host:port` of an
    /// implicit group.
    pub group: String,
    /// The target's `host:port`, as configured.
    pub authority: String,
    /// Its counters, summed over the workers.
    pub counts: Counts,
    /// Requests in flight to it now, all workers together.
    pub in_flight: usize,
    /// Whether passive health has it ejected now.
    pub ejected: bool,
    /// What active health says about it now.
    pub health: HealthState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_dense_and_named_once() {
        let mut names = std::collections::HashSet::new();
        for (i, r) in FailReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(names.insert(r.as_str()), "{}", r.as_str());
        }
        assert_eq!(names.len(), FailReason::COUNT);
    }

    #[test]
    fn rows_are_summed_and_unknown_workers_ignored() {
        let c = TargetCounters::new(2);
        assert_eq!(c.workers(), 2);
        let (w0, w1) = (c.row(0), c.row(1));
        w0.request();
        w1.request();
        w1.request();
        w0.response(200, 1_000);
        w1.response(204, 2_000);
        w1.response(503, 500);
        w1.response(101, 0);
        w0.response(999, 0); // no such class: only its latency counts
        w0.failure(FailReason::ConnectRefused);
        w1.failure(FailReason::ConnectRefused);
        w1.failure(FailReason::CutOff);
        w0.reused();
        w1.reused();
        w1.stale_retry();
        w0.connected(400_000); // 0.4 ms
        w1.connected(1_000_000); // exactly 1 ms: the 1 ms bucket
        w1.connected(3_000_000_000); // 3 s: +Inf
        c.ejected();
        // No such worker: counts nothing, never panics.
        let w9 = c.row(9);
        w9.request();
        w9.response(200, 5);
        w9.failure(FailReason::Reset);
        w9.connected(1);
        Tally::NONE.request();

        let s = c.snapshot();
        assert_eq!(s.requests, 3);
        assert_eq!(s.responses, [1, 2, 0, 0, 1]);
        assert_eq!((s.responses(2), s.responses(5), s.responses(0)), (2, 1, 0));
        assert_eq!(s.integration_ns, 3_500);
        assert_eq!(s.failures(FailReason::ConnectRefused), 2);
        assert_eq!(s.failures(FailReason::CutOff), 1);
        assert_eq!(s.failures(FailReason::Reset), 0);
        assert_eq!((s.reused, s.stale_retries), (2, 1));
        assert_eq!(s.connections_opened(), 3);
        assert_eq!(s.connect_ns, 3_001_400_000);
        assert_eq!(s.connect_buckets[0], 1);
        assert_eq!(s.connect_buckets[1], 1);
        assert_eq!(s.connect_buckets[BUCKETS - 1], 1);
        assert_eq!(s.ejections, 1);
        let h = s.connect_histogram();
        assert_eq!(h[0], (0.0005, 1));
        assert_eq!(h[1], (0.001, 2));
        assert_eq!(h[BUCKETS - 2], (1.0, 2));
        assert_eq!(h[BUCKETS - 1], (f64::INFINITY, 3));
    }

    #[test]
    fn rows_do_not_share_cache_lines() {
        assert!(std::mem::align_of::<CachePadded<Row>>() >= 64);
        let c = TargetCounters::new(3);
        let a = &*c.rows[0] as *const Row as usize;
        let b = &*c.rows[1] as *const Row as usize;
        assert!(b - a >= std::mem::size_of::<Row>().next_multiple_of(64));
    }
}
