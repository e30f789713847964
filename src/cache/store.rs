//! [`StageCache`]: the byte-bounded, sharded table of one stage's cached
//! responses, with stampede control and counters.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use quick_cache::sync::{Cache, PlaceholderGuard};
use quick_cache::{Lifecycle, OptionsBuilder, Weighter};

use super::entry::{Entry, ENTRY_OVERHEAD_BYTES, MAX_CACHEABLE_BODY};
use super::key::{CacheKey, PassThrough};

/// Weight of a typical entry (a 4 KiB response), used only to estimate how
/// many entries a cache holds; quick_cache sizes its ghost list from it.
const TYPICAL_ENTRY_WEIGHT: u64 = 4096;
/// Bounds of that estimate. The upper bound caps ghost bookkeeping (which
/// is not weighed) at about 2M keys × ~48 bytes for the largest classes.
const MIN_ESTIMATED_ITEMS: u64 = 64;
const MAX_ESTIMATED_ITEMS: u64 = 1 << 22;
/// Weight of the largest entry we expect: a maximal body, up to 64 KiB of
/// key and head, and the per-entry overhead.
const LARGEST_ENTRY_WEIGHT: u64 = MAX_CACHEABLE_BODY as u64 + 65_536 + ENTRY_OVERHEAD_BYTES;
/// quick_cache bounds each shard by `capacity / shards` and refuses entries
/// heavier than 97% of a shard. Each shard must hold at least this many of
/// the largest entries, so a 1 MiB response is cacheable in any cache of at
/// least `LARGEST_ENTRY_WEIGHT × 1.04` bytes (one shard).
const LARGEST_ENTRIES_PER_SHARD: u64 = 8;
/// At most this many shards (locks): plenty for a worker per core.
const MAX_SHARDS: u64 = 64;
/// quick_cache's default hot share, passed explicitly because the
/// admission limit ([`StageCache::max_entry_weight`]) is derived from it.
const HOT_ALLOCATION: f64 = 0.97;
/// `get_or_lead` retries this many times when it keeps finding entries it
/// cannot use (expired, or a hash collision) before leading unguarded.
const MAX_LEAD_ATTEMPTS: usize = 4;

/// Counters shared by the cache and its eviction hook. Relaxed atomics: they
/// are statistics, nothing is ordered by them.
#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    rejected: AtomicU64,
    collisions: AtomicU64,
    /// Heaviest entry a shard admits; set once after construction.
    admit_limit: AtomicU64,
}

/// Weighs an entry by its precomputed [`Entry::weight`] (never zero).
#[derive(Clone, Copy, Debug)]
struct EntryWeighter;

impl Weighter<CacheKey, Arc<Entry>> for EntryWeighter {
    fn weight(&self, _key: &CacheKey, val: &Arc<Entry>) -> u64 {
        val.weight()
    }
}

/// Counts evictions, and entries quick_cache refused as too heavy (it
/// reports both through `on_evict`; the weight tells them apart).
#[derive(Clone, Debug)]
struct EvictionCounter(Arc<Counters>);

/// Evicted entries, dropped when the request state drops, after the shard
/// lock is released, so freeing a large body never happens under the lock.
#[derive(Default)]
struct Evicted(Vec<Arc<Entry>>);

impl Lifecycle<CacheKey, Arc<Entry>> for EvictionCounter {
    type RequestState = Evicted;

    fn on_evict(&self, state: &mut Evicted, _key: CacheKey, val: Arc<Entry>) {
        if val.weight() > self.0.admit_limit.load(Relaxed) {
            self.0.rejected.fetch_add(1, Relaxed);
        } else {
            self.0.evictions.fetch_add(1, Relaxed);
        }
        state.0.push(val);
    }
}

type Table = Cache<CacheKey, Arc<Entry>, EntryWeighter, PassThrough, EvictionCounter>;
type Guard<'a> =
    PlaceholderGuard<'a, CacheKey, Arc<Entry>, EntryWeighter, PassThrough, EvictionCounter>;

