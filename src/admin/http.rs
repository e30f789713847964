//! The admin server: HTTP/1.1 framing, the request parser, the Unix socket
//! and loopback TCP listeners, bearer-token checks and the connection
//! threads.
//!
//! The parser, [`parse_request`], is a pure function from a byte buffer to
//! a parsed request, a need for more bytes, or a [`RequestError`] that maps
//! to a JSON 4xx; the connection loop only reads, calls it, and writes what
//! [`encode_response`] produces. So every framing rule can be tested
//! without a socket.
//!
//! [`AdminServer`] serves on threads of its own with blocking std I/O: one
//! accept thread per listener and one thread per connection (at most
//! [`Options::max_connections`]). It never touches the monoio workers.
//!
//! Limits: see the [module page](crate::admin) for the wire rules and
//! limits; bodies are framed by `Content-Length` only, and a client that
//! sends more than one request before reading answers gets them answered
//! in order (pipelining), one at a time.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

// --- requests and responses ---------------------------------------------------

/// One parsed admin request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminRequest {
    /// The method, exactly as sent (methods are case-sensitive; clients send
    /// them upper case).
    pub method: String,
    /// The percent-decoded path, without the query; e.g.
    /// `/apis/shop/stages/prod`.
    pub path: String,
    /// The path split on `/` (split before decoding, so an encoded `%2F`
    /// stays inside its segment), empty segments removed, each
    /// percent-decoded. `.` and `..` are kept as they are.
    pub segments: Vec<String>,
    /// The query's `name=value` pairs in order, percent-decoded with `+` as
    /// a space; a pair without `=` has an empty value, empty pairs are
    /// skipped.
    pub query: Vec<(String, String)>,
    /// The body (framed by `Content-Length`; empty when there is none).
    pub body: Vec<u8>,
}

impl AdminRequest {
    /// A request as the server would parse it from `method target`, where
    /// `target` is the path and query as sent on the request line (percent
    /// encoded, starting with `/`). For handler tests that need no socket.
    pub fn new(method: &str, target: &str, body: Vec<u8>) -> Result<AdminRequest, RequestError> {
        let (path, segments, query) = parse_target(target)?;
        Ok(AdminRequest {
            method: method.to_string(),
            path,
            segments,
            query,
            body,
        })
    }

    /// The value of the first query parameter called `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a handler answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminResponse {
    /// The status code.
    pub status: u16,
    /// The body: JSON, or empty (e.g. 202, 204). Never sent with a 204.
    pub body: Vec<u8>,
    /// Extra response headers, e.g. `Location`. `Content-Length`,
    /// `Transfer-Encoding` and `Connection` are the transport's and are
    /// dropped; a `Content-Type` here replaces `application/json`; a header
    /// whose name or value holds CR, LF or NUL is dropped (and logged).
    pub headers: Vec<(String, String)>,
}

impl AdminResponse {
    /// `value` serialized as the body.
    pub fn json(status: u16, value: &Value) -> AdminResponse {
        AdminResponse {
            status,
            // Serializing a `Value` into a Vec cannot fail: its keys are
            // strings and a Vec's writes do not fail.
            body: serde_json::to_vec(value).unwrap_or_default(),
            headers: Vec::new(),
        }
    }

    /// No body.
    pub fn empty(status: u16) -> AdminResponse {
        AdminResponse {
            status,
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The error shape every 4xx/5xx uses: `{"error": code, "message":
    /// message}`, plus `"field": field` when `field` is `Some`.
    pub fn error(
        status: u16,
        code: &str,
        message: impl Into<String>,
        field: Option<&str>,
    ) -> AdminResponse {
        let mut obj = serde_json::Map::new();
        obj.insert("error".into(), Value::String(code.into()));
        obj.insert("message".into(), Value::String(message.into()));
        if let Some(field) = field {
            obj.insert("field".into(), Value::String(field.into()));
        }
        AdminResponse::json(status, &Value::Object(obj))
    }

    /// This response with one more header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The admin endpoints, as the server calls them: once per request, from
/// the connection's thread, several at once from different connections.
/// A panic is caught and answered with a 500 `internal` error.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, req: &AdminRequest) -> AdminResponse;
}

// --- the parser ---------------------------------------------------------------

/// Most header fields in one request head.
pub const MAX_HEADERS: usize = 64;

/// Size limits applied by [`parse_request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers), in bytes; more is
    /// a 431.
    pub max_head: usize,
    /// Largest body, in bytes; a larger `Content-Length` is a 413.
    pub max_body: usize,
}

impl Default for Limits {
    /// 16 KiB of head, 1 MiB of body.
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_body: 1024 * 1024,
        }
    }
}

