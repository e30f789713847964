//! The stage cache in the RFC 9111 mode (`respect_origin_cache_control`):
//! the origin's headers decide what is stored and for how long, stale
//! entries are revalidated with conditional requests, and clients'
//! conditional requests are answered from the cache.
//!
//! [`serve`] runs for a GET (or HEAD, answered from the GET entry) on a
//! proxied route that caches in a stage with a cache in this mode:
//! 1. The key is built as in the API Gateway mode ([`super::cached`]).
//! 2. The client's `Cache-Control` (or `Pragma: no-cache`) is read
//!    ([`crate::cache::policy::request_directives`]): `no-store` goes
//!    around the cache; `no-cache`, `max-age` and `min-fresh` may refuse a
//!    fresh entry, which is then revalidated; `max-stale` takes a stale
//!    entry as it is; `only-if-cached` gets 504 `Not in cache` rather than
//!    a request to the origin. With the stage's
//!    `require_authorization_for_cache_control`, an unauthorized client's
//!    directives are ignored.
//! 3. A fresh entry the client accepts is a hit: the stored head with its
//!    stored `Date`, an `Age` (time in cache plus the origin's age), and
//!    `304 Not Modified` when the client's `If-None-Match` (weak
//!    comparison) or, without one, `If-Modified-Since` matches the entry;
//!    a single `Range` of a 200 entry (with a matching `If-Range`, if
//!    sent) gets 206 with the slice, or 416 past the end. Nothing is
//!    allocated.
//! 4. A stale entry inside its `stale-while-revalidate` window is served
//!    at once; the first request to find it so then refreshes it (a
//!    conditional request, answered to no one) on its connection after its
//!    answer is flushed; the others serve it stale meanwhile.
//! 5. Otherwise one request per key leads the fetch (the stampede control
//!    of the API Gateway mode); a stale entry with `ETag` or
//!    `Last-Modified` makes it a revalidation: `If-None-Match` /
//!    `If-Modified-Since` replace the client's, a `304` freshens the entry
//!    (its headers updated as RFC 9111 §4.3.4 says, never
//!    `Content-Length`) and the client gets the cached response; a full
//!    response replaces the entry. When the backend fails, a stale entry
//!    inside its `stale-if-error` window (the origin's directive or the
//!    stage's setting) is served, unless it must be revalidated.
//!
//! What is stored, and how an entry may be reused, is
//! [`crate::cache::policy::evaluate`]; this module builds entries from its
//! [`Freshness`]: the stored head drops the origin's `Age` (folded into the
//! entry's initial age) and the targeted cache-control fields (kept aside
//! for revalidation: clients never see them).
//!
//! `Vary` (RFC 9111 §4.1): a response that varies on request headers the
//! route's key lacks is stored as a variant. A marker entry at the URL's
//! key names those headers (and a generation of its own); each variant's
//! key is the URL's plus the generation and the request's values of the
//! headers ([`select_variant`]). At most [`MAX_VARIANTS`] per URL; an answer
//! that no longer varies replaces the marker; removing the marker (an
//! invalidation) orphans every variant, which eviction then reclaims.
//!
//! A non-error answer to `POST`, `PUT`, `DELETE` or `PATCH` invalidates the
//! target URI's entry and those of a same-origin `Location` or
//! `Content-Location` ([`invalidate_after`], called by the pipeline).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::cached::{build_key, extra_lines, refuse, write_hit, CachedRoute, HitHow, Status};
use super::exchange::{forward, respond_forwarded, Exchange, Next, Request};
use super::outcome::Outcome;
use super::response::GatewayError;
use super::snapshot::{KeyParam, StageCacheState};
use super::worker::GatewayWorker;
use crate::cache::policy::{
    self, byte_range, etag_matches, evaluate, fields, if_range_allows, not_modified_since,
    request_directives, Decision, Freshness, RangeAsk, RequestDirectives, RequestFacts, Rules,
    Times,
};
use crate::cache::{CacheKey, Entry, Fetch, KeyBuilder, Leader, ParamKind, Reuse};
use crate::http::date::HttpDate;
use crate::http::RequestHead;
use crate::runtime::ClientStream;
use crate::upstream::forward::{CacheHints, Capture, Forwarded};
use crate::upstream::now_ms;

