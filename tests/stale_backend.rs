//! Regression tests for two proxy defects.
//!
//! **A backend closed an idle pooled connection.** A client writes a `PUT`
//! or `POST` head and, ~10 ms later, its small JSON body (as Node's
//! fetch/undici does). The gateway sends it over a pooled keep-alive
//! connection that the origin closed (FIN) while it sat idle in the pool —
//! a Node.js `http.createServer` origin does that after `keepAliveTimeout`.
//! The client must get the origin's answer, never a gateway 5xx: a healthy
//! origin never produces one. Each case here warms the pool, waits until the
//! gateway's end of the pooled connection is in `CLOSE_WAIT` (the backend's
//! FIN has arrived: polled in `/proc/net/tcp`, no blind sleep), then sends
//! the request, and checks the status and that the backend got the whole
//! body exactly once. Shapes: head then body in a second write, one piece,
//! a chunked body in two writes after the head, and bodies over 64 KiB —
//! too large to keep for a resend, so only noticing the close *before*
//! writing on the connection can save those. Against `ringgate-origin`
//! (`/idle-close/{ms}`) and against a real Node.js origin
//! (`tests/data/node-origin.js`; needs `node` on PATH, see
//! [`NodeOrigin::start`]).
//!
//! A close that races the request (the backend reads the next head, then
//! closes without answering) cannot be seen before writing; the gateway
//! keeps what it sent (head and up to 64 KiB of body) and sends it again on
//! a fresh connection for idempotent methods
//! ([`a_close_racing_the_request_is_retried_from_the_kept_copy`]).
//!
//! **Interim responses** (RFC 9110 §15.2): a backend's `103 Early Hints` and
//! an unsolicited `100 Continue` are forwarded to HTTP/1.1 clients, before
//! the final response and as soon as they arrive, and never to HTTP/1.0
//! clients. When the client sent `Expect: 100-continue` the gateway answers
//! it itself (and does not forward `Expect`), so the client gets exactly one
//! `100 Continue`: a `100` from the backend is then dropped, as §15.2.1
//! allows a proxy to do for a 100 it generated the need for. Other interim
//! responses (`103`) are still forwarded in that case.
//!
//! Everything listens on 127.0.0.1; nothing asserts on timing (the 10 ms
//! pauses between writes are the client behaviour under test).

mod support;

use std::any::Any;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use support::{fnv1a_hex, pattern, Client, Echo, Json, Origin, Response, TestServer, SERVER};

/// The pause between a request's writes (Node's fetch/undici shape).
const WRITE_GAP: Duration = Duration::from_millis(10);

/// How long `ringgate-origin` keeps an idle connection after `/idle-close`.
const ORIGIN_IDLE_CLOSE_MS: u64 = 50;

/// Upper bound for the backend's close of an idle connection to show up.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

const METHODS: [&str; 4] = ["PUT", "POST", "PATCH", "DELETE"];

// --- gateway configuration ---------------------------------------------------

/// A gateway with stage `prod` and `ANY /{proxy+}` to `http://backend/{proxy}`.
fn gateway_to(backend: SocketAddr) -> TestServer {
    TestServer::start(&format!(
        "{SERVER}[[api]]\nname = \"stale\"\n  [[api.stage]]\n  name = \"prod\"\n  \
         [[api.route]]\n  route = \"ANY /{{proxy+}}\"\n  [api.route.http_proxy]\n  \
         uri = \"http://{backend}/{{proxy}}\"\n"
    ))
}

// --- waiting for the backend's close -----------------------------------------

