//! The `http_proxy` integration end to end: ringgate in front of
//! `ringgate-origin` (and small stub backends): URI substitution, balancing,
//! passive and active health, pooling, header rewriting, streaming, framing,
//! backend failures, WebSocket pass-through and the body limit.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use support::ws::{masked_frame, upgrade_request, ws_accept};
use support::{
    closed_port, fnv1a_hex, pattern, rss_kib, tcp_connections_with_port, BinaryServer, Client,
    Echo, Fnv1a, Origin, Response, StubBackend, TestServer, SERVER,
};

const NET_ERROR: &str = r#"{"message": "Network error communicating with endpoint"}"#;
const TIMED_OUT: &str = r#"{"message": "Endpoint request timed out"}"#;
const INTERNAL: &str = r#"{"message": "Internal server error"}"#;

// --- configuration helpers ---------------------------------------------------

/// One `[[upstream]]`; `extra` is TOML lines (keys first, then sub-tables).
fn upstream(name: &str, targets: &[SocketAddr], extra: &str) -> String {
    let t: Vec<String> = targets.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[upstream]]\nname = \"{name}\"\ntargets = [{}]\n{extra}\n",
        t.join(", ")
    )
}

/// An `[[api]]` with `stages` (name, inline table of variables or "") and
/// `http_proxy` routes (route key, uri, extra lines of the http_proxy table).
fn api(stages: &[(&str, &str)], routes: &[(&str, &str, &str)]) -> String {
    let mut s = String::from("[[api]]\nname = \"p\"\n");
    for (name, vars) in stages {
        s += &format!("  [[api.stage]]\n  name = \"{name}\"\n");
        if !vars.is_empty() {
            s += &format!("  variables = {vars}\n");
        }
    }
    for (route, uri, extra) in routes {
        s += &format!(
            "  [[api.route]]\n  route = \"{route}\"\n  [api.route.http_proxy]\n  uri = \"{uri}\"\n{extra}\n"
        );
    }
    s
}

fn gateway(before_api: &str, api: &str) -> TestServer {
    TestServer::start(&format!("{SERVER}{before_api}{api}"))
}

/// Stage `prod` and `ANY /{proxy+}` to `base/{proxy}`.
fn greedy(base: &str) -> String {
    api(
        &[("prod", "")],
        &[("ANY /{proxy+}", &format!("{base}/{{proxy}}"), "")],
    )
}

fn echo_of(r: &Response) -> Echo {
    assert_eq!(r.status, 200, "{r:?}");
    Echo::parse(&r.body)
}

fn origin_of(r: &Response) -> &str {
    r.header("x-origin")
        .unwrap_or_else(|| panic!("no x-origin: {r:?}"))
}

/// Asserts the client connection still carries a request.
fn assert_usable(c: &mut Client, path: &str) {
    let r = c.get(path);
    assert_eq!(
        r.status, 200,
        "connection not usable after a failure: {r:?}"
    );
}

/// Polls `f` until it returns true or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

// --- 1. substitution -----------------------------------------------------------

#[test]
fn params_greedy_path_stage_variables_method_and_query_pass_through() {
    let a = Origin::start("A");
    let b = Origin::start("B");
    let b_vars = format!("{{ backend = \"{}\" }}", b.addr());
    let toml = api(
        &[
            ("sa", "{ backend = \"ua\" }"), // an [[upstream]] name
            ("sb", &b_vars),                // a host:port
            ("none", "{ other = \"x\" }"),  // lacks `backend`
        ],
        &[
            (
                "GET /items/{id}",
                "http://${stageVariables.backend}/echo/items/{id}?from=template",
                "",
            ),
            (
                "ANY /{proxy+}",
                "http://${stageVariables.backend}/{proxy}",
                "",
            ),
        ],
    );
    let gw = gateway(&upstream("ua", &[a.addr()], ""), &toml);
    let mut c = gw.client();

    let r = c.get("/sa/items/42?x=1");
    assert_eq!(origin_of(&r), "A");
    let e = echo_of(&r);
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.query.as_deref()),
        ("GET", "/echo/items/42", Some("from=template&x=1"))
    );

    let r = c
        .request("POST /sa/echo/a/b?x=1&y=2 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(origin_of(&r), "A");
    let e = echo_of(&r);
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.query.as_deref()),
        ("POST", "/echo/a/b", Some("x=1&y=2"))
    );
    assert_eq!((e.body_len, e.body_sha), (5, fnv1a_hex(b"hello")));

    let r = c.request("DELETE /sb/echo/z HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(origin_of(&r), "B");
    let e = echo_of(&r);
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.query.as_deref()),
        ("DELETE", "/echo/z", None)
    );

    let r = c.get("/sb/items/7");
    assert_eq!(origin_of(&r), "B");
    let e = echo_of(&r);
    assert_eq!(
        (e.path.as_str(), e.query.as_deref()),
        ("/echo/items/7", Some("from=template"))
    );

    // The stage lacks the variable: 500, connection kept.
    let r = c.get("/none/echo");
    r.assert_gateway_error(500, INTERNAL);
    assert_eq!(r.header("connection"), None, "{r:?}");
    let r = c.get("/sa/echo");
    assert_eq!(origin_of(&r), "A");
    assert_eq!(a.count(), 3);
    assert_eq!(b.count(), 2);
}

