//! One client connection, HTTP/1.1: read heads, answer each request
//! through the pipeline, repeat; or switch protocols.
//!
//! A connection silent for 1 to 2 s after an answer parks: it holds
//! no buffer and waits for readiness; buffers and the state of serving
//! requests (a pooled block) are its only while it is busy (see [`serve`]).
//! Pipelined requests already in the read buffer are answered in order into
//! the write buffer, which is written out when no complete request is left
//! to answer (or [`FLUSH_AT`] bytes are waiting), so a pipelined batch costs
//! one write; after [`TURN`] requests in a row the connection writes out
//! and lets the worker's other connections run. A `101` from a backend ends
//! the HTTP loop and hands the socket to the upgrade tunnel
//! ([`crate::upstream::tunnel`]).
//!
//! Failure: a malformed head gets its 4xx with `Connection: close`, and the
//! connection closes lingering (its unread bytes are drained for a while so
//! the kernel does not reset the response away); an I/O error closes it
//! silently; a head that does not complete within `header_read_timeout`
//! gets 408. Deadlines and buffers are the runtime's
//! [`ClientConn`](crate::runtime::ClientConn).

#![forbid(unsafe_code)]

use std::future::Future;
use std::rc::Rc;

use super::exchange::{ConnState, Exchange, Next};
use super::outcome::Outcome;
use super::pipeline;
use super::response::GatewayError;
use super::worker::GatewayWorker;
use crate::http::response::ConnectionHeader;
use crate::http::{header_array, parse_head, HeadError};
use crate::observe::metrics::{Sample, UNROUTED};
use crate::runtime::{ClientConn, ClientStream, Fill, NextRequest};
use crate::upstream::forward::ClientInfo;
use crate::upstream::pool::UpstreamConn;

/// Responses are written out once this many bytes are waiting.
const FLUSH_AT: usize = 64 * 1024;

/// Requests answered in a row without waiting, after which the connection
/// writes out and lets the worker's other connections run: one client
/// pipelining as fast as it can does not starve the others.
const TURN: u32 = 32;

/// How a busy period of a connection ended.
enum RunEnd {
    /// Every request read has been answered and written: wait for more.
    Idle,
    /// Closed (lingering first where the client may still be sending).
    Closed,
    /// Switched protocols: tunnel to this backend connection, sending it
    /// these client bytes first (boxed: rare, and it would otherwise
    /// widen every connection's idle state).
    Upgrade(Box<(UpstreamConn, Vec<u8>)>),
}

/// Serves one accepted connection until it closes.
///
/// Parked, the connection is this future alone, holding no buffer: it
/// waits for readiness. Once the client sends, it takes buffers from the
/// worker's pool and serves requests in a block of the worker's slab
/// ([`crate::runtime::slab`]), reading each next request right after the
/// last answer, until the client stays silent for 1 to 2 s (the
/// reaper cancels that read: [`NextRequest::Park`]); then buffers and block
/// go back.
///
/// Written as a function returning an `async move` block, not as an
/// `async fn`: an `async fn` keeps its arguments apart from its locals, so
/// the connection would be stored twice in every idle connection's state.
#[allow(clippy::manual_async_fn)]
pub(super) fn serve<S>(
    gw: Rc<GatewayWorker>,
    mut conn: ClientConn<S>,
    info: ClientInfo,
) -> impl Future<Output = ()>
where
    S: ClientStream,
{
    async move {
        let worker = conn.io.worker_rc();
        let end = loop {
            if !conn.io.wait_readable().await {
                break RunEnd::Closed;
            }
            conn.take_buffers();
            // Built straight into the slab's block, in a statement of its
            // own: the busy future must never be a value of this future,
            // which would then be as large (its size is fixed once, for
            // every state).
            let in_slab = worker.slab.put_with(|| busy(&gw, &mut conn, &info));
            let end = in_slab.await;
            conn.give_buffers();
            if !matches!(end, RunEnd::Idle) {
                break end;
            }
        };
        if let RunEnd::Upgrade(upgrade) = end {
            let (backend, pending) = *upgrade;
            let idle = worker.limits.keepalive_timeout;
            let stream = conn.io.into_stream();
            // Boxed: the tunnel's state is needed by upgraded connections
            // only, so it is not part of every connection's future.
            Box::pin(stream.tunnel(backend, pending, idle)).await;
        }
    }
}

