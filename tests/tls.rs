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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use support::TestServer;

/// A test CA and leaf certificates it signs, written as PEM files.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let dir = support::temp_path("tls").with_extension("d");
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ringgate test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// Writes `<stem>.pem` (the leaf, then the CA) and `<stem>.key` for
    /// `names`; returns their paths.
    fn leaf(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let chain = self.dir.join(format!("{stem}.pem"));
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&chain, format!("{}{}", cert.pem(), self.ca.pem())).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (chain, key_path)
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

/// Three certificates: `default.example` (the first: the default),
/// `shop.example` and `*.api.example`.
fn gateway(pki: &Pki, extra: &str) -> TestServer {
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
    );
    TestServer::start(&toml)
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
