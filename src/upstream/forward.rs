//! The `http_proxy` integration: forward one request to a backend and
//! stream the answer back.
//!
//! [`forward`] picks a target ([`Registry::pick`]), takes a pooled
//! keep-alive connection to it or opens one, sends the request head it
//! rewrote (hop-by-hop headers removed, `Host` set to the target unless the
//! route preserves it, `X-Forwarded-For` appended, `X-Forwarded-Proto` and
//! `-Port` set, the request id forwarded) followed by the body as it
//! arrives, reads the response head, and streams the body to the client
//! with back-pressure (one buffer of at most 16 KiB in flight; a 1 GB
//! download does not grow memory). Bodies keep their framing where the
//! client can take it: `Content-Length` as is, chunked passed through after
//! validation, a close-delimited body re-chunked for HTTP/1.1 clients.
//!
//! Failures come back as a [`ForwardError`] for the caller to answer (the
//! gateway answers them as API Gateway does); none takes down the worker or
//! leaks a connection:
//! - no response head within the route's integration timeout:
//!   [`ForwardError::Timeout`];
//! - connect refused or timed out, reset, closed without a response, or no
//!   available target: [`ForwardError::Network`], and the target's
//!   passive-health count goes up;
//! - a response head that cannot be framed safely (both `Content-Length`
//!   and `Transfer-Encoding`, bad chunking, garbage):
//!   [`ForwardError::BadResponse`]; that connection is discarded;
//! - the client's body over the limit, malformed, or stalled:
//!   [`ForwardError::BodyTooLarge`], [`ForwardError::BodyFraming`],
//!   [`ForwardError::BodyTimeout`].
//!
//! A pooled connection the backend closed while idle must not fail the
//! client: when a reused connection fails before any response byte, the
//! request is sent once more on a fresh connection, provided the whole
//! request is still in hand (no body, or a body that arrived with the head)
//! and either the method is idempotent or the write itself failed.
//!
//! After the body the backend connection goes back to the worker's pool
//! when it can carry another request (keep-alive, clean end).
//!
//! `Upgrade` requests on routes with `allow_upgrade` are forwarded with
//! their `Upgrade`/`Connection` headers; a `101` answer hands both sockets
//! back to the caller for [`super::tunnel`], a two-way copy until either
//! side closes or goes idle.
//!
//! What happened is recorded twice, for the metrics page and access logs,
//! without allocating or locking:
//! - in the caller's [`Trace`] (one per client connection, reset at the
//!   start of each forward): the backend's status, the integration latency
//!   (API Gateway's `IntegrationLatency`: first request byte written to the
//!   backend → final response head received), the target, whether the
//!   connection was pooled or a stale one was retried, the response body
//!   bytes relayed, and the [`FailReason`] of a forward that failed or was
//!   cut off;
//! - in the target's counters ([`super::stats`]), in the forwarding
//!   worker's own row ([`Backends::worker`]): the request, the response's
//!   status class and latency, the failure reason, a reuse, a stale retry,
//!   a new connection's connect time.
//!
//! The reasons map onto the [`ForwardError`]s (which fix the client's
//! answer) as follows: `Network` is `no_healthy_target` (no target is
//! charged), `connect_refused`, `connect_timeout`, `connect_error` or
//! `reset`; `Timeout` is `timeout`; `BadResponse` is `bad_response`; the
//! client's body errors, and a client that leaves before the response head,
//! are `client_body` (passive health does not count those); a body cut off
//! by the backend after the head went out is `cut_off`. A client that
//! leaves during the response body is no failure of the forward.
//!
//! The integration latency costs two reads of the monotonic clock
//! ([`crate::throttle::now_ns`]): when the request starts out (the pooled
//! connection is taken, or the new one connected) and when the head is in;
//! a new connection adds one read before its connect, for the connect time.

#![forbid(unsafe_code)]

use std::io;
use std::ops::Range;
use std::time::Duration;

use crate::runtime::ClientStream;
use monoio::buf::{IoBuf, IoBufMut};

use super::pool::{
    connect, tls_read, tls_write_all, BackendStream, ConnectError, Pool, UpstreamConn,
};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

/// Writes all of `$buf` to `$stream` (a [`BackendStream`]) within
/// `$timeout`: `Err(_)` when it ran out. The plain case awaits monoio's own
/// write in the caller's future (see [`tls_read`]).
macro_rules! write_backend_within {
    ($stream:expr, $buf:expr, $timeout:expr) => {
        match $stream {
            BackendStream::Plain(tcp) => monoio::time::timeout($timeout, tcp.write_all($buf)).await,
            BackendStream::Tls(tls) => {
                monoio::time::timeout($timeout, tls_write_all(tls, $buf)).await
            }
        }
    };
}
use super::stats::{FailReason, Tally};
use super::{now_ms, Registry, Target};
use crate::http::chunked::{write_chunk_size, ChunkedDecoder};
use crate::http::response::{
    write_common_headers, write_rate_headers, write_u64, ConnectionHeader, RateHeaders,
};
use crate::http::response_head::{
    is_hop_by_hop, named_by_connection, parse_response_head, ResponseFraming,
};
use crate::http::{header_array, BodyFraming, RequestHead, Version};
use crate::runtime::{ClientIo, ClientStop};
use crate::throttle::now_ns;
use crate::tls::client::HandshakeFailure;

/// Bytes read from a client or backend per read while streaming a body.
const STREAM_CHUNK: usize = 16 * 1024;
/// A request body up to this size is kept (after the head, in the
/// connection's `ubuf`) until the backend answers, so a request that meets
/// a pooled connection the backend had closed can be sent again whole.
const RETRY_COPY_LIMIT: usize = 64 * 1024;

/// What the client connection knows about itself.
#[derive(Clone, Copy, Debug)]
pub struct ClientInfo {
    /// The peer's IP address, formatted once per connection.
    pub peer_ip: [u8; 46],
    /// Length of `peer_ip`.
    pub peer_ip_len: u8,
    /// The local (listening) port.
    pub local_port: u16,
    /// The peer's IP address.
    pub ip: std::net::IpAddr,
    /// On a TLS connection, the certificate its handshake chose
    /// ([`crate::tls::TlsAcceptor::certificate_for`]); `None` on plain TCP.
    pub tls_cert: Option<u16>,
    /// On a TLS connection whose certificate entry has `client_ca`, where
    /// the client's certificate stands (anything but `Verified` gets 403).
    pub client_auth: crate::tls::ClientAuth,
}

