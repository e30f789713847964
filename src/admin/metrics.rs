//! `GET /metrics` on the admin socket: what the gateway counts today, in
//! the Prometheus text exposition format (version 0.0.4).
//!
//! Read when scraped, never on the request path: the workers' outcome rows
//! (summed), the per-series counts and latency histograms
//! ([`crate::observe::metrics`]: by API, stage, route where detailed, and
//! canary), the containment counters, each worker's open connections, each
//! stage cache's counters, process RSS, uptime and build.
//!
//! [`stats_json`] gives the same series as JSON with p50, p90, p99, p99.9
//! and max (`GET /stats`, `ringgate admin stats`).

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::gateway::{Gateway, GatewayError, Outcome, Snapshot};
use crate::observe::access_log::LogStats;
use crate::observe::metrics::{
    HistogramRead, SeriesLabels, SeriesRead, ERROR_REASONS, PROM_BOUNDS_US, STATUS_CLASSES,
};
use crate::runtime::{Counters, Loads};
use crate::upstream::stats::{FailReason, TargetStats};

/// Where the numbers come from.
pub struct MetricsSources {
    /// The request path's outcome counters.
    pub gateway: Arc<Gateway>,
    /// Containment: panics, restarts, live workers.
    pub counters: Arc<Counters>,
    /// Each worker's I/O driver (`io_uring` or `epoll`), as started.
    pub drivers: Vec<&'static str>,
}

/// A stage-cache family: name, type, help, and the figure it reports.
type CacheFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::cache::CacheStats) -> u64,
);

/// The TLS listeners' families: handshakes that failed or timed out,
/// certificate reloads, and each certificate's validity end (alert on
/// `ringgate_tls_certificate_not_after_seconds - time() < 14 * 86400`).
fn tls_families(out: &mut String, sources: &MetricsSources) {
    let Some(tls) = sources.gateway.tls() else {
        return;
    };
    let c = &sources.counters;
    family(
        out,
        "ringgate_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed (not TLS, no common version or suite, the client leaving).",
    );
    let _ = writeln!(
        out,
        "ringgate_tls_handshake_failures_total {}",
        c.tls_handshake_failures.load(Ordering::Relaxed)
    );
    family(
        out,
        "ringgate_tls_handshake_timeouts_total",
        "counter",
        "TLS handshakes not finished within header_read_timeout.",
    );
    let _ = writeln!(
        out,
        "ringgate_tls_handshake_timeouts_total {}",
        c.tls_handshake_timeouts.load(Ordering::Relaxed)
    );
    let (ok, failed) = tls.reload_counts();
    family(
        out,
        "ringgate_tls_reloads_total",
        "counter",
        "Certificate reloads (SIGHUP, POST /tls/reload, a file change), by result.",
    );
    let _ = writeln!(out, "ringgate_tls_reloads_total{{result=\"ok\"}} {ok}");
    let _ = writeln!(
        out,
        "ringgate_tls_reloads_total{{result=\"failed\"}} {failed}"
    );
    family(
        out,
        "ringgate_tls_certificate_not_after_seconds",
        "gauge",
        "When each served certificate expires, in seconds since the Unix epoch.",
    );
    for cert in tls.certificates() {
        let _ = writeln!(
            out,
            "ringgate_tls_certificate_not_after_seconds{{chain=\"{}\",host=\"{}\"}} {}",
            label(&cert.chain.display().to_string()),
            label(cert.hosts.first().map_or("", String::as_str)),
            cert.not_after
        );
    }
}