// --- 2. balancing --------------------------------------------------------------

#[test]
fn round_robin_alternates_between_two_targets() {
    let a = Origin::start("A");
    let b = Origin::start("B");
    let gw = gateway(
        &upstream("pair", &[a.addr(), b.addr()], "balance = \"round_robin\""),
        &greedy("http://pair"),
    );
    let mut c = gw.client();
    let names: Vec<String> = (0..10)
        .map(|_| origin_of(&c.get("/prod/hello")).to_string())
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "A").count(), 5, "{names:?}");
    assert_eq!(names.iter().filter(|n| *n == "B").count(), 5, "{names:?}");
    assert!(names.windows(2).all(|w| w[0] != w[1]), "{names:?}");
}

#[test]
fn least_outstanding_avoids_the_busy_target() {
    let a = Origin::start("A");
    let b = Origin::start("B");
    let gw = gateway(
        &upstream(
            "pair",
            &[a.addr(), b.addr()],
            "balance = \"least_outstanding\"",
        ),
        &greedy("http://pair"),
    );
    let mut slow = gw.client();
    slow.send("GET /prod/slow/1500 HTTP/1.1\r\nHost: t\r\n\r\n");
    // Readiness: the slow request has reached one of the origins.
    let mut busy = String::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            for o in [&a, &b] {
                if o.count() == 1 {
                    busy = o.name().to_string();
                    return true;
                }
            }
            false
        }),
        "the slow request reached no origin"
    );
    let idle = if busy == "A" { "B" } else { "A" };
    let mut c = gw.client();
    for i in 0..6 {
        let r = c.get("/prod/hello");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(origin_of(&r), idle, "request {i} went to the busy target");
    }
    let r = slow.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "slow\n"), "{r:?}");
    assert_eq!(origin_of(&r), busy);
}

// --- 3. passive and active health ----------------------------------------------

