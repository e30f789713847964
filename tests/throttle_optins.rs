//! The opt-in extensions beyond API Gateway, through the real server:
//! rate-limit headers (`[throttle] headers`) on mock, error, proxied and
//! cached responses and `Retry-After` on a 429; per-client-IP buckets
//! (`client_throttle`) with two client addresses on loopback; API keys from
//! another header or a query parameter (`[key_source]`), hidden from the
//! backend and the cache key with `hide`; and no allocation on a warm
//! request with headers and a per-client bucket on.

mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mimalloc::MiMalloc;
use ringgate::server::StartOptions;
use support::{closed_port, Client, Origin, Response, StubBackend, TestServer};

const KEY_A: &str = "alice-2f0c9a1e7b3d4c5a";
const KEY_B: &str = "bob-99d0c9a1e7b3d4c5a0";

/// One worker on an OS-assigned port; `top` (top-level sections), the
/// stage's `stage_lines`, then `routes`.
fn config(top: &str, stage_lines: &str, routes: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
pin_workers = false
drain_timeout = "2s"

{top}

[[api]]
name = "t"
  [[api.stage]]
  name = "prod"
  {stage_lines}
{routes}
"#
    )
}

fn mock_route(route: &str, body: &str, extra: &str) -> String {
    format!("  [[api.route]]\n  route = \"{route}\"\n  {extra}\n  mock = {{ body = \"{body}\" }}\n")
}

/// The three `RateLimit-*` values, if the response has them.
fn rate(r: &Response) -> Option<(u64, u64, u64)> {
    let n = |name| r.header(name).map(|v| v.parse::<u64>().unwrap());
    match (
        n("ratelimit-limit"),
        n("ratelimit-remaining"),
        n("ratelimit-reset"),
    ) {
        (Some(l), Some(rem), Some(reset)) => Some((l, rem, reset)),
        (None, None, None) => None,
        other => panic!("some RateLimit headers only: {other:?} in {r:?}"),
    }
}

fn retry_after(r: &Response) -> Option<u64> {
    r.header("retry-after").map(|v| v.parse().unwrap())
}

