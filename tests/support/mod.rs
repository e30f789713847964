//! Shared helpers for ringgate's black-box tests: an in-process server, the
//! `ringgate` binary as a child process, and a raw HTTP/1.1 client that
//! parses responses byte-exactly.
//!
//! Every test file includes this with `mod support;`; not every file uses
//! every helper.
#![allow(dead_code)]

pub mod pki;
pub mod prom;
pub mod ws;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringgate::server::{Server, StartOptions};

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
        TestServer::start_config(config, StartOptions::default())
    }

    /// Starts a server on a validated configuration with `options`.
    pub fn start_config(config: ringgate::config::Config, options: StartOptions) -> TestServer {
        let server =
            Server::start(config, options).unwrap_or_else(|e| panic!("server did not start: {e}"));
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

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
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

/// The `ringgate` binary built for these tests, or the one named by
/// `RINGGATE_TEST_BIN` (e.g. a release build, for figures that differ
/// between debug and release builds).
pub fn binary() -> String {
    std::env::var("RINGGATE_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ringgate").to_string())
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
    ///
    /// Unless `toml` has a `[state]` table, one is added naming a state
    /// directory of this server's own (the default, `state` next to the
    /// file, would be shared by every test's temp file); it is removed on
    /// drop.
    pub fn start(toml: &str) -> BinaryServer {
        let config = temp_path("serve");
        let state = config.with_extension("state");
        let toml = if toml.contains("[state]") {
            toml.to_string()
        } else {
            format!("{toml}\n[state]\ndir = {:?}\n", state.display().to_string())
        };
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

    /// The temp configuration file the child serves.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The admin socket the child's configuration names (`[admin] socket`,
    /// or `admin.sock` in its state directory).
    pub fn admin_socket(&self) -> PathBuf {
        ringgate::config::load(&self.config)
            .expect("the temp config loads")
            .admin_socket()
    }

    /// A new raw connection to the server.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends SIGTERM to the child.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a valid signal on our own child's pid.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({signal}) failed: {}",
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
        let _ = std::fs::remove_dir_all(self.config.with_extension("state"));
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

/// Every value of the header `name` in `headers` (case-insensitive).
fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

impl Response {
    /// The first value of the header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_all(&self.headers, name).into_iter().next()
    }

    /// Every value of the header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
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

    /// Opens a connection to `addr` from the local address `from` (e.g.
    /// `127.0.0.2`, to be another client on loopback), with the timeouts
    /// of [`Client::connect`].
    pub fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> Client {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
        socket
            .connect(&addr.into())
            .unwrap_or_else(|e| panic!("connect {addr} from {from}: {e}"));
        let stream: TcpStream = socket.into();
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

// --- the origin, stub backends and measurements (proxy tests) ---------------

impl Client {
    /// Takes the bytes received but not yet consumed (e.g. the start of a
    /// body after [`Client::read_head_response`], or frames after a 101).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Reads exactly `n` bytes (buffered ones first).
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        self.need(n, "raw bytes");
        self.buf.drain(..n).collect()
    }
}

/// The `ringgate-origin` test server binary.
pub fn origin_binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringgate-origin")
}

/// `ringgate-origin` as a child process (one worker); killed by PID on drop.
pub struct Origin {
    child: Child,
    addrs: Vec<SocketAddr>,
    name: String,
}

impl Origin {
    /// Starts an origin named `name` on an OS-assigned port of 127.0.0.1.
    pub fn start(name: &str) -> Origin {
        Origin::start_on(&[SocketAddr::from(([127, 0, 0, 1], 0))], name)
    }

    /// Starts an origin listening on every address of `listen`.
    pub fn start_on(listen: &[SocketAddr], name: &str) -> Origin {
        Origin::try_start_on(listen, name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Origin::start_on`], but a failure to start (e.g. a port that
    /// was taken meanwhile) is returned instead of panicking.
    pub fn try_start_on(listen: &[SocketAddr], name: &str) -> Result<Origin, String> {
        let mut cmd = Command::new(origin_binary());
        for a in listen {
            cmd.arg("--listen").arg(a.to_string());
        }
        let mut child = cmd
            .args(["--name", name, "--workers", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn ringgate-origin: {e}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stderr.take().unwrap(), stderr.clone());
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
                        // `origin NAME listening on 127.0.0.1:PORT`
                        let addr = line
                            .trim_end()
                            .rsplit_once("listening on ")
                            .and_then(|(_, a)| a.parse::<SocketAddr>().ok());
                        if let Some(a) = addr {
                            let _ = tx.send(Some(a));
                        }
                    }
                }
            }
        });
        let mut addrs = Vec::new();
        while addrs.len() < listen.len() {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Some(a)) => addrs.push(a),
                other => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    // Give the stderr thread a moment to collect the message.
                    std::thread::sleep(Duration::from_millis(50));
                    return Err(format!(
                        "ringgate-origin {name} did not report its addresses ({other:?}); \
                         exit {status:?}; stderr:\n{}",
                        String::from_utf8_lossy(&stderr.lock().unwrap())
                    ));
                }
            }
        }
        Ok(Origin {
            child,
            addrs,
            name: name.to_string(),
        })
    }

    /// The (first) listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every listening address, in `--listen` order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The `--name` (the `x-origin` header's value).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A direct connection to the origin (not through the gateway).
    pub fn client(&self) -> Client {
        Client::connect(self.addr())
    }

    /// Requests counted so far (`GET /count`, itself not counted).
    pub fn count(&self) -> u64 {
        let r = self.client().get("/count");
        assert_eq!(r.status, 200, "{r:?}");
        r.text().parse().expect("/count is a number")
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A tiny threaded HTTP/1.1 backend for what the origin cannot do: every
/// request (head plus a Content-Length body) is answered with the bytes
/// `respond` returns; the connection is closed after an answer containing
/// `connection: close` (any case). Request heads are recorded.
pub struct StubBackend {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl StubBackend {
    pub fn start<F>(respond: F) -> StubBackend
    where
        F: Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind stub");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let respond = Arc::new(respond);
        let (stop2, heads2) = (stop.clone(), heads.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let (respond, heads, stop) = (respond.clone(), heads2.clone(), stop2.clone());
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
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
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let answer = respond(&head);
                        heads.lock().unwrap().push(head);
                        if conn.write_all(&answer).is_err() {
                            return;
                        }
                        let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
                        if text.contains("\r\nconnection: close\r\n") {
                            return;
                        }
                    }
                });
            }
        });
        StubBackend { addr, stop, heads }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The request heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for StubBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or `None` once `limit`
/// has passed.
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 64-bit FNV-1a, as the origin's `/echo` computes `body_sha`.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(pub u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// The digest as `/echo` prints it: 16 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// FNV-1a 64 of `data`, as 16 hex digits.
pub fn fnv1a_hex(data: &[u8]) -> String {
    let mut h = Fnv1a::default();
    h.update(data);
    h.hex()
}

/// The origin's body pattern: byte `i` is `'a' + i % 26`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A process's resident set size in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// TCP connections (any state but LISTEN, TIME_WAIT included) between
/// 127.0.0.1 and `port`, counted by their other port, from /proc/net/tcp.
/// A connection closed within the last minute is still counted.
pub fn tcp_connections_with_port(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let mut peers = std::collections::BTreeSet::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] == "0A" {
            continue;
        }
        let port_of = |s: &str| u16::from_str_radix(s.rsplit(':').next()?, 16).ok();
        let (Some(local), Some(remote)) = (port_of(f[1]), port_of(f[2])) else {
            continue;
        };
        if local == port {
            peers.insert(remote);
        } else if remote == port {
            peers.insert(local);
        }
    }
    peers.len()
}

// --- a small JSON reader (for the origin's /echo) ---------------------------

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number as written.
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses a complete JSON text; panics on anything malformed.
    pub fn parse(text: &[u8]) -> Json {
        let mut p = JsonParser { s: text, i: 0 };
        let v = p.value();
        p.ws();
        assert_eq!(
            p.i,
            text.len(),
            "trailing bytes in JSON: {:?}",
            String::from_utf8_lossy(text)
        );
        v
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Num(n) => n.parse().ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Arr(a) => Some(a),
            _ => None,
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "bad JSON ({what}) at byte {}: {:?}",
            self.i,
            String::from_utf8_lossy(self.s)
        )
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.s.get(self.i) {
            Some(b'n') if self.eat(b"null") => Json::Null,
            Some(b't') if self.eat(b"true") => Json::Bool(true),
            Some(b'f') if self.eat(b"false") => Json::Bool(false),
            Some(b'"') => Json::Str(self.string()),
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b"]") {
                    return Json::Arr(items);
                }
                loop {
                    items.push(self.value());
                    self.ws();
                    if self.eat(b"]") {
                        return Json::Arr(items);
                    }
                    if !self.eat(b",") {
                        self.fail("expected , or ]");
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.eat(b"}") {
                    return Json::Obj(members);
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        self.fail("expected a key");
                    }
                    let k = self.string();
                    self.ws();
                    if !self.eat(b":") {
                        self.fail("expected :");
                    }
                    members.push((k, self.value()));
                    self.ws();
                    if self.eat(b"}") {
                        return Json::Obj(members);
                    }
                    if !self.eat(b",") {
                        self.fail("expected , or }");
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                Json::Num(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
            }
            _ => self.fail("unexpected byte"),
        }
    }

    fn hex4(&mut self) -> u32 {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .unwrap_or_else(|| self.fail("bad \\u escape"));
        self.i += 4;
        h
    }

    fn string(&mut self) -> String {
        self.i += 1; // the opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                self.fail("unterminated string")
            };
            self.i += 1;
            match b {
                b'"' => return String::from_utf8_lossy(&out).into_owned(),
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        self.fail("unterminated escape")
                    };
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let mut cp = self.hex4();
                            if (0xD800..0xDC00).contains(&cp) && self.eat(b"\\u") {
                                let lo = self.hex4();
                                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo.wrapping_sub(0xDC00));
                            }
                            char::from_u32(cp).unwrap_or('\u{fffd}')
                        }
                        _ => self.fail("unknown escape"),
                    };
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
                _ => out.push(b),
            }
        }
    }
}

/// What the origin's `/echo` saw.
#[derive(Debug, Clone)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub version: String,
    /// Header fields in order, names as received.
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
    pub body_sha: String,
}

impl Echo {
    /// Parses the body of an `/echo` response.
    pub fn parse(body: &[u8]) -> Echo {
        let j = Json::parse(body);
        let s = |k: &str| {
            j.get(k)
                .and_then(Json::as_str)
                .unwrap_or_else(|| panic!("/echo without {k}: {j:?}"))
                .to_string()
        };
        let headers = j
            .get("headers")
            .and_then(Json::as_array)
            .expect("/echo headers")
            .iter()
            .map(|h| match h.as_array() {
                Some([Json::Str(n), Json::Str(v)]) => (n.clone(), v.clone()),
                _ => panic!("bad /echo header {h:?}"),
            })
            .collect();
        Echo {
            method: s("method"),
            path: s("path"),
            query: j.get("query").and_then(Json::as_str).map(str::to_string),
            version: s("version"),
            headers,
            body_len: j.get("body_len").and_then(Json::as_u64).expect("body_len"),
            body_sha: s("body_sha"),
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_all(&self.headers, name).into_iter().next()
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }
}

/// The headers `ringgate-origin`'s `/echo` received, from its JSON body:
/// (lowercase name, value).
pub fn echo_headers(body: &str) -> Vec<(String, String)> {
    let echo: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The values of header `name` (lowercase) among `headers`.
pub fn header_values<'h>(headers: &'h [(String, String)], name: &str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}
