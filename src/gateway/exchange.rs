//! What one request may use of its connection, and what the phases share:
//! the connection's pipeline buffers ([`ConnState`]), the lent parts of the
//! client connection ([`Exchange`]), the request's context ([`Request`]),
//! what the connection does next ([`Next`]); and the steps more than one
//! phase takes: writing a gateway error, forwarding to the route's
//! backends, and answering what the forward returned.

#![forbid(unsafe_code)]

use std::ops::Range;

use crate::runtime::ClientStream;

use super::key_source::{strip_query_tail, KeySource};
use super::outcome::Outcome;
use super::response::GatewayError;
use super::snapshot::ProxyRoute;
use super::worker::GatewayWorker;
use crate::cache::KeyBuilder;
use crate::http::response::{ConnectionHeader, RateHeaders};
use crate::http::response_head::named_by_connection;
use crate::http::{RequestHead, Version};
use crate::router::Params;
use crate::runtime::{BufPool, ClientIo};
use crate::upstream::forward::{
    self, Backends, Buffers, CacheHints, Capture, ClientInfo, ForwardError, ForwardRequest,
    Forwarded, Trace,
};
use crate::upstream::pool::UpstreamConn;
use crate::upstream::Registry;

/// What a connection keeps for the pipeline between requests: buffers
/// that are empty until the first request that needs them.
pub(super) struct ConnState {
    /// The request head (and body start) for a backend; kept for a retry.
    pub ubuf: Vec<u8>,
    /// Cache key bytes.
    pub keys: KeyBuilder,
    /// The copy of a response being cached.
    pub capture: Capture,
    /// Peer address and local port, for `X-Forwarded-*`.
    pub info: ClientInfo,
    /// What the current request was answered with (for metrics and logs).
    pub answer: Answer,
    /// What the last forward recorded (status, integration latency,
    /// target, failure reason…), for metrics and access logs.
    pub trace: Trace,
}

/// What a request was answered with, set where the response head is
/// written.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Answer {
    /// The response's status; 0 until one is written (a relayed backend
    /// response leaves it 0: its status is the trace's).
    pub status: u16,
    /// Its body's length, for a response the gateway wrote itself.
    pub body_bytes: Option<u64>,
}

impl ConnState {
    pub fn new(info: ClientInfo) -> ConnState {
        ConnState {
            ubuf: Vec::new(),
            keys: KeyBuilder::default(),
            capture: Capture::default(),
            info,
            answer: Answer::default(),
            trace: Trace::default(),
        }
    }

    /// Gives the buffers back to the worker's pool (the connection goes
    /// idle or closes); a copy being captured is freed.
    pub fn give_buffers(&mut self, pool: &BufPool) {
        pool.give(&mut self.ubuf);
        pool.give(self.keys.buffer());
        self.capture = Capture::default();
    }
}

/// What one request may use of its connection.
pub(super) struct Exchange<'c, S> {
    /// The client stream.
    pub io: &'c mut ClientIo<S>,
    /// Responses for the client.
    pub wbuf: &'c mut Vec<u8>,
    /// Client body bytes beyond the read buffer.
    pub scratch: &'c mut Vec<u8>,
    /// The connection's pipeline buffers.
    pub state: &'c mut ConnState,
}

/// One request's context, shared by the phases.
pub(super) struct Request<'r, 'h, 's> {
    /// The parsed head.
    pub head: &'r RequestHead<'h, 'h>,
    /// The bytes that followed the head in the read buffer.
    pub after: &'r [u8],
    /// The request id (the client's, if sane, else a new one).
    pub rid: &'r [u8],
    /// The route's path parameters.
    pub params: &'r Params<'s, 'h>,
    /// A `HEAD` request: answered without a body.
    pub head_only: bool,
    /// The backends of the snapshot the request started on.
    pub upstreams: &'s Registry,
    /// The stage's canary answers it (for what records the request).
    #[allow(dead_code)]
    pub is_canary: bool,
    /// Rate-limit headers for every response to it (`[throttle] headers`
    /// on and some throttle level applied; set by the throttle phase).
    pub rate: Option<RateHeaders>,
    /// Where the API key is read from, and whether backends see it.
    pub key_source: &'s KeySource,
}

/// What the connection does after a request has been answered.
pub(super) enum Next {
    /// Keep going: consumed this many bytes of the read buffer after the
    /// head, and these bytes of `scratch` belong to the next request.
    Continue {
        consumed: usize,
        leftover: Option<Range<usize>>,
    },
    /// Write what is pending and close; `linger`: the client may still be
    /// sending (its request was not read whole).
    Close { linger: bool },
    /// Write what is pending, then tunnel to this backend connection;
    /// `consumed` bytes after the head were used.
    Upgrade { conn: UpstreamConn, consumed: usize },
}

/// The `Connection` header for a response: `close`, `keep-alive` for an
/// HTTP/1.0 client that keeps the connection, else none.
pub(super) fn connection_header(head: &RequestHead<'_, '_>, close: bool) -> ConnectionHeader {
    if close {
        ConnectionHeader::Close
    } else if head.version == Version::Http10 {
        ConnectionHeader::KeepAlive
    } else {
        ConnectionHeader::Omit
    }
}

