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

pub mod forward;
pub mod health;
pub mod pool;
pub mod tunnel;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::config::{Balance, Config, HealthCheck, PassiveHealth, TargetAddr};

/// Milliseconds on a process-wide monotonic clock (ejection deadlines are
/// compared across workers, so they need one time base).
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
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
}

impl Target {
    fn new(id: usize, t: &TargetAddr) -> Target {
        let addr = resolve(&t.host, t.port);
        Target {
            id,
            authority: t.text.clone(),
            host: t.host.clone(),
            port: t.port,
            addr: RwLock::new(addr),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        }
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

    /// Whether active health currently marks the target healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
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
    cursor: AtomicUsize,
}

/// All groups and targets of one configuration.
#[derive(Debug, Default)]
pub struct Registry {
    /// The groups: `[[upstream]]`s first, then implicit ones.
    pub groups: Vec<Group>,
    /// Every target, by id.
    pub targets: Vec<Arc<Target>>,
    /// While building: the previous registry's targets, reused (health and
    /// ejection state, resolved address) where the same id has the same
    /// authority.
    reuse: Vec<Arc<Target>>,
}

impl Registry {
    /// The `[[upstream]]` groups of `config` (implicit ones are added by
    /// [`Registry::group_for`]).
    pub fn from_config(config: &Config) -> Registry {
        Self::from_config_reusing(config, None)
    }

    /// [`Registry::from_config`], keeping the targets of `previous` whose
    /// id and authority are unchanged (call [`Registry::finish`] once
    /// built). Per-worker pools check a target's identity, so their
    /// connections to kept targets survive a reload.
    pub fn from_config_reusing(config: &Config, previous: Option<&Registry>) -> Registry {
        let mut r = Registry {
            reuse: previous.map_or_else(Vec::new, |p| p.targets.clone()),
            ..Registry::default()
        };
        for u in &config.upstreams {
            let mut ids = Vec::with_capacity(u.targets.len());
            for t in &u.targets {
                ids.push(r.add_target(t));
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
                cursor: AtomicUsize::new(0),
            });
        }
        r
    }

    /// The group an `http_proxy` authority names: an `[[upstream]]` by
    /// name, else a `host:port` (an implicit one-target group with default
    /// settings, shared by every route naming the same text).
    pub fn group_for(&mut self, authority: &str) -> Result<usize, String> {
        if let Some(i) = self.groups.iter().position(|g| g.name == authority) {
            return Ok(i);
        }
        let t = TargetAddr::parse(authority).map_err(|why| {
            format!("{authority:?} is neither an [[upstream]] name nor a host:port: it {why}")
        })?;
        let id = self.add_target(&t);
        self.groups.push(Group {
            name: authority.to_string(),
            targets: vec![id],
            balance: Balance::RoundRobin,
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            max_idle: 512,
            passive: None,
            health_check: None,
            cursor: AtomicUsize::new(0),
        });
        Ok(self.groups.len() - 1)
    }

    fn add_target(&mut self, t: &TargetAddr) -> usize {
        let id = self.targets.len();
        let target = match self.reuse.get(id) {
            Some(prev) if prev.authority == t.text => prev.clone(),
            _ => Arc::new(Target::new(id, t)),
        };
        self.targets.push(target);
        id
    }

    /// Ends the build: drops the previous registry's targets.
    pub fn finish(&mut self) {
        self.reuse = Vec::new();
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

    #[test]
    fn implicit_groups_are_shared_and_validated() {
        let mut r = Registry::default();
        let a = r.group_for("127.0.0.1:9000").unwrap();
        let b = r.group_for("127.0.0.1:9000").unwrap();
        assert_eq!(a, b);
        assert!(r.group_for("no port here").is_err());
    }
}