impl ClientInfo {
    /// Formats the peer address on the stack.
    pub fn new(peer: std::net::SocketAddr, local_port: u16) -> ClientInfo {
        use std::io::Write;
        let mut peer_ip = [0u8; 46];
        let mut cursor = std::io::Cursor::new(&mut peer_ip[..]);
        let _ = write!(cursor, "{}", peer.ip());
        let len = cursor.position() as u8;
        ClientInfo {
            peer_ip,
            peer_ip_len: len,
            local_port,
            ip: peer.ip(),
            tls_cert: None,
            client_auth: crate::tls::ClientAuth::NotRequired,
        }
    }

    /// The peer's IP address as text (`203.0.113.7`, `2001:db8::1`).
    pub fn peer_ip(&self) -> &[u8] {
        &self.peer_ip[..self.peer_ip_len as usize]
    }
}

/// The per-connection buffers the forwarder works in.
pub struct Buffers<'a> {
    /// Responses for the client.
    pub wbuf: &'a mut Vec<u8>,
    /// Client body bytes beyond the read buffer.
    pub scratch: &'a mut Vec<u8>,
    /// The request head (and body start) for the backend; kept for a retry.
    pub ubuf: &'a mut Vec<u8>,
}

/// One request to forward: the client's request and what the route says
/// about sending it.
pub struct ForwardRequest<'a, 'h> {
    /// The client's request head.
    pub head: &'a RequestHead<'h, 'h>,
    /// The bytes that followed the head in the read buffer (the start of
    /// the body, perhaps the next pipelined request).
    pub after: &'a [u8],
    /// The request id, sent to the backend and the client.
    pub request_id: &'a [u8],
    /// The upstream group, an index into the [`Registry`].
    pub group: usize,
    /// Appends the backend request target (path and query).
    pub target: &'a dyn Fn(&mut Vec<u8>),
    /// Integration timeout.
    pub timeout: Duration,
    /// Send the client's `Host` instead of the target's authority.
    pub preserve_host: bool,
    /// Forward the client's `Upgrade` (the route allows it and the client
    /// asked for it); a `101` answer is then accepted.
    pub upgrading: bool,
    /// Largest request body accepted.
    pub max_body: u64,
    /// The client's address and local port, for `X-Forwarded-*`.
    pub client: &'a ClientInfo,
    /// Header lines (each ending in CRLF) added to the client's response
    /// (`X-Cache-Status`, a `Warning`).
    pub extra_headers: &'a [u8],
    /// Rate-limit headers added to the client's response.
    pub rate: Option<&'a RateHeaders>,
    /// A request header (lowercase name) not forwarded: the API key's,
    /// with `[key_source] hide`.
    pub hidden_header: Option<&'a str>,
    /// Header names (lowercase) removed from the client's request:
    /// every `client_cert_headers` name.
    pub strip_headers: &'a [Box<str>],
    /// Header lines added for this connection (a verified client
    /// certificate's `client_cert_headers`).
    pub conn_headers: &'a [u8],
    /// What the stage cache asks of this forward (nothing by default).
    pub cache: CacheHints<'a>,
}

/// What the stage cache (RFC 9111 mode) asks of a forward.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheHints<'a> {
    /// A revalidation: these conditional header lines (`If-None-Match`,
    /// `If-Modified-Since`, each ending in CRLF) replace the client's own
    /// validators, and a `304` answer is held back from the client
    /// ([`Forwarded::NotModified`]; its head is in the capture) for the
    /// cache to answer from the entry it freshens.
    pub revalidate: Option<&'a [u8]>,
    /// Response header names (lowercase) the client does not get but the
    /// capture keeps: the targeted cache-control fields of RFC 9213
    /// (`CDN-Cache-Control`), meant for this cache alone.
    pub hide: &'a [Box<str>],
    /// Nothing of the response goes to the client (who has had its
    /// answer): it is only captured. A refresh in the background of a
    /// stale answer (`stale-while-revalidate`).
    pub silent: bool,
    /// Capture the response head only (its `Location`), not the body.
    pub head_only: bool,
}

/// The backends a worker forwards to.
#[derive(Clone, Copy)]
pub struct Backends<'a> {
    /// Groups and targets (shared by all workers).
    pub registry: &'a Registry,
    /// This worker's idle keep-alive connections.
    pub pool: &'a Pool,
    /// This worker's id: the row of the targets' counters it writes (an id
    /// past the rows counts nothing).
    pub worker: usize,
}

/// What happened to one forward, for metrics and access logs: filled by
/// [`forward`] (reset at its start), read by the caller afterwards. Plain
/// values, nothing allocated; recording it costs a few stores and the two
/// clock reads of the integration latency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// The backend response's status; 0 if no response head arrived (or
    /// it could not be parsed).
    pub status: u16,
    /// API Gateway's `IntegrationLatency`, in nanoseconds: from the moment
    /// the request's first byte was written to the backend (a stale pooled
    /// connection's attempt included, and the client's body as it streams)
    /// until the backend's final response head had arrived. 0 if no head
    /// arrived; at least 1 otherwise.
    pub integration_ns: u64,
    /// The [`Target`] id used (`None` when none was picked).
    pub target: Option<usize>,
    /// The connection used (last) came from the worker's pool.
    pub reused: bool,
    /// A pooled connection turned out stale and the request was sent again
    /// on a new one.
    pub stale_retried: bool,
    /// Response body bytes relayed to the client (its payload, without
    /// chunk framing), as far as it went.
    pub response_body_bytes: u64,
    /// Why the forward failed or was cut off; `None` when the response
    /// went through (or the client left while it was being relayed).
    pub reason: Option<FailReason>,
}

/// A copy of a backend response, for the stage cache.
#[derive(Debug, Default)]
pub struct Capture {
    /// Status line and the headers to replay (no per-response headers, no
    /// framing headers).
    pub head: Vec<u8>,
    /// The body.
    pub body: Vec<u8>,
    /// The status.
    pub status: u16,
    /// Whether the copy may be stored: set only once the body has ended
    /// exactly as the backend framed it (`Content-Length` reached, or the
    /// chunked terminator read) within 1 MiB. A response cut off by the
    /// backend, a reset, a timeout or a client that left never sets it.
    pub ok: bool,
    /// While the response streams: its head and framing allow storing it.
    eligible: bool,
}

impl Capture {
    /// Forgets the previous exchange.
    pub fn reset(&mut self) {
        self.ok = false;
        self.eligible = false;
        self.status = 0;
        self.head.clear();
        self.body.clear();
    }
}

