//! The stage cache end to end: ringgate, modelled on API Gateway's stage
//! cache, in front of `ringgate-origin`, whose `/count` tells how many
//! requests reached it and whose `x-origin-request` header numbers each
//! response, so a replayed entry shows which backend response it is.
//!
//! Covered: hit after miss with `Age`, TTL expiry, TTL 0 and the route
//! override, POST (cached only with an override), the 1 MiB size cap,
//! chunked responses up to 1 MiB (stored decoded, replayed with a
//! `Content-Length`), key parameters, HEAD from the GET entry,
//! `Cache-Control: max-age=0` with and without authorization, stampedes
//! (one origin request, also across two workers), `stale_if_error`,
//! `cache_statuses`, a small cache under churn, and cut-off responses, which
//! are never stored: a body shorter than its `Content-Length`, a chunked
//! body without its last chunk, a backend reset, a client leaving mid-body,
//! a cut-off refresh, and the waiters on a cut-off fetch.
//!
//! Not covered here:
//! - `respect_origin_cache_control` (the RFC 9111 mode): in
//!   `tests/cache_rfc.rs`, against a scripted origin that sends caching
//!   headers.
//! - Close-delimited responses: not cached (they stream through, as
//!   `src/gateway/cached.rs` says); no test here asserts it.
//! - The admin socket's flush, entry removal and counters: in
//!   `tests/admin.rs`. Here flush and the counters are also tested at the
//!   store level, on a [`Snapshot`] built here.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringgate::cache::{Entry, Fetch, KeyBuilder, Lookup, ParamKind, StoreOutcome};
use ringgate::gateway::Snapshot;
use support::{pattern, Client, Echo, Origin, Response, TestServer, SERVER};

const NET_ERROR: &str = r#"{"message": "Network error communicating with endpoint"}"#;
const FORBIDDEN: &str = r#"{"message":"Forbidden"}"#;
const WARNING: &str = r#"199 - "cache invalidation ignored: not authorized""#;

// --- configuration helpers ---------------------------------------------------

/// A stage cache with `status_header = true` and `lines` (TOML keys).
fn cache(lines: &str) -> String {
    format!("status_header = true\ncapacity = \"64MiB\"\n{lines}")
}

/// An api `c` with `stages` (name, `[api.stage.cache]` lines or `None` for
/// no cache) and `http_proxy` routes to the origin at `origin`: (route key,
/// origin path and query, `[api.route.cache]` lines or "" for none).
fn config(
    origin: SocketAddr,
    stages: &[(&str, Option<&str>)],
    routes: &[(&str, &str, &str)],
) -> String {
    let mut s = format!("{SERVER}[[api]]\nname = \"c\"\n");
    for (name, cache) in stages {
        s += &format!("[[api.stage]]\nname = \"{name}\"\n");
        if let Some(lines) = cache {
            s += &format!("[api.stage.cache]\n{lines}\n");
        }
    }
    for (route, target, cache) in routes {
        s += &format!(
            "[[api.route]]\nroute = \"{route}\"\n[api.route.http_proxy]\nuri = \"http://{origin}{target}\"\n"
        );
        if !cache.is_empty() {
            s += &format!("[api.route.cache]\n{cache}\n");
        }
    }
    s
}

fn gateway(
    origin: &Origin,
    stages: &[(&str, Option<&str>)],
    routes: &[(&str, &str, &str)],
) -> TestServer {
    TestServer::start(&config(origin.addr(), stages, routes))
}

/// The `X-Cache-Status` value.
fn cs(r: &Response) -> Option<&str> {
    r.header("x-cache-status")
}

/// The origin's number for the response (replayed from a cache entry).
fn req_no(r: &Response) -> &str {
    r.header("x-origin-request")
        .unwrap_or_else(|| panic!("no x-origin-request: {r:?}"))
}

/// Asserts a 200 with `X-Cache-Status: want`.
#[track_caller]
fn assert_cached(r: &Response, want: &str) {
    assert_eq!((r.status, cs(r)), (200, Some(want)), "{r:?}");
}

fn echo_path(r: &Response) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    Echo::parse(&r.body).path
}

/// `GET path` with extra header lines (each ending in CRLF).
fn get_with(c: &mut Client, path: &str, headers: &str) -> Response {
    c.request(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n"))
}

/// Polls `f` every 100 ms until it returns `Some` or `limit` passes.
fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// --- 1. hit after miss -----------------------------------------------------------

#[test]
fn second_get_is_a_hit_with_age_and_headers_are_off_by_default() {
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[
            ("on", Some(&cache(""))),
            ("off", Some("capacity = \"64MiB\"")),
        ],
        &[("GET /echo", "/echo", "")],
    );
    let mut c = gw.client();

    let r1 = c.get("/on/echo");
    assert_cached(&r1, "Miss");
    assert_eq!(r1.header("age"), None, "a miss has no Age: {r1:?}");
    r1.assert_common_headers();
    let r2 = c.get("/on/echo");
    assert_cached(&r2, "Hit");
    r2.assert_common_headers();
    let age: u64 = r2
        .header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("Age missing or not a number: {r2:?}"));
    assert!(age <= 2, "{r2:?}");
    assert_eq!(r2.body, r1.body);
    assert_eq!(req_no(&r2), req_no(&r1));
    assert_eq!(r2.header("content-type"), Some("application/json"));
    assert_ne!(
        r2.header("x-request-id"),
        r1.header("x-request-id"),
        "the request id is per response"
    );
    assert_eq!(o.count(), 1);

    // status_header off (the default, for parity): cached, but silent.
    let r1 = c.get("/off/echo");
    let r2 = c.get("/off/echo");
    for r in [&r1, &r2] {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!((cs(r), r.header("age")), (None, None), "{r:?}");
    }
    assert_eq!(req_no(&r2), req_no(&r1));
    assert_eq!(o.count(), 2);
}

