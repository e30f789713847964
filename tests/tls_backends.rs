//! HTTPS backends, end to end: a plain-HTTP gateway (in process) forwards
//! over TLS to a second gateway serving `listen_tls` with certificates of a
//! test CA (made by rcgen), which proxies to `ringgate-origin`'s `/echo`.
//!
//! Shown: a backend verified against a CA bundle, by its `server_name` or
//! its IP address; its connections pooled and reused (session tickets
//! taken in while idle, a close_notify noticed); an untrusted certificate,
//! a name mismatch and a plain-HTTP backend each giving 502 with the
//! reason counted; `verify = false`; a client certificate presented to a
//! backend that asks for one; health checks over TLS; and a literal
//! `https://host:port` verified against the system's CAs.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringgate::upstream::stats::{Counts, FailReason, TargetStats};
use support::pki::{client_ca, client_cert_files, Pki};
use support::{echo_headers, header_values, Origin, TestServer, SERVER};

const INTERNAL: &str = r#"{"message": "Internal server error"}"#;

/// The HTTPS backend: a gateway with one certificate (for
/// `backend.example` and 127.0.0.1) serving `/prod/echo` from `origin` and
/// `/prod/health`; `cert_extra` goes into its certificate's table (e.g.
/// `client_ca`).
fn backend(pki: &Pki, origin: &Origin, cert_extra: &str) -> TestServer {
    let (chain, key) = pki.leaf("backend", &["backend.example", "127.0.0.1"]);
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\nworkers = 1\n\
         pin_workers = false\ndrain_timeout = \"1s\"\n\n\
         [tls]\nwatch = \"0s\"\n\n[[tls.certificate]]\nchain = \"{}\"\nkey = \"{}\"\n\
         hosts = [\"backend.example\"]\n{cert_extra}\n\n\
         [[api]]\nname = \"b\"\n  [[api.stage]]\n  name = \"prod\"\n\
         [[api.route]]\n  route = \"GET /echo\"\n  [api.route.http_proxy]\n  uri = \"http://{}/echo\"\n\
         [[api.route]]\n  route = \"GET /health\"\n  [api.route.mock]\n  status = 200\n  body = \"ok\"\n\
         [[api.route]]\n  route = \"GET /ws\"\n  [api.route.http_proxy]\n  uri = \"http://{}/ws\"\n  \
         allow_upgrade = true\n",
        chain.display(),
        key.display(),
        origin.addr(),
        origin.addr()
    );
    TestServer::start(&toml)
}

/// The backend's TLS address.
fn tls_addr(server: &TestServer) -> SocketAddr {
    server.server().local_addrs()[1]
}

/// The front gateway: `[[upstream]] secure` with `targets = [target]` and
/// `tls` as its `[upstream.tls]` (inline table) plus `extra` lines, and
/// `GET /echo` → `https://secure/prod/echo` (and `GET /ws`, upgrades
/// allowed, → `https://secure/prod/ws`).
fn front(target: SocketAddr, tls: &str, extra: &str) -> TestServer {
    TestServer::start(&format!(
        "{SERVER}[[upstream]]\nname = \"secure\"\ntargets = [\"{target}\"]\ntls = {tls}\n{extra}\n\n\
         [[api]]\nname = \"f\"\n  [[api.stage]]\n  name = \"prod\"\n\
         [[api.route]]\n  route = \"GET /echo\"\n  [api.route.http_proxy]\n  \
         uri = \"https://secure/prod/echo\"\n\
         [[api.route]]\n  route = \"GET /ws\"\n  [api.route.http_proxy]\n  \
         uri = \"https://secure/prod/ws\"\n  allow_upgrade = true\n"
    ))
}

fn ca(pki: &Pki) -> String {
    pki.ca_path().display().to_string()
}

/// The `secure` group's target figures.
fn stats(gw: &TestServer) -> TargetStats {
    gw.server()
        .snapshot()
        .upstreams
        .stats()
        .into_iter()
        .find(|t| t.group == "secure")
        .expect("the secure group")
}

