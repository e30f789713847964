//! `ringgate-connload`: many concurrent keep-alive connections, for the
//! connection-scale and soak measurements in `perf/` (loopback only).
//!
//! ```text
//! ringgate-connload --target 127.0.0.1:8080 --connections 10000 [--path /prod/hello]
//!                   [--interval SECS] [--duration SECS] [--threads N] [--sources N]
//!                   [--churn N] [--slow-path PATH]
//! ```
//!
//! Opens `--connections` connections (spread over `--sources` source
//! addresses 127.0.0.1, 127.0.0.2, …, so more than one source port range
//! is available), each sending one `GET --path` and reading its answer;
//! then prints `connload: opened N connections …` and flushes, so a script
//! can measure the server with every connection open and idle. With
//! `--interval SECS` each connection then sends another request every SECS
//! (starting at a random offset: a slow trickle over all of them); without
//! it they stay idle. After `--duration SECS` it prints the totals and
//! exits: status 0 if every request was answered with a 2xx, 1 otherwise.
//!
//! `--churn N` adds N tasks per thread that churn connections all along:
//! in turn, a connection that makes three requests and closes; one that
//! sends half a request head and closes; and a slow reader, which asks for
//! `--slow-path` (a larger body) and reads it 512 bytes at a time, 20 ms
//! apart. Their failures are counted separately (`churn errors`) and do
//! not fail the run: a half request is meant to fail.
//!
//! Every `--report SECS` (default 10) a progress line is printed.

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Clone)]
#[command(
    name = "ringgate-connload",
    about = "Many concurrent keep-alive connections (loopback only)"
)]
struct Args {
    /// Server address (must be loopback).
    #[arg(long)]
    target: SocketAddr,
    /// Connections to hold open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Path requested.
    #[arg(long, default_value = "/prod/hello")]
    path: String,
    /// Host header.
    #[arg(long, default_value = "connload")]
    host: String,
    /// Seconds between a connection's requests (0: one request, then idle).
    #[arg(long, default_value_t = 0.0)]
    interval: f64,
    /// Seconds to run once every connection is open.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Client threads (one monoio runtime each).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Source addresses to spread connections over (127.0.0.1 up).
    #[arg(long, default_value_t = 1)]
    sources: u8,
    /// Connection-churning tasks per thread (see the module docs).
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// Path the churn's slow readers ask for.
    #[arg(long, default_value = "/prod/hello")]
    slow_path: String,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10.0)]
    report: f64,
}

/// Totals over all threads.
#[derive(Default)]
struct Totals {
    opened: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    churn_ok: AtomicU64,
    churn_errors: AtomicU64,
    max_latency_us: AtomicU64,
}

fn main() {
    let args = Args::parse();
    if !args.target.ip().is_loopback() {
        eprintln!("ringgate-connload: --target must be a loopback address");
        std::process::exit(2);
    }
    let totals = Arc::new(Totals::default());
    let threads = args.threads.max(1);
    let started = Instant::now();
    let open_barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let args = args.clone();
            let totals = totals.clone();
            let barrier = open_barrier.clone();
            std::thread::spawn(move || run_thread(t, threads, args, totals, barrier))
        })
        .collect();
    open_barrier.wait();
    println!(
        "connload: opened {} connections in {:.1?} ({} errors)",
        totals.opened.load(Ordering::Relaxed),
        started.elapsed(),
        totals.errors.load(Ordering::Relaxed)
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let run_start = Instant::now();
    let report = Duration::from_secs_f64(args.report.max(0.5));
    let duration = Duration::from_secs_f64(args.duration);
    while run_start.elapsed() < duration {
        std::thread::sleep(report.min(duration.saturating_sub(run_start.elapsed())));
        print_line("progress", &totals, run_start.elapsed());
    }
    for h in handles {
        let _ = h.join();
    }
    print_line("done", &totals, run_start.elapsed());
    let failed = totals.errors.load(Ordering::Relaxed) > 0
        || totals.opened.load(Ordering::Relaxed) < args.connections as u64;
    std::process::exit(i32::from(failed));
}

