//! Does access logging allocate on a worker?
//!
//! A counting global allocator counts allocations per thread (a
//! thread-local counter, so the tests may run in parallel). After a
//! warm-up:
//! - 10,000 `LogFormat::write`s of each preset, and of a JSON format with
//!   every variable, for records with every value set (IPv4 and IPv6
//!   clients, hostile bytes to escape) and with none, the clock turning
//!   over a second every few lines, must allocate zero times;
//! - a worker's `LogBuffer` shipping 200 batches of lines to the writer
//!   (each written before the next) must allocate zero times: buffers come
//!   back from the writer;
//! - lines logged after the log stopped (dropped and counted) must
//!   allocate zero times.
//!
//! The first buffers do allocate: that is asserted too, to show the
//! counter counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ringgate::observe::access_log::{
    AccessLog, ClfClock, LogBuffer, LogFormat, LogRecord, LogTarget, SHIP_AT,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

// SAFETY: defers every call to the system allocator unchanged; counting
// touches only a const-initialised thread-local, which does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread by `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const ROUNDS: u64 = 10_000;

/// Every variable, in a JSON object.
const EVERY: &str = r#"{"requestId":"$context.requestId","extendedRequestId":"$context.extendedRequestId","ip":"$context.identity.sourceIp","ua":"$context.identity.userAgent","caller":"$context.identity.caller","key":"$context.identity.apiKey","method":"$context.httpMethod","resourcePath":"$context.resourcePath","routeKey":"$context.routeKey","path":"$context.path","stage":"$context.stage","apiId":"$context.apiId","resourceId":"$context.resourceId","accountId":"$context.accountId","domainName":"$context.domainName","domainPrefix":"$context.domainPrefix","protocol":"$context.protocol","requestTime":"$context.requestTime","epoch":"$context.requestTimeEpoch","status":"$context.status","len":"$context.responseLength","lat":"$context.responseLatency","ilat":"$context.integrationLatency","istatus":"$context.integrationStatus","ierr":"$context.integrationErrorMessage","err":"$context.error.message","type":"$context.error.responseType","base":"$context.customDomain.basePathMatched","canary":"$context.isCanaryRequest","outcome":"$context.ringgate.outcome","sub":"$context.authorizer.claims.sub"}"#;

fn full(ip: IpAddr, time_ms: u64) -> LogRecord<'static> {
    LogRecord {
        request_id: b"c0ffee00-1234-5678",
        extended_request_id: Some(b"ext-42"),
        source_ip: Some(ip),
        source_ip_text: None,
        tokens_checked: false,
        user_agent: Some(b"Mozilla/5.0 \"q\" \\ \x01\n\xff"),
        api_key_id: Some("key-1"),
        method: b"POST",
        resource_path: Some("/pets/{id},x"),
        path: b"/pets/7?a=\"1\"&b=\\\r\n\xc3\x28",
        stage: Some("prod"),
        api_id: Some("petstore"),
        resource_id: Some("r1"),
        account_id: Some("123456789012"),
        host: Some(b"api.example.com"),
        protocol: "HTTP/1.1",
        request_time_ms: time_ms,
        status: 502,
        response_length: Some(u64::MAX),
        response_latency_us: 12_999,
        integration_latency_us: Some(7_001),
        integration_status: Some(201),
        integration_error: Some("connection refused"),
        error_message: Some("Internal server error"),
        error_response_type: Some("INTEGRATION_FAILURE"),
        base_path_matched: Some("v1"),
        is_canary: true,
        outcome: "error_bad_gateway",
        client_cert: None,
    }
}

#[test]
fn writing_a_line_never_allocates() {
    let formats: Vec<LogFormat> = ["clf", "json", "csv", "http_api_clf", EVERY]
        .iter()
        .map(|s| LogFormat::from_setting(s).unwrap())
        .collect();
    let ips = [
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329)),
        IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()),
    ];
    let mut clock = ClfClock::new();
    let mut out = Vec::with_capacity(4096);
    let mut time = 1_700_000_000_000u64;
    let mut round = |out: &mut Vec<u8>, clock: &mut ClfClock, i: u64| {
        time += 337; // a new second every third line or so
        let ip = ips[(i % 3) as usize];
        for f in &formats {
            out.clear();
            f.write(&full(ip, time), clock, out);
            out.clear();
            f.write(&LogRecord::new(b"id", time), clock, out);
        }
    };
    for i in 0..10 {
        round(&mut out, &mut clock, i);
    }
    let n = allocations(|| {
        for i in 0..ROUNDS {
            round(&mut out, &mut clock, i);
        }
    });
    assert_eq!(n, 0, "allocations in {ROUNDS} rounds of writes");
    assert!(out.capacity() == 4096);
}

fn temp_file(stem: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "ringgate-log-alloc-{}-{stem}.log",
        std::process::id()
    ))
}

/// Logs lines until `buf` ships one batch; returns how many.
fn one_batch(buf: &mut LogBuffer, format: &LogFormat, clock: &mut ClfClock, time: &mut u64) -> u64 {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut lines = 0;
    loop {
        *time += 3;
        buf.log(format, &full(ip, *time), clock);
        lines += 1;
        if buf.pending_lines() == 0 {
            return lines;
        }
    }
}

fn wait_written(log: &AccessLog, lines: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.stats().lines_written < lines {
        assert!(Instant::now() < deadline, "the writer is stuck");
        std::thread::yield_now();
    }
}

#[test]
fn shipping_batches_allocates_nothing_once_warm() {
    let path = temp_file("ship");
    let _ = std::fs::remove_file(&path);
    let log = AccessLog::start(LogTarget::File(path.clone()), 8).unwrap();
    let format = LogFormat::from_setting("json").unwrap();
    let mut clock = ClfClock::new();
    let mut time = 1_700_000_000_000u64;

    // The worker's first buffer and the first batch's replacement come
    // from the spare buffers the log starts with.
    let mut buf = log.buffer();
    let mut shipped = one_batch(&mut buf, &format, &mut clock, &mut time);
    let probe = allocations(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(64))));
    assert!(probe >= 1, "the counter counts: {probe}");
    for _ in 0..5 {
        wait_written(&log, shipped);
        shipped += one_batch(&mut buf, &format, &mut clock, &mut time);
    }

    // Each batch is written (and its buffer back) before the next ships,
    // as when the disk keeps up.
    let n = allocations(|| {
        for _ in 0..200 {
            wait_written(&log, shipped);
            shipped += one_batch(&mut buf, &format, &mut clock, &mut time);
        }
        wait_written(&log, shipped);
        // And a partial batch.
        buf.log(
            &format,
            &full(IpAddr::V4(Ipv4Addr::LOCALHOST), time),
            &mut clock,
        );
        buf.flush();
        shipped += 1;
    });
    assert_eq!(n, 0, "allocations shipping 200 batches");
    wait_written(&log, shipped);
    let stats = log.stats();
    assert_eq!(stats.dropped_lines, 0, "{stats:?}");
    assert!(stats.bytes_written >= 200 * SHIP_AT as u64, "{stats:?}");

    log.stop();
    // After stop: lines are dropped and counted, without allocating.
    let dropped = log.stats().dropped_lines;
    let n = allocations(|| {
        for _ in 0..3 {
            one_batch(&mut buf, &format, &mut clock, &mut time);
        }
    });
    assert_eq!(n, 0, "allocations dropping lines after stop");
    assert!(log.stats().dropped_lines > dropped);
    drop(buf);
    let _ = std::fs::remove_file(&path);
}