#[test]
fn passive_ejection_and_return_after_ejection_time() {
    let a = Origin::start("A");
    let dead = closed_port();
    let gw = gateway(
        &upstream(
            "g",
            &[a.addr(), dead],
            "balance = \"round_robin\"\n[upstream.passive_health]\nmax_failures = 2\nejection_time = \"1s\"",
        ),
        &greedy("http://g"),
    );
    let mut c = gw.client();
    let mut statuses = Vec::new();
    let mut last_failure = Instant::now();
    for _ in 0..10 {
        let r = c.get("/prod/hello");
        if r.status == 504 {
            r.assert_gateway_error(504, NET_ERROR);
            last_failure = Instant::now();
        } else {
            assert_eq!((r.status, origin_of(&r)), (200, "A"), "{r:?}");
        }
        statuses.push(r.status);
    }
    let failures = statuses.iter().filter(|s| **s == 504).count();
    assert!((1..=2).contains(&failures), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 200), "{statuses:?}");

    // Bring the dead target back; it must stay out until the ejection ends,
    // then get traffic again.
    let d = Origin::try_start_on(&[dead], "D").expect("restart on the freed port");
    let mut first_d = None;
    let deadline = last_failure + Duration::from_secs(4);
    while Instant::now() < deadline && first_d.is_none() {
        let r = c.get("/prod/hello");
        assert_eq!(r.status, 200, "{r:?}");
        if origin_of(&r) == "D" {
            first_d = Some(last_failure.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = first_d.expect("the ejected target never received traffic again");
    assert!(
        after >= Duration::from_millis(700),
        "ejected target used again after only {after:?}"
    );
    assert!(d.count() >= 1);
}

#[test]
fn failing_active_health_check_takes_a_target_out() {
    let a = Origin::start("A");
    let sick = Arc::new(AtomicBool::new(false));
    let flag = sick.clone();
    let stub = StubBackend::start(move |_| {
        if flag.load(Ordering::Relaxed) {
            b"HTTP/1.1 500 Internal Server Error\r\nx-origin: S\r\ncontent-length: 5\r\n\r\nsick\n"
                .to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\nx-origin: S\r\ncontent-length: 3\r\n\r\nok\n".to_vec()
        }
    });
    // The check path is /hello: the origin answers it 200, the stub 200 or
    // 500 as told (one path, one target failing).
    let gw = gateway(
        &upstream(
            "g",
            &[a.addr(), stub.addr()],
            "balance = \"round_robin\"\n[upstream.health_check]\npath = \"/hello\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1",
        ),
        &greedy("http://g"),
    );
    let mut c = gw.client();
    let names: Vec<String> = (0..4)
        .map(|_| origin_of(&c.get("/prod/hello")).to_string())
        .collect();
    assert_eq!(names, ["A", "S", "A", "S"].map(String::from).to_vec());

    sick.store(true, Ordering::Relaxed);
    let flipped = Instant::now();
    let out = eventually(Duration::from_millis(2500), || {
        (0..4).all(|_| {
            let r = c.get("/prod/hello");
            r.status == 200 && origin_of(&r) == "A"
        })
    });
    assert!(out, "the failing target still gets traffic");
    eprintln!("unhealthy target out after {:?}", flipped.elapsed());
    for _ in 0..6 {
        let r = c.get("/prod/hello");
        assert_eq!((r.status, origin_of(&r)), (200, "A"), "{r:?}");
    }
    assert!(stub.heads().iter().any(|h| h.starts_with("GET /hello ")));

    // And back in once the check passes again.
    sick.store(false, Ordering::Relaxed);
    let back = eventually(Duration::from_millis(2500), || {
        (0..2).any(|_| origin_of(&c.get("/prod/hello")) == "S")
    });
    assert!(back, "the recovered target gets no traffic");
}

// --- 4, 5. pooling ---------------------------------------------------------------

#[test]
fn pooled_connections_are_reused_across_requests_and_clients() {
    let a = Origin::start("A");
    let gw = gateway("", &greedy(&format!("http://{}", a.addr())));
    let mut c1 = gw.client();
    let mut c2 = gw.client();
    for i in 0..20 {
        let c = if i < 10 { &mut c1 } else { &mut c2 };
        let r = c.get("/prod/echo");
        let e = echo_of(&r);
        assert_eq!(e.path, "/echo");
        assert_eq!(
            r.header("x-origin-request"),
            Some((i + 1).to_string().as_str())
        );
    }
    let conns = tcp_connections_with_port(a.addr().port());
    assert!(
        (1..=2).contains(&conns),
        "the origin saw {conns} TCP connections for 20 requests"
    );
    assert_eq!(a.count(), 20);
}

#[test]
fn stale_pooled_connection_is_retried_on_a_fresh_one() {
    let a = Origin::start("A");
    let gw = gateway("", &greedy(&format!("http://{}", a.addr())));
    let mut c = gw.client();
    for round in 0..2 {
        let r = c.get("/prod/echo");
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        let r = a.client().get("/admin/close-idle");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "closed 1\n"),
            "round {round}: {r:?}"
        );
        let r = c.get("/prod/echo?after=close");
        assert_eq!(
            r.status, 200,
            "round {round}: stale connection not retried: {r:?}"
        );
        assert_eq!(echo_of(&r).query.as_deref(), Some("after=close"));
    }
    assert_eq!(a.count(), 4);
}

// --- 6. headers ------------------------------------------------------------------

