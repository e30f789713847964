//! Throttling beyond API Gateway, all opt-in: per-client-IP buckets on a
//! route (`client_throttle`) and rate-limit headers (`[throttle] headers`).
//!
//! - `ClientTables`: one bounded [`KeyedBuckets`] per (stage, route)
//!   whose route sets `client_throttle`, keyed by the client's IP address
//!   (the TCP peer, as text), at most [`CLIENT_TABLE_MAX_ENTRIES`] addresses
//!   each. A table is carried to the next snapshot when its route's limit
//!   is unchanged, as [`crate::throttle::Level`]s are. [`ClientSweeper`]
//!   drops idle buckets every [`SWEEP_EVERY`] on a thread of its own.
//! - `Limiter`: the throttle phase when either option is on. The client's
//!   bucket is checked first (the finest level); then the usual levels all
//!   or none; a refusal there gives the client's token back. With headers
//!   on, it leaves the request's [`RateHeaders`]: the bucket with the
//!   fewest tokens left for an admitted request, the refusing level's
//!   burst and wait for a refused one.
//!
//! With both options off (for the route), no `Limiter` is built: the
//! pipeline's plain throttle path runs after one branch.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::service::Published;
use crate::config::{RouteConfig, ThrottleLimit};
use crate::http::response::{secs_ceil, RateHeaders};
use crate::throttle::{now_ns, take_all, KeyedBuckets, Level, Limit, LimitError};
use crate::upstream::forward::ClientInfo;

/// The most client addresses one per-client table holds (see
/// [`KeyedBuckets`]: beyond it, idle buckets are evicted, and a new
/// address that finds no room is admitted unmetered and counted).
pub const CLIENT_TABLE_MAX_ENTRIES: usize = 100_000;

/// How often [`ClientSweeper`] drops idle per-client buckets.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The per-client tables of one snapshot, by (api, stage, route key) and
/// limit: a stage and its canary share a route's table when the limit is
/// the same.
#[derive(Debug, Default)]
pub(super) struct ClientTables {
    tables: HashMap<(String, Limit), Arc<KeyedBuckets>>,
}

impl ClientTables {
    /// Each route's per-client table in one stage (or canary) serving
    /// `routes`: the table already made for this snapshot, else
    /// `previous`'s with the same route and limit, else a new one.
    pub(super) fn for_routes(
        &mut self,
        previous: Option<&ClientTables>,
        api: &str,
        stage: &str,
        routes: &[RouteConfig],
    ) -> Result<Vec<Option<Arc<KeyedBuckets>>>, String> {
        routes
            .iter()
            .map(|r| {
                let Some(l) = r.client_throttle else {
                    return Ok(None);
                };
                let display = r.key.as_display();
                let limit = limit(&l).map_err(|e| {
                    format!("api {api:?} stage {stage:?} route {display:?} client_throttle: {e}")
                })?;
                let key = (format!("{api}\0{stage}\0{display}"), limit);
                if let Some(t) = self.tables.get(&key) {
                    return Ok(Some(t.clone()));
                }
                let table = previous
                    .and_then(|p| p.tables.get(&key))
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(KeyedBuckets::new(limit, CLIENT_TABLE_MAX_ENTRIES))
                    });
                self.tables.insert(key, table.clone());
                Ok(Some(table))
            })
            .collect()
    }

    /// Drops every idle bucket of every table; returns how many.
    pub(super) fn sweep(&self, now_ns: u64) -> usize {
        self.tables.values().map(|t| t.sweep(now_ns)).sum()
    }

    /// How many tables there are.
    pub(super) fn len(&self) -> usize {
        self.tables.len()
    }
}

fn limit(l: &ThrottleLimit) -> Result<Limit, LimitError> {
    Limit::new(l.rate, l.burst)
}

/// The throttle phase with an opt-in on; see the [module page](self).
pub(super) struct Limiter<'a> {
    /// The route's per-client table.
    client: Option<&'a KeyedBuckets>,
    /// The client connection (its address keys the table).
    peer: &'a ClientInfo,
    /// `[throttle] headers`.
    headers: bool,
    /// Where the request's rate-limit headers go (`Request::rate`).
    rate: &'a mut Option<RateHeaders>,
}