/// Serves a GET or HEAD on a caching route in the RFC 9111 mode; see the
/// module docs.
pub(super) async fn serve<S: ClientStream>(
    gw: &GatewayWorker,
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
    cr: &CachedRoute<'_>,
) -> (Next, Outcome) {
    let head = req.head;
    let cache = cr.cache;
    let store = &cache.store;
    let show = cache.settings.status_header;
    let hints = CacheHints {
        hide: &cache.targeted,
        ..CacheHints::default()
    };

    x.io.buffers().ensure_small(x.state.keys.buffer());
    build_key(&mut x.state.keys, cr.rc, req);
    let mut vk = VaryKey {
        url: x.state.keys.finish(),
        url_len: x.state.keys.bytes().len(),
        marker: None,
    };
    let mut key = vk.url;
    let asked = Asked::of(head);
    let rd = client_directives(head, cache, &asked);

    if rd.no_store {
        let lines = extra_lines(show, false, Status::Bypass);
        let fwd = forward(gw, x, req, cr.route, lines, false, hints).await;
        return respond_forwarded(gw, x, req, fwd, Outcome::CacheBypass);
    }

    let now = now_ms();
    let mut found = store.peek(&key, x.state.keys.bytes());
    if found.as_ref().is_some_and(|e| e.vary_names().is_some()) {
        // The URL's responses vary: this request's variant.
        vk.marker = found.take();
        key = select_variant(&mut x.state.keys, vk.marker.as_deref(), head);
        found = store.peek(&key, x.state.keys.bytes());
    }
    if let Some(entry) = found {
        if entry.is_fresh(now) {
            if accepts(&rd, &entry, now) {
                store.count_hit();
                if !super::body::has_body(req) {
                    // The common hit, awaited here as the API Gateway
                    // mode's is (no nested future).
                    let keep = head.keep_alive && !x.io.worker().is_draining();
                    let how = hit_how(head, &entry, &asked, (Status::Hit, show), now);
                    let next = write_hit(x, req, &entry, how, (keep, 0, None)).await;
                    return (next, Outcome::CacheHit);
                }
                return answer(gw, x, req, &entry, &asked, (Status::Hit, show, now), None).await;
            }
            // Fresh, but the client asks for it to be revalidated.
            if rd.only_if_cached {
                return refuse(x, req, GatewayError::NotCached);
            }
            store.count_refresh();
            return fetch(gw, x, req, (cr, &asked, &vk), key, Some(entry), None).await;
        }
        if let Some(r) = entry.reuse() {
            let swr = !r.must_revalidate && now < r.swr_until_ms && accepts_stale(&rd);
            // The refresh forwards this request again: only a bodiless GET.
            if swr && head.method == "GET" && head.framing == crate::http::BodyFraming::None {
                store.count_hit();
                let first = entry.start_refresh();
                let (next, outcome) =
                    answer(gw, x, req, &entry, &asked, (Status::Stale, show, now), None).await;
                if first {
                    if let Next::Continue { .. } = next {
                        refresh_after(gw, x, req, (cr, &vk), key, &entry).await;
                    }
                    entry.end_refresh();
                }
                return (next, outcome);
            }
            // max-stale: the client takes it stale, as it is (never an
            // entry that must be revalidated first).
            let within = rd.max_stale.is_some_and(|m| {
                now.saturating_sub(entry.expires_at_ms()) <= m.saturating_mul(1000)
            });
            if within && !r.must_revalidate && !r.no_cache && !rd.no_cache {
                store.count_hit();
                let how = (Status::Stale, show, now);
                return answer(gw, x, req, &entry, &asked, how, None).await;
            }
        }
    }
    if rd.only_if_cached {
        // Nothing stored this request takes, and the origin may not be asked.
        return refuse(x, req, GatewayError::NotCached);
    }

    for _ in 0..2 {
        let lookup = store.get_or_lead(&key, x.state.keys.bytes(), now);
        match monoio::time::timeout(cache.settings.lock_timeout, lookup).await {
            // The fetch waited on made the URL's responses variants: this
            // request's variant, once.
            Ok(Fetch::Fresh(entry)) if entry.vary_names().is_some() => {
                if vk.marker.is_some() {
                    break;
                }
                key = select_variant(&mut x.state.keys, Some(&entry), head);
                vk.marker = Some(entry);
            }
            // Another request's fetch, just made: fresh from the origin.
            Ok(Fetch::Fresh(entry)) => {
                let how = (Status::Hit, show, now_ms());
                return answer(gw, x, req, &entry, &asked, how, None).await;
            }
            Ok(Fetch::Lead(leader)) => {
                let stale = leader.stale().cloned();
                return fetch(gw, x, req, (cr, &asked, &vk), key, stale, Some(leader)).await;
            }
            Err(_) => break,
        }
    }
    // Waited too long for another request's fetch: go around it.
    let lines = extra_lines(show, false, Status::Bypass);
    let fwd = forward(gw, x, req, cr.route, lines, false, hints).await;
    respond_forwarded(gw, x, req, fwd, Outcome::CacheBypass)
}

