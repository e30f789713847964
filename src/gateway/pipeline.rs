//! One request, phase by phase: (health) → resolve → authorize → throttle →
//! quota → cache → integrate → respond → record (see the [module page](super)).
//!
//! [`handle`] runs for each request whose head is parsed. It builds the
//! request's context ([`Request`]: the head, the bytes after it, the route's
//! parameters, the request id) and answers it, phase by phase in its body;
//! whatever happened, the last phase records the request's [`Outcome`].
//! Authorization (API keys), throttling (the key's plan, the route's bucket
//! in its stage, then the account's) and the key's quota run between
//! resolving the route and the cache.
//!
//! Errors are answered as API Gateway answers them
//! ([`GatewayError`]); a request whose body was not read whole closes the
//! connection after its answer, lingering.

#![forbid(unsafe_code)]

use std::ops::Range;

use crate::runtime::ClientStream;

use super::exchange::{
    connection_header, forward, respond_forwarded, write_error, Answer, Exchange, Next, Request,
};
use super::key_source::{KeySource, MAX_KEY_LEN};
use super::limits::Limiter;
use super::outcome::Outcome;
use super::response::GatewayError;
use super::snapshot::{Dispatch, ResponseContext, Routed, Snapshot};
use super::worker::GatewayWorker;
use crate::http::response::ConnectionHeader;
use crate::http::{BodyFraming, RequestHead, Version};
use crate::observe::access_log::{domain_name, LogFormat, LogRecord};
use crate::observe::metrics::Sample;
use crate::router::Params;
use crate::throttle::{now_ns, take_levels, take_two, Level};
use crate::tls::ClientAuth;
use crate::upstream::forward::{CacheHints, Forwarded, Trace};

