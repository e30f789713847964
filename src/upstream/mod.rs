//! Backends: named groups of targets, load balancing, passive and active
//! health, the per-worker connection pools, and forwarding a request to
//! them ([`forward`]; after a protocol switch, [`tunnel`]).
//!
//! A [`Registry`] is built once per configuration from the `[[upstream]]`
//! groups plus one implicit single-target group per literal `host:port` an
//! `http_proxy` uri names. It is shared by every worker (`Arc`): what must be
//! common to all workers — round-robin position, requests in flight,
//! consecutive failures, ejection deadlines, active health — is kept in
//! atomics on each [`Target`], so picking a target is a few relaxed loads and
//! one `fetch_add`, never a lock. Addresses are resolved when the registry is
//! built and refreshed by the health thread ([`health`]); a worker only reads
//! the address when it opens a new connection.
//!
//! Balancing ([`Registry::pick`]): `round_robin` walks the targets from a
//! shared cursor; `least_outstanding` takes the target with the fewest
//! requests in flight (ties broken by the cursor). Targets that are ejected
//! (passive health: `max_failures` consecutive connect failures, timeouts or
//! resets leave a target out for `ejection_time`) or marked unhealthy by
//! active checks are skipped; when none is left the request fails with 504
//! (network error), as a dead backend would.
//!
//! Pools ([`pool`]) are per worker and per target: keep-alive connections
//! with their buffers, LIFO, capped at `max_idle_per_target`, dropped after
//! `idle_timeout`.
//!
//! HTTPS: a group with `[upstream.tls]` (or the implicit group of an
//! `https://host:port` uri, named so) has a [`ClientTls`], and each of its
//! targets a [`TargetTls`] with the name to verify; [`pool::connect`] runs
//! the handshake, and its connections are [`pool::BackendStream::Tls`]. A
//! uri's scheme must match its group's ([`Registry::group_for`]). A reload
//! keeps a target whole only if its TLS settings (and the files they read)
//! are unchanged, since its pooled connections were made with them.
//!
//! Figures ([`stats`]): each target counts requests, responses by status
//! class, integration latency, failures by [`stats::FailReason`], pooled
//! reuses, stale retries, new connections and their connect time (in
//! histogram buckets) and ejections, in one cache-padded row per worker
//! that only that worker writes (a relaxed load and store per counter).
//! [`Registry::stats`] sums them for the metrics page, with each target's
//! requests in flight, ejection and active health. The rows are sized from
//! `[server] workers`; a worker id past them counts nothing.
//!
//! A reload builds a new registry ([`Registry::from_config_reusing`]): a
//! target of the same group and authority as before keeps its counters
//! (they never go back), and, if its id is unchanged too, the target
//! itself with its health and ejection state and pooled connections.

pub mod forward;
pub mod health;
pub mod pool;
pub mod stats;
pub mod tunnel;

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use crate::config::{Balance, Config, HealthCheck, PassiveHealth, TargetAddr};
use crate::tls::client::ClientTls;
use rustls::pki_types::ServerName;
use stats::{HealthState, TargetCounters, TargetStats};

/// Milliseconds on a process-wide monotonic clock (ejection deadlines are
/// compared across workers, so they need one time base), from 1.
///
/// Read through [`crate::throttle::now_ns`] (`CLOCK_MONOTONIC` directly,
/// the clock `Instant` reads): `Instant::elapsed` costs about 60 more
/// instructions per read, and a proxied request reads this three times.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<u64> = OnceLock::new();
    let now = crate::throttle::now_ns();
    // A thread that read the clock just before another set the epoch sees
    // 0 elapsed, never a wrap.
    now.saturating_sub(*EPOCH.get_or_init(|| now)) / 1_000_000 + 1
}

/// How a target of an HTTPS group is spoken to.
#[derive(Debug, Clone)]
pub struct TargetTls {
    /// The group's client configuration.
    pub client: ClientTls,
    /// The SNI name and the name its certificate must be for (`None`: the
    /// target's host is not one rustls accepts, e.g. it has a `_`; every
    /// connection fails its handshake).
    pub name: Option<ServerName<'static>>,
}

