//! `GET /metrics` on the admin socket, read by a real Prometheus text
//! parser (the `prometheus-parse` crate): every family has HELP and TYPE,
//! the request counts equal what was sent, and the stage cache and worker
//! families carry their labels.

mod support;

use ringgate::admin::client::{request, Endpoint};
use ringgate::server::StartOptions;
use support::TestServer;

#[test]
fn metrics_parse_and_count_what_was_sent() {
    let dir = support::temp_path("metrics").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
pin_workers = false

[state]
dir = "{state}"

[throttle]
rate = -1

[[api]]
name = "t"
  [[api.stage]]
  name = "prod"
  [api.stage.cache]
  enabled = true
  capacity = "1MiB"
  [[api.route]]
  route = "GET /a"
  mock = {{ body = "a" }}
"#,
        state = dir.join("state").display()
    );
    let cfg = ringgate::config::parse(&toml, "m.toml").unwrap();
    let srv = TestServer::start_config(
        cfg,
        StartOptions {
            durable_state: true,
            admin: true,
            ..StartOptions::default()
        },
    );
    let mut c = srv.client();
    for _ in 0..5 {
        assert_eq!(c.get("/prod/a").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(c.get("/nope/a").status, 403);
    }
    let endpoint = Endpoint::Unix(dir.join("state").join("admin.sock"));
    let reply = request(&endpoint, "GET", "/metrics", None).unwrap();
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body).unwrap();
    let scrape = support::prom::Prom::parse(&text);
    let find = |name: &str, labels: &[(&str, &str)]| -> f64 { scrape.value(name, labels) };
    assert_eq!(find("ringgate_outcomes_total", &[("outcome", "mock")]), 5.0);
    assert_eq!(
        find("ringgate_outcomes_total", &[("outcome", "error_forbidden")]),
        2.0
    );
    assert_eq!(
        find("ringgate_outcomes_total", &[("outcome", "cache_hit")]),
        0.0
    );
    assert_eq!(find("ringgate_workers_live", &[]), 2.0);
    assert_eq!(find("ringgate_worker_restarts_total", &[]), 0.0);
    assert_eq!(
        find(
            "ringgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(find("ringgate_process_resident_memory_bytes", &[]) > 1e6);
    // Our connection is open on one of the two workers.
    let open: f64 = ["0", "1"]
        .iter()
        .map(|w| find("ringgate_connections_open", &[("worker", w)]))
        .sum();
    assert!(open >= 1.0, "{open}");
    assert_eq!(
        find(
            "ringgate_stage_cache_capacity_bytes",
            &[("api", "t"), ("stage", "prod")]
        ),
        1_048_576.0
    );
    assert_eq!(
        find(
            "ringgate_stage_cache_entries",
            &[("api", "t"), ("stage", "prod")]
        ),
        0.0
    );
    // Every family is documented and typed.
    for (name, (_, help)) in &scrape.families {
        assert!(!help.is_empty(), "no HELP for {name}");
    }
    assert!(text.contains("# TYPE ringgate_requests_total counter"));
    assert!(text.contains("# TYPE ringgate_stage_cache_bytes gauge"));
    // Only GET.
    let reply = request(&endpoint, "POST", "/metrics", None).unwrap();
    assert_eq!(reply.status, 405);
    drop(c);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `[metrics] listen`: a plain listener for scrapers answers GET /metrics
/// without a token, and nothing else.
#[test]
fn scrape_listener_serves_metrics_only() {
    let dir = support::temp_path("metrics-listen").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
pin_workers = false

[state]
dir = "{state}"

[metrics]
listen = "127.0.0.1:0"

[[api]]
name = "t"
  [[api.stage]]
  name = "prod"
  [[api.route]]
  route = "GET /a"
  mock = {{ body = "a" }}
"#,
        state = dir.join("state").display()
    );
    let cfg = ringgate::config::parse(&toml, "m.toml").unwrap();
    let srv = TestServer::start_config(
        cfg,
        StartOptions {
            durable_state: true,
            admin: true,
            ..StartOptions::default()
        },
    );
    let mut c = srv.client();
    for _ in 0..3 {
        assert_eq!(c.get("/prod/a").status, 200);
    }
    let addr = srv.server().metrics_addr().expect("a metrics listener");
    let mut scraper = support::connect(addr);
    let r = scraper.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = support::prom::Prom::parse(&r.text());
    assert_eq!(
        m.value(
            "ringgate_requests_total",
            &[("api", "t"), ("stage", "prod"), ("status_class", "2xx")]
        ),
        3.0
    );
    // Nothing else is reachable there, token or not.
    for path in ["/stats", "/apis", "/", "/reload"] {
        assert_eq!(scraper.get(path).status, 404, "{path}");
    }
    drop(c);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