/// IPv4 TCP sockets in `CLOSE_WAIT` whose peer is 127.0.0.1:`port`: this
/// host's end of a connection the server on `port` has closed (its FIN has
/// arrived) and that is still open here, i.e. a stale pooled connection.
fn close_wait_to(port: u16) -> usize {
    const CLOSE_WAIT: &str = "08";
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3
                && f[3] == CLOSE_WAIT
                && f[2]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

/// Polls `f` every 5 ms until it holds or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until the gateway's pooled connection to `port` has received the
/// backend's FIN (it is in `CLOSE_WAIT`); panics after [`CLOSE_LIMIT`].
fn wait_for_stale_pooled_connection(port: u16, what: &str) {
    assert!(
        eventually(CLOSE_LIMIT, || close_wait_to(port) >= 1),
        "{what}: the backend on port {port} did not close the idle pooled \
         connection within {CLOSE_LIMIT:?} (no CLOSE_WAIT socket towards it)"
    );
}

// --- request shapes ------------------------------------------------------------

/// How the client writes the request after the pool went stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Content-Length head, then the body in a second write 10 ms later.
    Split,
    /// Head and body in one write.
    OnePiece,
    /// Chunked head, then the body in two writes (two chunks, then the
    /// last chunk), 10 ms apart.
    ChunkedTwoWrites,
}

/// A small JSON body, different per method.
fn small_json(method: &str) -> Vec<u8> {
    format!(r#"{{"id":42,"method":"{method}","name":"ringgate","tags":["a","b"]}}"#).into_bytes()
}

/// A JSON body of about `n` bytes (> 64 KiB in the large cases).
fn large_json(n: usize) -> Vec<u8> {
    let mut b = b"{\"blob\":\"".to_vec();
    b.extend_from_slice(&pattern(n));
    b.extend_from_slice(b"\"}");
    b
}

/// Writes `method path` with `body` to `c` in `shape`. Write errors are
/// ignored: the response read afterwards shows what happened.
fn send_shaped(c: &mut Client, method: &str, path: &str, body: &[u8], shape: Shape) {
    let head = |framing: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{framing}\r\n"
        )
        .into_bytes()
    };
    let mut write = |bytes: &[u8]| {
        let _ = c.stream.write_all(bytes);
    };
    match shape {
        Shape::Split => {
            write(&head(&format!("Content-Length: {}\r\n", body.len())));
            std::thread::sleep(WRITE_GAP);
            write(body);
        }
        Shape::OnePiece => {
            let mut all = head(&format!("Content-Length: {}\r\n", body.len()));
            all.extend_from_slice(body);
            write(&all);
        }
        Shape::ChunkedTwoWrites => {
            let (a, b) = body.split_at(body.len() / 2);
            let chunk = |data: &[u8]| {
                let mut v = format!("{:x}\r\n", data.len()).into_bytes();
                v.extend_from_slice(data);
                v.extend_from_slice(b"\r\n");
                v
            };
            write(&head("Transfer-Encoding: chunked\r\n"));
            std::thread::sleep(WRITE_GAP);
            write(&chunk(a));
            std::thread::sleep(WRITE_GAP);
            let mut last = chunk(b);
            last.extend_from_slice(b"0\r\n\r\n");
            write(&last);
        }
    }
}

/// A short description of a response for failure messages.
fn describe(r: &Response) -> String {
    let body = r.text();
    let body = if body.chars().count() > 200 {
        let start: String = body.chars().take(200).collect();
        format!("{start}… ({} bytes)", r.body.len())
    } else {
        body
    };
    format!("{} {:?}", r.status, body)
}

// --- running many cases, reporting every failure -----------------------------

fn panic_text(p: Box<dyn Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "panic".to_string(),
        },
    }
}

/// A named check: `Err` carries what went wrong.
type Case = (String, Box<dyn FnOnce() -> Result<(), String> + Send>);

