//! One client connection: read heads, consume bodies, answer, repeat.
//!
//! Each request is dispatched ([`crate::gateway::Snapshot::dispatch`]): a
//! mock or a gateway error is answered here (its body read and dropped
//! first); a proxied route goes to `proxy::forward`, or through the stage
//! cache (`cached::serve`) when the route caches its method. A `101` from a
//! backend ends the HTTP loop and hands the socket to the upgrade tunnel.
//!
//! Buffers are per connection and reused: `rbuf` holds incoming bytes (it
//! starts at 4 KiB and grows only for heads that need it, up to the head
//! limits), `wbuf` collects responses, `scratch` receives body bytes that do
//! not fit in `rbuf`. Pipelined requests already in `rbuf` are answered in
//! order into `wbuf`, which is written out when no complete request is left
//! to answer, so a pipelined batch costs one write.
//!
//! Timeouts, enforced by the worker's [`Reaper`](super::reaper) with
//! one-second granularity: a connection waiting for the first byte of a
//! request waits at most `keepalive_timeout` (`header_read_timeout` for its
//! first request); once part of a head has arrived the whole head must
//! arrive by `header_read_timeout` (slowloris), else 408 and close; each
//! body read waits at most `header_read_timeout`; a write that the client
//! does not drain fails after `keepalive_timeout`. On drain, connections
//! idle between requests are closed at once.
//!
//! Failure: a malformed head or body gets its 4xx with `Connection: close`
//! and the connection is closed; an I/O error closes it silently.

#![forbid(unsafe_code)]

use std::ops::Range;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::cached;
use super::contain::RequestTrace;
use super::proxy::{self, Buffers, Capture, ClientInfo, Outcome};
use super::reaper::{SlotGuard, Wait};
use super::worker::Worker;
use crate::cache::KeyBuilder;
use crate::gateway::{Dispatch, GatewayError, ResponseContext};
use crate::http::chunked::ChunkedDecoder;
use crate::http::response::ConnectionHeader;
use crate::http::{header_array, parse_head, BodyFraming, HeadError, RequestHead, Version};
use crate::router::Params;
use crate::upstream::pool::UpstreamConn;

/// Initial read buffer; grows (rarely) up to the head limits.
const INITIAL_READ: usize = 4096;
/// Initial write buffer.
const INITIAL_WRITE: usize = 4096;
/// Body bytes read per call when a body does not fit in the read buffer.
const SCRATCH: usize = 16 * 1024;
/// Responses are written out once this many bytes are waiting.
const FLUSH_AT: usize = 64 * 1024;
/// Lingering close: how long, and how many bytes, the client's unread input
/// is read and discarded after an error response (see [`Conn::linger`]).
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);
const LINGER_BYTES: usize = 1024 * 1024;

/// Serves one accepted connection until it closes (run by
/// [`super::contain::serve`], which accounts for its end).
pub(crate) async fn serve(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    local_port: u16,
    worker: Rc<Worker>,
    trace: &RequestTrace,
) {
    let _ = stream.set_nodelay(true);
    // Declared after the stream: drops (unregisters the fd) before it.
    let guard = SlotGuard {
        reaper: &worker.reaper,
        slot: worker.reaper.register(stream.as_raw_fd()),
    };
    let mut conn = Conn {
        rbuf: Vec::with_capacity(INITIAL_READ),
        start: 0,
        wbuf: Vec::with_capacity(INITIAL_WRITE),
        scratch: Vec::new(),
        head_deadline: None,
        served: 0,
        slot: guard.slot,
        ubuf: Vec::new(),
        info: ClientInfo::new(peer, local_port),
        cache_bufs: CacheBufs::default(),
        trace,
    };
    let end = conn.run(&mut stream, &worker).await;
    if let RunEnd::Closed { linger: true } = end {
        conn.linger(&mut stream, &worker).await;
    }
    drop(guard);
    if let RunEnd::Upgrade(backend, pending) = end {
        proxy::tunnel(
            stream,
            backend.stream,
            pending,
            worker.limits.keepalive_timeout,
        )
        .await;
    }
}

/// How a connection's HTTP life ended.
enum RunEnd {
    /// To be closed; `linger`: the client may still be sending (an error
    /// answered before its request was read whole), so close lingering.
    Closed { linger: bool },
    /// Switched protocols: tunnel to this backend connection, sending it
    /// these client bytes first.
    Upgrade(UpstreamConn, Vec<u8>),
}