// --- 2. TTL expiry ---------------------------------------------------------------

#[test]
fn entry_expires_after_the_ttl() {
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[("prod", Some(&cache("ttl = \"1s\"")))],
        &[("GET /echo", "/echo", "")],
    );
    let mut c = gw.client();
    let filled = Instant::now();
    let first = c.get("/prod/echo");
    assert_cached(&first, "Miss");
    assert_cached(&c.get("/prod/echo"), "Hit");
    assert_eq!(o.count(), 1);

    let again = poll(Duration::from_secs(5), || {
        let r = c.get("/prod/echo");
        assert_eq!(r.status, 200, "{r:?}");
        (cs(&r) == Some("Miss")).then_some(r)
    })
    .expect("still a hit 5 s after a 1 s TTL");
    assert!(
        filled.elapsed() >= Duration::from_millis(950),
        "expired after {:?}",
        filled.elapsed()
    );
    assert_ne!(req_no(&again), req_no(&first));
    assert_eq!(o.count(), 2);
    assert_cached(&c.get("/prod/echo"), "Hit");
}

// --- 3. TTL 0 and the route override ---------------------------------------------

#[test]
fn ttl_zero_never_caches_and_route_ttl_overrides_the_stage() {
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[
            ("zero", Some(&cache("ttl = \"0s\""))),
            ("hour", Some(&cache("ttl = \"3600s\""))),
        ],
        &[
            ("GET /plain", "/echo/plain", ""),
            ("GET /own", "/echo/own", "ttl = \"60s\""),
            ("GET /off", "/echo/off", "ttl = \"0s\""),
        ],
    );
    let mut c = gw.client();

    // Stage ttl 0, no route ttl: not cached, not even marked.
    for _ in 0..2 {
        let r = c.get("/zero/plain");
        assert_eq!((r.status, cs(&r)), (200, None), "{r:?}");
    }
    assert_eq!(o.count(), 2);
    // Stage ttl 0, route ttl 60 s: cached.
    assert_cached(&c.get("/zero/own"), "Miss");
    assert_cached(&c.get("/zero/own"), "Hit");
    assert_eq!(o.count(), 3);
    // Stage ttl 1 h, route ttl 0: not cached.
    for _ in 0..2 {
        let r = c.get("/hour/off");
        assert_eq!((r.status, cs(&r)), (200, None), "{r:?}");
    }
    assert_eq!(o.count(), 5);
    // Stage ttl 1 h, no route ttl: cached.
    assert_cached(&c.get("/hour/plain"), "Miss");
    assert_cached(&c.get("/hour/plain"), "Hit");
    assert_eq!(o.count(), 6);
}

// --- 4. POST ---------------------------------------------------------------------

fn post(c: &mut Client, path: &str, body: &str) -> Response {
    c.request(format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

#[test]
fn post_is_cached_only_with_an_override() {
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[("prod", Some(&cache("")))],
        &[
            ("POST /echo", "/echo", ""),
            ("POST /cached", "/echo/cached", "enabled = true"),
            ("GET /cached", "/echo/cached", ""),
        ],
    );

    for _ in 0..2 {
        let r = post(&mut gw.client(), "/prod/echo", "hello");
        assert_eq!((r.status, cs(&r)), (200, None), "{r:?}");
        assert_eq!(Echo::parse(&r.body).body_len, 5);
    }
    assert_eq!(o.count(), 2);

    // A fresh connection each: see post_hit_consumes_the_request_body.
    let r1 = post(&mut gw.client(), "/prod/cached", "hello");
    assert_cached(&r1, "Miss");
    let r2 = post(&mut gw.client(), "/prod/cached", "hello");
    assert_cached(&r2, "Hit");
    assert_eq!(r2.body, r1.body);
    assert_eq!(o.count(), 3);

    // The method is in the key: a GET of the same path has its own entry.
    let mut c = gw.client();
    let g = c.get("/prod/cached");
    assert_cached(&g, "Miss");
    assert_eq!(Echo::parse(&g.body).method, "GET");
    assert_eq!(o.count(), 4);
}

/// A cache hit must consume the request body. Observed (src/gateway/cached.rs,
/// `write_hit` returns `consumed: 0`): the body stays in the read buffer and
/// is parsed as the next request, so a body that is a request is executed.
#[test]
fn post_hit_consumes_the_request_body() {
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[("prod", Some(&cache("")))],
        &[
            ("POST /cached", "/echo/cached", "enabled = true"),
            ("GET /other", "/echo/other", ""),
        ],
    );
    let mut c = gw.client();
    let inner = "GET /prod/other HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_cached(&post(&mut c, "/prod/cached", inner), "Miss");
    assert_cached(&post(&mut c, "/prod/cached", inner), "Hit");
    // The same connection carries the next request, and only it.
    let r = post(&mut c, "/prod/cached", "hello");
    assert_cached(&r, "Hit");
    assert_eq!(echo_path(&r), "/echo/cached");
    assert_eq!(
        o.count(),
        1,
        "the body of a hit reached the origin as a request"
    );
}

// --- 5. size cap -----------------------------------------------------------------