/// Runs every case on its own thread, each with its own backend and
/// gateway (a panic counts as a failure), and fails with the list of the
/// ones that failed, so one run shows the whole picture.
fn run_cases(what: &str, cases: Vec<Case>) {
    let total = cases.len();
    let running: Vec<_> = cases
        .into_iter()
        .map(|(name, case)| (name, std::thread::spawn(case)))
        .collect();
    let mut failed = Vec::new();
    for (name, thread) in running {
        let outcome = thread.join().unwrap_or_else(|p| Err(panic_text(p)));
        if let Err(why) = outcome {
            failed.push(format!("  {name}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{what}: {} of {total} case(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// --- 1. stale pooled connection, ringgate-origin -------------------------------

/// One case against `ringgate-origin`: warm the pool with `method
/// /idle-close/50`, wait for the origin's FIN on the idle pooled connection,
/// send `method /echo` with `body` in `shape`; expect the origin's 200 echo
/// of exactly that body, and exactly one request counted for it.
fn origin_case(method: &str, shape: Shape, body: &[u8]) -> Result<(), String> {
    let origin = Origin::start("stale");
    let gw = gateway_to(origin.addr());
    let mut c = gw.client();

    let warm_body = small_json(method);
    let mut warm = format!(
        "{method} /prod/idle-close/{ORIGIN_IDLE_CLOSE_MS} HTTP/1.1\r\nHost: t\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        warm_body.len()
    )
    .into_bytes();
    warm.extend_from_slice(&warm_body);
    let r = c.request(warm);
    if (r.status, r.text().as_str()) != (200, "ok\n") {
        return Err(format!("warm-up request failed: {}", describe(&r)));
    }
    wait_for_stale_pooled_connection(origin.addr().port(), "ringgate-origin");
    let before = origin.count();

    send_shaped(&mut c, method, "/prod/echo", body, shape);
    let r = c.read_response();
    if r.status != 200 {
        return Err(format!(
            "expected the origin's 200, got {} (requests counted by the origin: {})",
            describe(&r),
            origin.count() - before
        ));
    }
    let e = Echo::parse(&r.body);
    let seen = origin.count() - before;
    if e.method != method
        || e.body_len != body.len() as u64
        || e.body_sha != fnv1a_hex(body)
        || seen != 1
    {
        return Err(format!(
            "the origin saw {} with a {}-byte body (sha {}) in {seen} request(s); \
             sent {method} with {} bytes (sha {})",
            e.method,
            e.body_len,
            e.body_sha,
            body.len(),
            fnv1a_hex(body)
        ));
    }
    Ok(())
}

/// Runs [`origin_case`] for every (method, shape) in `matrix`.
fn origin_cases(what: &str, matrix: &[(&'static str, Shape)], body: fn(&str) -> Vec<u8>) {
    let cases = matrix
        .iter()
        .map(|&(m, shape)| {
            let case: Case = (
                format!("{m} {shape:?}"),
                Box::new(move || origin_case(m, shape, &body(m))),
            );
            case
        })
        .collect();
    run_cases(what, cases);
}

/// Every method in `shape`.
fn each_method(shape: Shape) -> Vec<(&'static str, Shape)> {
    METHODS.iter().map(|&m| (m, shape)).collect()
}

#[test]
fn stale_pool_head_then_body_in_a_second_write() {
    origin_cases(
        "ringgate-origin closed the pooled connection; head, then body 10 ms later",
        &each_method(Shape::Split),
        small_json,
    );
}

#[test]
fn stale_pool_request_in_one_write() {
    origin_cases(
        "ringgate-origin closed the pooled connection; request in one write",
        &each_method(Shape::OnePiece),
        small_json,
    );
}

#[test]
fn stale_pool_chunked_body_in_two_writes() {
    origin_cases(
        "ringgate-origin closed the pooled connection; chunked body in two writes",
        &[
            ("PUT", Shape::ChunkedTwoWrites),
            ("POST", Shape::ChunkedTwoWrites),
        ],
        small_json,
    );
}

#[test]
fn stale_pool_body_over_64_kib() {
    // Too large to be kept whole for a resend: the gateway must notice the
    // close before it writes anything on the pooled connection.
    origin_cases(
        "ringgate-origin closed the pooled connection; 200 KiB body",
        &[
            ("PUT", Shape::Split),
            ("POST", Shape::Split),
            ("PUT", Shape::OnePiece),
            ("POST", Shape::OnePiece),
        ],
        |_| large_json(200 * 1024),
    );
}

// --- 2. stale pooled connection, a real Node.js origin -----------------------

/// `node tests/data/node-origin.js`; killed by PID on drop.
struct NodeOrigin {
    child: Child,
    addr: SocketAddr,
    /// Held open: the script exits when its stdin closes.
    _stdin: ChildStdin,
}

impl NodeOrigin {
    /// Starts the Node.js origin. Without `node` on PATH: fails when `CI` or
    /// `RINGGATE_REQUIRE_NODE` is set, else prints a skip note and returns
    /// `None`.
    fn start() -> Option<NodeOrigin> {
        let script = support::manifest_path("tests/data/node-origin.js");
        let spawned = Command::new("node")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let required = ["CI", "RINGGATE_REQUIRE_NODE"]
                    .into_iter()
                    .find(|v| std::env::var_os(v).is_some());
                if let Some(var) = required {
                    panic!(
                        "`node` is not on PATH but {var} is set: the Node.js origin test \
                         must run (install nodejs)"
                    );
                }
                // Straight to the process's stderr: the test harness captures
                // eprintln! of a passing test, and this note must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                     !!! SKIPPED: `node` is not on PATH, so the Node.js origin test did not\n\
                     !!! run. Install nodejs, or set RINGGATE_REQUIRE_NODE=1 to make this\n\
                     !!! a failure (it is one whenever CI is set).\n\
                     !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
                );
                return None;
            }
            Err(e) => panic!("spawn node {}: {e}", script.display()),
        };
        let stdin = child.stdin.take().expect("node stdin");
        let stdout = child.stdout.take().expect("node stdout");
        // The port line, read on a thread so a silent child cannot hang us.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let status = child.wait();
            panic!("node-origin.js did not print its port (got {line:?}); exit {status:?}");
        };
        Some(NodeOrigin {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _stdin: stdin,
        })
    }

    /// Requests answered so far (`GET /count`, not counted itself).
    fn count(&self) -> u64 {
        let r = Client::connect(self.addr).get("/count");
        assert_eq!(r.status, 200, "node /count: {r:?}");
        r.text().parse().expect("node /count is a number")
    }
}

impl Drop for NodeOrigin {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One case against Node: warm the pool with a GET, wait for Node's
/// keep-alive timeout to close the idle pooled connection, send `method
/// /items` with `body` in `shape`; expect Node's 201 (200 for PATCH and
/// DELETE) with the body's length and hash, and exactly one request seen.
fn node_case(method: &str, shape: Shape, body: &[u8]) -> Result<(), String> {
    let node = NodeOrigin::start().expect("node was found a moment ago");
    let gw = gateway_to(node.addr);
    let mut c = gw.client();

    let r = c.get("/prod/warm");
    if r.status != 200 {
        return Err(format!("warm-up request failed: {}", describe(&r)));
    }
    wait_for_stale_pooled_connection(node.addr.port(), "node");
    let before = node.count();

    send_shaped(&mut c, method, "/prod/items", body, shape);
    let r = c.read_response();
    let expected = if matches!(method, "PUT" | "POST") {
        201
    } else {
        200
    };
    if r.status != expected {
        return Err(format!(
            "expected Node's {expected}, got {} (requests answered by Node: {})",
            describe(&r),
            node.count() - before
        ));
    }
    let j = Json::parse(&r.body);
    let field = |k: &str| j.get(k).cloned().unwrap_or(Json::Null);
    let seen = node.count() - before;
    if field("method").as_str() != Some(method)
        || field("length").as_u64() != Some(body.len() as u64)
        || field("fnv").as_str() != Some(fnv1a_hex(body).as_str())
        || seen != 1
    {
        return Err(format!(
            "Node answered {} after {seen} request(s); sent {method} with {} bytes (fnv {})",
            r.text(),
            body.len(),
            fnv1a_hex(body)
        ));
    }
    Ok(())
}

#[test]
fn node_origin_keep_alive_timeout_never_yields_a_gateway_error() {
    // One probe decides whether node is there (and, under CI, fails if not).
    if NodeOrigin::start().is_none() {
        return;
    }
    let mut cases: Vec<Case> = Vec::new();
    for m in METHODS {
        cases.push((
            format!("{m} Split"),
            Box::new(move || node_case(m, Shape::Split, &small_json(m))),
        ));
    }
    for m in ["PUT", "POST"] {
        cases.push((
            format!("{m} OnePiece"),
            Box::new(move || node_case(m, Shape::OnePiece, &small_json(m))),
        ));
        cases.push((
            format!("{m} ChunkedTwoWrites"),
            Box::new(move || node_case(m, Shape::ChunkedTwoWrites, &small_json(m))),
        ));
    }
    cases.push((
        "POST Split, 200 KiB".to_string(),
        Box::new(|| node_case("POST", Shape::Split, &large_json(200 * 1024))),
    ));
    run_cases(
        "Node.js origin closed the pooled connection (keepAliveTimeout)",
        cases,
    );
}

// --- 3. interim responses ------------------------------------------------------

/// A backend that closes a reused connection right after reading the next
/// request's head, without answering (as a backend does when its idle
/// timer fires just as the request arrives: the close races the request,
/// so no check before writing can see it). Later connections are served:
/// each request's body is read whole and answered 201 with its length.
struct ClosingBackend {
    addr: SocketAddr,
    /// Bodies received whole and answered.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ClosingBackend {
    fn start() -> ClosingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let bodies2 = bodies.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let bodies = bodies2.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    for request in 0.. {
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        };
                        if n == 0 && request == 1 {
                            // The first connection's second request: close
                            // without reading its body or answering.
                            return;
                        }
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        buf.drain(..end);
                        let clen = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        while buf.len() < clen {
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        let body: Vec<u8> = buf.drain(..clen).collect();
                        let answer = format!(
                            "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{}",
                            clen.to_string().len(),
                            clen
                        );
                        bodies.lock().unwrap().push(body);
                        if conn.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        ClosingBackend { addr, bodies }
    }
}

/// The close above races the request, so only a resend can save it: the
/// gateway keeps the head and the body (up to 64 KiB) it sent until the
/// backend answers, and sends them again on a fresh connection — here for
/// idempotent methods whose body arrived after the head (read from the
/// socket, so not in the gateway's read buffer any more).
#[test]
fn a_close_racing_the_request_is_retried_from_the_kept_copy() {
    for method in ["PUT", "DELETE"] {
        let backend = ClosingBackend::start();
        let gw = gateway_to(backend.addr);
        let mut c = gw.client();
        send_shaped(
            &mut c,
            method,
            "/prod/items/1",
            &small_json(method),
            Shape::OnePiece,
        );
        let r = c.read_response();
        assert_eq!(r.status, 201, "{method} warm-up: {}", describe(&r));
        let body = small_json(method);
        send_shaped(&mut c, method, "/prod/items/1", &body, Shape::Split);
        let r = c.read_response();
        assert_eq!(r.status, 201, "{method}: {}", describe(&r));
        assert_eq!(r.text(), body.len().to_string(), "{method}");
        let bodies = backend.bodies.lock().unwrap().clone();
        assert_eq!(
            bodies.len(),
            2,
            "{method}: the backend answered twice in all"
        );
        assert_eq!(bodies[1], body, "{method}: the resent body arrived whole");
    }
}

/// A backend whose answers are written by a closure on the connection, for
/// what `StubBackend` cannot do (several heads, an answer held back). Each
/// request (head plus a Content-Length body) is handed over with the
/// stream; the closure returns whether the connection stays open. Request
/// heads are recorded.
struct ScriptBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl ScriptBackend {
    fn start<F>(answer: F) -> ScriptBackend
    where
        F: Fn(&str, &mut TcpStream) -> bool + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind script backend");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let (stop2, heads2) = (stop.clone(), heads.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let (answer, heads) = (answer.clone(), heads2.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                    let _ = conn.set_nodelay(true);
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        let clen = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        while buf.len() < clen {
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..clen);
                        heads.lock().unwrap().push(head.clone());
                        if !answer(&head, &mut conn) {
                            return;
                        }
                    }
                });
            }
        });
        ScriptBackend { addr, stop, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for ScriptBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

const EARLY_HINTS: &[u8] = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const LINK: &str = "</style.css>; rel=preload";

/// Writes each of `parts` separately (as a backend producing them over time).
fn write_parts(conn: &mut TcpStream, parts: &[&[u8]]) -> bool {
    parts
        .iter()
        .all(|p| conn.write_all(p).and_then(|()| conn.flush()).is_ok())
}

/// The request line's target of a recorded head.
fn target_of(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("")
}

/// A final response with a small body.
fn final_response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Asserts `r` is the forwarded `103 Early Hints` with its Link header.
fn assert_early_hints(r: &Response, context: &str) {
    assert_eq!(
        r.status,
        103,
        "{context}: expected the backend's 103 Early Hints before the final response, got {}",
        describe(r)
    );
    assert_eq!(r.header("link"), Some(LINK), "{context}: {r:?}");
}

/// Reads the rest of an HTTP/1.0 exchange: nothing may follow the final
/// response before the gateway closes (no stray interim response).
fn assert_nothing_follows(c: &mut Client, context: &str) {
    let rest = c.read_to_close();
    assert!(
        rest.is_empty(),
        "{context}: bytes after the final response: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn early_hints_reach_http11_clients_only() {
    let backend = ScriptBackend::start(|_, conn| {
        write_parts(conn, &[EARLY_HINTS, &final_response("200 OK", "styled\n")])
    });
    let gw = gateway_to(backend.addr);

    // HTTP/1.1: the 103 (with its Link), then the 200; the connection is
    // still in step for another request.
    let mut c = gw.client();
    c.send("GET /prod/page HTTP/1.1\r\nHost: t\r\n\r\n");
    let first = c.read_response();
    let second = if first.status < 200 {
        Some(c.read_response())
    } else {
        None
    };
    assert_early_hints(&first, "HTTP/1.1 client");
    let fin = second.unwrap();
    assert_eq!(
        (fin.status, fin.text().as_str()),
        (200, "styled\n"),
        "{fin:?}"
    );
    let again = c.get("/prod/page");
    assert_early_hints(&again, "HTTP/1.1 client, second request");
    assert_eq!(c.read_response().status, 200);

    // HTTP/1.0: only the 200.
    let mut c = gw.client();
    c.send("GET /prod/page HTTP/1.0\r\nHost: t\r\n\r\n");
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "styled\n"),
        "HTTP/1.0 client must get only the final response: {r:?}"
    );
    assert_nothing_follows(&mut c, "HTTP/1.0 client");
}

