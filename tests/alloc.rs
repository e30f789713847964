//! Does serving a request allocate once a connection is warm?
//!
//! A counting global allocator (around mimalloc, as the binary uses) counts
//! allocations made on the gateway's worker thread only: the worker marks
//! itself through `StartOptions::on_worker_start`. After a warm-up:
//! - 10,000 keep-alive requests on mock routes — GETs with a path parameter
//!   spliced into the body, HEADs, POSTs with Content-Length and chunked
//!   bodies, unmatched routes — must allocate zero times;
//! - 10,000 proxied requests (GET, and POST with a body, over the worker's
//!   pooled backend connection) must allocate zero times;
//! - 10,000 stage-cache hits in the RFC 9111 mode (with 304s, 206s and
//!   `Vary` variants answered from the cache) must allocate nothing;
//! - 10,000 stage-cache hits (GET and HEAD, small and 64 KiB bodies) must
//!   allocate zero times.
//!
//! Counts are stable where timings are not, so they may be asserted. The
//! tests share one counter, so they take a lock and run one at a time.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mimalloc::MiMalloc;
use ringgate::server::{Server, StartOptions};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

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

/// One worker, unpinned, on an OS-assigned port: the one thread counted.
const SERVER: &str = r#"
[server]
listen = ["127.0.0.1:0"]
workers = 1
pin_workers = false
"#;

const CONFIG: &str = r#"
[[api]]
name = "alloc"

  [[api.stage]]
  name = "prod"
  variables = { env = "production" }

  [[api.route]]
  route = "GET /items/{id}"
  [api.route.mock]
  headers = { "content-type" = "application/json" }
  body = '{"id":"{id}","env":"${stageVariables.env}"}'

  [[api.route]]
  route = "POST /items"
  [api.route.mock]
  status = 201
  body = "created"
"#;

/// Reads one response; returns its status. Handles Content-Length bodies
/// (all this test's responses have one).
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> u16 {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap().to_string();
            let status: u16 = head[9..12].parse().unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            let total = end + 4 + if head_only { 0 } else { len };
            while buf.len() < total {
                fill(stream, buf);
            }
            buf.drain(..total);
            return status;
        }
        fill(stream, buf);
    }
}

fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).unwrap();
    assert!(n > 0, "server closed the connection");
    buf.extend_from_slice(&chunk[..n]);
}

