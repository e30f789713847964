//! Exact behaviour on a virtual clock (nanoseconds passed by hand).

use super::*;

const SEC: u64 = 1_000_000_000;

fn limit(rate: f64, burst: u32) -> Limit {
    Limit::new(rate, burst).expect("valid limit")
}

#[test]
fn a_fresh_bucket_admits_exactly_burst_at_one_instant() {
    let l = limit(10.0, 5);
    let b = Bucket::new();
    let t = 7 * SEC + 123;
    for _ in 0..5 {
        assert_eq!(b.try_take(&l, t), Ok(()));
    }
    // The 6th waits exactly one interval (100 ms).
    assert_eq!(b.try_take(&l, t), Err(RetryAfter(SEC / 10)));
    assert_eq!(b.remaining(&l, t), 0);
}

#[test]
fn then_exactly_one_per_interval() {
    let l = limit(10.0, 5);
    let b = Bucket::new();
    for _ in 0..5 {
        b.try_take(&l, 0).unwrap();
    }
    let interval = SEC / 10;
    for k in 1..=1000 {
        let due = k * interval;
        assert_eq!(b.try_take(&l, due - 1), Err(RetryAfter(1)), "k={k}");
        assert_eq!(b.try_take(&l, due), Ok(()), "k={k}");
        assert_eq!(b.try_take(&l, due), Err(RetryAfter(interval)), "k={k}");
    }
}

#[test]
fn idle_time_refills_up_to_burst_only() {
    let l = limit(10.0, 5);
    let b = Bucket::new();
    for _ in 0..5 {
        b.try_take(&l, 0).unwrap();
    }
    // An hour later: full, but only 5.
    let t = 3600 * SEC;
    assert_eq!(b.remaining(&l, t), 5);
    for _ in 0..5 {
        b.try_take(&l, t).unwrap();
    }
    assert!(b.try_take(&l, t).is_err());
}

#[test]
fn half_a_request_per_second() {
    let l = limit(0.5, 1);
    assert_eq!(l.interval_ns(), 2 * SEC);
    let b = Bucket::new();
    assert_eq!(b.try_take(&l, 0), Ok(()));
    assert_eq!(b.try_take(&l, SEC), Err(RetryAfter(SEC)));
    assert_eq!(b.try_take(&l, 2 * SEC - 1), Err(RetryAfter(1)));
    assert_eq!(b.try_take(&l, 2 * SEC), Ok(()));
    assert_eq!(b.try_take(&l, 4 * SEC), Ok(()));
    // Arriving late does not bank credit beyond the burst of 1.
    assert_eq!(b.try_take(&l, 9 * SEC), Ok(()));
    assert_eq!(b.try_take(&l, 10 * SEC), Err(RetryAfter(SEC)));
}

#[test]
fn one_request_every_three_seconds() {
    for l in [
        limit(1.0 / 3.0, 2),
        Limit::per_interval(3 * SEC, 2).unwrap(),
    ] {
        assert_eq!(l.interval_ns(), 3 * SEC);
        let b = Bucket::new();
        b.try_take(&l, 0).unwrap();
        b.try_take(&l, 0).unwrap();
        assert_eq!(b.try_take(&l, 0), Err(RetryAfter(3 * SEC)));
        assert_eq!(b.try_take(&l, 3 * SEC - 1), Err(RetryAfter(1)));
        assert_eq!(b.try_take(&l, 3 * SEC), Ok(()));
        assert_eq!(b.try_take(&l, 6 * SEC), Ok(()));
        assert!(b.try_take(&l, 6 * SEC).is_err());
    }
}

#[test]
fn intervals_are_whole_nanoseconds_rounded_up_unless_already_whole() {
    assert_eq!(limit(1.0, 1).interval_ns(), SEC);
    assert_eq!(limit(1000.0, 1).interval_ns(), 1_000_000);
    assert_eq!(limit(0.1, 1).interval_ns(), 10 * SEC);
    assert_eq!(limit(1.6, 1).interval_ns(), 625_000_000);
    assert_eq!(limit(2.5, 1).interval_ns(), 400_000_000);
    assert_eq!(limit(3.0, 1).interval_ns(), 333_333_334);
    assert_eq!(limit(7.0, 1).interval_ns(), 142_857_143);
    assert_eq!(limit(1e9, 1).interval_ns(), 1);
    // Above 10^9/s: the 1 ns minimum, no overflow.
    assert_eq!(limit(3e9, 1).interval_ns(), 1);
    assert_eq!(limit(f64::MAX, u32::MAX).interval_ns(), 1);
}

