//! Per-series metrics against what a test sent: counts by API, stage,
//! route (detailed metrics) and status class, cache hits and misses,
//! throttled requests, latency histograms and percentiles, read through
//! `GET /metrics` (parsed by a real Prometheus text parser) and
//! `GET /stats` on the admin socket.

mod support;

use std::collections::HashMap;

use ringgate::admin::client::{request, Endpoint};
use ringgate::server::StartOptions;
use support::prom::scrape;
use support::{Origin, TestServer};

fn config(dir: &std::path::Path, origin: std::net::SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
pin_workers = false

[state]
dir = "{state}"

[throttle]
rate = -1

[[api]]
name = "shop"
  [[api.stage]]
  name = "prod"
  detailed_metrics = true
  route_throttle = {{ "GET /limited" = {{ rate = 0.001, burst = 2 }} }}
  [api.stage.cache]
  enabled = true
  capacity = "1MiB"
  ttl = "60s"
  require_authorization_for_cache_control = false
  [[api.stage]]
  name = "beta"
  [[api.route]]
  route = "GET /items/{{id}}"
  mock = {{ body = "item {{id}}" }}
  [[api.route]]
  route = "GET /missing"
  mock = {{ status = 404, body = "no" }}
  [[api.route]]
  route = "GET /limited"
  mock = {{ body = "ok" }}
  [[api.route]]
  route = "GET /up/{{proxy+}}"
  http_proxy = {{ uri = "http://{origin}/{{proxy}}" }}
  cache = {{ enabled = false }}
  [[api.route]]
  route = "GET /cached"
  http_proxy = {{ uri = "http://{origin}/hello" }}
  cache = {{ enabled = true }}
"#,
        state = dir.join("state").display()
    )
}

