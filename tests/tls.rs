//! TLS termination, end to end: an in-process gateway with `listen_tls`,
//! certificates made by rcgen under a test CA, and a real rustls client
//! (and `curl --cacert` where curl is installed) on loopback.
//!
//! SNI picks the certificate; a Host for another certificate gets 421;
//! TLS 1.2 is refused with `min_version = "1.3"`; ALPN says `http/1.1`;
//! keep-alive and pipelined requests work over one TLS connection; a
//! plain-HTTP request on the TLS port and a client stalling mid-handshake
//! are closed; bad certificate files fail the configuration with the key.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringgate::admin::client::{request, Endpoint};
use ringgate::server::StartOptions;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use support::pki::{client_ca, client_cert, Pki};
use support::ws::{masked_frame, upgrade_request, ws_accept};
use support::{echo_headers, header_values, TestServer};

/// Three certificates: `default.example` (the first: the default),
/// `shop.example` and `*.api.example`.
fn gateway(pki: &Pki, extra: &str) -> TestServer {
    gateway_with(pki, extra, "")
}

/// [`gateway`] with `shop_extra` in the `shop.example` certificate's table.
fn gateway_with(pki: &Pki, extra: &str, shop_extra: &str) -> TestServer {
    let (d_chain, d_key) = pki.leaf("default", &["default.example"]);
    let (s_chain, s_key) = pki.leaf("shop", &["shop.example"]);
    let (a_chain, a_key) = pki.leaf("api", &["*.api.example"]);
    let p = |p: &Path| p.display().to_string();
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
workers = 1
pin_workers = false
drain_timeout = "2s"

[limits]
header_read_timeout = "1s"

[state]
dir = "{state}"

[tls]
{extra}

[[tls.certificate]]
chain = "{}"
key = "{}"
hosts = ["default.example"]

[[tls.certificate]]
chain = "{}"
key = "{}"
hosts = ["shop.example"]
{shop_extra}

[[tls.certificate]]
chain = "{}"
key = "{}"
hosts = ["*.api.example"]

[[api]]
name = "shop"

  [[api.stage]]
  name = "prod"

  [[api.route]]
  route = "GET /hello"
  [api.route.mock]
  status = 200
  body = "hello over tls\n"
"#,
        p(&d_chain),
        p(&d_key),
        p(&s_chain),
        p(&s_key),
        p(&a_chain),
        p(&a_key),
        state = p(&pki.dir.join("state")),
    );
    std::fs::create_dir_all(pki.dir.join("state")).unwrap();
    let config = ringgate::config::parse(&toml, "test.toml").unwrap();
    TestServer::start_config(
        config,
        StartOptions {
            admin: true,
            ..StartOptions::default()
        },
    )
}

/// One admin request over the gateway's socket: status and JSON body.
fn admin(pki: &Pki, method: &str, path: &str) -> (u16, serde_json::Value) {
    let socket = Endpoint::Unix(pki.dir.join("state").join("admin.sock"));
    let reply = request(&socket, method, path, None).unwrap();
    (reply.status, serde_json::from_slice(&reply.body).unwrap())
}

fn tls_addr(server: &TestServer) -> SocketAddr {
    server.server().local_addrs()[1]
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects with SNI `sni` and completes the handshake.
fn connect(addr: SocketAddr, config: ClientConfig, sni: &str) -> Tls {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    s
}

/// The names in the certificate the server presented.
fn presented_names(s: &Tls) -> String {
    let certs: &[CertificateDer<'_>] = s.conn.peer_certificates().unwrap();
    // The leaf's DER holds its SAN names as plain ASCII.
    String::from_utf8_lossy(certs[0].as_ref()).into_owned()
}

/// Reads one response (a head and a Content-Length body); returns the
/// status and the body.
fn read_response(s: &mut Tls, buf: &mut Vec<u8>) -> (u16, String, String) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                read_more(s, buf);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            buf.drain(..end + 4 + len);
            let status = head[9..12].parse().unwrap();
            return (status, head, body);
        }
        read_more(s, buf);
    }
}

fn read_more(s: &mut Tls, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 8192];
    let n = s.read(&mut chunk).expect("read");
    assert!(n > 0, "the server closed the connection");
    buf.extend_from_slice(&chunk[..n]);
}