/// Most variants stored per URL (a `Vary` on a header with many values
/// cannot fill the cache with one URL's copies).
const MAX_VARIANTS: u32 = 16;

/// Where a URL's responses stand: its key (without `Vary` values), the
/// length of that key's bytes, and the variants marker found under it.
struct VaryKey {
    url: CacheKey,
    url_len: usize,
    marker: Option<Arc<Entry>>,
}

impl VaryKey {
    /// The marker's header names (empty without a marker).
    fn names(&self) -> &[u8] {
        self.marker
            .as_deref()
            .and_then(Entry::vary_names)
            .map_or(&[][..], |n| &n[..])
    }
}

/// Appends the marker's generation and the values of the request headers
/// it names to the URL's key in `keys`: the key of this request's variant.
/// Missing headers count as missing (a variant of their own). The
/// generation keeps a new marker (after an invalidation, or a change of
/// `Vary`) from finding the variants of the one it replaced.
fn select_variant(
    keys: &mut KeyBuilder,
    marker: Option<&Entry>,
    head: &RequestHead<'_, '_>,
) -> CacheKey {
    let Some((names, generation)) =
        marker.and_then(|m| m.vary_names().zip(Some(m.vary_generation())))
    else {
        return keys.finish();
    };
    keys.param(ParamKind::Vary, "", Some(&generation.to_le_bytes()));
    for name in names.split(|&b| b == b'\n').filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name).unwrap_or("");
        let value = head
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| crate::http::parse::trim(h.value));
        keys.param(ParamKind::Vary, name, value);
    }
    keys.finish()
}

/// Generations of variants markers (process-wide, never repeated).
static MARKER_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The request headers this mode reads, found in one pass over the head
/// (a hit reads no header twice).
#[derive(Clone, Copy, Default)]
struct Asked<'a> {
    cache_control: bool,
    pragma: bool,
    if_none_match: bool,
    if_modified_since: Option<&'a [u8]>,
    range: Option<&'a [u8]>,
    if_range: Option<&'a [u8]>,
}

impl<'a> Asked<'a> {
    fn of(head: &'a RequestHead<'_, '_>) -> Asked<'a> {
        let mut a = Asked::default();
        for h in head.headers {
            let n = h.name.as_bytes();
            let is = |s: &[u8]| n.eq_ignore_ascii_case(s);
            match n.len() {
                13 if is(b"cache-control") => a.cache_control = true,
                13 if is(b"if-none-match") => a.if_none_match = true,
                6 if is(b"pragma") => a.pragma = true,
                17 if is(b"if-modified-since") => {
                    a.if_modified_since = a.if_modified_since.or(Some(h.value));
                }
                5 if is(b"range") => a.range = a.range.or(Some(h.value)),
                8 if is(b"if-range") => a.if_range = a.if_range.or(Some(h.value)),
                _ => {}
            }
        }
        a
    }
}

/// The client's directives, or none when the stage requires authorization
/// for them and the client lacks it.
fn client_directives(
    head: &RequestHead<'_, '_>,
    cache: &StageCacheState,
    asked: &Asked<'_>,
) -> RequestDirectives {
    if !(asked.cache_control || asked.pragma) || !super::cached::authorized(head, &cache.settings) {
        return RequestDirectives::default();
    }
    let values = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cache-control"))
        .map(|h| h.value);
    let pragma = asked.pragma
        && head.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("pragma")
                && policy::directives(h.value).any(|(n, _)| n.eq_ignore_ascii_case(b"no-cache"))
        });
    request_directives(values, pragma)
}

/// Whether the client takes this fresh entry as it is.
fn accepts(rd: &RequestDirectives, entry: &Entry, now: u64) -> bool {
    // max-age=0 is a request to revalidate (an entry 0 s old would
    // otherwise satisfy it); ages compare in whole seconds, as the header.
    !rd.no_cache
        && rd.max_age.is_none_or(|m| m > 0 && entry.age_secs(now) <= m)
        && rd
            .min_fresh
            .is_none_or(|m| entry.expires_at_ms() >= now.saturating_add(m.saturating_mul(1000)))
}

