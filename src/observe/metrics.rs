//! Request metrics: counts and latency histograms per API, stage (and
//! route, where a stage turns detailed metrics on) and canary, recorded by
//! each worker into cells only it writes, merged only when read.
//!
//! ## Series
//! A *series* is one label set ([`SeriesLabels`]: api, stage, route,
//! canary). A [`Snapshot`](crate::gateway::Snapshot) lists the label sets
//! its stages need, by a dense index of its own; when it is published,
//! [`Metrics::register`] gives each a process-wide id, the same id for the
//! same labels in every later snapshot, so counts survive reloads and
//! deployments (Prometheus counters never go back). Series 0 counts
//! requests no stage answered (unknown host, base path or stage);
//! [`OVERFLOW`] takes every label set past [`MAX_SERIES`].
//!
//! ## Cells
//! Each worker has its own [`SeriesCells`] per series, allocated when the
//! series is registered (on the control side, before any worker can see
//! the id): status-class counts, outcome counts, and two
//! [`LatencyHistogram`]s (Latency: the whole request; IntegrationLatency:
//! the backend's part). A worker is the only writer of its cells, so a
//! count is a relaxed load and store (no locked instruction), no lock is
//! taken and no cache line is written by two cores. Readers sum the
//! workers' cells ([`Metrics::read`]).
//!
//! ## Histograms
//! Log-linear buckets over microseconds, as HdrHistogram lays them out:
//! exact below 64 µs, then 32 buckets per power of two (each bucket within
//! 1/32 ≈ 3 % of its values), up to 2^32 µs (71 minutes; longer is
//! counted there). A read merges the workers' buckets into an
//! [`hdrhistogram::Histogram`] for the percentiles, and sums them under
//! the Prometheus `le` bounds ([`PROM_BOUNDS_US`]): a bucket is counted
//! under the first bound its highest value does not exceed, so a bucket
//! that straddles a bound is reported above it (never faster than it was).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use crossbeam::utils::CachePadded;

use crate::gateway::outcome::{Outcome, KINDS};
use crate::upstream::stats::FailReason;

/// Most series a process records; later label sets count under
/// [`OVERFLOW`].
pub const MAX_SERIES: usize = 4096;

/// The series of requests no stage answered.
pub const UNROUTED: u32 = 0;

/// The series every label set past [`MAX_SERIES`] counts under.
pub const OVERFLOW: u32 = 1;

/// Values below this many microseconds have a bucket each.
const LINEAR: u64 = 64;
/// Buckets per power of two above [`LINEAR`] (2^5).
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// The largest value recorded as itself (2^32 - 1 µs).
const MAX_US: u64 = (1 << 32) - 1;
/// Buckets in a histogram: 64 linear, then 32 for each of 2^6 … 2^31.
pub const BUCKETS: usize = LINEAR as usize + (32 - 6) * SUB;

/// The Prometheus `le` bounds, in microseconds (0.5 ms to 60 s; `+Inf`
/// follows).
pub const PROM_BOUNDS_US: [u64; 15] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 60_000_000,
];

/// The bucket of `us` microseconds.
#[inline]
pub fn bucket_of(us: u64) -> usize {
    let v = us.min(MAX_US);
    if v < LINEAR {
        v as usize
    } else {
        // p ≥ 6: the power of two v lies in; the top SUB_BITS + 1 bits of v
        // give its place within the octave.
        let p = 63 - v.leading_zeros();
        let sub = (v >> (p - SUB_BITS)) as usize - SUB;
        LINEAR as usize + (p as usize - 6) * SUB + sub
    }
}

/// The lowest and highest values bucket `i` holds.
pub fn bucket_range(i: usize) -> (u64, u64) {
    if i < LINEAR as usize {
        return (i as u64, i as u64);
    }
    let octave = (i - LINEAR as usize) / SUB;
    let sub = ((i - LINEAR as usize) % SUB) as u64;
    let p = octave as u32 + 6;
    let width = 1u64 << (p - SUB_BITS);
    let low = (1u64 << p) + sub * width;
    (low, low + width - 1)
}

/// A single writer's `+= n` on a counter: load and store, no locked
/// instruction (only the owning worker writes it).
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// One worker's latency histogram for one series.
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64; BUCKETS]>,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records `us` microseconds (owner only).
    #[inline]
    pub fn record(&self, us: u64) {
        bump(&self.buckets[bucket_of(us)], 1);
        bump(&self.sum_us, us);
        if us > self.max_us.load(Ordering::Relaxed) {
            self.max_us.store(us, Ordering::Relaxed);
        }
    }

    fn add_to(&self, into: &mut HistogramRead) {
        for (total, b) in into.buckets.iter_mut().zip(self.buckets.iter()) {
            *total += b.load(Ordering::Relaxed);
        }
        into.sum_us += self.sum_us.load(Ordering::Relaxed);
        into.max_us = into.max_us.max(self.max_us.load(Ordering::Relaxed));
    }
}