/// Why a request could not be forwarded. Each has one client-facing
/// answer, which the caller writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardError {
    /// No target available, the connect failed, or the backend reset or
    /// closed the connection before a response head.
    Network,
    /// No response head within the integration timeout (or the backend
    /// stopped taking the request).
    Timeout,
    /// The backend's response head cannot be framed or parsed.
    BadResponse,
    /// The client's body is over the limit.
    BodyTooLarge,
    /// The client's chunked body is malformed; the text says how.
    BodyFraming(&'static str),
    /// The client stalled while sending its body.
    BodyTimeout,
}

/// How a forwarded exchange ended, for the connection loop.
pub enum Forwarded {
    /// The response is written (or in `wbuf`): `consumed` bytes of the read
    /// buffer after the head were the body, `leftover` bytes of `scratch`
    /// start the next request; `keep_client` says whether the client
    /// connection may carry another request.
    Done {
        /// Bytes of `after` that were the body.
        consumed: usize,
        /// Bytes of `scratch` that start the next request.
        leftover: Option<Range<usize>>,
        /// Whether the client connection may carry another request.
        keep_client: bool,
    },
    /// Nothing of a response reached the client: the caller answers
    /// `error`. `close`: the client's request was not read whole (or it
    /// asked to close), so the connection cannot carry another request;
    /// otherwise `consumed` and `leftover` are as in `Done`.
    Failed {
        /// What went wrong.
        error: ForwardError,
        /// Whether the client connection must close.
        close: bool,
        /// Bytes of `after` that were the body.
        consumed: usize,
        /// Bytes of `scratch` that start the next request.
        leftover: Option<Range<usize>>,
    },
    /// The client went away, or the response was cut off after its head:
    /// write what is in `wbuf` and close.
    Closed,
    /// A revalidation ([`CacheHints::revalidate`]) got `304 Not Modified`:
    /// nothing was written to the client, the 304's head is in the capture
    /// (status 304), and the caller answers from the freshened entry.
    /// Fields as in `Done`.
    NotModified {
        /// Bytes of `after` that were the body.
        consumed: usize,
        /// Bytes of `scratch` that start the next request.
        leftover: Option<Range<usize>>,
        /// Whether the client connection may carry another request.
        keep_client: bool,
    },
    /// The backend switched protocols: tunnel the two connections.
    /// `consumed` bytes of the read buffer after the head were used.
    Upgrade {
        /// The backend connection.
        conn: UpstreamConn,
        /// Bytes of `after` used.
        consumed: usize,
    },
}

/// The request body, as far as it has been read.
struct BodyState {
    framing: BodyFraming,
    decoder: ChunkedDecoder,
    /// Body bytes (decoded, for chunked) seen so far.
    seen: u64,
    /// Bytes still to read (Content-Length framing).
    remaining: u64,
    /// Whether the whole body has been read.
    complete: bool,
    /// Whether `ubuf` holds the head and every body byte sent so far, so
    /// the request can be sent again on another connection (bodies up to
    /// [`RETRY_COPY_LIMIT`]).
    copy_whole: bool,
    /// Bytes of `scratch` after the body: the next pipelined request.
    leftover: Option<Range<usize>>,
}

/// How the client receives the response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientFraming {
    None,
    Length(u64),
    /// Backend chunked, passed through as is (validated).
    Chunked,
    /// Backend chunked, HTTP/1.0 client: decoded, close-delimited.
    DechunkToClose,
    /// Backend close-delimited, HTTP/1.1 client: re-chunked.
    Rechunk,
    /// Backend close-delimited, HTTP/1.0 client: close-delimited.
    Close,
}

