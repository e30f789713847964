//! Properties of the throttle (`ringgate::throttle`), through its public
//! API, on a virtual clock; and one test on the real clock with two threads.
//!
//! 1. GCRA *is* the token bucket: decision for decision, and in
//!    `remaining`/`reset_after`, a bucket matches a reference token bucket
//!    kept in exact integer arithmetic (credit in nanoseconds, refilled by
//!    the elapsed time, capped at `burst × interval`, one request costing
//!    one interval).
//! 2. Over any closed window `[t0, t0 + W]`, the admitted count `n` obeys
//!    `n ≤ burst + ⌊W / interval⌋` (integers, exact), hence
//!    `n ≤ burst + rate·W` (no "+1" is needed: checked in floating point
//!    with a relative slack of 10⁻⁹ for the f64 rounding of `rate·W` and
//!    of the rate itself). It suffices to check windows
//!    that start and end at admitted requests.
//! 3. A client that sends `burst` requests at once, then one every
//!    `10⁹/rate` ns (or later), is never refused: exactly at the rate for
//!    rates whose interval is a whole number of nanoseconds, and at the
//!    interval rounded up to the nanosecond for any rate.
//! 4. In `take_all`, a refusal at one level leaves every bucket's TAT
//!    exactly as before, and the refusing level is the first that refuses
//!    on its own; an admission moves every bucket as `try_take` would.
//! 5. A per-key table large enough never to overflow behaves exactly like
//!    one bucket per key, whatever sweeps run in between (evicting an idle
//!    bucket is unobservable); a small one never exceeds its bound.
//!
//! Every property runs from a fixed seed with failure persistence off (as
//! in tests/hostile_input.rs), so a failure replays with
//! `cargo test --test throttle NAME`; `RINGGATE_PROPTEST_SEED=<u64>` and
//! `RINGGATE_PROPTEST_SCALE=<n>` explore further.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{RngAlgorithm, RngSeed};

use ringgate::throttle::{self, take_all, Bucket, KeyedBuckets, Limit, Refused, RetryAfter};

// ---------------------------------------------------------------------------
// Deterministic configuration
// ---------------------------------------------------------------------------

/// The seed every property starts from.
const SEED: u64 = 0x7468_726f_7474_6c65; // "throttle"

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// A proptest configuration with a fixed seed, a fixed RNG algorithm, no
/// failure persistence, and every generation-relevant knob set explicitly
/// (so `PROPTEST_*` variables cannot change which cases run).
fn config(cases: u32) -> ProptestConfig {
    let scale = env_u64("RINGGATE_PROPTEST_SCALE").unwrap_or(1).max(1);
    ProptestConfig {
        cases: cases.saturating_mul(u32::try_from(scale).unwrap_or(u32::MAX)),
        rng_seed: RngSeed::Fixed(env_u64("RINGGATE_PROPTEST_SEED").unwrap_or(SEED)),
        rng_algorithm: RngAlgorithm::ChaCha,
        failure_persistence: None,
        max_local_rejects: 65_536,
        max_global_rejects: 1024,
        max_flat_map_regens: 1_000_000,
        max_default_size_range: 100,
        max_shrink_iters: 100_000,
        ..ProptestConfig::default()
    }
}

const SEC: u64 = 1_000_000_000;

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

/// Rates: whole-nanosecond intervals (as the f64 `10⁹ / i`), arbitrary
/// rates over ten decades, and the awkward ones by name.
fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => (1u64..=20 * SEC).prop_map(|i| 1e9 / i as f64),
        3 => (-3.0f64..7.0).prop_map(|e| 10f64.powf(e)),
        1 => select(vec![0.0, 0.5, 1.0 / 3.0, 3.0, 7.0, 0.1, 1.6, 1000.0, 1e9, 3e9]),
    ]
}

fn limit() -> impl Strategy<Value = Limit> {
    (rate(), 0u32..40).prop_map(|(r, b)| Limit::new(r, b).expect("rates in range"))
}

/// Gaps between requests, in thousandths of the limit's interval (0 for
/// simultaneous requests, up to three intervals).
fn gaps() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(prop_oneof![2 => Just(0u32), 5 => 0u32..=3000], 1..200)
}

