//! The stage cache on the request path: key, lookup, one backend fetch per
//! key under a stampede, fill, hit.
//!
//! [`serve`] runs for a proxied request whose route caches its method in a
//! stage with a cache (API Gateway's stage cache):
//! 1. The key is built in the connection's reused [`KeyBuilder`]: the route's
//!    namespace, the method (HEAD is keyed as GET, so it is answered from the
//!    GET entry), and the values of the route's key parameters (path,
//!    query string, headers; or the whole query string).
//! 2. A client `Cache-Control: max-age=0` asks for a refresh: when the stage
//!    requires authorization and the client lacks it, the stage's strategy
//!    decides (403; or ignore the header, with or without a `Warning`).
//!    An allowed refresh skips the lookup, fetches, and replaces the entry;
//!    it counts as a miss.
//! 3. Otherwise [`StageCache::get_or_lead`](crate::cache::StageCache::get_or_lead),
//!    bounded by the stage's `lock_timeout`: a fresh entry is a hit; else this
//!    request leads the one backend fetch for the key while concurrent
//!    requests for it wait. A wait past the bound bypasses the cache.
//! 4. The leader forwards with a [`Capture`]: a response whose body is at
//!    most 1 MiB — `Content-Length` or chunked (stored decoded, replayed
//!    with a `Content-Length`) — and whose status the stage caches becomes
//!    the new entry; anything else streams through uncached. When
//!    the backend fails and the stage allows `stale_if_error`, a stale entry
//!    is served instead of the error.
//!
//! The hit path allocates nothing: the entry is shared immutable bytes (the
//! stored head and body); only `Date`, `Server`, the request id, `Age` and
//! `X-Cache-Status` are formatted into the connection's buffer, and a body
//! over 16 KiB is written straight from the shared bytes.
//!
//! With the stage's `respect_origin_cache_control`, [`serve`] hands GET and
//! HEAD requests to [`super::cached_rfc`]: the origin decides as a shared
//! cache would (RFC 9111; the rules are [`crate::cache::policy`]).
//!
//! Not yet: caching close-delimited responses (they stream through).

#![forbid(unsafe_code)]

use std::sync::Arc;

use crate::runtime::ClientStream;
use bytes::Bytes;

use super::exchange::{
    connection_header, forward, respond_forwarded, write_error, Exchange, Next, Request,
};
use super::outcome::Outcome;
use super::response::GatewayError;
use super::snapshot::{KeyParam, ProxyRoute, RouteCache, StageCacheState};
use super::worker::GatewayWorker;
use crate::cache::policy::{asks_refresh, RangeAsk};
use crate::cache::{Entry, Fetch, KeyBuilder, ParamKind};
use crate::config::{StageCacheConfig, UnauthorizedStrategy};
use crate::http::response::{
    status_has_no_body, write_common_headers, write_content_length, write_rate_headers, write_u64,
};
use crate::http::RequestHead;
use crate::router::Params;
use crate::upstream::forward::{Capture, Forwarded};
use crate::upstream::now_ms;

/// Bodies up to this size are copied into the write buffer with the head;
/// larger ones are written from the entry's shared bytes.
const COPY_BODY_UP_TO: usize = 16 * 1024;

/// `Warning` sent when an unauthorized invalidation is ignored, as API
/// Gateway's `SUCCEED_WITH_RESPONSE_HEADER` strategy does.
const WARNING_IGNORED: &[u8] = b"Warning: 199 - \"cache invalidation ignored: not authorized\"\r\n";

/// A proxied route that caches, in a stage with a cache.
pub(super) struct CachedRoute<'s> {
    /// The route's integration.
    pub route: &'s ProxyRoute,
    /// How the route caches in this stage.
    pub rc: &'s RouteCache,
    /// The stage's cache.
    pub cache: &'s StageCacheState,
}

