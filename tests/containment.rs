//! Containment: a panic on a request path costs one connection, and a
//! worker thread that dies anyway is replaced by the supervisor.
//!
//! The panics are injected through the debug-only `x-ringgate-fault`
//! request header (`StartOptions::fault_injection`); release builds have
//! neither the option nor the trigger, so this file only runs in debug
//! builds (`cargo test`'s default).
#![cfg(debug_assertions)]

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringgate::server::{Server, StartOptions};
use support::{Client, SERVER};

const API: &str = r#"
[[api]]
name = "web"
  [[api.stage]]
  name = "prod"

  [[api.route]]
  route = "GET /hello"
  [api.route.mock]
  body = "hello"
"#;

fn start() -> Server {
    let config = ringgate::config::parse(&format!("{SERVER}{API}"), "containment.toml").unwrap();
    let options = StartOptions {
        fault_injection: true,
        ..StartOptions::default()
    };
    Server::start(config, options).unwrap()
}

const HELLO: &str = "GET /prod/hello HTTP/1.1\r\nHost: t\r\n\r\n";

fn assert_hello(c: &mut Client) {
    let r = c.request(HELLO);
    assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{r:?}");
}

fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

#[test]
fn a_panic_on_the_request_path_closes_only_that_connection() {
    let server = start();
    let addr = server.local_addrs()[0];
    // A keep-alive connection on the (only) worker, before the fault.
    let mut bystander = Client::connect(addr);
    assert_hello(&mut bystander);

    let mut victim = Client::connect(addr);
    victim.send("GET /prod/hello HTTP/1.1\r\nHost: t\r\nx-request-id: doomed-1\r\nx-ringgate-fault: panic\r\n\r\n");
    assert!(
        victim.read_to_close().is_empty(),
        "the panicked request must not be answered"
    );
    let counters = server.counters();
    assert_eq!(counters.connection_panics.load(Ordering::Relaxed), 1);

    // The same worker serves on: the open connection and new ones.
    assert_hello(&mut bystander);
    assert_hello(&mut Client::connect(addr));
    // Many more, so a worker that leaked state would show it.
    for _ in 0..20 {
        let mut c = Client::connect(addr);
        c.send("GET /prod/hello HTTP/1.1\r\nHost: t\r\nx-ringgate-fault: panic\r\n\r\n");
        assert!(c.read_to_close().is_empty());
    }
    assert_hello(&mut bystander);
    assert_eq!(counters.connection_panics.load(Ordering::Relaxed), 21);
    assert_eq!(counters.worker_restarts.load(Ordering::Relaxed), 0);
    assert_eq!(counters.live_workers.load(Ordering::SeqCst), 1);
    server.shutdown();
    server.join();
}

#[test]
fn a_dead_worker_is_restarted_with_a_fresh_listener() {
    let server = start();
    let addr = server.local_addrs()[0];
    let counters = server.counters();
    assert_eq!(counters.live_workers.load(Ordering::SeqCst), 1);

    for round in 1..=2 {
        let mut c = Client::connect(addr);
        // The worker dies soon after this request (its answer may or may
        // not get out first).
        c.send("GET /prod/hello HTTP/1.1\r\nHost: t\r\nx-ringgate-fault: kill-worker\r\n\r\n");
        let _ = c.read_to_close();
        assert!(
            eventually(Duration::from_secs(10), || counters
                .worker_restarts
                .load(Ordering::Relaxed)
                == round),
            "the supervisor did not restart the worker (round {round})"
        );
        assert!(eventually(Duration::from_secs(10), || counters
            .live_workers
            .load(Ordering::SeqCst)
            == 1));
        // The new worker answers on the same port, for new connections.
        for _ in 0..5 {
            assert_hello(&mut Client::connect(addr));
        }
    }
    assert_eq!(counters.connection_panics.load(Ordering::Relaxed), 0);
    server.shutdown();
    server.join();
    assert_eq!(counters.live_workers.load(Ordering::SeqCst), 0);
}
