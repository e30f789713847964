//! Question: what does formatting an access log line cost a worker?
//!
//! Goal: well under a microsecond per line for the presets, so logging
//! every request is cheap next to serving it.
//!
//! - `access_log/write_clf`, `write_json`: `LogFormat::write` of the `clf`
//!   and `json` presets into a reused buffer, for a record with every
//!   value set (the clock's second changes every 1,000 lines, as at
//!   1,000 requests a second per worker).
//! - `write_json_hostile`: the same JSON line with a path and user agent
//!   full of bytes to escape, through a format that logs both.
//! - `buffer_json`: `LogBuffer::log` of the json preset to a writer that
//!   writes to /dev/null: the formatting plus the worker's share of
//!   shipping a batch every 32 KiB.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringgate::observe::access_log::{AccessLog, ClfClock, LogFormat, LogRecord, LogTarget};

fn record<'a>(time_ms: u64, path: &'a [u8], user_agent: &'a [u8]) -> LogRecord<'a> {
    LogRecord {
        extended_request_id: Some(b"ext-6c1d2f0e"),
        source_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
        source_ip_text: Some(b"203.0.113.9"),
        tokens_checked: false,
        user_agent: Some(user_agent),
        api_key_id: Some("k-42"),
        method: b"GET",
        resource_path: Some("/pets/{id}"),
        path,
        stage: Some("prod"),
        api_id: Some("petstore"),
        host: Some(b"api.example.com"),
        status: 200,
        response_length: Some(1234),
        response_latency_us: 850,
        integration_latency_us: Some(700),
        integration_status: Some(200),
        outcome: "proxied",
        ..LogRecord::new(b"6c1d2f0e-8b1a-4c1e-9d51-3f0c7d2a9b10", time_ms)
    }
}

fn bench_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("access_log");
    group.throughput(Throughput::Elements(1));
    let formats = [
        ("write_clf", LogFormat::from_setting("clf").unwrap()),
        ("write_json", LogFormat::from_setting("json").unwrap()),
    ];
    for (name, format) in &formats {
        let mut clock = ClfClock::new();
        let mut out = Vec::with_capacity(4096);
        let mut time = 1_700_000_000_000u64;
        group.bench_function(*name, |b| {
            b.iter(|| {
                time += 1;
                out.clear();
                let rec = record(time, b"/pets/42?expand=owner", b"curl/8.5.0");
                format.write(black_box(&rec), &mut clock, &mut out);
                black_box(out.len())
            });
        });
    }

    let hostile = LogFormat::parse(&format!(
        "{}, \"ua\":\"$context.identity.userAgent\", \"path\":\"$context.path\" }}",
        LogFormat::preset("json").unwrap().trim_end_matches(" }")
    ))
    .unwrap();
    let mut clock = ClfClock::new();
    let mut out = Vec::with_capacity(4096);
    let mut time = 1_700_000_000_000u64;
    group.bench_function("write_json_hostile", |b| {
        b.iter(|| {
            time += 1;
            out.clear();
            let rec = record(
                time,
                b"/pets/\"42\"?q=\\\x01\xff\xfe%20&x=\r\n",
                b"Mozilla/5.0 (\"X11\"; Linux) \xc3\xa9\xc3\xa8 \\o/",
            );
            hostile.write(black_box(&rec), &mut clock, &mut out);
            black_box(out.len())
        });
    });

    let log = AccessLog::start(LogTarget::File("/dev/null".into()), 64).unwrap();
    let json = LogFormat::from_setting("json").unwrap();
    let mut buf = log.buffer();
    let mut clock = ClfClock::new();
    let mut time = 1_700_000_000_000u64;
    group.bench_function("buffer_json", |b| {
        b.iter(|| {
            time += 1;
            let rec = record(time, b"/pets/42?expand=owner", b"curl/8.5.0");
            buf.log(&json, black_box(&rec), &mut clock);
        });
    });
    buf.flush();
    log.stop();
    let stats = log.stats();
    assert_eq!(stats.write_errors, 0);
    eprintln!("buffer_json: {stats:?}");

    group.finish();
}

criterion_group!(benches, bench_write);
criterion_main!(benches);