#[test]
fn counts_by_series_and_status_class_equal_what_was_sent() {
    let dir = support::temp_path("obs-counts").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let origin = Origin::start("o");
    let cfg = ringgate::config::parse(&config(&dir, origin.addr()), "o.toml").unwrap();
    let srv = TestServer::start_config(
        cfg,
        StartOptions {
            durable_state: true,
            admin: true,
            ..StartOptions::default()
        },
    );
    let mut c = srv.client();
    for i in 0..7 {
        assert_eq!(c.get(&format!("/prod/items/{i}")).status, 200);
    }
    for _ in 0..3 {
        assert_eq!(c.get("/prod/missing").status, 404);
    }
    // Two admitted by the burst, then refused.
    let limited: Vec<u16> = (0..5).map(|_| c.get("/prod/limited").status).collect();
    assert_eq!(limited, [200, 200, 429, 429, 429]);
    // Unmatched on a stage: 403, counted under the stage (route "").
    for _ in 0..2 {
        assert_eq!(c.get("/prod/nowhere").status, 403);
    }
    // Unknown stage: counted under the unrouted series.
    assert_eq!(c.get("/nostage/items/1").status, 403);
    // Proxied: 4 answered 200, 1 the origin answers 404 (its /status).
    for _ in 0..4 {
        assert_eq!(c.get("/prod/up/hello").status, 200);
    }
    assert_eq!(c.get("/prod/up/status/404").status, 404);
    // Cached: one miss, then hits, then a refresh (max-age=0).
    for _ in 0..4 {
        assert_eq!(c.get("/prod/cached").status, 200);
    }
    let r = c.request("GET /prod/cached HTTP/1.1\r\nHost: t\r\nCache-Control: max-age=0\r\n\r\n");
    assert_eq!(r.status, 200);
    // The stage without detailed metrics.
    for _ in 0..6 {
        assert_eq!(c.get("/beta/items/x").status, 200);
    }

    let endpoint = Endpoint::Unix(dir.join("state").join("admin.sock"));
    let m = scrape(&endpoint);
    let req = "ringgate_requests_total";
    let prod = |route: &str, class: &str| {
        m.value(
            req,
            &[
                ("api", "shop"),
                ("stage", "prod"),
                ("route", route),
                ("canary", "false"),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(prod("GET /items/{id}", "2xx"), 7.0);
    assert_eq!(prod("GET /items/{id}", "4xx"), 0.0);
    assert_eq!(prod("GET /missing", "4xx"), 3.0);
    assert_eq!(prod("GET /limited", "2xx"), 2.0);
    assert_eq!(prod("GET /limited", "4xx"), 3.0);
    assert_eq!(prod("", "4xx"), 2.0);
    assert_eq!(prod("GET /up/{proxy+}", "2xx"), 4.0);
    assert_eq!(prod("GET /up/{proxy+}", "4xx"), 1.0);
    assert_eq!(prod("GET /cached", "2xx"), 5.0);
    // Not detailed: one series for the stage, route "".
    assert_eq!(
        m.sum(req, &[("api", "shop"), ("stage", "beta")]),
        6.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value(
            req,
            &[("stage", "beta"), ("route", ""), ("status_class", "2xx")]
        ),
        6.0
    );
    assert_eq!(
        m.value(req, &[("api", ""), ("stage", ""), ("status_class", "4xx")]),
        1.0
    );
    // Every request counted once across the family.
    assert_eq!(
        m.sum(req, &[]),
        7.0 + 3.0 + 5.0 + 2.0 + 1.0 + 5.0 + 5.0 + 6.0
    );
    assert_eq!(
        m.value(
            "ringgate_throttled_total",
            &[("stage", "prod"), ("route", "GET /limited")]
        ),
        3.0
    );
    let cached = [("stage", "prod"), ("route", "GET /cached")];
    assert_eq!(m.value("ringgate_cache_hits_total", &cached), 3.0);
    assert_eq!(m.value("ringgate_cache_misses_total", &cached), 2.0);
    assert_eq!(
        m.value(
            "ringgate_request_outcomes_total",
            &[
                ("stage", "prod"),
                ("route", "GET /cached"),
                ("outcome", "cache_refresh")
            ]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "ringgate_request_outcomes_total",
            &[
                ("stage", "prod"),
                ("route", "GET /cached"),
                ("outcome", "cache_hit")
            ]
        ),
        3.0
    );
    // Histograms: one observation per request, cumulative buckets.
    let items = [("stage", "prod"), ("route", "GET /items/{id}")];
    assert_eq!(m.value("ringgate_request_duration_seconds", &items), 7.0);
    let (buckets, sum) = m
        .one("ringgate_request_duration_seconds", &items)
        .histogram
        .clone()
        .unwrap();
    let counts: Vec<f64> = buckets.iter().map(|b| b.1).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 7.0));
    assert!(sum > 0.0);
    // The mock and cached routes never asked a backend on a hit.
    assert_eq!(
        m.value("ringgate_integration_duration_seconds", &items),
        0.0
    );

    // Every family the gateway documents is there (the access log's are
    // checked in tests/access_log.rs).
    for family in [
        "ringgate_requests_total",
        "ringgate_cache_hits_total",
        "ringgate_cache_misses_total",
        "ringgate_throttled_total",
        "ringgate_quota_exceeded_total",
        "ringgate_request_outcomes_total",
        "ringgate_request_duration_seconds",
        "ringgate_integration_duration_seconds",
        "ringgate_gateway_errors_total",
        "ringgate_upstream_requests_total",
        "ringgate_upstream_responses_total",
        "ringgate_upstream_failures_total",
        "ringgate_upstream_connections_opened_total",
        "ringgate_upstream_connections_reused_total",
        "ringgate_upstream_stale_retries_total",
        "ringgate_upstream_ejections_total",
        "ringgate_upstream_connect_duration_seconds",
        "ringgate_upstream_in_flight",
        "ringgate_upstream_ejected",
        "ringgate_upstream_health",
        "ringgate_stage_cache_hits_total",
        "ringgate_stage_cache_entries",
        "ringgate_stage_cache_bytes",
        "ringgate_stage_cache_evictions_total",
        "ringgate_outcomes_total",
        "ringgate_connections_open",
        "ringgate_connections_accepted_total",
        "ringgate_worker_info",
        "ringgate_workers_live",
        "ringgate_process_resident_memory_bytes",
        "ringgate_uptime_seconds",
        "ringgate_build_info",
    ] {
        assert!(
            m.families.contains_key(family),
            "no {family} in\n{}",
            m.text
        );
    }
    let upstream = m.one(
        "ringgate_upstream_requests_total",
        &[("target", &origin.addr().to_string())],
    );
    assert_eq!(upstream.value, 7.0, "5 proxied, 1 cache miss, 1 refresh");
    assert!(
        m.value(
            "ringgate_upstream_connections_reused_total",
            &[("target", &origin.addr().to_string())]
        ) >= 4.0
    );
    assert_eq!(
        m.sum("ringgate_worker_info", &[("driver", "io_uring")]),
        2.0
    );
    assert!(m.sum("ringgate_connections_accepted_total", &[]) >= 1.0);

    // The same figures as JSON.
    let reply = request(&endpoint, "GET", "/stats", None).unwrap();
    assert_eq!(reply.status, 200);
    let stats: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let rows = stats["series"].as_array().unwrap();
    let row: HashMap<String, &serde_json::Value> = rows
        .iter()
        .map(|r| (format!("{}/{}/{}", r["api"], r["stage"], r["route"]), r))
        .collect();
    let items = row[r#""shop"/"prod"/"GET /items/{id}""#];
    assert_eq!(items["count"], 7);
    assert_eq!(items["2xx"], 7);
    let lat = &items["latency_ms"];
    for q in ["p50", "p90", "p99", "p99.9", "max"] {
        assert!(lat[q].as_f64().unwrap() > 0.0, "{q}: {lat}");
    }
    assert!(lat["p50"].as_f64() <= lat["p99"].as_f64());
    assert!(lat["p99"].as_f64() <= lat["max"].as_f64());
    assert_eq!(row[r#""shop"/"prod"/"GET /limited""#]["throttled"], 2 + 1);
    assert_eq!(row[r#""shop"/"beta"/null"#]["count"], 6);
    drop(c);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A slow origin shows up in the p99 (and the backend's share in the
/// integration latency), the fast requests in the median.
#[test]
fn a_slow_origin_shows_in_the_p99() {
    let dir = support::temp_path("obs-slow").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let origin = Origin::start("o");
    let cfg = ringgate::config::parse(&config(&dir, origin.addr()), "o.toml").unwrap();
    let srv = TestServer::start_config(
        cfg,
        StartOptions {
            durable_state: true,
            admin: true,
            ..StartOptions::default()
        },
    );
    let mut c = srv.client();
    for _ in 0..195 {
        assert_eq!(c.get("/prod/up/hello").status, 200);
    }
    for _ in 0..5 {
        assert_eq!(c.get("/prod/up/slow/300").status, 200);
    }
    let endpoint = Endpoint::Unix(dir.join("state").join("admin.sock"));
    let reply = request(&endpoint, "GET", "/stats", None).unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let row = stats["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "GET /up/{proxy+}")
        .unwrap_or_else(|| panic!("{stats}"));
    assert_eq!(row["count"], 200);
    let ms = |h: &str, q: &str| row[h][q].as_f64().unwrap();
    assert!(ms("latency_ms", "p99") >= 300.0, "{row}");
    assert!(ms("latency_ms", "max") >= 300.0, "{row}");
    assert!(ms("latency_ms", "p50") < 100.0, "{row}");
    assert!(ms("integration_latency_ms", "p99") >= 300.0, "{row}");
    assert_eq!(row["integration_latency_ms"]["count"], 200);
    // Every proxied request's Latency covers its IntegrationLatency: so do
    // the sums.
    let m = scrape(&endpoint);
    let labels = [("stage", "prod"), ("route", "GET /up/{proxy+}")];
    let sum = |name: &str| m.one(name, &labels).histogram.clone().unwrap().1;
    assert!(
        sum("ringgate_request_duration_seconds") >= sum("ringgate_integration_duration_seconds")
    );
    assert!(sum("ringgate_integration_duration_seconds") >= 1.5);
    drop(c);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
