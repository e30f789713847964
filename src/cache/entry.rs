//! One cached response: immutable, shared as `Arc<Entry>` by every worker
//! that serves it, and weighed once when built.

#![forbid(unsafe_code)]

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use bytes::Bytes;

use crate::http::date::HttpDate;

/// Largest response body the cache stores (API Gateway's limit: 1,048,576 bytes);
/// larger responses are served but not cached.
pub const MAX_CACHEABLE_BODY: usize = 1_048_576;

/// Bytes charged per entry on top of its key, head and body lengths: memory
/// an entry really costs that the lengths do not show.
///
/// - the `Arc<Entry>` allocation: 16 bytes of counts + the struct (120 on
///   64-bit) + allocator rounding ≈ 144;
/// - the key's `Box<[u8]>` allocation header ≈ 16;
/// - `Bytes` shared headers (made on the first clone) and allocation headers
///   for head and body ≈ 2 × 56 = 112;
/// - the quick_cache slot: `(16 + 8 + 21)` bytes × 1.5 for ghost entries,
///   rounded to a power of two ≈ 100.
///
/// Total ≈ 372, rounded to 384. Allocator slack inside large bodies is not
/// counted (it is a few percent with the usual size classes).
pub const ENTRY_OVERHEAD_BYTES: u64 = 384;

/// Why a response cannot become an [`Entry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// The body is larger than [`MAX_CACHEABLE_BODY`]; serve it uncached.
    BodyTooLarge {
        /// The body length in bytes.
        len: usize,
    },
}

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryError::BodyTooLarge { len } => write!(
                f,
                "response body of {len} bytes exceeds the cacheable maximum of {MAX_CACHEABLE_BODY}"
            ),
        }
    }
}

impl std::error::Error for EntryError {}

/// How an entry stored under RFC 9111's rules (the stage's
/// `respect_origin_cache_control`) may be reused; the rules themselves are
/// [`super::policy`]'s. Times are milliseconds on the caller's clock.
#[derive(Clone, Debug)]
pub struct Reuse {
    /// The `Date` sent with the entry: the origin's, or when the response
    /// arrived if it had none.
    pub date: HttpDate,
    /// The corrected initial age (the origin's `Age` and the delays).
    pub initial_age_ms: u64,
    /// `no-cache`: revalidated before every reuse.
    pub no_cache: bool,
    /// Once stale, never served without revalidation.
    pub must_revalidate: bool,
    /// Until then, a stale entry is served at once while one request
    /// revalidates it (`stale-while-revalidate`).
    pub swr_until_ms: u64,
    /// Until then, a stale entry is served when the origin fails
    /// (`stale-if-error`, the origin's or the stage's).
    pub sie_until_ms: u64,
    /// The `ETag` value, a byte range of the head.
    pub etag: Option<Range<u32>>,
    /// The `Last-Modified` value, a byte range of the head.
    pub last_modified: Option<Range<u32>>,
    /// `Last-Modified` in seconds since the epoch.
    pub last_modified_secs: Option<u64>,
    /// Header lines kept for revalidation but never sent to clients: the
    /// targeted cache-control fields (RFC 9213).
    pub meta: Bytes,
}

/// An immutable cached response.
///
/// `head` holds the stored response head lines: the status line and the
/// headers to replay, each ending in CRLF, and stopping before the
/// per-response headers. The caller appends `Date`, `Server`,
/// `x-request-id`, `Age`, `X-Cache-Status`, `Content-Length` and the final
/// CRLF when serving it.
#[derive(Debug)]
pub struct Entry {
    key: Box<[u8]>,
    status: u16,
    head: Bytes,
    body: Bytes,
    stored_at_ms: u64,
    expires_at_ms: u64,
    stale_until_ms: u64,
    weight: u64,
    reuse: Option<Reuse>,
    /// A request is refreshing this entry in the background.
    refreshing: AtomicBool,
    /// A variants marker (RFC mode): the request headers, lowercase, one
    /// per line, that a URL's responses vary on; its variants are stored
    /// under the URL's key plus those headers' values.
    vary: Option<Bytes>,
    /// Variants stored under this marker.
    variants: AtomicU32,
    /// The marker's generation, part of its variants' keys.
    generation: u64,
}

impl Entry {
    /// Builds an entry and computes its weight.
    ///
    /// `key` is the full key bytes ([`KeyBuilder::bytes`](super::KeyBuilder::bytes)).
    /// Times are milliseconds on the caller's clock. `stale_until_ms` below
    /// `expires_at_ms` is raised to it (no serve-stale window).
    ///
    /// # Errors
    /// [`EntryError::BodyTooLarge`] when `body` exceeds [`MAX_CACHEABLE_BODY`].
    pub fn new(
        key: Box<[u8]>,
        status: u16,
        head: Bytes,
        body: Bytes,
        stored_at_ms: u64,
        expires_at_ms: u64,
        stale_until_ms: u64,
    ) -> Result<Self, EntryError> {
        if body.len() > MAX_CACHEABLE_BODY {
            return Err(EntryError::BodyTooLarge { len: body.len() });
        }
        let weight =
            key.len() as u64 + head.len() as u64 + body.len() as u64 + ENTRY_OVERHEAD_BYTES;
        Ok(Self {
            key,
            status,
            head,
            body,
            stored_at_ms,
            expires_at_ms,
            stale_until_ms: stale_until_ms.max(expires_at_ms),
            weight,
            reuse: None,
            refreshing: AtomicBool::new(false),
            vary: None,
            variants: AtomicU32::new(0),
            generation: 0,
        })
    }