/// GETs each `(size, cached)` twice through `route` and checks bodies,
/// framing, X-Cache-Status and the origin's count. A chunked origin body
/// arrives chunked on a miss and with a Content-Length on a hit.
fn check_size_cap(
    route: &str,
    target: &str,
    key: &str,
    path: impl Fn(usize) -> String,
    chunked: bool,
) {
    let o = Origin::start("o");
    let gw = gateway(&o, &[("prod", Some(&cache("")))], &[(route, target, key)]);
    let mut c = gw.client();
    let mut expect = 0;
    let cases: &[(usize, bool)] = if chunked {
        &[(100_000, true), (1_048_576, true), (1_048_577, false)]
    } else {
        &[
            (2_097_152, false),
            (1_048_577, false),
            (1_048_576, true),
            (1000, true),
        ]
    };
    for &(n, cached) in cases {
        let r1 = c.get(&path(n));
        let r2 = c.get(&path(n));
        for r in [&r1, &r2] {
            assert_eq!(r.status, 200, "{n}: {:?}", r.headers);
            assert!(r.body == pattern(n), "{n}: body differs");
        }
        if chunked {
            assert_eq!(r1.header("transfer-encoding"), Some("chunked"), "{n}");
        } else {
            assert_eq!(r1.header("content-length"), Some(n.to_string().as_str()));
        }
        if cached || !chunked {
            assert_eq!(
                r2.header("content-length"),
                Some(n.to_string().as_str()),
                "{n}"
            );
        }
        assert_eq!(cs(&r1), Some("Miss"), "{n}");
        assert_eq!(cs(&r2), Some(if cached { "Hit" } else { "Miss" }), "{n}");
        expect += if cached { 1 } else { 2 };
        assert_eq!(o.count(), expect, "{n}");
    }
}

#[test]
fn responses_over_1_mib_are_not_cached_and_arrive_intact() {
    check_size_cap(
        "GET /bytes/{n}",
        "/bytes/{n}",
        "key_parameters = [\"path.n\"]",
        |n| format!("/prod/bytes/{n}"),
        false,
    );
}

#[test]
fn chunked_responses_up_to_1_mib_are_stored_and_replayed_with_a_length() {
    check_size_cap(
        "GET /chunked/{n}/{size}",
        "/chunked/{n}/{size}",
        "key_parameters = [\"path.n\", \"path.size\"]",
        |n| format!("/prod/chunked/{n}/4096"),
        true,
    );
}

// --- 6. key parameters -----------------------------------------------------------

#[test]
fn key_parameters_vary_the_key_and_unlisted_ones_do_not() {
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[("prod", Some(&cache("")))],
        &[
            (
                "GET /items/{id}",
                "/echo/items/{id}",
                "key_parameters = [\"path.id\", \"querystring.lang\"]",
            ),
            (
                "GET /h/{id}",
                "/echo/h/{id}",
                "key_parameters = [\"header.accept-language\"]",
            ),
            ("GET /trap/{id}", "/echo/trap/{id}", ""),
            (
                "GET /q/{id}",
                "/echo/q/{id}",
                "key_parameters = [\"querystring.*\"]",
            ),
            (
                "GET /ns1/{id}",
                "/echo/ns1/{id}",
                "key_parameters = [\"path.id\"]\nnamespace = \"shared\"",
            ),
            (
                "GET /ns2/{id}",
                "/echo/ns2/{id}",
                "key_parameters = [\"path.id\"]\nnamespace = \"shared\"",
            ),
        ],
    );
    let mut c = gw.client();
    let mut n = 0;
    // (path, extra headers, expected status, which earlier response it replays)
    let mut check = |path: &str, headers: &str, want: &str, n: &mut u64| -> Response {
        let r = get_with(&mut c, path, headers);
        assert_eq!(
            (r.status, cs(&r)),
            (200, Some(want)),
            "{path} {headers:?}: {r:?}"
        );
        if want == "Miss" {
            *n += 1;
        }
        assert_eq!(o.count(), *n, "{path} {headers:?}");
        r
    };

    // path.id + querystring.lang; x is not in the key.
    let en1 = check("/prod/items/1?lang=en", "", "Miss", &mut n);
    let r = check("/prod/items/1?lang=en&x=1", "", "Hit", &mut n);
    assert_eq!(req_no(&r), req_no(&en1));
    let r = check("/prod/items/1?x=2&lang=en", "", "Hit", &mut n);
    assert_eq!(req_no(&r), req_no(&en1));
    check("/prod/items/1?lang=fr", "", "Miss", &mut n);
    let r = check("/prod/items/2?lang=en", "", "Miss", &mut n);
    assert_eq!(echo_path(&r), "/echo/items/2");
    check("/prod/items/1", "", "Miss", &mut n);
    check("/prod/items/1", "", "Hit", &mut n);

    // header.accept-language (the header name in any case).
    check("/prod/h/1", "Accept-Language: en\r\n", "Miss", &mut n);
    check("/prod/h/1", "accept-language: en\r\n", "Hit", &mut n);
    check("/prod/h/1", "Accept-Language: fr\r\n", "Miss", &mut n);
    check("/prod/h/1", "", "Miss", &mut n);
    // The path is not in this key: /h/2 with `en` gets /h/1's entry.
    let r = check("/prod/h/2", "Accept-Language: en\r\n", "Hit", &mut n);
    assert_eq!(echo_path(&r), "/echo/h/1");

    // The trap: no key_parameters, every /trap/{id} shares one entry.
    let r = check("/prod/trap/1", "", "Miss", &mut n);
    assert_eq!(echo_path(&r), "/echo/trap/1");
    let r = check("/prod/trap/2?lang=fr", "", "Hit", &mut n);
    assert_eq!(echo_path(&r), "/echo/trap/1", "the documented trap");

    // querystring.*: the whole query string varies the key.
    check("/prod/q/1?a=1", "", "Miss", &mut n);
    check("/prod/q/1?a=1", "", "Hit", &mut n);
    check("/prod/q/1?a=1&b=2", "", "Miss", &mut n);
    check("/prod/q/1?a=2", "", "Miss", &mut n);
    check("/prod/q/1", "", "Miss", &mut n);

    // One namespace, two routes: shared entries.
    let r = check("/prod/ns1/7", "", "Miss", &mut n);
    assert_eq!(echo_path(&r), "/echo/ns1/7");
    let r = check("/prod/ns2/7", "", "Hit", &mut n);
    assert_eq!(echo_path(&r), "/echo/ns1/7");
    check("/prod/ns2/8", "", "Miss", &mut n);
}