/// Serves a cacheable proxied request; see the module docs.
pub(super) async fn serve<S: ClientStream>(
    gw: &GatewayWorker,
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
    cr: &CachedRoute<'_>,
) -> (Next, Outcome) {
    let head = req.head;
    let settings = &cr.cache.settings;
    if settings.respect_origin_cache_control {
        return super::cached_rfc::serve(gw, x, req, cr).await;
    }
    let store = &cr.cache.store;
    let now = now_ms();
    let ttl_ms = cr
        .rc
        .ttl_for(head.method)
        .map_or(0, |t| t.as_millis() as u64);
    let show = settings.status_header;

    x.io.buffers().ensure_small(x.state.keys.buffer());
    build_key(&mut x.state.keys, cr.rc, req);
    let key = x.state.keys.finish();

    // Cache-Control: max-age=0 — a refresh, if allowed.
    let mut warn = false;
    let mut refresh = false;
    let cache_control = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cache-control"))
        .map(|h| h.value);
    if asks_refresh(cache_control) {
        if authorized(head, settings) {
            refresh = true;
        } else {
            match settings.unauthorized_strategy {
                UnauthorizedStrategy::FailWith403 => {
                    return refuse(x, req, GatewayError::Forbidden);
                }
                UnauthorizedStrategy::SucceedWithResponseHeader => warn = true,
                UnauthorizedStrategy::SucceedWithoutResponseHeader => {}
            }
        }
    }

    if refresh {
        store.count_refresh();
        let lines = extra_lines(show, warn, Status::Refresh);
        let fwd = forward(gw, x, req, cr.route, lines, true, Default::default()).await;
        let state = &mut *x.state;
        if let Some(entry) = make_entry(&mut state.capture, state.keys.bytes(), now, ttl_ms, cr) {
            store.insert(key, entry);
        }
        return respond_forwarded(gw, x, req, fwd, Outcome::CacheRefresh);
    }

    // A hit needs no timer: the synchronous probe first.
    let entry = match store.get_fresh(&key, x.state.keys.bytes(), now) {
        Some(entry) => entry,
        None => {
            let lookup = store.get_or_lead(&key, x.state.keys.bytes(), now);
            match monoio::time::timeout(settings.lock_timeout, lookup).await {
                Ok(Fetch::Fresh(entry)) => entry,
                Ok(Fetch::Lead(leader)) => {
                    let stale = leader.stale().cloned();
                    let lines = extra_lines(show, warn, Status::Miss);
                    let fwd = forward(gw, x, req, cr.route, lines, true, Default::default()).await;
                    let now = now_ms();
                    let stale = stale.filter(|e| e.is_stale(now));
                    return match (fwd, stale) {
                        (
                            Forwarded::Failed {
                                close,
                                consumed,
                                leftover,
                                ..
                            },
                            Some(entry),
                        ) => {
                            // stale_if_error: the stale entry instead of the
                            // error (forward has read the request body).
                            drop(leader);
                            let lines = extra_lines(show, warn, Status::Stale);
                            let how = HitHow {
                                now,
                                age: show,
                                lines,
                                not_modified: false,
                                range: RangeAsk::Whole,
                            };
                            let next =
                                write_hit(x, req, &entry, how, (!close, consumed, leftover)).await;
                            (next, Outcome::CacheStale)
                        }
                        (other, _) => {
                            let state = &mut *x.state;
                            match make_entry(
                                &mut state.capture,
                                state.keys.bytes(),
                                now,
                                ttl_ms,
                                cr,
                            ) {
                                Some(entry) => {
                                    leader.fill(entry);
                                }
                                None => drop(leader),
                            }
                            respond_forwarded(gw, x, req, other, Outcome::CacheMiss)
                        }
                    };
                }
                // Waited too long for another request's fetch: go around it.
                Err(_) => {
                    let lines = extra_lines(show, warn, Status::Bypass);
                    let fwd = forward(gw, x, req, cr.route, lines, false, Default::default()).await;
                    return respond_forwarded(gw, x, req, fwd, Outcome::CacheBypass);
                }
            }
        }
    };
    // A hit: the request's own body (if any) is read and dropped first, so
    // it cannot be taken for the next request.
    let done = if super::body::has_body(req) {
        super::body::discard(gw, x, req).await
    } else {
        Ok((0, None))
    };
    let (consumed, leftover) = match done {
        Ok(done) => done,
        Err(answered) => return answered,
    };
    let keep = head.keep_alive && !x.io.worker().is_draining();
    let lines = extra_lines(show, warn, Status::Hit);
    let how = HitHow {
        now,
        age: show,
        lines,
        not_modified: false,
        range: RangeAsk::Whole,
    };
    let next = write_hit(x, req, &entry, how, (keep, consumed, leftover)).await;
    (next, Outcome::CacheHit)
}