/// One metric family's header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value, escaped as the format requires (`\\`, `\"`, `\n`).
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Resident set size in bytes, from `/proc/self/statm` (0 if unreadable).
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The exposition text.
pub fn render(
    sources: &MetricsSources,
    snapshot: &Snapshot,
    loads: Option<&Loads>,
    started: Instant,
) -> String {
    let mut out = String::with_capacity(4096);
    family(
        &mut out,
        "ringgate_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        out,
        "ringgate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(
        &mut out,
        "ringgate_uptime_seconds",
        "gauge",
        "Seconds since the admin API started.",
    );
    let _ = writeln!(
        out,
        "ringgate_uptime_seconds {}",
        started.elapsed().as_secs_f64()
    );
    family(
        &mut out,
        "ringgate_process_resident_memory_bytes",
        "gauge",
        "Resident set size.",
    );
    let _ = writeln!(
        out,
        "ringgate_process_resident_memory_bytes {}",
        rss_bytes()
    );

    family(
        &mut out,
        "ringgate_outcomes_total",
        "counter",
        "Requests answered by the whole process, by how they ended (mock, cache_hit, proxied, error_*, ...).",
    );
    let counts = sources.gateway.outcomes();
    for i in 0.. {
        let Some(o) = Outcome::from_index(i) else {
            break;
        };
        let _ = writeln!(
            out,
            "ringgate_outcomes_total{{outcome=\"{}\"}} {}",
            o.as_str(),
            counts.get(o)
        );
    }
    if let Some(m) = sources.gateway.published().metrics() {
        render_series(&mut out, &m.read());
        family(
            &mut out,
            "ringgate_gateway_errors_total",
            "counter",
            "5xx answers the gateway wrote itself, by why (the backend's failure, api_configuration, other).",
        );
        for (name, n) in ERROR_REASONS.iter().zip(m.error_reasons()) {
            let _ = writeln!(
                out,
                "ringgate_gateway_errors_total{{reason=\"{name}\"}} {n}"
            );
        }
    }
    render_upstreams(&mut out, &snapshot.upstreams.stats());
    if let Some(log) = sources.gateway.access_log() {
        render_access_log(&mut out, &log.stats());
    }

    let c = &sources.counters;
    family(
        &mut out,
        "ringgate_workers_live",
        "gauge",
        "Worker threads running now.",
    );
    let _ = writeln!(
        out,
        "ringgate_workers_live {}",
        c.live_workers.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "ringgate_worker_restarts_total",
        "counter",
        "Workers that ended unexpectedly and were started again.",
    );
    let _ = writeln!(
        out,
        "ringgate_worker_restarts_total {}",
        c.worker_restarts.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "ringgate_connection_panics_total",
        "counter",
        "Client connections closed because serving them panicked.",
    );
    let _ = writeln!(
        out,
        "ringgate_connection_panics_total {}",
        c.connection_panics.load(Ordering::Relaxed)
    );

    family(
        &mut out,
        "ringgate_worker_info",
        "gauge",
        "Always 1; each worker's I/O driver is a label.",
    );
    for (w, d) in sources.drivers.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringgate_worker_info{{worker=\"{w}\",driver=\"{d}\"}} 1"
        );
    }
    if let Some(loads) = loads {
        let loads = loads.read();
        family(
            &mut out,
            "ringgate_connections_open",
            "gauge",
            "Open client connections, per worker.",
        );
        for (w, l) in loads.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringgate_connections_open{{worker=\"{w}\"}} {}",
                l.connections
            );
        }
        family(
            &mut out,
            "ringgate_connections_accepted_total",
            "counter",
            "Client connections accepted, per worker (since the worker started).",
        );
        for (w, l) in loads.iter().enumerate() {
            let _ = writeln!(
                out,
                "ringgate_connections_accepted_total{{worker=\"{w}\"}} {}",
                l.accepted
            );
        }
    }

    tls_families(&mut out, sources);

    let caches: Vec<(String, String, crate::cache::CacheStats)> = snapshot
        .apis()
        .flat_map(|a| {
            a.stage_names()
                .filter_map(|s| {
                    let sc = snapshot.stage_cache(&a.name, s)?;
                    Some((a.name.clone(), s.to_string(), sc.store.stats()))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let per_cache: [CacheFamily; 6] = [
        (
            "ringgate_stage_cache_hits_total",
            "counter",
            "Requests answered from the stage cache (CacheHitCount).",
            |s| s.hits,
        ),
        (
            "ringgate_stage_cache_misses_total",
            "counter",
            "Requests sent to the backend while caching was on (CacheMissCount).",
            |s| s.misses,
        ),
        (
            "ringgate_stage_cache_evictions_total",
            "counter",
            "Entries evicted to make room.",
            |s| s.evictions,
        ),
        (
            "ringgate_stage_cache_entries",
            "gauge",
            "Entries resident.",
            |s| s.entries,
        ),
        (
            "ringgate_stage_cache_bytes",
            "gauge",
            "Bytes in use.",
            |s| s.bytes,
        ),
        (
            "ringgate_stage_cache_capacity_bytes",
            "gauge",
            "The byte budget.",
            |s| s.capacity,
        ),
    ];
    if !caches.is_empty() {
        for (name, kind, help, get) in per_cache {
            family(&mut out, name, kind, help);
            for (api, stage, stats) in &caches {
                let _ = writeln!(
                    out,
                    "{name}{{api=\"{}\",stage=\"{}\"}} {}",
                    label(api),
                    label(stage),
                    get(stats)
                );
            }
        }
    }
    out
}

/// `api="…",stage="…",route="…",canary="…"`.
fn series_labels(l: &SeriesLabels) -> String {
    format!(
        "api=\"{}\",stage=\"{}\",route=\"{}\",canary=\"{}\"",
        label(&l.api),
        label(&l.stage),
        label(&l.route),
        l.canary
    )
}

/// The per-series families: requests by status class, cache hits and
/// misses, throttled and quota-refused requests, outcomes, and the two
/// latency histograms.
fn render_series(out: &mut String, series: &[SeriesRead]) {
    if series.is_empty() {
        return;
    }
    let labels: Vec<String> = series.iter().map(|r| series_labels(&r.labels)).collect();
    family(
        out,
        "ringgate_requests_total",
        "counter",
        "Requests (Count) by API, stage, route (detailed metrics only) and canary, and the status class of the answer (4XXError, 5XXError).",
    );
    for (r, l) in series.iter().zip(&labels) {
        for (class, n) in STATUS_CLASSES.iter().zip(r.status) {
            let _ = writeln!(
                out,
                "ringgate_requests_total{{{l},status_class=\"{class}\"}} {n}"
            );
        }
    }
    type Figure = (&'static str, &'static str, fn(&SeriesRead) -> u64);
    let figures: [Figure; 4] = [
        (
            "ringgate_cache_hits_total",
            "Requests answered from the stage cache (CacheHitCount; stale_if_error answers included).",
            SeriesRead::cache_hits,
        ),
        (
            "ringgate_cache_misses_total",
            "Requests on caching routes sent to the backend (CacheMissCount: misses, max-age=0 refreshes, lock-timeout bypasses).",
            SeriesRead::cache_misses,
        ),
        (
            "ringgate_throttled_total",
            "Requests refused 429 Too Many Requests by a throttle (per key, per route, stage or account).",
            |r| r.outcome(Outcome::Error(GatewayError::TooManyRequests)),
        ),
        (
            "ringgate_quota_exceeded_total",
            "Requests refused 429 Limit Exceeded by a usage plan's quota.",
            |r| r.outcome(Outcome::Error(GatewayError::QuotaExceeded)),
        ),
    ];
    for (name, help, get) in figures {
        family(out, name, "counter", help);
        for (r, l) in series.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", get(r));
        }
    }
    family(
        out,
        "ringgate_request_outcomes_total",
        "counter",
        "Requests by how they ended (mock, cache_hit, cache_miss, proxied, error_*, ...); kinds never seen are left out.",
    );
    for (r, l) in series.iter().zip(&labels) {
        for (i, &n) in r.outcomes.iter().enumerate() {
            if let (true, Some(o)) = (n > 0, Outcome::from_index(i)) {
                let _ = writeln!(
                    out,
                    "ringgate_request_outcomes_total{{{l},outcome=\"{}\"}} {n}",
                    o.as_str()
                );
            }
        }
    }
    type Histogram = (
        &'static str,
        &'static str,
        fn(&SeriesRead) -> &HistogramRead,
    );
    let histograms: [Histogram; 2] = [
        (
            "ringgate_request_duration_seconds",
            "Latency: from the request's head parsed to its response written (bounds within 3 %).",
            |r| &r.latency,
        ),
        (
            "ringgate_integration_duration_seconds",
            "IntegrationLatency: from the request sent to the backend to the backend's response head (bounds within 3 %).",
            |r| &r.integration,
        ),
    ];
    for (name, help, get) in histograms {
        family(out, name, "histogram", help);
        for (r, l) in series.iter().zip(&labels) {
            let h = get(r);
            let cumulative = h.cumulative();
            for (bound, n) in PROM_BOUNDS_US.iter().zip(cumulative) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{l},le=\"{}\"}} {n}",
                    *bound as f64 / 1e6
                );
            }
            let total = cumulative[cumulative.len() - 1];
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {total}");
            let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum_us as f64 / 1e6);
            let _ = writeln!(out, "{name}_count{{{l}}} {total}");
        }
    }
}

