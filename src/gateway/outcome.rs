//! How each request ended: one typed [`Outcome`] per request, recorded by
//! the pipeline's last phase and counted per worker.
//!
//! The names ([`Outcome::as_str`]) are what metrics and access logs will
//! carry. Counting costs one load and one store of a worker-owned atomic
//! (a worker is the only writer of its row, so no read-modify-write is
//! needed); rows are cache-line padded so workers never share a line.
//! [`OutcomeCounts`] sums the rows on demand, from any thread.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::utils::CachePadded;

use super::response::GatewayError;

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered by a mock integration.
    Mock,
    /// Answered from the stage cache.
    CacheHit,
    /// Not in the stage cache: fetched from the backend (and stored when
    /// the response allows it).
    CacheMiss,
    /// `Cache-Control: max-age=0`: fetched and the entry replaced.
    CacheRefresh,
    /// The backend failed and a stale entry was served (`stale_if_error`).
    CacheStale,
    /// Waited past `lock_timeout` for another request's fetch: forwarded
    /// without the cache.
    CacheBypass,
    /// Forwarded to a backend (a route the stage does not cache).
    Proxied,
    /// The backend switched protocols: the connection became a tunnel.
    Upgraded,
    /// The response was cut off after its head (the backend failed
    /// mid-body), or the client left before it was answered.
    Aborted,
    /// The health path (`[server] health_path`) was answered.
    Health,
    /// Redirected to HTTPS (`[tls] redirect_hosts`).
    Redirected,
    /// RFC 9111 mode: a stale entry revalidated with the backend (a 304)
    /// and answered from the cache.
    CacheRevalidated,
    /// The gateway answered with one of its own errors.
    Error(GatewayError),
}

/// The non-error outcomes, in index order.
const PLAIN: [Outcome; 12] = [
    Outcome::Mock,
    Outcome::CacheHit,
    Outcome::CacheMiss,
    Outcome::CacheRefresh,
    Outcome::CacheStale,
    Outcome::CacheBypass,
    Outcome::Proxied,
    Outcome::Upgraded,
    Outcome::Aborted,
    Outcome::Health,
    Outcome::Redirected,
    Outcome::CacheRevalidated,
];

/// One instance of each gateway error kind, in index order.
const ERRORS: [GatewayError; 16] = [
    GatewayError::BadRequest(""),
    GatewayError::MissingAuthenticationToken,
    GatewayError::NotFound,
    GatewayError::Forbidden,
    GatewayError::RequestTimeout,
    GatewayError::PayloadTooLarge(0),
    GatewayError::UriTooLong,
    GatewayError::HeadersTooLarge,
    GatewayError::ApiConfiguration,
    GatewayError::BadGateway,
    GatewayError::IntegrationTimeout,
    GatewayError::IntegrationFailure,
    GatewayError::TooManyRequests,
    GatewayError::QuotaExceeded,
    GatewayError::MisdirectedRequest,
    GatewayError::NotCached,
];

/// How many distinct outcome kinds there are.
pub const KINDS: usize = PLAIN.len() + ERRORS.len();