/// Non-decreasing request times from `t0` and per-mille gaps of the
/// interval (of one second, for a limit that never refills).
fn times(limit: &Limit, t0: u64, gaps: &[u32]) -> Vec<u64> {
    let unit = u128::from(if limit.refills() {
        limit.interval_ns()
    } else {
        SEC
    });
    let mut t = t0;
    gaps.iter()
        .map(|&g| {
            t += u64::try_from(unit * u128::from(g) / 1000).unwrap();
            t
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The reference token bucket
// ---------------------------------------------------------------------------

/// A token bucket in exact integers: `credit` is tokens × interval (ns),
/// capped at `burst × interval`; a request costs one interval.
struct Reference {
    credit: u128,
    capacity: u128,
    cost: u128,
    refills: bool,
    last: u64,
}

impl Reference {
    fn new(limit: &Limit) -> Reference {
        let cost = if limit.refills() {
            u128::from(limit.interval_ns())
        } else {
            1
        };
        let capacity = u128::from(limit.burst()) * cost;
        Reference {
            credit: capacity,
            capacity,
            cost,
            refills: limit.refills(),
            last: 0,
        }
    }

    fn advance(&mut self, t: u64) {
        assert!(t >= self.last, "times must not go back");
        if self.refills {
            self.credit = (self.credit + u128::from(t - self.last)).min(self.capacity);
        }
        self.last = t;
    }

    fn take(&mut self, t: u64) -> bool {
        self.advance(t);
        if self.credit >= self.cost {
            self.credit -= self.cost;
            true
        } else {
            false
        }
    }

    fn remaining(&mut self, t: u64) -> u32 {
        self.advance(t);
        u32::try_from(self.credit / self.cost).unwrap()
    }

    /// Ns until a token (`None`: never).
    fn retry_after(&self) -> Option<u64> {
        (self.refills && self.capacity > 0).then(|| u64::try_from(self.cost - self.credit).unwrap())
    }

    /// Ns until full (`None`: never).
    fn reset_after(&self) -> Option<u64> {
        let deficit = u64::try_from(self.capacity - self.credit).unwrap();
        (self.refills || deficit == 0).then_some(deficit)
    }
}

fn admitted(limit: &Limit, times: &[u64]) -> Vec<u64> {
    let bucket = Bucket::new();
    times
        .iter()
        .copied()
        .filter(|&t| bucket.try_take(limit, t).is_ok())
        .collect()
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(3000))]

    /// Whole-nanosecond intervals are taken exactly, however the rate's
    /// f64 rounds.
    #[test]
    fn whole_nanosecond_intervals_are_exact(i in 1u64..=(1 << 40), burst in 0u32..1000) {
        let limit = Limit::new(1e9 / i as f64, burst).unwrap();
        prop_assert_eq!(limit.interval_ns(), i);
        let rounded_up = Limit::new(1e9 / (i as f64 + 0.5), burst).unwrap();
        prop_assert_eq!(rounded_up.interval_ns(), i + 1);
    }

    /// Property 1: GCRA makes the reference token bucket's decisions, and
    /// reports the same retry-after, remaining and reset-after.
    #[test]
    fn gcra_is_the_token_bucket(
        limit in limit(),
        t0 in 0u64..(1 << 50),
        gaps in gaps(),
    ) {
        let bucket = Bucket::new();
        let mut reference = Reference::new(&limit);
        for (k, t) in times(&limit, t0, &gaps).into_iter().enumerate() {
            let expected = reference.take(t);
            match bucket.try_take(&limit, t) {
                Ok(()) => prop_assert!(expected, "request {} at {} admitted", k, t),
                Err(retry) => {
                    prop_assert!(!expected, "request {} at {} refused", k, t);
                    prop_assert_eq!(retry, reference.retry_after().map_or(RetryAfter::NEVER, RetryAfter));
                }
            }
            prop_assert_eq!(bucket.remaining(&limit, t), reference.remaining(t));
            prop_assert_eq!(
                bucket.reset_after(&limit, t),
                reference.reset_after().unwrap_or(u64::MAX)
            );
        }
    }

    /// Property 2: no window admits more than burst + rate·W.
    #[test]
    fn no_window_admits_more_than_burst_plus_rate_times_width(
        rate in rate(),
        burst in 0u32..40,
        t0 in 0u64..(1 << 50),
        gaps in gaps(),
    ) {
        let limit = Limit::new(rate, burst).unwrap();
        let admitted = admitted(&limit, &times(&limit, t0, &gaps));
        let b = u64::from(burst);
        for (i, &start) in admitted.iter().enumerate() {
            for (j, &end) in admitted.iter().enumerate().skip(i) {
                let n = (j - i + 1) as u64;
                let width = end - start;
                // Exact: n ≤ b + ⌊W / interval⌋.
                let refill = if limit.refills() { width / limit.interval_ns() } else { 0 };
                prop_assert!(n <= b + refill,
                    "{} admitted in [{}, {}] with burst {} and interval {}",
                    n, start, end, burst, limit.interval_ns());
                // Hence n ≤ b + rate·W.
                let allowance = b as f64 + rate * width as f64 / 1e9;
                prop_assert!(n as f64 <= allowance * (1.0 + 1e-9),
                    "{} admitted in a window of {} ns: rate {} burst {}", n, width, rate, burst);
            }
        }
    }

    /// Property 3, exact rates: burst at once, then one every 10⁹/rate ns
    /// (or later), never refused.
    #[test]
    fn a_client_pacing_at_the_rate_is_never_refused(
        interval in 1u64..=20 * SEC,
        burst in 1u32..40,
        t0 in 0u64..(1 << 50),
        lateness in prop::collection::vec(prop_oneof![4 => Just(0u64), 1 => 0u64..SEC], 1..200),
    ) {
        let rate = 1e9 / interval as f64;
        let limit = Limit::new(rate, burst).unwrap();
        let bucket = Bucket::new();
        for _ in 0..burst {
            prop_assert!(bucket.try_take(&limit, t0).is_ok());
        }
        prop_assert!(bucket.try_take(&limit, t0).is_err(), "more than the burst at once");
        let mut t = t0;
        for (k, late) in lateness.into_iter().enumerate() {
            t += interval + late;
            prop_assert!(bucket.try_take(&limit, t).is_ok(), "paced request {} at {}", k, t);
        }
    }

    /// Property 3, any rate: pacing at the interval rounded up to the
    /// nanosecond is never refused.
    #[test]
    fn a_client_pacing_at_the_rounded_up_interval_is_never_refused(
        rate in (-3.0f64..7.0).prop_map(|e| 10f64.powf(e)),
        burst in 1u32..40,
        t0 in 0u64..(1 << 50),
        requests in 1usize..300,
    ) {
        let limit = Limit::new(rate, burst).unwrap();
        let pace = (1e9 / rate).ceil().max(1.0) as u64;
        let bucket = Bucket::new();
        for _ in 0..burst {
            prop_assert!(bucket.try_take(&limit, t0).is_ok());
        }
        for k in 1..=requests as u64 {
            prop_assert!(bucket.try_take(&limit, t0 + k * pace).is_ok(), "paced request {}", k);
        }
    }

    /// Property 4: take_all refuses at the first level that refuses on its
    /// own, leaving every TAT as it was; or takes one token everywhere.
    #[test]
    fn take_all_is_all_or_nothing(
        levels in prop::collection::vec((limit(), gaps()), 1..6),
        t0 in 0u64..(1 << 40),
        at in 0u32..=3000,
    ) {
        // Each bucket gets a history of its own; the check comes after all.
        let history = |limit: &Limit, gaps: &[u32]| {
            let bucket = Bucket::new();
            let times = times(limit, t0, gaps);
            for &t in &times {
                let _ = bucket.try_take(limit, t);
            }
            (bucket, times.last().copied().unwrap_or(t0))
        };
        let mut now = t0;
        let mut buckets = Vec::new();
        for (limit, gaps) in &levels {
            let (bucket, last) = history(limit, gaps);
            buckets.push(bucket);
            now = now.max(last);
        }
        now += u64::from(at) * 1_000_000;
        let before: Vec<u64> = buckets.iter().map(Bucket::tat).collect();
        // What each level would do on its own, on a replica of its history.
        let alone: Vec<Result<u64, RetryAfter>> = levels
            .iter()
            .map(|(limit, gaps)| {
                let (replica, _) = history(limit, gaps);
                replica.try_take(limit, now).map(|()| replica.tat())
            })
            .collect();
        let pairs: Vec<(&Bucket, &Limit)> =
            buckets.iter().zip(&levels).map(|(b, (l, _))| (b, l)).collect();
        let result = take_all(&pairs, now);
        let after: Vec<u64> = buckets.iter().map(Bucket::tat).collect();
        match result {
            Err(Refused { level, retry_after_ns }) => {
                prop_assert!(alone[..level].iter().all(Result::is_ok));
                prop_assert_eq!(alone[level], Err(RetryAfter(retry_after_ns)));
                prop_assert_eq!(after, before);
            }
            Ok(()) => {
                let expected: Result<Vec<u64>, RetryAfter> = alone.into_iter().collect();
                prop_assert_eq!(Ok(after), expected);
            }
        }
    }

    /// Property 5: eviction is unobservable in a table with room.
    #[test]
    fn keyed_buckets_behave_like_one_bucket_per_key(
        limit in limit(),
        ops in prop::collection::vec((0u8..6, 0u32..=2000, 0u8..10), 1..300),
        t0 in 0u64..(1 << 40),
    ) {
        let table = KeyedBuckets::new(limit, 10_000);
        let model: Vec<Bucket> = (0..6).map(|_| Bucket::new()).collect();
        let unit = if limit.refills() { limit.interval_ns() } else { SEC };
        let mut t = t0;
        for (key, gap, op) in ops {
            t += u64::try_from(u128::from(unit) * u128::from(gap) / 1000).unwrap();
            let k = [key];
            match op {
                0 => { table.sweep(t); }
                1 => {
                    table.give_back(&k);
                    // The table has no bucket for a key it has evicted or
                    // never seen, i.e. a full one: give_back is a no-op
                    // there as on the model.
                    model[usize::from(key)].give_back(&limit);
                }
                _ => {
                    prop_assert_eq!(table.try_take(&k, t), model[usize::from(key)].try_take(&limit, t));
                }
            }
            prop_assert_eq!(table.remaining(&k, t), model[usize::from(key)].remaining(&limit, t));
        }
        prop_assert_eq!(table.overflow(), 0);
    }

    /// Property 5: a small table stays within its bound.
    #[test]
    fn keyed_buckets_stay_within_their_bound(
        max in 0usize..20,
        ops in prop::collection::vec((0u16..200, 0u32..=2000), 1..500),
    ) {
        let limit = Limit::new(10.0, 3).unwrap();
        let table = KeyedBuckets::new(limit, max);
        let mut t = 0;
        for (key, gap) in ops {
            t += u64::from(gap) * 1000;
            let _ = table.try_take(&key.to_be_bytes(), t);
            prop_assert!(table.len() <= max);
        }
    }
}

/// The fixed seed really fixes the cases.
#[test]
fn fixed_seed_generates_identical_cases() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    fn sample<S: Strategy>(strategy: &S) -> Vec<String>
    where
        S::Value: std::fmt::Debug,
    {
        let mut runner = TestRunner::new(config(1));
        (0..64)
            .map(|_| format!("{:?}", strategy.new_tree(&mut runner).unwrap().current()))
            .collect()
    }
    assert_eq!(sample(&limit()), sample(&limit()));
    assert_eq!(sample(&gaps()), sample(&gaps()));
}

