//! Request smuggling, end to end: tables of malformed requests sent from a
//! raw socket to a *proxied* route, each checked on both sides of the
//! gateway — the status the client got, and every byte the backend got.
//!
//! Every row runs against its own gateway and its own recording backend (a
//! std `TcpListener` on 127.0.0.1:0, a thread per connection, every byte
//! received kept per connection; each request it can frame is answered
//! `200 ok`). A row is one of:
//!
//! - **refused** with a status (400, or 413/414/431 where a limit is the
//!   rule): the client gets that status with `Connection: close`, the
//!   connection is then closed, and the backend receives *nothing* of it;
//! - **accepted**: the client gets the backend's `200 ok`, and the backend
//!   received exactly *one* request, re-emitted canonically — CRLF line
//!   ends, one `Host`, at most one framing header (`Content-Length` in plain
//!   decimal, or `Transfer-Encoding: chunked` with lowercase hex sizes
//!   without leading zeros, no chunk extensions, no trailers) and exactly the
//!   body the gateway framed. The backend's framing then agrees with the
//!   gateway's, so nothing can be smuggled past it.
//!
//! "The backend received nothing" is established without sleeping: after
//! the bad request is answered, a valid control request is sent on a fresh
//! connection and must come back `200 ok` (the backend records a request
//! before it answers it; this also shows the route reaches the backend and
//! the worker survived the row). Then the gateway is shut down and joined;
//! pooling is off, so each of its backend connections was closed when its
//! exchange ended. Then the backend's accept loop takes whatever is still
//! queued and every connection thread is joined (each reads to end of
//! stream). Only then are the recordings read — they are complete — and
//! they must hold the control request and nothing else.
//!
//! Each row is sent in one write of under 4 KiB, so the gateway has the whole
//! request in its first read and any framing error is found before a byte
//! goes to the backend. Failing rows are collected per table and reported
//! together, with the exact bytes sent, what the client got and what the
//! backend got.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use support::{TestServer, SERVER};

// --- the gateway ---------------------------------------------------------------

/// Small limits (so 413/414/431 rows stay under one 4 KiB read), a short
/// head timeout (a row the gateway waits on gets a visible 408 rather than
/// a client read timeout), and `ANY /prod/{proxy+}` proxied to the backend
/// as `/{proxy}` with a short integration timeout.
///
/// No pooling (`max_idle_per_target = 0`): every backend connection ends
/// with its exchange, so the backend's connection threads all reach end of
/// stream and can be joined. (A pooled connection would outlive the
/// in-process server: `Server::join` does not close it.)
fn config(backend: SocketAddr) -> String {
    format!(
        r#"{SERVER}[limits]
max_header_bytes = 1024
max_headers = 16
max_url_bytes = 256
max_body_bytes = 1024
header_read_timeout = "2s"

[[upstream]]
name = "backend"
targets = ["{backend}"]
max_idle_per_target = 0

[[api]]
name = "smuggling"
  [[api.stage]]
  name = "prod"
  [[api.route]]
  route = "ANY /{{proxy+}}"
  [api.route.http_proxy]
  uri = "http://backend/{{proxy}}"
  timeout = "2s"
"#
    )
}

/// The valid request sent after a refused one; the backend sees it as
/// `GET /control`.
const CONTROL: &[u8] = b"GET /prod/control HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

// --- the recording backend -----------------------------------------------------

/// What the backend answers to every request it can frame.
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A backend on 127.0.0.1:0 that records every byte received, per
/// connection (in accept order), and answers each complete request.
struct RecordingBackend {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl RecordingBackend {
    fn start() -> RecordingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the backend");
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (conns2, stop2) = (conns.clone(), stop.clone());
        let acceptor = std::thread::spawn(move || {
            let mut threads = Vec::new();
            let mut take = |stream: TcpStream| {
                let idx = {
                    let mut all = conns2.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                let conns = conns2.clone();
                threads.push(std::thread::spawn(move || serve(stream, idx, &conns)));
            };
            loop {
                if let Ok((stream, _)) = listener.accept() {
                    take(stream);
                }
                if stop2.load(Ordering::SeqCst) {
                    // Take whatever else is queued, then stop.
                    listener.set_nonblocking(true).unwrap();
                    while let Ok((stream, _)) = listener.accept() {
                        stream.set_nonblocking(false).unwrap();
                        take(stream);
                    }
                    return threads;
                }
            }
        });
        RecordingBackend {
            addr,
            conns,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Call after the gateway has been shut down and joined (so its backend
    /// connections are all established and closed): accepts what is still
    /// queued, joins every connection thread (each reads to end of stream)
    /// and returns the complete recordings.
    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop; it queues behind every gateway connection.
        let wake = TcpStream::connect(self.addr);
        let threads = self
            .acceptor
            .take()
            .unwrap()
            .join()
            .expect("backend accept loop panicked");
        drop(wake);
        for t in threads {
            t.join().expect("backend connection thread panicked");
        }
        std::mem::take(&mut *self.conns.lock().unwrap())
    }
}

/// One backend connection: record, answer what can be framed, until the
/// peer closes (a 5 s read timeout is only a backstop).
fn serve(mut stream: TcpStream, idx: usize, conns: &Mutex<Vec<Vec<u8>>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Recorded before any answer: a client that got `ok` knows the
        // request is in the recording.
        conns.lock().unwrap()[idx].extend_from_slice(&buf[..n]);
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = request_end(&pending) {
            pending.drain(..end);
            if stream.write_all(ANSWER).is_err() {
                return;
            }
        }
    }
}

/// Where the request at the start of `buf` ends, if it is complete. Lenient
/// on purpose (leading zeros, extensions and trailers in chunked bodies):
/// it only decides when to answer, so that the gateway gets its response;
/// what was received is judged by [`parse_canonical`].
fn request_end(buf: &[u8]) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let mut length = 0usize;
    let mut chunked = false;
    for line in buf[..head_end - 4].split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value).ok()?.parse().ok()?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with(b"chunked");
        }
    }
    if !chunked {
        let end = head_end.checked_add(length)?;
        return (end <= buf.len()).then_some(end);
    }
    let mut pos = head_end;
    loop {
        let eol = pos + find(&buf[pos..], b"\r\n")?;
        let digits: Vec<u8> = buf[pos..eol]
            .iter()
            .copied()
            .take_while(u8::is_ascii_hexdigit)
            .skip_while(|&b| b == b'0')
            .collect();
        if eol == pos || !buf[pos].is_ascii_hexdigit() || digits.len() > 12 {
            return None; // cannot be framed: never answered
        }
        let size = usize::from_str_radix(std::str::from_utf8(&digits).ok()?, 16).unwrap_or(0);
        pos = eol + 2;
        if size == 0 {
            loop {
                let eol = pos + find(&buf[pos..], b"\r\n")?;
                let blank = eol == pos;
                pos = eol + 2;
                if blank {
                    return Some(pos);
                }
            }
        }
        pos = pos.checked_add(size)?.checked_add(2)?;
        if pos > buf.len() {
            return None;
        }
    }
}