/// Serves what the client sends until every request read has been
/// answered (or the connection ends); closes lingering where needed. The
/// pipeline's buffers live here, for the busy period only.
///
/// One async fn for the whole busy period, not one per step: each nested
/// future is one more state to dispatch through on every wake-up, and this
/// runs twice per request (read and write completions).
async fn busy<S: ClientStream>(
    gw: &GatewayWorker,
    conn: &mut ClientConn<S>,
    info: &ClientInfo,
) -> RunEnd {
    let mut state = ConnState::new(*info);
    let state = &mut state;
    let ended = 'serve: {
        let ClientConn {
            io,
            rbuf,
            wbuf,
            scratch,
        } = conn;
        // The connection was readable: read what is there.
        if io.fill(rbuf).await != Fill::Data {
            break 'serve Ended::Closed { linger: false };
        }
        let mut answered: u32 = 0;
        loop {
            let mut headers = header_array();
            let parsed = parse_head(rbuf.pending(), &mut headers, &gw.head_limits);
            match parsed {
                Ok(Some(head)) => {
                    let head_len = head.head_len;
                    let after = &rbuf.pending()[head_len..];
                    let exchange = Exchange {
                        io: &mut *io,
                        wbuf: &mut *wbuf,
                        scratch: &mut *scratch,
                        state: &mut *state,
                    };
                    let next = pipeline::handle(gw, exchange, head, after).await;
                    match next {
                        Next::Continue { consumed, leftover } => {
                            rbuf.consume(head_len + consumed);
                            if let Some(range) = leftover {
                                debug_assert!(rbuf.is_drained());
                                rbuf.replace_with(&scratch[range]);
                            }
                            answered += 1;
                            if wbuf.len() >= FLUSH_AT || answered % TURN == 0 {
                                if !io.flush(wbuf).await {
                                    break 'serve Ended::Closed { linger: false };
                                }
                                if answered % TURN == 0 {
                                    io.worker().yield_now().await;
                                }
                            }
                        }
                        Next::Close { linger } => {
                            let flushed = io.flush(wbuf).await;
                            break 'serve Ended::Closed {
                                linger: linger && flushed,
                            };
                        }
                        Next::Upgrade { conn, consumed } => {
                            if !io.flush(wbuf).await {
                                break 'serve Ended::Closed { linger: false };
                            }
                            let pending = rbuf.pending();
                            let from = (head_len + consumed).min(pending.len());
                            break 'serve Ended::Upgrade(conn, pending[from..].to_vec());
                        }
                    }
                }
                Ok(None) => {
                    if !wbuf.is_empty() && !io.flush(wbuf).await {
                        break 'serve Ended::Closed { linger: false };
                    }
                    if rbuf.is_drained() {
                        // Everything read is answered and written out: the
                        // next request, or park.
                        match io.read_next(rbuf).await {
                            NextRequest::Data => continue,
                            NextRequest::Park => break 'serve Ended::Idle,
                            NextRequest::Closed => break 'serve Ended::Closed { linger: false },
                        }
                    }
                    match io.fill(rbuf).await {
                        Fill::Data => {}
                        Fill::Closed => break 'serve Ended::Closed { linger: false },
                        Fill::HeadTimeout => {
                            answer_unparsed(
                                gw,
                                io.worker().date(),
                                GatewayError::RequestTimeout,
                                wbuf,
                            );
                            io.flush(wbuf).await;
                            break 'serve Ended::Closed { linger: false };
                        }
                    }
                }
                Err(e) => {
                    let err = match e {
                        HeadError::Bad(why) => GatewayError::BadRequest(why.as_str()),
                        HeadError::UriTooLong => GatewayError::UriTooLong,
                        HeadError::HeadersTooLarge => GatewayError::HeadersTooLarge,
                    };
                    answer_unparsed(gw, io.worker().date(), err, wbuf);
                    // The rest of the head and any body are unread.
                    let linger = io.flush(wbuf).await;
                    break 'serve Ended::Closed { linger };
                }
            }
        }
    };
    let ClientConn { io, scratch, .. } = conn;
    let end = match ended {
        Ended::Idle => RunEnd::Idle,
        Ended::Closed { linger } => {
            if linger {
                io.linger(scratch).await;
            }
            RunEnd::Closed
        }
        Ended::Upgrade(backend, pending) => RunEnd::Upgrade(Box::new((backend, pending))),
    };
    state.give_buffers(io.buffers());
    end
}

/// How a busy period's requests ended.
enum Ended {
    Idle,
    /// To be closed; `linger`: the client may still be sending (an error
    /// answered before its request was read whole), so close lingering.
    Closed {
        linger: bool,
    },
    Upgrade(UpstreamConn, Vec<u8>),
}

/// Answers `err` for a request whose head could not be parsed (and so has
/// no request id of its own), closing; the pipeline's record phase never
/// saw it, so it is counted here.
fn answer_unparsed(
    gw: &GatewayWorker,
    date: crate::http::date::HttpDate,
    err: GatewayError,
    wbuf: &mut Vec<u8>,
) {
    let rid = gw.new_request_id(None);
    err.write(
        wbuf,
        date.as_bytes(),
        rid.as_bytes(),
        ConnectionHeader::Close,
        false,
    );
    let sample = Sample {
        series: UNROUTED,
        status: err.status(),
        outcome: Outcome::Error(err),
        latency_us: None,
        integration_us: None,
    };
    gw.record(Outcome::Error(err), Some(&sample));
}