// --- 7. HEAD ---------------------------------------------------------------------

#[test]
fn head_is_answered_from_the_get_entry() {
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[("prod", Some(&cache("")))],
        &[(
            "GET /bytes/{n}",
            "/bytes/{n}",
            "key_parameters = [\"path.n\"]",
        )],
    );
    let mut c = gw.client();

    for n in [100, 100_000] {
        let g = c.get(&format!("/prod/bytes/{n}"));
        assert_cached(&g, "Miss");
        c.send(format!("HEAD /prod/bytes/{n} HTTP/1.1\r\nHost: t\r\n\r\n"));
        let h = c.read_head_response();
        assert_cached(&h, "Hit");
        assert_eq!(
            h.header("content-length"),
            Some(n.to_string().as_str()),
            "{h:?}"
        );
        assert_eq!(h.header("transfer-encoding"), None, "{h:?}");
        assert!(h.body.is_empty());
        // No body follows: the next response starts right away.
        let g2 = c.get(&format!("/prod/bytes/{n}"));
        assert_cached(&g2, "Hit");
        assert!(g2.body == pattern(n));
        assert!(c.buffered().is_empty(), "stray bytes after HEAD");
    }
    assert_eq!(o.count(), 2);

    // A HEAD miss goes to the origin and stores nothing; the GET after it misses.
    c.send("HEAD /prod/bytes/5 HTTP/1.1\r\nHost: t\r\n\r\n");
    let h = c.read_head_response();
    assert_eq!(
        (h.status, h.header("content-length")),
        (200, Some("5")),
        "{h:?}"
    );
    assert_cached(&c.get("/prod/bytes/5"), "Miss");
    assert_eq!(o.count(), 4);
}

// --- 8. Cache-Control: max-age=0 -------------------------------------------------

#[test]
fn max_age_zero_refreshes_unless_unauthorized() {
    let o = Origin::start("o");
    let auth = |strategy: &str| {
        cache(&format!(
            "require_authorization_for_cache_control = true\n\
             unauthorized_strategy = \"{strategy}\"\n\
             authorization_header = \"x-cache-token\"\n\
             authorization_token = \"s3cret\""
        ))
    };
    let gw = gateway(
        &o,
        &[
            ("open", Some(&cache(""))),
            ("deny", Some(&auth("FAIL_WITH_403"))),
            ("warn", Some(&auth("SUCCEED_WITH_RESPONSE_HEADER"))),
            ("quiet", Some(&auth("SUCCEED_WITHOUT_RESPONSE_HEADER"))),
        ],
        &[("GET /echo", "/echo", "")],
    );
    let mut c = gw.client();
    const REFRESH: &str = "Cache-Control: max-age=0\r\n";
    const AUTHORIZED: &str = "Cache-Control: no-cache, max-age=0\r\nx-cache-token: s3cret\r\n";
    let mut n = 0;

    // No authorization required: any client refreshes.
    let first = c.get("/open/echo");
    assert_cached(&first, "Miss");
    n += 1;
    let r = get_with(&mut c, "/open/echo", REFRESH);
    assert_cached(&r, "Refresh");
    assert_eq!(r.header("warning"), None);
    n += 1;
    assert_eq!(o.count(), n);
    let fresh = req_no(&r).to_string();
    assert_ne!(fresh, req_no(&first));
    let r = c.get("/open/echo");
    assert_cached(&r, "Hit");
    assert_eq!(req_no(&r), fresh, "the entry was replaced");
    assert_eq!(o.count(), n);

    for stage in ["deny", "warn", "quiet"] {
        let path = format!("/{stage}/echo");
        let first = c.get(&path);
        assert_cached(&first, "Miss");
        n += 1;
        for unauthorized in [
            REFRESH.to_string(),
            format!("{REFRESH}x-cache-token: wrong\r\n"),
        ] {
            let r = get_with(&mut c, &path, &unauthorized);
            match stage {
                "deny" => {
                    r.assert_gateway_error(403, FORBIDDEN);
                    assert_eq!(r.header("x-amzn-errortype"), Some("ForbiddenException"));
                }
                "warn" => {
                    assert_cached(&r, "Hit");
                    assert_eq!(r.header("warning"), Some(WARNING), "{r:?}");
                    assert_eq!(req_no(&r), req_no(&first));
                }
                _ => {
                    assert_cached(&r, "Hit");
                    assert_eq!(r.header("warning"), None, "{r:?}");
                    assert_eq!(req_no(&r), req_no(&first));
                }
            }
            assert_eq!(
                o.count(),
                n,
                "{stage}: unauthorized refresh reached the origin"
            );
        }
        // Authorized: refreshed, and the connection is still usable.
        let r = get_with(&mut c, &path, AUTHORIZED);
        assert_cached(&r, "Refresh");
        assert_eq!(r.header("warning"), None, "{r:?}");
        n += 1;
        assert_eq!(o.count(), n, "{stage}");
        let fresh = req_no(&r).to_string();
        let r = c.get(&path);
        assert_cached(&r, "Hit");
        assert_eq!(req_no(&r), fresh, "{stage}: the entry was replaced");
    }
}

// --- 9, 13. flush and counters (store level) --------------------------------------

/// Polls a future once: the store's lookups complete at once when no other
/// caller leads the key.
fn ready<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("an uncontended lookup waited"),
    }
}

fn store_entry(key: &[u8], body: &'static [u8], now: u64) -> Arc<Entry> {
    Arc::new(
        Entry::new(
            key.into(),
            200,
            Bytes::from_static(b"HTTP/1.1 200 OK\r\n"),
            Bytes::from_static(body),
            now,
            now + 60_000,
            now + 60_000,
        )
        .expect("small body"),
    )
}

