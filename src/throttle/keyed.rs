//! Per-key buckets (API keys, client addresses) in a bounded, sharded
//! table. See [`KeyedBuckets`].

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crossbeam::utils::CachePadded;

use super::gcra::{Limit, RetryAfter};

/// The most shards a table has.
const MAX_SHARDS: usize = 64;

/// The fewest entries a shard is given room for, where the bound allows:
/// with few entries per shard, an unlucky spread of keys fills one shard
/// long before the table.
const MIN_PER_SHARD: usize = 64;

/// One bucket per key, all under one [`Limit`], in a bounded table of
/// mutex-guarded shards (up to 64, cache-line padded; a key's shard comes
/// from its hash, so threads checking different keys rarely meet).
///
/// - **No allocation for a key already in the table**: the lookup borrows
///   the key as `&[u8]`. A new key allocates once, for its boxed copy.
/// - **Bounded**: at most `max_entries` buckets, split evenly over the
///   shards. When a new key's shard is full, its *idle* buckets are evicted
///   first: a bucket that has refilled to `burst` carries no state, so
///   dropping it changes nothing a client can observe.
/// - **Fail-open on overflow**: if the shard is full and nothing in it is
///   idle, the new key's request is admitted without a bucket and counted
///   in [`KeyedBuckets::overflow`]. Filling a table takes `max_entries`
///   keys each active within the last `burst / rate` seconds; refusing
///   every new client then would turn an attack into an outage, while
///   admitting a few unmetered requests leaves the coarser levels (stage,
///   account) to bound them. A shard can fill slightly before the table
///   does when keys spread unevenly.
/// - [`KeyedBuckets::sweep`], called periodically (every few seconds, off
///   the request path), drops idle buckets so the table follows the
///   active keys.
///
/// A full shard whose buckets are all busy is not rescanned for idle ones
/// until the earliest of them can have refilled (the shard remembers that
/// time), so an overflowing shard costs a lookup, not a scan, per request.
///
/// The table's limit is fixed: one table per distinct limit (a usage plan,
/// the per-client limit). On a reload, keep the table (behind an `Arc`)
/// when its limit is unchanged; a new table starts every key full.
#[derive(Debug)]
pub struct KeyedBuckets {
    limit: Limit,
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    /// Picks the shard (independent of the shards' own hashers).
    router: ahash::RandomState,
    max_entries: usize,
    len: AtomicUsize,
    overflow: AtomicU64,
}

#[derive(Debug)]
struct Shard {
    /// Key → the bucket's TAT (plain: the shard's mutex guards it).
    map: HashMap<Box<[u8]>, u64, ahash::RandomState>,
    /// The most entries this shard may hold.
    cap: usize,
    /// No bucket in the shard is full before this time: a scan for idle
    /// buckets before it would find none. 0 means "unknown, scan".
    next_idle: u64,
}

impl Shard {
    /// Drops the idle buckets; returns how many. Recomputes `next_idle`.
    fn evict_idle(&mut self, limit: &Limit, now: u64) -> usize {
        let before = self.map.len();
        let mut next_idle = u64::MAX;
        self.map.retain(|_, tat| {
            let full_at = limit.full_at(*tat);
            // u64::MAX: never full (a used bucket that never refills).
            let keep = full_at > now || full_at == u64::MAX;
            if keep && full_at < next_idle {
                next_idle = full_at;
            }
            keep
        });
        self.next_idle = next_idle;
        before - self.map.len()
    }
}

