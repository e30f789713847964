//! How long does parsing a request head take, from bytes to a validated
//! `RequestHead` with its framing decided? Three shapes: the minimal request
//! `wrk` sends, a browser-like GET with a dozen headers, and a chunked POST.
//! The figure to watch is ns per head; it should stay well under the
//! microseconds a whole request costs the server.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ringgate::http::{header_array, parse_head, HeadLimits};

const LIMITS: HeadLimits = HeadLimits {
    max_header_bytes: 10240,
    max_headers: 100,
    max_url_bytes: 8192,
};

fn bench_parse(c: &mut Criterion) {
    let cases: [(&str, &[u8]); 3] = [
        ("wrk_minimal", b"GET /perf/hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"),
        (
            "browser_get",
            b"GET /prod/pets/42?lang=en&fields=name,age HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Language: en-GB,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Referer: https://app.example.com/pets\r\n\
Origin: https://app.example.com\r\n\
Connection: keep-alive\r\n\
Cookie: session=abcdef0123456789; theme=dark\r\n\
Sec-Fetch-Dest: empty\r\n\
Sec-Fetch-Mode: cors\r\n\
x-request-id: 3f2b8c1e-9a4d-4e2f-8b6a-0c1d2e3f4a5b\r\n\r\n",
        ),
        (
            "chunked_post",
            b"POST /prod/items HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
    ];
    let mut group = c.benchmark_group("parse_head");
    for (name, raw) in cases {
        group.throughput(Throughput::Bytes(raw.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut headers = header_array();
                let head = parse_head(black_box(raw), &mut headers, &LIMITS)
                    .expect("valid")
                    .expect("complete");
                black_box(head.framing);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
