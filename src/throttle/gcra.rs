//! The GCRA arithmetic: a [`Limit`] (emission interval and tolerance,
//! precomputed from a rate and a burst) and a [`Bucket`] (one atomic
//! theoretical arrival time). See the [module page](super) for the model.

#![forbid(unsafe_code)]

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Nanoseconds in a second.
const NS_PER_SEC: f64 = 1e9;

/// The longest time a bucket may take to refill from empty to full
/// (`burst × interval`): 2^62 ns, about 146 years. Keeping every theoretical
/// arrival time under `now + 2^62` means no arithmetic on a clock below
/// 2^62 can overflow.
pub const MAX_SPAN_NS: u64 = 1 << 62;

/// Relative distance from a whole nanosecond under which an emission
/// interval counts as that whole nanosecond: a decimal rate from a
/// configuration file (`0.1`, `1.6`) is not exact as an `f64`, and its
/// interval must not be rounded up to the next nanosecond for that. The
/// rate's representation and the division each err by at most half an
/// ulp (2⁻⁵³ relative); four ulps cover both with room.
const SNAP: f64 = 4.0 * f64::EPSILON;

/// A rate limit, precomputed for the check: the emission interval (ns per
/// token) and the tolerance, so that a check is integer compares and one
/// add. Build it once (at snapshot compile time) with [`Limit::new`].
///
/// Two limits compare equal when they behave identically: that is the test
/// for keeping a bucket's state across a reload ([`super::Level::carry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Nanoseconds per token (≥ 1). 1 when the limit never refills (the
    /// TAT then counts tokens taken, on a clock frozen at 0).
    interval: u64,
    /// A request is admitted iff `max(tat, now) - now < threshold`, i.e. the
    /// deficit is at most the tolerance `(burst - 1) × interval`;
    /// `threshold = tolerance + 1`, or 0 for `burst = 0` (refuse all).
    threshold: u64,
    /// `burst × interval`: the deficit of an empty bucket.
    capacity: u64,
    /// `!0`, or 0 when the limit never refills: the check uses
    /// `now & clock_mask`, so a non-refilling bucket sees time stand still.
    clock_mask: u64,
    /// The bucket capacity in tokens.
    burst: u32,
}

/// Why [`Limit::new`] refused a rate and burst.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LimitError {
    /// The rate is negative, NaN or infinite. (No limit is no bucket: a
    /// caller with no limit at a level does not check that level.)
    InvalidRate(f64),
    /// `burst / rate` exceeds [`MAX_SPAN_NS`] (about 146 years): the bucket
    /// would take longer than that to refill. Use rate 0 for a bucket that
    /// never refills.
    RefillTooSlow {
        /// The rate given, tokens per second.
        rate: f64,
        /// The burst given.
        burst: u32,
    },
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitError::InvalidRate(rate) => write!(
                f,
                "throttling rate {rate} is not a finite number of requests per second ≥ 0"
            ),
            LimitError::RefillTooSlow { rate, burst } => write!(
                f,
                "throttling burst {burst} at rate {rate}/s would take more than 146 years to \
                 refill; use a higher rate, a smaller burst, or rate 0 (never refills)"
            ),
        }
    }
}

impl std::error::Error for LimitError {}

/// How long until a refused request could be admitted: nanoseconds until
/// one token is available, for a `Retry-After` header.
/// [`RetryAfter::NEVER`] when it never will be (rate 0, or burst 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RetryAfter(pub u64);

impl RetryAfter {
    /// The request can never be admitted: the bucket never refills, or its
    /// burst is 0.
    pub const NEVER: RetryAfter = RetryAfter(u64::MAX);

    /// Nanoseconds until one token is available.
    pub fn as_ns(self) -> u64 {
        self.0
    }

    /// Whether the request can never be admitted.
    pub fn is_never(self) -> bool {
        self == Self::NEVER
    }

    /// Whole seconds, rounded up (a `Retry-After` header's value: waiting
    /// that long is always enough). `NEVER` gives 18,446,744,074.
    pub fn secs_ceil(self) -> u64 {
        self.0.div_ceil(1_000_000_000)
    }
}