#[test]
fn snapshot_stage_cache_flush_and_counters() {
    // Nothing is sent: the backend address only has to parse.
    let toml = config(
        support::closed_port(),
        &[
            ("prod", Some("status_header = true\ncapacity = \"2MiB\"")),
            ("nocache", None),
        ],
        &[("GET /echo", "/echo", "")],
    );
    let cfg = ringgate::config::parse(&toml, "test.toml").expect("valid");
    let snap = Snapshot::build(&cfg).expect("builds");
    assert!(snap.stage_cache("c", "nocache").is_none());
    assert!(snap.stage_cache("c", "missing").is_none());
    let sc = snap.stage_cache("c", "prod").expect("prod has a cache");
    assert!(sc.settings.status_header);
    let store = &sc.store;
    assert_eq!(store.capacity(), 2 << 20, "the 1MiB..1GiB size form");

    let mut keys = KeyBuilder::new();
    keys.start("GET /echo", "GET");
    keys.param(ParamKind::Path, "id", Some(b"1"));
    let k = keys.finish();
    let kb = keys.bytes().to_vec();
    let now = 1_000;

    // Counters: a miss (lead + fill) then a hit.
    let Fetch::Lead(leader) = ready(store.get_or_lead(&k, &kb, now)) else {
        panic!("empty cache served a hit");
    };
    assert_eq!(
        leader.fill(store_entry(&kb, b"one", now)),
        StoreOutcome::Stored
    );
    match ready(store.get_or_lead(&k, &kb, now + 1)) {
        Fetch::Fresh(e) => assert_eq!(&e.body()[..], b"one"),
        Fetch::Lead(_) => panic!("filled entry not found"),
    }
    let s = store.stats();
    assert_eq!((s.hits, s.misses, s.entries), (1, 1, 1), "{s:?}");

    // Flush, then a miss.
    store.flush();
    assert_eq!((store.entries(), store.bytes()), (0, 0));
    assert!(matches!(store.lookup(&k, &kb, now + 2), Lookup::Miss));
    let s = store.stats();
    assert_eq!((s.hits, s.misses, s.evictions), (1, 2, 0), "{s:?}");
    // A leader in flight during a flush: its fill is superseded.
    let Fetch::Lead(leader) = ready(store.get_or_lead(&k, &kb, now + 3)) else {
        panic!("flushed entry served");
    };
    store.flush();
    assert_eq!(
        leader.fill(store_entry(&kb, b"two", now + 3)),
        StoreOutcome::Superseded
    );
    assert_eq!(store.entries(), 0);
}

// --- 10. stampede ----------------------------------------------------------------

#[test]
fn stampede_reaches_the_origin_once() {
    const CLIENTS: usize = 100;
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[("prod", Some(&cache("")))],
        &[(
            "GET /slow/{ms}",
            "/slow/{ms}",
            "key_parameters = [\"path.ms\"]",
        )],
    );
    let addr = gw.addr();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                barrier.wait();
                c.get("/prod/slow/300")
            })
        })
        .collect();
    let responses: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(o.count(), 1, "the origin was called more than once");
    let mut misses = 0;
    for r in &responses {
        assert_eq!((r.status, r.text().as_str()), (200, "slow\n"), "{r:?}");
        assert_eq!(req_no(r), "1", "{r:?}");
        match cs(r) {
            Some("Miss") => misses += 1,
            Some("Hit") => {}
            other => panic!("X-Cache-Status {other:?}: {r:?}"),
        }
    }
    assert_eq!(misses, 1);
}

// --- 11. stale_if_error -----------------------------------------------------------

#[test]
fn stale_if_error_serves_the_expired_entry_when_the_origin_is_down() {
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[
            (
                "stale",
                Some(&cache("ttl = \"1s\"\nstale_if_error = \"30s\"")),
            ),
            ("plain", Some(&cache("ttl = \"1s\""))),
        ],
        &[("GET /echo", "/echo", "")],
    );
    let mut c = gw.client();
    let kept = c.get("/stale/echo");
    assert_cached(&kept, "Miss");
    assert_cached(&c.get("/plain/echo"), "Miss");
    assert_cached(&c.get("/stale/echo"), "Hit");
    assert_eq!(o.count(), 2);
    drop(o); // SIGKILL to the origin's pid, and reaped

    let r = poll(Duration::from_secs(5), || {
        let r = c.get("/stale/echo");
        assert_eq!(r.status, 200, "{r:?}");
        (cs(&r) != Some("Hit")).then_some(r)
    })
    .expect("still fresh 5 s after a 1 s TTL");
    assert_cached(&r, "Stale");
    assert_eq!(r.body, kept.body);
    assert_eq!(req_no(&r), req_no(&kept));
    // Still there for the next request, on the same connection.
    let r = c.get("/stale/echo");
    assert_cached(&r, "Stale");
    assert_eq!(r.body, kept.body);

    // Without stale_if_error: the error.
    let r = poll(Duration::from_secs(5), || {
        let r = c.get("/plain/echo");
        (r.status != 200).then_some(r)
    })
    .expect("still fresh 5 s after a 1 s TTL");
    r.assert_gateway_error(504, NET_ERROR);
}

// --- 12. cache_statuses ----------------------------------------------------------

#[test]
fn cache_statuses_filters_what_is_stored() {
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[
            ("only200", Some(&cache("cache_statuses = [200]"))),
            ("all", Some(&cache(""))),
        ],
        &[(
            "GET /status/{code}",
            "/status/{code}",
            "key_parameters = [\"path.code\"]",
        )],
    );
    let mut c = gw.client();
    let mut n = 0;
    for (stage, code, cached) in [
        ("only200", 404, false),
        ("only200", 200, true),
        ("all", 404, true),
        ("all", 503, true),
    ] {
        let path = format!("/{stage}/status/{code}");
        let r1 = c.get(&path);
        let r2 = c.get(&path);
        for r in [&r1, &r2] {
            assert_eq!(r.status, code, "{r:?}");
            assert_eq!(r.text(), format!("status {code}\n"));
        }
        assert_eq!(cs(&r1), Some("Miss"));
        assert_eq!(cs(&r2), Some(if cached { "Hit" } else { "Miss" }), "{path}");
        n += if cached { 1 } else { 2 };
        assert_eq!(o.count(), n, "{path}");
    }
}