/// Why a request was refused before it reached the handler. Each maps to
/// a JSON 4xx ([`RequestError::response`]), after which the server closes
/// the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Not HTTP/1.x as httparse reads it, a request target that is not
    /// origin-form (`/...`), bad percent-encoding, a path that is not
    /// UTF-8 once decoded, or a repeated `Authorization`: 400
    /// `bad_request`.
    Malformed(String),
    /// `Content-Length` that is not a plain decimal number, or two that
    /// differ: 400 `bad_content_length`.
    BadContentLength,
    /// `Transfer-Encoding` present: 411 `length_required`.
    TransferEncoding,
    /// The head is longer than [`Limits::max_head`] or has more than
    /// [`MAX_HEADERS`] fields: 431 `header_too_large`.
    HeadTooLarge,
    /// `Content-Length` over [`Limits::max_body`]: 413 `payload_too_large`.
    BodyTooLarge,
}

impl RequestError {
    /// The status code.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Malformed(_) | RequestError::BadContentLength => 400,
            RequestError::TransferEncoding => 411,
            RequestError::HeadTooLarge => 431,
            RequestError::BodyTooLarge => 413,
        }
    }

    /// The `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Malformed(_) => "bad_request",
            RequestError::BadContentLength => "bad_content_length",
            RequestError::TransferEncoding => "length_required",
            RequestError::HeadTooLarge => "header_too_large",
            RequestError::BodyTooLarge => "payload_too_large",
        }
    }

    /// The JSON error response.
    pub fn response(&self, limits: &Limits) -> AdminResponse {
        let message = match self {
            RequestError::Malformed(why) => format!("malformed request: {why}"),
            RequestError::BadContentLength => {
                "Content-Length must be one decimal number".to_string()
            }
            RequestError::TransferEncoding => {
                "Transfer-Encoding is not supported: send the body with Content-Length".to_string()
            }
            RequestError::HeadTooLarge => format!(
                "the request head is over {} bytes or {} header fields",
                limits.max_head, MAX_HEADERS
            ),
            RequestError::BodyTooLarge => {
                format!("the request body is over {} bytes", limits.max_body)
            }
        };
        AdminResponse::error(self.status(), self.code(), message, None)
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Malformed(why) => write!(f, "malformed request: {why}"),
            other => f.write_str(other.code()),
        }
    }
}

impl std::error::Error for RequestError {}

/// A request taken whole from the front of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The request.
    pub request: AdminRequest,
    /// How many bytes of the buffer it took (head and body); what follows
    /// is the next request.
    pub consumed: usize,
    /// Whether the connection stays open after the answer: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// The request was HTTP/1.0 (so a kept-alive answer must say
    /// `Connection: keep-alive`).
    pub http10: bool,
    /// The `Authorization` header's value, raw. Not passed to handlers.
    pub authorization: Option<Vec<u8>>,
}

/// What [`parse_request`] makes of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parse {
    /// A whole request is at the front of the buffer.
    Complete(Parsed),
    /// More bytes are needed. `needed`: the total length the buffer must
    /// reach (always more than it has), once the head is complete and the
    /// body length known. `expect_continue`: the head is complete and asked
    /// for `100 Continue` before the body.
    Incomplete {
        /// The buffer length at which the request will be complete, when
        /// known.
        needed: Option<usize>,
        /// The head asked for `Expect: 100-continue`.
        expect_continue: bool,
    },
    /// The request is refused.
    Invalid(RequestError),
}