struct Conn<'t> {
    rbuf: Vec<u8>,
    /// Start of unconsumed bytes in `rbuf`.
    start: usize,
    wbuf: Vec<u8>,
    scratch: Vec<u8>,
    /// Set once part of a head has arrived and more must be read.
    head_deadline: Option<u64>,
    /// Requests answered on this connection.
    served: u64,
    /// The connection's reaper slot.
    slot: u32,
    /// The request head for a backend (kept for a retry); empty until the
    /// first proxied request.
    ubuf: Vec<u8>,
    /// Peer address and local port, for X-Forwarded-*.
    info: ClientInfo,
    /// Cache key bytes and the copy of a response being cached; empty
    /// until the first cacheable request.
    cache_bufs: CacheBufs,
    /// The request being served, for the log line of a contained panic.
    trace: &'t RequestTrace,
}

/// Per-connection buffers of the stage cache.
#[derive(Default)]
pub(crate) struct CacheBufs {
    keys: KeyBuilder,
    capture: Capture,
}

/// What a read into the buffer produced.
enum Fill {
    Data,
    Closed,
    HeadTimeout,
}

/// What to do after a request has been answered.
enum Next {
    /// Keep going: consumed this many bytes of `rbuf` after the head, and
    /// these bytes of `scratch` belong to the next request.
    Continue {
        consumed: usize,
        leftover: Option<Range<usize>>,
    },
    /// Write what is pending and close; `linger` as in [`RunEnd::Closed`].
    Close { linger: bool },
    /// Write what is pending, then tunnel to this backend connection;
    /// `consumed` bytes after the head were used.
    Upgrade { conn: UpstreamConn, consumed: usize },
}