#[test]
fn request_headers_are_rewritten_for_the_backend() {
    let a = Origin::start("A");
    let base = format!("http://{}/echo", a.addr());
    let toml = api(
        &[("prod", "")],
        &[
            ("GET /echo", &base, ""),
            ("GET /host/echo", &base, "  preserve_host = true"),
        ],
    );
    let gw = gateway("", &toml);
    let gw_port = gw.addr().port().to_string();
    let mut c = gw.client();
    let r = c.request(
        "GET /prod/echo?q=1 HTTP/1.1\r\n\
         Host: client.example\r\n\
         Connection: keep-alive, X-Secret\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Upgrade: h2c\r\n\
         Proxy-Authorization: Basic eA==\r\n\
         Proxy-Connection: keep-alive\r\n\
         X-Secret: 1\r\n\
         X-Forwarded-For: 203.0.113.9\r\n\
         X-Forwarded-Proto: https\r\n\
         X-Forwarded-Port: 8443\r\n\
         x-request-id: client-id.123\r\n\
         X-Custom: kept\r\n\r\n",
    );
    r.assert_common_headers();
    assert_eq!(r.header_all("x-request-id"), ["client-id.123"]);
    let e = echo_of(&r);
    for gone in [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "x-secret",
    ] {
        assert!(e.header(gone).is_none(), "{gone} reached the origin: {e:?}");
    }
    let host = a.addr().to_string();
    assert_eq!(e.header_all("host"), [host.as_str()]);
    assert_eq!(e.header_all("x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(e.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(e.header_all("x-forwarded-port"), [gw_port.as_str()]);
    assert_eq!(e.header_all("x-request-id"), ["client-id.123"]);
    assert_eq!(e.header_all("x-custom"), ["kept"]);
    assert_eq!(e.query.as_deref(), Some("q=1"));

    // Two X-Forwarded-For lines, no client id (a generated one goes on), and
    // the client's Host with preserve_host.
    let r = c.request(
        "GET /prod/host/echo HTTP/1.1\r\nHost: client.example\r\n\
         X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-For: 198.51.100.2\r\n\
         x-request-id: not sane!\r\n\r\n",
    );
    let rid = r.header("x-request-id").unwrap().to_string();
    assert_eq!(rid.len(), 36, "{r:?}");
    let e = echo_of(&r);
    assert_eq!(e.header_all("host"), ["client.example"]);
    assert_eq!(
        e.header_all("x-forwarded-for"),
        ["198.51.100.1, 198.51.100.2, 127.0.0.1"]
    );
    assert_eq!(e.header_all("x-request-id"), [rid.as_str()]);
}

#[test]
fn response_headers_are_remapped_for_the_client() {
    let stub = StubBackend::start(|_| {
        b"HTTP/1.1 200 OK\r\n\
          Date: Mon, 01 Jan 2001 00:00:00 GMT\r\n\
          Server: stub/1.0\r\n\
          x-request-id: from-backend\r\n\
          Connection: keep-alive, X-Backend-Secret\r\n\
          Keep-Alive: timeout=5\r\n\
          X-Backend-Secret: s\r\n\
          X-Kept: yes\r\n\
          Content-Length: 2\r\n\r\nok"
            .to_vec()
    });
    let gw = gateway("", &greedy(&format!("http://{}", stub.addr())));
    let mut c = gw.client();
    for _ in 0..2 {
        let r = c.request("GET /prod/x HTTP/1.1\r\nHost: t\r\nx-request-id: rid-1\r\n\r\n");
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{r:?}");
        r.assert_common_headers();
        assert_eq!(r.header_all("date").len(), 1, "{r:?}");
        assert_eq!(r.header_all("server"), ["ringgate"], "{r:?}");
        assert_eq!(r.header_all("x-request-id"), ["rid-1"], "{r:?}");
        assert_eq!(
            r.header_all("x-amzn-Remapped-Date"),
            ["Mon, 01 Jan 2001 00:00:00 GMT"],
            "{r:?}"
        );
        assert_eq!(
            r.header_all("x-amzn-Remapped-Server"),
            ["stub/1.0"],
            "{r:?}"
        );
        assert_eq!(r.header_all("x-kept"), ["yes"], "{r:?}");
        for gone in ["keep-alive", "x-backend-secret", "connection"] {
            assert!(r.header(gone).is_none(), "{gone} reached the client: {r:?}");
        }
    }
}

// --- 7. streaming --------------------------------------------------------------

/// 128 MiB in debug builds (the gateway, the origin and this test's hashing
/// are all unoptimised), 256 MiB in release builds.
const STREAM_BYTES: u64 = (if cfg!(debug_assertions) { 128 } else { 256 }) << 20;
/// Largest RSS growth of the gateway allowed while streaming.
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn stream_gateway(a: &Origin) -> BinaryServer {
    BinaryServer::start(&format!(
        "{SERVER}[limits]\nmax_body_bytes = \"1GiB\"\n{}",
        greedy(&format!("http://{}", a.addr()))
    ))
}

/// Samples a process's RSS until dropped; reports the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Deterministic pseudo-random body bytes, generated block by block.
struct Generator(u64);

impl Generator {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let n = chunk.len();
            chunk.copy_from_slice(&self.0.to_le_bytes()[..n]);
        }
    }
}

