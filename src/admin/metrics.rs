//! `GET /metrics` on the admin socket: what the gateway counts today, in
//! the Prometheus text exposition format (version 0.0.4).
//!
//! Read when scraped, never on the request path: the workers' outcome rows
//! (summed), the containment counters, each worker's open connections, each
//! stage cache's counters, process RSS, uptime and build. Per-route
//! latency histograms and per-API/stage request counts are not recorded
//! yet (the observability issue's next step).

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::gateway::{Gateway, Outcome, Snapshot};
use crate::runtime::{Counters, Loads};

/// Where the numbers come from.
pub struct MetricsSources {
    /// The request path's outcome counters.
    pub gateway: Arc<Gateway>,
    /// Containment: panics, restarts, live workers.
    pub counters: Arc<Counters>,
}

/// A stage-cache family: name, type, help, and the figure it reports.
type CacheFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::cache::CacheStats) -> u64,
);

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
        "ringgate_requests_total",
        "counter",
        "Requests answered, by how they ended (mock, cache_hit, proxied, error_*, ...).",
    );
    let counts = sources.gateway.outcomes();
    for i in 0.. {
        let Some(o) = Outcome::from_index(i) else {
            break;
        };
        let _ = writeln!(
            out,
            "ringgate_requests_total{{outcome=\"{}\"}} {}",
            o.as_str(),
            counts.get(o)
        );
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

    if let Some(loads) = loads {
        family(
            &mut out,
            "ringgate_connections_open",
            "gauge",
            "Open client connections, per worker.",
        );
        for (w, l) in loads.read().iter().enumerate() {
            let _ = writeln!(
                out,
                "ringgate_connections_open{{worker=\"{w}\"}} {}",
                l.connections
            );
        }
    }

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

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
    }
}