/// Per backend target: requests, responses by status class, failures by
/// reason, connections opened and reused, stale retries, connect time,
/// ejections, requests in flight, and health.
fn render_upstreams(out: &mut String, targets: &[TargetStats]) {
    if targets.is_empty() {
        return;
    }
    let labels: Vec<String> = targets
        .iter()
        .map(|t| {
            format!(
                "group=\"{}\",target=\"{}\"",
                label(&t.group),
                label(&t.authority)
            )
        })
        .collect();
    type Figure = (
        &'static str,
        &'static str,
        &'static str,
        fn(&TargetStats) -> u64,
    );
    let figures: [Figure; 7] = [
        (
            "ringgate_upstream_requests_total",
            "counter",
            "Forwards that picked the target.",
            |t| t.counts.requests,
        ),
        (
            "ringgate_upstream_connections_opened_total",
            "counter",
            "New connections opened to the target.",
            |t| t.counts.connections_opened(),
        ),
        (
            "ringgate_upstream_connections_reused_total",
            "counter",
            "Requests sent over a pooled keep-alive connection (reuse ratio: this over requests).",
            |t| t.counts.reused,
        ),
        (
            "ringgate_upstream_stale_retries_total",
            "counter",
            "Pooled connections found closed by the backend; the request was sent again on a new one.",
            |t| t.counts.stale_retries,
        ),
        (
            "ringgate_upstream_ejections_total",
            "counter",
            "Times passive health ejected the target.",
            |t| t.counts.ejections,
        ),
        (
            "ringgate_upstream_in_flight",
            "gauge",
            "Requests in flight to the target now, all workers together.",
            |t| t.in_flight as u64,
        ),
        (
            "ringgate_upstream_ejected",
            "gauge",
            "1 while passive health has the target ejected.",
            |t| u64::from(t.ejected),
        ),
    ];
    for (name, kind, help, get) in figures {
        family(out, name, kind, help);
        for (t, l) in targets.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", get(t));
        }
    }
    family(
        out,
        "ringgate_upstream_responses_total",
        "counter",
        "Response heads received from the target, by status class.",
    );
    for (t, l) in targets.iter().zip(&labels) {
        for (class, n) in STATUS_CLASSES.iter().zip(t.counts.responses) {
            let _ = writeln!(
                out,
                "ringgate_upstream_responses_total{{{l},status_class=\"{class}\"}} {n}"
            );
        }
    }
    family(
        out,
        "ringgate_upstream_failures_total",
        "counter",
        "Forwards to the target that failed or were cut off, by reason.",
    );
    for (t, l) in targets.iter().zip(&labels) {
        for r in FailReason::ALL {
            let _ = writeln!(
                out,
                "ringgate_upstream_failures_total{{{l},reason=\"{}\"}} {}",
                r.as_str(),
                t.counts.failures(r)
            );
        }
    }
    family(
        out,
        "ringgate_upstream_health",
        "gauge",
        "1 for the target's active health state (healthy, unhealthy, or unchecked without an active check).",
    );
    for (t, l) in targets.iter().zip(&labels) {
        let _ = writeln!(
            out,
            "ringgate_upstream_health{{{l},state=\"{}\"}} 1",
            t.health.as_str()
        );
    }
    family(
        out,
        "ringgate_upstream_connect_duration_seconds",
        "histogram",
        "Time to open a new connection to the target.",
    );
    for (t, l) in targets.iter().zip(&labels) {
        let h = t.counts.connect_histogram();
        for (le, n) in h {
            if le.is_infinite() {
                let _ = writeln!(
                    out,
                    "ringgate_upstream_connect_duration_seconds_bucket{{{l},le=\"+Inf\"}} {n}"
                );
            } else {
                let _ = writeln!(
                    out,
                    "ringgate_upstream_connect_duration_seconds_bucket{{{l},le=\"{le}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "ringgate_upstream_connect_duration_seconds_sum{{{l}}} {}",
            t.counts.connect_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "ringgate_upstream_connect_duration_seconds_count{{{l}}} {}",
            h[h.len() - 1].1
        );
    }
}

/// The access log writer's counters.
fn render_access_log(out: &mut String, s: &LogStats) {
    let figures: [(&str, &str, &str, u64); 6] = [
        (
            "ringgate_access_log_lines_total",
            "counter",
            "Access log lines written.",
            s.lines_written,
        ),
        (
            "ringgate_access_log_bytes_total",
            "counter",
            "Access log bytes written.",
            s.bytes_written,
        ),
        (
            "ringgate_access_log_dropped_lines_total",
            "counter",
            "Access log lines dropped because the writer's queue was full (a slow or full disk) or a write failed.",
            s.dropped_lines,
        ),
        (
            "ringgate_access_log_write_errors_total",
            "counter",
            "Failed writes to the access log.",
            s.write_errors,
        ),
        (
            "ringgate_access_log_reopens_total",
            "counter",
            "Times the access log was reopened (SIGUSR1, POST /logs/reopen).",
            s.reopens,
        ),
        (
            "ringgate_access_log_queued_batches",
            "gauge",
            "Batches of lines waiting for the writer now.",
            s.queued_batches as u64,
        ),
    ];
    for (name, kind, help, v) in figures {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
}

/// Percentiles as JSON milliseconds.
fn percentiles_json(h: &HistogramRead) -> serde_json::Value {
    match h.percentiles() {
        None => serde_json::Value::Null,
        Some(p) => {
            let ms = |us: u64| us as f64 / 1e3;
            serde_json::json!({
                "count": h.count(),
                "p50": ms(p.p50),
                "p90": ms(p.p90),
                "p99": ms(p.p99),
                "p99.9": ms(p.p999),
                "max": ms(p.max),
            })
        }
    }
}

/// `GET /stats`: per API, stage, route and canary, the counts and the
/// latency percentiles (milliseconds), as JSON.
pub fn stats_json(sources: &MetricsSources, started: Instant) -> serde_json::Value {
    let series = sources
        .gateway
        .published()
        .metrics()
        .map(|m| m.read())
        .unwrap_or_default();
    let rows: Vec<serde_json::Value> = series
        .iter()
        .map(|r| {
            let l = &r.labels;
            serde_json::json!({
                "api": &*l.api,
                "stage": &*l.stage,
                "route": if l.route.is_empty() { None } else { Some(&*l.route) },
                "canary": l.canary,
                "count": r.count(),
                "2xx": r.status[1],
                "3xx": r.status[2],
                "4xx": r.status[3],
                "5xx": r.status[4],
                "cache_hits": r.cache_hits(),
                "cache_misses": r.cache_misses(),
                "throttled": r.outcome(Outcome::Error(GatewayError::TooManyRequests)),
                "quota_exceeded": r.outcome(Outcome::Error(GatewayError::QuotaExceeded)),
                "latency_ms": percentiles_json(&r.latency),
                "integration_latency_ms": percentiles_json(&r.integration),
            })
        })
        .collect();
    serde_json::json!({
        "uptime_seconds": started.elapsed().as_secs_f64(),
        "enabled": sources.gateway.published().metrics().is_some_and(|m| m.enabled()),
        "series": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
    }
}
