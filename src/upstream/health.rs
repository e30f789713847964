//! Active health checks and address refresh, on one background thread.
//!
//! Workers never block: name resolution and health probes run here, with
//! plain blocking sockets and timeouts, and publish their results through
//! the atomics and the address lock of each [`Target`]. Every
//! `health_check.interval` each target of a group that has checks gets
//! `GET {path}`; `healthy_threshold` consecutive answers with an expected
//! status mark it healthy, `unhealthy_threshold` consecutive failures mark
//! it unhealthy (targets start healthy). A target of an HTTPS group is
//! probed over TLS with the group's client configuration, so a certificate
//! the gateway would refuse fails the check. Every 30 s every target's name
//! is resolved again.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Registry, Target};
use crate::config::HealthCheck;

/// How often names are resolved again.
const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// The running health thread; stops when dropped or [`Checker::stop`]ped.
#[derive(Debug)]
pub struct Checker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checker {
    /// Starts the thread for `registry`.
    pub fn start(registry: Arc<Registry>) -> std::io::Result<Checker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringgate-health".into())
            .spawn(move || run(&registry, &flag))?;
        Ok(Checker {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Probe {
    target: Arc<Target>,
    check: HealthCheck,
    next: Instant,
    ok_streak: u32,
    fail_streak: u32,
}

fn run(registry: &Registry, stop: &AtomicBool) {
    let start = Instant::now();
    let mut probes: Vec<Probe> = Vec::new();
    for g in &registry.groups {
        if let Some(check) = &g.health_check {
            for &id in &g.targets {
                probes.push(Probe {
                    target: registry.targets[id].clone(),
                    check: check.clone(),
                    next: start,
                    ok_streak: 0,
                    fail_streak: 0,
                });
            }
        }
    }
    let mut next_refresh = start + REFRESH_EVERY;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for p in probes.iter_mut().filter(|p| p.next <= now) {
            p.next = now + p.check.interval;
            if probe(&p.target, &p.check) {
                p.fail_streak = 0;
                p.ok_streak += 1;
                if p.ok_streak >= p.check.healthy_threshold && !p.target.is_healthy() {
                    p.target.set_healthy(true);
                    eprintln!(
                        "ringgate: upstream target {} is healthy again",
                        p.target.authority
                    );
                }
            } else {
                p.ok_streak = 0;
                p.fail_streak += 1;
                if p.fail_streak >= p.check.unhealthy_threshold && p.target.is_healthy() {
                    p.target.set_healthy(false);
                    eprintln!(
                        "ringgate: upstream target {} failed its health check; out of rotation",
                        p.target.authority
                    );
                }
            }
        }
        if now >= next_refresh {
            for t in &registry.targets {
                t.refresh();
            }
            next_refresh = now + REFRESH_EVERY;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `GET path` with the check's timeout; true if the status is expected.
fn probe(target: &Target, check: &HealthCheck) -> bool {
    let Some(addr) = target.addr() else {
        return false;
    };
    let Ok(s) = TcpStream::connect_timeout(&addr, check.timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(check.timeout));
    let _ = s.set_write_timeout(Some(check.timeout));
    match &target.tls {
        None => exchange(s, target, check),
        Some(tls) => {
            let Some(name) = tls.name.clone() else {
                return false;
            };
            let Ok(conn) = rustls::ClientConnection::new(tls.client.config().clone(), name) else {
                return false;
            };
            exchange(rustls::StreamOwned::new(conn, s), target, check)
        }
    }
}

/// Sends the check's request over `s` and reads the status line.
fn exchange<S: Read + Write>(mut s: S, target: &Target, check: &HealthCheck) -> bool {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringgate-health\r\nConnection: close\r\n\r\n",
        check.path, target.authority
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => return false,
            Ok(k) => n += k,
        }
    }
    let status = std::str::from_utf8(&buf[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok());
    buf.starts_with(b"HTTP/1.")
        && status.is_some_and(|s| (check.expected_status.0..=check.expected_status.1).contains(&s))
}