fn get(host: &str) -> String {
    format!("GET /prod/hello HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

#[test]
fn sni_picks_the_certificate_and_requests_are_served() {
    let pki = Pki::new();
    let server = gateway(&pki, "");
    let addr = tls_addr(&server);
    let cfg = || pki.client_config(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    for (sni, want) in [
        ("shop.example", "shop.example"),
        ("eu.api.example", "*.api.example"),
        ("unknown.example", "default.example"),
    ] {
        // rustls verifies the chain against the test CA and the name: an
        // unknown name would fail verification with the default
        // certificate, so that case checks the presented name only.
        if sni == "unknown.example" {
            let mut cfg = cfg();
            cfg.dangerous()
                .set_certificate_verifier(Arc::new(AcceptAny::new()));
            let s = connect(addr, cfg, sni);
            assert!(presented_names(&s).contains(want), "{sni}");
            continue;
        }
        let mut s = connect(addr, cfg(), sni);
        assert!(presented_names(&s).contains(want), "{sni}");
        assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut buf = Vec::new();
        for _ in 0..3 {
            s.write_all(get(sni).as_bytes()).unwrap();
            let (status, _, body) = read_response(&mut s, &mut buf);
            assert_eq!((status, body.as_str()), (200, "hello over tls\n"), "{sni}");
        }
        // Pipelined: three requests in one write, three answers in order.
        s.write_all(get(sni).repeat(3).as_bytes()).unwrap();
        for _ in 0..3 {
            assert_eq!(read_response(&mut s, &mut buf).0, 200);
        }
    }
}

#[test]
fn a_host_for_another_certificate_gets_421_and_the_connection_closes() {
    let pki = Pki::new();
    let server = gateway(&pki, "");
    let addr = tls_addr(&server);
    let cfg = || pki.client_config(&[&rustls::version::TLS13]);
    let mut s = connect(addr, cfg(), "shop.example");
    let mut buf = Vec::new();
    // The same name with a port, and another case: the same certificate.
    s.write_all(get("Shop.Example:8443").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut buf).0, 200);
    s.write_all(get("eu.api.example").as_bytes()).unwrap();
    let (status, head, body) = read_response(&mut s, &mut buf);
    assert_eq!(status, 421, "{head}");
    assert_eq!(body, r#"{"message":"Misdirected Request"}"#);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    // Two names of one wildcard certificate share it: no 421.
    let mut s = connect(addr, cfg(), "eu.api.example");
    s.write_all(get("us.api.example").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut Vec::new()).0, 200);
}

#[test]
fn min_version_1_3_refuses_tls_1_2() {
    let pki = Pki::new();
    let server = gateway(&pki, "min_version = \"1.3\"");
    let addr = tls_addr(&server);
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let config = pki.client_config(&[&rustls::version::TLS12]);
    let conn = ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("shop.example").unwrap(),
    )
    .unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    let mut failed = false;
    for _ in 0..10 {
        if s.conn.complete_io(&mut s.sock).is_err() {
            failed = true;
            break;
        }
        if !s.conn.is_handshaking() {
            break;
        }
    }
    assert!(failed, "a TLS 1.2-only client completed a handshake");
    // TLS 1.3 works.
    let s = connect(
        addr,
        pki.client_config(&[&rustls::version::TLS13]),
        "shop.example",
    );
    assert_eq!(
        s.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[test]
fn plain_http_and_a_stalled_handshake_are_closed() {
    let pki = Pki::new();
    let server = gateway(&pki, "");
    let addr = tls_addr(&server);
    // Plain HTTP on the TLS port: an alert at most, then the end.
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"GET /prod/hello HTTP/1.1\r\nHost: shop.example\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    tcp.read_to_end(&mut got).expect("closed, not timed out");
    assert!(!got.starts_with(b"HTTP/"), "answered in plain text");
    // A ClientHello's first bytes and then nothing: dropped at the
    // header timeout (1 s here).
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    tcp.read_to_end(&mut got).expect("closed, not timed out");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // The listener still serves.
    let s = connect(
        addr,
        pki.client_config(&[&rustls::version::TLS13]),
        "shop.example",
    );
    assert!(!s.conn.is_handshaking());
}

#[test]
fn curl_with_the_test_ca() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl is not installed: skipped");
        return;
    }
    let pki = Pki::new();
    let server = gateway(&pki, "");
    let addr = tls_addr(&server);
    let url = format!("https://shop.example:{}/prod/hello", addr.port());
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http1.1", "--cacert"])
        .arg(pki.ca_path())
        .arg("--resolve")
        .arg(format!("shop.example:{}:127.0.0.1", addr.port()))
        .args([&url, &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two URLs, one connection reused: both answered.
    assert_eq!(stdout, "hello over tls\nhello over tls\n");
}

#[test]
fn bad_certificate_files_fail_the_configuration_with_the_key() {
    let pki = Pki::new();
    let (chain, key) = pki.leaf("shop", &["shop.example"]);
    let (_, other_key) = pki.leaf("other", &["other.example"]);
    let p = |p: &Path| p.display().to_string();
    let config = |chain: &str, key: &str, hosts: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\n\n\
             [[tls.certificate]]\nchain = \"{chain}\"\nkey = \"{key}\"\nhosts = [{hosts}]\n"
        )
    };
    let cases = [
        (
            config("/nonexistent/c.pem", &p(&key), ""),
            "tls.certificate[0].chain",
            "cannot read",
        ),
        (
            config(&p(&chain), &p(&other_key), ""),
            "tls.certificate[0].key",
            "does not go with the certificate",
        ),
        (
            config(&p(&key), &p(&key), ""),
            "tls.certificate[0].chain",
            "no CERTIFICATE",
        ),
        (
            config(&p(&chain), &p(&key), "\"api.example\""),
            "tls.certificate[0].hosts[0]",
            "not valid for",
        ),
        (
            config(&p(&chain), &p(&key), "\"not a name\""),
            "tls.certificate[0].hosts[0]",
            "not a host name",
        ),
    ];
    for (text, key, what) in cases {
        let e = ringgate::config::parse(&text, "test.toml").expect_err(&text);
        let shown = e.to_string();
        assert!(shown.contains(key) && shown.contains(what), "{shown}");
    }
    // A truststore that is not one.
    let text = config(&p(&chain), &p(&key), "").replace(
        "hosts = []",
        &format!("hosts = []\nclient_ca = \"{}\"", p(&key)),
    );
    let e = ringgate::config::parse(&text, "test.toml").unwrap_err();
    assert!(
        e.to_string().contains("tls.certificate[0].client_ca")
            && e.to_string().contains("no CERTIFICATE"),
        "{e}"
    );
    // client_cert_headers without client_ca, and with an unknown field.
    let text = config(&p(&chain), &p(&key), "").replace(
        "hosts = []",
        "hosts = []\nclient_cert_headers = { subject = \"X-S\" }",
    );
    let e = ringgate::config::parse(&text, "test.toml").unwrap_err();
    assert!(e.to_string().contains("needs client_ca"), "{e}");
    let text = config(&p(&chain), &p(&key), "").replace(
        "hosts = []",
        &format!(
            "hosts = []\nclient_ca = \"{}\"\nclient_cert_headers = {{ email = \"X-E\" }}",
            pki.ca_path().display()
        ),
    );
    let e = ringgate::config::parse(&text, "test.toml").unwrap_err();
    assert!(
        e.to_string()
            .contains("tls.certificate[0].client_cert_headers.email")
            && e.to_string().contains("not a certificate field"),
        "{e}"
    );
    // listen_tls without [tls], and [tls] without listen_tls.
    let e = ringgate::config::parse("[server]\nlisten_tls = [\"127.0.0.1:0\"]\n", "test.toml")
        .unwrap_err();
    assert!(e.to_string().contains("[tls]"), "{e}");
    let e = ringgate::config::parse(
        &config(&p(&chain), &p(&key), "").replace("listen_tls = [\"127.0.0.1:0\"]\n", ""),
        "test.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("listen_tls"), "{e}");
}

/// A verifier that accepts any certificate: only to look at what the
/// server presents for a name none of its certificates has.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl AcceptAny {
    fn new() -> AcceptAny {
        AcceptAny(Arc::new(rustls::crypto::ring::default_provider()))
    }
}

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Runs `openssl s_client` against `addr` with `args`, sending one
/// request and waiting for the server to close (so session tickets are
/// read); its output.
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(["-ign_eof"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sni = args
        .windows(2)
        .find(|w| w[0] == "-servername")
        .map_or("default.example", |w| w[1]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!("GET /prod/hello HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `openssl s_client`, a client other than rustls: TLS 1.3 by default, the
/// chain of the SNI name's certificate, and resumption of a saved session
/// on a second connection, by ticket (TLS 1.3) and by ticket or id (1.2).
#[test]
fn openssl_sees_tls_1_3_the_right_chain_and_resumption() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("openssl is not installed: skipped");
        return;
    }
    let pki = Pki::new();
    let server = gateway(&pki, "");
    let addr = tls_addr(&server);
    for (sni, cn) in [("shop.example", "CN = shop"), ("x.api.example", "CN = api")] {
        let out = s_client(addr, &["-servername", sni, "-showcerts"]);
        assert!(out.contains("TLSv1.3"), "{out}");
        assert!(out.contains(&format!("s:{cn}")), "{sni}: {out}");
        assert!(out.contains("i:CN = ringgate test CA"), "{out}");
        assert!(out.contains("hello over tls"), "{out}");
    }
    for version in ["-tls1_3", "-tls1_2"] {
        let sess = pki.dir.join(format!("session{version}.pem"));
        let sess = sess.to_str().unwrap();
        let first = s_client(
            addr,
            &["-servername", "shop.example", version, "-sess_out", sess],
        );
        assert!(first.contains("New,"), "{first}");
        let second = s_client(
            addr,
            &["-servername", "shop.example", version, "-sess_in", sess],
        );
        assert!(second.contains("Reused,"), "{version}: {second}");
        assert!(second.contains("hello over tls"), "{second}");
    }
}

/// A client config that never resumes: every handshake is a full one and
/// shows the certificate served now.
fn fresh(pki: &Pki) -> ClientConfig {
    let mut c = pki.client_config(&[&rustls::version::TLS13]);
    c.resumption = rustls::client::Resumption::disabled();
    c
}

#[test]
fn certificates_reload_while_a_client_loop_runs() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let pki = Pki::new();
    let server = gateway(&pki, "watch = \"0s\"");
    let addr = tls_addr(&server);
    // A keep-alive connection made before the reload.
    let mut before = connect(addr, fresh(&pki), "shop.example");
    let mut before_buf = Vec::new();
    before.write_all(get("shop.example").as_bytes()).unwrap();
    assert_eq!(read_response(&mut before, &mut before_buf).0, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, new_seen) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let looper = {
        let (stop, ok, failed, new_seen) =
            (stop.clone(), ok.clone(), failed.clone(), new_seen.clone());
        let config = fresh(&pki);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut s = connect(addr, config.clone(), "shop.example");
                    let renewed = presented_names(&s).contains("shop-v2");
                    s.write_all(get("shop.example").as_bytes()).unwrap();
                    (read_response(&mut s, &mut Vec::new()).0, renewed)
                }));
                match attempt {
                    Ok((200, renewed)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if renewed {
                            new_seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    while ok.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(10));
    }
    // New files in place, then the reload.
    pki.leaf_named("shop", "shop-v2", &["shop.example"]);
    let (status, body) = admin(&pki, "POST", "/tls/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body["certificates"][1]["subject"]
        .as_str()
        .unwrap()
        .contains("shop-v2"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while new_seen.load(Ordering::Relaxed) < 20 {
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    looper.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the reload"
    );
    // The connection made before goes on.
    before.write_all(get("shop.example").as_bytes()).unwrap();
    assert_eq!(read_response(&mut before, &mut before_buf).0, 200);

    // A key that does not go with the certificate: 409, nothing changes.
    let (_, other_key) = pki.leaf("other", &["other.example"]);
    std::fs::copy(&other_key, pki.dir.join("shop.key")).unwrap();
    let (status, body) = admin(&pki, "POST", "/tls/reload");
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("does not go with"), "{body}");
    let s = connect(addr, fresh(&pki), "shop.example");
    assert!(presented_names(&s).contains("shop-v2"));

    // The status and the metrics show each certificate's expiry.
    let (status, body) = admin(&pki, "GET", "/tls");
    assert_eq!(status, 200);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for c in body["certificates"].as_array().unwrap() {
        assert!(c["not_after"].as_i64().unwrap() > now, "{c}");
        assert!(c["not_before"].as_i64().unwrap() <= now, "{c}");
        assert!(
            c["issuer"].as_str().unwrap().contains("ringgate test CA"),
            "{c}"
        );
    }
    let (_, status_body) = admin(&pki, "GET", "/status");
    assert_eq!(
        status_body["tls"].as_array().unwrap().len(),
        3,
        "{status_body}"
    );
    let socket = Endpoint::Unix(pki.dir.join("state").join("admin.sock"));
    let metrics = request(&socket, "GET", "/metrics", None).unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("ringgate_tls_certificate_not_after_seconds{")
            && text.contains("ringgate_tls_reloads_total{result=\"ok\"} 1")
            && text.contains("ringgate_tls_reloads_total{result=\"failed\"} 1"),
        "{text}"
    );
}

#[test]
fn a_changed_file_is_reloaded_by_the_watcher() {
    let pki = Pki::new();
    let server = gateway(&pki, "watch = \"200ms\"");
    let addr = tls_addr(&server);
    assert!(!presented_names(&connect(addr, fresh(&pki), "x.api.example")).contains("api-v2"));
    pki.leaf_named("api", "api-v2", &["*.api.example"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !presented_names(&connect(addr, fresh(&pki), "x.api.example")).contains("api-v2") {
        assert!(Instant::now() < deadline, "the watcher did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The binary: `ringgate check` describes the TLS listener, the start
/// line marks it, and SIGHUP reloads the certificates from their files.
#[test]
fn the_binary_reloads_certificates_on_sighup() {
    let pki = Pki::new();
    let (chain, key) = pki.leaf("shop", &["shop.example"]);
    // A port for the TLS listener (the binary reports its first listener).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:{port}\"]\nworkers = 1\n\
         pin_workers = false\n\n[tls]\nwatch = \"0s\"\n\n[[tls.certificate]]\nchain = \"{}\"\n\
         key = \"{}\"\nhosts = [\"shop.example\"]\n\n[[api]]\nname = \"shop\"\n  [[api.stage]]\n  \
         name = \"prod\"\n  [[api.route]]\n  route = \"GET /hello\"\n  [api.route.mock]\n  \
         status = 200\n  body = \"hello over tls\\n\"\n",
        chain.display(),
        key.display()
    );
    let mut server = support::BinaryServer::start(&toml);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut s = connect(addr, fresh(&pki), "shop.example");
    s.write_all(get("shop.example").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut Vec::new()).0, 200);
    assert!(!presented_names(&s).contains("shop-v2"));
    pki.leaf_named("shop", "shop-v2", &["shop.example"]);
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !presented_names(&connect(addr, fresh(&pki), "shop.example")).contains("shop-v2") {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificates"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = server.stderr();
    assert!(err.contains("TLS: 1 certificate(s) reloaded"), "{err}");
    let (status, out, _) =
        support::run_binary(&["check", "--config", server.config_path().to_str().unwrap()]);
    assert!(status.success());
    assert!(
        out.contains(&format!(
            "listen_tls: 127.0.0.1:{port}; TLS 1.2 and up; 1 certificate(s)"
        )),
        "{out}"
    );
}

#[test]
fn mutual_tls_accepts_trusted_client_certificates_and_refuses_the_rest() {
    let pki = Pki::new();
    let clients = client_ca(&pki, "clients");
    let strangers = client_ca(&pki, "strangers");
    let ca_path = pki.dir.join("clients.pem");
    let log = pki.dir.join("access.log");
    let format = r#"{ "id":"$context.requestId", "status":"$context.status", "subject":"$context.identity.clientCert.subjectDN", "issuer":"$context.identity.clientCert.issuerDN", "serial":"$context.identity.clientCert.serialNumber", "not_before":"$context.identity.clientCert.validity.notBefore", "not_after":"$context.identity.clientCert.validity.notAfter", "pem":"$context.identity.clientCert.clientCertPem" }"#;
    let server = gateway_with(
        &pki,
        "",
        &format!(
            "client_ca = \"{}\"\n\n[access_log]\npath = \"{}\"\nformat = '{format}'\n",
            ca_path.display(),
            log.display()
        ),
    );
    let addr = tls_addr(&server);
    let with_cert = |cert: Option<(
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>| {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots);
        match cert {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        }
    };
    let status = |config: ClientConfig, sni: &str, host: &str| {
        let mut s = connect(addr, config, sni);
        s.write_all(get(host).as_bytes()).unwrap();
        let (status, _, body) = read_response(&mut s, &mut Vec::new());
        (status, body)
    };
    // Trusted and valid: served, on TLS 1.3 and 1.2.
    let good = client_cert(&clients, "alice", (-1, 30));
    assert_eq!(
        status(with_cert(Some(good)), "shop.example", "shop.example").0,
        200
    );
    let bob = client_cert(&clients, "bob", (-1, 30));
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let tls12 =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(bob.0, bob.1)
            .unwrap();
    assert_eq!(status(tls12, "shop.example", "shop.example").0, 200);
    // Missing, untrusted, expired, not yet valid: 403 Forbidden.
    let forbidden = (403, r#"{"message":"Forbidden"}"#.to_string());
    assert_eq!(
        status(with_cert(None), "shop.example", "shop.example"),
        forbidden
    );
    let stranger = client_cert(&strangers, "mallory", (-1, 30));
    assert_eq!(
        status(with_cert(Some(stranger)), "shop.example", "shop.example"),
        forbidden
    );
    let expired = client_cert(&clients, "old", (-30, -1));
    assert_eq!(
        status(with_cert(Some(expired)), "shop.example", "shop.example"),
        forbidden
    );
    let early = client_cert(&clients, "early", (2, 30));
    assert_eq!(
        status(with_cert(Some(early)), "shop.example", "shop.example"),
        forbidden
    );
    // A host without client_ca asks for nothing; and a connection made
    // for it cannot be used for the mutual-TLS host (421).
    assert_eq!(
        status(with_cert(None), "x.api.example", "x.api.example").0,
        200
    );
    assert_eq!(
        status(with_cert(None), "x.api.example", "shop.example").0,
        421
    );

    // The access log has each connection's client certificate (JSON lines,
    // read with serde_json), `-` where there was none.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        // alice, bob, four refused, the other host, the 421.
        if lines.len() >= 8 {
            break lines;
        }
        assert!(Instant::now() < deadline, "{} lines logged", lines.len());
        std::thread::sleep(Duration::from_millis(100));
    };
    let alice = &lines[0];
    assert_eq!(alice["status"], "200");
    assert_eq!(alice["subject"], "CN=alice");
    assert_eq!(alice["issuer"], "CN=clients");
    assert!(alice["pem"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(
        alice["not_after"].as_str().unwrap().ends_with(" GMT"),
        "{alice}"
    );
    assert!(alice["serial"].as_str().unwrap().len() >= 2);
    let refused: Vec<_> = lines.iter().filter(|l| l["status"] == "403").collect();
    assert_eq!(refused.len(), 4);
    assert!(
        refused.iter().any(|l| l["subject"] == "-"),
        "the missing one"
    );
    assert!(refused.iter().any(|l| l["subject"] == "CN=mallory"));
    assert!(lines.iter().any(|l| l["status"] == "421"));
}

#[test]
fn plain_http_for_listed_hosts_is_redirected_to_https() {
    let pki = Pki::new();
    let server = gateway(
        &pki,
        "redirect_hosts = [\"shop.example\", \"*.api.example\"]",
    );
    let tls_port = tls_addr(&server).port();
    let mut c = server.client();
    for (host, want) in [
        (
            "shop.example",
            format!("https://shop.example:{tls_port}/prod/hello?a=1"),
        ),
        (
            "Eu.Api.Example:8080",
            format!("https://eu.api.example:{tls_port}/prod/hello?a=1"),
        ),
    ] {
        let r = c.request(format!(
            "GET /prod/hello?a=1 HTTP/1.1\r\nHost: {host}\r\n\r\n"
        ));
        assert_eq!(r.status, 308, "{}", r.text());
        assert_eq!(r.header("location"), Some(want.as_str()));
        assert_eq!(r.header("content-length"), Some("0"));
    }
    // The connection stays open; another host, and a request with a body,
    // are served where they are.
    let r = c.request("GET /prod/hello HTTP/1.1\r\nHost: default.example\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "hello over tls\n"));
    let r =
        c.request("POST /prod/hello HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 2\r\n\r\nhi");
    assert_ne!(r.status, 308);
    // The Location works.
    let mut s = connect(tls_addr(&server), fresh(&pki), "shop.example");
    s.write_all(get("shop.example").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut Vec::new()).0, 200);
}

/// A request proxied from a TLS connection tells the backend so:
/// `X-Forwarded-Proto: https` and the TLS port, whatever the client sent.
#[test]
fn proxied_requests_over_tls_say_https_to_the_backend() {
    let pki = Pki::new();
    let origin = support::Origin::start("o");
    let (chain, key) = pki.leaf("shop", &["shop.example"]);
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\nworkers = 1\n\
         pin_workers = false\n\n[tls]\nwatch = \"0s\"\n\n[[tls.certificate]]\nchain = \"{}\"\n\
         key = \"{}\"\nhosts = [\"shop.example\"]\n\n[[api]]\nname = \"shop\"\n  [[api.stage]]\n  \
         name = \"prod\"\n  [[api.route]]\n  route = \"GET /echo\"\n  [api.route.http_proxy]\n  \
         uri = \"http://{}/echo\"\n",
        chain.display(),
        key.display(),
        origin.addr()
    );
    let server = TestServer::start(&toml);
    let addr = tls_addr(&server);
    let mut s = connect(addr, fresh(&pki), "shop.example");
    s.write_all(
        b"GET /prod/echo HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-Proto: http\r\n\r\n",
    )
    .unwrap();
    let (status, _, body) = read_response(&mut s, &mut Vec::new());
    assert_eq!(status, 200, "{body}");
    let headers = echo_headers(&body);
    let get = |n: &str| header_values(&headers, n);
    assert_eq!(get("x-forwarded-proto"), ["https"], "{body}");
    assert_eq!(get("x-forwarded-port"), [addr.port().to_string().as_str()]);
}

/// A WebSocket over TLS: the upgrade reaches the (plain) origin, its 101
/// comes back, and frames are relayed both ways through the TLS stream
/// until the close handshake ends the connection.
#[test]
fn websocket_upgrades_are_tunnelled_over_tls() {
    let pki = Pki::new();
    let origin = support::Origin::start("o");
    let (chain, key) = pki.leaf("shop", &["shop.example"]);
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\nworkers = 1\n\
         pin_workers = false\n\n[tls]\nwatch = \"0s\"\n\n[[tls.certificate]]\nchain = \"{}\"\n\
         key = \"{}\"\nhosts = [\"shop.example\"]\n\n[[api]]\nname = \"shop\"\n  [[api.stage]]\n  \
         name = \"prod\"\n  [[api.route]]\n  route = \"GET /ws\"\n  [api.route.http_proxy]\n  \
         uri = \"http://{}/ws\"\n  allow_upgrade = true\n",
        chain.display(),
        key.display(),
        origin.addr()
    );
    let server = TestServer::start(&toml);
    let mut s = connect(tls_addr(&server), fresh(&pki), "shop.example");
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    s.write_all(upgrade_request("/prod/ws", "shop.example", key).as_bytes())
        .unwrap();
    let mut buf = Vec::new();
    let (status, head, _) = read_response(&mut s, &mut buf);
    assert_eq!(status, 101, "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!(
        "sec-websocket-accept: {}",
        ws_accept(key).to_ascii_lowercase()
    )));
    // Three echoes, one of them sent in two writes (a frame split across
    // TLS records), then the close handshake.
    for (i, text) in ["hello", "over", "tls"].iter().enumerate() {
        let frame = masked_frame(0x1, text.as_bytes(), [1, 2, 3, i as u8]);
        if i == 1 {
            s.write_all(&frame[..3]).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(&frame[3..]).unwrap();
        } else {
            s.write_all(&frame).unwrap();
        }
        let mut want = vec![0x81, text.len() as u8];
        want.extend_from_slice(text.as_bytes());
        while buf.len() < want.len() {
            read_more(&mut s, &mut buf);
        }
        assert_eq!(buf.drain(..want.len()).collect::<Vec<u8>>(), want);
    }
    s.write_all(&masked_frame(0x8, &1000u16.to_be_bytes(), [9, 8, 7, 6]))
        .unwrap();
    while buf.len() < 4 {
        read_more(&mut s, &mut buf);
    }
    assert_eq!(buf[..4], [0x88, 2, 0x03, 0xE8]);
    // The origin closed; the gateway ends the TLS session cleanly.
    let mut rest = Vec::new();
    assert!(s.read_to_end(&mut rest).is_ok(), "no close_notify");
    assert!(rest.is_empty(), "{rest:?}");
}

/// `client_cert_headers`: a verified client certificate's fields reach the
/// backend in the named headers; the same names sent by any client, on
/// any listener, are removed first.
#[test]
fn client_certificate_fields_reach_the_backend_and_cannot_be_forged() {
    let pki = Pki::new();
    let origin = support::Origin::start("o");
    let clients = client_ca(&pki, "clients");
    let (chain, key) = pki.leaf("shop", &["shop.example"]);
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\nworkers = 1\n\
         pin_workers = false\n\n[tls]\nwatch = \"0s\"\n\n[[tls.certificate]]\nchain = \"{}\"\n\
         key = \"{}\"\nhosts = [\"shop.example\"]\nclient_ca = \"{}\"\n\
         client_cert_headers = {{ subject = \"X-Client-Subject\", serial = \"X-Client-Serial\", \
         cert = \"X-Client-Cert\" }}\n\n[[api]]\nname = \"shop\"\n  [[api.stage]]\n  \
         name = \"prod\"\n  [[api.route]]\n  route = \"GET /echo\"\n  [api.route.http_proxy]\n  \
         uri = \"http://{}/echo\"\n",
        chain.display(),
        key.display(),
        pki.dir.join("clients.pem").display(),
        origin.addr()
    );
    let server = TestServer::start(&toml);
    let forged = "X-Client-Subject: CN=forged\r\nx-client-cert: forged\r\n";
    // Over mutual TLS: the verified certificate's fields, once each.
    let (cert, cert_key) = client_cert(&clients, "alice", (-1, 30));
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(cert, cert_key)
            .unwrap();
    let mut s = connect(tls_addr(&server), config, "shop.example");
    s.write_all(
        format!("GET /prod/echo HTTP/1.1\r\nHost: shop.example\r\n{forged}\r\n").as_bytes(),
    )
    .unwrap();
    let (status, _, body) = read_response(&mut s, &mut Vec::new());
    assert_eq!(status, 200, "{body}");
    let h = echo_headers(&body);
    let get = |n: &str| header_values(&h, n);
    assert_eq!(get("x-client-subject"), ["CN=alice"], "{body}");
    assert_eq!(get("x-client-serial").len(), 1);
    let pem = get("x-client-cert");
    assert_eq!(pem.len(), 1);
    assert!(
        pem[0].starts_with("-----BEGIN CERTIFICATE-----%0A") && !pem[0].contains('\n'),
        "{}",
        pem[0]
    );
    // Over plain HTTP: the forged headers do not reach the backend.
    let mut c = server.client();
    let r = c.request(format!(
        "GET /prod/echo HTTP/1.1\r\nHost: shop.example\r\n{forged}\r\n"
    ));
    assert_eq!(r.status, 200);
    let h = echo_headers(&r.text());
    assert!(
        !h.iter()
            .any(|(k, _)| k == "x-client-subject" || k == "x-client-cert"),
        "{h:?}"
    );
}

/// A real ClientHello (the first flight of a rustls client for `sni`).
fn client_hello(pki: &Pki, sni: &str) -> Vec<u8> {
    let config = pki.client_config(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    let mut conn = ClientConnection::new(
        Arc::new(config),
        ServerName::try_from(sni.to_string()).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Hostile bytes on the TLS port: arbitrary bytes, and a real ClientHello
/// with bytes flipped, cut short or followed by junk (proptest, a fixed
/// seed). Each connection ends (an alert, a close, or the handshake
/// timeout), nothing panics, and the listener still serves a real client.
#[test]
fn hostile_bytes_on_the_tls_port_close_the_connection_and_nothing_else() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};
    let pki = Pki::new();
    let server = gateway(&pki, "");
    let addr = tls_addr(&server);
    let hello = client_hello(&pki, "shop.example");
    let send = |bytes: &[u8]| {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = tcp.write_all(bytes);
        let _ = tcp.shutdown(std::net::Shutdown::Write);
        let mut got = Vec::new();
        // Ends: the server closed (or reset) within the header timeout.
        match tcp.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "no end: {e}"),
        }
        assert!(!got.starts_with(b"HTTP/"), "answered in plain text");
    };
    let mut runner = TestRunner::new(Config {
        cases: 64,
        rng_seed: RngSeed::Fixed(0x746c_7368_6f73_7431),
        rng_algorithm: RngAlgorithm::ChaCha,
        failure_persistence: None,
        ..Config::default()
    });
    let arbitrary = proptest::collection::vec(any::<u8>(), 0..600);
    runner
        .run(&arbitrary, |bytes| {
            send(&bytes);
            Ok(())
        })
        .unwrap();
    let mutated = (
        proptest::collection::vec((0..hello.len(), any::<u8>()), 1..8),
        0..=hello.len(),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    runner
        .run(&mutated, |(flips, cut, junk)| {
            let mut bytes = hello.clone();
            for (i, b) in flips {
                bytes[i] ^= b | 1;
            }
            bytes.truncate(cut.max(1));
            bytes.extend_from_slice(&junk);
            send(&bytes);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        server
            .server()
            .counters()
            .connection_panics
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let mut s = connect(addr, fresh(&pki), "shop.example");
    s.write_all(get("shop.example").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut Vec::new()).0, 200);
}
