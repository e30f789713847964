//! HTTP/1.1 behaviour of the gateway seen from a raw socket: keep-alive,
//! pipelining, HEAD, 100-continue, chunked bodies, HTTP/1.0, two workers and
//! the epoll driver, framing refusals, limits, the slowloris timeout, common
//! headers, curl, stage variables, and the lingering close that keeps an
//! early error response from being destroyed by a reset.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{TestServer, SERVER};

/// One API, stage `prod`: `/prod/hello`, `/prod/items/{id}`,
/// `/prod/pets/{id}`, `POST /prod/upload`.
const API: &str = r#"
[[api]]
name = "web"
  [[api.stage]]
  name = "prod"
  variables = { color = "red" }

  [[api.route]]
  route = "GET /hello"
  [api.route.mock]
  headers = { "content-type" = "text/plain" }
  body = "hello"

  [[api.route]]
  route = "GET /items/{id}"
  [api.route.mock]
  body = "item {id}"

  [[api.route]]
  route = "GET /pets/{id}"
  [api.route.mock]
  headers = { "content-type" = "application/json" }
  body = '{"id":"{id}"}'

  [[api.route]]
  route = "POST /upload"
  [api.route.mock]
  status = 201
  body = "uploaded"
"#;

/// Small limits for the 413/414/431/408 tests.
const SMALL_LIMITS: &str = r#"
[limits]
max_header_bytes = 2048
max_headers = 10
max_url_bytes = 1024
max_body_bytes = 1024
header_read_timeout = "1s"
"#;

fn server() -> TestServer {
    TestServer::start(&format!("{SERVER}{API}"))
}

fn small_server() -> TestServer {
    TestServer::start(&format!("{SERVER}{SMALL_LIMITS}{API}"))
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

fn assert_hello(r: &support::Response) {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello", "{r:?}");
}

// --- connection management ---------------------------------------------------

#[test]
fn keep_alive_serves_three_requests_on_one_connection() {
    let srv = server();
    let mut c = srv.client();
    for i in 1..=3 {
        let r = c.request(get(&format!("/prod/items/{i}")));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), format!("item {i}"));
        assert_eq!(
            r.header("connection"),
            None,
            "HTTP/1.1 keep-alive needs no header"
        );
    }
    // Still open: a fourth request is answered.
    assert_hello(&c.get("/prod/hello"));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = server();
    let mut c = srv.client();
    let batch: String = (1..=5).map(|i| get(&format!("/prod/items/{i}"))).collect();
    c.send(batch);
    for i in 1..=5 {
        let r = c.read_response();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), format!("item {i}"));
    }
    assert_hello(&c.get("/prod/hello"));
}

#[test]
fn pipelined_requests_with_bodies_keep_their_boundaries() {
    let srv = server();
    let mut c = srv.client();
    let mut batch = get("/prod/items/1");
    batch.push_str("POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nGET /x");
    batch.push_str(&get("/prod/items/3"));
    batch.push_str(
        "POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         4\r\nGET \r\n0\r\n\r\n",
    );
    batch.push_str(&get("/prod/items/5"));
    c.send(batch);
    for expect in ["item 1", "uploaded", "item 3", "uploaded", "item 5"] {
        let r = c.read_response();
        assert_eq!(r.text(), expect, "{r:?}");
    }
}

#[test]
fn long_pipeline_and_large_body_cross_buffer_boundaries() {
    let srv = server();
    let mut c = srv.client();
    // 300 requests (~10 KiB) in one write: more than the initial read buffer.
    let batch: String = (0..300).map(|i| get(&format!("/prod/items/{i}"))).collect();
    c.send(batch);
    for i in 0..300 {
        let r = c.read_response();
        assert_eq!(r.text(), format!("item {i}"), "{r:?}");
    }
    // A 40000-byte body, then a pipelined request, in one write.
    let mut req =
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 40000\r\n\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'b', 40000));
    req.extend_from_slice(get("/prod/items/after").as_bytes());
    c.send(req);
    assert_eq!(c.read_response().status, 201);
    assert_eq!(c.read_response().text(), "item after");
    // The same with a chunked body.
    let mut req =
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        req.extend_from_slice(b"2000\r\n");
        req.extend(std::iter::repeat_n(b'c', 0x2000));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req.extend_from_slice(get("/prod/items/chunked").as_bytes());
    c.send(req);
    assert_eq!(c.read_response().status, 201);
    assert_eq!(c.read_response().text(), "item chunked");
}