impl Outcome {
    /// The outcome's name, for metrics and logs: `mock`, `cache_hit`,
    /// `cache_miss`, `cache_refresh`, `cache_stale`, `cache_bypass`,
    /// `proxied`, `upgraded`, `aborted`, `health`, `redirected`,
    /// `cache_revalidated`, or `error_` and the error kind
    /// (`error_not_found`, `error_integration_timeout`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Mock => "mock",
            Outcome::CacheHit => "cache_hit",
            Outcome::CacheMiss => "cache_miss",
            Outcome::CacheRefresh => "cache_refresh",
            Outcome::CacheStale => "cache_stale",
            Outcome::CacheBypass => "cache_bypass",
            Outcome::Proxied => "proxied",
            Outcome::Upgraded => "upgraded",
            Outcome::Aborted => "aborted",
            Outcome::Health => "health",
            Outcome::Redirected => "redirected",
            Outcome::CacheRevalidated => "cache_revalidated",
            Outcome::Error(e) => match e {
                GatewayError::BadRequest(_) => "error_bad_request",
                GatewayError::MissingAuthenticationToken => "error_missing_authentication_token",
                GatewayError::NotFound => "error_not_found",
                GatewayError::Forbidden => "error_forbidden",
                GatewayError::RequestTimeout => "error_request_timeout",
                GatewayError::PayloadTooLarge(_) => "error_payload_too_large",
                GatewayError::UriTooLong => "error_uri_too_long",
                GatewayError::HeadersTooLarge => "error_headers_too_large",
                GatewayError::ApiConfiguration => "error_api_configuration",
                GatewayError::BadGateway => "error_bad_gateway",
                GatewayError::IntegrationTimeout => "error_integration_timeout",
                GatewayError::IntegrationFailure => "error_integration_failure",
                GatewayError::TooManyRequests => "error_too_many_requests",
                GatewayError::QuotaExceeded => "error_quota_exceeded",
                GatewayError::MisdirectedRequest => "error_misdirected_request",
                GatewayError::NotCached => "error_not_cached",
            },
        }
    }

    /// A dense index in `0..KINDS` (errors by kind, their payload ignored).
    pub fn index(self) -> usize {
        match self {
            Outcome::Mock => 0,
            Outcome::CacheHit => 1,
            Outcome::CacheMiss => 2,
            Outcome::CacheRefresh => 3,
            Outcome::CacheStale => 4,
            Outcome::CacheBypass => 5,
            Outcome::Proxied => 6,
            Outcome::Upgraded => 7,
            Outcome::Aborted => 8,
            Outcome::Health => 9,
            Outcome::Redirected => 10,
            Outcome::CacheRevalidated => 11,
            Outcome::Error(e) => {
                PLAIN.len()
                    + match e {
                        GatewayError::BadRequest(_) => 0,
                        GatewayError::MissingAuthenticationToken => 1,
                        GatewayError::NotFound => 2,
                        GatewayError::Forbidden => 3,
                        GatewayError::RequestTimeout => 4,
                        GatewayError::PayloadTooLarge(_) => 5,
                        GatewayError::UriTooLong => 6,
                        GatewayError::HeadersTooLarge => 7,
                        GatewayError::ApiConfiguration => 8,
                        GatewayError::BadGateway => 9,
                        GatewayError::IntegrationTimeout => 10,
                        GatewayError::IntegrationFailure => 11,
                        GatewayError::TooManyRequests => 12,
                        GatewayError::QuotaExceeded => 13,
                        GatewayError::MisdirectedRequest => 14,
                        GatewayError::NotCached => 15,
                    }
            }
        }
    }

    /// The outcome kind at `index` (errors with an empty payload).
    pub fn from_index(index: usize) -> Option<Outcome> {
        PLAIN.get(index).copied().or_else(|| {
            ERRORS
                .get(index.checked_sub(PLAIN.len())?)
                .map(|&e| Outcome::Error(e))
        })
    }
}

/// One row of counters per worker.
pub(crate) struct OutcomeTable {
    rows: Box<[CachePadded<[AtomicU64; KINDS]>]>,
}

impl OutcomeTable {
    /// Rows for `workers` workers.
    pub fn new(workers: usize) -> OutcomeTable {
        OutcomeTable {
            rows: (0..workers.max(1))
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    /// Counts `outcome` for `worker`. Only that worker's thread writes its
    /// row, so a load and a store suffice (no locked instruction).
    #[inline]
    pub fn record(&self, worker: usize, outcome: Outcome) {
        if let Some(row) = self.rows.get(worker) {
            let c = &row[outcome.index()];
            c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    /// The sums over all workers, now.
    pub fn snapshot(&self) -> OutcomeCounts {
        let mut counts = [0u64; KINDS];
        for row in self.rows.iter() {
            for (total, c) in counts.iter_mut().zip(row.iter()) {
                *total += c.load(Ordering::Relaxed);
            }
        }
        OutcomeCounts { counts }
    }
}

/// Requests counted by outcome (summed over the workers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeCounts {
    counts: [u64; KINDS],
}

impl OutcomeCounts {
    /// Requests that ended with `outcome`'s kind.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts[outcome.index()]
    }

    /// Every kind with a non-zero count, by name.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .filter_map(|(i, &n)| Outcome::from_index(i).map(|o| (o.as_str(), n)))
    }

    /// All requests counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_dense_and_names_unique() {
        let mut names = std::collections::HashSet::new();
        for i in 0..KINDS {
            let o = Outcome::from_index(i).unwrap();
            assert_eq!(o.index(), i);
            assert!(names.insert(o.as_str()), "{}", o.as_str());
        }
        assert_eq!(Outcome::from_index(KINDS), None);
        assert_eq!(
            Outcome::Error(GatewayError::BadRequest("bad chunk")).index(),
            Outcome::Error(GatewayError::BadRequest("")).index()
        );
    }

    #[test]
    fn table_sums_rows() {
        let t = OutcomeTable::new(2);
        t.record(0, Outcome::CacheHit);
        t.record(1, Outcome::CacheHit);
        t.record(1, Outcome::Error(GatewayError::NotFound));
        t.record(7, Outcome::Mock); // no such worker: ignored
        let c = t.snapshot();
        assert_eq!(c.get(Outcome::CacheHit), 2);
        assert_eq!(c.get(Outcome::Error(GatewayError::NotFound)), 1);
        assert_eq!(c.total(), 3);
        let named: Vec<_> = c.nonzero().collect();
        assert_eq!(named, vec![("cache_hit", 2), ("error_not_found", 1)]);
    }
}