enum ExchangeError {
    /// The backend did not take the request, or did not answer, within the
    /// integration timeout.
    Timeout,
    /// The client went away or stalled while sending its body.
    Client(ClientStop),
    /// The client's body is over the limit.
    TooLarge,
    /// The client's chunked body is malformed.
    ClientFraming(&'static str),
    /// The backend failed before a final response head: `wrote_all` says
    /// whether the whole request had been written, `answered` whether an
    /// interim (1xx) response had arrived.
    Backend { wrote_all: bool, answered: bool },
    /// The backend's response head is unacceptable.
    Bad,
}

/// Forwards one request; see the module docs. With a `capture`, a copy
/// of the response is kept for the stage cache (its `ok` says whether it
/// may be stored). `trace` is reset, then filled with what happened; the
/// target's counters (the worker's row) are counted on the way.
pub async fn forward<S: ClientStream>(
    io: &mut ClientIo<S>,
    req: &ForwardRequest<'_, '_>,
    backends: Backends<'_>,
    bufs: Buffers<'_>,
    mut capture: Option<&mut Capture>,
    trace: &mut Trace,
) -> Forwarded {
    let Buffers {
        wbuf,
        scratch,
        ubuf,
    } = bufs;
    if let Some(c) = capture.as_deref_mut() {
        c.reset();
    }
    *trace = Trace::default();
    let head = req.head;
    let after = req.after;
    let Backends {
        registry,
        pool,
        worker,
    } = backends;
    let group = &registry.groups[req.group];
    let limit = req.max_body;

    // The part of the body that arrived with the head.
    let mut body = BodyState {
        framing: head.framing,
        decoder: ChunkedDecoder::new(),
        seen: 0,
        remaining: 0,
        complete: true,
        copy_whole: true,
        leftover: None,
    };
    // Refused before anything is sent: the client's request is not read
    // whole, so its connection closes.
    let refuse = |error: ForwardError| Forwarded::Failed {
        error,
        close: true,
        consumed: 0,
        leftover: None,
    };
    let in_after = match head.framing {
        BodyFraming::None => 0,
        BodyFraming::Length(n) => {
            let k = (after.len() as u64).min(n);
            body.seen = k;
            body.remaining = n - k;
            body.complete = body.remaining == 0;
            k as usize
        }
        BodyFraming::Chunked => {
            let s = match body.decoder.skim(after) {
                Ok(s) => s,
                Err(e) => {
                    trace.reason = Some(FailReason::ClientBody);
                    return refuse(ForwardError::BodyFraming(e.as_str()));
                }
            };
            body.seen = s.data;
            body.complete = s.done;
            // A chunk declared past the limit is refused before its bytes.
            if body.seen + body.decoder.pending() > limit {
                trace.reason = Some(FailReason::ClientBody);
                return refuse(ForwardError::BodyTooLarge);
            }
            s.consumed
        }
    };
    // Fails the exchange; the client connection survives when its request
    // was read whole.
    let fail = |error: ForwardError, body: &BodyState, draining: bool| Forwarded::Failed {
        error,
        close: !body.complete || !head.keep_alive || draining,
        consumed: in_after,
        leftover: body.leftover.clone(),
    };

    let upgrading = req.upgrading && !req.cache.silent;
    let Some(target) = registry.pick(req.group, now_ms()) else {
        trace.reason = Some(FailReason::NoHealthyTarget);
        return fail(ForwardError::Network, &body, io.worker().is_draining());
    };
    let _in_flight = InFlight::new(target);
    // This worker's row of the target's counters.
    let tally = target.counters().row(worker);
    tally.request();
    trace.target = Some(target.id);

    // Request head (and the body bytes already here) for the backend.
    ubuf.clear();
    write_request_head(ubuf, req, target);
    if body.framing == BodyFraming::Chunked {
        // Re-encoded canonically (see `ChunkedDecoder::reencode`). A fresh
        // decoder over the same bytes ends in the state `body.decoder` is
        // in, and carries on from there.
        body.decoder = ChunkedDecoder::new();
        if let Err(e) = body.decoder.reencode(&after[..in_after], ubuf) {
            failed(trace, tally, FailReason::ClientBody);
            return refuse(ForwardError::BodyFraming(e.as_str()));
        }
    } else {
        ubuf.extend_from_slice(&after[..in_after]);
    }
    // Expect: 100-continue is answered by the gateway, not the backend.
    if head.expect_continue && !body.complete {
        wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        if !io.flush(wbuf).await {
            failed(trace, tally, FailReason::ClientBody);
            return Forwarded::Closed;
        }
    }

    // A pooled connection if there is one; a stale one is retried once.
    pool.requests.set(pool.requests.get() + 1);
    let mut attempt = 0;
    // When the request's first byte went out (set at the first attempt):
    // the integration latency runs from here.
    let mut sent_at = 0;
    let mut conn = loop {
        attempt += 1;
        // A retry goes to a fresh connection: another pooled one may be
        // just as stale.
        let pooled = if attempt == 1 {
            pool.take(target, now_ms(), group.idle_timeout)
        } else {
            None
        };
        // The clock is read once on a pooled connection, twice around a
        // connect (its end is also when the request starts out).
        let (mut conn, reused, ready_at) = match pooled {
            Some(c) => (c, true, now_ns()),
            None => {
                let started = now_ns();
                match connect(target, group.connect_timeout).await {
                    Ok(c) => {
                        let at = now_ns();
                        tally.connected(at.saturating_sub(started));
                        (c, false, at)
                    }
                    // Refused, unreachable, unresolved or timed out: all are
                    // "network error" to the client and a failure for
                    // passive health; the metrics tell them apart. A TLS
                    // handshake the backend failed (its certificate, or
                    // it does not speak TLS) is a 502, as an unusable
                    // response is.
                    Err(e) => {
                        failed(trace, tally, connect_reason(&e));
                        registry.record_failure(req.group, target, now_ms());
                        let error = match e {
                            ConnectError::Tls(_) => ForwardError::BadResponse,
                            _ => ForwardError::Network,
                        };
                        return fail(error, &body, io.worker().is_draining());
                    }
                }
            }
        };
        if attempt == 1 {
            sent_at = ready_at;
        }
        trace.reused = reused;
        if reused {
            pool.reused.set(pool.reused.get() + 1);
            tally.reused();
        }
        conn.requests += 1;
        let result = send_and_read_head(
            io,
            head,
            &mut conn,
            Buffers {
                wbuf: &mut *wbuf,
                scratch: &mut *scratch,
                ubuf: &mut *ubuf,
            },
            &mut body,
            (limit, req.timeout),
        )
        .await;
        let draining = io.worker().is_draining();
        match result {
            Ok(()) => break conn,
            Err(ExchangeError::Timeout) => {
                // The connection is dropped with its in-flight operation.
                failed(trace, tally, FailReason::Timeout);
                registry.record_failure(req.group, target, now_ms());
                return fail(ForwardError::Timeout, &body, draining);
            }
            Err(ExchangeError::Client(stop)) => {
                failed(trace, tally, FailReason::ClientBody);
                return match stop {
                    ClientStop::TimedOut => refuse(ForwardError::BodyTimeout),
                    ClientStop::Gone => Forwarded::Closed,
                };
            }
            Err(ExchangeError::TooLarge) => {
                failed(trace, tally, FailReason::ClientBody);
                return refuse(ForwardError::BodyTooLarge);
            }
            Err(ExchangeError::ClientFraming(why)) => {
                failed(trace, tally, FailReason::ClientBody);
                return refuse(ForwardError::BodyFraming(why));
            }
            Err(ExchangeError::Bad) => {
                failed(trace, tally, FailReason::BadResponse);
                return fail(ForwardError::BadResponse, &body, draining);
            }
            Err(ExchangeError::Backend {
                wrote_all,
                answered,
            }) => {
                // Only a reused connection that failed before any answer,
                // with the request still whole in hand; a request the
                // backend may have acted on only if repeating it is safe.
                let retry = reused
                    && attempt == 1
                    && !answered
                    && body.copy_whole
                    && (is_idempotent(head.method) || !wrote_all);
                if retry {
                    trace.stale_retried = true;
                    tally.stale_retry();
                    continue;
                }
                failed(trace, tally, FailReason::Reset);
                registry.record_failure(req.group, target, now_ms());
                return fail(ForwardError::Network, &body, draining);
            }
        }
    };
    // The final response head is in: the integration latency ends here.
    let integration_ns = now_ns().saturating_sub(sent_at).max(1);
    registry.record_success(target);

    // The response head, rewritten for the client (in a plain function, so
    // its header array never lives in this future's state).
    let date = io.worker().date();
    let client_head = ClientHeadInput {
        head,
        rid: req.request_id,
        date: date.as_bytes(),
        upgrading,
        body_complete: body.complete,
        draining: io.worker().is_draining(),
        extra_headers: req.extra_headers,
        rate: req.rate,
        hide: req.cache.hide,
    };
    let head_start = wbuf.len();
    let Some(ClientHead {
        status,
        head_len,
        framing: client_framing,
        keep_client,
        backend_keep_alive,
        switching,
    }) = write_client_head(&conn.rbuf, &client_head, wbuf, capture.as_deref_mut())
    else {
        failed(trace, tally, FailReason::BadResponse);
        return fail(ForwardError::BadResponse, &body, io.worker().is_draining());
    };
    trace.status = status;
    trace.integration_ns = integration_ns;
    tally.response(status, integration_ns);
    if req.cache.silent {
        wbuf.truncate(head_start);
    }
    if req.cache.head_only {
        if let Some(c) = capture.as_deref_mut() {
            c.eligible = false;
        }
    }

    if status == 304 && req.cache.revalidate.is_some() {
        // Held back: the cache answers from the entry it freshens. A 304
        // has no body; anything after its head makes the connection unfit
        // for reuse.
        wbuf.truncate(head_start);
        if conn.rbuf.len() == head_len && backend_keep_alive && group.max_idle > 0 {
            pool.put(conn, target, now_ms(), group.max_idle);
        }
        return Forwarded::NotModified {
            consumed: in_after,
            leftover: body.leftover.take(),
            keep_client,
        };
    }

    if switching {
        // Bytes the backend sent after its 101 belong to the client.
        wbuf.extend_from_slice(&conn.rbuf[head_len..]);
        conn.rbuf.clear();
        return Forwarded::Upgrade {
            conn,
            consumed: in_after,
        };
    }

    let end = stream_body(
        io,
        &mut conn,
        (head_len, client_framing, req.cache.silent),
        (wbuf, &mut trace.response_body_bytes),
        req.timeout,
        capture
            .as_deref_mut()
            .filter(|c| c.eligible)
            .map(|c| &mut c.body),
    )
    .await;
    match end {
        BodyEnd::Clean { reusable } => {
            if reusable && backend_keep_alive && group.max_idle > 0 {
                pool.put(conn, target, now_ms(), group.max_idle);
            }
        }
        // The head is out: a truncated body and a closed connection are the
        // only signal left.
        BodyEnd::ClientGone => return Forwarded::Closed,
        BodyEnd::BackendFailed => {
            failed(trace, tally, FailReason::CutOff);
            return Forwarded::Closed;
        }
    }
    if let Some(c) = capture {
        // Only here, after a clean end of the body as the backend framed it.
        c.ok = c.eligible && c.body.len() <= crate::cache::MAX_CACHEABLE_BODY;
    }
    Forwarded::Done {
        consumed: in_after,
        leftover: body.leftover.take(),
        keep_client,
    }
}

/// Records why a forward failed: in the trace and the target's counters.
#[inline]
fn failed(trace: &mut Trace, tally: Tally<'_>, reason: FailReason) {
    trace.reason = Some(reason);
    tally.failure(reason);
}

/// The failure reason of a connect error.
fn connect_reason(e: &ConnectError) -> FailReason {
    match e {
        ConnectError::Timeout => FailReason::ConnectTimeout,
        ConnectError::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            FailReason::ConnectRefused
        }
        ConnectError::Io(_) | ConnectError::Unresolved => FailReason::ConnectError,
        ConnectError::Tls(HandshakeFailure::Certificate) => FailReason::TlsCertificate,
        ConnectError::Tls(_) => FailReason::TlsHandshake,
    }
}