/// Answers a cacheable request with a gateway error before its body is
/// read: the connection closes only where a body would be left unread (or
/// the client asked to close).
pub(super) fn refuse<S: ClientStream>(
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
    e: GatewayError,
) -> (Next, Outcome) {
    let head = req.head;
    let close = head.framing != crate::http::BodyFraming::None || !head.keep_alive;
    write_error(x, e, head, req.rid, close, req.rate.as_ref());
    let next = if close {
        Next::Close { linger: true }
    } else {
        Next::Continue {
            consumed: 0,
            leftover: None,
        }
    };
    (next, Outcome::Error(e))
}

/// `X-Cache-Status` values (as Kong names them; `Stale` for
/// stale_if_error and stale-while-revalidate, `Revalidated` for an entry
/// the origin confirmed with a 304).
#[derive(Clone, Copy)]
pub(super) enum Status {
    Hit,
    Miss,
    Refresh,
    Bypass,
    Stale,
    Revalidated,
}

/// The extra header lines for a response: `X-Cache-Status` when the stage
/// shows it, and the `Warning` of an ignored invalidation. Static bytes: no
/// formatting per request.
pub(super) fn extra_lines(show: bool, warn: bool, status: Status) -> &'static [u8] {
    macro_rules! pick {
        ($name:literal) => {
            match (show, warn) {
                (true, true) => concat!(
                    "X-Cache-Status: ",
                    $name,
                    "\r\nWarning: 199 - \"cache invalidation ignored: not authorized\"\r\n"
                )
                .as_bytes(),
                (true, false) => concat!("X-Cache-Status: ", $name, "\r\n").as_bytes(),
                (false, true) => WARNING_IGNORED,
                (false, false) => b"",
            }
        };
    }
    match status {
        Status::Hit => pick!("Hit"),
        Status::Miss => pick!("Miss"),
        Status::Refresh => pick!("Refresh"),
        Status::Bypass => pick!("Bypass"),
        Status::Stale => pick!("Stale"),
        Status::Revalidated => pick!("Revalidated"),
    }
}

pub(super) fn build_key(keys: &mut KeyBuilder, rc: &RouteCache, req: &Request<'_, '_, '_>) {
    let head = req.head;
    let hidden = req.key_source.hidden_query();
    key_fields(
        keys,
        rc,
        head.method,
        req.params,
        (head.query, hidden),
        |name| {
            head.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| crate::http::parse::trim(h.value))
        },
    );
}

/// Writes a request's key fields: the route's namespace, the method (HEAD
/// keyed as GET: it is answered from the GET entry), then each key
/// parameter; `header(name)` gives a request header's trimmed value. Also
/// used by the admin socket to find the entry of a request it describes.
/// `query` is the query string and the API key parameter hidden from
/// backends (`[key_source] hide`), left out of a whole-query key.
pub(super) fn key_fields<'h>(
    keys: &mut KeyBuilder,
    rc: &RouteCache,
    method: &str,
    params: &Params<'_, '_>,
    (query, hidden): (&str, Option<&str>),
    header: impl Fn(&str) -> Option<&'h [u8]>,
) {
    let method = if method == "HEAD" { "GET" } else { method };
    keys.start(&rc.namespace, method);
    for p in &rc.params {
        match p {
            KeyParam::Path(i, name) => {
                let v = params.iter().nth(*i).map(|(_, v)| v.as_bytes());
                keys.param(ParamKind::Path, name, v);
            }
            KeyParam::Query(name) => keys.param(ParamKind::Query, name, query_value(query, name)),
            KeyParam::Header(name) => keys.param(ParamKind::Header, name, header(name)),
        }
    }
    if rc.whole_query {
        match hidden {
            None => keys.param(ParamKind::WholeQuery, "", Some(query.as_bytes())),
            Some(name) => keys.param_joined(
                ParamKind::WholeQuery,
                "",
                super::key_source::without_param(query, name),
                b'&',
            ),
        }
    }
}

