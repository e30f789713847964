//! Graceful drain of the `ringgate` binary on SIGTERM: idle keep-alive
//! connections are closed, a request in flight is finished, the process
//! exits 0 and stops listening.

mod support;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

use support::{BinaryServer, Client, Response};

const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:0"]
workers = 1
pin_workers = false
drain_timeout = "5s"

[[api]]
name = "files"
  [[api.stage]]
  name = "prod"

  [[api.route]]
  route = "GET /hello"
  [api.route.mock]
  body = "hello"

  [[api.route]]
  route = "POST /upload"
  [api.route.mock]
  status = 201
  body = "stored"
"#;

/// The drain scenario up to B's response: returns the server (exited or
/// not), B's response and B itself.
fn drain_with_request_in_flight() -> (BinaryServer, Response, Client) {
    let mut server = BinaryServer::start(CONFIG);

    // A: one request answered, then idle on a kept-alive connection.
    let mut a = server.client();
    let r = a.get("/prod/hello");
    assert_eq!(r.text(), "hello", "{r:?}");

    // B: a head announcing 10 body bytes, and 5 of them. The interim
    // 100 Continue is the signal that the server has parsed B's head and is
    // reading its body.
    let mut b = server.client();
    b.send(
        "POST /prod/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\
         Expect: 100-continue\r\n\r\n12345",
    );
    let interim = b.read_response();
    assert_eq!(interim.status, 100, "{interim:?}");

    server.sigterm();
    // The drain closes idle A without a response; that A is closed is
    // also the signal that the worker is draining.
    a.assert_closed();

    // B finishes its body and gets its response.
    b.send("67890");
    let r = b.read_response();
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.text(), "stored");
    b.assert_closed();

    let status = server.wait_timeout(Duration::from_secs(10));
    let stderr = server.stderr();
    assert!(
        status.is_some(),
        "still running 10 s after SIGTERM; stderr:\n{stderr}"
    );
    (server, r, b)
}

#[test]
fn sigterm_drains_in_flight_request_then_exits_zero() {
    let (mut server, _response, _b) = drain_with_request_in_flight();
    let status = server.wait_timeout(Duration::ZERO).unwrap();
    let stderr = server.stderr();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("draining"), "stderr:\n{stderr}");

    // Nothing listens any more.
    match TcpStream::connect(server.addr()) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("{} still accepts connections after exit", server.addr()),
    }
}

#[test]
fn sigterm_in_flight_response_says_connection_close() {
    let (_server, response, _b) = drain_with_request_in_flight();
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
}

#[test]
fn sigterm_with_no_connections_exits_zero() {
    let mut server = BinaryServer::start(CONFIG);
    assert_eq!(server.client().get("/prod/hello").status, 200);
    server.sigterm();
    let status = server.wait_timeout(Duration::from_secs(10));
    let stderr = server.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr:\n{stderr}");
}
