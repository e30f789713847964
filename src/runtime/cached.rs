//! The stage cache on the request path: key, lookup, one backend fetch per
//! key under a stampede, fill, hit.
//!
//! [`serve`] runs for a proxied request whose route caches its method in a
//! stage with a cache (SPEC §5):
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
//! With the stage's `respect_origin_cache_control`, the origin decides as a
//! shared cache would (RFC 9111): `no-store`, `private` and `no-cache` are
//! not stored, `s-maxage` then `max-age` give the TTL (the stage's TTL when
//! neither is sent), a `Vary` on a header the route does not key on (or
//! `Vary: *`) is not stored, and a response to a request carrying
//! `Authorization` is stored only when the origin says `public` or
//! `s-maxage`.
//!
//! Not yet: caching close-delimited responses (they stream through), `Expires`/`Age` from the origin, the admin flush endpoint (the
//! store has `flush`; the admin socket will expose it), canary caches.

#![forbid(unsafe_code)]

use std::sync::Arc;

use bytes::Bytes;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use super::proxy::{self, Buffers, CacheIo, Capture, ClientInfo, Outcome};
use super::reaper::Wait;
use super::worker::Worker;
use crate::cache::{Entry, Fetch, KeyBuilder, ParamKind};
use crate::config::UnauthorizedStrategy;
use crate::gateway::{GatewayError, KeyParam, ProxyRoute, RouteCache, StageCacheState};
use crate::http::response::{
    status_has_no_body, write_common_headers, write_content_length, write_u64, ConnectionHeader,
};
use crate::http::{RequestHead, Version};
use crate::router::Params;
use crate::upstream::now_ms;

/// Bodies up to this size are copied into the write buffer with the head;
/// larger ones are written from the entry's shared bytes.
const COPY_BODY_UP_TO: usize = 16 * 1024;

/// `Warning` sent when an unauthorized invalidation is ignored (SPEC §5.4).
const WARNING_IGNORED: &[u8] = b"Warning: 199 - \"cache invalidation ignored: not authorized\"\r\n";

