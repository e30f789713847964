//! Does a stage cache stay within its byte budget, in its own accounting and
//! in the memory the process really holds, when offered four times its
//! capacity in distinct responses?
//!
//! A 64 MiB [`StageCache`] receives 16,384 entries with 16 KiB bodies
//! (256 MiB). After every insert `bytes()` must be at most 64 MiB; at the end
//! evictions must have happened and the process RSS growth (VmRSS from
//! /proc/self/status) must stay within the budget plus 32 MiB for allocator
//! slack, the table and its ghost list. The cache must also really use its
//! budget (keys spread over all shards), or the bound would prove nothing.
//!
//! The RFC 9111 mode's entries are checked the same way: variants markers,
//! two variants per URL carrying reuse metadata (validators, the targeted
//! fields kept aside), and each variant freshened once by a revalidation
//! (a new entry sharing the old body). The tests take a lock: RSS is the
//! whole process's.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ringgate::cache::{Entry, KeyBuilder, ParamKind, Reuse, StageCache, StoreOutcome};
use ringgate::http::date::HttpDate;

/// RSS is per process: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const CAPACITY: u64 = 64 << 20;
const ENTRIES: usize = 16_384;
const BODY: usize = 16 << 10;
const BATCH: usize = 256;
/// Allowed RSS growth beyond the budget: allocator slack and fragmentation,
/// the quick_cache table and ghost list, the key builder.
const OVERHEAD: u64 = 32 << 20;

/// The resident set size of this process in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value in kB");
    kib * 1024
}

#[test]
fn a_full_cache_stays_within_its_budget() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = rss_bytes();
    let cache = StageCache::new(CAPACITY);
    let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n");
    let mut keys = KeyBuilder::new();
    let mut max_bytes = 0;
    for batch in 0..ENTRIES / BATCH {
        for i in batch * BATCH..(batch + 1) * BATCH {
            keys.start("resource-1", "GET");
            keys.param(ParamKind::Path, "id", Some(i.to_string().as_bytes()));
            let mut body = vec![0u8; BODY];
            // Touch every page so the body is really resident.
            body.iter_mut().step_by(4096).for_each(|b| *b = i as u8);
            let entry = Entry::new(
                Box::from(keys.bytes()),
                200,
                head.clone(),
                Bytes::from(body),
                0,
                300_000,
                300_000,
            )
            .expect("16 KiB is cacheable");
            assert_eq!(
                cache.insert(keys.finish(), Arc::new(entry)),
                StoreOutcome::Stored
            );
            max_bytes = max_bytes.max(cache.bytes());
        }
        let bytes = cache.bytes();
        assert!(
            bytes <= CAPACITY,
            "after batch {batch}: {bytes} bytes > {CAPACITY}"
        );
        assert!(max_bytes <= CAPACITY, "peak {max_bytes} bytes > {CAPACITY}");
    }
    let after = rss_bytes();
    let stats = cache.stats();
    let growth = after.saturating_sub(before);
    println!(
        "capacity {CAPACITY} B; offered {} B in {ENTRIES} entries; resident {} entries, {} B \
         (peak {max_bytes} B); evictions {}; RSS {before} B -> {after} B, growth {growth} B \
         (limit {} B)",
        ENTRIES * BODY,
        stats.entries,
        stats.bytes,
        stats.evictions,
        CAPACITY + OVERHEAD,
    );
    assert!(stats.evictions > 0);
    // The whole budget is used: keys spread over every shard.
    assert!(
        stats.bytes >= CAPACITY / 10 * 9,
        "only {} B used",
        stats.bytes
    );
    assert_eq!(stats.evictions + stats.entries, ENTRIES as u64);
    assert!(
        growth <= CAPACITY + OVERHEAD,
        "RSS grew {growth} B, more than {CAPACITY} + {OVERHEAD}"
    );
    drop(cache);
}