/// Parses the request at the front of `buf`. Pure: looks at nothing but
/// `buf[..]`, never past the end of the request it returns, allocates
/// only the parsed request.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head {
                return Parse::Invalid(RequestError::HeadTooLarge);
            }
            return Parse::Incomplete {
                needed: None,
                expect_continue: false,
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parse::Invalid(RequestError::HeadTooLarge);
        }
        Err(e) => return Parse::Invalid(RequestError::Malformed(e.to_string())),
    };
    if head_len > limits.max_head {
        return Parse::Invalid(RequestError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        // httparse fills all three on Complete; refuse rather than panic.
        return Parse::Invalid(RequestError::Malformed("incomplete request line".into()));
    };

    let mut content_length: Option<u64> = None;
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    let mut authorization: Option<Vec<u8>> = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parse::Invalid(RequestError::TransferEncoding);
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = match content_length_value(h.value) {
                Ok(n) => n,
                Err(e) => return Parse::Invalid(e),
            };
            if content_length.is_some_and(|prev| prev != n) {
                return Parse::Invalid(RequestError::BadContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue |= h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Parse::Invalid(RequestError::Malformed(
                    "more than one Authorization header".into(),
                ));
            }
            authorization = Some(h.value.to_vec());
        }
    }
    let keep_alive = match version {
        1 => !close,
        _ => keep_alive && !close,
    };

    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body as u64 {
        return Parse::Invalid(RequestError::BodyTooLarge);
    }
    // max_body fits in usize, so body_len does too.
    let total = head_len + body_len as usize;
    // The target is checked before waiting for the body, so a bad one is
    // refused at once (a head is parsed at most twice: when it is complete
    // and when the body is).
    let (path, segments, query) = match parse_target(target) {
        Ok(t) => t,
        Err(e) => return Parse::Invalid(e),
    };
    if buf.len() < total {
        return Parse::Incomplete {
            needed: Some(total),
            expect_continue,
        };
    }
    Parse::Complete(Parsed {
        request: AdminRequest {
            method: method.to_string(),
            path,
            segments,
            query,
            body: buf[head_len..total].to_vec(),
        },
        consumed: total,
        keep_alive,
        http10: version == 0,
        authorization,
    })
}

/// A `Content-Length` value: ASCII digits only (surrounding blanks
/// allowed). A number too large for u64 is certainly over the body limit.
fn content_length_value(value: &[u8]) -> Result<u64, RequestError> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RequestError::BadContentLength);
    }
    digits
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(RequestError::BodyTooLarge)
}

type Target = (String, Vec<String>, Vec<(String, String)>);

/// Splits an origin-form target into the decoded path, its segments and
/// the query pairs.
fn parse_target(target: &str) -> Result<Target, RequestError> {
    if !target.starts_with('/') {
        return Err(RequestError::Malformed(
            "the request target must be a path starting with '/'".into(),
        ));
    }
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = decode_utf8(raw_path, false, "path")?;
    let segments = raw_path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decode_utf8(s, false, "path"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut query = Vec::new();
    for pair in raw_query.unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        query.push((
            decode_utf8(name, true, "query")?,
            decode_utf8(value, true, "query")?,
        ));
    }
    Ok((path, segments, query))
}