/// Serves a cacheable proxied request; see the module docs.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    client: &mut TcpStream,
    w: &Worker,
    slot: u32,
    head: &RequestHead<'_, '_>,
    after: &[u8],
    bufs: Buffers<'_>,
    keys: &mut KeyBuilder,
    capture: &mut Capture,
    route: &ProxyRoute,
    rc: &RouteCache,
    cache: &StageCacheState,
    params: &Params<'_, '_>,
    rid: &[u8],
    info: &ClientInfo,
) -> Outcome {
    let Buffers {
        wbuf,
        scratch,
        ubuf,
    } = bufs;
    let settings = &cache.settings;
    let store = &cache.store;
    let now = now_ms();
    let ttl_ms = rc.ttl_for(head.method).map_or(0, |t| t.as_millis() as u64);
    let show = settings.status_header;

    build_key(keys, rc, head, params);
    let key = keys.finish();

    // Cache-Control: max-age=0 — a refresh, if allowed.
    let mut warn = false;
    let mut refresh = false;
    if wants_refresh(head) {
        if authorized(head, settings) {
            refresh = true;
        } else {
            match settings.unauthorized_strategy {
                UnauthorizedStrategy::FailWith403 => {
                    let close = head.framing != crate::http::BodyFraming::None || !head.keep_alive;
                    write_error(GatewayError::Forbidden, head, w, rid, wbuf, close);
                    return if close {
                        Outcome::Close
                    } else {
                        Outcome::Done {
                            consumed: 0,
                            leftover: None,
                            keep_client: true,
                            failed: true,
                        }
                    };
                }
                UnauthorizedStrategy::SucceedWithResponseHeader => warn = true,
                UnauthorizedStrategy::SucceedWithoutResponseHeader => {}
            }
        }
    }

    macro_rules! forward {
        ($extra:expr, $capture:expr) => {
            proxy::forward(
                client,
                w,
                slot,
                head,
                after,
                Buffers {
                    wbuf: &mut *wbuf,
                    scratch: &mut *scratch,
                    ubuf: &mut *ubuf,
                },
                route,
                params,
                rid,
                info,
                Some(CacheIo {
                    extra_headers: $extra,
                    capture: $capture,
                }),
            )
            .await
        };
    }

    if refresh {
        store.count_refresh();
        let outcome = forward!(
            extra_lines(show, warn, Status::Refresh),
            Some(&mut *capture)
        );
        if let Some(entry) = make_entry(capture, keys.bytes(), now, ttl_ms, settings, rc, head) {
            store.insert(key, entry);
        }
        return outcome;
    }

    // A hit needs no timer: the synchronous probe first.
    let entry = match store.get_fresh(&key, keys.bytes(), now) {
        Some(entry) => entry,
        None => {
            let lookup = store.get_or_lead(&key, keys.bytes(), now);
            match monoio::time::timeout(settings.lock_timeout, lookup).await {
                Ok(Fetch::Fresh(entry)) => entry,
                Ok(Fetch::Lead(leader)) => {
                    let mark = wbuf.len();
                    let stale = leader.stale().cloned();
                    let outcome =
                        forward!(extra_lines(show, warn, Status::Miss), Some(&mut *capture));
                    let now = now_ms();
                    return match outcome {
                        Outcome::Done {
                            failed: true,
                            keep_client,
                            consumed,
                            leftover,
                        } if stale.as_ref().is_some_and(|e| e.is_stale(now)) => {
                            // stale_if_error: the stale entry instead of the
                            // error (forward has read the request body).
                            drop(leader);
                            wbuf.truncate(mark);
                            let entry = stale.unwrap_or_else(|| unreachable!("checked above"));
                            let served = write_hit(
                                client,
                                w,
                                slot,
                                head,
                                wbuf,
                                &entry,
                                rid,
                                now,
                                show,
                                warn,
                                Status::Stale,
                                keep_client,
                            )
                            .await;
                            with_body(served, consumed, leftover)
                        }
                        other => {
                            match make_entry(capture, keys.bytes(), now, ttl_ms, settings, rc, head)
                            {
                                Some(entry) => {
                                    leader.fill(entry);
                                }
                                None => drop(leader),
                            }
                            other
                        }
                    };
                }
                // Waited too long for another request's fetch: go around it.
                Err(_) => return forward!(extra_lines(show, warn, Status::Bypass), None),
            }
        }
    };
    // A hit: the request's own body (if any) is read and dropped first, so
    // it cannot be taken for the next request.
    let (consumed, leftover) =
        match super::connection::discard_body(client, w, slot, head, after, wbuf, scratch).await {
            Ok(done) => done,
            Err(Some(e)) => {
                write_error(e, head, w, rid, wbuf, true);
                return Outcome::Close;
            }
            Err(None) => return Outcome::Close,
        };
    let keep = head.keep_alive && !w.drain.is_draining();
    let served = write_hit(
        client,
        w,
        slot,
        head,
        wbuf,
        &entry,
        rid,
        now,
        show,
        warn,
        Status::Hit,
        keep,
    )
    .await;
    with_body(served, consumed, leftover)
}

/// A hit's outcome with the request body's bytes accounted for.
fn with_body(
    served: Outcome,
    consumed: usize,
    leftover: Option<std::ops::Range<usize>>,
) -> Outcome {
    match served {
        Outcome::Done { keep_client, .. } => Outcome::Done {
            consumed,
            leftover,
            keep_client,
            failed: false,
        },
        other => other,
    }
}

/// `X-Cache-Status` values (SPEC §5.5, as Kong names them; `Stale` for
/// stale_if_error).
#[derive(Clone, Copy)]
enum Status {
    Hit,
    Miss,
    Refresh,
    Bypass,
    Stale,
}

/// The extra header lines for a response: `X-Cache-Status` when the stage
/// shows it, and the `Warning` of an ignored invalidation. Static bytes: no
/// formatting per request.
fn extra_lines(show: bool, warn: bool, status: Status) -> &'static [u8] {
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
    }
}