/// Polls the figures until `ok` holds (another thread may see a worker's
/// counts a moment after its answer); panics with them after 5 s.
fn wait_for(gw: &TestServer, ok: impl Fn(&Counts) -> bool) -> Counts {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = stats(gw);
        if ok(&s.counts) {
            return s.counts;
        }
        assert!(Instant::now() < deadline, "{s:#?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_verified_backend_is_reached_over_pooled_tls_connections() {
    let pki = Pki::new();
    let origin = Origin::start("o");
    let b = backend(&pki, &origin, "");
    let gw = front(
        tls_addr(&b),
        &format!(
            "{{ ca = \"{}\", server_name = \"backend.example\" }}",
            ca(&pki)
        ),
        "",
    );
    let mut c = gw.client();
    for i in 0..5 {
        let r = c.get(&format!("/prod/echo?i={i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        // The backend saw a TLS request: it says https to the origin.
        let h = echo_headers(&r.text());
        assert_eq!(header_values(&h, "x-forwarded-proto"), ["https"], "{h:?}");
    }
    // One connection, handshaken once, reused for the other four.
    let counts = wait_for(&gw, |c| c.responses(2) == 5);
    assert_eq!(counts.reused, 4, "{counts:#?}");
    assert!(FailReason::ALL.iter().all(|&r| counts.failures(r) == 0));
}

#[test]
fn an_ip_address_target_is_verified_against_the_certificates_addresses() {
    let pki = Pki::new();
    let origin = Origin::start("o");
    let b = backend(&pki, &origin, "");
    // No server_name: the target's host, 127.0.0.1, is the name checked.
    let gw = front(tls_addr(&b), &format!("{{ ca = \"{}\" }}", ca(&pki)), "");
    let r = gw.client().get("/prod/echo");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn refused_certificates_and_a_plain_backend_give_502_with_the_reason() {
    let pki = Pki::new();
    let other = Pki::new();
    let origin = Origin::start("o");
    let b = backend(&pki, &origin, "");
    let cases = [
        // Signed by a CA the gateway does not trust.
        (
            tls_addr(&b),
            format!(
                "{{ ca = \"{}\", server_name = \"backend.example\" }}",
                ca(&other)
            ),
            FailReason::TlsCertificate,
        ),
        // Trusted, but not for this name.
        (
            tls_addr(&b),
            format!(
                "{{ ca = \"{}\", server_name = \"other.example\" }}",
                ca(&pki)
            ),
            FailReason::TlsCertificate,
        ),
        // Not TLS at all: the backend's plain listener answers the
        // ClientHello with an HTTP 400.
        (
            b.addr(),
            format!("{{ ca = \"{}\" }}", ca(&pki)),
            FailReason::TlsHandshake,
        ),
    ];
    for (target, tls, reason) in cases {
        let gw = front(target, &tls, "");
        let mut c = gw.client();
        for _ in 0..2 {
            let r = c.get("/prod/echo");
            r.assert_gateway_error(502, INTERNAL);
        }
        let counts = wait_for(&gw, |c| c.failures(reason) == 2);
        assert!(
            FailReason::ALL
                .iter()
                .all(|&r| r == reason || counts.failures(r) == 0),
            "{tls}: {counts:#?}"
        );
        assert_eq!(counts.requests, 2);
    }
    // Nothing reached the origin.
    assert_eq!(origin.count(), 0);
}

#[test]
fn verify_false_accepts_an_untrusted_certificate() {
    let pki = Pki::new();
    let other = Pki::new();
    let origin = Origin::start("o");
    let b = backend(&pki, &origin, "");
    let gw = front(
        tls_addr(&b),
        &format!(
            "{{ ca = \"{}\", verify = false, server_name = \"nobody.example\" }}",
            ca(&other)
        ),
        "",
    );
    let r = gw.client().get("/prod/echo");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The backend asks for a client certificate (mutual TLS) and forwards its
/// subject to the origin; with `client_certificate` the gateway presents
/// one, without it the backend answers 403.
#[test]
fn a_client_certificate_is_presented_to_a_backend_that_asks() {
    let pki = Pki::new();
    let origin = Origin::start("o");
    let clients = client_ca(&pki, "gateways");
    let b = backend(
        &pki,
        &origin,
        &format!(
            "client_ca = \"{}\"\nclient_cert_headers = {{ subject = \"X-Client-Subject\" }}",
            pki.dir.join("gateways.pem").display()
        ),
    );
    let (chain, key) = client_cert_files(&pki, &clients, "edge-gateway");
    let with = front(
        tls_addr(&b),
        &format!(
            "{{ ca = \"{}\", server_name = \"backend.example\", client_certificate = {{ chain = \"{}\", key = \"{}\" }} }}",
            ca(&pki),
            chain.display(),
            key.display()
        ),
        "",
    );
    let r = with.client().get("/prod/echo");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        header_values(&echo_headers(&r.text()), "x-client-subject"),
        ["CN=edge-gateway"]
    );

    let without = front(
        tls_addr(&b),
        &format!(
            "{{ ca = \"{}\", server_name = \"backend.example\" }}",
            ca(&pki)
        ),
        "",
    );
    let r = without.client().get("/prod/echo");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
}

/// A WebSocket from a plain client through an HTTPS backend: the front
/// gateway tunnels plain ↔ TLS, the backend gateway TLS ↔ plain, and the
/// origin echoes.
#[test]
fn websocket_upgrades_reach_an_https_backend() {
    use support::ws::{masked_frame, upgrade_request, ws_accept};
    let pki = Pki::new();
    let origin = Origin::start("o");
    let b = backend(&pki, &origin, "");
    let gw = front(
        tls_addr(&b),
        &format!(
            "{{ ca = \"{}\", server_name = \"backend.example\" }}",
            ca(&pki)
        ),
        "",
    );
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let mut c = gw.client();
    let r = c.request(upgrade_request("/prod/ws", "t", key));
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some(ws_accept(key).as_str())
    );
    for (i, text) in ["one", "two"].iter().enumerate() {
        c.send(masked_frame(0x1, text.as_bytes(), [4, 3, 2, i as u8]));
        let mut want = vec![0x81, text.len() as u8];
        want.extend_from_slice(text.as_bytes());
        assert_eq!(c.read_exact_bytes(want.len()), want);
    }
    c.send(masked_frame(0x8, &1000u16.to_be_bytes(), [9, 8, 7, 6]));
    assert_eq!(c.read_exact_bytes(4), [0x88, 2, 0x03, 0xE8]);
    c.assert_closed();
}

/// What [`scripted_backend`] does after each response.
#[derive(Clone, Copy)]
enum AfterResponse {
    /// Refresh its keys: a TLS 1.3 KeyUpdate reaches the gateway's
    /// connection while it sits idle in the pool.
    Rekey,
    /// Send close_notify and close, as a server whose keep-alive timeout
    /// ran out does.
    Close,
}

/// A TLS backend of its own (rustls, one thread per connection) that
/// answers every request `200 rekeyed`, then does `after`. Counts the
/// connections and requests it got.
fn scripted_backend(
    pki: &Pki,
    after: AfterResponse,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (chain, key) = pki.leaf("rekeying", &["backend.example"]);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&chain)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (conns, reqs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, r) = (conns.clone(), reqs.clone());
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let (config, r) = (config.clone(), r.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut s = rustls::StreamOwned::new(conn, tcp);
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        r.fetch_add(1, Ordering::SeqCst);
                        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nrekeyed";
                        if s.write_all(reply).and_then(|()| s.flush()).is_err() {
                            return;
                        }
                        match after {
                            AfterResponse::Rekey => s.conn.refresh_traffic_keys().unwrap(),
                            AfterResponse::Close => s.conn.send_close_notify(),
                        }
                        while s.conn.wants_write() {
                            if s.conn.write_tls(&mut s.sock).is_err() {
                                return;
                            }
                        }
                        if let AfterResponse::Close = after {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, conns, reqs)
}

#[test]
fn a_key_update_that_arrives_while_idle_is_taken_in_and_the_connection_reused() {
    let pki = Pki::new();
    let (addr, conns, reqs) = scripted_backend(&pki, AfterResponse::Rekey);
    let gw = front(
        addr,
        &format!(
            "{{ ca = \"{}\", server_name = \"backend.example\" }}",
            ca(&pki)
        ),
        "",
    );
    let mut c = gw.client();
    for _ in 0..3 {
        let r = c.get("/prod/echo");
        assert_eq!((r.status, r.text().as_str()), (200, "rekeyed"));
        // Let the KeyUpdate reach the idle connection.
        std::thread::sleep(Duration::from_millis(150));
    }
    let counts = wait_for(&gw, |c| c.responses(2) == 3);
    assert_eq!(counts.reused, 2, "{counts:#?}");
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    assert_eq!(reqs.load(Ordering::SeqCst), 3);
}

/// A backend that closes an idle connection (its keep-alive timeout)
/// sends close_notify; the pool notices and the next request opens a new
/// connection instead of failing or being retried.
#[test]
fn a_connection_the_backend_closed_while_idle_is_not_used() {
    let pki = Pki::new();
    let (addr, conns, reqs) = scripted_backend(&pki, AfterResponse::Close);
    let gw = front(
        addr,
        &format!(
            "{{ ca = \"{}\", server_name = \"backend.example\" }}",
            ca(&pki)
        ),
        "",
    );
    let mut c = gw.client();
    for _ in 0..3 {
        let r = c.get("/prod/echo");
        assert_eq!((r.status, r.text().as_str()), (200, "rekeyed"));
        // Let the close_notify reach the idle connection.
        std::thread::sleep(Duration::from_millis(150));
    }
    let counts = wait_for(&gw, |c| c.responses(2) == 3);
    // Neither reused nor retried: each closed connection was left alone.
    assert_eq!((counts.reused, counts.stale_retries), (0, 0), "{counts:#?}");
    assert!(FailReason::ALL.iter().all(|&r| counts.failures(r) == 0));
    assert_eq!(conns.load(Ordering::SeqCst), 3);
    assert_eq!(reqs.load(Ordering::SeqCst), 3);
}

/// Active health checks speak TLS to an HTTPS group: a backend whose
/// certificate the gateway would refuse fails them and leaves rotation.
#[test]
fn health_checks_go_over_tls_and_verify_the_certificate() {
    let pki = Pki::new();
    let other = Pki::new();
    let origin = Origin::start("o");
    let b = backend(&pki, &origin, "");
    let check = "[upstream.health_check]\npath = \"/prod/health\"\ninterval = \"300ms\"\n\
                 timeout = \"250ms\"\nunhealthy_threshold = 1\nhealthy_threshold = 1";
    let good = front(
        tls_addr(&b),
        &format!(
            "{{ ca = \"{}\", server_name = \"backend.example\" }}",
            ca(&pki)
        ),
        check,
    );
    let bad = front(
        tls_addr(&b),
        &format!(
            "{{ ca = \"{}\", server_name = \"backend.example\" }}",
            ca(&other)
        ),
        check,
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(good.client().get("/prod/echo").status, 200);
    assert!(stats(&good).health == ringgate::upstream::stats::HealthState::Healthy);
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats(&bad).health != ringgate::upstream::stats::HealthState::Unhealthy {
        assert!(Instant::now() < deadline, "{:#?}", stats(&bad));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Out of rotation: no target to try, a network error.
    bad.client().get("/prod/echo").assert_gateway_error(
        504,
        r#"{"message": "Network error communicating with endpoint"}"#,
    );
}

/// An `https://host:port` uri naming no upstream is verified against the
/// system's CA certificates (here `SSL_CERT_FILE`, which rustls-native-certs
/// reads, names the test CA; this is the only test in this binary that
/// uses the system's store, which is read once per process).
#[test]
fn a_literal_https_uri_uses_the_systems_ca_certificates() {
    let pki = Pki::new();
    std::env::set_var("SSL_CERT_FILE", pki.ca_path());
    let origin = Origin::start("o");
    let b = backend(&pki, &origin, "");
    let gw = TestServer::start(&format!(
        "{SERVER}[[api]]\nname = \"f\"\n  [[api.stage]]\n  name = \"prod\"\n\
         [[api.route]]\n  route = \"GET /echo\"\n  [api.route.http_proxy]\n  \
         uri = \"https://{}/prod/echo\"\n",
        tls_addr(&b)
    ));
    let r = gw.client().get("/prod/echo");
    assert_eq!(r.status, 200, "{}", r.text());
    let groups: Vec<String> = gw
        .server()
        .snapshot()
        .upstreams
        .stats()
        .into_iter()
        .map(|t| t.group)
        .collect();
    assert_eq!(groups, [format!("https://{}", tls_addr(&b))]);
}

/// Configuration errors name the key and the fix.
#[test]
fn bad_upstream_tls_settings_fail_the_configuration() {
    let pki = Pki::new();
    let missing = pki.dir.join("missing.pem");
    let not_pem = pki.dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let (chain, _) = pki.leaf("x", &["x.example"]);
    let (_, other_key) = pki.leaf("y", &["y.example"]);
    let route = |uri: &str| {
        format!(
            "[[api]]\nname = \"f\"\n  [[api.stage]]\n  name = \"prod\"\n[[api.route]]\n  \
             route = \"GET /echo\"\n  [api.route.http_proxy]\n  uri = \"{uri}\"\n"
        )
    };
    let upstream = |tls: &str| {
        format!("[[upstream]]\nname = \"secure\"\ntargets = [\"127.0.0.1:9\"]\n{tls}\n\n")
    };
    let p = |p: &Path| p.display().to_string();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            upstream(&format!("tls = {{ ca = \"{}\" }}", p(&missing))) + &route("https://secure/"),
            "upstream[0].tls.ca",
            "cannot read",
        ),
        (
            upstream(&format!("tls = {{ ca = \"{}\" }}", p(&not_pem))) + &route("https://secure/"),
            "upstream[0].tls.ca",
            "no CERTIFICATE",
        ),
        (
            upstream(&format!(
                "tls = {{ ca = \"webpki\", client_certificate = {{ chain = \"{}\", key = \"{}\" }} }}",
                p(&chain),
                p(&other_key)
            )) + &route("https://secure/"),
            "upstream[0].tls.client_certificate.key",
            "does not go with",
        ),
        (
            upstream("tls = { ca = \"webpki\", server_name = \"*.example\" }")
                + &route("https://secure/"),
            "upstream[0].tls.server_name",
            "not a DNS name",
        ),
        (
            upstream("tls = { ca = \"webpki\", min_version = \"1.1\" }") + &route("https://secure/"),
            "upstream[0].tls.min_version",
            "1.1",
        ),
        (
            upstream("tls = { ca = \"webpki\", verfy = false }") + &route("https://secure/"),
            "verfy",
            "unknown field",
        ),
        (
            upstream("") + &route("https://secure/"),
            "uri",
            "has no [upstream.tls]",
        ),
        (
            upstream("tls = { ca = \"webpki\" }") + &route("http://secure/"),
            "uri",
            "speaks TLS",
        ),
    ];
    for (toml, key, problem) in cases {
        let e = ringgate::config::parse(&toml, "t.toml").expect_err(&toml);
        let text = e.to_string();
        assert!(
            text.contains(key) && text.contains(problem),
            "{toml}\n---\n{text}"
        );
    }
}

/// A hostile HTTPS backend (property test, a fixed seed): to each
/// connection it answers the gateway's ClientHello with arbitrary bytes, or
/// with the flight a real rustls server makes for that very ClientHello,
/// bytes flipped, cut short or followed by junk, then closes. Every request
/// gets 502 or 504 (never a hang or a panic), and the gateway still serves.
#[test]
fn hostile_bytes_from_an_https_backend_give_502_or_504_and_nothing_else() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Mutex;

    /// What the backend sends: arbitrary bytes, or (flips, cut, junk)
    /// applied to the real server flight.
    #[derive(Clone)]
    enum Reply {
        Raw(Vec<u8>),
        Mutated(Vec<(usize, u8)>, usize, Vec<u8>),
    }
    let pki = Pki::new();
    let (chain, key) = pki.leaf("hostile", &["backend.example"]);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&chain)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let server_config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, PrivateKeyDer::from_pem_file(&key).unwrap())
        .unwrap(),
    );
    let reply = Arc::new(Mutex::new(Reply::Raw(Vec::new())));
    // Real server flights made (the mutated cases are not all empty).
    let flights = Arc::new(AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    {
        let (reply, flights) = (reply.clone(), flights.clone());
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(mut tcp) = tcp else { return };
                tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut hello = vec![0u8; 4096];
                let n = tcp.read(&mut hello).unwrap_or(0);
                let bytes = match reply.lock().unwrap().clone() {
                    Reply::Raw(bytes) => bytes,
                    Reply::Mutated(flips, cut, junk) => {
                        let mut conn =
                            rustls::ServerConnection::new(server_config.clone()).unwrap();
                        let mut flight = Vec::new();
                        if conn.read_tls(&mut &hello[..n]).is_ok()
                            && conn.process_new_packets().is_ok()
                        {
                            while conn.wants_write() {
                                conn.write_tls(&mut flight).unwrap();
                            }
                        }
                        if !flight.is_empty() {
                            flights.fetch_add(1, Ordering::Relaxed);
                            for (i, b) in flips {
                                let at = i % flight.len();
                                flight[at] ^= b | 1;
                            }
                            flight.truncate(cut % flight.len() + 1);
                        }
                        flight.extend_from_slice(&junk);
                        flight
                    }
                };
                let _ = tcp.write_all(&bytes);
                let _ = tcp.shutdown(std::net::Shutdown::Both);
            }
        });
    }
    let gw = TestServer::start(&format!(
        "{SERVER}[[upstream]]\nname = \"secure\"\ntargets = [\"{addr}\"]\n\
         tls = {{ ca = \"{}\", server_name = \"backend.example\" }}\n\n\
         [[api]]\nname = \"f\"\n  [[api.stage]]\n  name = \"prod\"\n\
         [[api.route]]\n  route = \"GET /echo\"\n  [api.route.http_proxy]\n  \
         uri = \"https://secure/prod/echo\"\n\
         [[api.route]]\n  route = \"GET /hello\"\n  [api.route.mock]\n  status = 200\n  body = \"hi\"\n",
        ca(&pki)
    ));
    let mut runner = TestRunner::new(Config {
        cases: 32,
        rng_seed: RngSeed::Fixed(0x6261_636b_656e_6473),
        rng_algorithm: RngAlgorithm::ChaCha,
        failure_persistence: None,
        ..Config::default()
    });
    let ask = |r: Reply| {
        *reply.lock().unwrap() = r;
        let resp = gw.client().get("/prod/echo");
        assert!(
            resp.status == 502 || resp.status == 504,
            "{} {}",
            resp.status,
            resp.text()
        );
    };
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..600), |bytes| {
            ask(Reply::Raw(bytes));
            Ok(())
        })
        .unwrap();
    let mutated = (
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        any::<usize>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    runner
        .run(&mutated, |(flips, cut, junk)| {
            ask(Reply::Mutated(flips, cut, junk));
            Ok(())
        })
        .unwrap();
    assert_eq!(
        gw.server()
            .counters()
            .connection_panics
            .load(Ordering::Relaxed),
        0
    );
    assert_eq!(gw.client().get("/prod/hello").status, 200);
}