// --- judging what the backend received ------------------------------------

/// How a forwarded request's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Neither `Content-Length` nor `Transfer-Encoding`.
    None,
    /// One `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// One request as the backend received it.
#[derive(Debug)]
struct Seen {
    method: Vec<u8>,
    target: Vec<u8>,
    head: Vec<u8>,
    framing: Framing,
    body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t');
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn esc(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// `bytes` escaped and quoted, for messages.
fn q(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

/// Parses the request at the start of `buf` the strictest way: the form the
/// gateway must re-emit. `Ok((request, bytes used))`; `Err`: why it is not
/// canonical (bare CR or LF, a malformed line, two `Host`s, a framing
/// header twice or both of them, a `Content-Length` that is not plain
/// decimal, chunk sizes with leading zeros or uppercase hex, chunk
/// extensions, trailers, a truncated body).
fn parse_canonical(buf: &[u8]) -> Result<(Seen, usize), String> {
    let head_end = find(buf, b"\r\n\r\n").ok_or("no complete head (no CRLF CRLF)")? + 4;
    let head = &buf[..head_end];
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err(format!("bare LF at byte {i} of the head"));
        }
        if b == b'\r' && head.get(i + 1) != Some(&b'\n') {
            return Err(format!("bare CR at byte {i} of the head"));
        }
    }
    let mut lines = head[..head_end - 4]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    let ok_line = parts.len() == 3
        && !parts[0].is_empty()
        && parts[0].iter().all(|&b| is_tchar(b))
        && !parts[1].is_empty()
        && parts[1].iter().all(|&b| b > b' ' && b != 0x7f)
        && parts[2] == b"HTTP/1.1";
    if !ok_line {
        return Err(format!("malformed request line {}", q(request_line)));
    }
    let (mut hosts, mut lengths, mut codings) = (0, Vec::new(), Vec::new());
    for line in lines {
        let colon = line.iter().position(|&b| b == b':');
        let Some(colon) = colon.filter(|&c| c > 0 && line[..c].iter().all(|&b| is_tchar(b))) else {
            return Err(format!("malformed header line {}", q(line)));
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(format!("control byte in header line {}", q(line)));
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths.push(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.push(value);
        }
    }
    if hosts != 1 {
        return Err(format!("{hosts} Host header(s)"));
    }
    let mut pos = head_end;
    let mut body = Vec::new();
    let framing = match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Framing::None,
        ([n], []) => {
            let canonical = !n.is_empty()
                && n.len() <= 19
                && n.iter().all(u8::is_ascii_digit)
                && (n[0] != b'0' || n.len() == 1);
            if !canonical {
                return Err(format!("Content-Length {} is not canonical", q(n)));
            }
            let n: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
            let Some(data) = buf.get(pos..pos + n) else {
                return Err(format!(
                    "body truncated: Content-Length {n}, {} byte(s) received",
                    buf.len() - pos
                ));
            };
            body.extend_from_slice(data);
            pos += n;
            Framing::Length
        }
        ([], [b"chunked"]) => {
            loop {
                let eol = find(&buf[pos..], b"\r\n")
                    .ok_or("chunked body truncated in a chunk-size line")?;
                let line = &buf[pos..pos + eol];
                let canonical = !line.is_empty()
                    && line.iter().all(|&b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    && (line[0] != b'0' || line.len() == 1)
                    && line.len() <= 15;
                if !canonical {
                    return Err(format!(
                        "chunk-size line {} is not canonical (lowercase hex, no \
                         leading zeros, no extension)",
                        q(line)
                    ));
                }
                let size = usize::from_str_radix(std::str::from_utf8(line).unwrap(), 16).unwrap();
                pos += eol + 2;
                if size == 0 {
                    if buf.get(pos..pos + 2) != Some(b"\r\n") {
                        let rest = &buf[pos..buf.len().min(pos + 64)];
                        return Err(format!(
                            "trailer section forwarded after the last chunk: {}",
                            q(rest)
                        ));
                    }
                    pos += 2;
                    break;
                }
                let Some(data) = buf.get(pos..pos + size) else {
                    return Err("chunked body truncated in chunk data".into());
                };
                body.extend_from_slice(data);
                pos += size;
                if buf.get(pos..pos + 2) != Some(b"\r\n") {
                    return Err("chunk data not followed by CRLF".into());
                }
                pos += 2;
            }
            Framing::Chunked
        }
        _ => {
            let l: Vec<String> = lengths.iter().map(|v| q(v)).collect();
            let c: Vec<String> = codings.iter().map(|v| q(v)).collect();
            return Err(format!(
                "ambiguous framing: Content-Length [{}], Transfer-Encoding [{}]",
                l.join(", "),
                c.join(", ")
            ));
        }
    };
    let seen = Seen {
        method: parts[0].to_vec(),
        target: parts[1].to_vec(),
        head: head.to_vec(),
        framing,
        body,
    };
    Ok((seen, pos))
}

/// Every request in the recordings, each parsed with [`parse_canonical`];
/// every byte must belong to one.
fn backend_requests(conns: &[Vec<u8>]) -> Result<Vec<Seen>, String> {
    let mut all = Vec::new();
    for (i, conn) in conns.iter().enumerate() {
        let mut pos = 0;
        while pos < conn.len() {
            let (seen, used) = parse_canonical(&conn[pos..])
                .map_err(|e| format!("backend connection {i}: {e}; it received {}", q(conn)))?;
            all.push(seen);
            pos += used;
        }
    }
    Ok(all)
}

fn describe(conns: &[Vec<u8>]) -> String {
    let got: Vec<String> = conns
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| q(c))
        .collect();
    if got.is_empty() {
        "nothing".into()
    } else {
        format!("[{}]", got.join(", "))
    }
}

// --- rows ------------------------------------------------------------------

/// What the backend must receive for an accepted row.
#[derive(Clone, Debug)]
struct Fwd {
    method: &'static str,
    target: Vec<u8>,
    framing: Framing,
    body: Vec<u8>,
    /// Byte strings the forwarded head must contain.
    head_has: Vec<Vec<u8>>,
}

impl Fwd {
    /// `POST /x` with `Content-Length: body.len()`.
    fn length(body: &[u8]) -> Fwd {
        Fwd {
            method: "POST",
            target: b"/x".to_vec(),
            framing: Framing::Length,
            body: body.to_vec(),
            head_has: Vec::new(),
        }
    }

