//! `ringgate-origin`: a fast HTTP/1.1 origin for ringgate's integration tests
//! and benchmarks.
//!
//! ```text
//! ringgate-origin [--listen 127.0.0.1:9000]... [--workers N] [--pin CPU] [--name NAME]
//! ```
//!
//! `--listen` may be repeated and may use port 0. On start the origin prints
//! one line per listener to stdout, `origin NAME listening on 127.0.0.1:PORT`,
//! and flushes. Workers are threads with one monoio runtime each (io_uring,
//! else epoll) sharing the listening sockets; `--pin CPU` pins worker `i` to
//! core `CPU + i`. SIGTERM/SIGINT end the process at once (exit status 0).
//!
//! # Every response
//! carries `x-origin: NAME` and `x-origin-request: N`, where N is the
//! process-wide count of requests served so far, this one included. Requests
//! to `/count` and `/admin/...` are *not* counted (their `x-origin-request`
//! shows the current count), so a test can poll `/count` without moving it.
//! Responses are HTTP/1.1; `connection: close` is sent when the origin closes
//! after the response, `connection: keep-alive` to an HTTP/1.0 client that
//! asked for it.
//!
//! # Routes
//! The first path segment decides (`/echo/a/b` is `/echo`); the query string
//! is ignored except by `/echo`. Any method works; HEAD gets the head the GET
//! would get (same `content-length`) and no body. A bad number in a path
//! gives 400 `bad parameter\n` (connection kept).
//!
//! | route | response |
//! | --- | --- |
//! | `/hello` | 200 `hello, world\n` (13 bytes, `text/plain`): the perf response |
//! | `/bytes/{n}` | 200, n bytes of `abc…xyzabc…` (byte i is `'a' + i % 26`), content-length; n up to 1 GiB, streamed |
//! | `/cacheable/{n}` | as `/bytes/{n}`, with `cache-control: max-age=3600` and `etag: "v1"` (for a cache in the RFC 9111 mode) |
//! | `/revalidating/{n}` | as `/bytes/{n}`, with `cache-control: max-age=1` and `etag: "v1"`; with `If-None-Match: "v1"`: 304 with the same two headers and no body |
//! | `/echo` | 200 `application/json`: `{"method":"POST","path":"/echo/x","query":"a=1"` (or `null` without `?`) `,"version":"HTTP/1.1","headers":[["Host","…"],…],"body_len":N,"body_sha":"<16 hex digits>"}`. Headers in order, names as sent. body_sha is 64-bit FNV-1a of the body (offset 0xcbf29ce484222325, prime 0x100000001b3). Strings are JSON-escaped; bytes that are not UTF-8 appear as `\u00XX`. Content-Length or chunked bodies of any size are hashed while streaming |
//! | `/status/{code}` | that status (200–999), body `status {code}\n`; no body (and no content-length) for 204 and 304 |
//! | `/slow/{ms}` | waits ms, then 200 `slow\n` |
//! | `/slow-body/{ms}` | head with content-length 10 and `slow-` at once, waits ms, then `body\n` |
//! | `/drip/{n}/{ms}` | head with content-length 10n and the first 10 pattern bytes at once, then the other n − 1 pieces of 10 bytes, ms apart |
//! | `/chunked/{n}/{size}` | 200 `transfer-encoding: chunked`, n pattern bytes in chunks of size (last one shorter) |
//! | `/close/{n}` | 200 with neither content-length nor chunking, `connection: close`, n pattern bytes, then close |
//! | `/drop` | closes without answering once the head has arrived (the body is not read) |
//! | `/drop-after-head` | head with content-length 100, 10 body bytes, then close (no `connection: close`) |
//! | `/slow-cut/{ms}` | head with content-length 100 and 10 body bytes at once, waits ms, then closes (FIN) |
//! | `/cut-once/{ms}` | the first request to it since the origin started: as `/slow-cut/{ms}`; every later one: 200 with content-length 100 and the 100 pattern bytes |
//! | `/chunked-cut/{n}` | 200 `transfer-encoding: chunked`, n pattern bytes in chunks of 4096 (last one shorter), then closes (FIN) *without* the last chunk `0\r\n\r\n` |
//! | `/reset-mid-body/{n}` | head with content-length 2n, n pattern bytes, then an abortive close (`SO_LINGER` 0: RST). Bytes not yet sent when the reset goes are lost, so keep n within the peer's receive window |
//! | `/malformed/garbage` | writes `NOT HTTP\r\n\r\n`, closes |
//! | `/malformed/cl-te` | 200 with `content-length: 5` and `transfer-encoding: chunked` (body `5\r\nhello\r\n0\r\n\r\n`), closes |
//! | `/malformed/bad-chunk` | 200 chunked whose first size line is `zz`, closes |
//! | `/malformed/two-cl` | 200 with `content-length: 5` and `content-length: 6`, body `hello`, closes |
//! | `/malformed/bad-status` | `HTTP/1.1 2000 OK` with content-length 3, `ok\n`, closes |
//! | `/keepalive-close` | 200 `bye\n`, `connection: close`, closes |
//! | `/idle-close/{ms}` | 200 `ok\n` keep-alive; closes the connection ms after the response unless a new request started by then |
//! | `/admin/close-idle` | closes (shutdown, FIN) every connection of this process that waits for a request, then answers 200 `closed {k}\n` with `connection: close` and closes. When the answer arrives, the others are closed already |
//! | `/ws` | WebSocket echo: a GET with `Upgrade: websocket`, `Connection: Upgrade` and `Sec-WebSocket-Key` gets 101 with the right `Sec-WebSocket-Accept`; then text/binary/continuation frames are echoed unmasked with the same FIN bit, opcode and payload, ping gets pong, close gets close (same payload) and the connection closes. Payloads over 64 KiB get close 1009. Without a valid upgrade: 400 |
//! | `/count` | 200, body the number of counted requests so far (decimal, no newline) |
//! | anything else | 404 `not found\n` |
//!
//! The cut-off routes (`/drop-after-head`, `/slow-cut`, `/cut-once`'s
//! first answer, `/chunked-cut`, `/reset-mid-body`) do not announce the
//! close (`connection: close` only if the request asked for it): the
//! response looks like a keep-alive one until it stops short. To HEAD,
//! all but `/drop-after-head` send the head only, then close the same way.
//!
//! # Requests
//! Heads up to 64 KiB with up to 64 headers (larger: 431 and close; malformed:
//! 400 and close). Bodies (Content-Length, or chunked with extensions and
//! trailers) are read and discarded before answering, streaming. Both
//! Content-Length and Transfer-Encoding: the body is read as chunked and the
//! connection closed after the response; a Transfer-Encoding other than
//! chunked, a bad chunk or differing Content-Lengths: 400 and close.
//! `Expect: 100-continue` gets `100 Continue` before the body is read.
//! Keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
//! `Connection: keep-alive`. Pipelined requests are answered in order; the
//! answers to a pipelined batch leave in one write.