fn build_key(
    keys: &mut KeyBuilder,
    rc: &RouteCache,
    head: &RequestHead<'_, '_>,
    params: &Params<'_, '_>,
) {
    // HEAD is answered from the GET entry.
    let method = if head.method == "HEAD" {
        "GET"
    } else {
        head.method
    };
    keys.start(&rc.namespace, method);
    for p in &rc.params {
        match p {
            KeyParam::Path(i, name) => {
                let v = params.iter().nth(*i).map(|(_, v)| v.as_bytes());
                keys.param(ParamKind::Path, name, v);
            }
            KeyParam::Query(name) => {
                keys.param(ParamKind::Query, name, query_value(head.query, name))
            }
            KeyParam::Header(name) => {
                let v = head
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| crate::http::parse::trim(h.value));
                keys.param(ParamKind::Header, name, v);
            }
        }
    }
    if rc.whole_query {
        keys.param(ParamKind::WholeQuery, "", Some(head.query.as_bytes()));
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

/// Whether the client sent `Cache-Control: max-age=0`.
fn wants_refresh(head: &RequestHead<'_, '_>) -> bool {
    head.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cache-control"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|d| crate::http::parse::trim(d).eq_ignore_ascii_case(b"max-age=0"))
}

/// Whether the client may invalidate (SPEC §5.4). Until API keys land,
/// "authorized" means the stage's token header carries its token.
fn authorized(head: &RequestHead<'_, '_>, settings: &crate::config::StageCacheConfig) -> bool {
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

/// The entry a complete capture makes, if the stage stores it.
fn make_entry(
    capture: &mut Capture,
    key: &[u8],
    now: u64,
    ttl_ms: u64,
    settings: &crate::config::StageCacheConfig,
    rc: &RouteCache,
    request: &RequestHead<'_, '_>,
) -> Option<Arc<Entry>> {
    if !capture.ok || ttl_ms == 0 {
        return None;
    }
    capture.ok = false;
    if let Some(allowed) = &settings.cache_statuses {
        if !allowed.contains(&capture.status) {
            return None;
        }
    }
    let ttl_ms = if settings.respect_origin_cache_control {
        let keyed = |name: &[u8]| {
            rc.params.iter().any(
                |p| matches!(p, KeyParam::Header(h) if h.as_bytes().eq_ignore_ascii_case(name)),
            )
        };
        let authorized_request = request
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("authorization"));
        origin_freshness(&capture.head, ttl_ms, keyed, authorized_request)?
    } else {
        ttl_ms
    };
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

/// The TTL (ms) a response may be stored for under RFC 9111's shared-cache
/// rules, from its stored head lines; `None`: do not store.
fn origin_freshness(
    head: &[u8],
    default_ttl_ms: u64,
    keyed: impl Fn(&[u8]) -> bool,
    authorized_request: bool,
) -> Option<u64> {
    let mut s_maxage = None;
    let mut max_age = None;
    let mut public = false;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], crate::http::parse::trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"cache-control") {
            for d in value.split(|&b| b == b',') {
                let d = crate::http::parse::trim(d);
                let seconds = |prefix: &[u8]| -> Option<u64> {
                    if d.len() > prefix.len() && d[..prefix.len()].eq_ignore_ascii_case(prefix) {
                        let v = d[prefix.len()..]
                            .strip_prefix(b"\"")
                            .unwrap_or(&d[prefix.len()..]);
                        let v = v.strip_suffix(b"\"").unwrap_or(v);
                        crate::http::parse::parse_length(v)
                    } else {
                        None
                    }
                };
                if d.eq_ignore_ascii_case(b"no-store")
                    || d.eq_ignore_ascii_case(b"private")
                    || d.eq_ignore_ascii_case(b"no-cache")
                {
                    return None;
                } else if d.eq_ignore_ascii_case(b"public") {
                    public = true;
                } else if let Some(n) = seconds(b"s-maxage=") {
                    s_maxage = Some(n);
                } else if let Some(n) = seconds(b"max-age=") {
                    max_age = Some(n);
                }
            }
        } else if name.eq_ignore_ascii_case(b"vary") {
            for v in value.split(|&b| b == b',') {
                let v = crate::http::parse::trim(v);
                if v == b"*" || !keyed(v) {
                    return None;
                }
            }
        }
    }
    if authorized_request && !public && s_maxage.is_none() {
        return None;
    }
    let ttl = s_maxage
        .or(max_age)
        .map_or(default_ttl_ms, |s| s.saturating_mul(1000));
    (ttl > 0).then_some(ttl)
}