/// One backend address and its shared state.
#[derive(Debug)]
pub struct Target {
    /// Index in [`Registry::targets`]; also the per-worker pool index.
    pub id: usize,
    /// `host:port` as written: the `Host` header sent to it.
    pub authority: String,
    host: String,
    port: u16,
    addr: RwLock<Option<SocketAddr>>,
    /// Requests in flight to this target, all workers together.
    pub in_flight: AtomicUsize,
    failures: AtomicU32,
    ejected_until: AtomicU64,
    healthy: AtomicBool,
    /// Requests, responses, failures… one row per worker; carried over
    /// reloads by group and authority.
    counters: Arc<TargetCounters>,
    /// For a target of an HTTPS group: its TLS client settings.
    pub tls: Option<TargetTls>,
    /// When a failed TLS handshake was last written to stderr ([`now_ms`]).
    tls_failure_logged: AtomicU64,
}

impl Target {
    fn new(
        id: usize,
        t: &TargetAddr,
        counters: Arc<TargetCounters>,
        tls: Option<&GroupTls<'_>>,
    ) -> Target {
        let addr = resolve(&t.host, t.port);
        let tls = tls.map(|g| TargetTls {
            client: g.client.clone(),
            name: server_name(g.server_name.unwrap_or(&t.host)),
        });
        Target {
            tls,
            tls_failure_logged: AtomicU64::new(0),
            id,
            authority: t.text.clone(),
            host: t.host.clone(),
            port: t.port,
            addr: RwLock::new(addr),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            counters,
        }
    }

    /// Its counters (see [`stats`]).
    #[inline]
    pub fn counters(&self) -> &TargetCounters {
        &self.counters
    }

    /// Whether passive health has it ejected at `now` (ms).
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// The resolved address, if resolution has succeeded.
    pub fn addr(&self) -> Option<SocketAddr> {
        *self.addr.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-resolves a DNS name (no-op cost for IP literals beyond parsing).
    pub fn refresh(&self) {
        if let Some(a) = resolve(&self.host, self.port) {
            *self.addr.write().unwrap_or_else(|e| e.into_inner()) = Some(a);
        }
    }

    /// Whether the target may receive requests at `now` (ms).
    pub fn available(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// Active health's verdict.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Writes why a TLS handshake with this target failed to stderr (what
    /// rustls said: an unknown issuer, a name mismatch, an expired or CA
    /// certificate…), at most once a minute per target: the metrics and
    /// the access log only carry `tls_certificate` / `tls_handshake`.
    pub fn log_tls_failure(&self, why: &std::io::Error) {
        let now = now_ms();
        let last = self.tls_failure_logged.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < 60_000 {
            return;
        }
        if self
            .tls_failure_logged
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            eprintln!(
                "ringgate: upstream target {}: TLS handshake failed: {why} (logged at most once a minute)",
                self.authority
            );
        }
    }

    /// Whether active health currently marks the target healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// The TLS name of `host`: a DNS name or an IP address; `None` for a
/// host rustls cannot name (connections to it then fail).
fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}

/// What a group's targets need to speak TLS.
struct GroupTls<'a> {
    client: &'a ClientTls,
    server_name: Option<&'a str>,
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    (host, port).to_socket_addrs().ok()?.next()
}

/// A named group of targets and how to use them.
#[derive(Debug)]
pub struct Group {
    /// The `[[upstream]]` name, or the `host:port` of an implicit group.
    pub name: String,
    /// Target ids.
    pub targets: Vec<usize>,
    /// Balancing policy.
    pub balance: Balance,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Lifetime of an idle pooled connection.
    pub idle_timeout: Duration,
    /// Idle connections kept per target and worker.
    pub max_idle: usize,
    /// Passive ejection settings.
    pub passive: Option<PassiveHealth>,
    /// Active check settings.
    pub health_check: Option<HealthCheck>,
    /// For an HTTPS group (`[upstream.tls]`, or an `https://host:port`
    /// uri): its client configuration.
    pub tls: Option<ClientTls>,
    cursor: AtomicUsize,
}

/// All groups and targets of one configuration.
#[derive(Debug, Default)]
pub struct Registry {
    /// The groups: `[[upstream]]`s first, then implicit ones.
    pub groups: Vec<Group>,
    /// Every target, by id.
    pub targets: Vec<Arc<Target>>,
    /// Rows of counters each target has: the workers there are (at least).
    workers: usize,
    /// While building: the previous registry's targets by group name and
    /// authority, in id order. One with the same id is reused whole
    /// (health and ejection state, resolved address, pooled connections);
    /// otherwise a new target takes over its counters.
    reuse: HashMap<(String, String), Vec<Arc<Target>>>,
}