#[test]
fn rate_three_never_exceeds_the_rate() {
    let l = limit(3.0, 1);
    let b = Bucket::new();
    let mut admitted = 0u64;
    // Every millisecond for 100 s.
    for ms in 0..100_000u64 {
        if b.try_take(&l, ms * 1_000_000).is_ok() {
            admitted += 1;
        }
    }
    // 1 + 3/s × 99.999 s = 300.997
    assert_eq!(admitted, 300);
}

#[test]
fn burst_zero_refuses_everything() {
    for l in [limit(100.0, 0), limit(0.0, 0)] {
        let b = Bucket::new();
        for t in [0, 1, SEC, 1000 * SEC] {
            assert_eq!(b.try_take(&l, t), Err(RetryAfter::NEVER));
            assert_eq!(b.remaining(&l, t), 0);
            assert_eq!(b.reset_after(&l, t), 0);
        }
        assert_eq!(b.tat(), 0);
    }
}

#[test]
fn rate_zero_admits_burst_requests_then_nothing_ever() {
    let l = limit(0.0, 3);
    assert!(!l.refills());
    assert_eq!(l.interval_ns(), u64::MAX);
    let b = Bucket::new();
    assert_eq!(b.reset_after(&l, 5), 0);
    assert_eq!(b.try_take(&l, 5), Ok(()));
    assert_eq!(b.reset_after(&l, 5), u64::MAX);
    assert_eq!(b.try_take(&l, 10 * SEC), Ok(()));
    assert_eq!(b.remaining(&l, 10 * SEC), 1);
    assert_eq!(b.try_take(&l, 1000 * SEC), Ok(()));
    for t in [1000 * SEC, 1 << 40, 1 << 62, u64::MAX] {
        assert_eq!(b.try_take(&l, t), Err(RetryAfter::NEVER));
        assert_eq!(b.remaining(&l, t), 0);
    }
    // A token given back can be taken once more.
    b.give_back(&l);
    assert_eq!(b.remaining(&l, u64::MAX), 1);
    assert_eq!(b.try_take(&l, u64::MAX), Ok(()));
    assert!(b.try_take(&l, u64::MAX).is_err());
}

#[test]
fn refill_slower_than_the_process_can_live_is_no_refill() {
    let l = limit(1e-12, 5); // one token per 31,700 years
    assert_eq!(l, Limit::no_refill(5));
    let l = limit(1e-9, 1); // one per 31.7 years: representable
    assert_eq!(l.interval_ns(), 1_000_000_000 * SEC);
    assert_eq!(
        Limit::new(1e-9, 5),
        Err(LimitError::RefillTooSlow {
            rate: 1e-9,
            burst: 5
        })
    );
    assert!(Limit::per_interval(1 << 62, 1).is_ok());
    assert!(Limit::per_interval(1 << 62, 2).is_err());
    assert!(Limit::per_interval(0, 1).is_err());
}

#[test]
fn invalid_rates_are_errors() {
    for rate in [f64::NAN, -1.0, -0.0001, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(
            matches!(Limit::new(rate, 1), Err(LimitError::InvalidRate(_))),
            "{rate}"
        );
    }
    let message = Limit::new(-1.0, 1).unwrap_err().to_string();
    assert!(message.contains("-1"), "{message}");
}

#[test]
fn no_overflow_at_the_extremes() {
    let l = limit(1e9, u32::MAX);
    let b = Bucket::new();
    for t in [0, 1, u64::MAX - 1, u64::MAX] {
        let _ = b.try_take(&l, t);
        let _ = b.remaining(&l, t);
        let _ = b.reset_after(&l, t);
        b.give_back(&l);
    }
    let l = limit(1e-9, 1);
    let b = Bucket::new();
    b.try_take(&l, u64::MAX - 5).unwrap();
    assert_eq!(b.tat(), u64::MAX); // saturated, not wrapped
}