#[test]
fn blank_lines_before_a_request_line_are_skipped() {
    // RFC 9112 §2.2: a server should ignore at least one empty line before
    // the request line (some clients send CRLF after a POST body).
    let srv = server();
    let mut c = srv.client();
    let mut batch =
        String::from("POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok\r\n");
    batch.push_str(&get("/prod/items/2"));
    c.send(batch);
    assert_eq!(c.read_response().status, 201);
    assert_eq!(c.read_response().text(), "item 2");
}

#[test]
fn head_has_get_content_length_and_no_body() {
    let srv = server();
    let mut c = srv.client();
    c.send("HEAD /prod/hello HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("5"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // No body bytes follow: the next response parses from its first byte.
    let r = c.get("/prod/items/9");
    assert_eq!(r.text(), "item 9", "{r:?}");
    assert!(c.buffered().is_empty());
}

#[test]
fn expect_100_continue_then_body_then_final_response() {
    let srv = server();
    let mut c = srv.client();
    c.send(
        "POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\
         Expect: 100-continue\r\n\r\n",
    );
    let interim = c.read_response();
    assert_eq!(interim.status, 100, "{interim:?}");
    assert_eq!(interim.reason, "Continue");
    assert!(
        c.buffered().is_empty(),
        "nothing but the interim response yet"
    );
    c.send("0123456789");
    let r = c.read_response();
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.text(), "uploaded");
    assert_hello(&c.get("/prod/hello"));
}

#[test]
fn chunked_body_with_extension_and_trailer_then_next_request() {
    let srv = server();
    let mut c = srv.client();
    let r = c.request(
        "POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;name=value\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Checksum: abc\r\n\r\n",
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.text(), "uploaded");
    assert_hello(&c.get("/prod/hello"));
}