/// Whether the client takes a stale entry (it asked for nothing fresher).
fn accepts_stale(rd: &RequestDirectives) -> bool {
    !rd.no_cache && rd.max_age.is_none() && rd.min_fresh.is_none()
}

/// Milliseconds since the epoch, by the system clock (origins' dates are
/// wall-clock times).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Fetches from the backend: a revalidation when `stale` has validators,
/// else a plain miss. Stores what may be stored (through `leader` when
/// leading, else replacing the entry) and answers the client.
async fn fetch<S: ClientStream>(
    gw: &GatewayWorker,
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
    (cr, asked, vk): (&CachedRoute<'_>, &Asked<'_>, &VaryKey),
    key: CacheKey,
    stale: Option<Arc<Entry>>,
    mut leader: Option<Leader<'_>>,
) -> (Next, Outcome) {
    let cache = cr.cache;
    let store = &cache.store;
    let show = cache.settings.status_header;
    let lines = extra_lines(show, false, Status::Miss);
    let (fwd, times, now) =
        forward_for_cache(gw, x, req, cr, stale.as_deref(), (lines, false)).await;
    let state = &mut *x.state;
    match fwd {
        Forwarded::NotModified {
            consumed,
            leftover,
            keep_client,
        } => {
            let Some(old) = stale else {
                // Only a revalidation holds a 304 back.
                return (Next::Close { linger: true }, Outcome::Aborted);
            };
            let (entry, store_it) = freshen(
                &old,
                &state.capture,
                state.keys.bytes(),
                cr,
                req.head,
                times,
                now,
            );
            match (store_it, leader.take()) {
                (true, Some(l)) => {
                    l.fill(Arc::clone(&entry));
                }
                (true, None) => {
                    store.insert(key, Arc::clone(&entry));
                }
                (false, Some(mut l)) => l.forget_stale(),
                (false, None) => {
                    store.remove(&key);
                }
            }
            let done = (keep_client, consumed, leftover);
            answer(
                gw,
                x,
                req,
                &entry,
                asked,
                (Status::Revalidated, show, now),
                Some(done),
            )
            .await
        }
        Forwarded::Failed {
            close,
            consumed,
            leftover,
            ..
        } if stale.as_ref().is_some_and(|s| {
            s.reuse()
                .is_some_and(|r| !r.must_revalidate && now < r.sie_until_ms)
        }) =>
        {
            // stale-if-error: the stale entry instead of the error (the
            // leader, dropped, puts it back).
            drop(leader);
            let Some(entry) = stale else {
                return (Next::Close { linger: true }, Outcome::Aborted);
            };
            let done = (!close, consumed, leftover);
            answer(
                gw,
                x,
                req,
                &entry,
                asked,
                (Status::Stale, show, now),
                Some(done),
            )
            .await
        }
        other => {
            // A whole GET answer (a HEAD's has no body to store).
            let complete = matches!(other, Forwarded::Done { .. }) && req.head.method == "GET";
            store_capture(
                (&mut state.capture, &mut state.keys),
                (cr, req.head, vk),
                (key, leader),
                (times, now),
                complete && stale.is_some(),
            );
            respond_forwarded(gw, x, req, other, Outcome::CacheMiss)
        }
    }
}