/// Answers one request whose head is parsed, and records how it ended.
///
/// The phases up to the response are a block of this function rather than
/// an async fn of their own: a nested future is one more state to build,
/// copy in, resume and drop on every request.
pub(super) async fn handle<S: ClientStream>(
    gw: &GatewayWorker,
    mut x: Exchange<'_, S>,
    head: RequestHead<'_, '_>,
    after: &[u8],
) -> Next {
    let rid = gw.new_request_id(head.request_id);
    x.io.start_request(rid.as_bytes());
    // One clock read for the request's start: Latency's origin and the
    // time every throttle level is taken at.
    let start = now_ns();
    x.state.answer = Answer::default();
    x.state.trace = Trace::default();
    // The snapshot current now; a change published while the request runs
    // does not touch it.
    let snapshot = gw.snapshot();
    // Where the request is counted and logged (once it resolves).
    let mut series = 0u32;
    // Refused before routing (a body over the limit, 421, mutual TLS, a
    // redirect): logged with the global format.
    let mut seen = Seen {
        log: snapshot.default_log(),
        ..Seen::default()
    };
    #[cfg(debug_assertions)]
    if gw.fault_injection {
        inject_fault(&head);
    }
    let x = &mut x;
    let head = &head;
    let rid = rid.as_bytes();
    // The phases up to the response.
    let (next, outcome) = 'answer: {
        let head_only = head.method == "HEAD";
        // The health path, when configured, before anything else: a load
        // balancer's probe never reaches routing, keys or throttles.
        if let Some((path, workers)) = &gw.health_path {
            if head.path == &**path && head.framing == BodyFraming::None && !head.upgrade {
                break 'answer health(x, head, rid, *workers);
            }
        }
        // `[tls] redirect_hosts`: plain HTTP for these hosts goes to HTTPS.
        if x.state.info.tls_cert.is_none() && gw.tls.is_some() && head.framing == BodyFraming::None
        {
            if let Some(answer) = redirect_to_https(gw, x, head, rid) {
                break 'answer answer;
            }
        }
        // On TLS, the Host must be one the handshake's certificate is for:
        // a connection made for one name is not reused for another.
        if let Some(cert) = x.state.info.tls_cert {
            if misdirected(gw, cert, head) {
                let e = GatewayError::MisdirectedRequest;
                write_error(x, e, head, rid, true, None);
                break 'answer (Next::Close { linger: true }, Outcome::Error(e));
            }
            // Mutual TLS: without a trusted client certificate, every
            // request on the connection is refused, as API Gateway does.
            if !matches!(
                x.state.info.client_auth,
                ClientAuth::NotRequired | ClientAuth::Verified
            ) {
                let e = GatewayError::Forbidden;
                write_error(x, e, head, rid, true, None);
                break 'answer (Next::Close { linger: true }, Outcome::Error(e));
            }
        }
        // A declared body over the limit is refused before anything else.
        if let BodyFraming::Length(n) = head.framing {
            if n > gw.max_body {
                let e = GatewayError::PayloadTooLarge(gw.max_body);
                write_error(x, e, head, rid, true, None);
                break 'answer (Next::Close { linger: true }, Outcome::Error(e));
            }
        }

        // resolve: host and base path → API → stage (or its canary) →
        // route.
        let mut params = Params::new();
        let Routed {
            dispatch,
            is_canary,
            series: routed_series,
            log,
            names,
            route_template,
            throttle,
            client,
            keys,
        } = snapshot.dispatch(head.method, head.host, head.path, &mut params, || gw.roll());
        series = routed_series;
        seen = Seen {
            log,
            names,
            route_template,
            is_canary,
            key_id: None,
        };
        let mut req = Request {
            head,
            after,
            rid,
            params: &params,
            head_only,
            upstreams: &snapshot.upstreams,
            is_canary,
            rate: None,
            key_source: snapshot.key_source(),
        };
        // Opt-ins: per-client buckets and rate-limit headers (the throttle
        // phase; `None` when neither applies), where API keys are read from
        // (authorize).
        let mut lim = Limiter::for_request(
            client,
            &x.state.info,
            snapshot.rate_headers(),
            &mut req.rate,
        );
        let ks = snapshot.key_source();

        // authorize: a route that requires an API key needs an enabled
        // `x-api-key` in a usage plan of the stage (else 403 Forbidden).
        // throttle: the key's plan per route and per key, the route's
        // bucket in its stage, then the account's; a request refused at one
        // level takes nothing from the others.
        // quota: a request with a key, admitted by every throttle, counts
        // toward its plan's usage; over the period's quota it is refused
        // (429 Limit Exceeded) before the cache, as in API Gateway.
        let dispatch = match dispatch {
            Dispatch::Fail(e) => Dispatch::Fail(e),
            d => match keys.map(|k| {
                let mut buf = [0u8; MAX_KEY_LEN];
                api_key(head, ks, &mut buf).and_then(|v| snapshot.key_access_id(&k, v))
            }) {
                Some(None) => Dispatch::Fail(GatewayError::Forbidden),
                Some(Some((plan, route, key_id))) => {
                    seen.key_id = Some(key_id);
                    let now = start;
                    if throttled_with_plan(&snapshot, plan.levels(route), throttle, &mut lim, now) {
                        Dispatch::Fail(GatewayError::TooManyRequests)
                    } else if let Err(q) = plan.usage().admit(now) {
                        // quota: counted once admitted past throttling.
                        if let Some(lim) = &mut lim {
                            let limit = plan.usage().quota().map_or(0, |q| q.limit);
                            lim.refuse_with(
                                u32::try_from(limit).unwrap_or(u32::MAX),
                                q.retry_after_secs,
                            );
                        }
                        Dispatch::Fail(GatewayError::QuotaExceeded)
                    } else {
                        d
                    }
                }
                None if throttled(&snapshot, throttle, &mut lim, start) => {
                    Dispatch::Fail(GatewayError::TooManyRequests)
                }
                None => d,
            },
        };

        // A mock or a gateway error answers here; a proxied route leaves.
        let local = match dispatch {
            Dispatch::Proxy(route, stage_cache) => {
                // cache (the RFC 9111 mode stores GET only)
                let rfc = stage_cache.is_some_and(|c| c.settings.respect_origin_cache_control);
                if let (Some(cache), Some(rc)) = (stage_cache, &route.cache) {
                    if rc.ttl_for(head.method).is_some()
                        && (!rfc || matches!(head.method, "GET" | "HEAD"))
                    {
                        let cached = super::cached::CachedRoute { route, rc, cache };
                        break 'answer super::cached::serve(gw, x, &req, &cached).await;
                    }
                }
                // integrate: http_proxy. In the RFC mode, an unsafe
                // method's answer (its head captured for `Location`)
                // invalidates what the cache holds for its URI.
                let invalidates = rfc && matches!(head.method, "POST" | "PUT" | "DELETE" | "PATCH");
                let hints = CacheHints {
                    head_only: invalidates,
                    ..CacheHints::default()
                };
                let fwd = forward(gw, x, &req, route, b"", invalidates, hints).await;
                if invalidates
                    && matches!(fwd, Forwarded::Done { .. })
                    && (200..400).contains(&x.state.trace.status)
                {
                    super::cached_rfc::invalidate_after(&snapshot, head, &x.state.capture);
                }
                break 'answer respond_forwarded(gw, x, &req, fwd, Outcome::Proxied);
            }
            Dispatch::Mock(m) => Ok(m),
            Dispatch::Fail(e) => Err(e),
        };
        // The request's body is read and dropped before the answer.
        let done = if super::body::has_body(&req) {
            super::body::discard(gw, x, &req).await
        } else {
            Ok((0, None))
        };
        let (consumed, leftover) = match done {
            Ok(done) => done,
            Err(e) => break 'answer e,
        };
        let (connection, keep) = keep_after_body(x, &req);
        let date = x.io.worker().date();
        let outcome = match local {
            Ok(m) => {
                let ctx = ResponseContext {
                    date: date.as_bytes(),
                    request_id: rid,
                    connection,
                    rate: req.rate.as_ref(),
                };
                let (status, len) = m.write(&params, &ctx, x.wbuf, head_only);
                x.state.answer = Answer {
                    status,
                    body_bytes: Some(len),
                };
                Outcome::Mock
            }
            Err(e) => {
                let rate = req.rate.as_ref();
                x.state.answer.status = e.status();
                e.write_with(x.wbuf, date.as_bytes(), rid, connection, head_only, rate);
                Outcome::Error(e)
            }
        };
        (next_after_body(keep, consumed, leftover), outcome)
    };
    // record: the outcome, the series' counts and latencies, the log line.
    let log = seen.log.zip(gw.log.as_ref());
    let latency_us = if gw.metrics.is_some() || log.is_some() {
        now_ns().saturating_sub(start) / 1_000
    } else {
        0
    };
    let trace = &x.state.trace;
    // A response relayed from the backend: the status it sent.
    let status = match x.state.answer.status {
        0 => trace.status,
        s => s,
    };
    let integration_us = (trace.integration_ns > 0).then_some(trace.integration_ns / 1_000);
    let sample = gw.metrics.is_some().then(|| Sample {
        series: snapshot.series_id(series),
        status,
        outcome,
        latency_us: Some(latency_us),
        integration_us,
    });
    gw.record(outcome, sample.as_ref());
    if let (Some(m), Outcome::Error(e)) = (&gw.metrics, outcome) {
        if e.status() >= 500 {
            m.record_error(gw.id(), trace.reason, e.status());
        }
    }
    if let Some((format, wl)) = log {
        let wl = &mut *wl.borrow_mut();
        let error = match outcome {
            Outcome::Error(e) => Some(e),
            _ => None,
        };
        let rec = LogRecord {
            request_id: rid,
            extended_request_id: Some(rid),
            // A client's id is used only when it is such a token
            // (`IdGenerator::from_client_or_new`); ours always is.
            tokens_checked: true,
            source_ip: Some(x.state.info.ip),
            source_ip_text: Some(x.state.info.peer_ip()),
            user_agent: if format.uses_user_agent() {
                header(head, "user-agent")
            } else {
                None
            },
            api_key_id: seen.key_id,
            method: head.method.as_bytes(),
            resource_path: seen.route_template,
            path: head.path.as_bytes(),
            stage: seen.names.map(|n| n.1),
            api_id: seen.names.map(|n| n.0),
            host: head.host,
            protocol: match head.version {
                Version::Http10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            request_time_ms: wl.epoch_ms(start),
            status,
            response_length: match (error, x.state.answer.body_bytes) {
                (_, Some(n)) => Some(n),
                (Some(e), None) if head.method != "HEAD" => Some(e.body_len() as u64),
                _ => (trace.status != 0).then_some(trace.response_body_bytes),
            },
            response_latency_us: latency_us,
            integration_latency_us: integration_us,
            integration_status: (trace.status != 0).then_some(trace.status),
            integration_error: trace.reason.map(|r| r.as_str()),
            error_message: error.map(GatewayError::message),
            error_response_type: error.map(GatewayError::as_str),
            is_canary: seen.is_canary,
            outcome: outcome.as_str(),
            client_cert: x.io.client_cert(),
            ..LogRecord::default()
        };
        wl.lines.log(format, &rec, &mut wl.clock);
    }
    next
}