#[test]
fn chunked_body_split_across_writes() {
    let srv = server();
    let mut c = srv.client();
    let parts: [&[u8]; 6] = [
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"5;ext=1\r\nhel",
        b"lo\r\n",
        b"3\r",
        b"\nabc\r\n0\r\n",
        b"\r\n",
    ];
    for part in parts {
        c.send(part);
        // Only to make each part its own TCP segment.
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = c.read_response();
    assert_eq!(r.status, 201, "{r:?}");
    assert_hello(&c.get("/prod/hello"));
}

#[test]
fn http10_without_keep_alive_is_closed_after_response() {
    let srv = server();
    let mut c = srv.client();
    let r = c.request("GET /prod/hello HTTP/1.0\r\n\r\n");
    assert_hello(&r);
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    c.assert_closed();
}

#[test]
fn http10_with_keep_alive_stays_open() {
    let srv = server();
    let mut c = srv.client();
    let req = "GET /prod/hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let r = c.request(req);
    assert_hello(&r);
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    let r = c.request(req);
    assert_hello(&r);
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
}

#[test]
fn http11_connection_close_is_honoured() {
    let srv = server();
    let mut c = srv.client();
    let r = c.request("GET /prod/hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_hello(&r);
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    c.assert_closed();
}

#[test]
fn requests_pipelined_after_connection_close_are_ignored() {
    let srv = server();
    let mut c = srv.client();
    let mut batch =
        String::from("GET /prod/hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    batch.push_str(&get("/prod/items/2"));
    c.send(batch);
    let r = c.read_response();
    assert_hello(&r);
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed();
}

#[test]
fn two_workers_share_the_port() {
    let two = SERVER.replace("workers = 1", "workers = 2");
    let srv = TestServer::start(&format!("{two}{API}"));
    let mut clients: Vec<_> = (0..16).map(|_| srv.client()).collect();
    for round in 0..2 {
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.get(&format!("/prod/items/{i}-{round}"));
            assert_eq!(r.text(), format!("item {i}-{round}"), "{r:?}");
        }
    }
}

#[test]
fn epoll_driver_serves_keep_alive_pipelining_and_chunked() {
    let epoll = SERVER.replace("workers = 1", "workers = 1\nio_driver = \"epoll\"");
    let srv = TestServer::start(&format!("{epoll}{API}"));
    let mut c = srv.client();
    let batch: String = (1..=3).map(|i| get(&format!("/prod/items/{i}"))).collect();
    c.send(batch);
    for i in 1..=3 {
        assert_eq!(c.read_response().text(), format!("item {i}"));
    }
    let r = c.request(
        "POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_hello(&c.get("/prod/hello"));
}

// --- framing refusals: 400 and close -----------------------------------------

/// Sends `raw` on a fresh connection: expects 400 with a JSON
/// `Bad Request: ...` body, `Connection: close`, then the close.
fn expect_400(raw: &[u8]) {
    let srv = server();
    let mut c = srv.client();
    c.send(raw);
    let r = c.read_response();
    assert_eq!(
        r.status,
        400,
        "for {:?}: {r:?}",
        String::from_utf8_lossy(raw)
    );
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("BadRequestException"),
        "{r:?}"
    );
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    let body = r.text();
    assert!(
        body.starts_with("{\"message\":\"Bad Request: ") && body.ends_with("\"}"),
        "{body}"
    );
    r.assert_common_headers();
    c.assert_closed();
}

macro_rules! refused_400 {
    ($($name:ident: $raw:expr;)*) => {
        $(
            #[test]
            fn $name() {
                expect_400($raw);
            }
        )*
    };
}

refused_400! {
    refuses_content_length_with_transfer_encoding:
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    refuses_two_differing_content_lengths:
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    refuses_non_numeric_content_length:
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello";
    refuses_transfer_encoding_gzip:
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n";
    refuses_transfer_encoding_chunked_gzip:
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n";
    refuses_two_transfer_encoding_fields:
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    refuses_transfer_encoding_on_http10:
        b"POST /prod/upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    refuses_whitespace_before_colon:
        b"GET /prod/hello HTTP/1.1\r\nHost : t\r\n\r\n";
    refuses_obs_fold:
        b"GET /prod/hello HTTP/1.1\r\nHost: t\r\nX-Long: first\r\n  continued\r\n\r\n";
    refuses_nul_in_header_value:
        b"GET /prod/hello HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n";
    refuses_bare_cr_in_header_value:
        b"GET /prod/hello HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n";
    refuses_double_space_in_request_line:
        b"GET  /prod/hello HTTP/1.1\r\nHost: t\r\n\r\n";
    refuses_extra_token_in_request_line:
        b"GET /prod/hello HTTP/1.1 extra\r\nHost: t\r\n\r\n";
    refuses_request_line_without_version:
        b"GET /prod/hello\r\nHost: t\r\n\r\n";
    refuses_http_2_0_version:
        b"GET /prod/hello HTTP/2.0\r\nHost: t\r\n\r\n";
    refuses_invalid_chunk_size:
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    refuses_chunk_size_overflow:
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n";
    refuses_chunk_data_without_crlf:
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n";
    refuses_http11_without_host:
        b"GET /prod/hello HTTP/1.1\r\nAccept: */*\r\n\r\n";
    refuses_two_host_headers:
        b"GET /prod/hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    refuses_empty_host:
        b"GET /prod/hello HTTP/1.1\r\nHost:\r\n\r\n";
    refuses_absolute_form_with_blank_host:
        b"GET http://x/prod/hello HTTP/1.1\r\nHost:  \r\n\r\n";
    refuses_host_with_inner_space:
        b"GET /prod/hello HTTP/1.1\r\nHost: a b\r\n\r\n";
    refuses_non_ascii_relative_target:
        b"GET abcdef\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n";
}

/// A target with a multi-byte character where the absolute-form check looks
/// used to panic the worker: with one worker, the gateway then answered
/// nothing at all. Every such request gets 400, and the worker serves on.
#[test]
fn non_ascii_targets_get_400_and_the_worker_survives() {
    let srv = server();
    for raw in [
        &b"GET abcdef\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"GET http:/\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET https:/\xe2\x82\xac/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET \xf0\x9f\x98\x80 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut c = srv.client();
        let r = c.request(raw);
        assert_eq!(r.status, 400, "{:?}: {r:?}", String::from_utf8_lossy(raw));
        c.assert_closed();
    }
    // UTF-8 in an origin-form path is routed like any other path (nginx
    // accepts it too): no route here, so API Gateway's 403.
    let mut c = srv.client();
    let r = c.request("GET /prod/caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 403, "{r:?}");
    assert_hello(&srv.client().request(get("/prod/hello")));
}

#[test]
fn chunk_sizes_with_leading_zeros_are_accepted() {
    let srv = server();
    let mut c = srv.client();
    let zeros = "0".repeat(33);
    let r = c.request(format!(
        "POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         {zeros}5\r\nhello\r\n{zeros}0\r\n\r\n"
    ));
    assert_eq!((r.status, r.text().as_str()), (201, "uploaded"), "{r:?}");
    assert_hello(&c.request(get("/prod/hello")));
}

#[test]
fn bad_request_body_names_the_reason() {
    let srv = server();
    let mut c = srv.client();
    let r = c.request("POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n");
    r.assert_gateway_error(
        400,
        r#"{"message":"Bad Request: unsupported Transfer-Encoding"}"#,
    );
    c.assert_closed();
}

// --- limits ------------------------------------------------------------------

#[test]
fn header_section_over_limit_is_431() {
    let srv = small_server();
    let mut c = srv.client();
    let big = "a".repeat(3000);
    let r = c.request(format!(
        "GET /prod/hello HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n"
    ));
    r.assert_gateway_error(431, r#"{"message":"Request Header Fields Too Large"}"#);
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed();
}

#[test]
fn too_many_headers_is_431() {
    let srv = small_server();
    let mut c = srv.client();
    let mut req = String::from("GET /prod/hello HTTP/1.1\r\nHost: t\r\n");
    for i in 0..20 {
        req.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    let r = c.request(req);
    assert_eq!(r.status, 431, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed();
}

#[test]
fn url_over_limit_is_414() {
    let srv = small_server();
    let mut c = srv.client();
    let long = "x".repeat(1100);
    let r = c.request(format!(
        "GET /prod/items/{long} HTTP/1.1\r\nHost: t\r\n\r\n"
    ));
    r.assert_gateway_error(414, r#"{"message":"Request-URI Too Long"}"#);
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed();
}

#[test]
fn content_length_over_limit_is_413() {
    let srv = small_server();
    let mut c = srv.client();
    let r = c.request("POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n");
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.text(), "HTTP content length exceeded 1024 bytes.");
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed();
}

#[test]
fn content_length_at_limit_is_accepted() {
    let srv = small_server();
    let mut c = srv.client();
    let mut req = b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'z'; 1024]);
    let r = c.request(req);
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn chunked_body_growing_past_limit_is_413() {
    let srv = small_server();
    let mut c = srv.client();
    let mut req =
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"190\r\n"); // 400 bytes each: 1200 in all
        req.extend_from_slice(&[b'z'; 400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = c.request(req);
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.text(), "HTTP content length exceeded 1024 bytes.");
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed();
}

#[test]
fn limits_are_inclusive() {
    let srv = small_server();
    let mut c = srv.client();
    // A target of exactly max_url_bytes (1024).
    let path = format!("/prod/items/{}", "u".repeat(1024 - "/prod/items/".len()));
    assert_eq!(path.len(), 1024);
    let r = c.get(&path);
    assert_eq!(r.status, 200, "{r:?}");
    // Exactly max_headers (10) header fields.
    let mut req = String::from("GET /prod/hello HTTP/1.1\r\nHost: t\r\n");
    for i in 0..9 {
        req.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    assert_eq!(c.request(req).status, 200);
    // One more of each is refused.
    let mut c = srv.client();
    let r = c.get(&format!("{path}u"));
    assert_eq!(r.status, 414, "{r:?}");
}

#[test]
fn large_head_under_default_limit_is_read_across_buffer_growth() {
    let srv = server(); // max_header_bytes = 10240
    let mut c = srv.client();
    let big = "h".repeat(9000);
    let head = format!("GET /prod/hello HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    // In two writes, so the head arrives in pieces.
    let (first, second) = head.split_at(3000);
    c.send(first);
    std::thread::sleep(Duration::from_millis(20));
    c.send(second);
    assert_hello(&c.read_response());
    assert_hello(&c.get("/prod/hello"));
}

#[test]
fn expect_100_continue_over_the_limit_gets_413_without_interim() {
    let srv = small_server();
    let mut c = srv.client();
    c.send(
        "POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\
         Expect: 100-continue\r\n\r\n",
    );
    let r = c.read_response();
    assert_eq!(r.status, 413, "{r:?}");
    c.assert_closed();
}

#[test]
fn unsupported_expectation_is_400() {
    expect_400(
        b"POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nExpect: something\r\n\r\nx",
    );
}

#[test]
fn stalled_body_is_closed_after_header_read_timeout() {
    let srv = small_server(); // header_read_timeout = "1s" also bounds body reads
    let mut c = srv.client();
    let started = Instant::now();
    c.send("POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345");
    let rest = c.read_to_close();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // nginx's client_body_timeout answer: 408, then close.
    assert!(
        rest.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
}

/// A chunk whose declared size alone passes the body limit is refused at
/// once (as nginx does), not after its bytes have been waited for.
#[test]
fn chunk_declared_over_the_limit_is_413_at_once() {
    let srv = small_server(); // max_body_bytes = 1024
    let mut c = srv.client();
    let r = c.request(
        "POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\nhello",
    );
    assert_eq!(r.status, 413, "{r:?}");
    // Also when the size line comes in a later read.
    let mut c = srv.client();
    c.send("POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3f");
    std::thread::sleep(Duration::from_millis(50));
    let r = c.request("f0\r\nxx");
    assert_eq!(r.status, 413, "{r:?}");
}

#[test]
fn slowloris_head_times_out() {
    let srv = small_server(); // header_read_timeout = "1s"
    let mut c = srv.client();
    let started = Instant::now();
    c.send("GET /prod/hello HTTP/1.1\r\nHost: x\r\n");
    let rest = c.read_to_close();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "closed after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(500),
        "closed too early: {elapsed:?}"
    );
    if !rest.is_empty() {
        let text = String::from_utf8_lossy(&rest);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    }
}

#[test]
fn silent_connection_is_closed_after_header_read_timeout() {
    let srv = small_server();
    let mut c = srv.client();
    let started = Instant::now();
    let rest = c.read_to_close();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408 "),
        "{rest:?}"
    );
}

// --- common response headers -------------------------------------------------

#[test]
fn every_response_has_date_server_and_request_id() {
    let srv = server();
    let mut c = srv.client();
    for path in ["/prod/hello", "/nostage/x", "/prod/nope"] {
        let r = c.get(path);
        r.assert_common_headers();
        let id = r.header("x-request-id").unwrap();
        assert_eq!(id.len(), 36, "{id}");
    }
}

#[test]
fn sane_request_id_is_echoed_insane_one_replaced() {
    let srv = server();
    let mut c = srv.client();
    let r = c.request("GET /prod/hello HTTP/1.1\r\nHost: t\r\nx-request-id: abc-123\r\n\r\n");
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let r = c
        .request("GET /prod/hello HTTP/1.1\r\nHost: t\r\nX-Request-Id: bad id with spaces\r\n\r\n");
    let id = r.header("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");
    // Echoed on gateway errors too.
    let r = c.request("GET /nostage HTTP/1.1\r\nHost: t\r\nx-request-id: err-1\r\n\r\n");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-request-id"), Some("err-1"));
}

#[test]
fn gateway_errors_are_json_with_error_type() {
    let srv = server();
    let mut c = srv.client();
    let r = c.get("/nostage/hello");
    r.assert_gateway_error(403, r#"{"message":"Forbidden"}"#);
    assert_eq!(r.header("x-amzn-errortype"), Some("ForbiddenException"));
    let r = c.get("/prod/nothing/here");
    r.assert_gateway_error(403, r#"{"message":"Missing Authentication Token"}"#);
    assert_eq!(
        r.header("x-amzn-ErrorType"),
        Some("MissingAuthenticationTokenException")
    );
    // A 403 is not a framing error: the connection stays open.
    assert_hello(&c.get("/prod/hello"));
}

// --- curl --------------------------------------------------------------------

fn curl(args: &[&str], stdin: Option<&[u8]>) -> Option<(bool, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["--noproxy", "*", "-m", "10"]).args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("curl: {e}"),
    };
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        input.write_all(data).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[test]
fn curl_get_chunked_post_and_head() {
    let srv = server();
    let base = format!("http://{}", srv.addr());

    let Some((ok, out)) = curl(&["-s", "-i", &format!("{base}/prod/pets/7")], None) else {
        eprintln!("notice: curl not found; skipping curl_get_chunked_post_and_head");
        return;
    };
    assert!(ok, "{out}");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.contains("\r\ncontent-type: application/json\r\n"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\n{\"id\":\"7\"}"), "{out}");

    let (ok, out) = curl(
        &[
            "-s",
            "-X",
            "POST",
            "--data-binary",
            "@-",
            "-H",
            "Transfer-Encoding: chunked",
            "-w",
            " %{http_code}",
            &format!("{base}/prod/upload"),
        ],
        Some(b"some streamed request body"),
    )
    .unwrap();
    assert!(ok, "{out}");
    assert_eq!(out, "uploaded 201");

    let (ok, out) = curl(&["-s", "-I", &format!("{base}/prod/hello")], None).unwrap();
    assert!(ok, "{out}");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("\r\nContent-Length: 5\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\n"), "HEAD has no body: {out}");
}

// --- stage variables and path parameters --------------------------------------

#[test]
fn stage_variables_and_path_params_are_substituted() {
    let api = r#"
[[api]]
name = "colors"
  [[api.stage]]
  name = "blue"
  variables = { color = "blue", n = "1" }
  [[api.stage]]
  name = "green"
  variables = { color = "green", n = "2" }

  [[api.route]]
  route = "GET /x"
  [api.route.mock]
  body = "color=${stageVariables.color} n=${stageVariables.n}"

  [[api.route]]
  route = "GET /x/{name}/{rest+}"
  [api.route.mock]
  body = "{name}:{rest}@${stageVariables.color}"
"#;
    let srv = TestServer::start(&format!("{SERVER}{api}"));
    let mut c = srv.client();
    let blue = c.get("/blue/x");
    let green = c.get("/green/x");
    assert_eq!(blue.text(), "color=blue n=1", "{blue:?}");
    assert_eq!(green.text(), "color=green n=2", "{green:?}");
    assert_eq!(blue.header("content-length"), Some("14"));
    let r = c.get("/green/x/kiwi/a/b/c");
    assert_eq!(r.text(), "kiwi:a/b/c@green", "{r:?}");
    assert_eq!(r.header("content-length"), Some("16"));
}

// --- lingering close ---------------------------------------------------------

/// After an error answered before the request was read whole, the gateway
/// must not close with the client's bytes unread: the kernel would answer
/// them with a reset, and a reset destroys the response the client has not
/// read yet (on a real network, where the response may still sit in the
/// gateway's send queue). The client here writes everything, waits until the
/// gateway has answered, reads the response, and must then see a clean end
/// of stream (FIN), not a reset.
#[test]
fn error_responses_survive_unread_client_bytes() {
    let srv = server();
    let big_header = "h".repeat(21 * 1024);
    let cases = [
        (
            431,
            format!("GET /prod/hello HTTP/1.1\r\nHost: t\r\nX-Big: {big_header}\r\n\r\n"),
            vec![b'x'; 64 * 1024],
        ),
        (
            413,
            "POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 20971520\r\n\r\n".to_string(),
            vec![b'y'; 256 * 1024],
        ),
        (
            400,
            "POST /prod/upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
                .to_string(),
            vec![b'z'; 64 * 1024],
        ),
    ];
    for (status, head, body) in cases {
        let mut c = srv.client();
        let mut all = head.into_bytes();
        all.extend_from_slice(&body);
        c.send(&all);
        // Give the gateway time to answer and close before reading: the
        // outcome must not depend on who is faster.
        std::thread::sleep(Duration::from_millis(300));
        let r = c.read_response();
        assert_eq!(r.status, status, "{r:?}");
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        // The end of the response is a FIN, not a reset: a reset sent while
        // the response still sat in the gateway's send queue (a slow real
        // network) would have dropped it.
        assert!(c.buffered().is_empty(), "{:?}", c.buffered());
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut c.stream, &mut byte) {
            Ok(0) => {}
            other => panic!("{status}: expected a clean end of stream, got {other:?}"),
        }
    }
    assert_hello(&srv.client().request(get("/prod/hello")));
}
