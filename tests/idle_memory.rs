//! What does an idle keep-alive connection cost the gateway in memory?
//!
//! An edge tier holds far more idle keep-alive connections than busy ones,
//! so an idle connection must cost about what nginx's does (0.5 KiB on the
//! project's machine; before this was fixed ringgate's cost 19.5 KiB). The
//! gateway binary runs with one worker; after a warm-up, 10,000 connections
//! each send one request and read its answer, then stay open and idle. Once
//! they have parked (a connection keeps its buffers for about a second
//! after an answer, for the next request), the growth of the gateway's
//! resident memory (VmRSS of its process) divided by the connections must
//! stay under [`BOUND`]; the figure is printed. Once for a mock route, once
//! for a proxied route (a real origin behind it).
//!
//! Memory figures are stable where timings are not, so they may be
//! asserted. `cargo test` runs this against the debug binary; for the
//! release figure run `perf/idle-memory.sh` (the same test, built in
//! release). The two tests run one after the other (they share the file
//! descriptor budget).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{BinaryServer, Origin, SERVER};

/// Idle connections opened per test.
const CONNECTIONS: usize = 10_000;
/// Largest allowed resident growth per idle connection (nginx: 0.5 KiB).
const BOUND: f64 = 1024.0;

static SERIAL: Mutex<()> = Mutex::new(());

/// The resident set size of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// Raises this process's open-file limit (inherited by the gateway it
/// starts) to what the connections need; returns how many connections the
/// limit allows.
fn raise_fd_limit(want: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let need = (want + 1000) as libc::rlim_t;
        lim.rlim_cur = need.min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
    }
    (lim.rlim_cur as usize).saturating_sub(1000).min(want)
}

/// Sends `request` on a new connection and reads the whole answer (a
/// Content-Length body); the connection stays open.
fn open_after_one_request(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).expect("send request");
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("read response");
        assert!(n > 0, "the gateway closed a connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).expect("ASCII head");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("Content-Length");
            if buf.len() >= end + 4 + len {
                return s;
            }
        }
    }
}

/// The gateway's RSS once its connections have parked: a connection keeps
/// its buffers for about a second after its last answer, then gives them
/// back to pools that shrink back within seconds, and the allocator returns
/// freed pages after about a second more. Sampled every 500 ms until it has
/// not fallen for 2 s (at least 4 s, at most 30 s).
fn settled_rss(pid: u32) -> u64 {
    let started = Instant::now();
    let mut low = rss_bytes(pid);
    let mut low_at = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss_bytes(pid);
        if now + now / 100 < low {
            low_at = Instant::now();
        }
        low = low.min(now);
        let settled = low_at.elapsed() >= Duration::from_secs(2);
        if (settled && started.elapsed() >= Duration::from_secs(4))
            || started.elapsed() >= Duration::from_secs(30)
        {
            return now;
        }
    }
}

/// Opens the connections, measures, prints and checks the growth.
fn measure(what: &str, gateway: &BinaryServer, request: &[u8]) {
    let n = raise_fd_limit(CONNECTIONS);
    assert!(
        n >= 1000,
        "the open-file limit allows only {n} connections; raise `ulimit -n`"
    );
    let addr = gateway.addr();
    // Warm-up: the worker's pools and the allocator's pages for them.
    for _ in 0..4 {
        let warm: Vec<TcpStream> = (0..200)
            .map(|_| open_after_one_request(addr, request))
            .collect();
        drop(warm);
    }
    let before = settled_rss(gateway.pid());
    let started = Instant::now();
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| open_after_one_request(addr, request))
        .collect();
    let opened_in = started.elapsed();
    let after = settled_rss(gateway.pid());
    let per = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "idle memory, {what}: {n} idle connections; gateway RSS {:.1} MB -> {:.1} MB: \
         {per:.0} bytes per idle connection (bound {BOUND:.0}; opened in {opened_in:.1?})",
        before as f64 / 1e6,
        after as f64 / 1e6,
    );
    assert!(
        per <= BOUND,
        "{what}: an idle connection costs {per:.0} bytes of resident memory (bound {BOUND:.0})"
    );
    drop(conns);
}

/// The gateway binary, one worker, with `route` (a `[[api.route]]` table)
/// in stage `prod`.
fn gateway(route: &str) -> BinaryServer {
    BinaryServer::start(&format!(
        r#"{SERVER}
[limits]
max_connections_per_worker = 20000
keepalive_timeout = "300s"

[[api]]
name = "idle"
  [[api.stage]]
  name = "prod"
  [[api.route]]
{route}
"#
    ))
}

const REQUEST: &[u8] =
    b"GET /prod/hello HTTP/1.1\r\nHost: idle.test\r\nUser-Agent: idle-memory\r\n\r\n";

#[test]
fn an_idle_connection_after_a_mock_request_costs_under_a_kib() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let gateway = gateway(
        r#"  route = "GET /hello"
  [api.route.mock]
  body = "hello from a mock""#,
    );
    measure("mock route", &gateway, REQUEST);
}

#[test]
fn an_idle_connection_between_proxied_requests_costs_under_a_kib() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let origin = Origin::start("idle");
    let gateway = gateway(&format!(
        r#"  route = "GET /{{proxy+}}"
  [api.route.http_proxy]
  uri = "http://{}/{{proxy}}""#,
        origin.addr()
    ));
    measure("proxied route", &gateway, REQUEST);
}
