//! The admin socket's transport, black-box: an [`AdminServer`] with a
//! handler that echoes each request as JSON, driven over real Unix and
//! loopback TCP sockets (raw bytes, curl, and the admin client), plus
//! property tests of the pure request parser.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use ringgate::admin::client::{self, Endpoint};
use ringgate::admin::http::{
    parse_request, AdminRequest, AdminResponse, AdminServer, Handler, Limits, Options, Parse,
};
use serde_json::{json, Value};

// --- set-up ------------------------------------------------------------------

/// Echoes the request as JSON; `/panic` panics, `/interim` answers 101,
/// `/created` answers 201 with a Location, `/empty` answers 204.
struct Echo;

impl Handler for Echo {
    fn handle(&self, req: &AdminRequest) -> AdminResponse {
        match req.path.as_str() {
            "/panic" => panic!("echo handler told to panic"),
            "/created" => {
                AdminResponse::json(201, &json!({"ok": true})).with_header("Location", "/x/1")
            }
            "/empty" => AdminResponse::empty(204),
            "/interim" => AdminResponse::empty(101),
            _ => AdminResponse::json(
                200,
                &json!({
                    "method": req.method,
                    "path": req.path,
                    "segments": req.segments,
                    "query": req.query,
                    "body": String::from_utf8_lossy(&req.body),
                    "body_len": req.body.len(),
                }),
            ),
        }
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rg-admin-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn sock(&self) -> PathBuf {
        self.0.join("admin.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn start(dir: &TempDir) -> AdminServer {
    AdminServer::start(&dir.sock(), None, Arc::new(Echo)).expect("admin server starts")
}

fn start_opts(dir: &TempDir, options: Options) -> AdminServer {
    AdminServer::start_with(&dir.sock(), None, Arc::new(Echo), options)
        .expect("admin server starts")
}

fn connect(server: &AdminServer) -> UnixStream {
    let s = UnixStream::connect(server.socket_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A response as read off the wire.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Asserts a transport error: status, JSON `error` code, and that the
    /// server says it closes.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert_eq!(self.header("connection"), Some("close"), "{self:?}");
    }
}

/// Reads one response (framed by Content-Length) from `stream`, keeping
/// what follows in `buf`. `None` at a clean end of file.
fn read_response(stream: &mut impl Read, buf: &mut Vec<u8>) -> Option<Resp> {
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = r.parse(buf).expect("well-formed response") {
            let status = r.code.unwrap();
            let headers: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8(h.value.to_vec()).unwrap(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            while buf.len() < head_len + len {
                let n = stream.read(&mut chunk).expect("response body");
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[head_len..head_len + len].to_vec();
            buf.drain(..head_len + len);
            return Some(Resp {
                status,
                headers,
                body,
            });
        }
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return None,
            Ok(0) => panic!(
                "connection closed mid-head: {:?}",
                String::from_utf8_lossy(buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading a response: {e}"),
        }
    }
}

/// Sends `bytes` on a new connection and reads one response; asserts the
/// server then closes.
fn exchange_closing(server: &AdminServer, bytes: &[u8]) -> Resp {
    let mut s = connect(server);
    // The server may answer and close before taking everything.
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let resp = read_response(&mut s, &mut buf).expect("a response");
    assert!(buf.is_empty(), "bytes after the response: {buf:?}");
    assert_eq!(read_to_end_lenient(&mut s), 0, "the server should close");
    resp
}

/// Reads until end of file; a reset counts as the end. Returns bytes read.
fn read_to_end_lenient(s: &mut impl Read) -> usize {
    let mut total = 0;
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("waiting for the server to close: {e}"),
        }
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

// --- the socket file ---------------------------------------------------------

#[test]
fn socket_file_is_mode_0600_and_removed_on_stop() {
    let dir = TempDir::new();
    let server = start(&dir);
    let meta = fs::symlink_metadata(dir.sock()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Nothing left from the private bind directory.
    let names: Vec<_> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["admin.sock"]);
    server.stop();
    assert!(!dir.sock().exists(), "stop removes the socket file");
}

#[test]
fn second_server_on_a_live_socket_fails_and_the_first_keeps_working() {
    let dir = TempDir::new();
    let first = start(&dir);
    let err = AdminServer::start(&dir.sock(), None, Arc::new(Echo)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.sock().display().to_string()) && text.contains("another process"),
        "{text}"
    );
    let resp = exchange_closing(
        &first,
        b"GET /still/here HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/still/here");
    first.stop();
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = TempDir::new();
    // A socket file nobody accepts on, as a crashed process leaves it.
    drop(UnixListener::bind(dir.sock()).unwrap());
    assert!(fs::symlink_metadata(dir.sock())
        .unwrap()
        .file_type()
        .is_socket());
    let server = start(&dir);
    let resp = exchange_closing(&server, b"GET /fresh HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.json()["path"], "/fresh");
    assert_eq!(
        fs::metadata(dir.sock()).unwrap().permissions().mode() & 0o777,
        0o600
    );
    server.stop();
}

#[test]
fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = TempDir::new();
    fs::write(dir.sock(), "precious").unwrap();
    let err = AdminServer::start(&dir.sock(), None, Arc::new(Echo)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(fs::read_to_string(dir.sock()).unwrap(), "precious");
}

#[test]
fn missing_parent_directory_is_an_error_naming_it() {
    let dir = TempDir::new();
    let sock = dir.0.join("no/such/dir/admin.sock");
    let err = AdminServer::start(&sock, None, Arc::new(Echo)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

// --- HTTP --------------------------------------------------------------------

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let dir = TempDir::new();
    let server = start(&dir);
    let mut s = connect(&server);
    let mut buf = Vec::new();

    s.write_all(&get("/one")).unwrap();
    let r1 = read_response(&mut s, &mut buf).unwrap();
    assert_eq!((r1.status, r1.header("connection")), (200, None));
    assert_eq!(r1.json()["path"], "/one");

    s.write_all(b"POST /two HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let r2 = read_response(&mut s, &mut buf).unwrap();
    assert_eq!(r2.json()["body"], "hello");
    assert_eq!(r2.json()["method"], "POST");

    // Two pipelined in one write, answered in order; the second closes.
    s.write_all(b"GET /three HTTP/1.1\r\n\r\nGET /four HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r3 = read_response(&mut s, &mut buf).unwrap();
    let r4 = read_response(&mut s, &mut buf).unwrap();
    assert_eq!(r3.json()["path"], "/three");
    assert_eq!(r4.json()["path"], "/four");
    assert_eq!(r4.header("connection"), Some("close"));
    assert!(
        read_response(&mut s, &mut buf).is_none(),
        "closed after Connection: close"
    );
    server.stop();
}

#[test]
fn http_1_0_closes_unless_asked_to_keep_alive() {
    let dir = TempDir::new();
    let server = start(&dir);
    let r = exchange_closing(&server, b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));

    let mut s = connect(&server);
    let mut buf = Vec::new();
    s.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, &mut buf).unwrap();
    assert_eq!(r.json()["path"], "/a");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    s.write_all(b"GET /b HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf).unwrap().json()["path"],
        "/b"
    );
    assert!(read_response(&mut s, &mut buf).is_none());
    server.stop();
}

#[test]
fn path_and_query_are_percent_decoded() {
    let dir = TempDir::new();
    let server = start(&dir);
    let r = exchange_closing(
        &server,
        b"GET /apis/sh%C3%B6p//stages/a%2Fb?name=a+b%2Bc&amp=%26&flag&&empty= HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    let v = r.json();
    assert_eq!(v["path"], "/apis/shöp//stages/a/b");
    assert_eq!(v["segments"], json!(["apis", "shöp", "stages", "a/b"]));
    assert_eq!(
        v["query"],
        json!([["name", "a b+c"], ["amp", "&"], ["flag", ""], ["empty", ""]])
    );
    server.stop();
}

#[test]
fn responses_carry_extra_headers_and_204_has_no_body() {
    let dir = TempDir::new();
    let server = start(&dir);
    let mut s = connect(&server);
    let mut buf = Vec::new();
    s.write_all(&get("/created")).unwrap();
    let r = read_response(&mut s, &mut buf).unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("/x/1"));
    s.write_all(b"DELETE /empty HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(
        rest,
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    );
    server.stop();
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let dir = TempDir::new();
    let server = start(&dir);
    let mut s = connect(&server);
    s.write_all(b"PUT /e HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"data").unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        read_response(&mut s, &mut buf).unwrap().json()["body"],
        "data"
    );
    server.stop();
}

#[test]
fn each_bad_request_gets_its_json_error_and_the_connection_closes() {
    let dir = TempDir::new();
    let server = start(&dir);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed head",
            b"GET /x HTTP/1.1\r\nNo colon here\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "garbage",
            b"\x00\x01\x02 what\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "absolute-form target",
            b"GET http://x/y HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "bad percent-encoding",
            b"GET /a%zz HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "bad query encoding, refused before the body",
            b"PUT /a?x=%G1 HTTP/1.1\r\nContent-Length: 100\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "non-UTF-8 path",
            b"GET /a%FF HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "bad_request",
        ),
        (
            "Content-Length not a number",
            b"POST /x HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n".to_vec(),
            400,
            "bad_content_length",
        ),
        (
            "Content-Length negative",
            b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
            "bad_content_length",
        ),
        (
            "two different Content-Lengths",
            b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
            400,
            "bad_content_length",
        ),
        (
            "Transfer-Encoding",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(),
            411,
            "length_required",
        ),
        (
            "oversized head",
            format!(
                "GET /x HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(17 * 1024)
            )
            .into_bytes(),
            431,
            "header_too_large",
        ),
        (
            "oversized head, never ending",
            format!("GET /x HTTP/1.1\r\nX-Big: {}", "a".repeat(20 * 1024)).into_bytes(),
            431,
            "header_too_large",
        ),
        (
            "too many header fields",
            format!("GET /x HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(65)).into_bytes(),
            431,
            "header_too_large",
        ),
        (
            "oversized body (refused before it is sent)",
            b"POST /x HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n".to_vec(),
            413,
            "payload_too_large",
        ),
        (
            "absurd Content-Length",
            b"POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            413,
            "payload_too_large",
        ),
    ];
    for (what, bytes, status, code) in cases {
        let r = exchange_closing(&server, &bytes);
        assert_eq!(r.status, status, "{what}: {r:?}");
        r.assert_error(status, code);
    }
    // A body of exactly the limit is fine.
    let mut big =
        b"POST /x HTTP/1.1\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n".to_vec();
    big.resize(big.len() + 1024 * 1024, b'z');
    let r = exchange_closing(&server, &big);
    assert_eq!(r.json()["body_len"], 1024 * 1024);
    server.stop();
}

#[test]
fn a_silent_client_is_dropped_after_the_read_timeout() {
    let dir = TempDir::new();
    let opts = Options {
        read_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let server = start_opts(&dir, opts);

    // Silent from the start: closed without a word.
    let mut s = connect(&server);
    let t = Instant::now();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let waited = t.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );
    assert_eq!(server.connections(), 0);

    // Silent in the middle of a request: 408.
    let t = Instant::now();
    let r = exchange_closing(&server, b"GET /x HTTP/1.1\r\nHost: x\r\n");
    r.assert_error(408, "request_timeout");
    assert!(t.elapsed() < Duration::from_millis(1500));

    // Silent after a keep-alive answer: closed.
    let mut s = connect(&server);
    let mut buf = Vec::new();
    s.write_all(&get("/a")).unwrap();
    assert_eq!(read_response(&mut s, &mut buf).unwrap().status, 200);
    let t = Instant::now();
    assert!(read_response(&mut s, &mut buf).is_none());
    assert!(t.elapsed() < Duration::from_millis(1500));
    server.stop();
}

#[test]
fn a_trickling_client_gets_408_at_the_request_deadline() {
    let dir = TempDir::new();
    let opts = Options {
        read_timeout: Duration::from_millis(400),
        request_timeout: Duration::from_millis(700),
        ..Options::default()
    };
    let server = start_opts(&dir, opts);
    let mut s = connect(&server);
    let t = Instant::now();
    let mut buf = Vec::new();
    let mut resp = None;
    for b in
        b"GET /slow HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"
    {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        // Peek for an early answer without blocking long.
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut chunk = [0u8; 512];
        if let Ok(n) = s.read(&mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            resp = read_response(&mut s, &mut buf);
            break;
        }
    }
    let resp = resp.expect("a 408 before the request was complete");
    resp.assert_error(408, "request_timeout");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    server.stop();
}

#[test]
fn a_handler_panic_is_a_500_and_the_server_goes_on() {
    let dir = TempDir::new();
    let server = start(&dir);
    let mut s = connect(&server);
    let mut buf = Vec::new();
    s.write_all(&get("/panic")).unwrap();
    let r = read_response(&mut s, &mut buf).unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"], "internal");
    // Same connection still usable, and a new one too.
    s.write_all(&get("/after")).unwrap();
    assert_eq!(
        read_response(&mut s, &mut buf).unwrap().json()["path"],
        "/after"
    );
    let r = exchange_closing(&server, b"GET /next HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.json()["path"], "/next");
    // A status that is not a final one is the handler's bug too.
    let r = exchange_closing(
        &server,
        b"GET /interim HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (500, Some("internal"))
    );
    server.stop();
}

#[test]
fn connections_over_the_cap_get_503() {
    let dir = TempDir::new();
    let opts = Options {
        max_connections: 2,
        ..Options::default()
    };
    let server = start_opts(&dir, opts);
    let a = connect(&server);
    let _b = connect(&server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.connections() < 2 {
        assert!(Instant::now() < deadline, "connections never registered");
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = exchange_closing(&server, &get("/third"));
    r.assert_error(503, "too_many_connections");
    drop(a);
    while server.connections() > 1 {
        assert!(
            Instant::now() < deadline,
            "closed connection never unregistered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = exchange_closing(&server, b"GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    server.stop();
}

#[test]
fn stop_returns_promptly_with_idle_connections_open() {
    let dir = TempDir::new();
    let server = start(&dir); // 10 s read timeout
    let mut s = connect(&server);
    let mut buf = Vec::new();
    s.write_all(&get("/idle")).unwrap();
    assert_eq!(read_response(&mut s, &mut buf).unwrap().status, 200);
    let t = Instant::now();
    server.stop();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(read_response(&mut s, &mut buf).is_none());
    assert!(UnixStream::connect(dir.sock()).is_err());
}

// --- TCP -----------------------------------------------------------------------

fn start_tcp(dir: &TempDir, token: &str) -> AdminServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    AdminServer::start(&dir.sock(), Some((addr, token.to_string())), Arc::new(Echo)).unwrap()
}

fn tcp_exchange(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    read_response(&mut s, &mut Vec::new()).unwrap()
}

#[test]
fn tcp_requires_the_bearer_token() {
    let dir = TempDir::new();
    let server = start_tcp(&dir, "s3cret-token");
    let addr = server.tcp_addr().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let r = tcp_exchange(addr, &get("/x"));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    for wrong in [
        "Bearer s3cret-toke",
        "Bearer s3cret-tokenX",
        "Bearer S3CRET-TOKEN",
        "Basic s3cret-token",
        "s3cret-token",
    ] {
        let r = tcp_exchange(
            addr,
            format!("GET /x HTTP/1.1\r\nAuthorization: {wrong}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 401, "{wrong}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }

    let r = tcp_exchange(
        addr,
        b"GET /tcp?a=1 HTTP/1.1\r\nAuthorization: Bearer s3cret-token\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["query"], json!([["a", "1"]]));

    // The Unix socket needs no token.
    let r = exchange_closing(&server, b"GET /unix HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
    server.stop();
}

#[test]
fn a_non_loopback_tcp_address_is_refused() {
    let dir = TempDir::new();
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:9901"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let err =
            AdminServer::start(&dir.sock(), Some((addr, "t".into())), Arc::new(Echo)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{addr}: {err}");
        assert!(err.to_string().contains("loopback"), "{err}");
        assert!(!dir.sock().exists(), "nothing bound for {addr}");
    }
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let err = AdminServer::start(&dir.sock(), Some((loopback, String::new())), Arc::new(Echo))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "empty token: {err}");
}

// --- curl and the client ---------------------------------------------------------

#[test]
fn curl_over_the_unix_socket_gets_json() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("notice: curl not found; skipping curl_over_the_unix_socket_gets_json");
        return;
    }
    let dir = TempDir::new();
    let server = start(&dir);
    let sock = dir.sock();
    let curl = |args: &[&str]| -> Value {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--unix-socket"])
            .arg(&sock)
            .args(args)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out.stdout)))
    };
    let v = curl(&["http://localhost/apis/shop?verbose=1"]);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["segments"], json!(["apis", "shop"]));
    assert_eq!(v["query"], json!([["verbose", "1"]]));

    let v = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"name":"shop"}"#,
        "http://x/apis",
    ]);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body"], r#"{"name":"shop"}"#);

    // A body large enough that curl may ask for 100-continue.
    let file = dir.0.join("body.json");
    fs::write(&file, "x".repeat(300 * 1024)).unwrap();
    let at = format!("@{}", file.display());
    let v = curl(&["-X", "PUT", "--data-binary", &at, "http://x/big"]);
    assert_eq!(v["body_len"], 300 * 1024);
    server.stop();
}

#[test]
fn the_client_talks_over_unix_and_tcp() {
    let dir = TempDir::new();
    let server = start_tcp(&dir, "tok");
    let unix = Endpoint::Unix(dir.sock());
    let reply = client::request(&unix, "GET", "/apis/a%20b?x=1", None).unwrap();
    assert_eq!(reply.status, 200);
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["segments"], json!(["apis", "a b"]));

    let reply = client::request(&unix, "POST", "/apis", Some(br#"{"a":1}"#)).unwrap();
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        (v["method"].as_str(), v["body"].as_str()),
        (Some("POST"), Some(r#"{"a":1}"#))
    );

    let reply = client::request(&unix, "DELETE", "/empty", None).unwrap();
    assert_eq!((reply.status, reply.body.len()), (204, 0));

    let addr = server.tcp_addr().unwrap();
    let tcp = Endpoint::Tcp {
        addr,
        token: "tok".into(),
    };
    let reply = client::request(&tcp, "PUT", "/over/tcp", Some(b"{}")).unwrap();
    assert_eq!(reply.status, 200);
    let v: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["path"], "/over/tcp");

    let wrong = Endpoint::Tcp {
        addr,
        token: "nope".into(),
    };
    let reply = client::request(&wrong, "GET", "/x", None).unwrap();
    assert_eq!(reply.status, 401);

    // A body over the limit: the server's 413 comes back, not a write error.
    let huge = vec![b' '; 2 * 1024 * 1024];
    let reply = client::request(&unix, "POST", "/x", Some(&huge)).unwrap();
    assert_eq!(reply.status, 413);

    let err = client::request(&unix, "GET", "no-slash", None).unwrap_err();
    assert!(err.contains("must start with '/'"), "{err}");
    server.stop();

    // Nothing there any more.
    let err = client::request(&unix, "GET", "/x", None).unwrap_err();
    let sock = dir.sock().display().to_string();
    assert_eq!(
        err,
        format!("cannot connect to {sock}: No such file or directory (is ringgate running with this config?)")
    );
    let err = client::request(&tcp, "GET", "/x", None).unwrap_err();
    assert!(
        err.starts_with(&format!("cannot connect to {addr}: Connection refused")),
        "{err}"
    );
}

#[test]
fn the_client_reads_a_response_without_content_length_until_close() {
    // A hand-made server: answers without Content-Length, then closes.
    let dir = TempDir::new();
    let listener = UnixListener::bind(dir.sock()).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\":\"close\"}")
            .unwrap();
        String::from_utf8(head).unwrap()
    });
    let reply = client::request(&Endpoint::Unix(dir.sock()), "GET", "/raw", None).unwrap();
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (200, &b"{\"until\":\"close\"}"[..])
    );
    let head = t.join().unwrap();
    assert!(
        head.starts_with("GET /raw HTTP/1.1\r\n") && head.contains("Connection: close\r\n"),
        "{head}"
    );
}