/// The raw value of the first `name=value` pair named `name` in a query
/// string (`Some(b"")` for a bare `name`).
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

/// Whether the client may invalidate (API Gateway's "require
/// authorization" for cache invalidation). Until API keys land,
/// "authorized" means the stage's token header carries its token.
pub(super) fn authorized(head: &RequestHead<'_, '_>, settings: &StageCacheConfig) -> bool {
    if !settings.require_authorization {
        return true;
    }
    let (Some(name), Some(token)) = (
        &settings.authorization_header,
        &settings.authorization_token,
    ) else {
        return false;
    };
    head.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case(name) && crate::http::parse::trim(h.value) == token.as_bytes()
    })
}

/// The entry a complete capture makes, if the stage stores it (the API
/// Gateway mode: every complete response, for the TTL).
fn make_entry(
    capture: &mut Capture,
    key: &[u8],
    now: u64,
    ttl_ms: u64,
    cr: &CachedRoute<'_>,
) -> Option<Arc<Entry>> {
    if !capture.ok || ttl_ms == 0 {
        return None;
    }
    capture.ok = false;
    let settings = &cr.cache.settings;
    if let Some(allowed) = &settings.cache_statuses {
        if !allowed.contains(&capture.status) {
            return None;
        }
    }
    let stale = settings.stale_if_error.as_millis() as u64;
    Entry::new(
        key.into(),
        capture.status,
        Bytes::copy_from_slice(&capture.head),
        Bytes::copy_from_slice(&capture.body),
        now,
        now + ttl_ms,
        now + ttl_ms + stale,
    )
    .ok()
    .map(Arc::new)
}

/// How [`write_hit`] answers from an entry.
#[derive(Clone, Copy)]
pub(super) struct HitHow<'a> {
    /// The clock reading the entry's age is taken at.
    pub now: u64,
    /// Send `Age`.
    pub age: bool,
    /// Extra header lines (`X-Cache-Status`, a `Warning`).
    pub lines: &'a [u8],
    /// Answer `304 Not Modified` (a client's conditional request that the
    /// entry satisfies): the stored head under a 304 status line, no body.
    pub not_modified: bool,
    /// A byte range of the body (RFC mode): `Part` is a 206 with
    /// `Content-Range`, `Unsatisfiable` a 416 without the stored head.
    pub range: RangeAsk,
}