/// Writes a gateway error into the connection's write buffer, with the
/// request's rate-limit headers if it has them.
pub(super) fn write_error<S: ClientStream>(
    x: &mut Exchange<'_, S>,
    e: GatewayError,
    head: &RequestHead<'_, '_>,
    rid: &[u8],
    close: bool,
    rate: Option<&RateHeaders>,
) {
    x.state.answer.status = e.status();
    let date = x.io.worker().date();
    e.write_with(
        x.wbuf,
        date.as_bytes(),
        rid,
        connection_header(head, close),
        head.method == "HEAD",
        rate,
    );
}

/// The integration: forwards the request to the route's backends.
/// `extra_headers` go into the client's response; with `capture`, a copy of
/// the response is kept for the stage cache.
pub(super) async fn forward<S: ClientStream>(
    gw: &GatewayWorker,
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
    route: &ProxyRoute,
    extra_headers: &[u8],
    capture: bool,
    cache: CacheHints<'_>,
) -> Forwarded {
    let head = req.head;
    let params = req.params;
    let ConnState {
        ubuf,
        capture: copy,
        info,
        trace,
        ..
    } = &mut *x.state;
    x.io.buffers().ensure_small(ubuf);
    let hidden_query = req.key_source.hidden_query();
    // A verified client certificate's header lines (mutual TLS).
    let conn_headers = x.io.backend_headers();
    let fwd = ForwardRequest {
        head,
        after: req.after,
        request_id: req.rid,
        group: route.group,
        target: &|out: &mut Vec<u8>| {
            route.write_target(params, head.query, out);
            if let Some(name) = hidden_query {
                // The client's query string is what write_target wrote last.
                strip_query_tail(out, head.query.len(), name);
            }
        },
        timeout: route.timeout,
        preserve_host: route.preserve_host,
        upgrading: S::TUNNELS
            && route.allow_upgrade
            && head.upgrade
            && named_by_connection(head.headers, "upgrade"),
        max_body: gw.max_body,
        client: info,
        extra_headers,
        rate: req.rate.as_ref(),
        hidden_header: req.key_source.hidden_header(),
        strip_headers: gw
            .tls
            .as_ref()
            .map_or(&[], |t| t.client_cert_header_names()),
        conn_headers: conn_headers.as_deref().unwrap_or(&[]),
        cache,
    };
    forward::forward(
        &mut *x.io,
        &fwd,
        Backends {
            registry: req.upstreams,
            pool: &gw.pool,
            worker: gw.id(),
        },
        Buffers {
            wbuf: &mut *x.wbuf,
            scratch: &mut *x.scratch,
            ubuf,
        },
        capture.then_some(copy),
        trace,
    )
    .await
}

/// The gateway error that answers a failed forward (as API Gateway
/// answers it).
pub(super) fn forward_error(e: ForwardError, max_body: u64) -> GatewayError {
    match e {
        ForwardError::Network => GatewayError::IntegrationFailure,
        ForwardError::Timeout => GatewayError::IntegrationTimeout,
        ForwardError::BadResponse => GatewayError::BadGateway,
        ForwardError::BodyTooLarge => GatewayError::PayloadTooLarge(max_body),
        ForwardError::BodyFraming(why) => GatewayError::BadRequest(why),
        ForwardError::BodyTimeout => GatewayError::RequestTimeout,
    }
}

/// respond: what the connection does after a forward, answering a failure
/// with its gateway error. `served` is the outcome of a forward that got a
/// response through.
pub(super) fn respond_forwarded<S: ClientStream>(
    gw: &GatewayWorker,
    x: &mut Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
    fwd: Forwarded,
    served: Outcome,
) -> (Next, Outcome) {
    match fwd {
        Forwarded::Done {
            consumed,
            leftover,
            keep_client: true,
        } => (Next::Continue { consumed, leftover }, served),
        Forwarded::Done { .. } => (Next::Close { linger: false }, served),
        Forwarded::Failed {
            error,
            close,
            consumed,
            leftover,
        } => {
            let e = forward_error(error, gw.max_body);
            write_error(x, e, req.head, req.rid, close, req.rate.as_ref());
            let next = if close {
                // Errors before the request was read whole among them.
                Next::Close { linger: true }
            } else {
                Next::Continue { consumed, leftover }
            };
            (next, Outcome::Error(e))
        }
        Forwarded::Closed => (Next::Close { linger: true }, Outcome::Aborted),
        // Only a revalidation asks for a held-back 304, and it answers
        // that itself; were one to come here, nothing has been written.
        Forwarded::NotModified { .. } => {
            let e = GatewayError::BadGateway;
            write_error(x, e, req.head, req.rid, true, req.rate.as_ref());
            (Next::Close { linger: true }, Outcome::Error(e))
        }
        Forwarded::Upgrade { conn, consumed } => {
            (Next::Upgrade { conn, consumed }, Outcome::Upgraded)
        }
    }
}