// --- the parser, by property ---------------------------------------------------------

fn limits() -> Limits {
    Limits {
        max_head: 1024,
        max_body: 4096,
    }
}

/// The invariants any input must keep.
fn check_invariants(buf: &[u8]) -> Result<(), TestCaseError> {
    match parse_request(buf, &limits()) {
        Parse::Complete(p) => {
            prop_assert!(p.consumed > 0 && p.consumed <= buf.len());
            prop_assert!(p.request.body.len() <= limits().max_body);
            // Nothing after the request influences it.
            prop_assert_eq!(
                parse_request(&buf[..p.consumed], &limits()),
                Parse::Complete(p)
            );
        }
        Parse::Incomplete { needed, .. } => {
            prop_assert!(buf.len() <= limits().max_head || needed.is_some());
            if let Some(n) = needed {
                prop_assert!(n > buf.len());
                prop_assert!(n <= limits().max_head + limits().max_body);
            }
        }
        Parse::Invalid(e) => {
            prop_assert!((400..500).contains(&e.status()));
        }
    }
    Ok(())
}

/// A percent-encoded form of arbitrary text, and the text.
fn encoded_text() -> impl Strategy<Value = (String, String)> {
    "[a-zA-Z0-9 /?&=+%é-]{0,12}".prop_map(|s| {
        let enc: String = s
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        (enc, s)
    })
}

