//! One client connection: read heads, consume bodies, answer, repeat.
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

use std::ops::Range;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::reaper::{SlotGuard, Wait};
use super::worker::Worker;
use crate::gateway::{GatewayError, ResponseContext};
use crate::http::chunked::ChunkedDecoder;
use crate::http::response::ConnectionHeader;
use crate::http::{header_array, parse_head, BodyFraming, HeadError, RequestHead, Version};

/// Initial read buffer; grows (rarely) up to the head limits.
const INITIAL_READ: usize = 4096;
/// Initial write buffer.
const INITIAL_WRITE: usize = 4096;
/// Body bytes read per call when a body does not fit in the read buffer.
const SCRATCH: usize = 16 * 1024;
/// Responses are written out once this many bytes are waiting.
const FLUSH_AT: usize = 64 * 1024;

/// Serves one accepted connection until it closes.
pub(crate) async fn serve(mut stream: TcpStream, worker: Rc<Worker>) {
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
    };
    conn.run(&mut stream, &worker).await;
    drop(guard);
    worker.connection_closed();
}

struct Conn {
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
    /// Write what is pending and close.
    Close,
}

impl Conn {
    async fn run(&mut self, stream: &mut TcpStream, w: &Worker) {
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
                        &mut self.wbuf,
                        &mut self.scratch,
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
                                return;
                            }
                        }
                        Next::Close => {
                            self.flush(stream, w).await;
                            return;
                        }
                    }
                }
                Ok(None) => {
                    if !self.wbuf.is_empty() && !self.flush(stream, w).await {
                        return;
                    }
                    let idle = self.start == self.rbuf.len();
                    if idle && w.drain.is_draining() {
                        return;
                    }
                    match self.fill(stream, w, idle).await {
                        Fill::Data => {}
                        Fill::Closed => return,
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
                            return;
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
                    self.flush(stream, w).await;
                    return;
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

    /// Writes out `wbuf`. False: the connection failed.
    async fn flush(&mut self, stream: &mut TcpStream, w: &Worker) -> bool {
        flush(stream, w, self.slot, &mut self.wbuf).await
    }
}

async fn flush(stream: &mut TcpStream, w: &Worker, slot: u32, wbuf: &mut Vec<u8>) -> bool {
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

/// Answers one request whose head is parsed: consumes its body, writes the
/// response into `wbuf`.
#[allow(clippy::too_many_arguments)]
async fn handle(
    stream: &mut TcpStream,
    w: &Worker,
    slot: u32,
    head: RequestHead<'_, '_>,
    after: &[u8],
    wbuf: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Next {
    let rid = w.new_request_id(head.request_id);
    let head_only = head.method == "HEAD";
    let fail = |e: GatewayError, wbuf: &mut Vec<u8>| {
        e.write(
            wbuf,
            w.date().as_bytes(),
            rid.as_bytes(),
            ConnectionHeader::Close,
            head_only,
        );
        Next::Close
    };

    let mut consumed = 0;
    let mut leftover = None;
    if head.framing != BodyFraming::None {
        let limit = w.limits.max_body_bytes;
        if let BodyFraming::Length(n) = head.framing {
            if n > limit {
                return fail(GatewayError::PayloadTooLarge(limit), wbuf);
            }
        }
        if head.expect_continue {
            // Earlier pipelined responses go first, then the interim one.
            wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if !flush(stream, w, slot, wbuf).await {
                return Next::Close;
            }
        }
        match consume_body(stream, w, slot, head.framing, after, scratch).await {
            Ok((c, l)) => {
                consumed = c;
                leftover = l;
            }
            Err(BodyError::TooLarge) => return fail(GatewayError::PayloadTooLarge(limit), wbuf),
            Err(BodyError::Framing(why)) => return fail(GatewayError::BadRequest(why), wbuf),
            Err(BodyError::Closed) => return Next::Close,
        }
    }

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
    w.snapshot
        .respond(head.method, head.host, head.path, &ctx, wbuf);
    if keep_alive {
        Next::Continue { consumed, leftover }
    } else {
        Next::Close
    }
}

enum BodyError {
    TooLarge,
    Framing(&'static str),
    Closed,
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
            let mut total: u64 = 0;
            let mut pos = 0;
            // First what followed the head in the read buffer…
            while pos < after.len() {
                let d = decoder
                    .decode(&after[pos..])
                    .map_err(|e| BodyError::Framing(e.as_str()))?;
                pos += d.consumed;
                if let Some(r) = d.data {
                    total += r.len() as u64;
                    if total > limit {
                        return Err(BodyError::TooLarge);
                    }
                }
                if d.done {
                    return Ok((pos, None));
                }
            }
            // …then from the socket.
            loop {
                let got = read_scratch(stream, w, slot, scratch).await?;
                let mut at = 0;
                while at < got {
                    let d = decoder
                        .decode(&scratch[at..got])
                        .map_err(|e| BodyError::Framing(e.as_str()))?;
                    at += d.consumed;
                    if let Some(r) = d.data {
                        total += r.len() as u64;
                        if total > limit {
                            return Err(BodyError::TooLarge);
                        }
                    }
                    if d.done {
                        let rest = (at < got).then_some(at..got);
                        return Ok((pos, rest));
                    }
                }
            }
        }
    }
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
        _ => Err(BodyError::Closed),
    }
}