/// One round of the request mix; returns the number of requests sent.
fn round(stream: &mut TcpStream, buf: &mut Vec<u8>, i: usize) -> usize {
    let get = format!("GET /prod/items/{i} HTTP/1.1\r\nHost: a\r\n\r\n");
    stream.write_all(get.as_bytes()).unwrap();
    assert_eq!(read_response(stream, buf, false), 200);
    stream
        .write_all(b"HEAD /prod/items/7 HTTP/1.1\r\nHost: a\r\nx-request-id: client-id-1\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(stream, buf, true), 200);
    stream
        .write_all(b"POST /prod/items HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    assert_eq!(read_response(stream, buf, false), 201);
    stream
        .write_all(b"POST /prod/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(stream, buf, false), 201);
    stream
        .write_all(b"GET /prod/nowhere HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(stream, buf, false), 403);
    5
}

/// Starts `config` with one tracked worker, runs `exchange` 200 times to
/// warm up and then until 10,000 requests have been answered, and returns
/// (allocations on the worker after warm-up, requests). `exchange` sends
/// one round on the connection and returns how many requests it made.
fn measure(
    config: &str,
    mut exchange: impl FnMut(&mut TcpStream, &mut Vec<u8>, usize) -> usize,
) -> (u64, usize) {
    let config = ringgate::config::parse(config, "alloc.toml").unwrap();
    let options = StartOptions {
        on_worker_start: Some(Arc::new(|_| TRACKED.with(|t| t.set(true)))),
        ..StartOptions::default()
    };
    let server = Server::start(config, options).unwrap();
    let addr = server.local_addrs()[0];
    let at_start = ALLOCATIONS.load(Ordering::SeqCst);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buf = Vec::with_capacity(64 * 1024);
    for i in 0..200 {
        exchange(&mut stream, &mut buf, i);
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    // The counter sees the worker: accepting a connection (task, buffers)
    // allocates, so the warm-up must have counted something.
    assert!(
        before > at_start,
        "no allocation counted on the worker during warm-up: the counter is not wired"
    );
    let mut sent = 0;
    let mut i = 0;
    while sent < 10_000 {
        sent += exchange(&mut stream, &mut buf, 1000 + i);
        i += 1;
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    drop(stream);
    server.shutdown();
    server.join();
    (after - before, sent)
}

fn report(what: &str, allocations: u64, sent: usize) {
    println!(
        "allocations on the worker: {allocations} over {sent} warm {what} ({:.4} per request)",
        allocations as f64 / sent as f64
    );
}

#[test]
fn warm_mock_requests_allocate_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (allocations, sent) = measure(&format!("{SERVER}{CONFIG}"), round);
    report("keep-alive mock requests", allocations, sent);
    assert_eq!(allocations, 0, "the warm mock path allocated");
}

/// A minimal keep-alive origin on its own thread (not counted): answers
/// every request with a fixed 200, reading Content-Length bodies.
fn start_origin() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            s.set_nodelay(true).unwrap();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + 4 + len {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    let big = vec![b'x'; 65536];
                    let body: &[u8] = if head.contains("/items/big") {
                        &big
                    } else {
                        b"proxied hello"
                    };
                    // Freshness and a validator for the RFC 9111 mode (the
                    // API Gateway mode ignores them).
                    let vary = if head.contains("/items/vary") {
                        "Vary: Accept-Encoding\r\n"
                    } else {
                        ""
                    };
                    let mut resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\
                         Cache-Control: max-age=3600\r\nETag: \"v1\"\r\n{vary}Content-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    resp.extend_from_slice(body);
                    if s.write_all(&resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn warm_proxied_requests_allocate_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let origin = start_origin();
    let config = format!(
        r#"{SERVER}
[[api]]
name = "proxy"
  [[api.stage]]
  name = "prod"
  [[api.route]]
  route = "ANY /{{proxy+}}"
  [api.route.http_proxy]
  uri = "http://{origin}/{{proxy}}"
"#
    );
    let exchange = |stream: &mut TcpStream, buf: &mut Vec<u8>, i: usize| {
        let get = format!(
            "GET /prod/items/{i}?q=1 HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
        );
        stream.write_all(get.as_bytes()).unwrap();
        assert_eq!(read_response(stream, buf, false), 200);
        stream
            .write_all(b"POST /prod/items HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap();
        assert_eq!(read_response(stream, buf, false), 200);
        2
    };
    let (allocations, sent) = measure(&config, exchange);
    report("proxied requests", allocations, sent);
    assert_eq!(allocations, 0, "the warm proxy path allocated");
}

#[test]
fn warm_cache_hits_allocate_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let origin = start_origin();
    let config = format!(
        r#"{SERVER}
[[api]]
name = "cached"
  [[api.stage]]
  name = "prod"
    [api.stage.cache]
    capacity = "64MiB"
    ttl = "3600s"
    status_header = true
  [[api.route]]
  route = "GET /items/{{id}}"
  [api.route.http_proxy]
  uri = "http://{origin}/items/{{id}}"
    [api.route.cache]
    key_parameters = ["path.id"]
"#
    );
    let exchange = |stream: &mut TcpStream, buf: &mut Vec<u8>, i: usize| {
        let get = format!("GET /prod/items/{} HTTP/1.1\r\nHost: a\r\n\r\n", i % 8);
        stream.write_all(get.as_bytes()).unwrap();
        assert_eq!(read_response(stream, buf, false), 200);
        let head = format!("HEAD /prod/items/{} HTTP/1.1\r\nHost: a\r\n\r\n", i % 8);
        stream.write_all(head.as_bytes()).unwrap();
        assert_eq!(read_response(stream, buf, true), 200);
        // A 64 KiB body: written from the entry's shared bytes.
        stream
            .write_all(b"GET /prod/items/big HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(stream, buf, false), 200);
        3
    };
    let (allocations, sent) = measure(&config, exchange);
    report("cache hits", allocations, sent);
    assert_eq!(allocations, 0, "the warm cache-hit path allocated");
}

/// The RFC 9111 mode: hits with the stored Date and an Age, and clients'
/// conditional requests answered 304 from the cache, allocate nothing.
#[test]
fn warm_rfc_mode_hits_and_304s_allocate_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let origin = start_origin();
    let config = format!(
        r#"{SERVER}
[[api]]
name = "cached"
  [[api.stage]]
  name = "prod"
    [api.stage.cache]
    capacity = "64MiB"
    status_header = true
    respect_origin_cache_control = true
  [[api.route]]
  route = "GET /items/{{id}}"
  [api.route.http_proxy]
  uri = "http://{origin}/items/{{id}}"
    [api.route.cache]
    key_parameters = ["path.id"]
"#
    );
    let exchange = |stream: &mut TcpStream, buf: &mut Vec<u8>, i: usize| {
        let get = format!("GET /prod/items/{} HTTP/1.1\r\nHost: a\r\n\r\n", i % 8);
        stream.write_all(get.as_bytes()).unwrap();
        assert_eq!(read_response(stream, buf, false), 200);
        let head = format!("HEAD /prod/items/{} HTTP/1.1\r\nHost: a\r\n\r\n", i % 8);
        stream.write_all(head.as_bytes()).unwrap();
        assert_eq!(read_response(stream, buf, true), 200);
        let cond = format!(
            "GET /prod/items/{} HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"v0\", \"v1\"\r\n\r\n",
            i % 8
        );
        stream.write_all(cond.as_bytes()).unwrap();
        assert_eq!(read_response(stream, buf, false), 304);
        stream
            .write_all(b"GET /prod/items/big HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(stream, buf, false), 200);
        // Ranges: a small slice (copied) and a large one (shared bytes).
        let range = format!(
            "GET /prod/items/{} HTTP/1.1\r\nHost: a\r\nRange: bytes=2-5\r\n\r\n",
            i % 8
        );
        stream.write_all(range.as_bytes()).unwrap();
        assert_eq!(read_response(stream, buf, false), 206);
        stream
            .write_all(b"GET /prod/items/big HTTP/1.1\r\nHost: a\r\nRange: bytes=100-\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(stream, buf, false), 206);
        // A variant (the origin varies on Accept-Encoding): found through
        // the URL's marker.
        let enc = ["gzip", "br"][i % 2];
        let vary =
            format!("GET /prod/items/vary HTTP/1.1\r\nHost: a\r\nAccept-Encoding: {enc}\r\n\r\n");
        stream.write_all(vary.as_bytes()).unwrap();
        assert_eq!(read_response(stream, buf, false), 200);
        7
    };
    let (allocations, sent) = measure(&config, exchange);
    report("RFC-mode cache hits and 304s", allocations, sent);
    assert_eq!(allocations, 0, "the warm RFC-mode hit path allocated");
}

/// The mock route behind an API key in a usage plan with a monthly quota,
/// with a stage limit and the account limit: the key lookup, every throttle
/// level, the quota check and the usage count run on each request (limits
/// no request reaches).
#[test]
fn warm_requests_with_a_key_and_a_plan_allocate_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = format!(
        "{SERVER}[throttle]\nrate = 1000000000\nburst = 1000000000\n{}\n\
         [[api_key]]\nname = \"k\"\nvalue = \"key-0123456789abcdefgh\"\n\
         [[usage_plan]]\nname = \"p\"\nthrottle = {{ rate = 1000000000, burst = 1000000000 }}\n\
         quota = {{ limit = 1000000000, period = \"MONTH\" }}\n\
         keys = [\"k\"]\n[[usage_plan.stage]]\napi = \"alloc\"\nstage = \"prod\"\n\
         route_throttle = {{ \"GET /items/{{id}}\" = {{ rate = 1000000000, burst = 1000000000 }} }}\n",
        CONFIG
            .replace(
                "route = \"GET /items/{id}\"",
                "route = \"GET /items/{id}\"\n  api_key_required = true"
            )
            .replace(
                "name = \"prod\"",
                "name = \"prod\"\n  throttle = { rate = 1000000000, burst = 1000000000 }"
            )
    );
    let keyed = |stream: &mut TcpStream, buf: &mut Vec<u8>, i: usize| {
        let get = format!(
            "GET /prod/items/{i} HTTP/1.1\r\nHost: a\r\nx-api-key: key-0123456789abcdefgh\r\n\r\n"
        );
        stream.write_all(get.as_bytes()).unwrap();
        assert_eq!(read_response(stream, buf, false), 200);
        1
    };
    let (allocations, sent) = measure(&config, keyed);
    report("requests with an API key and a plan", allocations, sent);
    assert_eq!(allocations, 0, "the keyed, throttled path allocated");
}

/// Metrics by route (`detailed_metrics`) and an access log in the JSON
/// preset written to a file: a mock, a proxied request and a cache hit on
/// each round, every one counted, timed and logged.
#[test]
fn warm_requests_with_metrics_and_an_access_log_allocate_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let origin = start_origin();
    let log = std::env::temp_dir().join(format!("ringgate-alloc-{}.log", std::process::id()));
    let config = format!(
        r#"{SERVER}
[access_log]
path = "{log}"
format = "json"

[[api]]
name = "observed"
  [[api.stage]]
  name = "prod"
  detailed_metrics = true
    [api.stage.cache]
    capacity = "64MiB"
    ttl = "3600s"
  [[api.route]]
  route = "GET /mock/{{id}}"
  mock = {{ body = "m {{id}}" }}
  [[api.route]]
  route = "GET /up/{{id}}"
  http_proxy = {{ uri = "http://{origin}/items/{{id}}" }}
  cache = {{ enabled = false }}
  [[api.route]]
  route = "GET /cached/{{id}}"
  http_proxy = {{ uri = "http://{origin}/items/{{id}}" }}
  cache = {{ key_parameters = ["path.id"] }}
"#,
        log = log.display()
    );
    let exchange = |stream: &mut TcpStream, buf: &mut Vec<u8>, i: usize| {
        for path in [
            format!("/prod/mock/{i}"),
            format!("/prod/up/{i}"),
            format!("/prod/cached/{}", i % 8),
        ] {
            let get = format!("GET {path} HTTP/1.1\r\nHost: a\r\nUser-Agent: alloc\r\n\r\n");
            stream.write_all(get.as_bytes()).unwrap();
            assert_eq!(read_response(stream, buf, false), 200);
        }
        3
    };
    let (allocations, sent) = measure(&config, exchange);
    report("requests with metrics and an access log", allocations, sent);
    let lines = std::fs::read_to_string(&log)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&log);
    assert_eq!(allocations, 0, "metrics or the access log allocated");
    // Every request was logged (the server flushed as it stopped).
    assert!(lines >= sent, "{lines} lines for {sent} requests");
}