fn upload(chunked: bool) {
    let a = Origin::start("A");
    let gw = stream_gateway(&a);
    let mut c = gw.client();
    assert_eq!(c.get("/prod/hello").status, 200); // warm up
    let base = rss_kib(gw.pid());
    let sampler = RssSampler::start(gw.pid());

    let started = Instant::now();
    let n = STREAM_BYTES;
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {n}")
    };
    c.send(format!(
        "POST /prod/echo HTTP/1.1\r\nHost: t\r\n{framing}\r\n\r\n"
    ));
    let mut generator = Generator(0x9E37_79B9_7F4A_7C15);
    let mut hash = Fnv1a::default();
    let sizes = [65_536usize, 1, 4_000, 16_384, 100_000, 7];
    let mut buf = vec![0u8; 100_000];
    let (mut sent, mut i) = (0u64, 0);
    while sent < n {
        let len = (sizes[i % sizes.len()] as u64).min(n - sent) as usize;
        i += 1;
        let block = &mut buf[..len];
        generator.fill(block);
        hash.update(block);
        if chunked {
            c.stream
                .write_all(format!("{len:x}\r\n").as_bytes())
                .unwrap();
            c.stream.write_all(block).unwrap();
            c.stream.write_all(b"\r\n").unwrap();
        } else {
            c.stream.write_all(block).unwrap();
        }
        sent += len as u64;
    }
    if chunked {
        c.stream.write_all(b"0\r\n\r\n").unwrap();
    }
    let r = c.read_response();
    let peak = sampler.finish();
    eprintln!(
        "upload {} MiB chunked={chunked}: {:?}, RSS {base} KiB -> peak {peak} KiB",
        n >> 20,
        started.elapsed()
    );
    let e = echo_of(&r);
    assert_eq!((e.body_len, e.body_sha), (n, hash.hex()));
    assert!(
        peak - base < RSS_BOUND_KIB,
        "gateway RSS grew by {} KiB (bound {RSS_BOUND_KIB} KiB)",
        peak - base
    );
    assert_usable(&mut c, "/prod/hello");
}

#[test]
fn streaming_upload_content_length() {
    upload(false);
}

#[test]
fn streaming_upload_chunked() {
    upload(true);
}

#[test]
fn streaming_download() {
    let a = Origin::start("A");
    let gw = stream_gateway(&a);
    let mut c = gw.client();
    assert_eq!(c.get("/prod/hello").status, 200); // warm up
    let base = rss_kib(gw.pid());
    let sampler = RssSampler::start(gw.pid());
    let started = Instant::now();
    let n = STREAM_BYTES;
    c.send(format!("GET /prod/bytes/{n} HTTP/1.1\r\nHost: t\r\n\r\n"));
    let r = c.read_head_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
    let mut got = 0u64;
    let check = |data: &[u8], got: &mut u64| {
        for (k, &byte) in data.iter().enumerate() {
            let want = b'a' + ((*got + k as u64) % 26) as u8;
            assert_eq!(byte, want, "body byte {} differs", *got + k as u64);
        }
        *got += data.len() as u64;
    };
    let first = c.take_buffered();
    assert!(first.len() as u64 <= n);
    check(&first, &mut got);
    let mut buf = vec![0u8; 256 * 1024];
    while got < n {
        let want = ((n - got) as usize).min(buf.len());
        let k = std::io::Read::read(&mut c.stream, &mut buf[..want]).unwrap();
        assert!(k > 0, "connection closed after {got} of {n} bytes");
        check(&buf[..k], &mut got);
    }
    let peak = sampler.finish();
    eprintln!(
        "download {} MiB: {:?}, RSS {base} KiB -> peak {peak} KiB",
        n >> 20,
        started.elapsed()
    );
    assert_eq!(got, n);
    assert!(
        peak - base < RSS_BOUND_KIB,
        "gateway RSS grew by {} KiB (bound {RSS_BOUND_KIB} KiB)",
        peak - base
    );
    assert_usable(&mut c, "/prod/hello");
}