use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::Parser;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use sha1::{Digest, Sha1};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Initial read buffer per connection.
const BUF_INIT: usize = 16 * 1024;
/// The read buffer never grows past this (a 64 KiB head or WebSocket frame fits).
const BUF_MAX: usize = 80 * 1024;
/// Largest request head.
const HEAD_MAX: usize = 64 * 1024;
/// Longest chunk-size or trailer line in a chunked request body.
const LINE_MAX: usize = 8 * 1024;
/// Pending responses are written once this many bytes wait.
const FLUSH_AT: usize = 64 * 1024;
/// Pattern bodies up to this size are copied into the write buffer.
const INLINE_BODY: u64 = 16 * 1024;
/// Larger pattern bodies are written from `PATTERN` in pieces of this size.
const CHUNK: usize = 64 * 1024;
/// Largest WebSocket payload echoed.
const WS_MAX: u64 = 64 * 1024;
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `'a' + i % 26`, long enough to take a `CHUNK` from any phase.
static PATTERN: [u8; CHUNK + 26] = pattern();
/// Requests served by the process (see the module docs for what counts).
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Set by the first `/cut-once` request.
static CUT_ONCE_USED: AtomicBool = AtomicBool::new(false);
/// Chunk size of `/chunked-cut`.
const CUT_CHUNK: u64 = 4096;

const fn pattern() -> [u8; CHUNK + 26] {
    let mut a = [0u8; CHUNK + 26];
    let mut i = 0;
    while i < a.len() {
        a[i] = b'a' + (i % 26) as u8;
        i += 1;
    }
    a
}

/// `n` pattern bytes starting at body offset `off` (`n <= CHUNK`).
fn pat(off: u64, n: usize) -> &'static [u8] {
    let p = (off % 26) as usize;
    &PATTERN[p..p + n]
}

#[derive(Parser)]
#[command(
    name = "ringgate-origin",
    about = "HTTP/1.1 test and benchmark origin for ringgate"
)]
struct Args {
    /// Address to listen on (repeatable; port 0 picks a free port).
    #[arg(long = "listen", default_value = "127.0.0.1:9000")]
    listen: Vec<SocketAddr>,
    /// Worker threads (one runtime each).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Pin worker i to core CPU + i.
    #[arg(long)]
    pin: Option<usize>,
    /// Sent in every response's x-origin header.
    #[arg(long, default_value = "origin")]
    name: String,
}

