//! Per-target upstream figures end to end: ringgate (in process) in front
//! of `ringgate-origin`, each scenario on an `[[upstream]]` of its own, read
//! back through `Registry::stats()` on the running server's snapshot:
//! requests and responses, pooled reuse and connect times, the integration
//! latency, and failures by reason (refused, timeout, reset, bad response,
//! cut off).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringgate::upstream::stats::{Counts, FailReason, HealthState, TargetStats};
use support::{closed_port, Origin, TestServer, SERVER};

const NET_ERROR: &str = r#"{"message": "Network error communicating with endpoint"}"#;
const TIMED_OUT: &str = r#"{"message": "Endpoint request timed out"}"#;

/// `[[upstream]] name = NAME targets = [addr]` for each pair, and one route
/// `GET /NAME/{proxy+}` to `http://NAME/{proxy}` for each, on stage
/// `prod`; routes through `slow` time out after 300 ms.
fn config(groups: &[(&str, SocketAddr)]) -> String {
    let mut s = String::from(SERVER);
    for (name, addr) in groups {
        s += &format!("[[upstream]]\nname = \"{name}\"\ntargets = [\"{addr}\"]\n\n");
    }
    s += "[[api]]\nname = \"p\"\n  [[api.stage]]\n  name = \"prod\"\n";
    for (name, _) in groups {
        s += &format!(
            "  [[api.route]]\n  route = \"GET /{name}/{{proxy+}}\"\n  \
             [api.route.http_proxy]\n  uri = \"http://{name}/{{proxy}}\"\n"
        );
        if *name == "slow" {
            s += "  timeout = \"300ms\"\n";
        }
    }
    s
}

/// The figures of group `name`'s (only) target.
fn stats_of(gw: &TestServer, name: &str) -> TargetStats {
    gw.server()
        .snapshot()
        .upstreams
        .stats()
        .into_iter()
        .find(|t| t.group == name)
        .unwrap_or_else(|| panic!("no target in group {name}"))
}

/// Polls group `name`'s counters until `ok` holds (a worker stores its
/// counts before it answers, but another thread may see them a moment
/// later); panics with the last figures after 5 s.
fn wait_for(gw: &TestServer, name: &str, ok: impl Fn(&Counts) -> bool) -> TargetStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = stats_of(gw, name);
        if ok(&s.counts) {
            return s;
        }
        assert!(Instant::now() < deadline, "{name}: {s:#?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Only `reason` is counted, `n` times.
fn only_failure(c: &Counts, reason: FailReason, n: u64) -> bool {
    FailReason::ALL
        .iter()
        .all(|&r| c.failures(r) == if r == reason { n } else { 0 })
}

#[test]
fn requests_responses_reuse_and_integration_latency_are_counted() {
    let a = Origin::start("A");
    let gw = TestServer::start(&config(&[("ok", a.addr())]));
    let mut c = gw.client();

    // One request, timed from outside: the integration latency the target
    // adds up is within it.
    let started = Instant::now();
    let r = c.get("/prod/ok/hello");
    let wall = started.elapsed();
    assert_eq!(r.status, 200, "{r:?}");
    let s = wait_for(&gw, "ok", |c| c.responses(2) == 1);
    assert!(
        s.counts.integration_ns > 0 && u128::from(s.counts.integration_ns) <= wall.as_nanos(),
        "integration {} ns, request {wall:?}",
        s.counts.integration_ns
    );
    assert_eq!(s.counts.connections_opened(), 1, "{s:#?}");
    assert!(s.counts.connect_ns > 0, "{s:#?}");

    // More on the same keep-alive connection, and a 404 from the origin.
    const N: u64 = 20;
    for _ in 1..N {
        assert_eq!(c.get("/prod/ok/hello").status, 200);
    }
    assert_eq!(c.get("/prod/ok/nothing-here").status, 404);
    let s = wait_for(&gw, "ok", |c| c.requests == N + 1 && c.responses(4) == 1);
    let k = &s.counts;
    assert_eq!((k.responses(2), k.responses(4), k.responses(5)), (N, 1, 0));
    assert!(k.reused > 0, "{s:#?}");
    assert_eq!(k.reused + k.connections_opened(), N + 1, "{s:#?}");
    assert_eq!(k.stale_retries, 0);
    assert!(only_failure(k, FailReason::Reset, 0), "{s:#?}");
    let histogram = k.connect_histogram();
    assert_eq!(histogram.last().unwrap().1, k.connections_opened());
    assert_eq!(s.authority, a.addr().to_string());
    assert_eq!((s.in_flight, s.ejected), (0, false));
    assert_eq!(s.health, HealthState::Unchecked);
}

#[test]
fn failures_are_counted_by_reason() {
    let a = Origin::start("A");
    let dead = closed_port();
    let gw = TestServer::start(&config(&[
        ("refused", dead),
        ("slow", a.addr()),
        ("drop", a.addr()),
        ("garbage", a.addr()),
        ("cut", a.addr()),
    ]));
    let mut c = gw.client();

    // Nobody listens: connect refused, answered 504.
    let r = c.get("/prod/refused/hello");
    r.assert_gateway_error(504, NET_ERROR);
    let s = wait_for(&gw, "refused", |c| {
        only_failure(c, FailReason::ConnectRefused, 1)
    });
    assert_eq!(s.counts.requests, 1);
    assert_eq!(s.counts.connections_opened(), 0);
    assert_eq!(s.counts.responses, [0; 5]);

    // No head within the route's 300 ms: timeout, 504.
    let r = c.get("/prod/slow/slow/2000");
    r.assert_gateway_error(504, TIMED_OUT);
    let s = wait_for(&gw, "slow", |c| only_failure(c, FailReason::Timeout, 1));
    assert_eq!((s.counts.requests, s.counts.integration_ns), (1, 0));

    // The origin closes before its head: reset, 504.
    let r = c.get("/prod/drop/drop");
    r.assert_gateway_error(504, NET_ERROR);
    wait_for(&gw, "drop", |c| only_failure(c, FailReason::Reset, 1));

    // A head that is not HTTP: bad response, 502.
    let r = c.get("/prod/garbage/malformed/garbage");
    assert_eq!(r.status, 502, "{r:?}");
    wait_for(&gw, "garbage", |c| {
        only_failure(c, FailReason::BadResponse, 1)
    });

    // The body stops after its head went out: a 2xx response, cut off.
    let mut c2 = gw.client();
    c2.send("GET /prod/cut/drop-after-head HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c2.read_head_response().status, 200);
    c2.read_to_close();
    let s = wait_for(&gw, "cut", |c| only_failure(c, FailReason::CutOff, 1));
    assert_eq!(s.counts.responses(2), 1);
    assert!(s.counts.integration_ns > 0);
}