fn assert_throttled(r: &Response) {
    r.assert_gateway_error(429, r#"{"message":"Too Many Requests"}"#);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
}

#[test]
fn rate_headers_on_mock_responses_and_429s() {
    let routes = mock_route("GET /a", "a", "");
    let stage = "route_throttle = { \"GET /a\" = { rate = 0.1, burst = 2 } }";
    let srv = TestServer::start(&config("[throttle]\nheaders = true", stage, &routes));
    let mut c = srv.client();
    // One token every 10 s, two at most: the route's bucket has fewer
    // tokens than the account's, so it is the one reported.
    let r = c.get("/prod/a");
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
    r.assert_common_headers();
    assert_eq!(rate(&r), Some((2, 1, 10)));
    assert_eq!(retry_after(&r), None);
    let r = c.get("/prod/a");
    assert_eq!(rate(&r), Some((2, 0, 20)));
    // Refused: the wait for the next token, rounded up.
    let r = c.get("/prod/a");
    assert_throttled(&r);
    assert_eq!(retry_after(&r), Some(10));
    assert_eq!(rate(&r), Some((2, 0, 10)));
    // HEAD gets the same head.
    c.send("HEAD /prod/a HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 429);
    assert_eq!(retry_after(&r), Some(10));

    // Off (the default): no such header anywhere, as API Gateway.
    let srv = TestServer::start(&config("", stage, &routes));
    let mut c = srv.client();
    for _ in 0..2 {
        let r = c.get("/prod/a");
        assert_eq!(r.status, 200);
        assert_eq!(rate(&r), None);
    }
    let r = c.get("/prod/a");
    assert_throttled(&r);
    assert_eq!((rate(&r), retry_after(&r)), (None, None));
}

#[test]
fn retry_after_is_the_wait_for_the_next_token() {
    // One token every 2 s.
    let routes = mock_route("GET /a", "a", "");
    let stage = "route_throttle = { \"GET /a\" = { rate = 0.5, burst = 1 } }";
    let srv = TestServer::start(&config("[throttle]\nheaders = true", stage, &routes));
    let mut c = srv.client();
    assert_eq!(c.get("/prod/a").status, 200);
    let r = c.get("/prod/a");
    assert_eq!((r.status, retry_after(&r)), (429, Some(2)));
    std::thread::sleep(Duration::from_millis(1100));
    // Still refused, and told the shorter wait left.
    let r = c.get("/prod/a");
    assert_eq!((r.status, retry_after(&r)), (429, Some(1)));
    std::thread::sleep(Duration::from_millis(1000));
    // Waiting as told is enough.
    let r = c.get("/prod/a");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(rate(&r), Some((1, 0, 2)));
}

#[test]
fn rate_headers_only_where_a_level_applies_and_on_gateway_errors() {
    let closed = closed_port();
    let routes = format!(
        "{}{}  [[api.route]]\n  route = \"GET /down\"\n  http_proxy = {{ uri = \"http://{closed}/x\" }}\n",
        mock_route("GET /free", "free", ""),
        mock_route("GET /a", "a", ""),
    );
    let stage = "route_throttle = { \"GET /a\" = { rate = 0.001, burst = 5 }, \"GET /down\" = { rate = 0.001, burst = 5 } }";
    // No account level: a route without its own limit has no level at all.
    let srv = TestServer::start(&config(
        "[throttle]\nrate = -1\nheaders = true",
        stage,
        &routes,
    ));
    let mut c = srv.client();
    let r = c.get("/prod/free");
    assert_eq!((r.status, rate(&r)), (200, None));
    let r = c.get("/prod/a");
    assert_eq!((r.status, rate(&r)), (200, Some((5, 4, 1000))));
    // A gateway error on a throttled route carries them too.
    let r = c.get("/prod/down");
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(rate(&r), Some((5, 4, 1000)));
    // No route, no level: none.
    let r = c.get("/prod/nowhere");
    assert_eq!((r.status, rate(&r)), (403, None));
}

#[test]
fn rate_headers_on_proxied_and_cached_responses() {
    let origin = Origin::start("o");
    let addr = origin.addr();
    let routes = format!(
        "  [[api.route]]\n  route = \"GET /hello\"\n  http_proxy = {{ uri = \"http://{addr}/hello\" }}\n\
         \x20 [[api.route]]\n  route = \"GET /cached\"\n  http_proxy = {{ uri = \"http://{addr}/hello\" }}\n\
         \x20 cache = {{ ttl = \"60s\" }}\n"
    );
    let stage = "throttle = { rate = 0.001, burst = 10 }\n  cache = { status_header = true }";
    let srv = TestServer::start(&config("[throttle]\nheaders = true", stage, &routes));
    let mut c = srv.client();
    let r = c.get("/prod/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "hello, world\n"));
    assert_eq!(r.header("x-origin"), Some("o"));
    assert_eq!(rate(&r).map(|(l, rem, _)| (l, rem)), Some((10, 9)));
    // A miss, then hits: each with its own numbers, never the stored ones.
    let r = c.get("/prod/cached");
    assert_eq!(r.header("x-cache-status"), Some("Miss"));
    assert_eq!(rate(&r).map(|(l, rem, _)| (l, rem)), Some((10, 9)));
    for left in [8, 7] {
        let r = c.get("/prod/cached");
        assert_eq!(r.header("x-cache-status"), Some("Hit"));
        assert_eq!(r.text(), "hello, world\n");
        assert_eq!(r.header_all("ratelimit-remaining"), [left.to_string()]);
    }
}

#[test]
fn per_client_buckets_throttle_each_address_apart() {
    let routes = mock_route(
        "GET /a",
        "a",
        "client_throttle = { rate = 0.001, burst = 2 }",
    );
    let srv = TestServer::start(&config("[throttle]\nheaders = true", "", &routes));
    let one = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let two = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut a = Client::connect_from(one, srv.addr());
    for left in [1, 0] {
        let r = a.get("/prod/a");
        assert_eq!(r.status, 200);
        // The client's bucket is the most restrictive level.
        assert_eq!(rate(&r).map(|(l, rem, _)| (l, rem)), Some((2, left)));
    }
    let r = a.get("/prod/a");
    assert_throttled(&r);
    assert_eq!(r.header("ratelimit-limit"), Some("2"));
    assert_eq!(retry_after(&r), Some(1000));
    // Another address has a bucket of its own...
    let mut b = Client::connect_from(two, srv.addr());
    assert_eq!(b.get("/prod/a").status, 200);
    assert_eq!(b.get("/prod/a").status, 200);
    assert_eq!(b.get("/prod/a").status, 429);
    // ... and a new connection from the first address does not.
    let mut a2 = Client::connect_from(one, srv.addr());
    assert_eq!(a2.get("/prod/a").status, 429);
    assert_eq!(srv.server().snapshot().client_table_count(), 1);
}

#[test]
fn a_later_refusal_gives_the_client_token_back_and_reloads_keep_the_table() {
    let text = |stage: &str, body: &str| {
        config(
            "[throttle]\nrate = -1",
            stage,
            &mock_route(
                "GET /a",
                body,
                "client_throttle = { rate = 0.001, burst = 2 }",
            ),
        )
    };
    let limited = "route_throttle = { \"GET /a\" = { rate = 0.001, burst = 3 } }";
    let srv = TestServer::start(&text(limited, "a"));
    let one = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    let two = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut a = Client::connect_from(one, srv.addr());
    let mut b = Client::connect_from(two, srv.addr());
    assert_eq!(a.get("/prod/a").status, 200);
    assert_eq!(a.get("/prod/a").status, 200);
    // The route has one token left: b takes it, then the route refuses b,
    // and b's own token comes back.
    assert_eq!(b.get("/prod/a").status, 200);
    assert_eq!(b.get("/prod/a").status, 429);
    // Without the route's limit (another body too), the per-client table
    // is carried: a's bucket is still empty, b has the one left.
    srv.server()
        .control()
        .apply_config(ringgate::config::parse(&text("", "a2"), "t.toml").unwrap())
        .unwrap();
    assert_eq!(a.get("/prod/a").status, 429);
    let r = b.get("/prod/a");
    assert_eq!((r.status, r.text().as_str()), (200, "a2"));
    assert_eq!(b.get("/prod/a").status, 429);
}

#[test]
fn idle_client_buckets_are_swept_and_busy_ones_kept() {
    let routes = format!(
        "{}{}",
        mock_route(
            "GET /a",
            "a",
            "client_throttle = { rate = 1000, burst = 1 }"
        ),
        mock_route(
            "GET /b",
            "b",
            "client_throttle = { rate = 0.001, burst = 2 }"
        ),
    );
    let srv = TestServer::start(&config("", "", &routes));
    let mut c = srv.client();
    assert_eq!(c.get("/prod/a").status, 200);
    assert_eq!(c.get("/prod/b").status, 200);
    let snapshot = srv.server().snapshot();
    assert_eq!(snapshot.client_table_count(), 2);
    // /a's bucket is full again after 1 ms: idle, so swept (unless the
    // server's own sweeper got there first); /b's is not.
    std::thread::sleep(Duration::from_millis(5));
    let swept = snapshot.sweep_client_buckets(ringgate::throttle::now_ns());
    assert!(swept <= 1, "{swept}");
    assert_eq!(
        snapshot.sweep_client_buckets(ringgate::throttle::now_ns()),
        0
    );
    // /b's state survived the sweeps: one token left.
    assert_eq!(c.get("/prod/b").status, 200);
    assert_eq!(c.get("/prod/b").status, 429);
}

fn keyed_config(key_source: &str, route_extra: &str, upstream: &str, stage: &str) -> String {
    let routes = format!(
        "{}  [[api.route]]\n  route = \"GET /echo\"\n  api_key_required = true\n  {route_extra}\n  \
         http_proxy = {{ uri = \"http://{upstream}/echo\" }}\n",
        mock_route("GET /k", "k", "api_key_required = true"),
    );
    let top = format!(
        "{key_source}\n\
         [[api_key]]\nname = \"alice\"\nvalue = \"{KEY_A}\"\n\
         [[api_key]]\nname = \"bob\"\nvalue = \"{KEY_B}\"\n\
         [[usage_plan]]\nname = \"gold\"\nkeys = [\"alice\", \"bob\"]\n\
         [[usage_plan.stage]]\napi = \"t\"\nstage = \"prod\"\n"
    );
    config(&top, stage, &routes)
}

fn get_with(c: &mut Client, target: &str, headers: &str) -> Response {
    c.request(format!(
        "GET {target} HTTP/1.1\r\nHost: test\r\n{headers}\r\n"
    ))
}

#[test]
fn api_keys_from_another_header_or_a_query_parameter() {
    let upstream = closed_port();
    let srv = TestServer::start(&keyed_config(
        "[key_source]\nheader = \"X-Client-Key\"\nquery = \"apikey\"",
        "",
        &upstream.to_string(),
        "",
    ));
    let mut c = srv.client();
    let forbidden = |r: Response| r.assert_gateway_error(403, r#"{"message":"Forbidden"}"#);
    let r = get_with(&mut c, "/prod/k", &format!("x-client-key: {KEY_A}\r\n"));
    assert_eq!((r.status, r.text().as_str()), (200, "k"));
    // The default header is no longer read.
    forbidden(get_with(
        &mut c,
        "/prod/k",
        &format!("x-api-key: {KEY_A}\r\n"),
    ));
    forbidden(get_with(&mut c, "/prod/k", ""));
    let r = get_with(&mut c, &format!("/prod/k?a=1&apikey={KEY_B}"), "");
    assert_eq!(r.status, 200);
    // Percent-encoded: decoded before the lookup ('-' as %2D, 'a' as %61).
    let encoded = KEY_A.replace('-', "%2D").replacen('a', "%61", 1);
    let r = get_with(&mut c, &format!("/prod/k?apikey={encoded}"), "");
    assert_eq!(r.status, 200);
    forbidden(get_with(&mut c, "/prod/k?apikey=alice%2", ""));
    forbidden(get_with(&mut c, &format!("/prod/k?key={KEY_A}"), ""));
    // The header wins over the query.
    forbidden(get_with(
        &mut c,
        &format!("/prod/k?apikey={KEY_A}"),
        "x-client-key: nope-nope-nope-nope-nope\r\n",
    ));
}

/// The echo origin's view of a request: its query and header names.
fn echoed(r: &Response) -> (String, String) {
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.text();
    let query = body
        .split("\"query\":")
        .nth(1)
        .and_then(|s| s.split(",\"version\"").next())
        .unwrap()
        .to_string();
    (query, body)
}

#[test]
fn a_hidden_key_never_reaches_the_backend() {
    let origin = Origin::start("o");
    let up = origin.addr().to_string();
    let ks = "[key_source]\nheader = \"x-client-key\"\nquery = \"apikey\"";
    // hide = false: the backend sees what the client sent.
    let srv = TestServer::start(&keyed_config(ks, "", &up, ""));
    let mut c = srv.client();
    let r = get_with(&mut c, &format!("/prod/echo?a=1&apikey={KEY_A}&b=2"), "");
    let (query, _) = echoed(&r);
    assert_eq!(query, format!("\"a=1&apikey={KEY_A}&b=2\""));
    let r = get_with(&mut c, "/prod/echo", &format!("X-Client-Key: {KEY_A}\r\n"));
    assert!(echoed(&r).1.contains(KEY_A));
    drop(srv);

    // hide = true: neither the header nor the parameter goes through; the
    // rest of the query does, byte for byte.
    let srv = TestServer::start(&keyed_config(&format!("{ks}\nhide = true"), "", &up, ""));
    let mut c = srv.client();
    let r = get_with(&mut c, &format!("/prod/echo?a=1&apikey={KEY_A}&b=2"), "");
    let (query, body) = echoed(&r);
    assert_eq!(query, "\"a=1&b=2\"");
    assert!(!body.contains(KEY_A), "{body}");
    let r = get_with(&mut c, &format!("/prod/echo?apikey={KEY_A}"), "");
    assert_eq!(echoed(&r).0, "null");
    let r = get_with(
        &mut c,
        "/prod/echo?x=%41",
        &format!("X-Client-Key: {KEY_A}\r\nx-other: 1\r\n"),
    );
    let (query, body) = echoed(&r);
    assert_eq!(query, "\"x=%41\"");
    assert!(!body.contains(KEY_A), "{body}");
    assert!(
        !body.to_ascii_lowercase().contains("x-client-key"),
        "{body}"
    );
    assert!(body.contains("\"x-other\""), "{body}");
}

#[test]
fn a_hidden_query_key_is_left_out_of_a_whole_query_cache_key() {
    let backend =
        StubBackend::start(|_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec());
    let ks = "[key_source]\nquery = \"apikey\"\nhide = true";
    let srv = TestServer::start(&keyed_config(
        ks,
        "cache = { ttl = \"60s\", key_parameters = [\"querystring.*\"] }",
        &backend.addr().to_string(),
        "cache = { status_header = true }",
    ));
    let mut c = srv.client();
    let status = |r: &Response| r.header("x-cache-status").map(str::to_string);
    let r = get_with(&mut c, &format!("/prod/echo?q=1&apikey={KEY_A}"), "");
    assert_eq!(status(&r).as_deref(), Some("Miss"));
    // Another key, the same other parameters: the same entry.
    let r = get_with(&mut c, &format!("/prod/echo?apikey={KEY_B}&q=1"), "");
    assert_eq!(status(&r).as_deref(), Some("Hit"));
    let r = get_with(&mut c, "/prod/echo?q=2", &format!("x-api-key: {KEY_A}\r\n"));
    assert_eq!(status(&r).as_deref(), Some("Miss"));
    let heads = backend.heads();
    assert_eq!(heads.len(), 2);
    assert!(
        heads[0].starts_with("GET /echo?q=1 HTTP/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        !heads[1].to_ascii_lowercase().contains("x-api-key"),
        "{heads:?}"
    );
}

// --- allocation --------------------------------------------------------------

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if TRACKED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_requests_with_headers_client_buckets_and_hidden_keys_allocate_nothing() {
    // Only this test's server marks its worker thread as counted.
    let backend =
        StubBackend::start(|_| b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec());
    let many = "client_throttle = { rate = 1000000, burst = 1000000 }";
    let routes = format!(
        "{}  [[api.route]]\n  route = \"GET /p\"\n  {many}\n  api_key_required = true\n  \
         http_proxy = {{ uri = \"http://{}/p\" }}\n",
        mock_route("GET /m/{id}", "m {id}", many),
        backend.addr()
    );
    let top = format!(
        "[throttle]\nrate = 1000000\nburst = 1000000\nheaders = true\n\
         [key_source]\nheader = \"x-client-key\"\nquery = \"apikey\"\nhide = true\n\
         [[api_key]]\nname = \"alice\"\nvalue = \"{KEY_A}\"\n\
         [[usage_plan]]\nname = \"gold\"\nkeys = [\"alice\"]\n\
         [[usage_plan.stage]]\napi = \"t\"\nstage = \"prod\"\n"
    );
    let cfg = ringgate::config::parse(&config(&top, "", &routes), "t.toml").unwrap();
    let options = StartOptions {
        on_worker_start: Some(Arc::new(|_| TRACKED.with(|t| t.set(true)))),
        ..StartOptions::default()
    };
    let srv = TestServer::start_config(cfg, options);
    let mut c = srv.client();
    let encoded = KEY_A.replacen('a', "%61", 1);
    let mut round = |i: usize| {
        let r = c.get(&format!("/prod/m/{i}"));
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit-remaining").is_some());
        let r = get_with(&mut c, &format!("/prod/p?x=1&apikey={encoded}"), "");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        let r = get_with(&mut c, "/prod/p", &format!("x-client-key: {KEY_A}\r\n"));
        assert_eq!(r.status, 200);
        3
    };
    for i in 0..200 {
        round(i);
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    assert!(before > 0, "the counter is not wired");
    let mut sent = 0;
    let mut i = 0;
    while sent < 3_000 {
        sent += round(1000 + i);
        i += 1;
    }
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    println!("allocations on the worker: {allocations} over {sent} warm requests");
    assert_eq!(allocations, 0, "the warm opt-in path allocated");
    assert_eq!(backend.heads().len(), 200 * 2 + sent / 3 * 2);
    assert!(backend.heads().iter().all(|h| !h.contains(KEY_A)));
}