fn write_error(
    e: GatewayError,
    head: &RequestHead<'_, '_>,
    w: &Worker,
    rid: &[u8],
    wbuf: &mut Vec<u8>,
    close: bool,
) {
    let conn = if close {
        ConnectionHeader::Close
    } else if head.version == Version::Http10 {
        ConnectionHeader::KeepAlive
    } else {
        ConnectionHeader::Omit
    };
    e.write(wbuf, w.date().as_bytes(), rid, conn, head.method == "HEAD");
}

/// Writes a response from a cache entry: the stored head, the per-response
/// headers, the body (copied when small, else written from the shared
/// bytes). Nothing is allocated.
#[allow(clippy::too_many_arguments)]
async fn write_hit(
    client: &mut TcpStream,
    w: &Worker,
    slot: u32,
    head: &RequestHead<'_, '_>,
    wbuf: &mut Vec<u8>,
    entry: &Arc<Entry>,
    rid: &[u8],
    now: u64,
    show: bool,
    warn: bool,
    status: Status,
    keep_client: bool,
) -> Outcome {
    let connection = if !keep_client {
        ConnectionHeader::Close
    } else if head.version == Version::Http10 {
        ConnectionHeader::KeepAlive
    } else {
        ConnectionHeader::Omit
    };
    wbuf.extend_from_slice(entry.head().as_ref());
    write_common_headers(wbuf, w.date().as_bytes(), rid, connection);
    if show {
        wbuf.extend_from_slice(b"Age: ");
        write_u64(wbuf, entry.age_secs(now));
        wbuf.extend_from_slice(b"\r\n");
    }
    wbuf.extend_from_slice(extra_lines(show, warn, status));
    let body = entry.body();
    let has_body = !status_has_no_body(entry.status());
    if has_body {
        write_content_length(wbuf, body.len() as u64);
    }
    wbuf.extend_from_slice(b"\r\n");
    let head_only = head.method == "HEAD";
    if has_body && !head_only {
        if body.len() <= COPY_BODY_UP_TO {
            wbuf.extend_from_slice(body);
        } else {
            if !super::connection::flush_to(client, w, slot, wbuf).await {
                return Outcome::Close;
            }
            let deadline = w.reaper.deadline(w.limits.keepalive_timeout);
            w.reaper.arm(slot, deadline, Wait::Write);
            let (res, _) = client.write_all(body.clone()).await;
            let expired = w.reaper.disarm(slot);
            if res.is_err() || expired {
                return Outcome::Close;
            }
        }
    }
    if keep_client {
        Outcome::Done {
            consumed: 0,
            leftover: None,
            keep_client: true,
            failed: false,
        }
    } else {
        Outcome::Close
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
    fn origin_freshness_follows_shared_cache_rules() {
        let none = |_: &[u8]| false;
        let head = |extra: &str| format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extra}");
        let f = |extra: &str| origin_freshness(head(extra).as_bytes(), 300_000, none, false);
        assert_eq!(f(""), Some(300_000));
        assert_eq!(f("Cache-Control: max-age=60\r\n"), Some(60_000));
        assert_eq!(
            f("Cache-Control: max-age=60, s-maxage=10\r\n"),
            Some(10_000)
        );
        assert_eq!(f("cache-control: public, max-age=\"5\"\r\n"), Some(5_000));
        assert_eq!(f("Cache-Control: no-store\r\n"), None);
        assert_eq!(f("Cache-Control: private, max-age=60\r\n"), None);
        assert_eq!(f("Cache-Control: no-cache\r\n"), None);
        assert_eq!(f("Cache-Control: max-age=0\r\n"), None);
        assert_eq!(f("Vary: *\r\n"), None);
        assert_eq!(f("Vary: Accept-Language\r\n"), None);
        let keyed = |n: &[u8]| n.eq_ignore_ascii_case(b"accept-language");
        let h = head("Vary: Accept-Language\r\nCache-Control: max-age=9\r\n");
        assert_eq!(origin_freshness(h.as_bytes(), 1, keyed, false), Some(9_000));
        // A request with Authorization: only public or s-maxage responses.
        let h = head("Cache-Control: max-age=9\r\n");
        assert_eq!(origin_freshness(h.as_bytes(), 1, none, true), None);
        let h = head("Cache-Control: public, max-age=9\r\n");
        assert_eq!(origin_freshness(h.as_bytes(), 1, none, true), Some(9_000));
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