/// Status classes counted: 1xx to 5xx.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One worker's cells for one series.
pub struct SeriesCells {
    /// Responses by status class (index `status / 100 - 1`).
    status: [AtomicU64; 5],
    /// Requests by [`Outcome`] kind.
    outcomes: [AtomicU64; KINDS],
    /// The whole request, head parsed to response written.
    latency: LatencyHistogram,
    /// The backend's part: request sent to response head parsed.
    integration: LatencyHistogram,
}

impl Default for SeriesCells {
    fn default() -> Self {
        SeriesCells {
            status: std::array::from_fn(|_| AtomicU64::new(0)),
            outcomes: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: LatencyHistogram::default(),
            integration: LatencyHistogram::default(),
        }
    }
}

/// A series' labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesLabels {
    /// The API's name (empty for [`UNROUTED`]).
    pub api: Box<str>,
    /// The stage's name (empty for [`UNROUTED`]).
    pub stage: Box<str>,
    /// The route key (`GET /pets/{id}`) when the stage records detailed
    /// metrics; empty otherwise (and for requests no route matched).
    pub route: Box<str>,
    /// The stage's canary answered.
    pub canary: bool,
}

impl SeriesLabels {
    /// A stage-wide (or route, when `route` is not empty) label set.
    pub fn new(api: &str, stage: &str, route: &str, canary: bool) -> SeriesLabels {
        SeriesLabels {
            api: api.into(),
            stage: stage.into(),
            route: route.into(),
            canary,
        }
    }
}

/// What a worker records of one request.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// The series ([`Metrics::register`]'s id).
    pub series: u32,
    /// The response's status (0: none was sent).
    pub status: u16,
    /// How it ended.
    pub outcome: Outcome,
    /// Head parsed to response written, in microseconds (`None` for a
    /// request whose head could not be parsed).
    pub latency_us: Option<u64>,
    /// The backend's part, when a backend was asked and answered.
    pub integration_us: Option<u64>,
}

/// One worker's cells: a slot per series id, filled on registration.
struct WorkerCells {
    slots: Box<[OnceLock<Box<CachePadded<SeriesCells>>>]>,
}

/// Ids by label set (control side only).
#[derive(Default)]
struct Names {
    ids: HashMap<SeriesLabels, u32>,
    labels: Vec<SeriesLabels>,
}

/// Why the gateway answered a 5xx of its own: the forward's
/// [`FailReason`]s, then `api_configuration` (a stage variable or backend
/// the route needs is missing) and `other`.
pub const ERROR_REASONS: [&str; FailReason::COUNT + 2] = {
    let mut names = [""; FailReason::COUNT + 2];
    let mut i = 0;
    while i < FailReason::COUNT {
        names[i] = FailReason::ALL[i].as_str();
        i += 1;
    }
    names[FailReason::COUNT] = "api_configuration";
    names[FailReason::COUNT + 1] = "other";
    names
};