fn main() {
    let args = Args::parse();
    if args.name.bytes().any(|b| b < 0x20 || b == 0x7f) {
        eprintln!("ringgate-origin: --name must not contain control characters");
        std::process::exit(2);
    }
    let workers = args.workers.max(1);
    let mut listeners = Vec::new();
    let mut stdout = String::new();
    for addr in &args.listen {
        match bind(*addr) {
            Ok(l) => {
                let local = l.local_addr().map_or(*addr, |a| a);
                stdout.push_str(&format!("origin {} listening on {local}\n", args.name));
                listeners.push(l);
            }
            Err(e) => {
                eprintln!("ringgate-origin: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    let shared = Arc::new(Shared {
        name_hdr: format!("x-origin: {}\r\n", args.name).into_bytes(),
        regs: (0..workers).map(|_| Registry::default()).collect(),
    });
    let mut threads = Vec::new();
    for i in 0..workers {
        let ls: Vec<std::net::TcpListener> = listeners
            .iter()
            .map(|l| l.try_clone().expect("dup listener"))
            .collect();
        let shared = shared.clone();
        let core = args.pin.map(|c| c + i);
        let t = std::thread::Builder::new()
            .name(format!("origin-{i}"))
            .spawn(move || run_worker(i, ls, shared, core))
            .expect("spawn worker");
        threads.push(t);
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(stdout.as_bytes());
        let _ = out.flush();
    }
    drop(listeners);
    // Exit at once on SIGTERM/SIGINT, even if the parent left them ignored.
    match signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT]) {
        Ok(mut signals) => {
            if signals.forever().next().is_some() {
                std::process::exit(0);
            }
        }
        Err(e) => eprintln!("ringgate-origin: no signal handling: {e}"),
    }
    for t in threads {
        let _ = t.join();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// State shared by all workers.
struct Shared {
    /// `x-origin: NAME\r\n`.
    name_hdr: Vec<u8>,
    /// One registry of open connections per worker.
    regs: Vec<Registry>,
}

/// The open connections of one worker, so that idle ones can be closed from
/// elsewhere (`/admin/close-idle` on any worker, `/idle-close` timers).
///
/// Invariant that makes `shutdown_fd` sound: a slot holds the fd of a stream
/// that its connection task still owns; the task frees the slot (under the
/// lock) before it drops the stream, and `shutdown_fd` is only called with
/// the lock held, so the fd cannot be closed or reused meanwhile.
#[derive(Default)]
struct Registry {
    inner: Mutex<RegInner>,
}

#[derive(Default)]
struct RegInner {
    slots: Vec<Slot>,
    free: Vec<usize>,
    next_id: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    fd: RawFd,
    /// Connection id; 0 = free slot.
    id: u64,
    /// Waiting for the first byte of a request.
    idle: bool,
    /// Bumped each time the connection becomes idle.
    epoch: u64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, fd: RawFd) -> (usize, u64) {
        let mut r = self.lock();
        r.next_id += 1;
        let slot = Slot {
            fd,
            id: r.next_id,
            idle: false,
            epoch: 0,
        };
        let i = match r.free.pop() {
            Some(i) => {
                r.slots[i] = slot;
                i
            }
            None => {
                r.slots.push(slot);
                r.slots.len() - 1
            }
        };
        (i, slot.id)
    }

    fn unregister(&self, i: usize) {
        let mut r = self.lock();
        r.slots[i].id = 0;
        r.slots[i].idle = false;
        r.free.push(i);
    }

    /// Marks the connection idle or busy; returns its idle epoch.
    fn set_idle(&self, i: usize, idle: bool) -> u64 {
        let mut r = self.lock();
        let s = &mut r.slots[i];
        s.idle = idle;
        if idle {
            s.epoch += 1;
        }
        s.epoch
    }

    /// Shuts down every idle connection; returns how many.
    fn close_idle(&self) -> usize {
        let r = self.lock();
        let mut n = 0;
        for s in r.slots.iter().filter(|s| s.id != 0 && s.idle) {
            shutdown_fd(s.fd);
            n += 1;
        }
        n
    }

    /// Shuts down connection `id` in slot `i` if it is still idle since `epoch`.
    fn close_if_idle(&self, i: usize, id: u64, epoch: u64) {
        let r = self.lock();
        let s = r.slots[i];
        if s.id == id && s.idle && s.epoch == epoch {
            shutdown_fd(s.fd);
        }
    }
}

/// shutdown(2) both directions: a pending read completes with EOF and the
/// connection task closes the socket. Call only with the registry lock held
/// on a registered fd (see [`Registry`]).
fn shutdown_fd(fd: RawFd) {
    // SAFETY: plain syscall on an fd that, by the registry invariant, is an
    // open socket owned by a live connection task; shutdown does not close
    // or otherwise invalidate the descriptor.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

fn run_worker(
    idx: usize,
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    core: Option<usize>,
) {
    if let Some(id) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            eprintln!("ringgate-origin: worker {idx}: cannot pin to core {id}");
        }
    }
    // io_uring tuned for one thread (kernel 6.1+), plain io_uring, then epoll.
    let mut tuned = io_uring::IoUring::builder();
    tuned.setup_coop_taskrun();
    tuned.setup_single_issuer();
    tuned.setup_defer_taskrun();
    for urb in [Some(tuned), None] {
        let mut b = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new();
        if let Some(urb) = urb {
            b = b.uring_builder(urb);
        }
        if let Ok(mut rt) = b.enable_timer().build() {
            rt.block_on(worker_main(idx, listeners, shared));
            return;
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(worker_main(idx, listeners, shared)),
        Err(e) => eprintln!("ringgate-origin: worker {idx}: no runtime: {e}"),
    }
}

struct Worker {
    idx: usize,
    shared: Arc<Shared>,
}

impl Worker {
    fn reg(&self) -> &Registry {
        &self.shared.regs[self.idx]
    }
}

async fn worker_main(idx: usize, listeners: Vec<std::net::TcpListener>, shared: Arc<Shared>) {
    let w = Rc::new(Worker { idx, shared });
    let mut loops = Vec::new();
    for l in listeners {
        match TcpListener::from_std(l) {
            Ok(l) => loops.push(monoio::spawn(accept_loop(l, w.clone()))),
            Err(e) => eprintln!("ringgate-origin: worker {idx}: listener: {e}"),
        }
    }
    for l in loops {
        l.await;
    }
}

async fn accept_loop(l: TcpListener, w: Rc<Worker>) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                monoio::spawn(serve(s, w.clone()));
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Frees the registry slot; declared after the connection so it drops first.
struct SlotGuard<'a> {
    reg: &'a Registry,
    slot: usize,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.reg.unregister(self.slot);
    }
}