prop_compose! {
    fn valid_request()(
        method in "[A-Z]{1,7}",
        segs in prop::collection::vec(encoded_text(), 0..4),
        query in prop::collection::vec((encoded_text(), encoded_text()), 0..3),
        body in prop::collection::vec(any::<u8>(), 0..64),
        close in any::<bool>(),
    ) -> (Vec<u8>, String, String, Vec<String>, Vec<(String, String)>, Vec<u8>, bool) {
        let mut target = String::new();
        let mut path = String::new();
        for (_, text) in &segs {
            path.push('/');
            path.push_str(text);
        }
        if path.is_empty() {
            path.push('/');
        }
        for (enc, _) in &segs {
            target.push('/');
            target.push_str(enc);
        }
        if target.is_empty() {
            target.push('/');
        }
        if !query.is_empty() {
            let pairs: Vec<String> = query.iter().map(|((n, _), (v, _))| format!("{n}={v}")).collect();
            target.push('?');
            target.push_str(&pairs.join("&"));
        }
        let mut bytes = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        ).into_bytes();
        bytes.extend_from_slice(&body);
        let segments = segs.into_iter().map(|(_, s)| s).filter(|s| !s.is_empty()).collect();
        let query = query.into_iter().map(|((_, n), (_, v))| (n, v)).collect();
        (bytes, method, path, segments, query, body, close)
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // A failure's seed beside this file, not in a top-level directory.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions")
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn parser_survives_arbitrary_bytes(buf in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_invariants(&buf)?;
    }

    #[test]
    fn parser_survives_mutated_requests(
        (req, ..) in valid_request(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = req;
        for (at, byte, kind) in edits {
            let i = at.index(buf.len() + 1);
            match kind {
                0 if i < buf.len() => buf[i] = byte,
                1 => buf.insert(i, byte),
                2 if i < buf.len() => { buf.remove(i); }
                _ => buf.truncate(i),
            }
        }
        buf.extend_from_slice(&tail);
        check_invariants(&buf)?;
    }

    #[test]
    fn valid_requests_parse_exactly_and_prefixes_are_incomplete(
        (req, method, path, segments, query, body, close) in valid_request(),
        tail in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        for cut in 0..req.len() {
            let r = parse_request(&req[..cut], &limits());
            prop_assert!(matches!(r, Parse::Incomplete { .. }), "prefix {cut}: {r:?}");
        }
        let mut buf = req.clone();
        buf.extend_from_slice(&tail);
        let Parse::Complete(p) = parse_request(&buf, &limits()) else {
            return Err(TestCaseError::fail(format!("{:?}", parse_request(&buf, &limits()))));
        };
        prop_assert_eq!(p.consumed, req.len());
        prop_assert_eq!(&p.request.method, &method);
        prop_assert_eq!(&p.request.segments, &segments);
        prop_assert_eq!(&p.request.query, &query);
        prop_assert_eq!(&p.request.body, &body);
        prop_assert_eq!(p.keep_alive, !close);
        prop_assert_eq!(&p.request.path, &path);
    }
}

#[test]
fn admin_request_new_matches_the_parser() {
    let r = AdminRequest::new("GET", "/a/b%20c?x=%41", Vec::new()).unwrap();
    assert_eq!(r.segments, ["a", "b c"]);
    assert_eq!(r.query("x"), Some("A"));
    assert!(AdminRequest::new("GET", "nope", Vec::new()).is_err());
}