/// After a stale answer (`stale-while-revalidate`): revalidates `entry`
/// with the backend, answering no one, and stores the result. The client
/// has had its answer; this runs on its connection before the next request.
async fn refresh_after<S: ClientStream>(
    gw: &GatewayWorker,
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
    (cr, vk): (&CachedRoute<'_>, &VaryKey),
    key: CacheKey,
    entry: &Arc<Entry>,
) {
    if !x.io.flush(x.wbuf).await {
        return;
    }
    let cache = cr.cache;
    let (fwd, times, now) = forward_for_cache(gw, x, req, cr, Some(entry), (b"", true)).await;
    let state = &mut *x.state;
    match fwd {
        Forwarded::NotModified { .. } => {
            let (fresh, store_it) = freshen(
                entry,
                &state.capture,
                state.keys.bytes(),
                cr,
                req.head,
                times,
                now,
            );
            if store_it {
                cache.store.insert(key, fresh);
            } else {
                cache.store.remove(&key);
            }
        }
        Forwarded::Done { .. } => store_capture(
            (&mut state.capture, &mut state.keys),
            (cr, req.head, vk),
            (key, None),
            (times, now),
            true,
        ),
        // A failed refresh leaves the stale entry; a later request tries again.
        _ => {}
    }
}

/// Forwards for the cache, capturing the answer: a revalidation when
/// `stale` has validators (a 304 held back), else a plain fetch; `lines`
/// go into the client's response, and a `silent` forward answers no one.
/// Returns the forward's result, the wall-clock times around it and the
/// monotonic clock after it.
async fn forward_for_cache<S: ClientStream>(
    gw: &GatewayWorker,
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
    cr: &CachedRoute<'_>,
    stale: Option<&Entry>,
    (lines, silent): (&[u8], bool),
) -> (Forwarded, Times, u64) {
    let conditional = stale.and_then(conditional_lines);
    let hints = CacheHints {
        revalidate: conditional.as_deref(),
        hide: &cr.cache.targeted,
        silent,
        head_only: false,
    };
    let request_ms = wall_ms();
    let fwd = forward(gw, x, req, cr.route, lines, true, hints).await;
    let times = Times {
        request_ms,
        response_ms: wall_ms(),
    };
    (fwd, times, now_ms())
}

/// The conditional request lines a stale entry's validators make
/// (`If-None-Match` from `ETag`, `If-Modified-Since` from `Last-Modified`).
fn conditional_lines(entry: &Entry) -> Option<Vec<u8>> {
    let etag = entry.etag();
    let lm = entry.last_modified();
    if etag.is_none() && lm.is_none() {
        return None;
    }
    let mut out = Vec::with_capacity(96);
    if let Some(e) = etag {
        out.extend_from_slice(b"If-None-Match: ");
        out.extend_from_slice(e);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(l) = lm {
        out.extend_from_slice(b"If-Modified-Since: ");
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
    }
    Some(out)
}

/// Answers from an entry: reads and drops the request's body first unless
/// `done` says the forward did (keep-alive, consumed, leftover), then 304
/// when the client's conditional headers match the entry, else the entry.
async fn answer<S: ClientStream>(
    gw: &GatewayWorker,
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
    entry: &Arc<Entry>,
    asked: &Asked<'_>,
    (status, show, now): (Status, bool, u64),
    done: Option<(bool, usize, Option<std::ops::Range<usize>>)>,
) -> (Next, Outcome) {
    let head = req.head;
    let done = match done {
        Some(d) => d,
        None => {
            let read = if super::body::has_body(req) {
                super::body::discard(gw, x, req).await
            } else {
                Ok((0, None))
            };
            match read {
                Ok((consumed, leftover)) => (
                    head.keep_alive && !x.io.worker().is_draining(),
                    consumed,
                    leftover,
                ),
                Err(answered) => return answered,
            }
        }
    };
    let how = hit_how(head, entry, asked, (status, show), now);
    let next = write_hit(x, req, entry, how, done).await;
    let outcome = match status {
        Status::Stale => Outcome::CacheStale,
        Status::Revalidated => Outcome::CacheRevalidated,
        _ => Outcome::CacheHit,
    };
    (next, outcome)
}

/// How a hit is written: `Age` always, 304 for a matching conditional
/// request, else the range asked for.
fn hit_how<'l>(
    head: &RequestHead<'_, '_>,
    entry: &Entry,
    asked: &Asked<'_>,
    (status, show): (Status, bool),
    now: u64,
) -> HitHow<'l> {
    let not_modified = not_modified(head, entry, asked);
    HitHow {
        now,
        age: true,
        lines: extra_lines(show, false, status),
        not_modified,
        range: if not_modified {
            RangeAsk::Whole
        } else {
            range(head, entry, asked)
        },
    }
}

/// RFC 9110 §13.2: whether the client's conditional headers let a 2xx
/// entry be answered 304 (`If-None-Match` first; `If-Modified-Since`
/// only without it).
fn not_modified(head: &RequestHead<'_, '_>, entry: &Entry, asked: &Asked<'_>) -> bool {
    if !(200..300).contains(&entry.status()) {
        return false;
    }
    if asked.if_none_match {
        let Some(etag) = entry.etag() else {
            return false;
        };
        return head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("if-none-match"))
            .any(|h| etag_matches(h.value, etag));
    }
    let lm = entry.reuse().and_then(|r| r.last_modified_secs);
    asked
        .if_modified_since
        .is_some_and(|ims| not_modified_since(ims, lm))
}