// --- 14. a small cache under churn ---------------------------------------------

#[test]
fn small_cache_keeps_serving_correct_responses() {
    const N: usize = 100;
    const SIZE: usize = 100 * 1024;
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[("prod", Some("status_header = true\ncapacity = \"2MiB\""))],
        &[(
            "GET /b/{i}",
            &format!("/bytes/{SIZE}?i={{i}}"),
            "key_parameters = [\"path.i\"]",
        )],
    );
    let mut c = gw.client();
    let body = pattern(SIZE);
    for i in 0..N {
        let r = c.get(&format!("/prod/b/{i}"));
        assert_cached(&r, "Miss");
        assert!(r.body == body, "{i}: body differs");
    }
    assert_eq!(o.count(), N as u64);
    // Again: some entries were evicted (100 × 100 KiB in 2 MiB), some kept.
    let mut misses = 0;
    for i in 0..N {
        let r = c.get(&format!("/prod/b/{i}"));
        assert_eq!(r.status, 200, "{r:?}");
        match cs(&r) {
            Some("Miss") => misses += 1,
            Some("Hit") => {}
            other => panic!("{i}: X-Cache-Status {other:?}"),
        }
        assert!(r.body == body, "{i}: body differs");
    }
    assert!(misses > 0, "100 × 100 KiB cannot all fit in 2 MiB");
    assert_eq!(o.count(), (N + misses) as u64);
    // The last one fetched is still there.
    assert_cached(&c.get(&format!("/prod/b/{}", N - 1)), "Hit");
}

/// The leader and its waiters on different workers: the fill wakes waiters
/// parked on another thread's io_uring (SINGLE_ISSUER + DEFER_TASKRUN), so
/// this exercises monoio's cross-thread wake-up repeatedly, under load.
#[test]
fn stampedes_across_two_workers_wake_every_waiter() {
    const CLIENTS: usize = 40;
    const ROUNDS: usize = 15;
    let o = Origin::start("o");
    let toml = config(
        o.addr(),
        &[("prod", Some(&cache("")))],
        &[(
            "GET /slow/{ms}",
            "/slow/{ms}",
            "key_parameters = [\"path.ms\"]",
        )],
    )
    .replacen("workers = 1", "workers = 2", 1);
    let gw = TestServer::start(&toml);
    let addr = gw.addr();
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let path = format!("/prod/slow/{}", 100 + round);
        let threads: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let barrier = barrier.clone();
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    barrier.wait();
                    c.get(&path)
                })
            })
            .collect();
        for t in threads {
            let r = t.join().unwrap();
            assert_eq!((r.status, r.text().as_str()), (200, "slow\n"), "{r:?}");
        }
        assert_eq!(
            o.count(),
            round as u64 + 1,
            "round {round}: the origin was called more than once"
        );
    }
}

// --- 15. cut-off responses are never stored ------------------------------------
//
// An entry is stored only when the backend's body ended exactly as framed
// (Content-Length reached, or the last chunk read). The origin's cut-off
// routes do not announce the close, so the response looks like a
// keep-alive one until it stops short. Responses that may be cut off are
// read with `Connection: close` (see `get_to_close`), so that a complete
// one ends too.

/// `GET path` on a new connection with `Connection: close`: the head, and
/// as body every byte that arrived until the gateway closed (undecoded), so
/// a complete response and a cut-off one can both be read.
fn get_to_close(addr: SocketAddr, path: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    ));
    let mut r = c.read_head_response();
    r.body = c.read_to_close();
    r
}

/// Decodes a chunked body as far as it goes: the data, and whether the
/// last chunk and the trailer section arrived.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let line_end = |b: &[u8]| b.windows(2).position(|w| w == b"\r\n");
    let mut data = Vec::new();
    loop {
        let Some(eol) = line_end(raw) else {
            return (data, false);
        };
        let line = String::from_utf8_lossy(&raw[..eol]).into_owned();
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        raw = &raw[eol + 2..];
        if size == 0 {
            // Trailers, up to the blank line.
            loop {
                let Some(eol) = line_end(raw) else {
                    return (data, false);
                };
                raw = &raw[eol + 2..];
                if eol == 0 {
                    assert!(raw.is_empty(), "bytes after the last chunk");
                    return (data, true);
                }
            }
        }
        if raw.len() < size + 2 {
            data.extend_from_slice(&raw[..size.min(raw.len())]);
            return (data, false);
        }
        assert_eq!(&raw[size..size + 2], b"\r\n", "chunk data without CRLF");
        data.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// The body `r` carries (decoded if chunked; `r` from [`get_to_close`] or
/// with the rest of the connection as body) and whether it is all its
/// framing promised.
fn framed_body(r: &Response) -> (Vec<u8>, bool) {
    if r.header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        return dechunk(&r.body);
    }
    match r.header("content-length") {
        Some(n) => {
            let n: usize = n.parse().expect("Content-Length is a number");
            assert!(r.body.len() <= n, "bytes after the body: {}", show(r));
            (r.body.clone(), r.body.len() == n)
        }
        None => (r.body.clone(), true),
    }
}

/// A one-line description of a response read with [`get_to_close`].
fn show(r: &Response) -> String {
    let (body, complete) = framed_body(r);
    let preview: String = String::from_utf8_lossy(&body[..body.len().min(32)]).into_owned();
    format!(
        "{} {}, X-Cache-Status {:?}, x-origin-request {:?}, Content-Length {:?}, \
         Transfer-Encoding {:?}, Connection {:?}: {} body bytes ({}) {preview:?}…",
        r.status,
        r.reason,
        cs(r),
        r.header("x-origin-request"),
        r.header("content-length"),
        r.header("transfer-encoding"),
        r.header("connection"),
        body.len(),
        if complete { "complete" } else { "cut off" },
    )
}