/// What [`write_client_head`] needs to know about the exchange.
struct ClientHeadInput<'a> {
    head: &'a RequestHead<'a, 'a>,
    rid: &'a [u8],
    date: &'a [u8],
    upgrading: bool,
    body_complete: bool,
    draining: bool,
    extra_headers: &'a [u8],
    rate: Option<&'a RateHeaders>,
    hide: &'a [Box<str>],
}

/// What [`write_client_head`] decided.
struct ClientHead {
    status: u16,
    head_len: usize,
    framing: ClientFraming,
    keep_client: bool,
    backend_keep_alive: bool,
    switching: bool,
}

/// Parses the backend's response head in `rbuf` and writes the client's
/// version of it into `wbuf`. `None`: the head is unusable (502).
fn write_client_head(
    rbuf: &[u8],
    input: &ClientHeadInput<'_>,
    wbuf: &mut Vec<u8>,
    mut capture: Option<&mut Capture>,
) -> Option<ClientHead> {
    let head = input.head;
    let head_only = head.method == "HEAD";
    let mut headers = header_array();
    let Ok(Some(rh)) = parse_response_head(rbuf, &mut headers, head_only) else {
        return None;
    };
    let status = rh.status;
    let switching = status == 101;
    if switching && !input.upgrading {
        return None;
    }
    let client_http10 = head.version == Version::Http10;
    let client_framing = match rh.framing {
        ResponseFraming::None => ClientFraming::None,
        ResponseFraming::Length(n) => ClientFraming::Length(n),
        ResponseFraming::Chunked if client_http10 => ClientFraming::DechunkToClose,
        ResponseFraming::Chunked => ClientFraming::Chunked,
        ResponseFraming::Close if client_http10 => ClientFraming::Close,
        ResponseFraming::Close => ClientFraming::Rechunk,
    };
    let keep_client = !switching
        && head.keep_alive
        && input.body_complete
        && !input.draining
        && !matches!(
            client_framing,
            ClientFraming::Close | ClientFraming::DechunkToClose
        );
    let connection = if switching {
        ConnectionHeader::Omit
    } else if !keep_client {
        ConnectionHeader::Close
    } else if client_http10 {
        ConnectionHeader::KeepAlive
    } else {
        ConnectionHeader::Omit
    };
    let status_line_start = wbuf.len();
    wbuf.extend_from_slice(b"HTTP/1.1 ");
    write_u64(wbuf, u64::from(status));
    wbuf.push(b' ');
    wbuf.extend_from_slice(rh.reason.as_bytes());
    wbuf.extend_from_slice(b"\r\n");
    if let Some(c) = capture.as_deref_mut() {
        c.status = status;
        c.eligible = !head_only
            && !switching
            && matches!(
                client_framing,
                ClientFraming::None
                    | ClientFraming::Length(_)
                    | ClientFraming::Chunked
                    | ClientFraming::DechunkToClose
            )
            && match client_framing {
                ClientFraming::Length(n) => n as usize <= crate::cache::MAX_CACHEABLE_BODY,
                _ => true,
            };
        c.head.clear();
        c.head.extend_from_slice(&wbuf[status_line_start..]);
        c.body.clear();
    }
    write_common_headers(wbuf, input.date, input.rid, connection);
    wbuf.extend_from_slice(input.extra_headers);
    write_rate_headers(wbuf, input.rate);
    let connection_lists_names = rh
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("connection"));
    let hiding = !input.hide.is_empty();
    for h in rh.headers {
        let name = h.name;
        let is = |s: &str| name.eq_ignore_ascii_case(s);
        if switching && (is("upgrade") || is("connection")) {
            // 101: the protocol switch must reach the client.
        } else if is_hop_by_hop(name)
            || (connection_lists_names && named_by_connection(rh.headers, name))
            || is("x-request-id")
            || (is("content-length") && !head_only)
        {
            continue;
        }
        if hiding && input.hide.iter().any(|n| is(n)) {
            // For the cache only: captured, not sent.
            if let Some(c) = capture.as_deref_mut() {
                c.head.extend_from_slice(name.as_bytes());
                c.head.extend_from_slice(b": ");
                c.head.extend_from_slice(h.value);
                c.head.extend_from_slice(b"\r\n");
            }
            continue;
        }
        let line_start = wbuf.len();
        if is("date") || is("server") {
            // API Gateway keeps the backend's values under a new name.
            wbuf.extend_from_slice(b"x-amzn-Remapped-");
        }
        wbuf.extend_from_slice(name.as_bytes());
        wbuf.extend_from_slice(b": ");
        wbuf.extend_from_slice(h.value);
        wbuf.extend_from_slice(b"\r\n");
        if let Some(c) = capture.as_deref_mut() {
            c.head.extend_from_slice(&wbuf[line_start..]);
        }
    }
    match client_framing {
        ClientFraming::Length(n) => crate::http::response::write_content_length(wbuf, n),
        ClientFraming::Chunked | ClientFraming::Rechunk => {
            wbuf.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
        }
        ClientFraming::None
            if !head_only && !switching && !crate::http::response::status_has_no_body(status) =>
        {
            wbuf.extend_from_slice(b"Content-Length: 0\r\n")
        }
        _ => {}
    }
    wbuf.extend_from_slice(b"\r\n");
    Some(ClientHead {
        status,
        head_len: rh.head_len,
        framing: client_framing,
        keep_client,
        backend_keep_alive: rh.keep_alive,
        switching,
    })
}