/// RFC 9110 §14: the byte range a GET asks of a 200 entry (one range,
/// guarded by `If-Range` if sent); `Whole` for anything else.
fn range(head: &RequestHead<'_, '_>, entry: &Entry, asked: &Asked<'_>) -> RangeAsk {
    let Some(value) = asked.range else {
        return RangeAsk::Whole;
    };
    if head.method != "GET" || entry.status() != 200 {
        return RangeAsk::Whole;
    }
    if let Some(guard) = asked.if_range {
        let lm = entry.reuse().and_then(|r| r.last_modified_secs);
        if !if_range_allows(guard, entry.etag(), lm) {
            return RangeAsk::Whole;
        }
    }
    byte_range(value, entry.body().len() as u64)
}

/// The policy's rules for this stage and route.
fn with_rules<T>(cr: &CachedRoute<'_>, f: impl FnOnce(&Rules<'_>) -> T) -> T {
    let settings = &cr.cache.settings;
    let keyed = |name: &[u8]| {
        cr.rc
            .params
            .iter()
            .any(|p| matches!(p, KeyParam::Header(h) if h.as_bytes().eq_ignore_ascii_case(name)))
    };
    let rules = Rules {
        heuristic_max_ms: settings.heuristic_max.as_millis() as u64,
        targeted: &cr.cache.targeted,
        store_set_cookie: settings.store_set_cookie,
        keyed: &keyed,
    };
    f(&rules)
}

fn request_facts(head: &RequestHead<'_, '_>) -> RequestFacts {
    RequestFacts {
        authorization: head
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("authorization")),
    }
}

/// The freshness of a complete capture, if the origin lets a shared cache
/// store it (and the stage's `cache_statuses` do).
fn decide(
    capture: &mut Capture,
    cr: &CachedRoute<'_>,
    request: &RequestHead<'_, '_>,
    times: Times,
) -> Option<Freshness> {
    if !capture.ok {
        return None;
    }
    capture.ok = false;
    let status = capture.status;
    if let Some(allowed) = &cr.cache.settings.cache_statuses {
        if !allowed.contains(&status) {
            return None;
        }
    }
    let decision = with_rules(cr, |rules| {
        evaluate(&capture.head, status, request_facts(request), times, rules)
    });
    match decision {
        Decision::Store(f) => Some(f),
        Decision::Skip(_) => None,
    }
}