/// Asserts a 200 that stops short of what its framing promised, whose
/// bytes are the start of the origin's `full`-byte pattern body.
#[track_caller]
fn assert_cut(r: &Response, full: usize) {
    assert_eq!(r.status, 200, "{}", show(r));
    let (body, complete) = framed_body(r);
    assert!(
        !complete,
        "a cut-off backend body reached the client as a complete response: {}",
        show(r)
    );
    assert!(
        body.len() <= full && body == pattern(body.len()),
        "{}",
        show(r)
    );
}

/// Asserts a 200 carrying all of `want`, complete as framed.
#[track_caller]
fn assert_whole(r: &Response, want: &[u8]) {
    assert_eq!(r.status, 200, "{}", show(r));
    let (body, complete) = framed_body(r);
    assert!(
        complete && body == want,
        "expected the whole {}-byte body: {}",
        want.len(),
        show(r)
    );
}

/// A cached route in front of the origin, `route` proxied to `target`.
fn cut_gateway(o: &Origin, route: &str, target: &str) -> TestServer {
    gateway(o, &[("prod", Some(&cache("")))], &[(route, target, "")])
}

/// The first GET (keep-alive) of a response the origin cuts off before
/// `full` body bytes: a Miss, cut off, and the gateway closes the
/// connection. Then the next GET must reach the origin again: a Miss, cut
/// off again, never the stored partial body.
fn check_cut_off_is_not_stored(path: &str, route: &str, target: &str, full: usize) {
    let o = Origin::start("o");
    let gw = cut_gateway(&o, route, target);
    let mut c = gw.client();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
    let mut first = c.read_head_response();
    first.body = c.read_to_close(); // the gateway closes: the only signal left
    assert_eq!(cs(&first), Some("Miss"), "{}", show(&first));
    assert_cut(&first, full);
    assert_eq!(o.count(), 1);

    let again = get_to_close(gw.addr(), path);
    assert_eq!(
        cs(&again),
        Some("Miss"),
        "the cut-off response was stored and replayed: {}",
        show(&again)
    );
    assert_cut(&again, full);
    assert_ne!(req_no(&again), req_no(&first), "{}", show(&again));
    assert_eq!(o.count(), 2, "the second GET did not reach the origin");
}

#[test]
fn body_shorter_than_its_content_length_is_not_cached() {
    // Content-Length 100, 10 bytes, close.
    check_cut_off_is_not_stored(
        "/prod/drop-after-head",
        "GET /drop-after-head",
        "/drop-after-head",
        100,
    );
}

#[test]
fn chunked_body_without_its_last_chunk_is_not_cached() {
    // All 5000 bytes in complete chunks, but no `0\r\n\r\n`.
    check_cut_off_is_not_stored(
        "/prod/chunked-cut",
        "GET /chunked-cut",
        "/chunked-cut/5000",
        5000,
    );
}

#[test]
fn body_cut_by_a_backend_reset_is_not_cached() {
    // Content-Length 2000, 1000 bytes, RST.
    check_cut_off_is_not_stored(
        "/prod/reset-mid-body",
        "GET /reset-mid-body",
        "/reset-mid-body/1000",
        2000,
    );
}