fn decode_utf8(s: &str, plus_as_space: bool, what: &str) -> Result<String, RequestError> {
    let bytes = percent_decode(s.as_bytes(), plus_as_space)
        .ok_or_else(|| RequestError::Malformed(format!("bad percent-encoding in the {what}")))?;
    String::from_utf8(bytes)
        .map_err(|_| RequestError::Malformed(format!("the {what} is not UTF-8 once decoded")))
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_as_space`).
/// `None` when a `%` is not followed by two hex digits.
pub fn percent_decode(s: &[u8], plus_as_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hi = hex_value(*s.get(i + 1)?)?;
                let lo = hex_value(*s.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// --- writing responses ----------------------------------------------------------

/// The response's bytes: status line, `Content-Type: application/json`
/// when there is a body, `Content-Length` (not for 1xx, 204 or 304),
/// the extra headers, `Connection: close` when `close`, then the body
/// (none for 1xx, 204 and 304).
pub fn encode_response(resp: &AdminResponse, close: bool) -> Vec<u8> {
    encode(resp, close.then_some("close"))
}

/// The response's bytes with `Connection: {connection}` when `Some`.
fn encode(resp: &AdminResponse, connection: Option<&str>) -> Vec<u8> {
    let status = resp.status;
    let no_body = matches!(status, 100..=199 | 204 | 304);
    let body: &[u8] = if no_body { &[] } else { &resp.body };
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    let own_type = resp
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if !body.is_empty() && !own_type {
        out.extend_from_slice(b"Content-Type: application/json\r\n");
    }
    if !no_body {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    for (name, value) in &resp.headers {
        let framing = ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f));
        if framing {
            continue;
        }
        let bad = |s: &str| s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
        if name.is_empty() || bad(name) || bad(value) || name.contains(':') {
            eprintln!(
                "ringgate: admin: dropped a response header with a bad name or value: {name:?}"
            );
            continue;
        }
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if let Some(connection) = connection {
        out.extend_from_slice(format!("Connection: {connection}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The reason phrase sent with `status`: the gateway's own table.
pub use crate::http::response::reason;

// --- bearer tokens ----------------------------------------------------------------

/// Whether an `Authorization` value is `Bearer <token>` (scheme
/// case-insensitive). The token comparison takes the same time wherever the
/// first difference is; it depends only on the expected token's length.
pub fn bearer_matches(authorization: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let value = value.trim_ascii();
    let Some(scheme) = value.get(..6) else {
        return false;
    };
    let rest = &value[6..];
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return false;
    }
    constant_time_eq(rest.trim_ascii_start(), token.as_bytes())
}

fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, &e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= std::hint::black_box(g ^ e);
    }
    diff == 0
}

// --- the server --------------------------------------------------------------------

/// Server settings beyond the addresses; [`Default`] is what
/// [`AdminServer::start`] uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long one read (and one write) may wait: an idle keep-alive
    /// connection is closed after this, a request stalled mid-way gets 408.
    /// Default 10 s.
    pub read_timeout: Duration,
    /// How long one request may take to arrive whole, from its first byte.
    /// Default 30 s.
    pub request_timeout: Duration,
    /// Most connections served at once, both listeners together; one more
    /// gets 503 and is closed. Default 32.
    pub max_connections: usize,
    /// Head and body limits.
    pub limits: Limits,
    /// `[metrics] listen`: a plain TCP listener for scrapers that answers
    /// `GET /metrics` without a token and 404 to everything else.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 32,
            limits: Limits::default(),
            metrics_listen: None,
        }
    }
}

/// What a listener's connections may ask for.
#[derive(Clone)]
enum Access {
    /// The Unix socket: everything (its file mode is the access control).
    Socket,
    /// The admin TCP listener: everything, with the bearer token.
    Bearer(Arc<str>),
    /// The scrape listener: `GET /metrics` only, no token.
    Scrape,
}

/// The admin server: the listeners' accept threads and the connection
/// threads. Stopped by [`AdminServer::stop`], or on drop.
pub struct AdminServer {
    socket: PathBuf,
    /// (device, inode) of the socket file we put there, so stop removes
    /// only our own.
    socket_id: (u64, u64),
    tcp_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    /// Clones of the listeners, to shut them down (which wakes accept).
    listeners: Vec<Listener>,
    accept_threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminServer")
            .field("socket", &self.socket)
            .field("tcp_addr", &self.tcp_addr)
            .finish_non_exhaustive()
    }
}

struct Shared {
    handler: Arc<dyn Handler>,
    options: Options,
    stopping: AtomicBool,
    conns: Mutex<Registry>,
}

/// The open connections (clones, to shut them down on stop).
#[derive(Default)]
struct Registry {
    next_id: u64,
    live: HashMap<u64, Conn>,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves the map consistent (each
        // operation is one insert or remove), so a poisoned lock is fine.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AdminServer {
    /// Binds the Unix socket at `socket` (mode 0600, parent directory must
    /// exist; a stale socket file left by a crashed process is replaced,
    /// but if another process is accepting on it, fails with an
    /// [`io::Error`] of kind `AddrInUse` saying so), optionally a TCP
    /// listener at `tcp` (must be loopback: refused otherwise with
    /// `InvalidInput`; the token must not be empty) whose requests must
    /// carry `Authorization: Bearer <token>` (compared in constant time;
    /// missing or wrong → 401 JSON error with `WWW-Authenticate: Bearer`),
    /// and starts serving on threads of its own.
    ///
    /// The socket is bound inside a fresh 0700 directory next to it,
    /// chmod'ed to 0600 there and renamed into place, so it is never
    /// reachable with a wider mode.
    pub fn start(
        socket: &Path,
        tcp: Option<(SocketAddr, String)>,
        handler: Arc<dyn Handler>,
    ) -> io::Result<AdminServer> {
        AdminServer::start_with(socket, tcp, handler, Options::default())
    }

    /// [`AdminServer::start`] with explicit [`Options`].
    pub fn start_with(
        socket: &Path,
        tcp: Option<(SocketAddr, String)>,
        handler: Arc<dyn Handler>,
        options: Options,
    ) -> io::Result<AdminServer> {
        if let Some((addr, token)) = &tcp {
            if !addr.ip().is_loopback() {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "admin TCP address {addr} is not a loopback address: \
                         the admin listener only listens on 127.0.0.0/8 or [::1]"
                    ),
                ));
            }
            if token.is_empty() {
                return Err(io::Error::new(
                    ErrorKind::InvalidInput,
                    "the admin TCP listener needs a non-empty bearer token",
                ));
            }
        }
        if options.max_connections == 0 {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "admin max_connections must be at least 1",
            ));
        }

        let (unix, socket_id) = bind_unix(socket)?;
        let tcp_bound = match &tcp {
            None => None,
            Some((addr, _)) => match TcpListener::bind(addr).and_then(|l| Ok((l.local_addr()?, l)))
            {
                Ok(bound) => Some(bound),
                Err(e) => {
                    remove_if_ours(socket, socket_id);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot listen on admin TCP address {addr}: {e}"),
                    ));
                }
            },
        };

        let metrics_bound = match options.metrics_listen {
            None => None,
            Some(addr) => match TcpListener::bind(addr).and_then(|l| Ok((l.local_addr()?, l))) {
                Ok(bound) => Some(bound),
                Err(e) => {
                    remove_if_ours(socket, socket_id);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot listen on the metrics address {addr}: {e}"),
                    ));
                }
            },
        };
        let shared = Arc::new(Shared {
            handler,
            options,
            stopping: AtomicBool::new(false),
            conns: Mutex::new(Registry::default()),
        });
        let mut server = AdminServer {
            socket: socket.to_path_buf(),
            socket_id,
            tcp_addr: tcp_bound.as_ref().map(|(a, _)| *a),
            metrics_addr: metrics_bound.as_ref().map(|(a, _)| *a),
            shared,
            listeners: Vec::new(),
            accept_threads: Vec::new(),
        };
        let mut to_start = vec![(Listener::Unix(unix), Access::Socket, "admin-accept-unix")];
        if let (Some((_, listener)), Some((_, token))) = (tcp_bound, tcp) {
            to_start.push((
                Listener::Tcp(listener),
                Access::Bearer(Arc::from(token)),
                "admin-accept-tcp",
            ));
        }
        if let Some((_, listener)) = metrics_bound {
            to_start.push((Listener::Tcp(listener), Access::Scrape, "metrics-accept"));
        }
        for (listener, access, name) in to_start {
            // On failure, `server` is dropped: what started is stopped and
            // the socket file removed.
            let clone = listener.try_clone()?;
            let shared = Arc::clone(&server.shared);
            let handle = thread::Builder::new()
                .name(name.into())
                .spawn(move || accept_loop(listener, shared, access))?;
            server.listeners.push(clone);
            server.accept_threads.push(handle);
        }
        Ok(server)
    }

    /// The Unix socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The TCP listener's bound address (port 0 resolved), if there is one.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The scrape listener's bound address (port 0 resolved), if there is
    /// one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// How many connections are being served right now.
    pub fn connections(&self) -> usize {
        self.shared.registry().live.len()
    }

    /// Stops accepting, waits for the threads, removes the socket file.
    ///
    /// Idle connections are closed at once; a request being handled is
    /// answered first (with `Connection: close`). Not to be called from a
    /// handler: it waits for every connection thread, the caller's too.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        for l in &self.listeners {
            // Wakes the blocked accept with an error; it then sees
            // `stopping` and returns.
            let _ = l.shutdown();
        }
        {
            // Under the lock, so a connection registered after this sees
            // `stopping` (it is checked under the same lock).
            let reg = self.shared.registry();
            for conn in reg.live.values() {
                // A blocked read returns end-of-file; a response being
                // written still goes out.
                let _ = conn.shutdown(Shutdown::Read);
            }
        }
        for t in self.accept_threads.drain(..) {
            let _ = t.join();
        }
        remove_if_ours(&self.socket, self.socket_id);
    }
}

impl Drop for AdminServer {
    /// Stops the server as [`AdminServer::stop`] does, if it was not.
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `path` with mode 0600 and no moment of a wider one; returns the
/// listener and the (device, inode) of the socket file.
fn bind_unix(path: &Path) -> io::Result<(UnixListener, (u64, u64))> {
    let shown = path.display();
    if path.file_name().is_none() {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("admin socket path {shown} has no file name"),
        ));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                ErrorKind::NotADirectory,
                format!(
                    "cannot bind admin socket {shown}: {} is not a directory",
                    parent.display()
                ),
            ))
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot bind admin socket {shown}: its directory {}: {e}",
                    parent.display()
                ),
            ))
        }
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    ErrorKind::AddrInUse,
                    format!(
                        "admin socket {shown} is in use: another process is accepting \
                         connections on it (is ringgate already running with this config?)"
                    ),
                ))
            }
            // Nobody listening: a stale socket from a process that died;
            // the rename below replaces it.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot tell whether admin socket {shown} is in use: {e}"),
                ))
            }
        },
        Ok(_) => {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "{shown} exists and is not a socket; not replacing it with the admin socket"
                ),
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot look at {shown}: {e}"),
            ));
        }
    }

    // Bind inside a private directory, set the mode there, then rename into
    // place: nobody else can reach the socket before it is 0600 (the
    // directory is created 0700 minus the umask, never wider).
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let private = parent.join(format!(".rga-{}-{n}", std::process::id()));
    if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&private) {
        let e = if e.kind() == ErrorKind::AlreadyExists {
            // Left by a process with the same pid that died mid-start.
            let _ = fs::remove_file(private.join("s"));
            let _ = fs::remove_dir(&private);
            fs::DirBuilder::new().mode(0o700).create(&private).err()
        } else {
            Some(e)
        };
        if let Some(e) = e {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot bind admin socket {shown}: creating {}: {e}",
                    private.display()
                ),
            ));
        }
    }
    let inner = private.join("s");
    let bound = (|| {
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700))?;
        let listener = UnixListener::bind(&inner)?;
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o600))?;
        fs::rename(&inner, path)?;
        let meta = fs::symlink_metadata(path)?;
        Ok((listener, (meta.dev(), meta.ino())))
    })();
    let _ = fs::remove_file(&inner);
    let _ = fs::remove_dir(&private);
    bound.map_err(|e: io::Error| {
        io::Error::new(e.kind(), format!("cannot bind admin socket {shown}: {e}"))
    })
}

/// Removes the socket file if it is still the one we bound.
fn remove_if_ours(path: &Path, id: (u64, u64)) {
    if let Ok(m) = fs::symlink_metadata(path) {
        if (m.dev(), m.ino()) == id {
            let _ = fs::remove_file(path);
        }
    }
}

// --- listeners and connections --------------------------------------------------------

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Conn> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Conn::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| Conn::Tcp(s)),
        }
    }

    fn try_clone(&self) -> io::Result<Listener> {
        match self {
            Listener::Unix(l) => l.try_clone().map(Listener::Unix),
            Listener::Tcp(l) => l.try_clone().map(Listener::Tcp),
        }
    }

    fn shutdown(&self) -> io::Result<()> {
        match self {
            Listener::Unix(l) => socket2::SockRef::from(l).shutdown(Shutdown::Both),
            Listener::Tcp(l) => socket2::SockRef::from(l).shutdown(Shutdown::Both),
        }
    }
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        match self {
            Conn::Unix(s) => s.try_clone().map(Conn::Unix),
            Conn::Tcp(s) => s.try_clone().map(Conn::Tcp),
        }
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.shutdown(how),
            Conn::Tcp(s) => s.shutdown(how),
        }
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(t),
            Conn::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_write_timeout(t),
            Conn::Tcp(s) => s.set_write_timeout(t),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_nonblocking(on),
            Conn::Tcp(s) => s.set_nonblocking(on),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

fn accept_loop(listener: Listener, shared: Arc<Shared>, access: Access) {
    let mut conn_threads: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let conn = match accepted {
            Ok(c) => c,
            Err(e) => {
                match e.kind() {
                    ErrorKind::Interrupted | ErrorKind::ConnectionAborted => {}
                    _ => {
                        // E.g. out of file descriptors: wait rather than spin.
                        eprintln!("ringgate: admin: accept failed: {e}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
                continue;
            }
        };
        conn_threads.retain(|t| !t.is_finished());

        let id = {
            let mut reg = shared.registry();
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            if reg.live.len() >= shared.options.max_connections {
                None
            } else {
                match conn.try_clone() {
                    Ok(clone) => {
                        let id = reg.next_id;
                        reg.next_id += 1;
                        reg.live.insert(id, clone);
                        Some(id)
                    }
                    Err(e) => {
                        eprintln!("ringgate: admin: cannot serve a connection: {e}");
                        continue;
                    }
                }
            }
        };
        let Some(id) = id else {
            refuse(conn, shared.options.max_connections);
            continue;
        };
        let worker_shared = Arc::clone(&shared);
        let access = access.clone();
        let spawned = thread::Builder::new()
            .name("admin-conn".into())
            .spawn(move || {
                let _registered = Registered {
                    shared: &worker_shared,
                    id,
                };
                serve(conn, &worker_shared, &access);
            });
        match spawned {
            Ok(t) => conn_threads.push(t),
            Err(e) => {
                eprintln!("ringgate: admin: cannot start a connection thread: {e}");
                shared.registry().live.remove(&id);
            }
        }
    }
    for t in conn_threads {
        let _ = t.join();
    }
}

/// Takes a connection out of the registry when its thread ends, even by a
/// panic.
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.shared.registry().live.remove(&self.id);
    }
}

/// Answers a connection over the cap with 503 and closes it, on the accept
/// thread: whatever the client already sent is read first (without
/// waiting), so closing does not reset the connection before the answer is
/// read.
fn refuse(mut conn: Conn, max: usize) {
    let mut scratch = [0u8; 4096];
    if conn.set_nonblocking(true).is_ok() {
        for _ in 0..16 {
            match conn.read(&mut scratch) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
    }
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    let resp = AdminResponse::error(
        503,
        "too_many_connections",
        format!("the admin server already serves {max} connections; try again shortly"),
        None,
    );
    let _ = conn.write_all(&encode_response(&resp, true));
    let _ = conn.shutdown(Shutdown::Write);
}

/// Serves one connection until it closes.
fn serve(mut conn: Conn, shared: &Shared, access: &Access) {
    let opts = &shared.options;
    let _ = conn.set_write_timeout(Some(opts.read_timeout));
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    // When the first byte of the request now in `buf` arrived.
    let mut started: Option<Instant> = None;
    // The length `buf` must reach before parsing again is worthwhile.
    let mut needed: Option<usize> = None;
    let mut sent_continue = false;
    loop {
        if !buf.is_empty() && needed.is_none_or(|n| buf.len() >= n) {
            needed = None;
            match parse_request(&buf, &opts.limits) {
                Parse::Complete(parsed) => {
                    buf.drain(..parsed.consumed);
                    started = (!buf.is_empty()).then(Instant::now);
                    sent_continue = false;
                    let mut close = !parsed.keep_alive;
                    let resp = match access {
                        Access::Bearer(token)
                            if !bearer_matches(parsed.authorization.as_deref(), token) =>
                        {
                            unauthorized(parsed.authorization.is_some())
                        }
                        Access::Scrape if parsed.request.path != "/metrics" => {
                            AdminResponse::error(
                                404,
                                "not_found",
                                "this listener serves GET /metrics only",
                                None,
                            )
                        }
                        _ => dispatch(&*shared.handler, &parsed.request),
                    };
                    close |= shared.stopping.load(Ordering::SeqCst);
                    let connection = if close {
                        Some("close")
                    } else {
                        parsed.http10.then_some("keep-alive")
                    };
                    if conn.write_all(&encode(&resp, connection)).is_err() || close {
                        return;
                    }
                    continue;
                }
                Parse::Incomplete {
                    needed: n,
                    expect_continue,
                } => {
                    needed = n;
                    if expect_continue && !sent_continue {
                        sent_continue = true;
                        if conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                            return;
                        }
                    }
                }
                Parse::Invalid(e) => {
                    let _ = conn.write_all(&encode_response(&e.response(&opts.limits), true));
                    return;
                }
            }
        }

        // Read more, waiting at most read_timeout, and no longer than the
        // request has left.
        let mut wait = opts.read_timeout;
        if let Some(t) = started {
            wait = wait.min(opts.request_timeout.saturating_sub(t.elapsed()));
        }
        if wait.is_zero() || conn.set_read_timeout(Some(wait)).is_err() {
            timed_out(&mut conn, &buf);
            return;
        }
        let len = buf.len();
        let want = needed
            .map_or(16 * 1024, |n| n - len)
            .clamp(4096, 256 * 1024);
        buf.resize(len + want, 0);
        let got = conn.read(&mut buf[len..]);
        buf.truncate(len + *got.as_ref().unwrap_or(&0));
        match got {
            Ok(0) => {
                if !buf.is_empty() {
                    let resp = RequestError::Malformed(
                        "the connection ended in the middle of a request".into(),
                    )
                    .response(&opts.limits);
                    let _ = conn.write_all(&encode_response(&resp, true));
                }
                return;
            }
            Ok(_) => {
                started.get_or_insert_with(Instant::now);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                timed_out(&mut conn, &buf);
                return;
            }
            Err(_) => return,
        }
    }
}

/// A read waited too long: an idle connection just closes; one in the
/// middle of a request is told 408.
fn timed_out(conn: &mut Conn, buf: &[u8]) {
    if !buf.is_empty() {
        let resp = AdminResponse::error(
            408,
            "request_timeout",
            "the request did not arrive in time",
            None,
        );
        let _ = conn.write_all(&encode_response(&resp, true));
    }
}

fn unauthorized(had_header: bool) -> AdminResponse {
    let message = if had_header {
        "the bearer token is wrong"
    } else {
        "this listener requires Authorization: Bearer <token>"
    };
    AdminResponse::error(401, "unauthorized", message, None)
        .with_header("WWW-Authenticate", "Bearer")
}

/// Calls the handler, turning a panic into a 500.
fn dispatch(handler: &dyn Handler, req: &AdminRequest) -> AdminResponse {
    match panic::catch_unwind(AssertUnwindSafe(|| handler.handle(req))) {
        Ok(resp) if (200..=999).contains(&resp.status) => resp,
        Ok(resp) => {
            eprintln!(
                "ringgate: admin: the handler answered {} {} with status {}, \
                 which is not a final HTTP status",
                req.method, req.path, resp.status
            );
            AdminResponse::error(
                500,
                "internal",
                "internal error while handling the request; the server's log has the details",
                None,
            )
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            eprintln!(
                "ringgate: admin: the handler panicked on {} {}: {what}",
                req.method, req.path
            );
            AdminResponse::error(
                500,
                "internal",
                "internal error while handling the request; the server's log has the details",
                None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> Parsed {
        match parse_request(buf, &Limits::default()) {
            Parse::Complete(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_path_segments_and_query() {
        let p = complete(b"GET /apis/a%2Fb//c%20d?x=1+2&y=%41&&z HTTP/1.1\r\n\r\n");
        assert_eq!(p.request.path, "/apis/a/b//c d");
        assert_eq!(p.request.segments, ["apis", "a/b", "c d"]);
        assert_eq!(
            p.request.query,
            [
                ("x".into(), "1 2".into()),
                ("y".into(), "A".into()),
                ("z".into(), String::new())
            ]
        );
        assert_eq!(p.request.query("y"), Some("A"));
        assert!(p.keep_alive);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!complete(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn body_and_pipelining() {
        let buf = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\n\r\n";
        let p = complete(buf);
        assert_eq!(p.request.body, b"abc");
        assert_eq!(&buf[p.consumed..], b"GET /y HTTP/1.1\r\n\r\n");
        let short = &buf[..buf.len() - 22];
        assert_eq!(
            parse_request(short, &Limits::default()),
            Parse::Incomplete {
                needed: Some(42),
                expect_continue: false
            }
        );
    }

    #[test]
    fn bearer() {
        assert!(bearer_matches(Some(b"Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(Some(b"bearer   s3cret "), "s3cret"));
        assert!(!bearer_matches(Some(b"Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some(b"Bearer s3cretx"), "s3cret"));
        assert!(!bearer_matches(Some(b"Bearers3cret"), "s3cret"));
        assert!(!bearer_matches(Some(b"Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }

    #[test]
    fn encode_frames_the_body() {
        let r = AdminResponse::json(200, &serde_json::json!({"a": 1}))
            .with_header("Location", "/x")
            .with_header("Content-Length", "99")
            .with_header("X-Bad", "a\r\nInjected: yes");
        let out = String::from_utf8(encode_response(&r, true)).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\
             Location: /x\r\nConnection: close\r\n\r\n{\"a\":1}"
        );
        let out = encode_response(&AdminResponse::empty(204), false);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
    }
}
