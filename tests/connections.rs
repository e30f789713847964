//! Many connections on one worker: the connection cap, fairness, and the
//! open-connection count.
//!
//! - At `max_connections_per_worker` a worker stops accepting: a new
//!   connection waits in the kernel's backlog, unanswered, and is served as
//!   soon as one of the open ones closes. While at the cap the worker
//!   sleeps (it is woken by the close, it does not poll): its thread's
//!   context switches over a second stay at the clock's one a second.
//! - One client pipelining requests as fast as it can does not starve
//!   another connection on the same worker, on io_uring and on epoll (where
//!   reads and writes that can complete at once never yield by themselves).
//! - The open-connection count ([`Server::loads`]) follows connections as
//!   they open and close; the binary prints it per worker on SIGUSR1.
//!
//! The tests take a lock and run one at a time: the cap test reads the
//! worker thread's counters by its name.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringgate::server::Server;
use support::{BinaryServer, TestServer, SERVER};

static SERIAL: Mutex<()> = Mutex::new(());

fn config(extra_server: &str, limits: &str) -> String {
    format!(
        r#"{SERVER}{extra_server}
[limits]
{limits}

[[api]]
name = "conns"
  [[api.stage]]
  name = "prod"
  [[api.route]]
  route = "GET /hello"
  [api.route.mock]
  body = "hello"
"#
    )
}

/// Waits (up to 5 s) until worker 0 has `n` open connections.
fn wait_connections(server: &Server, n: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let open = server.loads().read()[0].connections;
        if open == n {
            return;
        }
        assert!(
            Instant::now() < until,
            "worker 0 has {open} connections open, expected {n}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Voluntary context switches of this process's thread named `name`.
fn context_switches(name: &str) -> u64 {
    for task in std::fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
        let dir = task.expect("task entry").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let status = std::fs::read_to_string(dir.join("status")).expect("task status");
            return status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("voluntary_ctxt_switches");
        }
    }
    panic!("no thread named {name}");
}

#[test]
fn at_the_cap_new_connections_wait_in_the_backlog_without_polling() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start(&config("", "max_connections_per_worker = 2"));
    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.get("/prod/hello").status, 200);
    assert_eq!(b.get("/prod/hello").status, 200);
    wait_connections(server.server(), 2);

    // The third connects (the kernel completes the handshake into the
    // backlog) but is not accepted, so its request is not answered.
    let mut c = TcpStream::connect(server.addr()).unwrap();
    c.write_all(b"GET /prod/hello HTTP/1.1\r\nHost: c\r\n\r\n")
        .unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = c.read(&mut byte).expect_err("answered beyond the cap");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    assert_eq!(server.server().loads().read()[0].connections, 2);

    // At the cap the worker sleeps: over a second, its thread wakes for the
    // clock (once a second), not every few milliseconds.
    let before = context_switches("ringgate-worker");
    std::thread::sleep(Duration::from_secs(1));
    let woke = context_switches("ringgate-worker") - before;
    assert!(
        woke <= 5,
        "the worker woke {woke} times in a second at the cap"
    );

    // One closes: the waiting connection is accepted and answered.
    drop(a);
    c.set_read_timeout(Some(support::READ_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    while !got.windows(5).any(|w| w == b"hello") {
        let mut chunk = [0u8; 1024];
        let n = c.read(&mut chunk).expect("answer after a close");
        assert!(n > 0, "closed instead of answered");
        got.extend_from_slice(&chunk[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    assert_eq!(b.get("/prod/hello").status, 200);
}

#[test]
fn the_open_connection_count_follows_connections() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start(&config("", ""));
    wait_connections(server.server(), 0);
    let mut clients: Vec<_> = (0..20).map(|_| server.client()).collect();
    for c in &mut clients {
        assert_eq!(c.get("/prod/hello").status, 200);
    }
    wait_connections(server.server(), 20);
    clients.truncate(5);
    wait_connections(server.server(), 5);
    drop(clients);
    wait_connections(server.server(), 0);
}

/// One connection pipelines requests as fast as the gateway answers them
/// (a writer thread and a reader thread); meanwhile another connection's
/// requests must each be answered within the client's read timeout, and
/// the pipelining connection must have been served meanwhile too.
fn pipelining_does_not_starve(io_driver: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start(&config(&format!("io_driver = \"{io_driver}\"\n"), ""));
    let flood = TcpStream::connect(server.addr()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let writer = {
        let mut s = flood.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let batch = b"GET /prod/hello HTTP/1.1\r\nHost: flood\r\n\r\n".repeat(64);
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(&batch).is_err() {
                    return;
                }
            }
        })
    };
    let reader = {
        let mut s = flood.try_clone().unwrap();
        let received = received.clone();
        std::thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.fetch_add(n as u64, Ordering::Relaxed),
                };
            }
        })
    };
    // The flood is under way.
    let until = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < 100_000 {
        assert!(
            Instant::now() < until,
            "the pipelining client is not served"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let at_start = received.load(Ordering::Relaxed);
    let mut other = server.client();
    for _ in 0..20 {
        // Client::get fails the test if no answer comes within READ_TIMEOUT.
        assert_eq!(other.get("/prod/hello").status, 200);
    }
    assert!(
        received.load(Ordering::Relaxed) > at_start,
        "the pipelining client was not served while the other was"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = flood.shutdown(Shutdown::Both);
    writer.join().unwrap();
    reader.join().unwrap();
}

#[test]
fn a_pipelining_client_does_not_starve_others_on_io_uring() {
    pipelining_does_not_starve("auto");
}

#[test]
fn a_pipelining_client_does_not_starve_others_on_epoll() {
    pipelining_does_not_starve("epoll");
}

#[test]
fn sigusr1_prints_each_workers_open_connections() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut gateway = BinaryServer::start(&config("", ""));
    let mut clients: Vec<_> = (0..3).map(|_| gateway.client()).collect();
    for c in &mut clients {
        assert_eq!(c.get("/prod/hello").status, 200);
    }
    let want = "ringgate: status: worker 0: 3 connections open";
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        gateway.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(100));
        let stderr = gateway.stderr();
        if stderr.contains(want) {
            break;
        }
        assert!(Instant::now() < until, "no `{want}` line in:\n{stderr}");
    }
    // The gateway keeps serving after the signal.
    assert_eq!(clients[0].get("/prod/hello").status, 200);
}

/// A keep-alive connection that stays silent after an answer parks (its
/// read is cancelled, its buffers and serving block go back to the pools)
/// and serves its next request as before; on io_uring and on epoll, whose
/// cancellation paths differ.
fn parked_connection_serves_again(io_driver: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start(&config(&format!("io_driver = \"{io_driver}\"\n"), ""));
    let mut c = server.client();
    for round in 0..3 {
        assert_eq!(c.get("/prod/hello").status, 200);
        // The worker counts parks (published once a second).
        let until = Instant::now() + Duration::from_secs(6);
        while server.server().loads().read()[0].parked < round + 1 {
            assert!(
                Instant::now() < until,
                "round {round}: the connection never parked"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let load = server.server().loads().read()[0];
        assert_eq!(load.connections, 1);
        assert_eq!(load.parked, round + 1);
        assert!(load.free_blocks >= 1, "the serving block went back");
    }
    assert_eq!(c.get("/prod/hello").status, 200);
}

#[test]
fn a_parked_connection_serves_its_next_request_on_io_uring() {
    parked_connection_serves_again("auto");
}

#[test]
fn a_parked_connection_serves_its_next_request_on_epoll() {
    parked_connection_serves_again("epoll");
}