// --- 8. framing to the client ------------------------------------------------------

#[test]
fn framing_is_kept_or_converted_for_the_client() {
    let a = Origin::start("A");
    let gw = gateway("", &greedy(&format!("http://{}", a.addr())));
    let mut c = gw.client();

    let r = c.get("/prod/chunked/1000/100");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.body, pattern(1000));

    // Close-delimited at the origin: re-chunked for HTTP/1.1, connection kept.
    let r = c.get("/prod/close/5000");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{r:?}");
    assert_eq!(r.header("connection"), None, "{r:?}");
    assert_eq!(r.body, pattern(5000));

    c.send("HEAD /prod/bytes/100 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("100"), "{r:?}");

    for code in [204, 304] {
        let r = c.get(&format!("/prod/status/{code}"));
        assert_eq!(r.status, code, "{r:?}");
        assert_eq!(r.header("content-length"), None, "{r:?}");
        assert_eq!(r.header("transfer-encoding"), None, "{r:?}");
    }
    // Nothing stray after HEAD/204/304: the next response parses.
    let r = c.get("/prod/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "hello, world\n"));
    assert!(c.buffered().is_empty());

    // HTTP/1.0: Content-Length kept with keep-alive...
    let mut c10 = gw.client();
    let r = c10.request("GET /prod/bytes/10 HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.header("content-length"), Some("10"), "{r:?}");
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    assert_eq!(r.body, pattern(10));
    // ...a close-delimited body stays close-delimited...
    let r =
        c10.request("GET /prod/close/5000 HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), None, "{r:?}");
    assert_eq!(r.header("transfer-encoding"), None, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert_eq!(r.body, pattern(5000));
    c10.assert_closed();
    // ...and a chunked one is decoded and close-delimited.
    let mut c10 = gw.client();
    let r = c10
        .request("GET /prod/chunked/1000/64 HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.header("transfer-encoding"), None, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    assert_eq!(r.body, pattern(1000));
    c10.assert_closed();
}

// --- 9. failures ---------------------------------------------------------------

#[test]
fn backend_failures_map_to_gateway_errors() {
    let a = Origin::start("A");
    let dead = closed_port();
    let toml = api(
        &[("prod", "")],
        &[
            (
                "GET /slow/{ms}",
                &format!("http://{}/slow/{{ms}}", a.addr()),
                "  timeout = \"500ms\"",
            ),
            ("GET /refused", &format!("http://{dead}/hello"), ""),
            (
                "ANY /{proxy+}",
                &format!("http://{}/{{proxy}}", a.addr()),
                "",
            ),
        ],
    );
    let gw = gateway("", &toml);
    let mut c = gw.client();

    let started = Instant::now();
    let r = c.get("/prod/slow/3000");
    let took = started.elapsed();
    r.assert_gateway_error(504, TIMED_OUT);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2500),
        "timed out after {took:?}"
    );
    assert_usable(&mut c, "/prod/hello");

    let r = c.get("/prod/refused");
    r.assert_gateway_error(504, NET_ERROR);
    assert_eq!(
        r.header("x-amzn-ErrorType"),
        Some("InternalServerErrorException")
    );
    assert_usable(&mut c, "/prod/hello");

    let r = c.get("/prod/drop");
    r.assert_gateway_error(504, NET_ERROR);
    assert_usable(&mut c, "/prod/hello");

    for kind in ["garbage", "cl-te", "two-cl", "bad-status"] {
        let r = c.get(&format!("/prod/malformed/{kind}"));
        assert_eq!(r.status, 502, "{kind}: {r:?}");
        r.assert_gateway_error(502, INTERNAL);
        assert_usable(&mut c, "/prod/hello");
    }

    // The backend closes after its answer: the gateway must not pool that
    // connection. A POST next is not retried, so a stale reuse would show.
    let r = c.get("/prod/keepalive-close");
    assert_eq!((r.status, r.text().as_str()), (200, "bye\n"), "{r:?}");
    assert_eq!(r.header("connection"), None, "{r:?}");
    let r = c.request("POST /prod/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    let e = echo_of(&r);
    assert_eq!((e.method.as_str(), e.body_len), ("POST", 3));

    // Bad chunking after the head: truncated body, connection closed.
    let mut c2 = gw.client();
    c2.send("GET /prod/malformed/bad-chunk HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c2.read_head_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{r:?}");
    let rest = c2.read_to_close();
    assert!(
        !rest.ends_with(b"0\r\n\r\n") && !rest.windows(2).any(|w| w == b"zz"),
        "bad chunk relayed as is or body completed: {:?}",
        String::from_utf8_lossy(&rest)
    );

    // The backend closes mid-body (Content-Length 100, 10 bytes sent): the
    // client gets the 10 bytes and a closed connection.
    let mut c3 = gw.client();
    c3.send("GET /prod/drop-after-head HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c3.read_head_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("100"), "{r:?}");
    assert_eq!(c3.read_to_close(), pattern(10));
}

#[test]
fn integration_timeout_does_not_count_the_client_upload() {
    let a = Origin::start("A");
    let toml = api(
        &[("prod", "")],
        &[(
            "POST /echo",
            &format!("http://{}/echo", a.addr()),
            "  timeout = \"500ms\"",
        )],
    );
    let gw = gateway("", &toml);
    let mut c = gw.client();
    c.send("POST /prod/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n");
    // A slow client: the pauses are the behaviour under test.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        // Ignore a failed write: the assertion below shows the answer.
        let _ = c.stream.write_all(b"0123456789");
    }
    let r = c.read_response();
    let e = echo_of(&r);
    assert_eq!(e.body_len, 30);
}

// --- 10. WebSocket ---------------------------------------------------------------

#[test]
fn websocket_upgrade_is_tunnelled_only_when_allowed() {
    // The RFC 6455 §1.3 example checks how this file computes the key.
    assert_eq!(
        ws_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    let a = Origin::start("A");
    let ws = format!("http://{}/ws", a.addr());
    let toml = api(
        &[("prod", "")],
        &[
            ("GET /ws", &ws, "  allow_upgrade = true"),
            ("GET /plain/ws", &ws, ""),
            (
                "ANY /{proxy+}",
                &format!("http://{}/{{proxy}}", a.addr()),
                "",
            ),
        ],
    );
    let gw = gateway("", &toml);
    let nonce: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
    let key = STANDARD.encode(nonce);
    let upgrade = |path: &str| upgrade_request(path, "t", &key);

    let mut c = gw.client();
    let r = c.request(upgrade("/prod/ws"));
    assert_eq!(r.status, 101, "{r:?}");
    assert!(
        r.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{r:?}"
    );
    assert!(
        r.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{r:?}"
    );
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some(ws_accept(&key).as_str())
    );
    c.send(masked_frame(0x1, b"hello ringgate", [1, 2, 3, 4]));
    let mut want = vec![0x81, 14];
    want.extend_from_slice(b"hello ringgate");
    assert_eq!(c.read_exact_bytes(want.len()), want);
    c.send(masked_frame(0x8, &1000u16.to_be_bytes(), [9, 8, 7, 6]));
    assert_eq!(c.read_exact_bytes(4), [0x88, 2, 0x03, 0xE8]);
    c.assert_closed();

    // Not allowed: forwarded without Upgrade, so the origin refuses it.
    let mut c = gw.client();
    let r = c.request(upgrade("/prod/plain/ws"));
    assert_ne!(r.status, 101, "{r:?}");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.header("upgrade").is_none(), "{r:?}");
    assert_usable(&mut c, "/prod/hello");
}

// --- 11. body limit ---------------------------------------------------------------

#[test]
fn body_limit_applies_to_proxied_requests() {
    let a = Origin::start("A");
    let gw = gateway(
        "[limits]\nmax_body_bytes = 1024\n",
        &greedy(&format!("http://{}", a.addr())),
    );
    const TOO_LARGE: &str = "HTTP content length exceeded 1024 bytes.";

    let mut c = gw.client();
    let mut req = b"POST /prod/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 2048]);
    let r = c.request(req);
    assert_eq!((r.status, r.text().as_str()), (413, TOO_LARGE), "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed();
    assert_eq!(a.count(), 0, "the oversized body reached the origin");

    let mut c = gw.client();
    let mut req =
        b"POST /prod/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b'y'; 1024]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = c.request(req);
    assert_eq!((r.status, r.text().as_str()), (413, TOO_LARGE), "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed();

    // At the limit it goes through.
    let mut c = gw.client();
    let mut req = b"POST /prod/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'z'; 1024]);
    let e = echo_of(&c.request(req));
    assert_eq!((e.body_len, e.body_sha), (1024, fnv1a_hex(&[b'z'; 1024])));
}