impl Registry {
    /// The `[[upstream]]` groups of `config` (implicit ones are added by
    /// [`Registry::group_for`]).
    pub fn from_config(config: &Config) -> Registry {
        Self::from_config_reusing(config, None)
    }

    /// [`Registry::from_config`], carrying over what `previous` knows about
    /// each target of the same group and authority (call
    /// [`Registry::finish`] once built): its counters always, so they never
    /// go back; and, when its id is unchanged too, the target itself —
    /// health and ejection state, resolved address, and (per-worker pools
    /// check a target's identity) its pooled connections.
    ///
    /// Each target gets a row of counters per worker: as many as
    /// `[server] workers` says (one per core when unset), and no fewer than
    /// `previous` had (a reload does not change the running workers).
    pub fn from_config_reusing(config: &Config, previous: Option<&Registry>) -> Registry {
        let workers = config
            .server
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(previous.map_or(1, |p| p.workers));
        let mut reuse: HashMap<(String, String), Vec<Arc<Target>>> = HashMap::new();
        if let Some(p) = previous {
            for g in &p.groups {
                for &id in &g.targets {
                    let t = &p.targets[id];
                    reuse
                        .entry((g.name.clone(), t.authority.clone()))
                        .or_default()
                        .push(t.clone());
                }
            }
        }
        let mut r = Registry {
            workers,
            reuse,
            ..Registry::default()
        };
        for u in &config.upstreams {
            let mut ids = Vec::with_capacity(u.targets.len());
            let tls = u.tls.as_ref().map(|t| GroupTls {
                client: &t.client,
                server_name: t.server_name.as_deref(),
            });
            if u.tls.as_ref().is_some_and(|t| !t.verify) {
                eprintln!(
                    "ringgate: WARNING: [[upstream]] {:?} has tls.verify = false: its backends' \
                     certificates are NOT checked, so anyone on the path can pose as them",
                    u.name
                );
            }
            for t in &u.targets {
                ids.push(r.add_target(&u.name, t, tls.as_ref()));
            }
            r.groups.push(Group {
                name: u.name.clone(),
                targets: ids,
                balance: u.balance,
                connect_timeout: u.connect_timeout,
                idle_timeout: u.idle_timeout,
                max_idle: u.max_idle_per_target,
                passive: u.passive_health.clone(),
                health_check: u.health_check.clone(),
                tls: u.tls.as_ref().map(|t| t.client.clone()),
                cursor: AtomicUsize::new(0),
            });
        }
        r
    }

    /// The group an `http_proxy` authority names (`tls`: the uri says
    /// `https://`): an `[[upstream]]` by name, which must speak the same
    /// scheme; else a `host:port`, an implicit one-target group with
    /// default settings shared by every route naming the same text and
    /// scheme (an HTTPS one is named `https://host:port` and verified
    /// against the system's CA certificates).
    pub fn group_for(&mut self, authority: &str, tls: bool) -> Result<usize, String> {
        let implicit = if tls && authority.contains([':', '[']) {
            format!("https://{authority}")
        } else {
            authority.to_string()
        };
        if let Some(i) = self.groups.iter().position(|g| g.name == implicit) {
            let g = &self.groups[i];
            return match (tls, g.tls.is_some()) {
                (true, false) => Err(format!(
                    "the uri says https, but [[upstream]] {authority:?} has no [upstream.tls]"
                )),
                (false, true) => Err(format!(
                    "the uri says http, but [[upstream]] {authority:?} speaks TLS"
                )),
                _ => Ok(i),
            };
        }
        let t = TargetAddr::parse(authority).map_err(|why| {
            format!("{authority:?} is neither an [[upstream]] name nor a host:port: it {why}")
        })?;
        let client = if tls {
            Some(ClientTls::system_default()?)
        } else {
            None
        };
        let group_tls = client.as_ref().map(|client| GroupTls {
            client,
            server_name: None,
        });
        let id = self.add_target(&implicit, &t, group_tls.as_ref());
        self.groups.push(Group {
            name: implicit,
            targets: vec![id],
            balance: Balance::RoundRobin,
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            max_idle: 512,
            passive: None,
            health_check: None,
            tls: client,
            cursor: AtomicUsize::new(0),
        });
        Ok(self.groups.len() - 1)
    }

