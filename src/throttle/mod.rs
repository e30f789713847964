//! Request throttling: token buckets as Amazon API Gateway applies them,
//! implemented with GCRA on one atomic per bucket.
//!
//! # The model
//! A bucket holds up to `burst` tokens and starts full; it refills
//! continuously at `rate` tokens per second (fractional rates allowed:
//! 0.5/s is one every 2 s); a request takes one token and is admitted when
//! at least one is there. At a level with no limit there is no bucket: the
//! caller does not check that level. `burst = 0` refuses everything; rate 0
//! admits `burst` requests over the bucket's life, then none.
//!
//! # GCRA
//! The generic cell rate algorithm stores, instead of a token count and a
//! timestamp, one number: the *theoretical arrival time* (TAT), the instant
//! at which the bucket will be full again. With emission interval
//! `T = 1/rate` and tolerance `τ = (burst − 1)·T`, a request at `now` is
//! admitted iff `max(TAT, now) − now ≤ τ`, and then
//! `TAT ← max(TAT, now) + T`. It is the token bucket exactly: the tokens
//! at `now` are `burst − max(0, TAT − now)/T`, so the test is
//! "tokens ≥ 1" and the update is "take one". A bucket is therefore one
//! [`AtomicU64`](std::sync::atomic::AtomicU64) (nanoseconds on a monotonic
//! clock), and a check is a load and, if admitted, a compare-and-swap.
//! [`Limit`] precomputes `T` and `τ` from (rate, burst) as integers, so the
//! check does no floating-point arithmetic and no division.
//!
//! # Exactness
//! Time is an argument of every call (`now_ns: u64`; [`now_ns`] gives the
//! real one), so behaviour is a pure function of the request times:
//! - a full bucket admits exactly `burst` requests at one instant, and then
//!   exactly one per interval `T`;
//! - over any closed window `[t0, t0 + W]`, the admitted count `n` obeys
//!   `n ≤ burst + ⌊W/T⌋ ≤ burst + rate·W` (no "+1": GCRA's bound is tight);
//! - a client that sends `burst` requests, then one every `T`, or later, is
//!   never refused.
//!
//! `T` is a whole number of nanoseconds: `10⁹/rate` exactly when that is
//! whole (all rates dividing 10⁹, such as 0.5, 1, 1000, or one per 3 s),
//! otherwise rounded *up* (rate 3/s: 333,333,334 ns), so the limiter never
//! admits more than the rate and is slower than it by under 1 ns per token.
//! Rates above 10⁹/s get the 1 ns minimum. Bucket arithmetic saturates
//! rather than overflowing for any input; it is exact for clocks below
//! 2⁶² ns (146 years of process uptime). See [`Limit::new`].
//!
//! # Concurrency
//! Buckets of the snapshot (stage, route, account) are plain atomics: no
//! locks, an admitted check retries its compare-and-swap if another thread
//! won, and a refusal writes nothing. The exactness bounds hold under
//! concurrency too (every update is an atomic read-modify-write of the
//! TAT); a thread whose `now` is a little stale is judged as arriving
//! earlier, which can only make it stricter.
//!
//! [`take_all`] checks several levels in order and, when one refuses,
//! gives back the tokens already taken at earlier levels, so a refused
//! request costs nothing anywhere. That is best effort: between the take
//! and the give-back (nanoseconds) a concurrent request can find the
//! earlier level's token missing and be refused because of it. The token
//! does come back, so the long-run counts stay exact; only that one
//! concurrent refusal is not undone.
//!
//! Per-key buckets (API keys, client addresses) are in [`KeyedBuckets`], a
//! bounded sharded table; its shards are mutexes, held for one hash lookup.
//!
//! Usage-plan quotas and the usage counters behind the usage reports are in
//! [`quota`]: per (plan, key) atomics that outlive snapshots.
//!
//! # Use
//! ```
//! use ringgate::throttle::{self, KeyedBuckets, Level, Limit};
//!
//! // At snapshot compile time.
//! let stage = Level::new(Limit::new(100.0, 200).unwrap());
//! let route = Level::new(Limit::new(0.5, 1).unwrap());
//! let per_client = KeyedBuckets::new(Limit::new(10.0, 20).unwrap(), 100_000);
//!
//! // Per request: the finest level first, so a refusal there takes nothing.
//! let now = throttle::now_ns();
//! let client: &[u8] = b"203.0.113.7";
//! match per_client.try_take(client, now) {
//!     Err(retry) => { /* 429, Retry-After: retry.secs_ceil() */ }
//!     Ok(()) => match throttle::take_all(&[route.pair(), stage.pair()], now) {
//!         Ok(()) => { /* serve */ }
//!         Err(refused) => {
//!             per_client.give_back(client);
//!             /* 429, Retry-After from refused.retry_after_ns */
//!         }
//!     },
//! }
//!
//! // On reload: a level whose limit is unchanged keeps its bucket's state.
//! let route = route.carry(Limit::new(0.5, 1).unwrap());
//! # let _ = route;
//! ```
//! Run [`KeyedBuckets::sweep`] every few seconds off the request path.
//! Nothing on the check path allocates.

// One unsafe call: clock_gettime in now_ns (see there).
#![deny(unsafe_code)]

mod gcra;
mod keyed;
pub mod quota;
#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use gcra::{Bucket, Limit, LimitError, RetryAfter, MAX_SPAN_NS};
pub use keyed::KeyedBuckets;
pub use quota::{Period, QuotaExceeded, QuotaSettings, Usage, UsageCell};