/// Every worker's request metrics.
pub struct Metrics {
    /// Record per-series cells at all (`[metrics] enabled`).
    enabled: bool,
    names: Mutex<Names>,
    workers: Box<[WorkerCells]>,
    /// Gateway 5xx answers by [`ERROR_REASONS`] index, a row per worker.
    reasons: Box<[CachePadded<[AtomicU64; ERROR_REASONS.len()]>]>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.enabled)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Cells for `workers` workers; `enabled: false` records nothing (the
    /// `[metrics] enabled = false` setting).
    pub fn new(workers: usize, enabled: bool) -> Metrics {
        let m = Metrics {
            enabled,
            reasons: (0..workers.max(1))
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            names: Mutex::new(Names::default()),
            workers: (0..workers.max(1))
                .map(|_| WorkerCells {
                    slots: (0..MAX_SERIES).map(|_| OnceLock::new()).collect(),
                })
                .collect(),
        };
        let unrouted = m.register(&[SeriesLabels::new("", "", "", false)]);
        debug_assert_eq!(unrouted[0], UNROUTED);
        let overflow = m.register(&[SeriesLabels::new("_overflow", "", "", false)]);
        debug_assert_eq!(overflow[0], OVERFLOW);
        m
    }

    /// Whether requests are recorded.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The ids of `labels`, registering the new ones (their cells are
    /// allocated for every worker before this returns).
    pub fn register(&self, labels: &[SeriesLabels]) -> Box<[u32]> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        labels
            .iter()
            .map(|l| {
                if let Some(&id) = names.ids.get(l) {
                    return id;
                }
                let id = names.labels.len();
                if id >= MAX_SERIES {
                    return OVERFLOW;
                }
                if self.enabled || id <= OVERFLOW as usize {
                    for w in self.workers.iter() {
                        let _ = w.slots[id].set(Box::default());
                    }
                }
                names.labels.push(l.clone());
                names.ids.insert(l.clone(), id as u32);
                id as u32
            })
            .collect()
    }

    /// Records one request for `worker` (owner only: a worker records into
    /// its own cells). An unknown worker or series is ignored.
    #[inline]
    pub fn record(&self, worker: usize, s: &Sample) {
        let Some(cells) = self
            .workers
            .get(worker)
            .and_then(|w| w.slots.get(s.series as usize))
            .and_then(|slot| slot.get())
        else {
            return;
        };
        if let Some(c) = (s.status / 100)
            .checked_sub(1)
            .and_then(|i| cells.status.get(i as usize))
        {
            bump(c, 1);
        }
        bump(&cells.outcomes[s.outcome.index()], 1);
        if let Some(us) = s.latency_us {
            cells.latency.record(us);
        }
        if let Some(us) = s.integration_us {
            cells.integration.record(us);
        }
    }

    /// Counts a 5xx the gateway answered itself, by why: the forward's
    /// `reason` when it has one, else `api_configuration` for a 500 or
    /// `other` (owner only).
    #[inline]
    pub fn record_error(&self, worker: usize, reason: Option<FailReason>, status: u16) {
        let i = match reason {
            Some(r) => r.index(),
            None if status == 500 => FailReason::COUNT,
            None => FailReason::COUNT + 1,
        };
        if let Some(row) = self.reasons.get(worker) {
            bump(&row[i], 1);
        }
    }

    /// Gateway 5xx answers by reason (names in [`ERROR_REASONS`]), summed
    /// over the workers.
    pub fn error_reasons(&self) -> [u64; ERROR_REASONS.len()] {
        let mut out = [0; ERROR_REASONS.len()];
        for row in self.reasons.iter() {
            for (t, c) in out.iter_mut().zip(row.iter()) {
                *t += c.load(Ordering::Relaxed);
            }
        }
        out
    }

    /// Every registered series' figures, summed over the workers, in
    /// registration order (series with no request are left out).
    pub fn read(&self) -> Vec<SeriesRead> {
        let labels = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .labels
            .clone();
        let mut out = Vec::new();
        for (id, labels) in labels.into_iter().enumerate() {
            let mut r = SeriesRead::new(labels);
            for w in self.workers.iter() {
                let Some(cells) = w.slots[id].get() else {
                    continue;
                };
                for (t, c) in r.status.iter_mut().zip(cells.status.iter()) {
                    *t += c.load(Ordering::Relaxed);
                }
                for (t, c) in r.outcomes.iter_mut().zip(cells.outcomes.iter()) {
                    *t += c.load(Ordering::Relaxed);
                }
                cells.latency.add_to(&mut r.latency);
                cells.integration.add_to(&mut r.integration);
            }
            if r.outcomes.iter().any(|&n| n > 0) {
                out.push(r);
            }
        }
        out
    }
}

/// One series' figures over all workers.
#[derive(Clone, Debug)]
pub struct SeriesRead {
    /// Its labels.
    pub labels: SeriesLabels,
    /// Responses by status class ([`STATUS_CLASSES`]).
    pub status: [u64; 5],
    /// Requests by [`Outcome`] kind ([`Outcome::from_index`]).
    pub outcomes: [u64; KINDS],
    /// Latency.
    pub latency: HistogramRead,
    /// IntegrationLatency.
    pub integration: HistogramRead,
}

impl SeriesRead {
    fn new(labels: SeriesLabels) -> SeriesRead {
        SeriesRead {
            labels,
            status: [0; 5],
            outcomes: [0; KINDS],
            latency: HistogramRead::default(),
            integration: HistogramRead::default(),
        }
    }

    /// Requests counted (every outcome).
    pub fn count(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Requests that ended with `outcome`'s kind.
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome.index()]
    }

    /// CacheHitCount: answered from the stage cache (stale answers
    /// included).
    pub fn cache_hits(&self) -> u64 {
        self.outcome(Outcome::CacheHit) + self.outcome(Outcome::CacheStale)
    }

    /// CacheMissCount: sent to the backend on a caching route (misses,
    /// `max-age=0` refreshes, and lock-timeout bypasses).
    pub fn cache_misses(&self) -> u64 {
        self.outcome(Outcome::CacheMiss)
            + self.outcome(Outcome::CacheRefresh)
            + self.outcome(Outcome::CacheBypass)
    }
}

/// A histogram summed over the workers.
#[derive(Clone, Debug)]
pub struct HistogramRead {
    /// Counts per bucket ([`bucket_range`]).
    pub buckets: Vec<u64>,
    /// Sum of the values, µs.
    pub sum_us: u64,
    /// The largest value, µs.
    pub max_us: u64,
}

