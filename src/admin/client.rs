//! The admin client: one blocking HTTP/1.1 request to a running gateway's
//! admin socket (or its loopback TCP listener), for the `ringgate admin ...`
//! commands.
//!
//! Each [`request`] opens a connection, sends `Connection: close`, and reads
//! the response framed by `Content-Length`, or until the server closes when
//! there is none. Interim `1xx` responses are skipped. The whole exchange
//! has a deadline of 30 s.
//!
//! Limits: no chunked response bodies (the admin server never sends them;
//! such a response is an error), no redirects, no retries, responses over
//! 64 MiB are refused. Errors are one line of text naming the endpoint and
//! what failed, for a person to read.

#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long one request may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Largest response accepted.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Where the admin server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The Unix socket at this path.
    Unix(PathBuf),
    /// The loopback TCP listener, with its bearer token.
    Tcp {
        /// The listener's address.
        addr: SocketAddr,
        /// The token sent as `Authorization: Bearer <token>`.
        token: String,
    },
}

impl fmt::Display for Endpoint {
    /// The socket path, or the TCP address (never the token).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp { addr, .. } => write!(f, "{addr}"),
        }
    }
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body (JSON from the admin server; may be empty).
    pub body: Vec<u8>,
}

/// One request (`Connection: close`), blocking, with a timeout of 30 s.
/// `path_and_query` is sent as written (already percent-encoded, starting
/// with `/`). A body is sent with `Content-Type: application/json`.
///
/// Errors name the endpoint and what failed, e.g. "cannot connect to
/// /x/admin.sock: No such file or directory (is ringgate running with this
/// config?)".
pub fn request(
    endpoint: &Endpoint,
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
) -> Result<Reply, String> {
    request_with_timeout(endpoint, method, path_and_query, body, TIMEOUT)
}

/// [`request`] with another deadline for the whole exchange.
pub fn request_with_timeout(
    endpoint: &Endpoint,
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Reply, String> {
    send(
        endpoint,
        method,
        path_and_query,
        body,
        "application/json",
        timeout,
    )
}

/// [`request`] with a body of another `Content-Type` (such as `text/csv`).
pub fn request_typed(
    endpoint: &Endpoint,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    content_type: &str,
) -> Result<Reply, String> {
    if content_type.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("invalid Content-Type {content_type:?}"));
    }
    send(
        endpoint,
        method,
        path_and_query,
        Some(body),
        content_type,
        TIMEOUT,
    )
}