/// Where the backend's response head stands in `rbuf`.
enum HeadScan {
    /// A final head of this many bytes.
    Final,
    /// An interim 1xx head of this many bytes, to skip.
    Interim(usize),
    /// Not complete yet.
    Incomplete,
    /// Unusable.
    Bad,
}

/// Where the response head in `rbuf` ends, found without a full parse (the
/// one full parse happens in [`write_client_head`], which refuses what is
/// malformed): the first empty line, and the status digits to recognise an
/// interim 1xx.
fn scan_head(rbuf: &[u8]) -> HeadScan {
    let mut i = 0;
    let end = loop {
        let Some(nl) = rbuf[i..].iter().position(|&b| b == b'\n') else {
            break None;
        };
        let at = i + nl + 1;
        match rbuf.get(at) {
            Some(b'\n') => break Some(at + 1),
            Some(b'\r') if rbuf.get(at + 1) == Some(&b'\n') => break Some(at + 2),
            Some(_) => i = at,
            None => break None,
        }
    };
    let Some(end) = end else {
        return if rbuf.len() > crate::http::response_head::MAX_RESPONSE_HEAD {
            HeadScan::Bad
        } else {
            HeadScan::Incomplete
        };
    };
    if end > crate::http::response_head::MAX_RESPONSE_HEAD
        || rbuf.len() < 12
        || !rbuf.starts_with(b"HTTP/1.")
    {
        return HeadScan::Bad;
    }
    match &rbuf[9..12] {
        [b'1', b'0', b'1'] => HeadScan::Final,
        [b'1', d1, d2] if d1.is_ascii_digit() && d2.is_ascii_digit() => HeadScan::Interim(end),
        _ => HeadScan::Final,
    }
}

fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

/// Keeps a target's in-flight count while a request is out.
struct InFlight<'a>(&'a Target);