#[test]
fn early_hints_are_forwarded_before_the_final_response_exists() {
    // The backend sends its 103 and holds the 200 until the client has
    // received the 103 through the gateway (at most 3 s: a gateway that
    // holds interim responses back then shows the 200 first).
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let backend = ScriptBackend::start(move |_, conn| {
        if !write_parts(conn, &[EARLY_HINTS]) {
            return false;
        }
        let _ = release_rx
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(3));
        write_parts(conn, &[&final_response("200 OK", "late\n")])
    });
    let gw = gateway_to(backend.addr);
    let mut c = gw.client();
    c.send("GET /prod/page HTTP/1.1\r\nHost: t\r\n\r\n");
    let first = c.read_response();
    let _ = release_tx.send(());
    assert_early_hints(&first, "103 held back until the final response");
    let fin = c.read_response();
    assert_eq!(
        (fin.status, fin.text().as_str()),
        (200, "late\n"),
        "{fin:?}"
    );
}

#[test]
fn unsolicited_100_continue_reaches_http11_clients_only() {
    let backend = ScriptBackend::start(|_, conn| {
        write_parts(conn, &[CONTINUE, &final_response("201 Created", "made\n")])
    });
    let gw = gateway_to(backend.addr);
    let req =
        |v: &str| format!("POST /prod/things HTTP/{v}\r\nHost: t\r\nContent-Length: 2\r\n\r\n{{}}");

    let mut c = gw.client();
    c.send(req("1.1"));
    let first = c.read_response();
    assert_eq!(
        first.status,
        100,
        "HTTP/1.1 client: expected the backend's 100 Continue before the 201, got {}",
        describe(&first)
    );
    let fin = c.read_response();
    assert_eq!(
        (fin.status, fin.text().as_str()),
        (201, "made\n"),
        "{fin:?}"
    );

    let mut c = gw.client();
    c.send(req("1.0"));
    let r = c.read_response();
    assert_eq!(
        (r.status, r.text().as_str()),
        (201, "made\n"),
        "HTTP/1.0 client must get only the final response: {r:?}"
    );
    assert_nothing_follows(&mut c, "HTTP/1.0 client");
}