impl<'a> Limiter<'a> {
    /// For one request: `None` when no opt-in applies (the plain throttle
    /// path runs), else a limiter over the route's per-client table (if
    /// any) that leaves the request's headers (if on) in `rate`.
    #[inline]
    pub(super) fn for_request(
        client: Option<&'a KeyedBuckets>,
        peer: &'a ClientInfo,
        headers: bool,
        rate: &'a mut Option<RateHeaders>,
    ) -> Option<Self> {
        if client.is_none() && !headers {
            return None;
        }
        Some(Limiter {
            client,
            peer,
            headers,
            rate,
        })
    }

    fn client(&self) -> Option<(&'a KeyedBuckets, &'a [u8])> {
        let peer: &'a ClientInfo = self.peer;
        self.client.map(|t| (t, peer.peer_ip()))
    }

    /// Whether the request is refused: the client's bucket, then `levels`
    /// (finest first; absent ones skipped) all or none. Leaves the
    /// request's rate-limit headers in [`Limiter::rate`] when they are on
    /// and some level applied.
    // Kept out of line: the pipeline inlines the gate, not this.
    #[inline(never)]
    pub(super) fn refuses(&mut self, levels: [Option<&Level>; 4], now: u64) -> bool {
        // (limit, remaining, reset ns) of the bucket with the fewest left.
        let mut least: Option<(u32, u32, u64)> = None;
        if let Some((table, peer)) = self.client() {
            match table.try_take_report(peer, now) {
                Err(retry) => {
                    self.refused(table.limit().burst(), retry.as_ns());
                    return true;
                }
                Ok((remaining, reset)) => least = Some((table.limit().burst(), remaining, reset)),
            }
        }
        let mut levels = levels.into_iter().flatten();
        if let Some(first) = levels.next() {
            let mut pairs = [first.pair(); 4];
            let mut n = 1;
            for l in levels {
                pairs[n] = l.pair();
                n += 1;
            }
            let pairs = &pairs[..n];
            if let Err(refused) = take_all(pairs, now) {
                if let Some((table, peer)) = self.client() {
                    table.give_back(peer);
                }
                self.refused(pairs[refused.level].1.burst(), refused.retry_after_ns);
                return true;
            }
            if self.headers {
                for &(bucket, limit) in pairs {
                    let remaining = bucket.remaining(limit, now);
                    if least.is_none_or(|(_, r, _)| remaining < r) {
                        least = Some((limit.burst(), remaining, bucket.reset_after(limit, now)));
                    }
                }
            }
        }
        if self.headers {
            *self.rate = least.map(|(limit, remaining, reset)| {
                RateHeaders::admitted(limit, remaining, secs_ceil(reset))
            });
        }
        false
    }

    /// A refusal by a level of capacity `burst` with `retry_ns` to wait.
    fn refused(&mut self, burst: u32, retry_ns: u64) {
        if self.headers {
            *self.rate = Some(RateHeaders::refused(burst, secs_ceil(retry_ns)));
        }
    }

    /// For a 429 decided elsewhere (a usage-plan quota): with headers on,
    /// the request's responses carry `Retry-After: retry_after_secs` (at
    /// least 1) and `RateLimit-Limit: limit`. (`None` limiter: nothing to
    /// do, headers are off.)
    pub(super) fn refuse_with(&mut self, limit: u32, retry_after_secs: u64) {
        if self.headers {
            *self.rate = Some(RateHeaders::refused(limit, retry_after_secs));
        }
    }
}

/// Sweeps the per-client tables of whatever snapshot is published, every
/// [`SWEEP_EVERY`], on a thread of its own (`ringgate-sweep`), so the
/// tables follow the active clients; stops when dropped.
#[derive(Debug)]
pub struct ClientSweeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ClientSweeper {
    /// Starts the thread.
    pub fn start(published: Arc<Published>) -> std::io::Result<ClientSweeper> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringgate-sweep".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(SWEEP_EVERY);
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    published.load().1.sweep_client_buckets(now_ns());
                }
            })?;
        Ok(ClientSweeper {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for ClientSweeper {
    fn drop(&mut self) {
        self.stop();
    }
}
