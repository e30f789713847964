//! What does a request cost in allocations on an established TLS
//! connection? The counting allocator of `tests/alloc.rs` (around mimalloc,
//! counting on the worker thread only), a TLS listener with a certificate
//! made by rcgen, one keep-alive connection from a rustls client: after a
//! warm-up, 2,000 mock requests.
//!
//! Plain connections allocate nothing per request (`tests/alloc.rs`). A TLS
//! connection does: rustls's buffered API copies each received record's
//! plaintext, and each record it makes, into `Vec`s of its own. The count
//! is stable, so it is asserted exactly: a change to it is a change to
//! look at. rustls 0.23's unbuffered API would not bring it to zero: it
//! too pops each record's plaintext as a `Vec`, and every record it
//! encrypts is a new `Vec` (in-place decryption is on rustls's main
//! branch); kTLS would, where the kernel has its `tls` module.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mimalloc::MiMalloc;
use ringgate::server::{Server, StartOptions};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if TRACKED.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_request_on_an_established_tls_connection() {
    let dir = std::env::temp_dir().join(format!("ringgate-tls-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), key.serialize_pem()).unwrap();
    let toml = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
workers = 1
pin_workers = false

[tls]
watch = "0s"

[[tls.certificate]]
chain = "{0}/c.pem"
key = "{0}/k.pem"
hosts = ["localhost"]

[[api]]
name = "alloc"
  [[api.stage]]
  name = "prod"
  [[api.route]]
  route = "GET /hello"
  [api.route.mock]
  status = 200
  body = "hello over tls\n"
"#,
        dir.display()
    );
    let config = ringgate::config::parse(&toml, "tls_alloc.toml").unwrap();
    let server = Server::start(
        config,
        StartOptions {
            on_worker_start: Some(Arc::new(|_| TRACKED.with(|t| t.set(true)))),
            ..StartOptions::default()
        },
    )
    .unwrap();
    let addr = server.local_addrs()[1];

    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).unwrap();
    let conn = ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap())
        .unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    let request = b"GET /prod/hello HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let one = |s: &mut StreamOwned<ClientConnection, TcpStream>| {
        s.write_all(request).unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.ends_with(b"hello over tls\n") {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
    };
    for _ in 0..200 {
        one(&mut s);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    const N: u64 = 2_000;
    for _ in 0..N {
        one(&mut s);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    eprintln!("{allocations} allocations for {N} requests on one TLS connection");
    server.shutdown();
    server.join();
    let _ = std::fs::remove_dir_all(&dir);
    // One received record and one sent record per request, each copied
    // into a Vec of rustls's own.
    assert_eq!(allocations, 2 * N, "allocations per request changed");
}