impl Conn<'_> {
    async fn run(&mut self, stream: &mut TcpStream, w: &Worker) -> RunEnd {
        loop {
            if self.start == self.rbuf.len() {
                self.rbuf.clear();
                self.start = 0;
            }
            let mut headers = header_array();
            let parsed = parse_head(&self.rbuf[self.start..], &mut headers, &w.head_limits);
            match parsed {
                Ok(Some(head)) => {
                    self.head_deadline = None;
                    let head_len = head.head_len;
                    let after = &self.rbuf[self.start + head_len..];
                    let next = handle(
                        stream,
                        w,
                        self.slot,
                        head,
                        after,
                        Buffers {
                            wbuf: &mut self.wbuf,
                            scratch: &mut self.scratch,
                            ubuf: &mut self.ubuf,
                        },
                        &self.info,
                        &mut self.cache_bufs,
                        self.trace,
                    )
                    .await;
                    self.served += 1;
                    match next {
                        Next::Continue { consumed, leftover } => {
                            self.start += head_len + consumed;
                            if let Some(range) = leftover {
                                debug_assert_eq!(self.start, self.rbuf.len());
                                self.rbuf.clear();
                                self.start = 0;
                                self.rbuf.extend_from_slice(&self.scratch[range]);
                            }
                            if self.wbuf.len() >= FLUSH_AT && !self.flush(stream, w).await {
                                return RunEnd::Closed { linger: false };
                            }
                        }
                        Next::Close { linger } => {
                            let flushed = self.flush(stream, w).await;
                            return RunEnd::Closed {
                                linger: linger && flushed,
                            };
                        }
                        Next::Upgrade { conn, consumed } => {
                            if !self.flush(stream, w).await {
                                return RunEnd::Closed { linger: false };
                            }
                            let from = (self.start + head_len + consumed).min(self.rbuf.len());
                            return RunEnd::Upgrade(conn, self.rbuf[from..].to_vec());
                        }
                    }
                }
                Ok(None) => {
                    if !self.wbuf.is_empty() && !self.flush(stream, w).await {
                        return RunEnd::Closed { linger: false };
                    }
                    let idle = self.start == self.rbuf.len();
                    if idle && w.drain.is_draining() {
                        return RunEnd::Closed { linger: false };
                    }
                    match self.fill(stream, w, idle).await {
                        Fill::Data => {}
                        Fill::Closed => return RunEnd::Closed { linger: false },
                        Fill::HeadTimeout => {
                            let rid = w.new_request_id(None);
                            GatewayError::RequestTimeout.write(
                                &mut self.wbuf,
                                w.date().as_bytes(),
                                rid.as_bytes(),
                                ConnectionHeader::Close,
                                false,
                            );
                            self.flush(stream, w).await;
                            return RunEnd::Closed { linger: false };
                        }
                    }
                }
                Err(e) => {
                    let err = match e {
                        HeadError::Bad(why) => GatewayError::BadRequest(why.as_str()),
                        HeadError::UriTooLong => GatewayError::UriTooLong,
                        HeadError::HeadersTooLarge => GatewayError::HeadersTooLarge,
                    };
                    let rid = w.new_request_id(None);
                    err.write(
                        &mut self.wbuf,
                        w.date().as_bytes(),
                        rid.as_bytes(),
                        ConnectionHeader::Close,
                        false,
                    );
                    // The rest of the head and any body are unread.
                    let linger = self.flush(stream, w).await;
                    return RunEnd::Closed { linger };
                }
            }
        }
    }

    /// Reads more bytes into `rbuf` after what is there.
    async fn fill(&mut self, stream: &mut TcpStream, w: &Worker, idle: bool) -> Fill {
        // Move the unconsumed tail to the front.
        if self.start > 0 {
            self.rbuf.copy_within(self.start.., 0);
            self.rbuf.truncate(self.rbuf.len() - self.start);
            self.start = 0;
        }
        if self.rbuf.len() == self.rbuf.capacity() {
            // parse_head refuses heads over the limits before the buffer
            // could grow past them, so this growth is bounded.
            let grow = self
                .rbuf
                .capacity()
                .min(w.max_read_buffer.saturating_sub(self.rbuf.capacity()));
            if grow == 0 {
                return Fill::Closed;
            }
            self.rbuf.reserve_exact(grow);
        }
        let (deadline, wait) = if idle {
            let timeout = if self.served == 0 {
                w.limits.header_read_timeout
            } else {
                w.limits.keepalive_timeout
            };
            (w.reaper.deadline(timeout), Wait::Idle)
        } else {
            let reaper = &w.reaper;
            let d = *self
                .head_deadline
                .get_or_insert_with(|| reaper.deadline(w.limits.header_read_timeout));
            (d, Wait::Read)
        };
        let buf = std::mem::take(&mut self.rbuf);
        let len = buf.len();
        let cap = buf.capacity();
        w.reaper.arm(self.slot, deadline, wait);
        let (res, slice) = stream.read(buf.slice_mut(len..cap)).await;
        let expired = w.reaper.disarm(self.slot);
        self.rbuf = slice.into_inner();
        match res {
            Ok(0) | Err(_) if expired && !idle => Fill::HeadTimeout,
            Ok(0) | Err(_) => Fill::Closed,
            Ok(_) if expired => Fill::Closed,
            Ok(_) => Fill::Data,
        }
    }

    /// Closes lingering, as nginx's `lingering_close` does: after an error
    /// answered before the client's request was read whole, closing at once
    /// with its bytes unread makes the kernel send a reset, which can
    /// destroy the response before the client has read it. So: shut down
    /// the write side (the client sees the end of the response), then read
    /// and discard for at most [`LINGER_TIME`] and [`LINGER_BYTES`], until
    /// the client closes.
    async fn linger(&mut self, stream: &mut TcpStream, w: &Worker) {
        use monoio::io::AsyncWriteRent;
        if stream.shutdown().await.is_err() {
            return;
        }
        let deadline = w.reaper.deadline(LINGER_TIME);
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            let mut buf = std::mem::take(&mut self.scratch);
            buf.clear();
            if buf.capacity() < SCRATCH {
                buf.reserve_exact(SCRATCH);
            }
            w.reaper.arm(self.slot, deadline, Wait::Read);
            let (res, buf) = stream.read(buf).await;
            let expired = w.reaper.disarm(self.slot);
            self.scratch = buf;
            match res {
                Ok(n) if n > 0 && !expired => discarded += n,
                _ => return,
            }
        }
    }

    /// Writes out `wbuf`. False: the connection failed.
    async fn flush(&mut self, stream: &mut TcpStream, w: &Worker) -> bool {
        flush_to(stream, w, self.slot, &mut self.wbuf).await
    }
}

/// Writes out `wbuf` to the client, under the write timeout. False: the
/// connection failed.
pub(crate) async fn flush_to(
    stream: &mut TcpStream,
    w: &Worker,
    slot: u32,
    wbuf: &mut Vec<u8>,
) -> bool {
    if wbuf.is_empty() {
        return true;
    }
    let buf = std::mem::take(wbuf);
    w.reaper.arm(
        slot,
        w.reaper.deadline(w.limits.keepalive_timeout),
        Wait::Write,
    );
    let (res, mut buf) = stream.write_all(buf).await;
    let expired = w.reaper.disarm(slot);
    buf.clear();
    *wbuf = buf;
    res.is_ok() && !expired
}