/// What [`StageCache::lookup`] found.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// A fresh entry: serve it.
    Fresh(Arc<Entry>),
    /// Expired but inside its serve-stale window.
    Stale(Arc<Entry>),
    /// Nothing usable (absent, dead, or a hash collision).
    Miss,
}

impl Lookup {
    /// `"hit"`, `"stale"` or `"miss"`, for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Lookup::Fresh(_) => "hit",
            Lookup::Stale(_) => "stale",
            Lookup::Miss => "miss",
        }
    }
}

/// What [`StageCache::get_or_lead`] decided.
#[derive(Debug)]
pub enum Fetch<'a> {
    /// A fresh entry (found, or filled by the leader this caller waited on).
    Fresh(Arc<Entry>),
    /// This caller must call the backend, then [`Leader::fill`] or drop.
    Lead(Leader<'a>),
}

impl Fetch<'_> {
    /// `"hit"` or `"miss"`, for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Fetch::Fresh(_) => "hit",
            Fetch::Lead(_) => "miss",
        }
    }
}

/// What happened to an entry handed to [`StageCache::insert`] or
/// [`Leader::fill`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    /// The entry is in the cache.
    Stored,
    /// Heavier than [`StageCache::max_entry_weight`]: not stored (waiters of
    /// a leader still receive it). Counted in `rejected`.
    TooLarge,
    /// The key was removed, flushed or re-inserted while the leader fetched;
    /// the newer state wins and this entry is not stored (its waiters still
    /// receive it).
    Superseded,
}

impl StoreOutcome {
    /// `"stored"`, `"too_large"` or `"superseded"`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOutcome::Stored => "stored",
            StoreOutcome::TooLarge => "too_large",
            StoreOutcome::Superseded => "superseded",
        }
    }
}

/// The right and duty to fetch one key from the backend.
///
/// While it lives, other [`StageCache::get_or_lead`] callers for the key
/// wait. [`fill`](Leader::fill) stores the response and wakes them all with
/// it. Dropping it instead (backend error, uncacheable response, client
/// gone) restores the stale entry it carries if any (waiters then see it
/// expired and one of them leads), or else hands leadership to exactly one
/// waiter; the others keep waiting.
#[derive(Debug)]
pub struct Leader<'a> {
    cache: &'a StageCache,
    key: CacheKey,
    /// `None` only when leading unguarded after repeated unusable entries.
    guard: Option<Guard<'a>>,
    stale: Option<Arc<Entry>>,
}

impl Leader<'_> {
    /// The key being fetched.
    pub fn key(&self) -> CacheKey {
        self.key
    }

    /// The expired entry this caller found, if still inside its serve-stale
    /// window when found: serve it if the backend fails (stale-if-error).
    pub fn stale(&self) -> Option<&Arc<Entry>> {
        self.stale.as_ref()
    }

    /// Forgets the stale entry: dropping the leader then does not put it
    /// back (the origin's answer replaced it with something not stored).
    pub fn forget_stale(&mut self) {
        self.stale = None;
    }

    /// Stores the fetched response and wakes every waiter with it.
    /// `entry.key()` must be the bytes this leader was created for.
    pub fn fill(mut self, entry: Arc<Entry>) -> StoreOutcome {
        self.stale = None;
        let Some(guard) = self.guard.take() else {
            return self.cache.insert(self.key, entry);
        };
        if entry.weight() > self.cache.admit_limit {
            // Waiters get the value from the placeholder; quick_cache refuses
            // to admit it and reports it to the lifecycle, which counts it as
            // rejected.
            let _ = guard.insert(entry);
            return StoreOutcome::TooLarge;
        }
        match guard.insert(entry) {
            Ok(()) => StoreOutcome::Stored,
            Err(_) => StoreOutcome::Superseded,
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if let (Some(guard), Some(stale)) = (self.guard.take(), self.stale.take()) {
            // Put the stale entry back so later requests can still serve it.
            let _ = guard.insert(stale);
        }
        // A guard dropped unfilled passes leadership to one waiter.
    }
}