#[test]
fn give_back_returns_one_token_never_more_than_burst() {
    let l = limit(1.0, 2);
    let b = Bucket::new();
    b.give_back(&l);
    assert_eq!(b.tat(), 0);
    assert_eq!(b.remaining(&l, 0), 2);
    b.try_take(&l, 10 * SEC).unwrap();
    b.try_take(&l, 10 * SEC).unwrap();
    assert_eq!(b.remaining(&l, 10 * SEC), 0);
    b.give_back(&l);
    assert_eq!(b.remaining(&l, 10 * SEC), 1);
    b.try_take(&l, 10 * SEC).unwrap();
    assert!(b.try_take(&l, 10 * SEC).is_err());
    // Given back after it refilled: still only 2.
    b.give_back(&l);
    b.give_back(&l);
    b.give_back(&l);
    assert_eq!(b.remaining(&l, 20 * SEC), 2);
    b.try_take(&l, 20 * SEC).unwrap();
    b.try_take(&l, 20 * SEC).unwrap();
    assert!(b.try_take(&l, 20 * SEC).is_err());
}

#[test]
fn remaining_and_reset_after() {
    let l = limit(10.0, 5);
    let b = Bucket::new();
    assert_eq!(b.remaining(&l, 0), 5);
    assert_eq!(b.reset_after(&l, 0), 0);
    for _ in 0..3 {
        b.try_take(&l, 0).unwrap();
    }
    assert_eq!(b.remaining(&l, 0), 2);
    assert_eq!(b.reset_after(&l, 0), 300_000_000);
    // 2.5 tokens back after 150 ms... 2 + 1.5 = 3.5: 3 whole.
    assert_eq!(b.remaining(&l, 150_000_000), 3);
    assert_eq!(b.reset_after(&l, 150_000_000), 150_000_000);
    assert_eq!(b.remaining(&l, 299_999_999), 4);
    assert_eq!(b.remaining(&l, 300_000_000), 5);
    assert_eq!(b.reset_after(&l, 300_000_000), 0);
    assert_eq!(b.remaining(&l, 10 * SEC), 5);
    assert_eq!(b.reset_after(&l, 10 * SEC), 0);
}

#[test]
fn retry_after_in_whole_seconds_rounds_up() {
    assert_eq!(RetryAfter(1).secs_ceil(), 1);
    assert_eq!(RetryAfter(SEC).secs_ceil(), 1);
    assert_eq!(RetryAfter(SEC + 1).secs_ceil(), 2);
    assert!(RetryAfter::NEVER.is_never());
    assert_eq!(RetryAfter::NEVER.secs_ceil(), 18_446_744_074);
}

#[test]
fn take_all_takes_one_token_per_level() {
    let (la, lb) = (limit(1.0, 3), limit(1.0, 5));
    let (a, b) = (Bucket::new(), Bucket::new());
    assert_eq!(take_all(&[(&a, &la), (&b, &lb)], 0), Ok(()));
    assert_eq!(a.remaining(&la, 0), 2);
    assert_eq!(b.remaining(&lb, 0), 4);
    assert_eq!(take_all(&[], 0), Ok(()));
}

#[test]
fn take_levels_skips_absent_levels_and_undoes_on_refusal() {
    let open = Level::new(limit(1.0, 5));
    let one = Level::new(limit(1.0, 1));
    // Absent levels are skipped; all present ones take a token.
    assert_eq!(
        take_levels([None, Some(&open), None, Some(&one)], 0),
        Ok(())
    );
    assert_eq!(open.bucket().remaining(open.limit(), 0), 4);
    // `one` is empty: refused at index 3, and `open` gets its token back.
    assert_eq!(
        take_levels([Some(&open), None, None, Some(&one)], 0).map_err(|r| r.level),
        Err(3)
    );
    assert_eq!(open.bucket().remaining(open.limit(), 0), 4);
    assert_eq!(take_levels::<4>([None; 4], 0), Ok(()));
}