impl KeyedBuckets {
    /// An empty table of buckets under `limit`, holding at most
    /// `max_entries` keys (0: no buckets, every key admitted unmetered).
    pub fn new(limit: Limit, max_entries: usize) -> KeyedBuckets {
        let shard_count = (max_entries / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
        // A power of two, to pick a shard with a mask.
        let shard_count = if shard_count.is_power_of_two() {
            shard_count
        } else {
            shard_count.next_power_of_two() / 2
        };
        let (per_shard, extra) = (max_entries / shard_count, max_entries % shard_count);
        let shards = (0..shard_count)
            .map(|i| {
                CachePadded::new(Mutex::new(Shard {
                    map: HashMap::with_hasher(ahash::RandomState::new()),
                    cap: per_shard + usize::from(i < extra),
                    next_idle: 0,
                }))
            })
            .collect();
        KeyedBuckets {
            limit,
            shards,
            router: ahash::RandomState::new(),
            max_entries,
            len: AtomicUsize::new(0),
            overflow: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let index = self.router.hash_one(key) as usize & (self.shards.len() - 1);
        // A panic while holding a shard cannot leave it inconsistent (each
        // entry is one u64), so a poisoned lock is used as is.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one token from `key`'s bucket at `now` (creating a full
    /// bucket for a new key), or says how long until one is available.
    /// A new key that finds no room is admitted unmetered (see the type's
    /// page) and counted in [`KeyedBuckets::overflow`].
    pub fn try_take(&self, key: &[u8], now: u64) -> Result<(), RetryAfter> {
        self.take(key, now).map(|_| ())
    }

    /// [`KeyedBuckets::try_take`], also saying what is left in `key`'s
    /// bucket after the take: whole tokens, and nanoseconds until it is
    /// full again (`u64::MAX`: never), for `RateLimit-*` headers. One lock,
    /// as `try_take`.
    pub fn try_take_report(&self, key: &[u8], now: u64) -> Result<(u32, u64), RetryAfter> {
        self.take(key, now).map(|tat| {
            (
                self.limit.remaining(tat, now),
                self.limit.reset_after(tat, now),
            )
        })
    }

    /// The take; returns the bucket's TAT after it (0, a full bucket, for
    /// a request admitted unmetered on overflow).
    fn take(&self, key: &[u8], now: u64) -> Result<u64, RetryAfter> {
        let mut shard = self.shard(key);
        if let Some(tat) = shard.map.get_mut(key) {
            *tat = self.limit.admit(*tat, now)?;
            return Ok(*tat);
        }
        // A new key: its bucket is full. Burst 0 refuses here, storing
        // nothing.
        let tat = self.limit.admit(0, now)?;
        if shard.map.len() >= shard.cap {
            let evicted = if now >= shard.next_idle {
                shard.evict_idle(&self.limit, now)
            } else {
                0
            };
            self.len.fetch_sub(evicted, Relaxed);
            if shard.map.len() >= shard.cap {
                drop(shard);
                self.overflow.fetch_add(1, Relaxed);
                return Ok(0);
            }
        }
        shard.map.insert(key.into(), tat);
        shard.next_idle = shard.next_idle.min(self.limit.full_at(tat));
        self.len.fetch_add(1, Relaxed);
        Ok(tat)
    }

    /// Returns one token to `key`'s bucket (a request admitted here but
    /// refused at another level). Nothing happens for a key not in the
    /// table. Never allocates.
    pub fn give_back(&self, key: &[u8]) {
        let mut shard = self.shard(key);
        if let Some(tat) = shard.map.get_mut(key) {
            *tat = self.limit.give_back(*tat);
            let full_at = self.limit.full_at(*tat);
            shard.next_idle = shard.next_idle.min(full_at);
        }
    }

    /// Whole tokens available to `key` at `now` (`burst` for a key not in
    /// the table).
    pub fn remaining(&self, key: &[u8], now: u64) -> u32 {
        let shard = self.shard(key);
        match shard.map.get(key) {
            Some(&tat) => self.limit.remaining(tat, now),
            None => self.limit.burst(),
        }
    }

    /// Drops every idle bucket (full again at `now`); returns how many.
    /// Locks one shard at a time.
    pub fn sweep(&self, now: u64) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let evicted = shard.evict_idle(&self.limit, now);
            drop(shard);
            self.len.fetch_sub(evicted, Relaxed);
            removed += evicted;
        }
        removed
    }

    /// How many keys have a bucket.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound given to [`KeyedBuckets::new`]: `len()` never exceeds it.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// How many requests from new keys were admitted unmetered because
    /// their shard was full of busy buckets, since the table was made.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Relaxed)
    }

    /// The limit every bucket in the table is checked against.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_take_reports_what_is_left() {
        let s = 1_000_000_000;
        let table = KeyedBuckets::new(Limit::new(1.0, 3).unwrap(), 10);
        assert_eq!(table.try_take_report(b"a", 10 * s), Ok((2, s)));
        assert_eq!(table.try_take_report(b"a", 10 * s), Ok((1, 2 * s)));
        assert_eq!(table.try_take_report(b"a", 10 * s), Ok((0, 3 * s)));
        assert_eq!(table.try_take_report(b"a", 10 * s), Err(RetryAfter(s)));
        assert_eq!(table.try_take_report(b"b", 10 * s), Ok((2, s)));
    }

    #[test]
    fn large_tables_are_sharded_and_the_bound_stays_exact() {
        let limit = Limit::new(1.0, 1).unwrap();
        for max in [0, 1, 63, 64, 100, 1000, 4096, 10_000, 100_003] {
            let table = KeyedBuckets::new(limit, max);
            let caps: usize = table.shards.iter().map(|s| s.lock().unwrap().cap).sum();
            assert_eq!(caps, max);
            let n = table.shards.len();
            assert!(n.is_power_of_two() && n <= MAX_SHARDS, "{max}: {n}");
        }
        assert_eq!(KeyedBuckets::new(limit, 4096).shards.len(), 64);
        assert_eq!(KeyedBuckets::new(limit, 1000).shards.len(), 8);
        assert_eq!(KeyedBuckets::new(limit, 100).shards.len(), 1);
    }
}