/// Answers one request whose head is parsed: a proxied route is forwarded
/// (its body streamed to the backend); otherwise the body is consumed and
/// the mock response or gateway error written into `wbuf`.
#[allow(clippy::too_many_arguments)]
async fn handle(
    stream: &mut TcpStream,
    w: &Worker,
    slot: u32,
    head: RequestHead<'_, '_>,
    after: &[u8],
    bufs: Buffers<'_>,
    info: &ClientInfo,
    cache_bufs: &mut CacheBufs,
    trace: &RequestTrace,
) -> Next {
    let rid = w.new_request_id(head.request_id);
    trace.note(rid.as_bytes());
    #[cfg(debug_assertions)]
    if w.fault_injection {
        super::contain::inject_fault(&head);
    }
    let head_only = head.method == "HEAD";
    let limit = w.limits.max_body_bytes;
    let fail = |e: GatewayError, wbuf: &mut Vec<u8>| {
        e.write(
            wbuf,
            w.date().as_bytes(),
            rid.as_bytes(),
            ConnectionHeader::Close,
            head_only,
        );
        Next::Close { linger: true }
    };
    if let BodyFraming::Length(n) = head.framing {
        if n > limit {
            return fail(GatewayError::PayloadTooLarge(limit), bufs.wbuf);
        }
    }
    let mut params = Params::new();
    let dispatch = w
        .snapshot
        .dispatch(head.method, head.host, head.path, &mut params);
    if let Dispatch::Proxy(route, cache) = dispatch {
        let cached = match (cache, &route.cache) {
            (Some(c), Some(rc)) if rc.ttl_for(head.method).is_some() => Some((c, rc)),
            _ => None,
        };
        let outcome = match cached {
            Some((stage_cache, rc)) => {
                cached::serve(
                    stream,
                    w,
                    slot,
                    &head,
                    after,
                    bufs,
                    &mut cache_bufs.keys,
                    &mut cache_bufs.capture,
                    route,
                    rc,
                    stage_cache,
                    &params,
                    rid.as_bytes(),
                    info,
                )
                .await
            }
            None => {
                proxy::forward(
                    stream,
                    w,
                    slot,
                    &head,
                    after,
                    bufs,
                    route,
                    &params,
                    rid.as_bytes(),
                    info,
                    None,
                )
                .await
            }
        };
        return match outcome {
            Outcome::Done {
                consumed,
                leftover,
                keep_client: true,
                ..
            } => Next::Continue { consumed, leftover },
            Outcome::Done { .. } => Next::Close { linger: false },
            // Errors before the request was read whole among them.
            Outcome::Close => Next::Close { linger: true },
            Outcome::Upgrade { conn, consumed } => Next::Upgrade { conn, consumed },
        };
    }
    let Buffers { wbuf, scratch, .. } = bufs;

    let (consumed, leftover) =
        match discard_body(stream, w, slot, &head, after, wbuf, scratch).await {
            Ok(done) => done,
            Err(Some(e)) => return fail(e, wbuf),
            Err(None) => return Next::Close { linger: false },
        };

    // Decided after the body: a drain may have started while it arrived.
    let keep_alive = head.keep_alive && !w.drain.is_draining();
    let connection = if !keep_alive {
        ConnectionHeader::Close
    } else if head.version == Version::Http10 {
        ConnectionHeader::KeepAlive
    } else {
        ConnectionHeader::Omit
    };
    let date = w.date();
    let ctx = ResponseContext {
        date: date.as_bytes(),
        request_id: rid.as_bytes(),
        connection,
    };
    match dispatch {
        Dispatch::Mock(m) => {
            m.write(&params, &ctx, wbuf, head_only);
        }
        Dispatch::Fail(e) => e.write(wbuf, ctx.date, ctx.request_id, ctx.connection, head_only),
        Dispatch::Proxy(..) => unreachable!("forwarded above"),
    }
    if keep_alive {
        Next::Continue { consumed, leftover }
    } else {
        Next::Close { linger: false }
    }
}

enum BodyError {
    TooLarge,
    Framing(&'static str),
    Closed,
    /// The body stalled past the read timeout: 408.
    TimedOut,
}

/// Why no body bytes came from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientStop {
    /// It closed the connection, or it failed.
    Gone,
    /// Nothing arrived within the body read timeout (answered 408).
    TimedOut,
}