async fn serve(stream: TcpStream, w: Rc<Worker>) {
    let _ = stream.set_nodelay(true);
    let (slot, id) = w.reg().register(stream.as_raw_fd());
    let mut c = Conn {
        stream,
        buf: Vec::with_capacity(BUF_INIT),
        pos: 0,
        out: Vec::with_capacity(4096),
        json: Vec::new(),
        w: w.clone(),
        slot,
        id,
        idle_close: None,
        reqno: 0,
        close: false,
        http10: false,
    };
    let _guard = SlotGuard { reg: w.reg(), slot };
    if c.run().await {
        // Graceful close: everything written, then FIN.
        let _ = c.flush().await;
        let _ = c.stream.shutdown().await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Malformed {
    Garbage,
    ClTe,
    BadChunk,
    TwoCl,
    BadStatus,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Hello,
    Bytes(u64),
    Cacheable(u64),
    Revalidating(u64),
    /// `/revalidating/{n}` asked with `If-None-Match: "v1"`.
    NotModified,
    Echo,
    Status(u16),
    Slow(u64),
    SlowBody(u64),
    Drip(u64, u64),
    Chunked(u64, u64),
    Close(u64),
    Drop,
    DropAfterHead,
    SlowCut(u64),
    CutOnce(u64),
    ChunkedCut(u64),
    ResetMidBody(u64),
    Malformed(Malformed),
    KeepaliveClose,
    IdleClose(u64),
    CloseIdle,
    Ws,
    Count,
    BadParam,
    NotFound,
}

/// What a request head said, detached from the read buffer.
struct Head {
    len: usize,
    method: Method,
    http10: bool,
    keep_alive: bool,
    framing: Framing,
    /// Both Content-Length and Transfer-Encoding: close after answering.
    smuggle: bool,
    expect_continue: bool,
    route: Route,
    /// `Sec-WebSocket-Accept` for a valid upgrade.
    ws_accept: Option<[u8; 28]>,
}

enum Parsed {
    Partial,
    Done(Head),
    /// 400 (or 431 for `TooManyHeaders`) and close.
    Bad(u16),
}

fn route_of(path: &[u8]) -> Route {
    let mut segs = path[1.min(path.len())..].split(|&b| b == b'/');
    let first = segs.next().unwrap_or(b"");
    let mut num = || -> Option<u64> {
        let s = segs.next()?;
        if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0')))
    };
    let r = match first {
        b"hello" => Some(Route::Hello),
        b"bytes" => num().map(Route::Bytes),
        b"cacheable" => num().map(Route::Cacheable),
        b"revalidating" => num().map(Route::Revalidating),
        b"echo" => Some(Route::Echo),
        b"status" => num()
            .filter(|c| (200..=999).contains(c))
            .map(|c| Route::Status(c as u16)),
        b"slow" => num().map(Route::Slow),
        b"slow-body" => num().map(Route::SlowBody),
        b"drip" => match (num(), num()) {
            (Some(n), Some(ms)) => Some(Route::Drip(n, ms)),
            _ => None,
        },
        b"chunked" => match (num(), num()) {
            (Some(n), Some(s)) if s > 0 => Some(Route::Chunked(n, s)),
            _ => None,
        },
        b"close" => num().map(Route::Close),
        b"drop" => Some(Route::Drop),
        b"drop-after-head" => Some(Route::DropAfterHead),
        b"slow-cut" => num().map(Route::SlowCut),
        b"cut-once" => num().map(Route::CutOnce),
        b"chunked-cut" => num().map(Route::ChunkedCut),
        b"reset-mid-body" => num().map(Route::ResetMidBody),
        b"malformed" => match segs.next().unwrap_or(b"") {
            b"garbage" => Some(Route::Malformed(Malformed::Garbage)),
            b"cl-te" => Some(Route::Malformed(Malformed::ClTe)),
            b"bad-chunk" => Some(Route::Malformed(Malformed::BadChunk)),
            b"two-cl" => Some(Route::Malformed(Malformed::TwoCl)),
            b"bad-status" => Some(Route::Malformed(Malformed::BadStatus)),
            _ => return Route::NotFound,
        },
        b"keepalive-close" => Some(Route::KeepaliveClose),
        b"idle-close" => num().map(Route::IdleClose),
        b"admin" => match segs.next() {
            Some(b"close-idle") => Some(Route::CloseIdle),
            _ => return Route::NotFound,
        },
        b"ws" => Some(Route::Ws),
        b"count" => Some(Route::Count),
        _ => return Route::NotFound,
    };
    r.unwrap_or(Route::BadParam)
}

fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |a, &d| a * 10 + u64::from(d - b'0')))
}

/// Parses the head at the start of `buf`; for `/echo` writes the start of the
/// JSON answer into `json`.
fn parse_head(buf: &[u8], json: &mut Vec<u8>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(431),
        Err(_) => return Parsed::Bad(400),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let http10 = req.version == Some(0);
    let target = req.path.unwrap_or("/").as_bytes();
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (target, None),
    };
    let mut route = route_of(path);
    let (mut conn_close, mut conn_ka, mut conn_upgrade, mut up_ws) = (false, false, false, false);
    let (mut cl, mut te, mut expect) = (None::<u64>, None::<bool>, false);
    let mut ws_key: Option<&[u8]> = None;
    let mut inm_v1 = false;
    for h in req.headers.iter() {
        let n = h.name.as_bytes();
        let v = h.value;
        if n.eq_ignore_ascii_case(b"content-length") {
            match (parse_u64(v), cl) {
                (None, _) => return Parsed::Bad(400),
                (Some(a), Some(b)) if a != b => return Parsed::Bad(400),
                (Some(a), _) => cl = Some(a),
            }
        } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked must be the last coding of the last header.
            let last = v.rsplit(|&b| b == b',').next().unwrap_or(b"");
            te = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if n.eq_ignore_ascii_case(b"connection") {
            conn_close |= has_token(v, b"close");
            conn_ka |= has_token(v, b"keep-alive");
            conn_upgrade |= has_token(v, b"upgrade");
        } else if n.eq_ignore_ascii_case(b"upgrade") {
            up_ws |= has_token(v, b"websocket");
        } else if n.eq_ignore_ascii_case(b"sec-websocket-key") {
            ws_key = Some(v.trim_ascii());
        } else if n.eq_ignore_ascii_case(b"expect") {
            expect = v.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if n.eq_ignore_ascii_case(b"if-none-match") {
            inm_v1 |= v.windows(4).any(|w| w == b"\"v1\"");
        }
    }
    if matches!(route, Route::Revalidating(_)) && inm_v1 {
        route = Route::NotModified;
    }
    let framing = match (te, cl) {
        (Some(false), _) => return Parsed::Bad(400),
        (Some(true), _) => Framing::Chunked,
        (None, Some(n)) if n > 0 => Framing::Length(n),
        (None, _) => Framing::None,
    };
    let keep_alive = if http10 {
        conn_ka && !conn_close
    } else {
        !conn_close
    };
    let mut ws_accept = None;
    if route == Route::Ws {
        match ws_key {
            Some(k) if method == Method::Get && conn_upgrade && up_ws && !k.is_empty() => {
                ws_accept = Some(ws_accept_key(k));
            }
            _ => route = Route::BadParam,
        }
    }
    if route == Route::Echo {
        json.clear();
        json.extend_from_slice(b"{\"method\":");
        json_str(json, req.method.unwrap_or("").as_bytes());
        json.extend_from_slice(b",\"path\":");
        json_str(json, path);
        json.extend_from_slice(b",\"query\":");
        match query {
            Some(q) => json_str(json, q),
            None => json.extend_from_slice(b"null"),
        }
        json.extend_from_slice(b",\"version\":");
        json.extend_from_slice(if http10 {
            b"\"HTTP/1.0\""
        } else {
            b"\"HTTP/1.1\""
        });
        json.extend_from_slice(b",\"headers\":[");
        for (i, h) in req.headers.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            json.push(b'[');
            json_str(json, h.name.as_bytes());
            json.push(b',');
            json_str(json, h.value);
            json.push(b']');
        }
        json.extend_from_slice(b"],\"body_len\":");
    }
    Parsed::Done(Head {
        len,
        method,
        http10,
        keep_alive,
        framing,
        smuggle: te.is_some() && cl.is_some(),
        expect_continue: expect && !http10 && framing != Framing::None,
        route,
        ws_accept,
    })
}

