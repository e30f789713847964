//! Does a throttle check allocate?
//!
//! A counting global allocator counts allocations per thread (a
//! thread-local counter, so the tests may run in parallel). After a
//! warm-up, 10,000 rounds of each check must allocate zero times:
//! - a snapshot bucket's `try_take`, `give_back`, `remaining`,
//!   `reset_after`, `take_all` (admitted and refused with rollback), and
//!   `now_ns`;
//! - a per-key table's `try_take`, `give_back`, `remaining` on keys it has
//!   seen, `sweep` with nothing to drop, and a new key refused a bucket
//!   because the table is full (fail-open).
//!
//! A key seen for the first time does allocate (its boxed copy): that is
//! asserted too, to show the counter counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringgate::throttle::{self, take_all, Bucket, KeyedBuckets, Limit};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

// SAFETY: defers every call to the system allocator unchanged; counting
// touches only a const-initialised thread-local, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread by `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const SEC: u64 = 1_000_000_000;
const ROUNDS: u64 = 10_000;

#[test]
fn snapshot_buckets_never_allocate() {
    let (l1, l2, l3) = (
        Limit::new(1000.0, 100).unwrap(),
        Limit::new(10.0, 5).unwrap(),
        Limit::new(0.5, 1).unwrap(),
    );
    let (a, b, c) = (Bucket::new(), Bucket::new(), Bucket::new());
    let _ = throttle::now_ns(); // the clock's start is set once
    let n = allocations(|| {
        for i in 0..ROUNDS {
            let t = i * SEC / 100;
            let _ = a.try_take(&l1, t);
            a.give_back(&l1);
            let _ = a.remaining(&l1, t);
            let _ = a.reset_after(&l1, t);
            // Mostly refused at the last level, rolling back the others.
            let _ = take_all(&[(&a, &l1), (&b, &l2), (&c, &l3)], t);
            let _ = take_all(&[(&a, &l1), (&b, &l2)], t);
            let _ = throttle::now_ns();
        }
    });
    assert_eq!(n, 0, "{n} allocations in {ROUNDS} rounds");
}

#[test]
fn keyed_checks_on_seen_keys_never_allocate() {
    let table = KeyedBuckets::new(Limit::new(10.0, 5).unwrap(), 10_000);
    let keys: Vec<String> = (0..1000).map(|i| format!("api-key-{i:08}")).collect();
    let first = allocations(|| table.try_take(keys[0].as_bytes(), 0).unwrap());
    assert!(
        first >= 1,
        "a new key's copy is an allocation: the counter counts"
    );
    for key in &keys {
        let _ = table.try_take(key.as_bytes(), 0);
    }
    let n = allocations(|| {
        for i in 0..ROUNDS {
            let key = keys[(i % 1000) as usize].as_bytes();
            let t = i * 1_000_000;
            let _ = table.try_take(key, t);
            if i % 2 == 0 {
                table.give_back(key);
            }
            let _ = table.remaining(key, t);
        }
        // Every key just taken from: a sweep then drops nothing.
        let t = ROUNDS * 1_000_000;
        for key in &keys {
            let _ = table.try_take(key.as_bytes(), t);
        }
        assert_eq!(table.sweep(t), 0);
    });
    assert_eq!(n, 0, "{n} allocations in {ROUNDS} rounds");
    assert_eq!(table.len(), 1000);
}

#[test]
fn a_full_table_admits_new_keys_without_allocating() {
    let table = KeyedBuckets::new(Limit::new(1.0, 1).unwrap(), 10);
    for i in 0..10u8 {
        table.try_take(&[i], 0).unwrap();
    }
    let n = allocations(|| {
        for i in 0..ROUNDS {
            let key = (i + 100).to_be_bytes();
            assert_eq!(table.try_take(&key, SEC / 2), Ok(()));
        }
    });
    assert_eq!(n, 0, "{n} allocations in {ROUNDS} rounds");
    assert_eq!(table.overflow(), ROUNDS);
    assert_eq!(table.len(), 10);
}