impl Default for HistogramRead {
    fn default() -> Self {
        HistogramRead {
            buckets: vec![0; BUCKETS],
            sum_us: 0,
            max_us: 0,
        }
    }
}

impl HistogramRead {
    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Cumulative counts under each of [`PROM_BOUNDS_US`], then the total
    /// (`+Inf`).
    pub fn cumulative(&self) -> [u64; PROM_BOUNDS_US.len() + 1] {
        let mut out = [0u64; PROM_BOUNDS_US.len() + 1];
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let high = bucket_range(i).1;
            let slot = PROM_BOUNDS_US
                .iter()
                .position(|&b| high <= b)
                .unwrap_or(PROM_BOUNDS_US.len());
            out[slot] += n;
        }
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }

    /// The merged histogram, for percentiles (each bucket's values at its
    /// highest value; `None` when nothing was recorded).
    pub fn hdr(&self) -> Option<hdrhistogram::Histogram<u64>> {
        if self.count() == 0 {
            return None;
        }
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, MAX_US, 3).ok()?;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 {
                h.saturating_record_n(bucket_range(i).1.max(1), n);
            }
        }
        Some(h)
    }

    /// p50, p90, p99, p99.9 (bucket precision) and the exact max, in
    /// microseconds; `None` when nothing was recorded.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let h = self.hdr()?;
        // The highest bucket holding a value is at most the max: report
        // the exact max rather than its bucket's top.
        let q = |q: f64| h.value_at_quantile(q).min(self.max_us.max(1));
        Some(Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: self.max_us,
        })
    }
}

/// Latency percentiles, microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// The slowest.
    pub max: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::GatewayError;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_range(i);
            assert!(lo <= hi);
            if i > 0 {
                assert_eq!(lo, last + 1, "bucket {i}");
            }
            assert_eq!(bucket_of(lo), i);
            assert_eq!(bucket_of(hi), i);
            // Within 1/32 of the values it holds.
            assert!((hi - lo) * 32 <= lo.max(1), "bucket {i}: {lo}..{hi}");
            last = hi;
        }
        assert_eq!(last, MAX_US);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn records_and_merges_workers() {
        let m = Metrics::new(2, true);
        let ids = m.register(&[
            SeriesLabels::new("a", "prod", "", false),
            SeriesLabels::new("a", "prod", "", true),
        ]);
        assert_eq!(&*ids, &[2, 3]);
        // The same labels keep their id.
        assert_eq!(
            &*m.register(&[SeriesLabels::new("a", "prod", "", true)]),
            &[3]
        );
        for i in 0..100u64 {
            m.record(
                (i % 2) as usize,
                &Sample {
                    series: 2,
                    status: 200,
                    outcome: Outcome::Proxied,
                    latency_us: Some(1_000 + i),
                    integration_us: Some(500 + i),
                },
            );
        }
        m.record(
            0,
            &Sample {
                series: 2,
                status: 504,
                outcome: Outcome::Error(GatewayError::IntegrationTimeout),
                latency_us: Some(29_000_000),
                integration_us: None,
            },
        );
        m.record(
            5,
            &Sample {
                series: 2,
                status: 200,
                outcome: Outcome::Mock,
                latency_us: Some(1),
                integration_us: None,
            },
        );
        let read = m.read();
        assert_eq!(read.len(), 1, "series with no request are left out");
        let r = &read[0];
        assert_eq!(r.count(), 101);
        assert_eq!(r.status, [0, 100, 0, 0, 1]);
        assert_eq!(r.latency.count(), 101);
        assert_eq!(r.integration.count(), 100);
        assert_eq!(r.latency.max_us, 29_000_000);
        let p = r.latency.percentiles().unwrap();
        assert!((1_040..=1_090).contains(&p.p50), "{p:?}");
        assert_eq!(p.max, 29_000_000);
        let c = r.latency.cumulative();
        assert_eq!(c[1], 0, "nothing at or under 1 ms");
        assert_eq!(c[2], 100, "the 100 fast ones under 2.5 ms");
        assert_eq!(c[c.len() - 1], 101);
    }

    #[test]
    fn overflow_takes_labels_past_the_limit() {
        let m = Metrics::new(1, false);
        let labels: Vec<_> = (0..MAX_SERIES + 3)
            .map(|i| SeriesLabels::new("a", &i.to_string(), "", false))
            .collect();
        let ids = m.register(&labels);
        assert_eq!(ids[MAX_SERIES - 3], (MAX_SERIES - 1) as u32);
        assert_eq!(ids[MAX_SERIES - 2], OVERFLOW);
        assert_eq!(ids[MAX_SERIES + 2], OVERFLOW);
    }
}
