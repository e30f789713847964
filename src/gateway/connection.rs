//! One client connection, HTTP/1.1: read heads, answer each request
//! through the pipeline, repeat; or switch protocols.
//!
//! Pipelined requests already in the read buffer are answered in order into
//! the write buffer, which is written out when no complete request is left
//! to answer (or [`FLUSH_AT`] bytes are waiting), so a pipelined batch costs
//! one write. A `101` from a backend ends the HTTP loop and hands the
//! socket to the upgrade tunnel ([`crate::upstream::tunnel`]).
//!
//! Failure: a malformed head gets its 4xx with `Connection: close`, and the
//! connection closes lingering (its unread bytes are drained for a while so
//! the kernel does not reset the response away); an I/O error closes it
//! silently; a head that does not complete within `header_read_timeout`
//! gets 408. Deadlines and buffers are the runtime's
//! [`ClientConn`](crate::runtime::ClientConn).

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};

use super::exchange::{ConnState, Exchange, Next};
use super::outcome::Outcome;
use super::pipeline;
use super::response::GatewayError;
use super::worker::GatewayWorker;
use crate::http::response::ConnectionHeader;
use crate::http::{header_array, parse_head, HeadError};
use crate::runtime::{ClientConn, Fill};
use crate::upstream::forward::ClientInfo;
use crate::upstream::pool::UpstreamConn;

/// Responses are written out once this many bytes are waiting.
const FLUSH_AT: usize = 64 * 1024;

/// How a connection's HTTP life ended.
enum RunEnd {
    /// To be closed; `linger`: the client may still be sending (an error
    /// answered before its request was read whole), so close lingering.
    Closed { linger: bool },
    /// Switched protocols: tunnel to this backend connection, sending it
    /// these client bytes first.
    Upgrade(UpstreamConn, Vec<u8>),
}

/// Serves one accepted connection until it closes.
pub(super) async fn serve<S>(
    gw: &GatewayWorker,
    mut conn: ClientConn<S>,
    peer: SocketAddr,
    local_port: u16,
) where
    S: AsyncReadRent + AsyncWriteRent + Split,
{
    let mut state = ConnState::new(ClientInfo::new(peer, local_port));
    match run(gw, &mut conn, &mut state).await {
        RunEnd::Closed { linger: true } => conn.io.linger(&mut conn.scratch).await,
        RunEnd::Closed { linger: false } => {}
        RunEnd::Upgrade(backend, pending) => {
            let idle = conn.io.worker().limits.keepalive_timeout;
            crate::upstream::tunnel::tunnel(conn.io.into_stream(), backend.stream, pending, idle)
                .await;
        }
    }
}

async fn run<S: AsyncReadRent + AsyncWriteRent>(
    gw: &GatewayWorker,
    conn: &mut ClientConn<S>,
    state: &mut ConnState,
) -> RunEnd {
    let ClientConn {
        io,
        rbuf,
        wbuf,
        scratch,
    } = conn;
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
                        if wbuf.len() >= FLUSH_AT && !io.flush(wbuf).await {
                            return RunEnd::Closed { linger: false };
                        }
                    }
                    Next::Close { linger } => {
                        let flushed = io.flush(wbuf).await;
                        return RunEnd::Closed {
                            linger: linger && flushed,
                        };
                    }
                    Next::Upgrade { conn, consumed } => {
                        if !io.flush(wbuf).await {
                            return RunEnd::Closed { linger: false };
                        }
                        let pending = rbuf.pending();
                        let from = (head_len + consumed).min(pending.len());
                        return RunEnd::Upgrade(conn, pending[from..].to_vec());
                    }
                }
            }
            Ok(None) => {
                if !wbuf.is_empty() && !io.flush(wbuf).await {
                    return RunEnd::Closed { linger: false };
                }
                let idle = rbuf.is_drained();
                if idle && io.worker().is_draining() {
                    return RunEnd::Closed { linger: false };
                }
                match io.fill(rbuf, idle).await {
                    Fill::Data => {}
                    Fill::Closed => return RunEnd::Closed { linger: false },
                    Fill::HeadTimeout => {
                        answer_unparsed(gw, io.worker().date(), GatewayError::RequestTimeout, wbuf);
                        io.flush(wbuf).await;
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
                answer_unparsed(gw, io.worker().date(), err, wbuf);
                // The rest of the head and any body are unread.
                let linger = io.flush(wbuf).await;
                return RunEnd::Closed { linger };
            }
        }
    }
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
    gw.record(Outcome::Error(err));
}