// ---------------------------------------------------------------------------
// The real clock, two threads
// ---------------------------------------------------------------------------

/// Two threads hammer one bucket (rate 1000/s, burst 100) for about a
/// second: the admitted count is within 3 % of the allowance
/// `burst + rate × elapsed`, and never over the exact GCRA bound.
#[test]
fn two_threads_on_one_bucket_get_the_allowance() {
    const RATE: f64 = 1000.0;
    const BURST: u32 = 100;
    let limit = Limit::new(RATE, BURST).unwrap();
    let bucket = Arc::new(Bucket::new());
    let admitted = Arc::new(AtomicU64::new(0));
    let start_line = Arc::new(Barrier::new(2));
    let start = throttle::now_ns();
    let stop = start + SEC;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (bucket, admitted, start_line) =
                (bucket.clone(), admitted.clone(), start_line.clone());
            std::thread::spawn(move || {
                start_line.wait();
                let (mut mine, mut checks, mut last) = (0u64, 0u64, 0u64);
                loop {
                    let now = throttle::now_ns();
                    if now >= stop {
                        break;
                    }
                    checks += 1;
                    if bucket.try_take(&limit, now).is_ok() {
                        mine += 1;
                        last = now;
                    }
                }
                admitted.fetch_add(mine, Ordering::Relaxed);
                (checks, last)
            })
        })
        .collect();
    let results: Vec<(u64, u64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let checks: u64 = results.iter().map(|r| r.0).sum();
    let last = results.iter().map(|r| r.1).max().unwrap();
    let admitted = admitted.load(Ordering::Relaxed);
    let elapsed = last - start;
    let allowance = f64::from(BURST) + RATE * elapsed as f64 / 1e9;
    let ratio = admitted as f64 / allowance;
    eprintln!(
        "{admitted} admitted of {checks} checks in {elapsed} ns; allowance {allowance:.1}; \
         ratio {ratio:.4}"
    );
    assert!(
        checks > admitted * 10,
        "the threads did not hammer the bucket"
    );
    // The exact bound holds with threads too: every admission's `now` is
    // in [start, last], whatever order their compare-and-swaps landed in.
    assert!(admitted <= u64::from(BURST) + elapsed / limit.interval_ns());
    assert!((0.97..=1.03).contains(&ratio), "ratio {ratio}");
}