    /// `POST /x`, chunked, decoding to `body`.
    fn chunked(body: &[u8]) -> Fwd {
        Fwd {
            framing: Framing::Chunked,
            ..Fwd::length(body)
        }
    }

    /// `GET /x` without a body or framing header.
    fn no_body() -> Fwd {
        Fwd {
            method: "GET",
            framing: Framing::None,
            ..Fwd::length(b"")
        }
    }

    fn method(mut self, method: &'static str) -> Fwd {
        self.method = method;
        self
    }

    fn target(mut self, target: &[u8]) -> Fwd {
        self.target = target.to_vec();
        self
    }

    fn has(mut self, bytes: &[u8]) -> Fwd {
        self.head_has.push(bytes.to_vec());
        self
    }
}

#[derive(Clone, Debug)]
enum Expect {
    /// Refused with this status and the connection closed; nothing reaches
    /// the backend.
    Refused(u16),
    /// Forwarded exactly once, canonically.
    Accepted(Fwd),
}

struct Row {
    name: &'static str,
    raw: Vec<u8>,
    expect: Expect,
}

fn refused(name: &'static str, status: u16, raw: impl AsRef<[u8]>) -> Row {
    Row {
        name,
        raw: raw.as_ref().to_vec(),
        expect: Expect::Refused(status),
    }
}

fn accepted(name: &'static str, raw: impl AsRef<[u8]>, fwd: Fwd) -> Row {
    Row {
        name,
        raw: raw.as_ref().to_vec(),
        expect: Expect::Accepted(fwd),
    }
}

// --- running rows ------------------------------------------------------------

/// Runs `f`, turning a panic (a read timeout, a connection closed without
/// an answer, an assertion in the raw client) into its message.
fn attempt<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

fn run_row(row: &Row) -> Result<(), String> {
    let backend = RecordingBackend::start();
    let gw = TestServer::start(&config(backend.addr()));
    let mut problems = Vec::new();

    let mut client = gw.client();
    let response = attempt(|| {
        client.send(&row.raw);
        client.read_response()
    });
    match (&row.expect, response) {
        (_, Err(e)) => problems.push(format!("client got no response: {e}")),
        (Expect::Refused(status), Ok(r)) => {
            if r.status != *status {
                problems.push(format!(
                    "client got {} {} {:?}, expected {status}",
                    r.status,
                    r.reason,
                    r.text()
                ));
            } else {
                if !r
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    problems.push(format!("refusal without Connection: close: {r:?}"));
                }
                if let Err(e) = attempt(|| client.assert_closed()) {
                    problems.push(format!(
                        "client connection not closed after the refusal: {e}"
                    ));
                }
            }
        }
        (Expect::Accepted(_), Ok(r)) => {
            if (r.status, r.body.as_slice()) != (200, b"ok") {
                problems.push(format!(
                    "client got {} {} {:?}, expected the backend's 200 ok",
                    r.status,
                    r.reason,
                    r.text()
                ));
            }
        }
    }
    drop(client);
    if matches!(row.expect, Expect::Refused(_)) {
        // The gateway still proxies to this backend (and survived the row).
        match attempt(|| gw.client().request(CONTROL)) {
            Ok(r) if (r.status, r.body.as_slice()) == (200, b"ok") => {}
            Ok(r) => problems.push(format!("control request got {} {:?}", r.status, r.text())),
            Err(e) => problems.push(format!("control request failed: {e}")),
        }
    }

