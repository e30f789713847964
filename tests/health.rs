//! `[server] health_path`: answered by the gateway itself before routing
//! (200 while serving, 503 once draining or while a worker is down, 405 for
//! other methods), off by default, and refused at load when it is not a
//! path.

mod support;

use std::time::Duration;

use support::TestServer;

fn config(health: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
pin_workers = false
drain_timeout = "5s"
{health}

[throttle]
rate = -1

[[api]]
name = "t"
  [[api.stage]]
  name = "prod"
  [[api.route]]
  route = "GET /a"
  mock = {{ body = "a" }}
  api_key_required = true
"#
    )
}

#[test]
fn off_by_default() {
    let srv = TestServer::start(&config(""));
    let r = srv.client().get("/ringgate/health");
    // Routing answers it: no stage is called "ringgate".
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
}

#[test]
fn answers_before_routing_keys_and_throttles() {
    let srv = TestServer::start(&config("health_path = \"/ringgate/health\""));
    let mut c = srv.client();
    for _ in 0..3 {
        let r = c.get("/ringgate/health");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), r#"{"status":"ok"}"#);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(r.header("x-request-id").is_some());
        assert!(r.header("date").is_some());
    }
    // The query does not matter; HEAD has no body.
    assert_eq!(c.get("/ringgate/health?probe=1").status, 200);
    c.send("HEAD /ringgate/health HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("15"));
    assert!(r.body.is_empty());
    // Another method: 405 with Allow, the connection kept.
    let r = c.request("DELETE /ringgate/health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // Other paths route as before (this one needs a key: 403).
    assert_eq!(c.get("/prod/a").status, 403);
    assert_eq!(c.get("/ringgate/health").status, 200);
    assert_eq!(srv.server().outcomes().total(), 8);
}

#[test]
fn draining_answers_503_and_closes() {
    let srv = TestServer::start(&config("health_path = \"/ringgate/health\""));
    let mut c = srv.client();
    assert_eq!(c.get("/ringgate/health").status, 200);
    // A probe whose head is still arriving when the drain starts.
    c.send("GET /ringgate/health HTTP/1.1\r\nHost: x\r\n");
    std::thread::sleep(Duration::from_millis(100));
    srv.server().shutdown();
    std::thread::sleep(Duration::from_millis(200));
    c.send("\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), r#"{"status":"draining"}"#);
    assert_eq!(r.header("connection"), Some("close"));
    c.assert_closed();
}

#[test]
fn a_health_path_that_is_not_a_path_is_refused_at_load() {
    for bad in ["ringgate/health", "/health?x=1", "/a b", "/h#x", ""] {
        let toml = config(&format!("health_path = {bad:?}"));
        let e = ringgate::config::parse(&toml, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.health_path"), "{bad:?}: {e}");
        assert!(e.contains("t.toml:"), "{e}");
    }
}

#[test]
fn a_worker_down_answers_503() {
    use std::sync::atomic::Ordering;
    let srv = TestServer::start(&config("health_path = \"/ringgate/health\""));
    let mut c = srv.client();
    assert_eq!(c.get("/ringgate/health").status, 200);
    // As while the supervisor restarts a worker that died: one fewer live.
    let counters = srv.server().counters();
    counters.live_workers.fetch_sub(1, Ordering::SeqCst);
    let r = c.get("/ringgate/health");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), r#"{"status":"workers_down"}"#);
    counters.live_workers.fetch_add(1, Ordering::SeqCst);
    assert_eq!(c.get("/ringgate/health").status, 200);
}