    /// A variants marker for the URL key `key`: `names` are the request
    /// headers (lowercase, one per line) its responses vary on. Never
    /// served; always fresh (it lives until evicted, removed or replaced).
    /// `generation` is unique to this marker: its variants' keys carry it,
    /// so a marker that replaces another never finds the old variants.
    pub fn variants_marker(key: Box<[u8]>, names: Bytes, generation: u64, now_ms: u64) -> Entry {
        let mut e = Entry::new(
            key,
            0,
            Bytes::new(),
            Bytes::new(),
            now_ms,
            u64::MAX,
            u64::MAX,
        )
        .expect("an empty body is within the limit");
        e.weight += names.len() as u64;
        e.vary = Some(names);
        e.generation = generation;
        e
    }

    /// A variants marker's generation (0 for other entries).
    pub fn vary_generation(&self) -> u64 {
        self.generation
    }

    /// For a variants marker, the header names its variants are selected
    /// by (lowercase, one per line).
    pub fn vary_names(&self) -> Option<&Bytes> {
        self.vary.as_ref()
    }

    /// Counts one more variant under this marker; false (nothing counted)
    /// once `limit` are stored.
    pub fn admit_variant(&self, limit: u32) -> bool {
        self.variants
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// The entry with RFC 9111 reuse rules (its `meta` lines are weighed).
    /// Validator ranges outside the head are dropped.
    pub fn with_reuse(mut self, mut reuse: Reuse) -> Self {
        let len = self.head.len() as u32;
        for r in [&mut reuse.etag, &mut reuse.last_modified] {
            if r.as_ref().is_some_and(|r| r.start > r.end || r.end > len) {
                *r = None;
            }
        }
        self.weight += reuse.meta.len() as u64;
        self.reuse = Some(reuse);
        self
    }

    /// Claims the one background refresh of this entry
    /// (`stale-while-revalidate`): true for the first caller, false while
    /// a refresh is under way.
    pub fn start_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Ends a refresh claimed with [`start_refresh`](Self::start_refresh)
    /// (the entry is usually replaced by then; if the refresh failed, a
    /// later request may try again).
    pub fn end_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }

    /// The RFC 9111 reuse rules, for an entry stored in that mode.
    pub fn reuse(&self) -> Option<&Reuse> {
        self.reuse.as_ref()
    }

    /// The stored `ETag` value (RFC mode).
    pub fn etag(&self) -> Option<&[u8]> {
        let r = self.reuse.as_ref()?.etag.clone()?;
        self.head.get(r.start as usize..r.end as usize)
    }

    /// The stored `Last-Modified` value (RFC mode).
    pub fn last_modified(&self) -> Option<&[u8]> {
        let r = self.reuse.as_ref()?.last_modified.clone()?;
        self.head.get(r.start as usize..r.end as usize)
    }

    /// The full key bytes the entry was stored under.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The response status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The stored head lines (see the type docs for what they exclude).
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    /// The response body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// When the response was stored.
    pub fn stored_at_ms(&self) -> u64 {
        self.stored_at_ms
    }

    /// The entry is fresh while `now_ms < expires_at_ms`.
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// The entry may be served stale while `now_ms < stale_until_ms`
    /// (always `>= expires_at_ms`).
    pub fn stale_until_ms(&self) -> u64 {
        self.stale_until_ms
    }

    /// Bytes charged against the cache capacity: key + head + body lengths
    /// + [`ENTRY_OVERHEAD_BYTES`].
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// Whether the entry is fresh at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// Whether the entry is expired but still inside its serve-stale window.
    pub fn is_stale(&self, now_ms: u64) -> bool {
        !self.is_fresh(now_ms) && now_ms < self.stale_until_ms
    }

    /// The entry's age in milliseconds: the time since it was stored (0 if
    /// the clock reads earlier than `stored_at_ms`), plus, in RFC mode,
    /// its corrected initial age.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        let initial = self.reuse.as_ref().map_or(0, |r| r.initial_age_ms);
        now_ms
            .saturating_sub(self.stored_at_ms)
            .saturating_add(initial)
    }

    /// [`age_ms`](Self::age_ms) in whole seconds, for the `Age` header.
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        self.age_ms(now_ms) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body_len: usize) -> Result<Entry, EntryError> {
        Entry::new(
            Box::from(&b"key-bytes"[..]),
            200,
            Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"),
            Bytes::from(vec![b'x'; body_len]),
            10_000,
            20_000,
            5_000,
        )
    }

    #[test]
    fn weight_is_lengths_plus_overhead() {
        let e = entry(1000).unwrap();
        assert_eq!(e.weight(), 9 + 43 + 1000 + ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn overhead_covers_the_struct() {
        // Arc counts + struct + the table slot (key + Arc pointer + 21).
        let arc_and_slot = 16 + std::mem::size_of::<Entry>() as u64 + 16 + 8 + 21;
        assert!(arc_and_slot < ENTRY_OVERHEAD_BYTES, "{arc_and_slot}");
    }

    #[test]
    fn body_limit_is_inclusive() {
        assert!(entry(MAX_CACHEABLE_BODY).is_ok());
        assert_eq!(
            entry(MAX_CACHEABLE_BODY + 1).unwrap_err(),
            EntryError::BodyTooLarge {
                len: MAX_CACHEABLE_BODY + 1
            }
        );
    }

    #[test]
    fn clock_and_age() {
        let e = entry(1).unwrap();
        assert_eq!(e.stale_until_ms(), 20_000, "raised to expiry");
        assert!(e.is_fresh(19_999));
        assert!(!e.is_fresh(20_000));
        assert!(!e.is_stale(20_000));
        assert_eq!(e.age_secs(9_000), 0);
        assert_eq!(e.age_secs(12_999), 2);
    }
}