    fn add_target(&mut self, group: &str, t: &TargetAddr, tls: Option<&GroupTls<'_>>) -> usize {
        let id = self.targets.len();
        let key = (group.to_string(), t.text.clone());
        let previous = self.reuse.get_mut(&key).and_then(|same| {
            // The one with this id if there is one, else the first: a group
            // naming one authority twice keeps both targets' counters.
            let at = same.iter().position(|p| p.id == id).unwrap_or(0);
            (at < same.len()).then(|| same.remove(at))
        });
        // The very target only if it is spoken to the same way: its pooled
        // connections were made with its TLS settings.
        let same_tls = |prev: &Target| match (&prev.tls, tls) {
            (None, None) => true,
            (Some(p), Some(g)) => {
                p.client == *g.client && p.name == server_name(g.server_name.unwrap_or(&t.host))
            }
            _ => false,
        };
        let target = match previous {
            Some(prev) if prev.id == id && same_tls(&prev) => prev,
            Some(prev) => Arc::new(Target::new(id, t, prev.counters.clone(), tls)),
            None => Arc::new(Target::new(
                id,
                t,
                Arc::new(TargetCounters::new(self.workers)),
                tls,
            )),
        };
        self.targets.push(target);
        id
    }

    /// Ends the build: drops the previous registry's targets.
    pub fn finish(&mut self) {
        self.reuse = HashMap::new();
    }

    /// Every target's figures, now, group by group (in configuration
    /// order, implicit groups last): counters summed over the workers,
    /// requests in flight, ejection and active health. For the metrics
    /// page; allocates, so never on the request path.
    pub fn stats(&self) -> Vec<TargetStats> {
        let now = now_ms();
        let mut out = Vec::with_capacity(self.targets.len());
        for g in &self.groups {
            for &id in &g.targets {
                let t = &self.targets[id];
                out.push(TargetStats {
                    group: g.name.clone(),
                    authority: t.authority.clone(),
                    counts: t.counters.snapshot(),
                    in_flight: t.in_flight.load(Ordering::Relaxed),
                    ejected: t.is_ejected(now),
                    health: match (&g.health_check, t.is_healthy()) {
                        (None, _) => HealthState::Unchecked,
                        (Some(_), true) => HealthState::Healthy,
                        (Some(_), false) => HealthState::Unhealthy,
                    },
                });
            }
        }
        out
    }

    /// Picks a target of `group` for one request, or `None` when every
    /// target is ejected or unhealthy.
    pub fn pick(&self, group: usize, now: u64) -> Option<&Arc<Target>> {
        let g = &self.groups[group];
        let n = g.targets.len();
        if n == 1 {
            let t = &self.targets[g.targets[0]];
            return t.available(now).then_some(t);
        }
        let start = g.cursor.fetch_add(1, Ordering::Relaxed);
        match g.balance {
            Balance::RoundRobin => (0..n)
                .map(|i| &self.targets[g.targets[(start + i) % n]])
                .find(|t| t.available(now)),
            Balance::LeastOutstanding => (0..n)
                .map(|i| &self.targets[g.targets[(start + i) % n]])
                .filter(|t| t.available(now))
                .min_by_key(|t| t.in_flight.load(Ordering::Relaxed)),
        }
    }

