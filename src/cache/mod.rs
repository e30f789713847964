//! # cache: the stage response cache
//!
//! Owns the in-memory response cache of a REST stage: cache keys, cached
//! entries, the byte-bounded shared store, stampede control and the cache
//! counters, and the RFC 9111 rules for what an origin lets a shared cache
//! store ([`policy`]). It knows nothing of configuration, connections,
//! monoio or timers: time is an input (`now_ms`, the caller's clock in milliseconds)
//! and waits are bounded by the caller.
//!
//! ## Key types
//! - [`KeyBuilder`] / [`CacheKey`]: the key bytes (namespace, method, each
//!   `cacheKeyParameters` value, all length-prefixed) and their 128-bit hash.
//! - [`Entry`]: an immutable stored response (head lines + body + times +
//!   weight), shared as `Arc<Entry>`; in the RFC 9111 mode it also carries
//!   its [`Reuse`] rules (stored Date, initial age, validators, stale
//!   windows), and a URL whose responses vary has a variants marker entry
//!   ([`Entry::variants_marker`]) under which each variant has a key of
//!   its own ([`ParamKind::Vary`]).
//! - [`StageCache`]: one per stage, shared by every worker; a sharded
//!   quick_cache table bounded in bytes (`cacheClusterSize × 2^30`).
//! - [`Fetch`] / [`Leader`]: the outcome of a lookup with stampede control.
//!
//! ## How the gateway uses it
//! ```text
//! keys.start(namespace, method); keys.param(kind, name, value)…   (reused buffer)
//! let key = keys.finish();
//! match timeout(wait, cache.get_or_lead(&key, keys.bytes(), now_ms)).await {
//!     Fresh(entry)  → write entry.head() + Date/Age/… + entry.body()
//!     Lead(leader)  → call the integration;
//!                     cacheable → leader.fill(Arc::new(Entry::new(…)?))
//!                     failed    → serve leader.stale() if allowed, drop leader
//!     timed out     → call the integration uncached
//! }
//! max-age=0 refresh: cache.count_refresh(); fetch; cache.insert(key, entry)
//! FlushStageCache:   cache.flush()         resize: build a new StageCache
//! ```
//!
//! ## Stampede control (quick_cache placeholders)
//! The first caller to miss gets a [`Leader`] (a quick_cache placeholder
//! guard); later callers for that key wait on the placeholder. `fill` wakes
//! them all with the entry. A leader dropped unfilled wakes exactly one
//! waiter, which becomes the next leader (the most recently arrived one:
//! quick_cache pops its waiter list); the rest keep waiting. If the leader
//! carried a stale entry, dropping it puts that entry back instead, so later
//! requests can still serve it stale. `remove`/`flush` during a fetch drop
//! the placeholder: the leader's waiters still get its entry, but it is not
//! stored ([`StoreOutcome::Superseded`]).
//!
//! ## Hot path cost
//! A hit hashes the key bytes twice (ahash), takes one shard's read lock,
//! does one table probe (the key already is a hash: no re-hashing), compares
//! the key bytes and clones an `Arc`. No allocation. Counters are relaxed
//! atomics. Misses allocate the entry; evicted entries are freed after the
//! shard lock is released.
//!
//! ## How it fails
//! Caching is best-effort: nothing here returns an error to a client.
//! Bodies over [`MAX_CACHEABLE_BODY`] are refused by [`Entry::new`]
//! ([`EntryError`]); entries heavier than a shard's admission limit are
//! refused by the store (counted as `rejected`); hash collisions are detected
//! by comparing key bytes and are misses. Memory stays within the byte budget
//! plus the unweighed table bookkeeping (tens of bytes per entry and per
//! recently evicted key).

#![forbid(unsafe_code)]

mod entry;
mod key;
pub mod policy;
mod store;

pub use entry::{Entry, EntryError, Reuse, ENTRY_OVERHEAD_BYTES, MAX_CACHEABLE_BODY};
pub use key::{CacheKey, KeyBuilder, ParamKind};
pub use store::{CacheStats, Fetch, Leader, Lookup, StageCache, StoreOutcome};