#[test]
fn take_all_with_more_levels_than_its_stack_list() {
    let l = limit(1.0, 2);
    let empty = limit(1.0, 0);
    let buckets: Vec<Bucket> = (0..12).map(|_| Bucket::new()).collect();
    for refusing in [0, 7, 8, 11] {
        let levels: Vec<(&Bucket, &Limit)> = buckets
            .iter()
            .enumerate()
            .map(|(i, b)| (b, if i == refusing { &empty } else { &l }))
            .collect();
        let before: Vec<u64> = buckets.iter().map(Bucket::tat).collect();
        assert_eq!(take_all(&levels, 0).map_err(|r| r.level), Err(refusing));
        assert_eq!(buckets.iter().map(Bucket::tat).collect::<Vec<_>>(), before);
    }
    let levels: Vec<(&Bucket, &Limit)> = buckets.iter().map(|b| (b, &l)).collect();
    assert_eq!(take_all(&levels, 0), Ok(()));
    assert!(buckets.iter().all(|b| b.remaining(&l, 0) == 1));
}

#[test]
fn take_all_gives_back_what_it_took_when_a_later_level_refuses() {
    let (l1, l2, l3) = (limit(10.0, 4), limit(1.0, 10), limit(0.5, 1));
    let (a, b, c) = (Bucket::new(), Bucket::new(), Bucket::new());
    a.try_take(&l1, 0).unwrap();
    b.try_take(&l2, 0).unwrap();
    c.try_take(&l3, 0).unwrap(); // empty until 2 s
    let before = (a.tat(), b.tat(), c.tat());
    let levels = [(&a, &l1), (&b, &l2), (&c, &l3)];
    let t = SEC / 2;
    assert_eq!(
        take_all(&levels, t),
        Err(Refused {
            level: 2,
            retry_after_ns: 3 * SEC / 2
        })
    );
    assert_eq!((a.tat(), b.tat(), c.tat()), before);
    // The first level refusing touches nothing after it.
    let empty = limit(1.0, 0);
    let levels = [(&c, &empty), (&a, &l1), (&b, &l2)];
    assert_eq!(
        take_all(&levels, t),
        Err(Refused {
            level: 0,
            retry_after_ns: u64::MAX
        })
    );
    assert_eq!((a.tat(), b.tat(), c.tat()), before);
    // Once the last level has a token, all three are taken.
    let levels = [(&a, &l1), (&b, &l2), (&c, &l3)];
    assert_eq!(take_all(&levels, 2 * SEC), Ok(()));
    assert_eq!(c.remaining(&l3, 2 * SEC), 0);
}

#[test]
fn take_all_rollback_after_a_concurrent_change_gives_back_one_interval() {
    let l = limit(1.0, 5);
    let a = Bucket::new();
    let (old, new) = a.take(&l, 0).unwrap();
    a.try_take(&l, 0).unwrap(); // someone else, in between
    a.restore(&l, old, new);
    assert_eq!(a.remaining(&l, 0), 4);
    assert_eq!(a.tat(), SEC);
}

#[test]
fn a_level_carried_with_the_same_limit_keeps_its_state() {
    let level = Level::new(limit(1.0, 1));
    level.try_take(0).unwrap();
    let same = level.carry(limit(1.0, 1));
    assert!(same.shares_bucket_with(&level));
    assert!(same.try_take(0).is_err());
    let changed = level.carry(limit(2.0, 1));
    assert!(!changed.shares_bucket_with(&level));
    assert_eq!(changed.try_take(0), Ok(()));
    assert_eq!(changed.limit().interval_ns(), SEC / 2);
    assert_eq!(changed.bucket().remaining(changed.limit(), 0), 0);
}

#[test]
fn now_ns_is_monotonic() {
    let a = now_ns();
    let b = now_ns();
    assert!(b >= a);
}

// ---------------------------------------------------------------------------
// KeyedBuckets
// ---------------------------------------------------------------------------

#[test]
fn keyed_buckets_are_independent_per_key() {
    let table = KeyedBuckets::new(limit(1.0, 2), 100);
    assert!(table.is_empty());
    assert_eq!(table.remaining(b"alice", 0), 2);
    table.try_take(b"alice", 0).unwrap();
    table.try_take(b"alice", 0).unwrap();
    assert_eq!(table.try_take(b"alice", 0), Err(RetryAfter(SEC)));
    table.try_take(b"bob", 0).unwrap();
    assert_eq!(table.remaining(b"bob", 0), 1);
    assert_eq!(table.len(), 2);
    table.give_back(b"alice");
    table.give_back(b"nobody");
    assert_eq!(table.len(), 2);
    assert_eq!(table.try_take(b"alice", 0), Ok(()));
    assert_eq!(table.try_take(b"alice", SEC), Ok(()));
    assert_eq!(table.overflow(), 0);
}