/// The client of a miss resets its connection after the first 10 of 30
/// body bytes, while the origin sends the rest in two pieces 300 ms apart
/// (`/drip`): the gateway's write of the second piece fails. The next GET
/// (which waits on that fetch, or comes after it) may be a Hit only if the
/// gateway still read the backend's body to its end, and then it carries
/// the whole body; else it is a Miss that reaches the origin again.
#[test]
fn client_leaving_mid_body_on_a_miss_leaves_no_partial_entry() {
    let o = Origin::start("o");
    let gw = cut_gateway(&o, "GET /drip", "/drip/3/300");
    let mut c = gw.client();
    c.send("GET /prod/drip HTTP/1.1\r\nHost: t\r\n\r\n");
    let first = c.read_head_response();
    assert_cached(&first, "Miss");
    assert_eq!(first.header("content-length"), Some("30"), "{first:?}");
    assert_eq!(c.read_exact_bytes(10), pattern(10));
    socket2::SockRef::from(&c.stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
    drop(c); // RST

    let r = get_to_close(gw.addr(), "/prod/drip");
    assert_whole(&r, &pattern(30));
    match cs(&r) {
        Some("Hit") => {
            assert_eq!(req_no(&r), req_no(&first), "{}", show(&r));
            assert_eq!(o.count(), 1);
        }
        Some("Miss") => {
            assert_ne!(req_no(&r), req_no(&first), "{}", show(&r));
            assert_eq!(o.count(), 2);
        }
        _ => panic!("{}", show(&r)),
    }
    // Either way the key now holds the whole response.
    let r = get_to_close(gw.addr(), "/prod/drip");
    assert_eq!(cs(&r), Some("Hit"), "{}", show(&r));
    assert_whole(&r, &pattern(30));
}

/// A refresh (`Cache-Control: max-age=0`) whose client leaves mid-body, as
/// above: the fill is cut off, so it must not replace the whole entry with
/// the part it read. Every GET meanwhile and after is a Hit with a whole
/// body: the old entry, or the refreshed one only if the gateway read the
/// backend's body to its end.
#[test]
fn cut_off_refresh_does_not_replace_the_entry() {
    let o = Origin::start("o");
    let gw = cut_gateway(&o, "GET /drip", "/drip/3/200");
    let kept = get_to_close(gw.addr(), "/prod/drip");
    assert_eq!(cs(&kept), Some("Miss"), "{}", show(&kept));
    assert_whole(&kept, &pattern(30));

    let mut c = gw.client();
    c.send("GET /prod/drip HTTP/1.1\r\nHost: t\r\nCache-Control: max-age=0\r\n\r\n");
    let refresh = c.read_head_response();
    assert_cached(&refresh, "Refresh");
    assert_eq!(c.read_exact_bytes(10), pattern(10));
    socket2::SockRef::from(&c.stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
    drop(c); // RST
    assert_eq!(o.count(), 2);

    // Nothing tells when the gateway gives up on the refresh (at the
    // origin's next piece): look at the entry until well past the origin's
    // whole response (2 × 200 ms).
    for _ in 0..8 {
        let r = get_to_close(gw.addr(), "/prod/drip");
        assert_eq!(cs(&r), Some("Hit"), "{}", show(&r));
        assert_whole(&r, &pattern(30));
        assert!(
            [req_no(&kept), req_no(&refresh)].contains(&req_no(&r)),
            "{}",
            show(&r)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(o.count(), 2);
}

/// `clients` concurrent GETs of `path` (each with `Connection: close`).
fn concurrent_gets(addr: SocketAddr, path: &str, clients: usize) -> Vec<Response> {
    let barrier = Arc::new(Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let barrier = barrier.clone();
            let path = path.to_string();
            std::thread::spawn(move || {
                barrier.wait();
                get_to_close(addr, &path)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Asserts a response on a key whose fetch was cut off: cut off itself, or
/// the whole `full`-byte body; never the partial body as a complete
/// response. True if whole.
#[track_caller]
fn assert_cut_or_whole(r: &Response, full: usize) -> bool {
    assert_eq!(r.status, 200, "{}", show(r));
    let (body, complete) = framed_body(r);
    if complete {
        assert!(
            body == pattern(full),
            "a partial body served as a complete response: {}",
            show(r)
        );
    } else {
        assert_cut(r, full);
    }
    complete
}

/// The leader's fetch is cut off (after a pause, so the others wait on
/// it), and so is every later one: the waiters must not get the partial
/// body, and the key holds nothing afterwards.
#[test]
fn waiters_on_a_cut_off_fetch_never_get_the_partial_body() {
    const CLIENTS: usize = 6;
    let o = Origin::start("o");
    let gw = cut_gateway(&o, "GET /slow-cut", "/slow-cut/200");
    let responses = concurrent_gets(gw.addr(), "/prod/slow-cut", CLIENTS);
    for r in &responses {
        assert!(
            !assert_cut_or_whole(r, 100),
            "the origin never sends it whole"
        );
    }
    let fetches = o.count();
    assert!(fetches >= 1);

    let r = get_to_close(gw.addr(), "/prod/slow-cut");
    assert_eq!(
        cs(&r),
        Some("Miss"),
        "a cut-off response was stored: {}",
        show(&r)
    );
    assert_cut(&r, 100);
    assert_eq!(o.count(), fetches + 1, "did not reach the origin");
}

/// Only the leader's fetch is cut off (`/cut-once`); fetches after it are
/// complete. Every waiter gets a cut-off response or the whole fresh one,
/// and the whole response is what gets stored.
#[test]
fn waiters_on_a_cut_off_fetch_get_the_refetched_whole_body() {
    const CLIENTS: usize = 6;
    let o = Origin::start("o");
    let gw = cut_gateway(&o, "GET /cut-once", "/cut-once/300");
    let responses = concurrent_gets(gw.addr(), "/prod/cut-once", CLIENTS);
    let cut: Vec<&Response> = responses
        .iter()
        .filter(|r| !assert_cut_or_whole(r, 100))
        .collect();
    assert!(
        !cut.is_empty(),
        "nobody got the cut-off first fetch: {:?}",
        responses.iter().map(show).collect::<Vec<_>>()
    );
    let cut_no = req_no(cut[0]).to_string();
    for r in &cut {
        assert_eq!(req_no(r), cut_no, "only the first fetch is cut off");
    }

    // Afterwards: the whole body, from a complete fetch, and it is cached.
    let r = get_to_close(gw.addr(), "/prod/cut-once");
    assert_whole(&r, &pattern(100));
    assert_ne!(req_no(&r), cut_no, "{}", show(&r));
    let fetches = o.count();
    assert!(fetches >= 2, "the origin was not asked again");
    let hit = get_to_close(gw.addr(), "/prod/cut-once");
    assert_eq!(cs(&hit), Some("Hit"), "{}", show(&hit));
    assert_whole(&hit, &pattern(100));
    assert_eq!(o.count(), fetches);
}

/// The control for the tests above: the same kinds of responses, complete,
/// are stored and replayed whole.
#[test]
fn complete_responses_of_the_same_kinds_are_cached() {
    let o = Origin::start("o");
    let gw = gateway(
        &o,
        &[("prod", Some(&cache("")))],
        &[
            ("GET /bytes", "/bytes/100", ""),
            ("GET /chunked", "/chunked/5000/4096", ""),
            ("GET /slow-body", "/slow-body/100", ""),
        ],
    );
    let mut n = 0;
    for (path, body) in [
        ("/prod/bytes", pattern(100)),
        ("/prod/chunked", pattern(5000)),
        ("/prod/slow-body", b"slow-body\n".to_vec()),
    ] {
        let first = get_to_close(gw.addr(), path);
        assert_eq!(cs(&first), Some("Miss"), "{path}: {}", show(&first));
        assert_whole(&first, &body);
        n += 1;
        let hit = get_to_close(gw.addr(), path);
        assert_eq!(cs(&hit), Some("Hit"), "{path}: {}", show(&hit));
        assert_whole(&hit, &body);
        assert_eq!(req_no(&hit), req_no(&first), "{path}");
        assert_eq!(o.count(), n, "{path}");
    }
}