/// A snapshot of a cache's counters and occupancy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered from the cache (`CacheHitCount`).
    pub hits: u64,
    /// Requests sent to the backend while caching was on, refreshes
    /// included (`CacheMissCount`).
    pub misses: u64,
    /// Entries evicted to make room (flush and remove are not evictions).
    pub evictions: u64,
    /// Entries refused as heavier than [`StageCache::max_entry_weight`].
    pub rejected: u64,
    /// Hash hits whose key bytes differed.
    pub collisions: u64,
    /// Weight in use, in bytes.
    pub bytes: u64,
    /// Entries resident.
    pub entries: u64,
    /// The byte budget.
    pub capacity: u64,
}

/// One stage's response cache, shared by all workers (`Arc<StageCache>`).
///
/// Counting rule (as API Gateway counts CacheHitCount and CacheMissCount): [`lookup`](Self::lookup) and
/// [`get_or_lead`](Self::get_or_lead) each count one hit (fresh entry) or
/// one miss (anything else) per call, so call exactly one of them per
/// request. A `Cache-Control: max-age=0` refresh skips both, calls
/// [`count_refresh`](Self::count_refresh) (a miss) and then
/// [`insert`](Self::insert). Methods with caching disabled touch nothing.
///
/// Resizing (changing `cacheClusterSize`) builds a new `StageCache` and
/// drops the old one, which empties it as in AWS. Leaders still
/// holding the old cache finish harmlessly.
pub struct StageCache {
    inner: Table,
    counters: Arc<Counters>,
    capacity: u64,
    admit_limit: u64,
}

impl std::fmt::Debug for StageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageCache")
            .field("capacity", &self.capacity)
            .field("shards", &self.inner.num_shards())
            .field("admit_limit", &self.admit_limit)
            .finish_non_exhaustive()
    }
}

impl StageCache {
    /// A cache holding at most `capacity_bytes` of entry weight.
    ///
    /// The table is split into up to 64 power-of-two shards, each bounded by
    /// `capacity / shards`, so `bytes() <= capacity` at all times and one
    /// shard always fits several maximal responses. A capacity of 0 caches
    /// nothing.
    pub fn new(capacity_bytes: u64) -> Self {
        let shards = shard_count(capacity_bytes);
        // A multiple of the shard count, so the shards sum to at most the budget.
        let weight_capacity = capacity_bytes - capacity_bytes % shards;
        let items =
            (capacity_bytes / TYPICAL_ENTRY_WEIGHT).clamp(MIN_ESTIMATED_ITEMS, MAX_ESTIMATED_ITEMS);
        let counters = Arc::new(Counters::default());
        let options = OptionsBuilder::new()
            .shards(shards as usize)
            .estimated_items_capacity(items as usize)
            .weight_capacity(weight_capacity)
            .hot_allocation(HOT_ALLOCATION)
            .build()
            .expect("weight and item capacities are both set");
        let inner = Table::with_options(
            options,
            EntryWeighter,
            PassThrough,
            EvictionCounter(Arc::clone(&counters)),
        );
        // quick_cache refuses entries heavier than its per-shard hot target.
        let shard_cap = inner.shard_capacity();
        let admit_limit =
            ((shard_cap as f64 * HOT_ALLOCATION) as u64).clamp(shard_cap.min(1), shard_cap);
        counters.admit_limit.store(admit_limit, Relaxed);
        Self {
            inner,
            counters,
            capacity: capacity_bytes,
            admit_limit,
        }
    }

    /// Probes `key` without stampede control; counts a hit or a miss.
    ///
    /// A hash hit whose stored key bytes differ from `key_bytes` is a miss
    /// (and a collision). A dead entry (past its stale window) is removed.
    pub fn lookup(&self, key: &CacheKey, key_bytes: &[u8], now_ms: u64) -> Lookup {
        let found = match self.inner.get(key) {
            None => Lookup::Miss,
            Some(entry) if entry.key() != key_bytes => {
                self.counters.collisions.fetch_add(1, Relaxed);
                Lookup::Miss
            }
            Some(entry) if entry.is_fresh(now_ms) => Lookup::Fresh(entry),
            Some(entry) if entry.is_stale(now_ms) => Lookup::Stale(entry),
            Some(entry) => {
                self.remove_same(key, &entry);
                Lookup::Miss
            }
        };
        let counter = match found {
            Lookup::Fresh(_) => &self.counters.hits,
            _ => &self.counters.misses,
        };
        counter.fetch_add(1, Relaxed);
        found
    }