fn print_line(what: &str, t: &Totals, at: Duration) {
    println!(
        "connload: {what} at {:.0}s: {} requests ok, {} errors; churn {} ok, {} errors; max latency {:.1} ms",
        at.as_secs_f64(),
        t.ok.load(Ordering::Relaxed),
        t.errors.load(Ordering::Relaxed),
        t.churn_ok.load(Ordering::Relaxed),
        t.churn_errors.load(Ordering::Relaxed),
        t.max_latency_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
}

fn run_thread(
    t: usize,
    threads: usize,
    args: Args,
    totals: Arc<Totals>,
    barrier: Arc<std::sync::Barrier>,
) {
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(4096)
        .enable_timer()
        .build()
        .expect("monoio runtime");
    rt.block_on(async move {
        let request: Rc<Vec<u8>> = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringgate-connload\r\n\r\n",
            args.path, args.host
        )
        .into_bytes()
        .into();
        let mine = args.connections / threads + usize::from(t < args.connections % threads);
        let opened = Rc::new(Cell::new(0usize));
        let end = Instant::now() + Duration::from_secs(3600 * 24);
        let end = Rc::new(Cell::new(end));
        for i in 0..mine {
            let source = (t * mine + i) % usize::from(args.sources.max(1));
            let stream = match connect(args.target, source as u8).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("connload: connect: {e}");
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            monoio::spawn(hold(
                stream,
                request.clone(),
                args.interval,
                totals.clone(),
                opened.clone(),
                end.clone(),
            ));
        }
        // Every connection has had its first answer (or failed).
        while opened.get() < mine {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        barrier.wait();
        end.set(Instant::now() + Duration::from_secs_f64(args.duration));
        let slow: Rc<Vec<u8>> = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            args.slow_path, args.host
        )
        .into_bytes()
        .into();
        for c in 0..args.churn {
            monoio::spawn(churn(
                c,
                args.target,
                request.clone(),
                slow.clone(),
                totals.clone(),
                end.clone(),
            ));
        }
        let left = end.get().saturating_duration_since(Instant::now());
        monoio::time::sleep(left + Duration::from_millis(200)).await;
    });
}

/// A non-blocking connect from 127.0.0.(source + 1).
async fn connect(target: SocketAddr, source: u8) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source + 1)), 0);
    socket.bind(&from.into())?;
    socket.set_nonblocking(true)?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let _ = socket.set_nodelay(true);
    let std_stream: std::net::TcpStream = socket.into();
    let stream = TcpStream::from_std(std_stream)?;
    stream.writable(false).await?;
    // The connect's own result.
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(SO_ERROR) into an owned int of the given length,
    // on the stream's open socket.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if err != 0 {
        return Err(std::io::Error::from_raw_os_error(err));
    }
    Ok(stream)
}

/// Sends `request` and reads one answer (Content-Length framed); its
/// status.
async fn exchange(
    stream: &mut TcpStream,
    request: &Rc<Vec<u8>>,
    buf: &mut Vec<u8>,
) -> Result<u16, &'static str> {
    let (res, _) = stream.write_all(request.clone()).await;
    res.map_err(|_| "write failed")?;
    read_answer(stream, buf, None).await
}