/// Stores what a complete capture makes, where it belongs: under the key
/// looked up (`lookup`, led by `leader` if any), or, when its `Vary`
/// differs from what the URL had, as a variant under a new marker at the
/// URL's key (RFC 9111 §4.1), or at the URL's key in place of a marker when
/// it no longer varies. Past [`MAX_VARIANTS`] a variant is not stored. When
/// nothing is stored and `retire` is set (a whole answer that replaces a
/// stale entry), the stale entry goes.
fn store_capture(
    (capture, keys): (&mut Capture, &mut KeyBuilder),
    (cr, request, vk): (&CachedRoute<'_>, &RequestHead<'_, '_>, &VaryKey),
    (lookup, leader): (CacheKey, Option<Leader<'_>>),
    (times, now): (Times, u64),
    retire: bool,
) {
    let store = &cr.cache.store;
    let not_stored = |leader: Option<Leader<'_>>| match leader {
        Some(mut l) if retire => l.forget_stale(),
        Some(_) => {}
        None if retire => {
            store.remove(&lookup);
        }
        None => {}
    };
    let Some(f) = decide(capture, cr, request, times) else {
        return not_stored(leader);
    };
    let names = if f.varies {
        with_rules(cr, |rules| policy::vary_names(&capture.head, rules.keyed))
    } else {
        Vec::new()
    };
    let (target, new_marker) = if names.is_empty() {
        if vk.marker.is_some() {
            // No longer varies: the URL's own entry replaces the marker.
            keys.truncate(vk.url_len);
            (vk.url, None)
        } else {
            (lookup, None)
        }
    } else if vk.marker.is_some() && vk.names() == &names[..] {
        let admitted = vk
            .marker
            .as_deref()
            .is_some_and(|m| m.admit_variant(MAX_VARIANTS));
        if !admitted {
            return not_stored(leader);
        }
        (lookup, None)
    } else {
        keys.truncate(vk.url_len);
        let generation = MARKER_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let marker =
            Entry::variants_marker(keys.bytes().into(), Bytes::from(names), generation, now);
        marker.admit_variant(MAX_VARIANTS);
        let marker = Arc::new(marker);
        (select_variant(keys, Some(&marker), request), Some(marker))
    };
    let body = Bytes::copy_from_slice(&capture.body);
    let Some(entry) = build_entry(
        keys.bytes(),
        capture.status,
        &capture.head,
        body,
        &f,
        cr,
        now,
    ) else {
        return not_stored(leader);
    };
    match new_marker {
        Some(marker) => {
            match leader {
                // Waiters on the URL's key wake with the marker and select
                // their own variant.
                Some(l) if l.key() == vk.url => {
                    l.fill(marker);
                }
                other => {
                    store.insert(vk.url, marker);
                    if let Some(mut l) = other {
                        l.forget_stale();
                    }
                }
            }
            store.insert(target, entry);
        }
        None if target == lookup => match leader {
            Some(l) => {
                l.fill(entry);
            }
            None => {
                store.insert(lookup, entry);
            }
        },
        None => {
            store.insert(target, entry);
            if let Some(mut l) = leader {
                l.forget_stale();
            }
        }
    }
}

/// A stale entry freshened by a 304 (RFC 9111 §4.3.4): its stored header
/// fields replaced by the 304's of the same name (`Content-Length`
/// excepted), its freshness evaluated anew. Returns the entry to answer
/// with and whether it may be stored.
fn freshen(
    old: &Arc<Entry>,
    capture: &Capture,
    key: &[u8],
    cr: &CachedRoute<'_>,
    request: &RequestHead<'_, '_>,
    times: Times,
    now: u64,
) -> (Arc<Entry>, bool) {
    let skip_304 = |n: &[u8]| n.eq_ignore_ascii_case(b"content-length");
    let in_304 =
        |n: &[u8]| fields(&capture.head).any(|(m, _, _)| m.eq_ignore_ascii_case(n) && !skip_304(m));
    let stored = old.head().as_ref();
    let line_end = stored
        .iter()
        .position(|&b| b == b'\n')
        .map_or(stored.len(), |i| i + 1);
    let mut merged = Vec::with_capacity(stored.len() + capture.head.len());
    merged.extend_from_slice(&stored[..line_end]);
    let meta = old.reuse().map_or(&[][..], |r| r.meta.as_ref());
    for (name, value, _) in fields(stored).chain(fields(meta)) {
        if !in_304(name) {
            push_line(&mut merged, name, value);
        }
    }
    for (name, value, _) in fields(&capture.head) {
        if !skip_304(name) {
            push_line(&mut merged, name, value);
        }
    }
    let status = old.status();
    let decision = with_rules(cr, |rules| {
        evaluate(&merged, status, request_facts(request), times, rules)
    });
    let (f, store_it) = match decision {
        Decision::Store(f) => (f, true),
        // Still answered (the origin confirmed it), not kept.
        Decision::Skip(_) => (Freshness::default(), false),
    };
    let entry = build_entry(key, status, &merged, old.body().clone(), &f, cr, now);
    match entry {
        Some(e) => (e, store_it),
        None => (Arc::clone(old), false),
    }
}

fn push_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Builds the stored entry from head lines and a body with the policy's
/// freshness: the origin's `Age` is dropped (it is in the initial age),
/// targeted cache-control fields move to `meta`.
fn build_entry(
    key: &[u8],
    status: u16,
    head: &[u8],
    body: Bytes,
    f: &Freshness,
    cr: &CachedRoute<'_>,
    now: u64,
) -> Option<Arc<Entry>> {
    let targeted = &cr.cache.targeted;
    let line_end = head
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head.len(), |i| i + 1);
    let mut stored = Vec::with_capacity(head.len());
    stored.extend_from_slice(&head[..line_end]);
    let mut meta = Vec::new();
    for (name, value, _) in fields(head) {
        if name.eq_ignore_ascii_case(b"age") {
            continue;
        }
        if targeted
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t.as_bytes()))
        {
            if meta.is_empty() {
                // An empty first line, so that `fields` reads meta as a head.
                meta.extend_from_slice(b"\r\n");
            }
            push_line(&mut meta, name, value);
        } else {
            push_line(&mut stored, name, value);
        }
    }
    let (mut etag, mut last_modified) = (None, None);
    for (name, _, range) in fields(&stored) {
        let r = Some(range.start as u32..range.end as u32);
        if name.eq_ignore_ascii_case(b"etag") && etag.is_none() {
            etag = r;
        } else if name.eq_ignore_ascii_case(b"last-modified") && last_modified.is_none() {
            last_modified = r;
        }
    }
    let settings = &cr.cache.settings;
    let fresh_for = if f.no_cache {
        0
    } else {
        f.lifetime_ms.saturating_sub(f.initial_age_ms)
    };
    let expires = now.saturating_add(fresh_for);
    let stale_if_error = f
        .stale_if_error_ms
        .unwrap_or(0)
        .max(settings.stale_if_error.as_millis() as u64);
    let (swr_until, sie_until) = if f.must_revalidate {
        (expires, expires)
    } else {
        (
            expires.saturating_add(f.stale_while_revalidate_ms),
            expires.saturating_add(stale_if_error),
        )
    };
    // Kept past its freshness while it can be revalidated or served stale.
    let retain = if f.has_validator() {
        u64::MAX
    } else {
        swr_until.max(sie_until)
    };
    let reuse = Reuse {
        date: HttpDate::from_unix(f.date_secs),
        initial_age_ms: f.initial_age_ms,
        no_cache: f.no_cache,
        must_revalidate: f.must_revalidate,
        swr_until_ms: swr_until,
        sie_until_ms: sie_until,
        etag,
        last_modified,
        last_modified_secs: f.last_modified_secs,
        meta: Bytes::from(meta),
    };
    Entry::new(
        key.into(),
        status,
        Bytes::from(stored),
        body,
        now,
        expires,
        retain,
    )
    .ok()
    .map(|e| Arc::new(e.with_reuse(reuse)))
}