/// Nanoseconds on the throttle clock: `CLOCK_MONOTONIC` (since boot). The
/// `now` to pass to every bucket call outside tests.
pub fn now_ns() -> u64 {
    // CLOCK_MONOTONIC read directly: through Instant::elapsed the same read
    // costs about 60 more instructions per request (Timespec subtraction,
    // Duration normalising, a u128 conversion), measured with callgrind.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the
    // call; CLOCK_MONOTONIC exists on every Linux, so the call cannot fail
    // (a failure would leave zeros: time standing still, never a panic).
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    // Nanoseconds since boot fit u64 for 584 years.
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// A request refused by [`take_all`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Index into the `levels` slice of the level that refused.
    pub level: usize,
    /// Nanoseconds until that level has a token again (`u64::MAX` for
    /// never): for a `Retry-After` header. Other levels may refuse then.
    pub retry_after_ns: u64,
}

/// Takes one token from each level in order. If a level refuses, the tokens
/// already taken at the earlier levels are given back (exactly: each TAT is
/// restored if no other request touched that bucket meanwhile, else moved
/// back one interval), so the refused request costs nothing at any level;
/// see the [module page](self) for the race this leaves. Levels after the
/// refusing one are not touched. Allocation-free, lock-free.
pub fn take_all(levels: &[(&Bucket, &Limit)], now: u64) -> Result<(), Refused> {
    // The usual case (up to 8 levels) keeps its undo list on the stack and
    // runs as one loop; more levels than that go through the recursion.
    const MAX: usize = 8;
    if levels.len() > MAX {
        return take_all_recursive(levels, now);
    }
    let mut undo = [(0u64, 0u64); MAX];
    for (i, &(bucket, limit)) in levels.iter().enumerate() {
        match bucket.take(limit, now) {
            Ok(taken) => undo[i] = taken,
            Err(retry) => {
                for (&(b, l), &(old, new)) in levels[..i].iter().zip(&undo[..i]) {
                    b.restore(l, old, new);
                }
                return Err(Refused {
                    level: i,
                    retry_after_ns: retry.0,
                });
            }
        }
    }
    Ok(())
}

/// [`take_all`] over a snapshot's levels as the request path holds them:
/// a fixed array, absent levels skipped (no list of pairs built first).
/// `Refused::level` is the index in `levels`.
#[inline]
pub fn take_levels<const N: usize>(levels: [Option<&Level>; N], now: u64) -> Result<(), Refused> {
    let mut undo = [(0u64, 0u64); N];
    for i in 0..N {
        let Some(l) = levels[i] else { continue };
        match l.bucket.take(&l.limit, now) {
            Ok(taken) => undo[i] = taken,
            Err(retry) => {
                for j in 0..i {
                    if let Some(t) = levels[j] {
                        let (old, new) = undo[j];
                        t.bucket.restore(&t.limit, old, new);
                    }
                }
                return Err(Refused {
                    level: i,
                    retry_after_ns: retry.0,
                });
            }
        }
    }
    Ok(())
}

fn take_all_recursive(levels: &[(&Bucket, &Limit)], now: u64) -> Result<(), Refused> {
    let Some((&(bucket, limit), rest)) = levels.split_first() else {
        return Ok(());
    };
    let (old, new) = bucket.take(limit, now).map_err(|retry| Refused {
        level: 0,
        retry_after_ns: retry.0,
    })?;
    take_all_recursive(rest, now).map_err(|refused| {
        bucket.restore(limit, old, new);
        Refused {
            level: refused.level + 1,
            ..refused
        }
    })
}

/// [`take_all`] for exactly two levels, without the recursion: the request
/// path's usual case (a route's bucket, then the account's).
#[inline]
pub fn take_two(
    first: (&Bucket, &Limit),
    second: (&Bucket, &Limit),
    now: u64,
) -> Result<(), Refused> {
    let (old, new) = first.0.take(first.1, now).map_err(|retry| Refused {
        level: 0,
        retry_after_ns: retry.0,
    })?;
    second.0.take(second.1, now).map(|_| ()).map_err(|retry| {
        first.0.restore(first.1, old, new);
        Refused {
            level: 1,
            retry_after_ns: retry.0,
        }
    })
}

/// One throttling level of a snapshot: a limit and its bucket. The bucket
/// is behind an `Arc` so that a new snapshot can share it with the old one:
/// [`Level::carry`] keeps the state when the limit is unchanged, and both
/// snapshots then draw from the same bucket while requests on the old one
/// finish.
#[derive(Clone, Debug)]
pub struct Level {
    limit: Limit,
    bucket: Arc<Bucket>,
}

impl Level {
    /// A level with a full bucket.
    pub fn new(limit: Limit) -> Level {
        Level {
            limit,
            bucket: Arc::new(Bucket::new()),
        }
    }

    /// This level in the next snapshot, under `limit`: the same bucket (its
    /// state kept) if `limit` equals this level's, else a full bucket under
    /// the new limit (a changed limit starts over, as a new stage would).
    pub fn carry(&self, limit: Limit) -> Level {
        if limit == self.limit {
            self.clone()
        } else {
            Level::new(limit)
        }
    }

    /// Takes one token at `now`, or says how long until one is available.
    #[inline]
    pub fn try_take(&self, now: u64) -> Result<(), RetryAfter> {
        self.bucket.try_take(&self.limit, now)
    }

    /// The level as [`take_all`] takes it.
    pub fn pair(&self) -> (&Bucket, &Limit) {
        (&self.bucket, &self.limit)
    }

    /// The limit.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// The bucket (for [`Bucket::remaining`], [`Bucket::give_back`], …).
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Whether two levels share one bucket (a carried level does).
    pub fn shares_bucket_with(&self, other: &Level) -> bool {
        Arc::ptr_eq(&self.bucket, &other.bucket)
    }
}
