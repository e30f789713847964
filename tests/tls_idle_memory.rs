//! What does an idle TLS connection hold in memory?
//!
//! A counting allocator (around mimalloc) keeps the balance of bytes
//! allocated and freed on the gateway's worker thread. 300 TLS connections
//! each send one request, read its answer and stay open; once they have
//! parked (1 to 2 s after their answer), the balance's growth divided by
//! the connections must stay under [`BOUND`]; the figure is printed.
//!
//! What it is made of (rustls 0.23, TLS 1.3, measured): the boxed
//! `ServerConnection` (1,168 bytes), its 4 KiB record buffer (9 KiB for a
//! connection whose last read ended mid-record) and its other state, the
//! connection's task, and small pieces: 10.2 KB in the debug build. Before
//! the handshake's future was boxed (`runtime::contain::serve_tls`), its
//! state sized every TLS connection's task for the connection's life: 14.7
//! KB then, so the bound catches that. A plain connection holds under
//! 1 KiB (`tests/idle_memory.rs`).
//! Allocation figures are stable where timings are not, so they may be
//! asserted.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mimalloc::MiMalloc;
use ringgate::server::{Server, StartOptions};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Idle connections opened.
const CONNECTIONS: i64 = 300;
/// Largest allowed heap per idle TLS connection, in bytes.
const BOUND: i64 = 12 * 1024;

struct Counting;

/// Bytes allocated minus bytes freed on the worker thread.
static LIVE: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

fn add(n: i64) {
    if TRACKED.with(Cell::get) {
        LIVE.fetch_add(n, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as i64);
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as i64 - layout.size() as i64);
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as i64));
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn an_idle_tls_connection_holds_under_12_kib() {
    let dir = std::env::temp_dir().join(format!("ringgate-tls-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("c.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), key.serialize_pem()).unwrap();
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlisten_tls = [\"127.0.0.1:0\"]\nworkers = 1\n\
         pin_workers = false\n\n[tls]\nwatch = \"0s\"\n\n[[tls.certificate]]\n\
         chain = \"{0}/c.pem\"\nkey = \"{0}/k.pem\"\nhosts = [\"localhost\"]\n\n\
         [[api]]\nname = \"idle\"\n  [[api.stage]]\n  name = \"prod\"\n  [[api.route]]\n  \
         route = \"GET /hello\"\n  [api.route.mock]\n  status = 200\n  body = \"hello over tls\\n\"\n",
        dir.display()
    );
    let config = ringgate::config::parse(&toml, "tls_idle_memory.toml").unwrap();
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
    let client = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let open = || {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut s = StreamOwned::new(ClientConnection::new(client.clone(), name).unwrap(), tcp);
        s.write_all(b"GET /prod/hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.ends_with(b"hello over tls\n") {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "the gateway closed a connection");
            got.extend_from_slice(&chunk[..n]);
        }
        s
    };
    // Warm-up: the worker's pools and the session machinery exist before
    // the count starts.
    drop((0..20).map(|_| open()).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_millis(2500));
    let base = LIVE.load(Ordering::Relaxed);
    let idle: Vec<_> = (0..CONNECTIONS).map(|_| open()).collect();
    // Parked: every hot read is cancelled within two sweeps. The buffers
    // they gave back wait in the worker's pool, which halves its excess
    // each second: five more seconds leave a few percent of it, so the
    // figure is the connections', not the pool's.
    std::thread::sleep(Duration::from_millis(7000));
    let per = (LIVE.load(Ordering::Relaxed) - base) / CONNECTIONS;
    println!("an idle TLS connection holds {per} bytes of heap");
    assert!(
        per < BOUND,
        "an idle TLS connection holds {per} bytes (bound {BOUND})"
    );
    drop(idle);
    drop(server);
}