    /// The fast path of a hit: a fresh entry for `key`, counted as a hit;
    /// `None` (nothing counted) when there is none and the caller should go
    /// through [`get_or_lead`](Self::get_or_lead), which counts the miss.
    /// Synchronous, so a hit needs no timer and no future.
    pub fn get_fresh(&self, key: &CacheKey, key_bytes: &[u8], now_ms: u64) -> Option<Arc<Entry>> {
        let entry = self.inner.get(key)?;
        if entry.key() == key_bytes && entry.is_fresh(now_ms) {
            self.counters.hits.fetch_add(1, Relaxed);
            Some(entry)
        } else {
            None
        }
    }

    /// Returns a fresh entry for `key`, or makes this caller the one that
    /// fetches it; counts a hit (`Fresh`) or a miss (`Lead`).
    ///
    /// While a [`Leader`] for the key lives, other callers wait here (async,
    /// no thread is blocked) and receive the leader's entry as `Fresh`. An
    /// expired entry is removed (only if it is still the same `Arc`) and
    /// the caller leads, carrying it as [`Leader::stale`] if still in its
    /// stale window. A colliding entry (same hash, other bytes) is removed.
    ///
    /// The wait has no deadline: bound it with the worker's timer. Dropping
    /// this future at any point is safe: a waiter unregisters itself, and if
    /// leadership had just been handed to it, passes it on to the next
    /// waiter. A leader that never finishes holds its waiters until their
    /// timers fire.
    ///
    /// Waiters are woken through their `Waker` from whichever worker filled
    /// the entry, so the executor must accept cross-thread wakes (monoio's
    /// `sync` feature).
    pub async fn get_or_lead(&self, key: &CacheKey, key_bytes: &[u8], now_ms: u64) -> Fetch<'_> {
        let mut stale = None;
        let mut guard = None;
        for _ in 0..MAX_LEAD_ATTEMPTS {
            match self.inner.get_value_or_guard_async(key).await {
                Ok(entry) => {
                    if entry.key() != key_bytes {
                        self.counters.collisions.fetch_add(1, Relaxed);
                    } else if entry.is_fresh(now_ms) {
                        self.counters.hits.fetch_add(1, Relaxed);
                        return Fetch::Fresh(entry);
                    } else if entry.is_stale(now_ms) {
                        stale = Some(Arc::clone(&entry));
                    }
                    self.remove_same(key, &entry);
                }
                Err(g) => {
                    guard = Some(g);
                    break;
                }
            }
        }
        self.counters.misses.fetch_add(1, Relaxed);
        Fetch::Lead(Leader {
            cache: self,
            key: *key,
            guard,
            stale,
        })
    }

    /// Stores `entry` under `key`, replacing any entry there (a refresh).
    /// Entries heavier than [`max_entry_weight`](Self::max_entry_weight)
    /// are refused and the existing entry, if any, is left alone.
    pub fn insert(&self, key: CacheKey, entry: Arc<Entry>) -> StoreOutcome {
        if entry.weight() > self.admit_limit {
            self.counters.rejected.fetch_add(1, Relaxed);
            return StoreOutcome::TooLarge;
        }
        self.inner.insert(key, entry);
        StoreOutcome::Stored
    }

    /// Removes the entry for `key`; returns whether one was resident.
    ///
    /// If a leader is fetching `key`, its placeholder is dropped too: a new
    /// caller may lead concurrently, and the old leader's fill reports
    /// [`StoreOutcome::Superseded`].
    pub fn remove(&self, key: &CacheKey) -> bool {
        self.inner.remove(key).is_some()
    }

    /// Empties the cache (`FlushStageCache`). Not counted as evictions.
    /// Leaders in flight report [`StoreOutcome::Superseded`] on fill.
    pub fn flush(&self) {
        self.inner.clear();
    }

    /// Counts a `Cache-Control: max-age=0` refresh: a miss, as API Gateway counts it.
    pub fn count_refresh(&self) {
        self.counters.misses.fetch_add(1, Relaxed);
    }

    /// The entry for `key` whatever its freshness, counting nothing (a
    /// colliding entry is `None`). The RFC 9111 mode looks first, then
    /// decides with the request's own directives, and counts with
    /// [`count_hit`](Self::count_hit) or through
    /// [`get_or_lead`](Self::get_or_lead).
    pub fn peek(&self, key: &CacheKey, key_bytes: &[u8]) -> Option<Arc<Entry>> {
        self.inner.get(key).filter(|e| e.key() == key_bytes)
    }

    /// Counts a hit found with [`peek`](Self::peek).
    pub fn count_hit(&self) {
        self.counters.hits.fetch_add(1, Relaxed);
    }

    /// Weight in use, in bytes (sums the shards under their read locks).
    pub fn bytes(&self) -> u64 {
        self.inner.weight()
    }

    /// Entries resident.
    pub fn entries(&self) -> u64 {
        self.inner.len() as u64
    }

    /// The byte budget given to [`new`](Self::new).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The heaviest [`Entry::weight`] this cache admits (97% of a shard).
    pub fn max_entry_weight(&self) -> u64 {
        self.admit_limit
    }

    /// A snapshot of the counters and occupancy.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Relaxed),
            misses: c.misses.load(Relaxed),
            evictions: c.evictions.load(Relaxed),
            rejected: c.rejected.load(Relaxed),
            collisions: c.collisions.load(Relaxed),
            bytes: self.bytes(),
            entries: self.entries(),
            capacity: self.capacity,
        }
    }

    /// Removes `key` only if it still holds this very entry.
    fn remove_same(&self, key: &CacheKey, entry: &Arc<Entry>) {
        let _ = self.inner.remove_if(key, |v| Arc::ptr_eq(v, entry));
    }
}