    // Shut the gateway down (closing its backend connections), then read
    // the complete recordings.
    drop(gw);
    let conns = backend.finish();
    let verdict = match &row.expect {
        Expect::Refused(_) => check_only_control(&conns),
        Expect::Accepted(fwd) => check_forwarded(&conns, fwd),
    };
    if let Err(e) = verdict {
        problems.push(e);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

/// The backend received the control request and nothing else.
fn check_only_control(conns: &[Vec<u8>]) -> Result<(), String> {
    let requests = backend_requests(conns)?;
    let only_control = matches!(
        requests.as_slice(),
        [c] if c.method == b"GET" && c.target == b"/control"
    );
    if only_control {
        Ok(())
    } else {
        Err(format!(
            "the backend must receive only the control request; it received {}",
            describe(conns)
        ))
    }
}

/// The backend received exactly one request, canonical, as `fwd` says.
fn check_forwarded(conns: &[Vec<u8>], fwd: &Fwd) -> Result<(), String> {
    let requests = backend_requests(conns)?;
    let [seen] = requests.as_slice() else {
        return Err(format!(
            "the backend must receive exactly one request; it received {} ({})",
            requests.len(),
            describe(conns)
        ));
    };
    let mut wrong = Vec::new();
    if seen.method != fwd.method.as_bytes() || seen.target != fwd.target {
        wrong.push(format!(
            "request line {} {}, expected {} {}",
            esc(&seen.method),
            esc(&seen.target),
            fwd.method,
            esc(&fwd.target)
        ));
    }
    if seen.framing != fwd.framing {
        wrong.push(format!(
            "framing {:?}, expected {:?}",
            seen.framing, fwd.framing
        ));
    }
    if seen.body != fwd.body {
        wrong.push(format!("body {}, expected {}", q(&seen.body), q(&fwd.body)));
    }
    for want in &fwd.head_has {
        if find(&seen.head, want).is_none() {
            wrong.push(format!("head lacks {}", q(want)));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}; the backend received {}",
            wrong.join("; "),
            describe(conns)
        ))
    }
}