impl<'a> InFlight<'a> {
    fn new(t: &'a Target) -> InFlight<'a> {
        t.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(t)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Sends the request (what `ubuf` holds — the head and the body so far —
/// then the rest of the body as it arrives from the client) and reads until
/// a complete final response head is in `conn.rbuf`. Interim 1xx answers
/// other than 101 are forwarded to an HTTP/1.1 client (RFC 9110 §15.2), but
/// for a `100 Continue` when the gateway has already answered the client's
/// `Expect` itself; an HTTP/1.0 client gets none.
///
/// While the body fits [`RETRY_COPY_LIMIT`], every byte sent stays in
/// `ubuf` behind the head (`body.copy_whole`), so the caller can send the
/// request again on a fresh connection. A chunked body is re-encoded
/// canonically on the way ([`ChunkedDecoder::reencode`]).
///
/// The integration timeout runs from the moment the whole request is in
/// the backend's hands, as in API Gateway (a slow client upload is bounded
/// by the body read timeout instead); each write to the backend is bounded
/// by it too, so a backend that stops reading cannot hold the request.
async fn send_and_read_head<S: ClientStream>(
    io: &mut ClientIo<S>,
    head: &RequestHead<'_, '_>,
    conn: &mut UpstreamConn,
    bufs: Buffers<'_>,
    body: &mut BodyState,
    (limit, timeout): (u64, Duration),
) -> Result<(), ExchangeError> {
    let Buffers {
        wbuf,
        scratch,
        ubuf,
    } = bufs;
    conn.rbuf.clear();
    write_backend(conn, ubuf, 0, timeout).await?;
    // The rest of the body, streamed from the client.
    while !body.complete {
        let got = io.read_body(scratch).await.map_err(ExchangeError::Client)?;
        if !body.copy_whole {
            ubuf.clear();
        }
        let mark = ubuf.len();
        // Bytes to send straight from `scratch` (a large Content-Length
        // body no longer copied); otherwise `ubuf[mark..]` is sent.
        let mut direct = None;
        match body.framing {
            BodyFraming::Length(_) => {
                let take = (got as u64).min(body.remaining) as usize;
                body.remaining -= take as u64;
                body.seen += take as u64;
                if body.remaining == 0 {
                    body.complete = true;
                    if take < got {
                        body.leftover = Some(take..got);
                    }
                }
                if body.copy_whole && ubuf.len() + take <= RETRY_COPY_LIMIT {
                    ubuf.extend_from_slice(&scratch[..take]);
                } else {
                    body.copy_whole = false;
                    direct = Some(take);
                }
            }
            BodyFraming::Chunked => {
                let s = body
                    .decoder
                    .reencode(&scratch[..got], ubuf)
                    .map_err(|e| ExchangeError::ClientFraming(e.as_str()))?;
                body.seen += s.data;
                body.complete = s.done;
                if s.done && s.consumed < got {
                    body.leftover = Some(s.consumed..got);
                }
                if ubuf.len() > RETRY_COPY_LIMIT {
                    body.copy_whole = false;
                }
            }
            BodyFraming::None => {}
        }
        if body.seen + body.decoder.pending() > limit {
            return Err(ExchangeError::TooLarge);
        }
        match direct {
            Some(n) => {
                let chunk = std::mem::take(scratch);
                let Ok((res, chunk)) =
                    write_backend_within!(&mut conn.stream, chunk.slice(..n), timeout)
                else {
                    return Err(ExchangeError::Timeout);
                };
                *scratch = chunk.into_inner();
                if res.is_err() {
                    return Err(ExchangeError::Backend {
                        wrote_all: false,
                        answered: false,
                    });
                }
            }
            None => write_backend(conn, ubuf, mark, timeout).await?,
        }
    }
    // The response head, within the integration timeout.
    let deadline = monoio::time::Instant::now() + timeout;
    let forward_interim = head.version == Version::Http11;
    let mut answered = false;
    loop {
        match monoio::time::timeout_at(deadline, read_head(conn)).await {
            Err(_) => return Err(ExchangeError::Timeout),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(n))) => {
                answered = true;
                let interim = &conn.rbuf[..n];
                let already_continued =
                    head.expect_continue && interim.get(9..12) == Some(&b"100"[..]);
                if forward_interim && !already_continued {
                    if !write_interim(interim, wbuf) {
                        return Err(ExchangeError::Bad);
                    }
                    if !io.flush(wbuf).await {
                        return Err(ExchangeError::Client(ClientStop::Gone));
                    }
                }
                conn.rbuf.drain(..n);
            }
            Ok(Err(ExchangeError::Backend { wrote_all, .. })) => {
                return Err(ExchangeError::Backend {
                    wrote_all,
                    answered,
                })
            }
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Writes `ubuf[from..]` to the backend within `timeout`.
async fn write_backend(
    conn: &mut UpstreamConn,
    ubuf: &mut Vec<u8>,
    from: usize,
    timeout: Duration,
) -> Result<(), ExchangeError> {
    if from >= ubuf.len() {
        return Ok(());
    }
    let buf = std::mem::take(ubuf);
    let Ok((res, buf)) = write_backend_within!(&mut conn.stream, buf.slice(from..), timeout) else {
        return Err(ExchangeError::Timeout);
    };
    *ubuf = buf.into_inner();
    res.map(|_| ()).map_err(|_| ExchangeError::Backend {
        wrote_all: false,
        answered: false,
    })
}

/// Writes an interim (1xx) response head from the backend for the client:
/// its status line and end-to-end headers. False: the head is malformed.
fn write_interim(raw: &[u8], wbuf: &mut Vec<u8>) -> bool {
    let mut headers = header_array();
    let Ok(Some(rh)) = parse_response_head(raw, &mut headers, false) else {
        return false;
    };
    wbuf.extend_from_slice(b"HTTP/1.1 ");
    write_u64(wbuf, u64::from(rh.status));
    wbuf.push(b' ');
    wbuf.extend_from_slice(rh.reason.as_bytes());
    wbuf.extend_from_slice(b"\r\n");
    for h in rh.headers {
        if is_hop_by_hop(h.name) || named_by_connection(rh.headers, h.name) {
            continue;
        }
        wbuf.extend_from_slice(h.name.as_bytes());
        wbuf.extend_from_slice(b": ");
        wbuf.extend_from_slice(h.value);
        wbuf.extend_from_slice(b"\r\n");
    }
    wbuf.extend_from_slice(b"\r\n");
    true
}

/// Reads until `conn.rbuf` starts with a complete response head:
/// `Some(n)` for an interim 1xx head of `n` bytes, `None` for the final one.
async fn read_head(conn: &mut UpstreamConn) -> Result<Option<usize>, ExchangeError> {
    loop {
        match scan_head(&conn.rbuf) {
            HeadScan::Final => return Ok(None),
            HeadScan::Interim(n) => return Ok(Some(n)),
            HeadScan::Bad => return Err(ExchangeError::Bad),
            HeadScan::Incomplete => {}
        }
        match read_backend(conn).await {
            Ok(0) | Err(_) => {
                return Err(if conn.rbuf.is_empty() {
                    ExchangeError::Backend {
                        wrote_all: true,
                        answered: false,
                    }
                } else {
                    ExchangeError::Bad
                })
            }
            Ok(_) => {}
        }
    }
}

/// Appends what the backend sends to `conn.rbuf` (growing it only when a
/// head does not fit).
async fn read_backend(conn: &mut UpstreamConn) -> io::Result<usize> {
    if conn.rbuf.len() == conn.rbuf.capacity() {
        conn.rbuf.reserve(STREAM_CHUNK);
    }
    let buf = std::mem::take(&mut conn.rbuf);
    let len = buf.len();
    let cap = buf.capacity();
    let (res, slice) = match &mut conn.stream {
        BackendStream::Plain(tcp) => tcp.read(buf.slice_mut(len..cap)).await,
        BackendStream::Tls(tls) => tls_read(tls, buf.slice_mut(len..cap)).await,
    };
    conn.rbuf = slice.into_inner();
    res
}

enum BodyEnd {
    /// The body was relayed whole; `reusable`: nothing followed it.
    Clean { reusable: bool },
    /// The client stopped reading or went away.
    ClientGone,
    /// The backend failed mid-body.
    BackendFailed,
}

/// Relays the response body: first what is in `conn.rbuf` after the head,
/// then reads from the backend, each buffer written to the client before
/// the next read (back-pressure). `sent` counts the payload bytes relayed
/// (written, or queued in `wbuf`).
async fn stream_body<S: ClientStream>(
    io: &mut ClientIo<S>,
    conn: &mut UpstreamConn,
    (head_len, framing, silent): (usize, ClientFraming, bool),
    (wbuf, sent): (&mut Vec<u8>, &mut u64),
    timeout: Duration,
    mut capture: Option<&mut Vec<u8>>,
) -> BodyEnd {
    let mut decoder = ChunkedDecoder::new();
    let mut remaining = match framing {
        ClientFraming::Length(n) => n,
        _ => 0,
    };
    let mut start = head_len;
    loop {
        // Relay conn.rbuf[start..] as the framing requires. Bytes passed
        // through unchanged are a range of the read buffer (`relay`):
        // written straight from it when nothing else is queued for the
        // client (every read after the first), else appended to `wbuf`
        // behind the response head.
        let data = &conn.rbuf[start..];
        let mut done = false;
        let mut extra = false;
        let mut relay = 0..0;
        // Payload bytes in this buffer.
        let mut payload = 0;
        match framing {
            ClientFraming::None => {
                done = true;
                extra = !data.is_empty();
            }
            ClientFraming::Length(_) => {
                let take = (data.len() as u64).min(remaining) as usize;
                if let Some(c) = capture.as_deref_mut() {
                    c.extend_from_slice(&data[..take]);
                }
                relay = start..start + take;
                payload = take;
                remaining -= take as u64;
                done = remaining == 0;
                extra = take < data.len();
            }
            ClientFraming::Chunked | ClientFraming::DechunkToClose => {
                let mut pos = 0;
                while pos < data.len() && !done {
                    let Ok(d) = decoder.decode(&data[pos..]) else {
                        return BodyEnd::BackendFailed;
                    };
                    if let Some(r) = d.data.clone() {
                        payload += r.len();
                        let bytes = &data[pos + r.start..pos + r.end];
                        if framing == ClientFraming::DechunkToClose && !silent {
                            wbuf.extend_from_slice(bytes);
                        }
                        if let Some(c) = capture.as_deref_mut() {
                            // The decoded body is stored (replayed with a
                            // Content-Length); past the size limit the copy
                            // stops one byte over, which marks it unstorable.
                            let room =
                                (crate::cache::MAX_CACHEABLE_BODY + 1).saturating_sub(c.len());
                            c.extend_from_slice(&bytes[..bytes.len().min(room)]);
                        }
                    }
                    pos += d.consumed;
                    done = d.done;
                }
                if framing == ClientFraming::Chunked {
                    // Validated chunked framing passes through as is.
                    relay = start..start + pos;
                }
                extra = pos < data.len();
            }
            ClientFraming::Rechunk => {
                payload = data.len();
                if !data.is_empty() && !silent {
                    write_chunk_size(wbuf, data.len());
                    wbuf.extend_from_slice(data);
                    wbuf.extend_from_slice(b"\r\n");
                }
            }
            ClientFraming::Close => {
                relay = start..conn.rbuf.len();
                payload = relay.len();
            }
        }
        if !relay.is_empty() && !silent {
            if wbuf.is_empty() {
                if !write_from_backend_buffer(io, conn, relay).await {
                    return BodyEnd::ClientGone;
                }
            } else {
                wbuf.extend_from_slice(&conn.rbuf[relay]);
            }
        }
        *sent += payload as u64;
        if done {
            return BodyEnd::Clean { reusable: !extra };
        }
        // More to come: hand the client what we have, then read on.
        if !wbuf.is_empty() && !io.flush(wbuf).await {
            return BodyEnd::ClientGone;
        }
        conn.rbuf.clear();
        start = 0;
        match monoio::time::timeout(timeout, read_backend(conn)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) if matches!(framing, ClientFraming::Rechunk | ClientFraming::Close) => {
                if framing == ClientFraming::Rechunk && !silent {
                    wbuf.extend_from_slice(b"0\r\n\r\n");
                }
                return BodyEnd::Clean { reusable: false };
            }
            _ => return BodyEnd::BackendFailed,
        }
    }
}

/// Writes `conn.rbuf[range]` to the client without copying it, under the
/// write timeout. False: the client is gone or stalled.
async fn write_from_backend_buffer<S: ClientStream>(
    io: &mut ClientIo<S>,
    conn: &mut UpstreamConn,
    range: Range<usize>,
) -> bool {
    let buf = std::mem::take(&mut conn.rbuf);
    let (ok, slice) = io.write(buf.slice(range)).await;
    conn.rbuf = slice.into_inner();
    ok
}

/// Writes the request head for the backend: the route's target, `Host`,
/// the client's end-to-end headers, `X-Forwarded-*`, the request id and the
/// body's framing.
fn write_request_head(out: &mut Vec<u8>, req: &ForwardRequest<'_, '_>, target: &Target) {
    let head = req.head;
    let info = req.client;
    let rid = req.request_id;
    let upgrading = req.upgrading;
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    (req.target)(out);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    match head.host {
        Some(h) if req.preserve_host => out.extend_from_slice(h),
        _ => out.extend_from_slice(target.authority.as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let connection_lists_names = head
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("connection"));
    let revalidating = req.cache.revalidate.is_some();
    for h in head.headers {
        let name = h.name;
        let is = |s: &str| name.eq_ignore_ascii_case(s);
        if is_hop_by_hop(name)
            || is("host")
            || is("content-length")
            || is("expect")
            || is("x-forwarded-for")
            || is("x-forwarded-proto")
            || is("x-forwarded-port")
            || is("x-request-id")
            || (connection_lists_names && named_by_connection(head.headers, name))
            || req.hidden_header.is_some_and(is)
            || req.strip_headers.iter().any(|n| is(n))
            || (revalidating && (is("if-none-match") || is("if-modified-since")))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    // Earlier hops first, then this one.
    out.extend_from_slice(b"X-Forwarded-For: ");
    for h in head.headers {
        if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(info.peer_ip());
    out.extend_from_slice(if info.tls_cert.is_some() {
        b"\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: "
    } else {
        b"\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: "
    });
    write_u64(out, u64::from(info.local_port));
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(rid);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(req.conn_headers);
    if let Some(lines) = req.cache.revalidate {
        out.extend_from_slice(lines);
    }
    match head.framing {
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        BodyFraming::None => {
            if matches!(head.method, "POST" | "PUT" | "PATCH") {
                out.extend_from_slice(b"Content-Length: 0\r\n");
            }
        }
    }
    if upgrading {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
        for h in head
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        {
            out.extend_from_slice(b"Upgrade: ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_head_finds_the_end_and_interim_answers() {
        let s = |b: &[u8]| match scan_head(b) {
            HeadScan::Final => "final".to_string(),
            HeadScan::Interim(n) => format!("interim {n}"),
            HeadScan::Incomplete => "incomplete".to_string(),
            HeadScan::Bad => "bad".to_string(),
        };
        assert_eq!(s(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"), "final");
        assert_eq!(s(b"HTTP/1.1 200 OK\nA: b\n\n"), "final");
        assert_eq!(s(b"HTTP/1.1 200 OK\r\nA: b\r\n"), "incomplete");
        assert_eq!(
            s(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
            "interim 25"
        );
        assert_eq!(s(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"), "final");
        assert_eq!(s(b"NOT HTTP\r\n\r\n"), "bad");
        let big = vec![b'a'; crate::http::response_head::MAX_RESPONSE_HEAD + 1];
        assert_eq!(s(&big), "bad");
    }
}