    /// Records a request that reached the target and got a response.
    pub fn record_success(&self, target: &Target) {
        if target.failures.load(Ordering::Relaxed) != 0 {
            target.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records a connect failure, timeout or reset; ejects the target when
    /// the group's passive health says so. Returns true if it was ejected.
    pub fn record_failure(&self, group: usize, target: &Target, now: u64) -> bool {
        let Some(p) = &self.groups[group].passive else {
            return false;
        };
        let f = target.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if f >= p.max_failures {
            target.failures.store(0, Ordering::Relaxed);
            target
                .ejected_until
                .store(now + p.ejection_time.as_millis() as u64, Ordering::Relaxed);
            target.counters.ejected();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(balance: &str, passive: bool) -> Registry {
        let text = format!(
            r#"
[[upstream]]
name = "g"
targets = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
balance = "{balance}"
{}
"#,
            if passive {
                "[upstream.passive_health]\nmax_failures = 2\nejection_time = \"10s\""
            } else {
                ""
            }
        );
        Registry::from_config(&crate::config::parse(&text, "t.toml").unwrap())
    }

    #[test]
    fn round_robin_visits_every_target() {
        let r = registry("round_robin", false);
        let picks: Vec<usize> = (0..6).map(|_| r.pick(0, 1).unwrap().id).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_outstanding_prefers_idle_targets() {
        let r = registry("least_outstanding", false);
        r.targets[0].in_flight.store(5, Ordering::Relaxed);
        r.targets[1].in_flight.store(1, Ordering::Relaxed);
        r.targets[2].in_flight.store(3, Ordering::Relaxed);
        for _ in 0..5 {
            assert_eq!(r.pick(0, 1).unwrap().id, 1);
        }
    }

    #[test]
    fn passive_ejection_and_recovery_use_the_clock_given() {
        let r = registry("round_robin", true);
        let t1 = r.targets[1].clone();
        assert!(!r.record_failure(0, &t1, 1000));
        assert!(r.record_failure(0, &t1, 1000));
        // Ejected for 10 s: never picked.
        for _ in 0..6 {
            assert_ne!(r.pick(0, 5_000).unwrap().id, 1);
        }
        // After the ejection time it is back.
        let picks: Vec<usize> = (0..3).map(|_| r.pick(0, 11_001).unwrap().id).collect();
        assert!(picks.contains(&1));
        // A success resets the count: one failure does not eject again.
        r.record_success(&t1);
        assert!(!r.record_failure(0, &t1, 20_000));
    }

    #[test]
    fn no_available_target_gives_none() {
        let r = registry("round_robin", false);
        for t in &r.targets {
            t.set_healthy(false);
        }
        assert!(r.pick(0, 1).is_none());
    }

    fn parse(text: &str) -> Config {
        crate::config::parse(text, "t.toml").unwrap()
    }

    #[test]
    fn rows_follow_the_configured_workers() {
        let r = Registry::from_config(&parse(
            "[server]\nworkers = 3\n[[upstream]]\nname = \"g\"\ntargets = [\"127.0.0.1:1\"]\n",
        ));
        assert_eq!(r.targets[0].counters().workers(), 3);
        // Unset: one per core.
        let r = registry("round_robin", false);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(r.targets[0].counters().workers(), cores);
        // A reload never shrinks them.
        let mut again = Registry::from_config_reusing(
            &parse(
                "[server]\nworkers = 1\n[[upstream]]\nname = \"g\"\ntargets = [\"127.0.0.1:9\"]\n",
            ),
            Some(&r),
        );
        again.finish();
        assert_eq!(again.targets[0].counters().workers(), cores.max(1));
    }

    #[test]
    fn stats_report_counters_ejection_and_health() {
        let text = r#"
[[upstream]]
name = "checked"
targets = ["127.0.0.1:1", "127.0.0.1:2"]
[upstream.passive_health]
max_failures = 1
ejection_time = "10s"
[upstream.health_check]
path = "/health"
"#;
        let mut r = Registry::from_config(&parse(text));
        r.group_for("127.0.0.1:3", false).unwrap();
        r.finish();
        let t0 = r.targets[0].clone();
        t0.counters().row(0).request();
        t0.counters().row(0).response(200, 10);
        r.targets[1].set_healthy(false);
        assert!(r.record_failure(0, &t0, now_ms()));
        r.targets[2].in_flight.store(2, Ordering::Relaxed);

        let s = r.stats();
        let names: Vec<(&str, &str)> = s
            .iter()
            .map(|t| (t.group.as_str(), t.authority.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("checked", "127.0.0.1:1"),
                ("checked", "127.0.0.1:2"),
                ("127.0.0.1:3", "127.0.0.1:3")
            ]
        );
        assert_eq!((s[0].counts.requests, s[0].counts.responses(2)), (1, 1));
        assert_eq!(s[0].counts.ejections, 1);
        assert!(s[0].ejected && !s[1].ejected && !s[2].ejected);
        assert_eq!(s[0].health, HealthState::Healthy);
        assert_eq!(s[1].health, HealthState::Unhealthy);
        assert_eq!(s[2].health, HealthState::Unchecked);
        assert_eq!(s[2].in_flight, 2);
    }

    #[test]
    fn a_reload_carries_counters_by_group_and_authority() {
        let before = r#"
[[upstream]]
name = "a"
targets = ["127.0.0.1:1", "127.0.0.1:2"]
[[upstream]]
name = "b"
targets = ["127.0.0.1:1"]
"#;
        let mut old = Registry::from_config(&parse(before));
        old.group_for("127.0.0.1:7", false).unwrap();
        old.finish();
        for (id, n) in [(0, 1), (1, 2), (2, 3), (3, 4)] {
            for _ in 0..n {
                old.targets[id].counters().row(0).request();
            }
        }
        // A new group first renumbers every target; "a" drops a target and
        // "b" is renamed "c".
        let after = r#"
[[upstream]]
name = "new"
targets = ["127.0.0.1:5", "127.0.0.1:6"]
[[upstream]]
name = "a"
targets = ["127.0.0.1:2"]
[[upstream]]
name = "c"
targets = ["127.0.0.1:1"]
"#;
        let mut new = Registry::from_config_reusing(&parse(after), Some(&old));
        new.group_for("127.0.0.1:7", false).unwrap();
        new.finish();
        let counts: Vec<(String, String, u64)> = new
            .stats()
            .into_iter()
            .map(|t| (t.group, t.authority, t.counts.requests))
            .collect();
        let row = |g: &str, a: &str, n| (g.to_string(), a.to_string(), n);
        assert_eq!(
            counts,
            [
                row("new", "127.0.0.1:5", 0),
                row("new", "127.0.0.1:6", 0),
                row("a", "127.0.0.1:2", 2),
                row("c", "127.0.0.1:1", 0),
                row("127.0.0.1:7", "127.0.0.1:7", 4),
            ]
        );
        // Renumbered: new targets (fresh health state) sharing the counters.
        assert!(!Arc::ptr_eq(&old.targets[1], &new.targets[2]));
        new.targets[2].counters().row(0).request();
        assert_eq!(old.targets[1].counters().snapshot().requests, 3);

        // Same group, authority and id: the very target is kept.
        let mut same = Registry::from_config_reusing(&parse(after), Some(&new));
        same.finish();
        assert!(Arc::ptr_eq(&new.targets[2], &same.targets[2]));
    }

    #[test]
    fn now_ms_starts_at_one_and_follows_the_clock() {
        let a = now_ms();
        assert!(a >= 1);
        std::thread::sleep(Duration::from_millis(30));
        let b = now_ms();
        assert!(b >= a + 29 && b < a + 5_000, "{a} then {b}");
    }

    #[test]
    fn a_reload_keeps_an_https_target_only_with_the_same_tls_settings() {
        let text = |verify: bool| {
            parse(&format!(
                "[[upstream]]\nname = \"s\"\ntargets = [\"127.0.0.1:1\"]\n\
                 tls = {{ ca = \"webpki\", verify = {verify} }}\n"
            ))
        };
        let mut first = Registry::from_config(&text(true));
        first.finish();
        assert!(first.groups[0].tls.is_some() && first.targets[0].tls.is_some());
        first.targets[0].counters().row(0).request();
        // The same settings: the very target, with its pooled connections.
        let mut same = Registry::from_config_reusing(&text(true), Some(&first));
        same.finish();
        assert!(Arc::ptr_eq(&first.targets[0], &same.targets[0]));
        // Other settings: a new target (its pooled connections were made
        // with the old ones), the counters carried.
        let mut changed = Registry::from_config_reusing(&text(false), Some(&same));
        changed.finish();
        assert!(!Arc::ptr_eq(&same.targets[0], &changed.targets[0]));
        assert_eq!(changed.targets[0].counters().snapshot().requests, 1);
    }

    #[test]
    fn the_uri_scheme_must_be_the_groups() {
        let mut r = Registry::from_config(&parse(
            "[[upstream]]\nname = \"plain\"\ntargets = [\"127.0.0.1:1\"]\n\
             [[upstream]]\nname = \"secure\"\ntargets = [\"127.0.0.1:2\"]\n\
             tls = { ca = \"webpki\" }\n",
        ));
        assert_eq!(r.group_for("plain", false), Ok(0));
        assert_eq!(r.group_for("secure", true), Ok(1));
        assert!(r
            .group_for("plain", true)
            .unwrap_err()
            .contains("no [upstream.tls]"));
        assert!(r
            .group_for("secure", false)
            .unwrap_err()
            .contains("speaks TLS"));
        // A host:port is a group per scheme.
        let a = r.group_for("127.0.0.1:9", false).unwrap();
        assert_eq!(r.groups[a].name, "127.0.0.1:9");
        assert!(r.groups[a].tls.is_none());
    }

    #[test]
    fn implicit_groups_are_shared_and_validated() {
        let mut r = Registry::default();
        let a = r.group_for("127.0.0.1:9000", false).unwrap();
        let b = r.group_for("127.0.0.1:9000", false).unwrap();
        assert_eq!(a, b);
        assert!(r.group_for("no port here", false).is_err());
    }
}
