//! Shared helpers for ringgate's black-box tests: an in-process server, the
//! `ringgate` binary as a child process, and a raw HTTP/1.1 client that
//! parses responses byte-exactly.
//!
//! Every test file includes this with `mod support;`; not every file uses
//! every helper.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringgate::runtime::{Server, StartOptions};

/// How long any single read waits before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A `[server]` section for tests: an OS-assigned port on 127.0.0.1, one
/// worker, no pinning (tests run in parallel), and a short drain so a
/// server dropped with a connection still open stops quickly.
pub const SERVER: &str = r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
pin_workers = false
drain_timeout = "2s"

"#;

// --- servers -----------------------------------------------------------------

/// An in-process gateway, shut down and joined on drop.
pub struct TestServer {
    server: Option<Server>,
    addr: SocketAddr,
}

impl TestServer {
    /// Parses `toml` (which must listen on port 0) and starts the server.
    pub fn start(toml: &str) -> TestServer {
        let config = ringgate::config::parse(toml, "test.toml")
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n--- config ---\n{toml}"));
        let server = Server::start(config, StartOptions::default())
            .unwrap_or_else(|e| panic!("server did not start: {e}"));
        let addr = server.local_addrs()[0];
        TestServer {
            server: Some(server),
            addr,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new raw connection to the server.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
            server.join();
        }
    }
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A path under the temp directory unique to this process and call.
pub fn temp_path(stem: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "ringgate-test-{}-{}-{nanos}-{stem}.toml",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The `ringgate` binary built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringgate")
}

/// A path relative to the crate root.
pub fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `ringgate serve --config FILE` as a child process; killed on drop if it
/// is still running, its config file removed.
pub struct BinaryServer {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl BinaryServer {
    /// Writes `toml` to a temp file, starts the binary and waits for its
    /// `listening on ADDR` line.
    pub fn start(toml: &str) -> BinaryServer {
        let config = temp_path("serve");
        std::fs::write(&config, toml).expect("write temp config");
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringgate");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = Some(collect(child.stderr.take().unwrap(), stderr.clone()));

        // The listening line, read on a thread so a silent child cannot hang us.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match std::io::BufRead::read_line(&mut reader, &mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(_) => {
                        if let Some(addr) = parse_listening_line(&line) {
                            let _ = tx.send(Some(addr));
                            // Keep draining stdout so the child never blocks on it.
                            let mut sink = Vec::new();
                            let _ = reader.read_to_end(&mut sink);
                            return;
                        }
                    }
                }
            }
        });
        let mut server = BinaryServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
            stderr,
            stderr_thread,
            status: None,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(addr)) => server.addr = addr,
            other => {
                let _ = server.child.kill();
                let status = server.child.wait().ok();
                panic!(
                    "ringgate did not report its address ({other:?}); exit {status:?}; stderr:\n{}",
                    server.stderr()
                );
            }
        }
        server
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new raw connection to the server.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends SIGTERM to the child.
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a valid signal on our own child's pid.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            rc,
            0,
            "kill(SIGTERM) failed: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `limit` for the child to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // No portable "exited" readiness for a child here: poll briefly.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the child wrote to stderr so far (complete once it has exited
    /// and [`BinaryServer::wait_timeout`] returned).
    pub fn stderr(&mut self) -> String {
        if self.status.is_some() {
            if let Some(t) = self.stderr_thread.take() {
                let _ = t.join();
            }
        }
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

fn collect(mut from: ChildStderr, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    })
}