/// What the phases learned that the record phase logs.
#[derive(Default)]
struct Seen<'s> {
    /// The access log format (the stage's, or the default).
    log: Option<&'s LogFormat>,
    /// The API's and the stage's names.
    names: Option<(&'s str, &'s str)>,
    /// The route's path template.
    route_template: Option<&'s str>,
    /// The stage's canary answered.
    is_canary: bool,
    /// The API key's id, when one was checked and found.
    key_id: Option<&'s str>,
}

/// Whether `head`'s Host would choose another certificate than `cert`,
/// the one its TLS connection's handshake chose. Out of line: plain
/// connections never call it, and inlined it made the handler too large
/// for the compiler to inline the phases it calls on every request.
#[inline(never)]
fn misdirected(gw: &GatewayWorker, cert: u16, head: &RequestHead<'_, '_>) -> bool {
    let Some(tls) = &gw.tls else {
        return false;
    };
    let host = head
        .host
        .map(domain_name)
        .and_then(|h| std::str::from_utf8(h).ok());
    tls.certificate_for(host) != cert
}

/// 308 Permanent Redirect to the same path and query over HTTPS, when
/// `[tls] redirect_hosts` lists the request's host (requests without a
/// body only: one with a body is served where it is). Out of line: only
/// plain connections of a gateway with TLS listeners get here.
#[inline(never)]
fn redirect_to_https<S: ClientStream>(
    gw: &GatewayWorker,
    x: &mut Exchange<'_, S>,
    head: &RequestHead<'_, '_>,
    rid: &[u8],
) -> Option<(Next, Outcome)> {
    use crate::http::response::{write_common_headers, write_content_length, write_status_line};
    let base = gw.tls.as_ref()?.redirect_for(head.host?)?;
    let close = !head.keep_alive;
    let date = x.io.worker().date();
    x.state.answer = Answer {
        status: 308,
        body_bytes: Some(0),
    };
    write_status_line(x.wbuf, 308);
    write_common_headers(x.wbuf, date.as_bytes(), rid, connection_header(head, close));
    x.wbuf.extend_from_slice(b"Location: ");
    x.wbuf.extend_from_slice(base.as_bytes());
    x.wbuf.extend_from_slice(head.path.as_bytes());
    if !head.query.is_empty() {
        x.wbuf.push(b'?');
        x.wbuf.extend_from_slice(head.query.as_bytes());
    }
    x.wbuf.extend_from_slice(b"\r\n");
    write_content_length(x.wbuf, 0);
    x.wbuf.extend_from_slice(b"\r\n");
    // Requests with a body are not redirected (the caller checks), so
    // nothing is left to read.
    let next = if close {
        Next::Close { linger: false }
    } else {
        Next::Continue {
            consumed: 0,
            leftover: None,
        }
    };
    Some((next, Outcome::Redirected))
}