/// An RFC-mode entry: validators in the head, targeted fields in `meta`.
fn rfc_entry(key: &[u8], body: Bytes, now: u64) -> Entry {
    let head = Bytes::from_static(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\netag: \"v1\"\r\nvary: accept-encoding\r\n",
    );
    let reuse = Reuse {
        date: HttpDate::from_unix(1_795_348_800),
        initial_age_ms: 0,
        no_cache: false,
        must_revalidate: false,
        swr_until_ms: now + 1_000,
        sie_until_ms: now + 1_000,
        etag: Some(76..80),
        last_modified: None,
        last_modified_secs: None,
        meta: Bytes::from_static(
            b"\r\ncdn-cache-control: max-age=600, stale-while-revalidate=30\r\n",
        ),
    };
    Entry::new(Box::from(key), 200, head, body, now, now + 1_000, u64::MAX)
        .expect("16 KiB is cacheable")
        .with_reuse(reuse)
}

#[test]
fn rfc_entries_variants_and_revalidations_stay_within_the_budget() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = rss_bytes();
    let cache = StageCache::new(CAPACITY);
    let mut keys = KeyBuilder::new();
    let mut max_bytes = 0;
    let urls = ENTRIES / 2;
    let mut stored = 0u64;
    for batch in 0..urls / BATCH {
        for i in batch * BATCH..(batch + 1) * BATCH {
            keys.start("resource-1", "GET");
            keys.param(ParamKind::Path, "id", Some(i.to_string().as_bytes()));
            let url_len = keys.bytes().len();
            let marker = Entry::variants_marker(
                Box::from(keys.bytes()),
                Bytes::from_static(b"accept-encoding\n"),
                i as u64 + 1,
                0,
            );
            cache.insert(keys.finish(), Arc::new(marker));
            stored += 1;
            for enc in ["gzip", "br"] {
                keys.truncate(url_len);
                keys.param(ParamKind::Vary, "", Some(&(i as u64 + 1).to_le_bytes()));
                keys.param(ParamKind::Vary, "accept-encoding", Some(enc.as_bytes()));
                let mut body = vec![0u8; BODY];
                body.iter_mut().step_by(4096).for_each(|b| *b = i as u8);
                let body = Bytes::from(body);
                let first = rfc_entry(keys.bytes(), body.clone(), 0);
                assert_eq!(
                    cache.insert(keys.finish(), Arc::new(first)),
                    StoreOutcome::Stored
                );
                // Revalidated: a freshened entry sharing the body.
                let fresh = rfc_entry(keys.bytes(), body, 2_000);
                assert_eq!(
                    cache.insert(keys.finish(), Arc::new(fresh)),
                    StoreOutcome::Stored
                );
                stored += 1;
                max_bytes = max_bytes.max(cache.bytes());
            }
        }
        let bytes = cache.bytes();
        assert!(
            bytes <= CAPACITY,
            "after batch {batch}: {bytes} bytes > {CAPACITY}"
        );
        assert!(max_bytes <= CAPACITY, "peak {max_bytes} bytes > {CAPACITY}");
    }
    let after = rss_bytes();
    let stats = cache.stats();
    let growth = after.saturating_sub(before);
    println!(
        "RFC mode: capacity {CAPACITY} B; {urls} URLs, {stored} markers and variants \
         (each variant stored twice); resident {} entries, {} B (peak {max_bytes} B); \
         evictions {}; RSS growth {growth} B (limit {} B)",
        stats.entries,
        stats.bytes,
        stats.evictions,
        CAPACITY + OVERHEAD,
    );
    assert!(stats.evictions > 0);
    assert!(
        stats.bytes >= CAPACITY / 10 * 9,
        "only {} B used",
        stats.bytes
    );
    assert!(
        growth <= CAPACITY + OVERHEAD,
        "RSS grew {growth} B, more than {CAPACITY} + {OVERHEAD}"
    );
    drop(cache);
}
