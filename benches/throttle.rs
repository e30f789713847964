//! Question: what does a throttle check cost on the request path?
//!
//! Goals: an uncontended `try_take` under 50 ns; two threads checking one
//! bucket under 200 ns per check; a per-key check of a seen key close to
//! a hash lookup under an uncontended mutex.
//!
//! - `bucket/admit`: one thread, a bucket that always admits (so each check
//!   is a load and a compare-and-swap), on a virtual clock.
//! - `bucket/refuse`: an empty bucket (a load, no write).
//! - `bucket/admit_real_clock`: `now_ns()` plus the check, what the request
//!   path pays per level.
//! - `bucket/take_all_3`: three levels admitted.
//! - `bucket/two_threads`: two threads on one bucket, each timing its own
//!   checks; the time per check of one thread (both always admit, so every
//!   check writes and the cache line moves between cores).
//! - `keyed/seen_key`: a table of 10,000 API keys, checking one of them.
//! - `quota/admit`: a usage-plan quota check and usage count for one
//!   (plan, key) pair on the real clock (what a request with a key pays
//!   after throttling); `quota/no_quota`: the usage count alone.
//! - `quota/two_threads`: both threads counting against one pair.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ringgate::throttle::{self, take_all, Bucket, KeyedBuckets, Limit};

/// One token per ns, a burst of 4 billion: always admits while the clock
/// advances by at least 1 ns per check.
fn generous() -> Limit {
    Limit::new(1e9, u32::MAX).unwrap()
}

fn bench_bucket(c: &mut Criterion) {
    let mut group = c.benchmark_group("bucket");

    let limit = generous();
    let bucket = Bucket::new();
    let mut now = 0u64;
    group.bench_function("admit", |b| {
        b.iter(|| {
            now += 1000;
            black_box(bucket.try_take(black_box(&limit), now))
        });
    });

    let strict = Limit::new(1.0, 1).unwrap();
    let empty = Bucket::new();
    empty.try_take(&strict, 0).unwrap();
    group.bench_function("refuse", |b| {
        b.iter(|| black_box(empty.try_take(black_box(&strict), black_box(10))));
    });

    let real = Bucket::new();
    group.bench_function("admit_real_clock", |b| {
        b.iter(|| black_box(real.try_take(black_box(&limit), throttle::now_ns())));
    });

    let levels = [Bucket::new(), Bucket::new(), Bucket::new()];
    let mut now = 0u64;
    group.bench_function("take_all_3", |b| {
        b.iter(|| {
            now += 1000;
            let pairs = [
                (&levels[0], &limit),
                (&levels[1], &limit),
                (&levels[2], &limit),
            ];
            black_box(take_all(black_box(&pairs), now))
        });
    });

    group.bench_function("two_threads", |b| {
        b.iter_custom(two_threads);
    });

    group.finish();
}

/// Both threads run `iters` admitted checks on one bucket; returns the
/// slower thread's time (so time / iters is one thread's cost per check).
fn two_threads(iters: u64) -> Duration {
    let limit = generous();
    let bucket = Arc::new(Bucket::new());
    let start_line = Arc::new(Barrier::new(2));
    let run = {
        let (bucket, start_line) = (bucket.clone(), start_line.clone());
        move || {
            start_line.wait();
            let start = Instant::now();
            let mut now = 0u64;
            for _ in 0..iters {
                now += 1000;
                black_box(bucket.try_take(&limit, now)).ok();
            }
            start.elapsed()
        }
    };
    let other = std::thread::spawn(run.clone());
    let mine = run();
    mine.max(other.join().unwrap())
}

fn bench_keyed(c: &mut Criterion) {
    let mut group = c.benchmark_group("keyed");
    let table = KeyedBuckets::new(generous(), 100_000);
    let keys: Vec<String> = (0..10_000).map(|i| format!("api-key-{i:08}")).collect();
    for key in &keys {
        table.try_take(key.as_bytes(), 0).unwrap();
    }
    let key = keys[5000].as_bytes();
    let mut now = 0u64;
    group.bench_function("seen_key", |b| {
        b.iter(|| {
            now += 1000;
            black_box(table.try_take(black_box(key), now))
        });
    });
    group.finish();
}

fn bench_quota(c: &mut Criterion) {
    use ringgate::throttle::quota::{Period, QuotaSettings, Restored, Usage};
    let mut group = c.benchmark_group("quota");
    let usage = Usage::new();
    let quota = QuotaSettings {
        limit: u64::MAX / 2,
        period: Period::Month,
        offset: 0,
    };
    let cell = usage.cell("plan", "key", Some(quota), 0, Restored::default);
    group.bench_function("admit", |b| {
        b.iter(|| black_box(cell.admit(throttle::now_ns())))
    });
    let free = usage.cell("plan", "free", None, 0, Restored::default);
    group.bench_function("no_quota", |b| {
        b.iter(|| black_box(free.admit(throttle::now_ns())))
    });
    group.bench_function("two_threads", |b| {
        b.iter_custom(|iters| {
            let start_line = Arc::new(Barrier::new(2));
            let run = {
                let (cell, start_line) = (cell.clone(), start_line.clone());
                move || {
                    start_line.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(cell.admit(throttle::now_ns())).ok();
                    }
                    start.elapsed()
                }
            };
            let other = std::thread::spawn(run.clone());
            let mine = run();
            mine.max(other.join().unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_bucket, bench_keyed, bench_quota);
criterion_main!(benches);