/// Appends `s` as a JSON string; bytes that are not UTF-8 become `\u00XX`.
fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut rest = s;
    while !rest.is_empty() {
        let (good, bad) = match std::str::from_utf8(rest) {
            Ok(g) => (g, &rest[rest.len()..]),
            Err(e) => {
                let (g, b) = rest.split_at(e.valid_up_to());
                (std::str::from_utf8(g).unwrap_or(""), b)
            }
        };
        for c in good.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => esc_u(out, c as u8),
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        if let Some((&b, tail)) = bad.split_first() {
            esc_u(out, b);
            rest = tail;
        } else {
            rest = bad;
        }
    }
    out.push(b'"');
}

fn esc_u(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u00");
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 15)]);
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    let mut b = [0u8; 20];
    out.extend_from_slice(fmt_u64(&mut b, n));
}

fn put_hex(out: &mut Vec<u8>, mut n: u64, min_digits: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 16];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = HEX[(n & 15) as usize];
        n >>= 4;
        if n == 0 && b.len() - i >= min_digits {
            break;
        }
    }
    out.extend_from_slice(&b[i..]);
}

fn fnv1a(h: &mut u64, data: &[u8]) {
    for &b in data {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// The reason phrase: the gateway's own table.
fn reason(code: u16) -> &'static str {
    ringgate::http::response::reason(code)
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2): base64 of the SHA-1 of
/// the key followed by the GUID. Hashed in place, encoded into a fixed array:
/// no allocation.
fn ws_accept_key(key: &[u8]) -> [u8; 28] {
    let digest = Sha1::new()
        .chain_update(key)
        .chain_update(WS_GUID)
        .finalize();
    let mut out = [0u8; 28];
    let n = STANDARD
        .encode_slice(digest, &mut out)
        .expect("base64 of 20 bytes is 28 bytes");
    debug_assert_eq!(n, out.len());
    out
}

/// How a request left the connection.
enum Step {
    Next,
    /// Flush, FIN, close.
    Close,
    /// Close without more ado (I/O error, EOF, `/drop`).
    Dead,
}

struct Conn {
    stream: TcpStream,
    /// Bytes read; `pos..len` not yet consumed.
    buf: Vec<u8>,
    pos: usize,
    /// Responses not yet written.
    out: Vec<u8>,
    /// `/echo` JSON under construction.
    json: Vec<u8>,
    w: Rc<Worker>,
    slot: usize,
    id: u64,
    /// Close this long after the connection next goes idle.
    idle_close: Option<u64>,
    /// The current request's number (`x-origin-request`).
    reqno: u64,
    /// Close after the current response.
    close: bool,
    http10: bool,
}

impl Conn {
    /// Serves requests; true to close gracefully, false to just drop.
    async fn run(&mut self) -> bool {
        loop {
            if self.pos == self.buf.len() {
                if !self.flush().await || !self.idle_read().await {
                    return false;
                }
                continue;
            }
            let step = match parse_head(&self.buf[self.pos..], &mut self.json) {
                Parsed::Partial => {
                    let avail = self.buf.len() - self.pos;
                    if avail >= HEAD_MAX {
                        self.bad(431);
                        return true;
                    }
                    if !self.flush().await || !self.fill(avail + 1).await {
                        return false;
                    }
                    continue;
                }
                Parsed::Bad(code) => {
                    self.bad(code);
                    return true;
                }
                Parsed::Done(head) => self.request(head).await,
            };
            match step {
                Step::Next if !self.close => {}
                Step::Next | Step::Close => return true,
                Step::Dead => return false,
            }
        }
    }

    /// Answers 400/431 with `connection: close`.
    fn bad(&mut self, code: u16) {
        self.close = true;
        self.reqno = REQUESTS.fetch_add(1, Ordering::Relaxed) + 1;
        let body: &[u8] = if code == 431 {
            b"head too large\n"
        } else {
            b"bad request\n"
        };
        self.simple(code, b"text/plain", body, false);
    }

    async fn request(&mut self, h: Head) -> Step {
        self.pos += h.len;
        self.http10 = h.http10;
        self.close = !h.keep_alive || h.smuggle;
        let counted = !matches!(h.route, Route::Count | Route::CloseIdle);
        self.reqno = if counted {
            REQUESTS.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            REQUESTS.load(Ordering::Relaxed)
        };
        if h.route == Route::Drop {
            return Step::Dead;
        }
        if h.expect_continue && self.pos == self.buf.len() {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if !self.flush().await {
                return Step::Dead;
            }
        }
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let body_len = match h.framing {
            Framing::None => Some(0),
            Framing::Length(n) => self.skip(n, &mut hash).await.then_some(n),
            Framing::Chunked => self.chunked_body(&mut hash).await,
        };
        let Some(body_len) = body_len else {
            self.bad(400);
            return Step::Close;
        };
        let head = h.method == Method::Head;
        match h.route {
            Route::Hello => self.simple(200, b"text/plain", b"hello, world\n", head),
            Route::Count => {
                let mut b = [0u8; 20];
                let n = fmt_u64(&mut b, REQUESTS.load(Ordering::Relaxed));
                self.simple(200, b"text/plain", n, head);
            }
            Route::NotFound => self.simple(404, b"text/plain", b"not found\n", head),
            Route::BadParam => self.simple(400, b"text/plain", b"bad parameter\n", head),
            Route::Status(code) => {
                let mut body = *b"status 000\n";
                body[7..10].copy_from_slice(&fmt3(code));
                if code == 204 || code == 304 {
                    self.head(code, None, b"text/plain", b"");
                } else {
                    self.simple(code, b"text/plain", &body, head);
                }
            }
            Route::Bytes(n) => {
                self.head(200, Some(n), b"application/octet-stream", b"");
                if !head && !self.pattern(0, n).await {
                    return Step::Dead;
                }
            }
            Route::Revalidating(n) => {
                let extra = b"cache-control: max-age=1\r\netag: \"v1\"\r\n";
                self.head(200, Some(n), b"application/octet-stream", extra);
                if !head && !self.pattern(0, n).await {
                    return Step::Dead;
                }
            }
            Route::NotModified => {
                let extra = b"cache-control: max-age=1\r\netag: \"v1\"\r\n";
                self.head(304, None, b"application/octet-stream", extra);
            }
            Route::Cacheable(n) => {
                let extra = b"cache-control: max-age=3600\r\netag: \"v1\"\r\n";
                self.head(200, Some(n), b"application/octet-stream", extra);
                if !head && !self.pattern(0, n).await {
                    return Step::Dead;
                }
            }
            Route::Echo => {
                let mut json = std::mem::take(&mut self.json);
                put_u64(&mut json, body_len);
                json.extend_from_slice(b",\"body_sha\":\"");
                put_hex(&mut json, hash, 16);
                json.extend_from_slice(b"\"}");
                self.simple(200, b"application/json", &json, head);
                self.json = json;
            }
            Route::Slow(ms) => {
                if !self.flush().await {
                    return Step::Dead;
                }
                monoio::time::sleep(Duration::from_millis(ms)).await;
                self.simple(200, b"text/plain", b"slow\n", head);
            }
            Route::SlowBody(ms) => {
                self.head(200, Some(10), b"text/plain", b"");
                if !head {
                    self.out.extend_from_slice(b"slow-");
                    if !self.flush().await {
                        return Step::Dead;
                    }
                    monoio::time::sleep(Duration::from_millis(ms)).await;
                    self.out.extend_from_slice(b"body\n");
                }
            }
            Route::Drip(n, ms) => {
                self.head(
                    200,
                    Some(n.saturating_mul(10)),
                    b"application/octet-stream",
                    b"",
                );
                for i in 0..if head { 0 } else { n } {
                    if i > 0 {
                        if !self.flush().await {
                            return Step::Dead;
                        }
                        monoio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    self.out.extend_from_slice(pat(i.wrapping_mul(10), 10));
                }
            }
            Route::Chunked(n, size) => {
                self.head(
                    200,
                    None,
                    b"application/octet-stream",
                    b"transfer-encoding: chunked\r\n",
                );
                if !head && !self.chunked_response(n, size).await {
                    return Step::Dead;
                }
            }
            Route::Close(n) => {
                self.close = true;
                self.head(200, None, b"application/octet-stream", b"");
                if !head && !self.pattern(0, n).await {
                    return Step::Dead;
                }
            }
            Route::DropAfterHead => {
                self.head(200, Some(100), b"application/octet-stream", b"");
                self.out.extend_from_slice(pat(0, 10));
                return Step::Close;
            }
            Route::SlowCut(ms) => return self.slow_cut(ms, head).await,
            Route::CutOnce(ms) => {
                if !CUT_ONCE_USED.swap(true, Ordering::Relaxed) {
                    return self.slow_cut(ms, head).await;
                }
                self.head(200, Some(100), b"application/octet-stream", b"");
                if !head {
                    self.out.extend_from_slice(pat(0, 100));
                }
            }
            Route::ChunkedCut(n) => {
                self.head(
                    200,
                    None,
                    b"application/octet-stream",
                    b"transfer-encoding: chunked\r\n",
                );
                if !head && !self.chunks(n, CUT_CHUNK).await {
                    return Step::Dead;
                }
                return Step::Close;
            }
            Route::ResetMidBody(n) => {
                self.head(
                    200,
                    Some(n.saturating_mul(2)),
                    b"application/octet-stream",
                    b"",
                );
                if (!head && !self.pattern(0, n).await) || !self.flush().await {
                    return Step::Dead;
                }
                self.abortive_close();
                return Step::Dead;
            }
            Route::Malformed(kind) => {
                self.malformed(kind);
                return Step::Close;
            }
            Route::KeepaliveClose => {
                self.close = true;
                self.simple(200, b"text/plain", b"bye\n", head);
            }
            Route::IdleClose(ms) => {
                self.simple(200, b"text/plain", b"ok\n", head);
                self.idle_close = Some(ms);
            }
            Route::CloseIdle => {
                let n: usize = self.w.shared.regs.iter().map(Registry::close_idle).sum();
                self.close = true;
                let mut body = b"closed ".to_vec();
                put_u64(&mut body, n as u64);
                body.push(b'\n');
                self.simple(200, b"text/plain", &body, head);
            }
            Route::Ws => {
                let accept = h.ws_accept.unwrap_or([b'='; 28]);
                self.out.extend_from_slice(
                    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
                );
                self.out.extend_from_slice(&accept);
                self.out.extend_from_slice(b"\r\n");
                self.origin_headers();
                self.out.extend_from_slice(b"\r\n");
                return self.websocket().await;
            }
            Route::Drop => unreachable!("handled above"),
        }
        if self.out.len() >= FLUSH_AT && !self.flush().await {
            return Step::Dead;
        }
        Step::Next
    }

    fn origin_headers(&mut self) {
        self.out.extend_from_slice(&self.w.shared.name_hdr);
        self.out.extend_from_slice(b"x-origin-request: ");
        put_u64(&mut self.out, self.reqno);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Appends a response head (`extra`: whole header lines).
    fn head(&mut self, code: u16, clen: Option<u64>, ctype: &[u8], extra: &[u8]) {
        if code == 200 {
            self.out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        } else {
            self.out.extend_from_slice(b"HTTP/1.1 ");
            self.out.extend_from_slice(&fmt3(code));
            self.out.push(b' ');
            self.out.extend_from_slice(reason(code).as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        if let Some(n) = clen {
            self.out.extend_from_slice(b"content-length: ");
            put_u64(&mut self.out, n);
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b"content-type: ");
        self.out.extend_from_slice(ctype);
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(extra);
        self.origin_headers();
        if self.close {
            self.out.extend_from_slice(b"connection: close\r\n");
        } else if self.http10 {
            self.out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
    }

    fn simple(&mut self, code: u16, ctype: &[u8], body: &[u8], head_only: bool) {
        self.head(code, Some(body.len() as u64), ctype, b"");
        if !head_only {
            self.out.extend_from_slice(body);
        }
    }

    fn malformed(&mut self, kind: Malformed) {
        let (status, extra, body): (&[u8], &[u8], &[u8]) = match kind {
            Malformed::Garbage => {
                self.out.extend_from_slice(b"NOT HTTP\r\n\r\n");
                return;
            }
            Malformed::ClTe => (
                b"HTTP/1.1 200 OK\r\n",
                b"content-length: 5\r\ntransfer-encoding: chunked\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            Malformed::BadChunk => (
                b"HTTP/1.1 200 OK\r\n",
                b"transfer-encoding: chunked\r\n",
                b"zz\r\nhello\r\n0\r\n\r\n",
            ),
            Malformed::TwoCl => (
                b"HTTP/1.1 200 OK\r\n",
                b"content-length: 5\r\ncontent-length: 6\r\n",
                b"hello",
            ),
            Malformed::BadStatus => (b"HTTP/1.1 2000 OK\r\n", b"content-length: 3\r\n", b"ok\n"),
        };
        self.out.extend_from_slice(status);
        self.out.extend_from_slice(extra);
        self.origin_headers();
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(body);
    }

    /// Writes `n` pattern bytes starting at body offset `off`.
    async fn pattern(&mut self, mut off: u64, mut n: u64) -> bool {
        if n <= INLINE_BODY {
            self.out.extend_from_slice(pat(off, n as usize));
            return self.out.len() < FLUSH_AT || self.flush().await;
        }
        if !self.flush().await {
            return false;
        }
        while n > 0 {
            let k = n.min(CHUNK as u64) as usize;
            let (res, _) = self.stream.write_all(pat(off, k)).await;
            if res.is_err() {
                return false;
            }
            off += k as u64;
            n -= k as u64;
        }
        true
    }

    async fn chunked_response(&mut self, n: u64, size: u64) -> bool {
        if !self.chunks(n, size).await {
            return false;
        }
        self.out.extend_from_slice(b"0\r\n\r\n");
        true
    }

    /// Head and 10 of 100 body bytes at once, a pause of `ms`, then a
    /// graceful close: a body cut off after a while.
    async fn slow_cut(&mut self, ms: u64, head: bool) -> Step {
        self.head(200, Some(100), b"application/octet-stream", b"");
        if !head {
            self.out.extend_from_slice(pat(0, 10));
        }
        if !self.flush().await {
            return Step::Dead;
        }
        monoio::time::sleep(Duration::from_millis(ms)).await;
        Step::Close
    }

    /// Makes the coming close abortive: `SO_LINGER` with a zero timeout, so
    /// dropping the stream sends RST (and discards unsent bytes) instead of
    /// FIN.
    fn abortive_close(&self) {
        // SAFETY: the descriptor belongs to `self.stream`, which is open and
        // outlives this borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.stream.as_raw_fd()) };
        if let Err(e) = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO)) {
            eprintln!("ringgate-origin: SO_LINGER: {e}");
        }
    }

    /// The data chunks of a chunked body (`n` pattern bytes in chunks of
    /// `size`), without the last chunk.
    async fn chunks(&mut self, n: u64, size: u64) -> bool {
        let mut off = 0;
        while off < n {
            let k = size.min(n - off);
            put_hex(&mut self.out, k, 1);
            self.out.extend_from_slice(b"\r\n");
            if !self.pattern(off, k).await {
                return false;
            }
            self.out.extend_from_slice(b"\r\n");
            off += k;
        }
        true
    }

    /// Writes out `out`. False: the connection failed.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let (res, mut out) = self.stream.write_all(std::mem::take(&mut self.out)).await;
        out.clear();
        self.out = out;
        res.is_ok()
    }

    /// Waits for the first byte of a request, registered as idle meanwhile.
    async fn idle_read(&mut self) -> bool {
        let reg = self.w.reg();
        let epoch = reg.set_idle(self.slot, true);
        if let Some(ms) = self.idle_close.take() {
            let (w, slot, id) = (self.w.clone(), self.slot, self.id);
            monoio::spawn(async move {
                monoio::time::sleep(Duration::from_millis(ms)).await;
                w.reg().close_if_idle(slot, id, epoch);
            });
        }
        let ok = self.fill(1).await;
        self.w.reg().set_idle(self.slot, false);
        ok
    }

    /// Reads once, after making room for `want` unconsumed bytes (at most
    /// `BUF_MAX`). False on EOF or error.
    async fn fill(&mut self, want: usize) -> bool {
        let len = self.buf.len();
        if self.pos == len {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0
            && (self.pos + want > self.buf.capacity() || len == self.buf.capacity())
        {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(len - self.pos);
            self.pos = 0;
        }
        let cap = self.buf.capacity();
        if want > cap || self.buf.len() == cap {
            let target = want.max(cap * 2).min(BUF_MAX);
            if target <= self.buf.len() {
                return false;
            }
            self.buf.reserve_exact(target - self.buf.len());
        }
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let (res, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        matches!(res, Ok(n) if n > 0)
    }

    /// Makes `n` unconsumed bytes available.
    async fn ensure(&mut self, n: usize) -> bool {
        while self.buf.len() - self.pos < n {
            if !self.fill(n).await {
                return false;
            }
        }
        true
    }

    /// Consumes `n` body bytes, hashing them.
    async fn skip(&mut self, mut n: u64, hash: &mut u64) -> bool {
        while n > 0 {
            if self.pos == self.buf.len() && !self.fill(1).await {
                return false;
            }
            let k = ((self.buf.len() - self.pos) as u64).min(n) as usize;
            fnv1a(hash, &self.buf[self.pos..self.pos + k]);
            self.pos += k;
            n -= k as u64;
        }
        true
    }

    /// Reads one line (without CRLF) of a chunked body.
    async fn line(&mut self) -> Option<Range<usize>> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let start = self.pos;
                let mut end = start + i;
                self.pos = end + 1;
                if end > start && self.buf[end - 1] == b'\r' {
                    end -= 1;
                }
                return Some(start..end);
            }
            let avail = self.buf.len() - self.pos;
            if avail > LINE_MAX || !self.fill(avail + 1).await {
                return None;
            }
        }
    }

    /// Consumes a chunked body, hashing it; its length, or None if malformed.
    async fn chunked_body(&mut self, hash: &mut u64) -> Option<u64> {
        let mut total = 0u64;
        loop {
            let r = self.line().await?;
            let line = &self.buf[r];
            let digits = line
                .split(|&b| b == b';')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            if digits.is_empty() || digits.len() > 15 {
                return None;
            }
            let mut size = 0u64;
            for &d in digits {
                size = size * 16 + u64::from(char::from(d).to_digit(16)?);
            }
            if size == 0 {
                loop {
                    if self.line().await?.is_empty() {
                        return Some(total);
                    }
                }
            }
            if !self.skip(size, hash).await || !self.line().await?.is_empty() {
                return None;
            }
            total += size;
        }
    }

    /// Echoes WebSocket frames until close.
    async fn websocket(&mut self) -> Step {
        loop {
            if self.pos == self.buf.len() && !self.flush().await {
                return Step::Dead;
            }
            if !self.ensure(2).await {
                return Step::Dead;
            }
            let (b0, b1) = (self.buf[self.pos], self.buf[self.pos + 1]);
            let masked = b1 & 0x80 != 0;
            let mut hdr = 2;
            let mut len = u64::from(b1 & 0x7f);
            if len == 126 {
                if !self.ensure(4).await {
                    return Step::Dead;
                }
                len = u64::from(u16::from_be_bytes([
                    self.buf[self.pos + 2],
                    self.buf[self.pos + 3],
                ]));
                hdr = 4;
            } else if len == 127 {
                if !self.ensure(10).await {
                    return Step::Dead;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[self.pos + 2..self.pos + 10]);
                len = u64::from_be_bytes(b);
                hdr = 10;
            }
            if len > WS_MAX {
                self.out.extend_from_slice(&[0x88, 2, 0x03, 0xf1]); // 1009: too big
                return Step::Close;
            }
            let mask_at = hdr;
            if masked {
                hdr += 4;
            }
            let len = len as usize;
            if !self.ensure(hdr + len).await {
                return Step::Dead;
            }
            let start = self.pos + hdr;
            if masked {
                let m0 = self.pos + mask_at;
                let mask = [
                    self.buf[m0],
                    self.buf[m0 + 1],
                    self.buf[m0 + 2],
                    self.buf[m0 + 3],
                ];
                for (i, b) in self.buf[start..start + len].iter_mut().enumerate() {
                    *b ^= mask[i & 3];
                }
            }
            self.pos = start + len;
            let opcode = b0 & 0x0f;
            let reply = match opcode {
                0..=2 => b0,
                8 => 0x88,
                9 => 0x80 | 10,
                10 => continue,
                _ => {
                    self.out.extend_from_slice(&[0x88, 2, 0x03, 0xea]); // 1002: protocol error
                    return Step::Close;
                }
            };
            self.out.push(reply);
            if len < 126 {
                self.out.push(len as u8);
            } else if len < 65536 {
                self.out.push(126);
                self.out.extend_from_slice(&(len as u16).to_be_bytes());
            } else {
                self.out.push(127);
                self.out.extend_from_slice(&(len as u64).to_be_bytes());
            }
            self.out.extend_from_slice(&self.buf[start..start + len]);
            if opcode == 8 {
                return Step::Close;
            }
        }
    }
}

/// Three decimal digits of `code` (100..=999).
fn fmt3(code: u16) -> [u8; 3] {
    [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

fn fmt_u64(b: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &b[i..]
}

#[cfg(test)]
mod tests {
    #[test]
    fn ws_accept_key_matches_the_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            &super::ws_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
