//! Bodies the gateway answers without a backend (a mock, a gateway error,
//! a cache hit): read and dropped, within the size limit, so their bytes
//! cannot be taken for the next request. `Expect: 100-continue` is answered
//! first.

#![forbid(unsafe_code)]

use std::ops::Range;

use crate::runtime::ClientStream;

use super::exchange::{write_error, Exchange, Next, Request};
use super::outcome::Outcome;
use super::response::GatewayError;
use super::worker::GatewayWorker;
use crate::http::chunked::ChunkedDecoder;
use crate::http::BodyFraming;
use crate::runtime::{ClientIo, ClientStop};

/// Why a body could not be read whole.
enum BodyError {
    TooLarge,
    Framing(&'static str),
    /// The client stalled past the read timeout: 408.
    TimedOut,
    Gone,
}

/// Whether the request has a body for [`discard`] to read. Most have
/// none: their callers skip building and polling `discard`'s future, which
/// would otherwise run for every request.
#[inline]
pub(super) fn has_body(req: &Request<'_, '_, '_>) -> bool {
    req.head.framing != BodyFraming::None
}

/// Reads and drops the request's body. Ok: the bytes of `after` consumed
/// and the bytes of `scratch` that start the next request. Err: the
/// request is answered (an error written, or the client gone) and the
/// connection closes.
pub(super) async fn discard<S: ClientStream>(
    gw: &GatewayWorker,
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
) -> Result<(usize, Option<Range<usize>>), (Next, Outcome)> {
    let head = req.head;
    if head.framing == BodyFraming::None {
        return Ok((0, None));
    }
    if head.expect_continue {
        // Earlier pipelined responses go first, then the interim one.
        x.wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        if !x.io.flush(x.wbuf).await {
            return Err((Next::Close { linger: false }, Outcome::Aborted));
        }
    }
    let e = match consume(x.io, head.framing, req.after, x.scratch, gw.max_body).await {
        Ok(done) => return Ok(done),
        Err(BodyError::Gone) => return Err((Next::Close { linger: false }, Outcome::Aborted)),
        Err(BodyError::TooLarge) => GatewayError::PayloadTooLarge(gw.max_body),
        Err(BodyError::Framing(why)) => GatewayError::BadRequest(why),
        Err(BodyError::TimedOut) => GatewayError::RequestTimeout,
    };
    write_error(x, e, head, req.rid, true, req.rate.as_ref());
    Err((Next::Close { linger: true }, Outcome::Error(e)))
}

/// Reads and drops a body framed as `framing`, of which `after` holds the
/// start, enforcing `limit`. Returns the bytes of `after` consumed and the
/// bytes of `scratch` that follow the body (the next pipelined request).
async fn consume<S: ClientStream>(
    io: &mut ClientIo<S>,
    framing: BodyFraming,
    after: &[u8],
    scratch: &mut Vec<u8>,
    limit: u64,
) -> Result<(usize, Option<Range<usize>>), BodyError> {
    let read = |stop| match stop {
        ClientStop::TimedOut => BodyError::TimedOut,
        ClientStop::Gone => BodyError::Gone,
    };
    match framing {
        BodyFraming::None => Ok((0, None)),
        BodyFraming::Length(n) => {
            let in_buf = (after.len() as u64).min(n);
            let mut remaining = n - in_buf;
            while remaining > 0 {
                let got = io.read_body(scratch).await.map_err(read)?;
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
                let got = io.read_body(scratch).await.map_err(read)?;
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