/// Reads one Content-Length framed answer; `pace`: read at most 512 bytes
/// at a time, sleeping this long in between (a slow reader).
async fn read_answer(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    pace: Option<Duration>,
) -> Result<u16, &'static str> {
    buf.clear();
    let mut need = usize::MAX;
    let mut status = 0;
    loop {
        if need == usize::MAX {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end]).map_err(|_| "bad head")?;
                status = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .ok_or("bad status")?;
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .ok_or("no content-length")?;
                need = end + 4 + len;
            }
        }
        if buf.len() >= need {
            return Ok(status);
        }
        let want = if pace.is_some() { 512 } else { 16 * 1024 };
        let mut chunk = std::mem::take(buf);
        chunk.reserve(want);
        let len = chunk.len();
        let (res, slice) = stream
            .read(monoio::buf::IoBufMut::slice_mut(chunk, len..len + want))
            .await;
        *buf = slice.into_inner();
        match res {
            Ok(0) => return Err("closed by server"),
            Ok(_) => {}
            Err(_) => return Err("read failed"),
        }
        if let Some(p) = pace {
            monoio::time::sleep(p).await;
        }
    }
}

async fn hold(
    mut stream: TcpStream,
    request: Rc<Vec<u8>>,
    interval: f64,
    totals: Arc<Totals>,
    opened: Rc<Cell<usize>>,
    end: Rc<Cell<Instant>>,
) {
    let mut buf = Vec::with_capacity(512);
    let first = exchange(&mut stream, &request, &mut buf).await;
    record(&totals, first, Duration::ZERO);
    if first.is_ok() {
        totals.opened.fetch_add(1, Ordering::Relaxed);
    }
    opened.set(opened.get() + 1);
    if first.is_err() {
        return;
    }
    buf.shrink_to(512);
    if interval <= 0.0 {
        let left = end.get().saturating_duration_since(Instant::now());
        monoio::time::sleep(left).await;
        return;
    }
    // A random first offset spreads the trickle evenly.
    let offset = fastrand_fraction(&stream) * interval;
    monoio::time::sleep(Duration::from_secs_f64(offset)).await;
    while Instant::now() < end.get() {
        let started = Instant::now();
        let r = exchange(&mut stream, &request, &mut buf).await;
        let failed = r.is_err();
        record(&totals, r, started.elapsed());
        if failed {
            return;
        }
        monoio::time::sleep(Duration::from_secs_f64(interval)).await;
    }
}

fn record(totals: &Totals, r: Result<u16, &'static str>, latency: Duration) {
    match r {
        Ok(s) if (200..300).contains(&s) => {
            totals.ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(s) => {
            eprintln!("connload: status {s}");
            totals.errors.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            eprintln!("connload: {e}");
            totals.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    totals
        .max_latency_us
        .fetch_max(latency.as_micros() as u64, Ordering::Relaxed);
}

/// A pseudo-random fraction in [0, 1) from the connection's local port.
fn fastrand_fraction(stream: &TcpStream) -> f64 {
    let port = stream.local_addr().map_or(0, |a| a.port()) as u64;
    let x = port.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Churns connections until `end` (see the module docs).
async fn churn(
    seed: usize,
    target: SocketAddr,
    request: Rc<Vec<u8>>,
    slow: Rc<Vec<u8>>,
    totals: Arc<Totals>,
    end: Rc<Cell<Instant>>,
) {
    let mut buf = Vec::with_capacity(4096);
    let mut turn = seed;
    while Instant::now() < end.get() {
        turn += 1;
        let Ok(mut stream) = connect(target, 0).await else {
            totals.churn_errors.fetch_add(1, Ordering::Relaxed);
            monoio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let ok = match turn % 3 {
            0 => {
                let mut ok = true;
                for _ in 0..3 {
                    ok &= matches!(
                        exchange(&mut stream, &request, &mut buf).await,
                        Ok(200..=299)
                    );
                }
                ok
            }
            1 => {
                // Half a head, then gone.
                let half = request[..request.len() / 2].to_vec();
                let (res, _) = stream.write_all(half).await;
                res.is_ok()
            }
            _ => {
                let (res, _) = stream.write_all(slow.clone()).await;
                res.is_ok()
                    && matches!(
                        read_answer(&mut stream, &mut buf, Some(Duration::from_millis(20))).await,
                        Ok(200..=299)
                    )
            }
        };
        drop(stream);
        let counter = if ok {
            &totals.churn_ok
        } else {
            &totals.churn_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}