/// Runs every row; fails listing all the rows that failed.
fn run_table(rows: &[Row]) {
    let mut names = std::collections::HashSet::new();
    for row in rows {
        assert!(names.insert(row.name), "duplicate row name {:?}", row.name);
        assert!(row.raw.len() < 4096, "row {:?} is over one read", row.name);
    }
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|row| {
            run_row(row).err().map(|why| {
                let want = match &row.expect {
                    Expect::Refused(s) => format!("refused {s}"),
                    Expect::Accepted(f) => format!("accepted ({:?})", f.framing),
                };
                format!(
                    "[{}] expected {want}\n    sent {}\n    {why}",
                    row.name,
                    q(&row.raw)
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n\n{}\n",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}

// --- the tables ----------------------------------------------------------------

/// CL.TE, TE.CL, and TE.TE with every obfuscation of `Transfer-Encoding`.
/// RFC 9112 §6.1 and §6.3: a request with both is refused (the gateway may
/// not pick one and forward); only a single final `chunked` is framing the
/// gateway can vouch for, anything else is refused (§6.3 requires 400 when
/// chunked is not final; for an unknown coding before a final chunked, 501
/// would also do — ringgate documents 400). Whitespace around the value is
/// OWS and coding names are case-insensitive, so those are accepted and
/// re-emitted as the one canonical header.
#[test]
fn cl_te_te_cl_and_obfuscated_transfer_encoding() {
    let rows = [
        refused("CL.TE", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED"),
        refused("TE.CL", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"),
        refused("CL.TE with Expect: 100-continue", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED"),
        refused("CL 0 with TE", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE.TE: xchunked with CL", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n"),
        refused("TE xchunked", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE chunked, identity", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE identity, chunked", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE chunked, chunked", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE gzip, chunked", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE identity", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello"),
        refused("TE quoted", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \"chunked\"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE chunked;param", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked;q=1\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE empty with CL", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\nContent-Length: 5\r\n\r\nhello"),
        refused("TE space before colon", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello"),
        refused("TE tab before colon", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding\t: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE vertical tab in name", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding\x0b: chunked\r\nContent-Length: 5\r\n\r\nhello"),
        refused("TE form feed in name", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\n\x0cTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE vertical tab before value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\x0bchunked\r\nContent-Length: 5\r\n\r\nhello"),
        refused("TE form feed before value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\x0cchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE form feed after value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\x0c\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE vertical tab inside value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chun\x0bked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE NBSP before value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \xc2\xa0chunked\r\nContent-Length: 5\r\n\r\nhello"),
        refused("TE obs-folded value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\nhello"),
        refused("two TE fields: chunked, chunked", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("two TE fields: chunked, x", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("two TE fields: identity, chunked", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE with double space and CL", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding:  chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE in HTTP/1.0", 400, b"POST /prod/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("TE and CL in HTTP/1.0", 400, b"POST /prod/x HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello"),
        accepted("TE with odd spaces", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:   chunked  \r\n\r\n5\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello").has(b"\r\nTransfer-Encoding: chunked\r\n")),
        accepted("TE with tabs", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\tchunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("TE without space", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("TE uppercase", b"POST /prod/x HTTP/1.1\r\nHost: t\r\ntransfer-ENCODING: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello").has(b"\r\nTransfer-Encoding: chunked\r\n")),
        // Not a framing header: framed by Content-Length, passed on as an
        // unknown field.
        accepted("Transfer_Encoding with CL", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\nhello", Fwd::length(b"hello")),
        // Hop-by-hop naming of a framing header must not drop the framing.
        accepted("Connection names Content-Length", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("Connection names Transfer-Encoding", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
    ];
    run_table(&rows);
}

/// RFC 9110 §8.6 / RFC 9112 §6.3: `Content-Length` is `1*DIGIT`; anything
/// else (signs, inner spaces, lists, hex, empty, overflow) is refused with
/// 400, as are differing values. Leading zeros are digits: accepted, and
/// re-emitted as plain decimal. ringgate caps the field at 19 digits
/// (documented): longer zero-padded values are refused, which is safe.
#[test]
fn content_length_values() {
    let rows = [
        refused("CL +5", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello"),
        refused("CL -5", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\nhello"),
        refused("CL inner space 1 0", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1 0\r\n\r\nhellohello"),
        refused("CL list 5, 5", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello"),
        refused("CL list 5,5", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5,5\r\n\r\nhello"),
        refused("CL list 5,6", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5,6\r\n\r\nhello!"),
        refused("CL hex 0x5", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello"),
        refused("CL hex a", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: a\r\n\r\n0123456789"),
        refused("CL decimal point", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5.0\r\n\r\nhello"),
        refused("CL exponent", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5e0\r\n\r\nhello"),
        refused("CL empty", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n\r\nhello"),
        refused("CL blank", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length:  \t \r\n\r\nhello"),
        refused("CL word", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: five\r\n\r\nhello"),
        refused("CL overflow 20 digits", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\nhello"),
        refused("CL u64::MAX + 1", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551616\r\n\r\nhello"),
        refused("CL 22 digits zero-padded", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0000000000000000000005\r\n\r\nhello"),
        refused("CL Arabic-Indic digit", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: \xd9\xa5\r\n\r\nhello"),
        refused("CL fullwidth digit", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: \xef\xbc\x95\r\n\r\nhello"),
        refused("CL vertical tab", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\x0b\r\n\r\nhello"),
        refused("CL form feed", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length:\x0c5\r\n\r\nhello"),
        refused("CL space before colon", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello"),
        refused("CL obs-folded", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n 5\r\n\r\nhello"),
        refused("two CL differing", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        refused("two CL, second invalid", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5x\r\n\r\nhello"),
        accepted("CL 005", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 005\r\n\r\nhello", Fwd::length(b"hello").has(b"\r\nContent-Length: 5\r\n")),
        accepted("CL 19 digits zero-padded", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0000000000000000005\r\n\r\nhello", Fwd::length(b"hello").has(b"\r\nContent-Length: 5\r\n")),
        accepted("two CL equal", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("two CL 5 and 05", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello", Fwd::length(b"hello").has(b"\r\nContent-Length: 5\r\n")),
        accepted("CL without space", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length:5\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("CL with trailing OWS", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length:\t5 \t\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("CL name in odd case", b"POST /prod/x HTTP/1.1\r\nHost: t\r\ncontent-LENGTH: 5\r\n\r\nhello", Fwd::length(b"hello").has(b"\r\nContent-Length: 5\r\n")),
        accepted("CL 0 on POST", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", Fwd::length(b"").has(b"\r\nContent-Length: 0\r\n")),
        accepted("GET with a Content-Length body", b"GET /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello").method("GET")),
        accepted("CL 00 on GET", b"GET /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 00\r\n\r\n", Fwd::no_body()),
    ];
    run_table(&rows);
}

/// RFC 9112 §2.2: a recipient MAY take a bare LF as the end of the request
/// line or a field line — accepted, and the head is re-emitted with CRLF.
/// Chunked bodies are not fields: chunk lines end in CRLF only (§7.1), so a
/// bare LF there is refused. A bare CR anywhere is invalid (§2.2): refused.
#[test]
fn bare_lf_and_bare_cr() {
    let rows = [
        accepted("bare LF after the request line", b"POST /prod/x HTTP/1.1\nHost: t\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("bare LF after a field line", b"POST /prod/x HTTP/1.1\r\nHost: t\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("bare LF ending the head", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\nhello", Fwd::length(b"hello")),
        accepted("bare LF everywhere in the head", b"POST /prod/x HTTP/1.1\nHost: t\nContent-Length: 5\n\nhello", Fwd::length(b"hello")),
        accepted("bare LF head, chunked body", b"POST /prod/x HTTP/1.1\nHost: t\nTransfer-Encoding: chunked\n\n5\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("empty CRLF lines before the request line", b"\r\n\r\nPOST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("empty LF lines before the request line", b"\n\nPOST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
        refused("bare LF after chunk size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
        refused("bare LF after chunk data", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n"),
        refused("bare LF after last chunk", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\r\n"),
        refused("bare LF ending the chunked body", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\n"),
        refused("bare LF after chunk extension", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\n"),
        refused("bare LF after trailer", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\n\r\n"),
        refused("bare LF in every chunk line", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"),
        refused("bare CR ending the request line", 400, b"POST /prod/x HTTP/1.1\rHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("bare CR ending every line", 400, b"POST /prod/x HTTP/1.1\rHost: t\rContent-Length: 5\r\rhello"),
        refused("bare CR in method", 400, b"PO\rST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("bare CR in target", 400, b"POST /prod/x\r HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("bare CR in header name", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A\r: 1\r\nContent-Length: 5\r\n\r\nhello"),
        refused("bare CR in header value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\nContent-Length: 5\r\n\r\nhello"),
        refused("bare CR in Content-Length", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r0\r\n\r\nhello"),
        refused("bare CR before the end of the head", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\r\nhello"),
        refused("bare CR after chunk size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\rhello\r\n0\r\n\r\n"),
        refused("CR CR LF after chunk size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\r\nhello\r\n0\r\n\r\n"),
        refused("bare CR after chunk data", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r0\r\n\r\n"),
        refused("bare CR in chunk extension", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n"),
        refused("bare CR in trailer", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n"),
    ];
    run_table(&rows);
}

/// NUL, DEL and bytes 0x80–0xFF (valid and invalid UTF-8) in every position.
/// Method, version and header names are tokens: any such byte is a 400. The
/// request-target is ASCII by RFC 3986, but ringgate (like nginx) accepts
/// well-formed UTF-8 in an origin-form target and forwards it as sent;
/// invalid UTF-8 or NUL there is a 400. Field values may carry obs-text
/// (RFC 9110 §5.5) and are forwarded verbatim; NUL or DEL in one is a 400.
/// Chunk sizes are hex digits only. Chunk extensions and trailers are
/// bounded and otherwise ignored (README): a control byte in an extension
/// is refused, anything else in an extension or a trailer is accepted — and
/// must then be dropped, not forwarded, by the canonical re-emission (a NUL
/// in a trailer field is never passed on: RFC 9110 §5.5).
#[test]
fn nul_and_non_ascii_bytes_in_every_position() {
    let rows = [
        refused("NUL in method", 400, b"PO\0ST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("NUL before method", 400, b"\0POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("UTF-8 in method", 400, b"P\xc3\x96ST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("0xFF in method", 400, b"P\xffST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("0x80 before method", 400, b"\x80POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("NUL in target", 400, b"POST /prod/x\0y HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("DEL in target", 400, b"POST /prod/x\x7f HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("0xFF in target", 400, b"POST /prod/\xff HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("lone continuation byte in target", 400, b"POST /prod/\x80 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("overlong UTF-8 slash in target", 400, b"POST /prod/x\xc0\xafy HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("truncated UTF-8 in target", 400, b"POST /prod/caf\xc3 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("NUL in version", 400, b"POST /prod/x HTTP/1.\0\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("NUL after version", 400, b"POST /prod/x HTTP/1.1\0\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("UTF-8 in version", 400, b"POST /prod/x HTTP/1.\xc2\xb9\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("0xFF in version", 400, b"POST /prod/x HTTP\xff1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("NUL in header name", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-\0A: 1\r\nContent-Length: 5\r\n\r\nhello"),
        refused("UTF-8 in header name", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-Caf\xc3\xa9: 1\r\nContent-Length: 5\r\n\r\nhello"),
        refused("0xFF in header name", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-\xff: 1\r\nContent-Length: 5\r\n\r\nhello"),
        refused("NUL in header value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\nContent-Length: 5\r\n\r\nhello"),
        refused("NUL alone as header value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A: \0\r\nContent-Length: 5\r\n\r\nhello"),
        refused("DEL in header value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\nContent-Length: 5\r\n\r\nhello"),
        refused("NUL in Content-Length", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\0\r\n\r\nhello"),
        refused("UTF-8 in Host", 400, b"POST /prod/x HTTP/1.1\r\nHost: caf\xc3\xa9\r\nContent-Length: 5\r\n\r\nhello"),
        refused("0xFF in Host", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\xff\r\nContent-Length: 5\r\n\r\nhello"),
        refused("NUL in Host", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\0\r\nContent-Length: 5\r\n\r\nhello"),
        refused("NBSP after TE value", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\xc2\xa0\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        refused("NUL in chunk size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\0\r\nhello\r\n0\r\n\r\n"),
        refused("NUL before chunk size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\x005\r\nhello\r\n0\r\n\r\n"),
        refused("fullwidth digit as chunk size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\xef\xbc\x95\r\nhello\r\n0\r\n\r\n"),
        refused("0xFF in chunk size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\xff\r\nhello\r\n0\r\n\r\n"),
        refused("NUL in chunk extension", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\0\r\nhello\r\n0\r\n\r\n"),
        refused("DEL in chunk extension", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\x7f\r\nhello\r\n0\r\n\r\n"),
        accepted("UTF-8 in target", b"POST /prod/caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello").target(b"/caf\xc3\xa9")),
        accepted("4-byte UTF-8 in target", b"POST /prod/\xf0\x9f\x98\x80 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello").target(b"/\xf0\x9f\x98\x80")),
        accepted("UTF-8 in query", b"POST /prod/x?q=\xc3\xa9 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello").target(b"/x?q=\xc3\xa9")),
        accepted("UTF-8 in header value", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A: caf\xc3\xa9\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello").has(b"\r\nX-A: caf\xc3\xa9\r\n")),
        accepted("invalid UTF-8 obs-text in header value", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A: \xff\xfe\x80\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello").has(b"\r\nX-A: \xff\xfe\x80\r\n")),
        accepted("NUL, 0xFF and CRLF in a Content-Length body", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n\0\xff\xc3\x28\r\n0\r", Fwd::length(b"\0\xff\xc3\x28\r\n0\r")),
        accepted("NUL, 0xFF and CRLF 0 CRLF in chunk data", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n\0\xff\r\n0\r\n\r\n0\r\n\r\n", Fwd::chunked(b"\0\xff\r\n0\r\n")),
        accepted("UTF-8 in chunk extension", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"caf\xc3\xa9\"\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("0xFF in chunk extension", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;\xff\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("NUL in trailer", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\0b\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("UTF-8 in trailer value", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: caf\xc3\xa9\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("0xFF in trailer name", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-\xff: 1\r\n\r\n", Fwd::chunked(b"hello")),
    ];
    run_table(&rows);
}

/// Request line and field syntax (RFC 9112 §3, §5): exactly
/// `METHOD SP target SP HTTP-version`; field lines `name ":" OWS value`; no
/// obs-fold (§5.2 lets a server refuse it), no line without a colon, no
/// whitespace before the first field line (§2.2).
#[test]
fn request_line_and_field_syntax() {
    let rows = [
        refused("obs-fold with SP", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nhello"),
        refused("obs-fold with HTAB", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\nContent-Length: 5\r\n\r\nhello"),
        refused("whitespace before the first field", 400, b"POST /prod/x HTTP/1.1\r\n Host: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("field line without colon", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A b\r\nContent-Length: 5\r\n\r\nhello"),
        refused("Content-Length without colon", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length 5\r\n\r\nhello"),
        refused("Transfer-Encoding without colon", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding chunked\r\nContent-Length: 5\r\n\r\nhello"),
        refused("bare field name", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nX-A\r\nContent-Length: 5\r\n\r\nhello"),
        refused("empty field name", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\n: v\r\nContent-Length: 5\r\n\r\nhello"),
        refused("two spaces after method", 400, b"POST  /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("two spaces before version", 400, b"POST /prod/x  HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("space after version", 400, b"POST /prod/x HTTP/1.1 \r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("space before method", 400, b" POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("tab after method", 400, b"POST\t/prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("tab before version", 400, b"POST /prod/x\tHTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("space inside target", 400, b"POST /prod/x y HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("extra token after version", 400, b"POST /prod/x HTTP/1.1 x\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("no target", 400, b"POST  HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("no version", 400, b"POST /prod/x\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("lowercase version", 400, b"POST /prod/x http/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("version HTTP/1.10", 400, b"POST /prod/x HTTP/1.10\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("version HTTP/2.0", 400, b"POST /prod/x HTTP/2.0\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("relative target without slash", 400, b"POST x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("asterisk target on POST", 400, b"POST * HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        accepted("HTTP/1.0 with Content-Length", b"POST /prod/x HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
    ];
    run_table(&rows);
}

/// RFC 9112 §3.2: exactly one `Host`, with a valid `uri-host [ ":" port ]`
/// value, else 400 (a MUST). §3.2.2: an absolute-form target's authority
/// replaces `Host`; a bad one (userinfo, empty, non-ASCII, bad port) is a
/// 400.
#[test]
fn host_and_absolute_form() {
    let rows = [
        refused("no Host", 400, b"POST /prod/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
        refused("empty Host", 400, b"POST /prod/x HTTP/1.1\r\nHost:\r\nContent-Length: 5\r\n\r\nhello"),
        refused("blank Host", 400, b"POST /prod/x HTTP/1.1\r\nHost:  \t \r\nContent-Length: 5\r\n\r\nhello"),
        refused("two Host equal", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("two Host differing", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nhost: u\r\nContent-Length: 5\r\n\r\nhello"),
        refused("Host list", 400, b"POST /prod/x HTTP/1.1\r\nHost: t, u\r\nContent-Length: 5\r\n\r\nhello"),
        refused("Host with inner space", 400, b"POST /prod/x HTTP/1.1\r\nHost: t u\r\nContent-Length: 5\r\n\r\nhello"),
        refused("Host with userinfo", 400, b"POST /prod/x HTTP/1.1\r\nHost: u@t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("Host with path", 400, b"POST /prod/x HTTP/1.1\r\nHost: t/x\r\nContent-Length: 5\r\n\r\nhello"),
        refused("Host with non-numeric port", 400, b"POST /prod/x HTTP/1.1\r\nHost: t:80x\r\nContent-Length: 5\r\n\r\nhello"),
        refused("Host with two ports", 400, b"POST /prod/x HTTP/1.1\r\nHost: t:80:81\r\nContent-Length: 5\r\n\r\nhello"),
        refused("Host with unclosed IPv6 literal", 400, b"POST /prod/x HTTP/1.1\r\nHost: [::1\r\nContent-Length: 5\r\n\r\nhello"),
        refused("absolute-form with userinfo", 400, b"POST http://u@t/prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("absolute-form with empty authority", 400, b"POST http:///prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("absolute-form with space in host", 400, b"POST http://t u/prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("absolute-form with UTF-8 host", 400, b"POST http://caf\xc3\xa9/prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("absolute-form with 0xFF in host", 400, b"POST http://t\xff/prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("absolute-form with non-numeric port", 400, b"POST http://t:x/prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("absolute-form with unknown scheme", 400, b"POST ftp://t/prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("absolute-form with one slash", 400, b"POST http:/t/prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"),
        refused("absolute-form with blank Host", 400, b"POST http://t/prod/x HTTP/1.1\r\nHost:  \r\nContent-Length: 5\r\n\r\nhello"),
        refused("absolute-form with two Host", 400, b"POST http://t/prod/x HTTP/1.1\r\nHost: t\r\nHost: u\r\nContent-Length: 5\r\n\r\nhello"),
        accepted("absolute-form overrides Host", b"POST http://t/prod/x HTTP/1.1\r\nHost: other\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("absolute-form without Host", b"POST http://t/prod/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("absolute-form with uppercase scheme", b"POST HTTP://t:8080/prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("Host with port", b"POST /prod/x HTTP/1.1\r\nHost: t:8080\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
        accepted("Host IPv6 literal", b"POST /prod/x HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 5\r\n\r\nhello", Fwd::length(b"hello")),
    ];
    run_table(&rows);
}

/// RFC 9112 §7.1: `chunk-size = 1*HEXDIG` then optional extensions, CRLF,
/// data, CRLF; the last chunk, a trailer section, CRLF. Anything else is
/// refused. An accepted chunked body must reach the backend canonically:
/// lowercase hex sizes without leading zeros, no extensions (ignored,
/// §7.1.1), no trailers (dropped) — then no chunk size, extension or
/// trailer field can be read differently by the backend. (The gateway
/// relayed chunked bodies byte for byte until this re-emission; those rows
/// fail on such a gateway.)
#[test]
fn chunked_bodies() {
    let rows = [
        accepted("one chunk", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("several chunks", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n1\r\n!\r\n0\r\n\r\n", Fwd::chunked(b"hello!")),
        accepted("GET with a chunked body", b"GET /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello").method("GET")),
        accepted("empty body", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Fwd::chunked(b"")),
        accepted("uppercase hex size", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", Fwd::chunked(b"0123456789")),
        accepted("leading zeros in sizes", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n005\r\nhello\r\n000\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("33 leading zeros", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000000000000000000000005\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("chunk extension", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("extension on the last chunk", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0;last\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("quoted extension holding ; and CRLF-like text", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x;y\\r\\n0\"\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("extension after HTAB", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;\ta=b\r\nhello\r\n0\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("trailer field", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("Content-Length in trailer", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("Transfer-Encoding in trailer", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("trailer without colon", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\ngarbage\r\n\r\n", Fwd::chunked(b"hello")),
        accepted("obs-folded trailer", b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", Fwd::chunked(b"hello")),
        refused("chunk size not hex", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        refused("chunk size 0x5", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
        refused("chunk size +5", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"),
        refused("chunk size -5", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
        refused("space before chunk size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n"),
        refused("space after chunk size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
        refused("empty chunk-size line", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n"),
        refused("chunk size over 64 bits", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n"),
        refused("chunk-size field over 1 KiB", 400, format!("POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{}5\r\nhello\r\n0\r\n\r\n", "0".repeat(1024))),
        refused("chunk data longer than its size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"),
        refused("chunk data shorter than its size", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nhello\r\n0\r\n\r\n"),
        refused("no CRLF after chunk data", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello0\r\n\r\n"),
        refused("LF in chunk extension", 400, b"POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n"),
    ];
    run_table(&rows);
}

/// The limits (README): a header section over `max_header_bytes` or with
/// more than `max_headers` fields → 431; a target over `max_url_bytes` →
/// 414; a `Content-Length` or a chunked body over `max_body_bytes` → 413.
/// None of them may reach the backend.
#[test]
fn size_limits() {
    let big_header = format!(
        "POST /prod/x HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nContent-Length: 5\r\n\r\nhello",
        "a".repeat(1100)
    );
    let mut many = String::from("POST /prod/x HTTP/1.1\r\nHost: t\r\n");
    for i in 0..16 {
        many += &format!("X-{i}: v\r\n");
    }
    many += "Content-Length: 5\r\n\r\nhello";
    let long_target = format!(
        "POST /prod/{} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        "a".repeat(300)
    );
    let chunk_over = format!(
        "POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n{}\r\n0\r\n\r\n",
        "a".repeat(0x401)
    );
    let chunks_over = format!(
        "POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{0}{0}{0}0\r\n\r\n",
        format!("190\r\n{}\r\n", "b".repeat(0x190))
    );
    let at_limit = format!(
        "POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n{}",
        "c".repeat(1024)
    );
    let chunked_at_limit = format!(
        "POST /prod/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n{}\r\n0\r\n\r\n",
        "d".repeat(1024)
    );
    let rows = [
        refused("header section over the limit", 431, big_header),
        refused("too many header fields", 431, many),
        refused("target over the limit", 414, long_target),
        refused(
            "Content-Length over the limit",
            413,
            b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n",
        ),
        refused(
            "Content-Length of 19 digits",
            413,
            b"POST /prod/x HTTP/1.1\r\nHost: t\r\nContent-Length: 9999999999999999999\r\n\r\n",
        ),
        refused("one chunk over the limit", 413, chunk_over),
        refused("chunks adding up over the limit", 413, chunks_over),
        accepted(
            "Content-Length at the limit",
            at_limit,
            Fwd::length(&[b'c'; 1024]),
        ),
        accepted(
            "chunked body at the limit",
            chunked_at_limit,
            Fwd::chunked(&[b'd'; 1024]),
        ),
    ];
    run_table(&rows);
}

// --- the judge itself ------------------------------------------------------

/// [`parse_canonical`] takes the canonical forms and refuses every
/// non-canonical one the tables rely on it to catch.
#[test]
fn the_backend_judge_is_strict() {
    let ok: &[(&[u8], Framing, &[u8])] = &[
        (b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", Framing::None, b""),
        (b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", Framing::Length, b"hello"),
        (b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", Framing::Length, b""),
        (b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n", Framing::Chunked, b"0123456789!"),
    ];
    for (raw, framing, body) in ok {
        let (seen, used) = parse_canonical(raw).unwrap_or_else(|e| panic!("{}: {e}", esc(raw)));
        assert_eq!(
            (seen.framing, seen.body.as_slice(), used),
            (*framing, *body, raw.len())
        );
    }
    let bad: &[&[u8]] = &[
        b"GET /x HTTP/1.1\nHost: h\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n",
        b"GET /x HTTP/1.0\r\nHost: h\r\n\r\n",
        b"GET  /x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /x HTTP/1.1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-A : 1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 05\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n05\r\nhello\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;e\r\nhello\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n00\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: 1\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
    ];
    for raw in bad {
        assert!(parse_canonical(raw).is_err(), "accepted {:?}", esc(raw));
    }
    // Every byte must belong to a request: a leftover is not canonical.
    let leftover = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\nX".to_vec();
    assert!(backend_requests(&[leftover]).is_err());
}