impl Limit {
    /// A limit of `rate` tokens per second (fractional allowed: 0.5 is one
    /// every 2 s) with a bucket of `burst` tokens.
    ///
    /// The emission interval is `10^9 / rate` ns. When that is a whole number
    /// of nanoseconds (up to the f64 rounding of a decimal rate) it is
    /// used as is and the limit is exact. Otherwise it is rounded **up** to
    /// the next nanosecond: the bucket never admits more than `rate`
    /// allows, and is slower than it by under 1 ns per token (a relative
    /// error under `rate / 10^9`: 3·10⁻⁹ at 3/s). Rates above 10^9/s get
    /// the 1 ns minimum interval (10^9 tokens per second per bucket).
    ///
    /// Rate 0 — or an interval of at least [`MAX_SPAN_NS`] — gives a
    /// bucket that never refills ([`Limit::no_refill`]). `burst = 0`
    /// refuses everything.
    ///
    /// # Errors
    /// [`LimitError::InvalidRate`] for a negative, NaN or infinite rate;
    /// [`LimitError::RefillTooSlow`] when `burst × interval` exceeds
    /// [`MAX_SPAN_NS`].
    pub fn new(rate: f64, burst: u32) -> Result<Limit, LimitError> {
        if !(rate.is_finite() && rate >= 0.0) {
            return Err(LimitError::InvalidRate(rate));
        }
        let exact = NS_PER_SEC / rate; // +inf for rate 0
        if exact >= MAX_SPAN_NS as f64 {
            return Ok(Limit::no_refill(burst));
        }
        let nearest = exact.round();
        let interval = if (exact - nearest).abs() <= nearest * SNAP {
            nearest
        } else {
            exact.ceil()
        };
        // In range: 0 < interval ≤ 2^62.
        let interval = (interval as u64).max(1);
        let capacity = u64::from(burst)
            .checked_mul(interval)
            .filter(|&c| c <= MAX_SPAN_NS)
            .ok_or(LimitError::RefillTooSlow { rate, burst })?;
        Ok(Limit::from_parts(interval, capacity, u64::MAX, burst))
    }

    /// A bucket of `burst` tokens that never refills: exactly `burst`
    /// requests are admitted over the bucket's life, then none.
    pub fn no_refill(burst: u32) -> Limit {
        // Interval 1 on a clock frozen at 0: the TAT counts tokens taken.
        Limit::from_parts(1, u64::from(burst), 0, burst)
    }

    /// A limit whose emission interval is exactly `interval_ns` (≥ 1)
    /// nanoseconds, for callers that think in intervals (one request every
    /// 3 s: `Limit::per_interval(3_000_000_000, 1)`).
    ///
    /// # Errors
    /// [`LimitError::InvalidRate`] for a zero interval;
    /// [`LimitError::RefillTooSlow`] when `burst × interval` exceeds
    /// [`MAX_SPAN_NS`].
    pub fn per_interval(interval_ns: u64, burst: u32) -> Result<Limit, LimitError> {
        let rate = NS_PER_SEC / interval_ns as f64;
        if interval_ns == 0 {
            return Err(LimitError::InvalidRate(rate));
        }
        let capacity = u64::from(burst)
            .checked_mul(interval_ns)
            .filter(|&c| c <= MAX_SPAN_NS)
            .ok_or(LimitError::RefillTooSlow { rate, burst })?;
        Ok(Limit::from_parts(interval_ns, capacity, u64::MAX, burst))
    }

    fn from_parts(interval: u64, capacity: u64, clock_mask: u64, burst: u32) -> Limit {
        Limit {
            interval,
            // (burst - 1) × interval + 1, or 0 for burst 0.
            threshold: if burst == 0 {
                0
            } else {
                capacity - interval + 1
            },
            capacity,
            clock_mask,
            burst,
        }
    }

    /// The bucket capacity in tokens (for a `RateLimit-Limit` header).
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Nanoseconds per token: one token comes back every this long. For a
    /// limit that never refills, [`u64::MAX`].
    pub fn interval_ns(&self) -> u64 {
        if self.refills() {
            self.interval
        } else {
            u64::MAX
        }
    }

    /// Whether tokens come back with time (false for rate 0).
    pub fn refills(&self) -> bool {
        self.clock_mask != 0
    }

    /// The GCRA step. Given a bucket's TAT and the time, the TAT after
    /// admitting one request, or how long until one could be.
    #[inline]
    pub(crate) fn admit(&self, tat: u64, now: u64) -> Result<u64, RetryAfter> {
        let now = now & self.clock_mask;
        let base = if tat > now { tat } else { now };
        if base - now < self.threshold {
            Ok(base.saturating_add(self.interval))
        } else {
            Err(self.retry_after(tat, now))
        }
    }

    /// The wait after a refusal (`now` already masked): until the deficit
    /// is back to the tolerance, `threshold - 1`.
    #[cold]
    fn retry_after(&self, tat: u64, now: u64) -> RetryAfter {
        if !self.refills() || self.threshold == 0 {
            RetryAfter::NEVER
        } else {
            // Refused means tat - now ≥ threshold ≥ 1, so this is ≥ 1.
            RetryAfter(tat - now + 1 - self.threshold)
        }
    }