/// Sends a `PUT` with `Expect: 100-continue`, waits for the gateway's 100,
/// sends the body; returns the responses up to and including the final one.
fn expect_continue_exchange(c: &mut Client) -> Vec<Response> {
    c.send(
        "PUT /prod/doc HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 13\r\n\r\n",
    );
    let first = c.read_response();
    assert_eq!(
        first.status, 100,
        "the gateway must answer Expect itself before the body is sent: {first:?}"
    );
    c.send(r#"{"doc":"abc"}"#);
    let mut all = vec![first];
    loop {
        let r = c.read_response();
        let done = r.status >= 200;
        all.push(r);
        if done {
            return all;
        }
    }
}

#[test]
fn expect_100_continue_gets_exactly_one_100() {
    // The gateway answers Expect: 100-continue itself and does not forward
    // Expect; a 100 the backend sends anyway is not forwarded a second time.
    let backend = ScriptBackend::start(|head, conn| {
        if head.starts_with("PUT ") {
            write_parts(
                conn,
                &[CONTINUE, &final_response("201 Created", "stored\n")],
            )
        } else {
            write_parts(conn, &[&final_response("200 OK", "doc\n")])
        }
    });
    let gw = gateway_to(backend.addr);
    let mut c = gw.client();
    let got = expect_continue_exchange(&mut c);
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [100, 201], "{got:?}");
    assert_eq!(got[1].text(), "stored\n");
    // Still in step: the next request gets its own answer, no stray 100.
    let r = c.get("/prod/doc");
    assert_eq!((r.status, r.text().as_str()), (200, "doc\n"), "{r:?}");
    let heads = backend.heads();
    assert!(
        heads
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("expect:")),
        "Expect was forwarded: {heads:?}"
    );
    assert_eq!(
        heads.iter().map(|h| target_of(h)).collect::<Vec<_>>(),
        ["/doc", "/doc"]
    );
}

#[test]
fn expect_100_continue_still_gets_early_hints() {
    // Only the backend's 100 is redundant after the gateway's own; its 103
    // is forwarded.
    let backend = ScriptBackend::start(|_, conn| {
        write_parts(
            conn,
            &[
                CONTINUE,
                EARLY_HINTS,
                &final_response("201 Created", "stored\n"),
            ],
        )
    });
    let gw = gateway_to(backend.addr);
    let mut c = gw.client();
    let got = expect_continue_exchange(&mut c);
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [100, 103, 201],
        "expected the gateway's 100, the backend's 103, then the 201: {got:?}"
    );
    assert_early_hints(&got[1], "Expect: 100-continue request");
    assert_eq!(got[2].text(), "stored\n");
}