/// Reads and discards the body of a request answered without a backend (a
/// mock, a gateway error, a cache hit), answering `Expect: 100-continue`
/// first. Ok: the bytes of `after` consumed and the bytes of `scratch` that
/// start the next request. Err(Some): answer this error and close;
/// Err(None): the client is gone.
pub(crate) async fn discard_body(
    stream: &mut TcpStream,
    w: &Worker,
    slot: u32,
    head: &RequestHead<'_, '_>,
    after: &[u8],
    wbuf: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(usize, Option<Range<usize>>), Option<GatewayError>> {
    if head.framing == BodyFraming::None {
        return Ok((0, None));
    }
    if head.expect_continue {
        // Earlier pipelined responses go first, then the interim one.
        wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        if !flush_to(stream, w, slot, wbuf).await {
            return Err(None);
        }
    }
    match consume_body(stream, w, slot, head.framing, after, scratch).await {
        Ok(done) => Ok(done),
        Err(BodyError::TooLarge) => {
            Err(Some(GatewayError::PayloadTooLarge(w.limits.max_body_bytes)))
        }
        Err(BodyError::Framing(why)) => Err(Some(GatewayError::BadRequest(why))),
        Err(BodyError::TimedOut) => Err(Some(GatewayError::RequestTimeout)),
        Err(BodyError::Closed) => Err(None),
    }
}

/// Reads and discards a request body (the mock integration does not use
/// it), enforcing the size limit. Returns the bytes of `after` consumed and
/// the bytes of `scratch` that follow the body (the next pipelined request).
async fn consume_body(
    stream: &mut TcpStream,
    w: &Worker,
    slot: u32,
    framing: BodyFraming,
    after: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(usize, Option<Range<usize>>), BodyError> {
    let limit = w.limits.max_body_bytes;
    match framing {
        BodyFraming::None => Ok((0, None)),
        BodyFraming::Length(n) => {
            let in_buf = (after.len() as u64).min(n);
            let mut remaining = n - in_buf;
            while remaining > 0 {
                let got = read_scratch(stream, w, slot, scratch).await?;
                if (got as u64) > remaining {
                    let end = remaining as usize;
                    return Ok((in_buf as usize, Some(end..got)));
                }
                remaining -= got as u64;
            }
            Ok((in_buf as usize, None))
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let framing = |e: crate::http::chunked::ChunkError| BodyError::Framing(e.as_str());
            // First what followed the head in the read buffer…
            let first = decoder.skim(after).map_err(framing)?;
            let mut total = first.data;
            if total + decoder.pending() > limit {
                return Err(BodyError::TooLarge);
            }
            if first.done {
                return Ok((first.consumed, None));
            }
            // …then from the socket.
            loop {
                let got = read_scratch(stream, w, slot, scratch).await?;
                let s = decoder.skim(&scratch[..got]).map_err(framing)?;
                total += s.data;
                if total + decoder.pending() > limit {
                    return Err(BodyError::TooLarge);
                }
                if s.done {
                    let rest = (s.consumed < got).then_some(s.consumed..got);
                    return Ok((first.consumed, rest));
                }
            }
        }
    }
}

/// Reads client bytes into `scratch` (replacing its contents) under the
/// body read timeout.
pub(crate) async fn read_client(
    stream: &mut TcpStream,
    w: &Worker,
    slot: u32,
    scratch: &mut Vec<u8>,
) -> Result<usize, ClientStop> {
    read_scratch(stream, w, slot, scratch)
        .await
        .map_err(|e| match e {
            BodyError::TimedOut => ClientStop::TimedOut,
            _ => ClientStop::Gone,
        })
}

/// Reads into `scratch` (replacing its contents); returns the byte count.
async fn read_scratch(
    stream: &mut TcpStream,
    w: &Worker,
    slot: u32,
    scratch: &mut Vec<u8>,
) -> Result<usize, BodyError> {
    let mut buf = std::mem::take(scratch);
    buf.clear();
    if buf.capacity() < SCRATCH {
        buf.reserve_exact(SCRATCH);
    }
    w.reaper.arm(
        slot,
        w.reaper.deadline(w.limits.header_read_timeout),
        Wait::Read,
    );
    let (res, buf) = stream.read(buf).await;
    let expired = w.reaper.disarm(slot);
    *scratch = buf;
    match res {
        Ok(n) if n > 0 && !expired => Ok(n),
        _ if expired => Err(BodyError::TimedOut),
        _ => Err(BodyError::Closed),
    }
}