/// Writes a response from a cache entry: the stored head, the per-response
/// headers (`Date`, the stored one in RFC mode; `Age` as `how` says;
/// `lines`), the body (copied when small, else written from the shared
/// bytes). Nothing is allocated. Returns what the connection does next:
/// `keep_client`, and the request body's `consumed` and `leftover` bytes,
/// as in [`Next::Continue`], unless the client is gone.
pub(super) async fn write_hit<S: ClientStream>(
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
    entry: &Arc<Entry>,
    how: HitHow<'_>,
    (keep_client, consumed, leftover): (bool, usize, Option<std::ops::Range<usize>>),
) -> Next {
    let wbuf = &mut *x.wbuf;
    let stored = entry.head().as_ref();
    let full = entry.body();
    // Past the stored status line: a 304's or 206's replaces it.
    let headers = || &stored[stored.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1)..];
    let (status, span) = match (how.not_modified, how.range) {
        (false, RangeAsk::Whole) => {
            wbuf.extend_from_slice(stored);
            (entry.status(), 0..full.len())
        }
        (true, _) => {
            wbuf.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\n");
            wbuf.extend_from_slice(headers());
            (304, 0..0)
        }
        (false, RangeAsk::Part(first, last)) => {
            wbuf.extend_from_slice(b"HTTP/1.1 206 Partial Content\r\n");
            wbuf.extend_from_slice(headers());
            (206, first as usize..last as usize + 1)
        }
        (false, RangeAsk::Unsatisfiable) => {
            wbuf.extend_from_slice(b"HTTP/1.1 416 Range Not Satisfiable\r\n");
            (416, 0..0)
        }
    };
    x.state.answer.status = status;
    let worker_date = x.io.worker().date();
    let date = match entry.reuse() {
        // RFC 9111: the stored response's Date, unchanged.
        Some(r) => r.date.as_bytes(),
        None => worker_date.as_bytes(),
    };
    write_common_headers(
        wbuf,
        date,
        req.rid,
        connection_header(req.head, !keep_client),
    );
    if how.age {
        wbuf.extend_from_slice(b"Age: ");
        write_u64(wbuf, entry.age_secs(how.now));
        wbuf.extend_from_slice(b"\r\n");
    }
    wbuf.extend_from_slice(how.lines);
    write_rate_headers(wbuf, req.rate.as_ref());
    if how.range != RangeAsk::Whole {
        write_content_range(wbuf, status, &span, full.len());
    }
    let body: &[u8] = match status {
        206 => full.get(span.clone()).unwrap_or_default(),
        416 => &[],
        _ => &full[..],
    };
    let has_body = !status_has_no_body(status);
    x.state.answer.body_bytes = Some(if has_body && !req.head_only {
        body.len() as u64
    } else {
        0
    });
    if has_body {
        write_content_length(wbuf, body.len() as u64);
    }
    wbuf.extend_from_slice(b"\r\n");
    if has_body && !req.head_only {
        if body.len() <= COPY_BODY_UP_TO {
            wbuf.extend_from_slice(body);
        } else {
            if !x.io.flush(wbuf).await {
                return Next::Close { linger: true };
            }
            let (ok, _) = x.io.write(full.slice(span)).await;
            if !ok {
                return Next::Close { linger: true };
            }
        }
    }
    if keep_client {
        Next::Continue { consumed, leftover }
    } else {
        Next::Close { linger: true }
    }
}

/// `Content-Range` for a 206 (`bytes first-last/len`) or a 416
/// (`bytes */len`).
fn write_content_range(wbuf: &mut Vec<u8>, status: u16, span: &std::ops::Range<usize>, len: usize) {
    match status {
        206 => {
            wbuf.extend_from_slice(b"Content-Range: bytes ");
            write_u64(wbuf, span.start as u64);
            wbuf.push(b'-');
            write_u64(wbuf, span.end as u64 - 1);
            wbuf.push(b'/');
            write_u64(wbuf, len as u64);
            wbuf.extend_from_slice(b"\r\n");
        }
        416 => {
            wbuf.extend_from_slice(b"Content-Range: bytes */");
            write_u64(wbuf, len as u64);
            wbuf.extend_from_slice(b"\r\n");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values() {
        assert_eq!(query_value("a=1&lang=en&b", "lang"), Some(&b"en"[..]));
        assert_eq!(query_value("a=1&b", "b"), Some(&b""[..]));
        assert_eq!(query_value("a=1", "lang"), None);
        assert_eq!(query_value("", "lang"), None);
    }

    #[test]
    fn status_lines_are_static_and_well_formed() {
        assert_eq!(
            extra_lines(true, false, Status::Hit),
            b"X-Cache-Status: Hit\r\n"
        );
        assert_eq!(extra_lines(false, false, Status::Miss), b"");
        assert!(extra_lines(true, true, Status::Bypass).ends_with(b"not authorized\"\r\n"));
        assert_eq!(extra_lines(false, true, Status::Hit), WARNING_IGNORED);
    }
}