/// RFC 9111 §4.4: after a non-error answer to an unsafe method on a stage
/// whose cache is in the RFC mode, removes the entries of the target URI
/// and of a same-origin `Location` / `Content-Location` (from the response
/// head in `capture`). Returns how many were removed.
pub(super) fn invalidate_after(
    snapshot: &super::snapshot::Snapshot,
    head: &RequestHead<'_, '_>,
    capture: &Capture,
) -> u32 {
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| crate::http::parse::trim(h.value))
    };
    let mut removed = snapshot.invalidate(head.host, head.path, head.query, &header);
    for (name, value, _) in fields(&capture.head) {
        if !(name.eq_ignore_ascii_case(b"location")
            || name.eq_ignore_ascii_case(b"content-location"))
        {
            continue;
        }
        let Some((path, query)) = same_origin_target(value, head.host) else {
            continue;
        };
        removed += snapshot.invalidate(head.host, path, query, &header);
    }
    removed
}

/// The path and query of a `Location` value that names the request's own
/// origin: an absolute path, or an `http(s)://` URI whose authority is the
/// request's `Host`. Anything else (other hosts, relative references) is
/// `None`.
fn same_origin_target<'v>(value: &'v [u8], host: Option<&[u8]>) -> Option<(&'v str, &'v str)> {
    let v = std::str::from_utf8(value).ok()?;
    let rest = if v.starts_with('/') && !v.starts_with("//") {
        v
    } else {
        let after = v
            .strip_prefix("https://")
            .or_else(|| v.strip_prefix("http://"))?;
        let slash = after.find('/').unwrap_or(after.len());
        let authority = &after[..slash];
        if !host.is_some_and(|h| h.eq_ignore_ascii_case(authority.as_bytes())) {
            return None;
        }
        &after[slash..]
    };
    let rest = rest.split('#').next().unwrap_or(rest);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    (!path.is_empty()).then_some((path, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_targets() {
        let h = Some(&b"api.example.com"[..]);
        assert_eq!(
            same_origin_target(b"/items/1?x=1", h),
            Some(("/items/1", "x=1"))
        );
        assert_eq!(
            same_origin_target(b"https://API.example.com/items/2#f", h),
            Some(("/items/2", ""))
        );
        assert_eq!(
            same_origin_target(b"https://other.example/items/2", h),
            None
        );
        assert_eq!(same_origin_target(b"//api.example.com/items", h), None);
        assert_eq!(same_origin_target(b"items/2", h), None);
        assert_eq!(same_origin_target(b"https://api.example.com", h), None);
        assert_eq!(same_origin_target(b"\xff/x", h), None);
    }
}