/// The first value of header `name` (case-insensitive).
fn header<'b>(head: &RequestHead<'_, 'b>, name: &str) -> Option<&'b [u8]> {
    head.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// `[server] health_path`: 200 `{"status":"ok"}` while every worker runs,
/// 503 `{"status":"draining"}` (and the connection closed) once a graceful
/// shutdown has begun, so a load balancer takes the instance out before it
/// stops, and 503 `{"status":"workers_down"}` while a worker is down (the
/// supervisor restarting it). GET and HEAD; another method gets 405 with
/// `Allow`.
#[cold]
fn health<S: ClientStream>(
    x: &mut Exchange<'_, S>,
    head: &RequestHead<'_, '_>,
    rid: &[u8],
    workers: usize,
) -> (Next, Outcome) {
    use crate::http::response::{write_common_headers, write_content_length, write_status_line};
    let draining = x.io.worker().is_draining();
    let live =
        x.io.worker()
            .counters
            .live_workers
            .load(std::sync::atomic::Ordering::Relaxed);
    let head_only = head.method == "HEAD";
    let allowed = head_only || head.method == "GET";
    let (status, body): (u16, &[u8]) = match (allowed, draining) {
        (false, _) => (405, b"{\"message\":\"Method Not Allowed\"}"),
        (true, true) => (503, b"{\"status\":\"draining\"}"),
        (true, false) if live < workers => (503, b"{\"status\":\"workers_down\"}"),
        (true, false) => (200, b"{\"status\":\"ok\"}"),
    };
    let close = draining || !head.keep_alive;
    let date = x.io.worker().date();
    x.state.answer = Answer {
        status,
        body_bytes: Some(if head_only { 0 } else { body.len() as u64 }),
    };
    write_status_line(x.wbuf, status);
    write_common_headers(x.wbuf, date.as_bytes(), rid, connection_header(head, close));
    if !allowed {
        x.wbuf.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    x.wbuf
        .extend_from_slice(b"Content-Type: application/json\r\nCache-Control: no-store\r\n");
    write_content_length(x.wbuf, body.len() as u64);
    x.wbuf.extend_from_slice(b"\r\n");
    if !head_only {
        x.wbuf.extend_from_slice(body);
    }
    let next = if close {
        Next::Close { linger: false }
    } else {
        Next::Continue {
            consumed: 0,
            leftover: None,
        }
    };
    (next, Outcome::Health)
}

/// Whether a throttle refuses the request at `now`: the route's level,
/// then the account's. With an
/// opt-in on, [`Limiter::refuses`] instead (the client's bucket first).
#[inline]
fn throttled(
    snapshot: &Snapshot,
    route: Option<&Level>,
    lim: &mut Option<Limiter<'_>>,
    now: u64,
) -> bool {
    if let Some(lim) = lim {
        return lim.refuses([None, None, route, snapshot.account_throttle()], now);
    }
    match (route, snapshot.account_throttle()) {
        (None, None) => false,
        (Some(l), None) | (None, Some(l)) => l.try_take(now).is_err(),
        (Some(r), Some(a)) => take_two(r.pair(), a.pair(), now).is_err(),
    }
}

/// The request's API key, if it sent one: its `x-api-key` value
/// (trimmed), or as `[key_source]` says (another header, a query
/// parameter).
fn api_key<'a>(
    head: &RequestHead<'a, '_>,
    source: &KeySource,
    buf: &'a mut [u8; MAX_KEY_LEN],
) -> Option<&'a [u8]> {
    source.find(head, buf)
}