#[test]
fn keyed_burst_zero_stores_nothing() {
    let table = KeyedBuckets::new(limit(1.0, 0), 100);
    assert_eq!(table.try_take(b"k", 0), Err(RetryAfter::NEVER));
    assert!(table.is_empty());
}

#[test]
fn keyed_table_respects_its_bound_and_evicts_idle_buckets() {
    let table = KeyedBuckets::new(limit(1.0, 1), 10);
    for i in 0..10u8 {
        table.try_take(&[i], 0).unwrap();
    }
    assert_eq!(table.len(), 10);
    // Full of busy buckets: a new key is admitted unmetered.
    assert_eq!(table.try_take(b"new", SEC / 2), Ok(()));
    assert_eq!(table.try_take(b"new", SEC / 2), Ok(()));
    assert_eq!(table.overflow(), 2);
    assert_eq!(table.len(), 10);
    // Keys 0..5 stay busy; 5..10 refill at 1 s.
    for i in 0..5u8 {
        table.try_take(&[i], SEC).unwrap();
    }
    assert_eq!(table.try_take(b"new", SEC), Ok(()));
    assert_eq!(table.len(), 6, "5 idle buckets evicted, one added");
    assert_eq!(table.overflow(), 2);
    assert_eq!(table.try_take(b"new", SEC), Err(RetryAfter(SEC)));
    // The busy ones kept their state.
    assert!(table.try_take(&[0], SEC).is_err());
    assert!(table.len() <= table.max_entries());
}

#[test]
fn keyed_sweep_drops_idle_buckets_only() {
    let table = KeyedBuckets::new(limit(10.0, 5), 1000);
    for i in 0..100u32 {
        table.try_take(&i.to_be_bytes(), 0).unwrap();
    }
    for i in 0..10u32 {
        table.try_take(&i.to_be_bytes(), SEC / 20).unwrap();
    }
    assert_eq!(table.sweep(SEC / 20), 0);
    // The 90 taken once at 0 are full at 100 ms; the 10 at 200 ms.
    assert_eq!(table.sweep(SEC / 10), 90);
    assert_eq!(table.len(), 10);
    assert_eq!(table.remaining(&3u32.to_be_bytes(), SEC / 10), 4);
    assert_eq!(table.sweep(SEC / 5 - 1), 0);
    assert_eq!(table.sweep(SEC / 5), 10);
    assert!(table.is_empty());
}

#[test]
fn keyed_rate_zero_buckets_are_never_evicted_once_used() {
    let table = KeyedBuckets::new(Limit::no_refill(1), 1);
    table.try_take(b"a", 0).unwrap();
    assert_eq!(table.sweep(u64::MAX), 0);
    assert_eq!(table.try_take(b"a", 1 << 40), Err(RetryAfter::NEVER));
    assert_eq!(table.try_take(b"b", 1 << 40), Ok(()));
    assert_eq!(table.overflow(), 1);
}

#[test]
fn keyed_table_of_zero_entries_meters_nothing() {
    let table = KeyedBuckets::new(limit(1.0, 1), 0);
    assert_eq!(table.try_take(b"a", 0), Ok(()));
    assert_eq!(table.try_take(b"a", 0), Ok(()));
    assert_eq!(table.overflow(), 2);
    assert!(table.is_empty());
}

#[test]
fn take_two_is_take_all_for_two_levels() {
    let (a, b) = (Limit::new(1.0, 2).unwrap(), Limit::new(1.0, 3).unwrap());
    for now in [0u64, 1, 500_000_000, 5_000_000_000] {
        let (x1, y1, x2, y2) = (Bucket::new(), Bucket::new(), Bucket::new(), Bucket::new());
        for i in 0..6u64 {
            let t = now + i;
            let one = take_all(&[(&x1, &a), (&y1, &b)], t);
            let two = take_two((&x2, &a), (&y2, &b), t);
            assert_eq!(one, two, "request {i} at {t}");
            assert_eq!((x1.tat(), y1.tat()), (x2.tat(), y2.tat()));
        }
    }
    // The clock moves forward.
    let t0 = now_ns();
    let t1 = now_ns();
    assert!(t1 >= t0 && t0 > 0);
}