fn send(
    endpoint: &Endpoint,
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
    content_type: &str,
    timeout: Duration,
) -> Result<Reply, String> {
    let valid_method = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid_method {
        return Err(format!("invalid HTTP method {method:?}"));
    }
    if !path_and_query.starts_with('/')
        || path_and_query
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b >= 0x80)
    {
        return Err(format!(
            "invalid request path {path_and_query:?}: it must start with '/' and be percent-encoded"
        ));
    }
    let deadline = Instant::now() + timeout;
    let mut stream = connect(endpoint, timeout)?;

    let mut out = format!("{method} {path_and_query} HTTP/1.1\r\nHost: localhost\r\n");
    if let Endpoint::Tcp { token, .. } = endpoint {
        if token.bytes().any(|b| b.is_ascii_control()) {
            return Err("the admin token holds a control character".to_string());
        }
        out.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    match body {
        Some(b) => out.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            b.len()
        )),
        None if matches!(method, "POST" | "PUT" | "PATCH") => out.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());

    let failed = |what: &str, e: io::Error| -> String {
        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            format!("no answer from {endpoint} within {} s", timeout.as_secs())
        } else {
            format!("{what} {endpoint} failed: {}", describe(&e))
        }
    };
    stream
        .set_deadline(deadline)
        .map_err(|e| failed("writing to", e))?;
    if let Err(e) = stream.write_all(&bytes) {
        // The server may answer before reading everything (e.g. 413 and
        // close): prefer its answer to the write error.
        if let Ok(reply) = read_reply(&mut stream, deadline) {
            return Ok(reply);
        }
        return Err(failed("sending the request to", e));
    }
    read_reply(&mut stream, deadline).map_err(|e| match e {
        ReadError::Io(e) => failed("reading the answer from", e),
        ReadError::Bad(why) => format!("bad answer from {endpoint}: {why}"),
    })
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// Sets the read and write timeouts to what is left until `deadline`.
    fn set_deadline(&self, deadline: Instant) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(Some(left))?;
                s.set_write_timeout(Some(left))
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(left))?;
                s.set_write_timeout(Some(left))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Stream, String> {
    match endpoint {
        Endpoint::Unix(path) => UnixStream::connect(path).map(Stream::Unix).map_err(|e| {
            let hint = match e.kind() {
                ErrorKind::NotFound => " (is ringgate running with this config?)",
                ErrorKind::ConnectionRefused => {
                    " (nothing is accepting on it: ringgate is not running, or has stopped)"
                }
                ErrorKind::PermissionDenied => {
                    " (the socket is mode 0600: run this as the user that runs ringgate)"
                }
                _ => "",
            };
            format!(
                "cannot connect to {}: {}{hint}",
                path.display(),
                describe(&e)
            )
        }),
        Endpoint::Tcp { addr, .. } => TcpStream::connect_timeout(addr, timeout)
            .map(Stream::Tcp)
            .map_err(|e| {
                let hint = if e.kind() == ErrorKind::ConnectionRefused {
                    " (is ringgate running, with [admin] listen set to this address?)"
                } else {
                    ""
                };
                format!("cannot connect to {addr}: {}{hint}", describe(&e))
            }),
    }
}

/// An I/O error's text without the " (os error N)" suffix.
fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

enum ReadError {
    Io(io::Error),
    Bad(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Reads one final response: skips 1xx, then takes the body by
/// `Content-Length` or until end of file.
fn read_reply(stream: &mut Stream, deadline: Instant) -> Result<Reply, ReadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Parse what we have.
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let parsed = resp
            .parse(&buf)
            .map_err(|e| ReadError::Bad(format!("malformed response head: {e}")))?;
        if let httparse::Status::Complete(head_len) = parsed {
            let status = resp.code.unwrap_or(0);
            if (100..200).contains(&status) {
                buf.drain(..head_len);
                continue;
            }
            let mut length: Option<usize> = None;
            for h in resp.headers.iter() {
                if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(ReadError::Bad(
                        "chunked response bodies are not supported".into(),
                    ));
                }
                if h.name.eq_ignore_ascii_case("content-length") {
                    let n = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .ok_or_else(|| ReadError::Bad("bad Content-Length".into()))?;
                    length = Some(n);
                }
            }
            if matches!(status, 204 | 304) {
                length = Some(0);
            }
            if length.is_some_and(|n| n > MAX_RESPONSE) {
                return Err(ReadError::Bad("response over 64 MiB".into()));
            }
            let mut body = buf.split_off(head_len);
            loop {
                if let Some(n) = length {
                    if body.len() >= n {
                        body.truncate(n);
                        return Ok(Reply { status, body });
                    }
                }
                stream.set_deadline(deadline)?;
                match stream.read(&mut chunk) {
                    Ok(0) => match length {
                        None => return Ok(Reply { status, body }),
                        Some(n) => {
                            return Err(ReadError::Bad(format!(
                                "the connection closed after {} of {n} body bytes",
                                body.len()
                            )))
                        }
                    },
                    Ok(k) => {
                        body.extend_from_slice(&chunk[..k]);
                        if body.len() > MAX_RESPONSE {
                            return Err(ReadError::Bad("response over 64 MiB".into()));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if buf.len() > 64 * 1024 {
            return Err(ReadError::Bad("response head over 64 KiB".into()));
        }
        stream.set_deadline(deadline)?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(ReadError::Bad(if buf.is_empty() {
                    "the connection closed without an answer".into()
                } else {
                    "the connection closed in the middle of the response head".into()
                }))
            }
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}