    /// The TAT after one token is given back: one interval earlier, never
    /// below 0 (any TAT at or before now already means a full bucket).
    #[inline]
    pub(crate) fn give_back(&self, tat: u64) -> u64 {
        tat.saturating_sub(self.interval)
    }

    /// Whole tokens available at `now`.
    pub(crate) fn remaining(&self, tat: u64, now: u64) -> u32 {
        let deficit = tat.saturating_sub(now & self.clock_mask);
        // ≤ capacity / interval = burst, so it fits.
        (self.capacity.saturating_sub(deficit) / self.interval) as u32
    }

    /// Nanoseconds from `now` until the bucket is full again; `u64::MAX`
    /// if it never will be.
    pub(crate) fn reset_after(&self, tat: u64, now: u64) -> u64 {
        match self.full_at(tat) {
            u64::MAX => u64::MAX,
            full_at => full_at.saturating_sub(now),
        }
    }

    /// The time at which a bucket with this TAT is full (holds `burst`
    /// tokens and so carries no state worth keeping); `u64::MAX` for never.
    #[inline]
    pub(crate) fn full_at(&self, tat: u64) -> u64 {
        if self.refills() || tat == 0 {
            tat
        } else {
            u64::MAX
        }
    }
}

/// One token bucket: a single atomic theoretical arrival time (TAT, ns on
/// the throttle clock). A new bucket is full. It does not know its limit:
/// every call takes the [`Limit`] it is checked against, always the same one
/// for a given bucket (a snapshot keeps the pair together, see
/// [`super::Level`]).
///
/// Lock-free: an admitted check is one load and one compare-and-swap
/// (retried on contention), a refusal is one load.
#[derive(Debug, Default)]
pub struct Bucket {
    tat: AtomicU64,
}

impl Bucket {
    /// A full bucket.
    pub fn new() -> Bucket {
        Bucket {
            tat: AtomicU64::new(0),
        }
    }

    /// Takes one token at `now`, or says how long until one is available.
    #[inline]
    pub fn try_take(&self, limit: &Limit, now: u64) -> Result<(), RetryAfter> {
        self.take(limit, now).map(|_| ())
    }

    /// [`Bucket::try_take`], returning the TAT before and after for
    /// [`Bucket::restore`].
    #[inline]
    pub(crate) fn take(&self, limit: &Limit, now: u64) -> Result<(u64, u64), RetryAfter> {
        let mut tat = self.tat.load(Relaxed);
        loop {
            let new = limit.admit(tat, now)?;
            // Relaxed: the TAT is the only data, and every change to it is
            // a read-modify-write, so all threads agree on its history.
            match self.tat.compare_exchange_weak(tat, new, Relaxed, Relaxed) {
                Ok(_) => return Ok((tat, new)),
                Err(current) => tat = current,
            }
        }
    }

    /// Undoes a [`Bucket::take`] that returned `(old, new)`: exactly (the
    /// TAT goes back to `old`) if nothing touched the bucket since, else by
    /// [`Bucket::give_back`].
    pub(crate) fn restore(&self, limit: &Limit, old: u64, new: u64) {
        if self
            .tat
            .compare_exchange(new, old, Relaxed, Relaxed)
            .is_err()
        {
            self.give_back(limit);
        }
    }

    /// Returns one token (a request that was admitted here but not served,
    /// e.g. refused at another level): the TAT moves one interval back.
    /// The bucket never holds more than `burst`: a token given back to a
    /// bucket that has refilled meanwhile is lost.
    pub fn give_back(&self, limit: &Limit) {
        let _ = self
            .tat
            .fetch_update(Relaxed, Relaxed, |tat| Some(limit.give_back(tat)));
    }

    /// Whole tokens available at `now`, `0..=burst` (for a
    /// `RateLimit-Remaining` header).
    pub fn remaining(&self, limit: &Limit, now: u64) -> u32 {
        limit.remaining(self.tat.load(Relaxed), now)
    }

    /// Nanoseconds from `now` until the bucket is full again (for a
    /// `RateLimit-Reset` header); 0 if it is full, `u64::MAX` if it never
    /// will be (a limit that never refills, once a token is taken).
    pub fn reset_after(&self, limit: &Limit, now: u64) -> u64 {
        limit.reset_after(self.tat.load(Relaxed), now)
    }

    /// The raw theoretical arrival time, ns (0 for a bucket never used).
    /// For diagnostics and tests: two buckets with the same TAT and limit
    /// behave identically.
    pub fn tat(&self) -> u64 {
        self.tat.load(Relaxed)
    }
}