/// `ringgate 0.1.0: listening on 127.0.0.1:4321 (1 worker(s))` → the address.
pub fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    if !line.starts_with("ringgate ") {
        return None;
    }
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let end = rest.find([' ', '\n']).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Runs the binary with `args` to completion: (exit status, stdout, stderr).
pub fn run_binary(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringgate");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// --- the raw client ----------------------------------------------------------

/// One HTTP/1.1 response as received.
#[derive(Debug, Clone)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the headers every ringgate response carries.
    pub fn assert_common_headers(&self) {
        let date = self
            .header("date")
            .unwrap_or_else(|| panic!("no Date: {self:?}"));
        assert_eq!(date.len(), 29, "Date {date:?}");
        assert!(date.ends_with(" GMT"), "Date {date:?}");
        let when =
            parse_http_date(date).unwrap_or_else(|| panic!("Date {date:?} is not IMF-fixdate"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            when.abs_diff(now) <= 5,
            "Date {date:?} is {when}, now is {now}"
        );
        assert_eq!(self.header("server"), Some("ringgate"), "{self:?}");
        assert!(
            self.header("x-request-id").is_some(),
            "no x-request-id: {self:?}"
        );
    }

    /// Asserts a gateway error: status, JSON content type and body.
    pub fn assert_gateway_error(&self, status: u16, body: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        assert_eq!(self.text(), body, "{self:?}");
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → Unix seconds, checking the weekday.
pub fn parse_http_date(s: &str) -> Option<u64> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // from 1970-01-01
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let b = s.as_bytes();
    if b.len() != 29 || &s[3..5] != ", " || b[7] != b' ' || b[11] != b' ' || b[16] != b' ' {
        return None;
    }
    if &s[19..20] != ":" || &s[22..23] != ":" || &s[25..] != " GMT" {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let day = num(5..7)?;
    let month = MONTHS.iter().position(|m| *m == &s[8..11])? as u64 + 1;
    let year = num(12..16)?;
    let (h, m, sec) = (num(17..19)?, num(20..22)?, num(23..25)?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    if DAYS[(days % 7) as usize] != &s[..3] {
        return None;
    }
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// A raw connection with a read buffer: bytes after one response stay for
/// the next call.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// Opens a connection with 5 s read and write timeouts.
pub fn connect(addr: SocketAddr) -> Client {
    Client::connect(addr)
}

impl Client {
    /// Opens a connection with 5 s read and write timeouts.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes` in one call.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .unwrap_or_else(|e| panic!("send: {e}"));
        self.stream.flush().unwrap();
    }

    /// Sends `bytes` and reads one response.
    pub fn request(&mut self, bytes: impl AsRef<[u8]>) -> Response {
        self.send(bytes);
        self.read_response()
    }

    /// Sends `GET path` with `Host: test` and reads one response.
    pub fn get(&mut self, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
    }

    /// Reads one response (1xx, 204 and 304 have no body).
    pub fn read_response(&mut self) -> Response {
        self.read_one(false)
    }

    /// Reads one response to a HEAD request: no body follows the head.
    pub fn read_head_response(&mut self) -> Response {
        self.read_one(true)
    }

    /// Bytes received but not yet consumed by a `read_*` call.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads more bytes into the buffer; false at end of stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
            Err(e) => panic!(
                "read failed ({e}) with {} byte(s) buffered: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Ensures `n` bytes are buffered.
    fn need(&mut self, n: usize, what: &str) {
        while self.buf.len() < n {
            if !self.fill() {
                panic!(
                    "connection closed while reading {what}; buffered: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Position after the first CRLF at or after `from`, reading as needed.
    fn line_end(&mut self, from: usize, what: &str) -> usize {
        loop {
            if let Some(i) = self.buf[from..].windows(2).position(|w| w == b"\r\n") {
                return from + i + 2;
            }
            if !self.fill() {
                panic!(
                    "connection closed while reading {what}; buffered: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    fn read_one(&mut self, head_only: bool) -> Response {
        // The head: up to the blank line.
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill() {
                panic!(
                    "connection closed before a complete response head; buffered: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_end).collect();
        let head = String::from_utf8(head).expect("response head is not UTF-8");
        let mut lines = head[..head.len() - 4].split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        assert!(
            version == "HTTP/1.1" || version == "HTTP/1.0",
            "bad status line {status_line:?}"
        );
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let reason = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {l:?}"));
                assert!(
                    !n.is_empty() && !n.ends_with(' '),
                    "bad header name in {l:?}"
                );
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        let mut response = Response {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
        };
        if head_only || status < 200 || status == 204 || status == 304 {
            return response;
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
        if chunked {
            response.body = self.read_chunked();
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().expect("Content-Length is a number");
            self.need(len, "the response body");
            response.body = self.buf.drain(..len).collect();
        } else {
            // Delimited by the end of the connection.
            while self.fill() {}
            response.body = std::mem::take(&mut self.buf);
        }
        response
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let end = self.line_end(0, "a chunk size");
            let line = String::from_utf8_lossy(&self.buf[..end - 2]).into_owned();
            let size = line.split(';').next().unwrap().trim();
            let size = usize::from_str_radix(size, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            self.buf.drain(..end);
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let end = self.line_end(0, "the trailer section");
                    self.buf.drain(..end);
                    if end == 2 {
                        return body;
                    }
                }
            }
            self.need(size + 2, "chunk data");
            body.extend_from_slice(&self.buf[..size]);
            assert_eq!(
                &self.buf[size..size + 2],
                b"\r\n",
                "chunk data not followed by CRLF"
            );
            self.buf.drain(..size + 2);
        }
    }

    /// Everything until the peer closes (buffered bytes included).
    pub fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// Asserts that nothing more is buffered and the peer closes the
    /// connection (EOF or reset) within the read timeout.
    pub fn assert_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before close: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut byte = [0u8; 256];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Ok(n) => panic!(
                "connection still open: received {:?}",
                String::from_utf8_lossy(&byte[..n])
            ),
            Err(e) => panic!("connection not closed within {READ_TIMEOUT:?}: {e}"),
        }
    }
}