/// Shards for a budget: as many as fit `LARGEST_ENTRIES_PER_SHARD` maximal
/// entries each, at most `MAX_SHARDS`, rounded down to a power of two.
fn shard_count(capacity: u64) -> u64 {
    let n = (capacity / (LARGEST_ENTRIES_PER_SHARD * LARGEST_ENTRY_WEIGHT)).clamp(1, MAX_SHARDS);
    1 << n.ilog2()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{KeyBuilder, ParamKind};
    use bytes::Bytes;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Barrier;
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread;

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";

    fn key_for(path: &str) -> (CacheKey, Vec<u8>) {
        let mut b = KeyBuilder::new();
        b.start("res-1", "GET");
        b.param(ParamKind::Path, "id", Some(path.as_bytes()));
        (b.finish(), b.bytes().to_vec())
    }

    fn entry(key_bytes: &[u8], body_len: usize, now: u64, ttl: u64, stale: u64) -> Arc<Entry> {
        Arc::new(
            Entry::new(
                Box::from(key_bytes),
                200,
                Bytes::from_static(HEAD),
                Bytes::from(vec![b'b'; body_len]),
                now,
                now + ttl,
                now + ttl + stale,
            )
            .unwrap(),
        )
    }

    #[test]
    fn shard_count_keeps_large_entries_admissible() {
        assert_eq!(shard_count(0), 1);
        assert_eq!(shard_count(64 << 20), 4);
        assert_eq!(shard_count(537_000_000), 32);
        assert_eq!(shard_count(237 << 30), 64);
        for gb in [0.5, 1.6, 6.1, 13.5, 28.4, 58.2, 118.0, 237.0] {
            let cache = StageCache::new((gb * (1u64 << 30) as f64) as u64);
            assert!(cache.max_entry_weight() >= LARGEST_ENTRY_WEIGHT, "{gb}");
            assert!(cache.inner.capacity() <= cache.capacity());
        }
    }

    #[test]
    fn get_fresh_counts_only_hits() {
        let cache = StageCache::new(1 << 20);
        let (k, kb) = key_for("1");
        assert!(cache.get_fresh(&k, &kb, 0).is_none());
        cache.insert(k, entry(&kb, 10, 1_000, 300_000, 60_000));
        assert!(cache.get_fresh(&k, &kb, 2_000).is_some());
        // Expired, or other key bytes: nothing, and nothing counted.
        assert!(cache.get_fresh(&k, &kb, 301_000).is_none());
        assert!(cache.get_fresh(&k, b"other", 2_000).is_none());
        let st = cache.stats();
        assert_eq!((st.hits, st.misses), (1, 0));
    }

    #[test]
    fn fresh_stale_miss_by_the_clock() {
        let cache = StageCache::new(1 << 20);
        let (k, kb) = key_for("1");
        assert!(matches!(cache.lookup(&k, &kb, 0), Lookup::Miss));
        cache.insert(k, entry(&kb, 10, 1_000, 300_000, 60_000));
        assert!(matches!(cache.lookup(&k, &kb, 1_000), Lookup::Fresh(_)));
        assert!(matches!(cache.lookup(&k, &kb, 300_999), Lookup::Fresh(_)));
        assert!(matches!(cache.lookup(&k, &kb, 301_000), Lookup::Stale(_)));
        assert!(matches!(cache.lookup(&k, &kb, 360_999), Lookup::Stale(_)));
        assert_eq!(cache.entries(), 1);
        assert!(matches!(cache.lookup(&k, &kb, 361_000), Lookup::Miss));
        assert_eq!(cache.entries(), 0, "dead entry removed");
        let s = cache.stats();
        assert_eq!((s.hits, s.misses), (2, 4));
    }

    #[test]
    fn weight_accounting() {
        let cache = StageCache::new(1 << 20);
        let (k1, b1) = key_for("1");
        let (k2, b2) = key_for("2");
        let e1 = entry(&b1, 1000, 0, 1000, 0);
        let e2 = entry(&b2, 3000, 0, 1000, 0);
        assert_eq!(
            e1.weight(),
            b1.len() as u64 + HEAD.len() as u64 + 1000 + ENTRY_OVERHEAD_BYTES
        );
        cache.insert(k1, Arc::clone(&e1));
        cache.insert(k2, Arc::clone(&e2));
        assert_eq!(cache.bytes(), e1.weight() + e2.weight());
        // A refresh replaces and re-weighs.
        let e1b = entry(&b1, 10, 0, 1000, 0);
        cache.insert(k1, Arc::clone(&e1b));
        assert_eq!(cache.bytes(), e1b.weight() + e2.weight());
        assert_eq!(cache.entries(), 2);
        assert!(cache.remove(&k2));
        assert!(!cache.remove(&k2));
        assert_eq!(cache.bytes(), e1b.weight());
    }

    #[test]
    fn collision_is_a_miss() {
        let cache = StageCache::new(1 << 20);
        let shared = CacheKey::from_u128(42);
        let (_, mine) = key_for("mine");
        let (_, theirs) = key_for("theirs");
        cache.insert(shared, entry(&theirs, 10, 0, 1000, 0));
        assert!(matches!(cache.lookup(&shared, &mine, 1), Lookup::Miss));
        assert!(matches!(
            cache.lookup(&shared, &theirs, 1),
            Lookup::Fresh(_)
        ));
        assert_eq!(cache.stats().collisions, 1);
        // get_or_lead replaces the colliding entry instead of serving it.
        match block_on(cache.get_or_lead(&shared, &mine, 1)) {
            Fetch::Lead(l) => {
                assert!(l.stale().is_none());
                assert_eq!(l.fill(entry(&mine, 10, 1, 1000, 0)), StoreOutcome::Stored);
            }
            Fetch::Fresh(_) => panic!("served another key's entry"),
        }
        assert!(matches!(cache.lookup(&shared, &mine, 2), Lookup::Fresh(_)));
        assert_eq!(cache.stats().collisions, 2);
    }

    #[test]
    fn flush_empties_without_evictions() {
        let cache = StageCache::new(1 << 20);
        for i in 0..50 {
            let (k, kb) = key_for(&i.to_string());
            cache.insert(k, entry(&kb, 100, 0, 1000, 0));
        }
        assert_eq!(cache.entries(), 50);
        cache.flush();
        let s = cache.stats();
        assert_eq!((s.entries, s.bytes, s.evictions), (0, 0, 0));
    }

    #[test]
    fn eviction_keeps_the_budget_and_counts() {
        let cap = 256 * 1024;
        let cache = StageCache::new(cap);
        for i in 0..200 {
            let (k, kb) = key_for(&i.to_string());
            assert_eq!(
                cache.insert(k, entry(&kb, 4096, 0, 1000, 0)),
                StoreOutcome::Stored
            );
            assert!(cache.bytes() <= cap, "{} > {cap}", cache.bytes());
        }
        let s = cache.stats();
        assert!(s.evictions > 0);
        assert_eq!(s.evictions + s.entries, 200);
        assert_eq!(s.rejected, 0);
    }

    #[test]
    fn too_large_is_rejected() {
        let cache = StageCache::new(64 * 1024);
        let (k, kb) = key_for("big");
        let small = entry(&kb, 10, 0, 1000, 0);
        cache.insert(k, Arc::clone(&small));
        assert_eq!(
            cache.insert(k, entry(&kb, 64 * 1024, 0, 1000, 0)),
            StoreOutcome::TooLarge
        );
        assert!(matches!(cache.lookup(&k, &kb, 1), Lookup::Fresh(e) if Arc::ptr_eq(&e, &small)));
        cache.remove(&k);
        // Through a leader: not stored, counted as rejected, not as eviction.
        let Fetch::Lead(l) = block_on(cache.get_or_lead(&k, &kb, 1)) else {
            panic!("expected a lead");
        };
        assert_eq!(
            l.fill(entry(&kb, 64 * 1024, 0, 1000, 0)),
            StoreOutcome::TooLarge
        );
        let s = cache.stats();
        assert_eq!((s.rejected, s.evictions, s.entries), (2, 0, 0));
    }

    #[test]
    fn expired_entry_is_replaced_and_stale_is_carried() {
        let cache = StageCache::new(1 << 20);
        let (k, kb) = key_for("1");
        let old = entry(&kb, 10, 0, 1000, 5000);
        cache.insert(k, Arc::clone(&old));
        let Fetch::Lead(l) = block_on(cache.get_or_lead(&k, &kb, 2000)) else {
            panic!("expired entry served as fresh");
        };
        assert!(Arc::ptr_eq(l.stale().unwrap(), &old));
        // Dropping the leader puts the stale entry back.
        drop(l);
        assert!(matches!(cache.lookup(&k, &kb, 2000), Lookup::Stale(e) if Arc::ptr_eq(&e, &old)));
        let Fetch::Lead(l) = block_on(cache.get_or_lead(&k, &kb, 2000)) else {
            panic!("expected a lead");
        };
        let new = entry(&kb, 10, 2000, 1000, 0);
        assert_eq!(l.fill(Arc::clone(&new)), StoreOutcome::Stored);
        assert!(
            matches!(block_on(cache.get_or_lead(&k, &kb, 2500)), Fetch::Fresh(e) if Arc::ptr_eq(&e, &new))
        );
        // Past the stale window nothing is carried.
        let Fetch::Lead(l) = block_on(cache.get_or_lead(&k, &kb, 10_000)) else {
            panic!("expected a lead");
        };
        assert!(l.stale().is_none());
    }

    #[test]
    fn fill_after_flush_is_superseded() {
        let cache = StageCache::new(1 << 20);
        let (k, kb) = key_for("1");
        let Fetch::Lead(l) = block_on(cache.get_or_lead(&k, &kb, 0)) else {
            panic!("expected a lead");
        };
        cache.flush();
        assert_eq!(l.fill(entry(&kb, 1, 0, 1000, 0)), StoreOutcome::Superseded);
        assert_eq!(cache.entries(), 0);
    }

    // ---- a minimal executor: park the thread until a waker fires ----

    struct ThreadWaker(thread::Thread);

    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Drives all `futures` on this thread until they complete.
    fn run_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + '_>>>) -> Vec<T> {
        let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut out: Vec<Option<T>> = futures.iter().map(|_| None).collect();
        loop {
            for (fut, slot) in futures.iter_mut().zip(out.iter_mut()) {
                if slot.is_none() {
                    if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                        *slot = Some(v);
                    }
                }
            }
            if out.iter().all(Option::is_some) {
                return out.into_iter().flatten().collect();
            }
            thread::park();
        }
    }

    fn block_on<'a, F: Future + 'a>(fut: F) -> F::Output {
        run_all(vec![Box::pin(fut)]).pop().unwrap()
    }

    /// Returns `Pending` once, waking itself: lets other tasks run.
    struct YieldNow(bool);

    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// Counts in `parked` the first time `inner` returns `Pending`, i.e.
    /// once this caller is registered as a waiter on the placeholder.
    struct CountPending<'a, F> {
        inner: Pin<Box<F>>,
        parked: &'a AtomicUsize,
        counted: bool,
    }

    impl<F: Future> Future for CountPending<'_, F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            let poll = self.inner.as_mut().poll(cx);
            if poll.is_pending() && !self.counted {
                self.counted = true;
                self.parked.fetch_add(1, Relaxed);
            }
            poll
        }
    }

    #[derive(Debug, PartialEq)]
    enum Role {
        Fresh,
        Led,
        LedAndDropped,
    }

    /// `THREADS × PER_THREAD` concurrent callers of one key. The first
    /// `drops` leaders wait until every other caller is parked, then drop
    /// without filling; the next leader fills.
    fn stampede(drops: usize) -> Vec<Role> {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 25;
        let cache = StageCache::new(1 << 20);
        let (k, kb) = key_for("hot");
        let parked = AtomicUsize::new(0);
        let leads = AtomicUsize::new(0);
        let start = Barrier::new(THREADS);
        thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let tasks = (0..PER_THREAD)
                            .map(|_| {
                                let fut = async {
                                    let fetch = CountPending {
                                        inner: Box::pin(cache.get_or_lead(&k, &kb, 0)),
                                        parked: &parked,
                                        counted: false,
                                    }
                                    .await;
                                    let Fetch::Lead(leader) = fetch else {
                                        return Role::Fresh;
                                    };
                                    let nth = leads.fetch_add(1, Relaxed);
                                    // Wait until all the others are parked as waiters
                                    // (minus those that already led and finished).
                                    while parked.load(Relaxed) + nth < THREADS * PER_THREAD - 1 {
                                        YieldNow(false).await;
                                    }
                                    if nth < drops {
                                        drop(leader);
                                        Role::LedAndDropped
                                    } else {
                                        leader.fill(entry(&kb, 100, 0, 60_000, 0));
                                        Role::Led
                                    }
                                };
                                Box::pin(fut) as Pin<Box<dyn Future<Output = Role> + '_>>
                            })
                            .collect();
                        run_all(tasks)
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    }

    fn count(roles: &[Role], role: Role) -> usize {
        roles.iter().filter(|r| **r == role).count()
    }

    #[test]
    fn stampede_has_one_leader() {
        let roles = stampede(0);
        assert_eq!(count(&roles, Role::Led), 1);
        assert_eq!(count(&roles, Role::Fresh), 99);
    }

    #[test]
    fn dropped_leader_hands_over_to_exactly_one_waiter() {
        let roles = stampede(1);
        assert_eq!(count(&roles, Role::LedAndDropped), 1);
        assert_eq!(count(&roles, Role::Led), 1);
        assert_eq!(count(&roles, Role::Fresh), 98);
    }
}