/// [`throttled`] with a usage plan's levels first (per key per route, per
/// key). Up to four levels, taken all or none.
fn throttled_with_plan(
    snapshot: &Snapshot,
    plan: [Option<&Level>; 2],
    route: Option<&Level>,
    lim: &mut Option<Limiter<'_>>,
    now: u64,
) -> bool {
    if let Some(lim) = lim {
        return lim.refuses([plan[0], plan[1], route, snapshot.account_throttle()], now);
    }
    take_levels([plan[0], plan[1], route, snapshot.account_throttle()], now).is_err()
}

/// Whether the connection stays open after a response written once the
/// request's body was read whole (decided now: a drain may have started
/// while the body arrived), and the `Connection` header that says so.
fn keep_after_body<S: ClientStream>(
    x: &Exchange<'_, S>,
    req: &Request<'_, '_, '_>,
) -> (ConnectionHeader, bool) {
    let keep = req.head.keep_alive && !x.io.worker().is_draining();
    (connection_header(req.head, !keep), keep)
}

fn next_after_body(keep: bool, consumed: usize, leftover: Option<Range<usize>>) -> Next {
    if keep {
        Next::Continue { consumed, leftover }
    } else {
        Next::Close { linger: false }
    }
}

/// Fault injection for the containment tests (debug builds only): a request
/// header `x-ringgate-fault: panic` panics on the request path;
/// `kill-worker` panics in a worker task outside any connection.
#[cfg(debug_assertions)]
fn inject_fault(head: &RequestHead<'_, '_>) {
    let fault = head
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-ringgate-fault"))
        .map(|h| h.value);
    match fault {
        Some(b"panic") => panic!("injected fault on the request path"),
        Some(b"kill-worker") => {
            monoio::spawn(async { panic!("injected fault in a worker task") });
        }
        _ => {}
    }
}
