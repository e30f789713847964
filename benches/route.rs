//! Question: does route lookup cost stay flat as the table grows from 10 to
//! 10,000 routes?
//!
//! Tables of 10, 1,000 and 10,000 routes are built from a realistic mix, four
//! routes per service `svc{k}`:
//!   GET /svc{k}/items/{id}
//!   GET /svc{k}/items/{id}/tags/{tag}
//!   ANY /svc{k}/static/{proxy+}
//!   GET /svc{k}/static/index.html
//! For each size we time four lookups against a service in the middle of the
//! table: a literal hit, a param hit (two params), a greedy hit that first
//! goes down the literal `index.html` branch and backtracks, and a miss
//! (no route, no `$default`). If cost is flat, each case's time is about the
//! same at every size.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringgate::router::{Method, MethodSpec, Params, RouteId, RouteTable, RouteTableBuilder};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn build_table(n: usize) -> RouteTable {
    let mut b = RouteTableBuilder::new();
    for i in 0..n {
        let k = i / 4;
        let (method, path) = match i % 4 {
            0 => (
                MethodSpec::One(Method::Get),
                format!("/svc{k}/items/{{id}}"),
            ),
            1 => (
                MethodSpec::One(Method::Get),
                format!("/svc{k}/items/{{id}}/tags/{{tag}}"),
            ),
            2 => (MethodSpec::Any, format!("/svc{k}/static/{{proxy+}}")),
            _ => (
                MethodSpec::One(Method::Get),
                format!("/svc{k}/static/index.html"),
            ),
        };
        b.add(method, &path, RouteId(i as u32))
            .expect("valid route");
    }
    let t = b.build();
    assert_eq!(t.len(), n);
    t
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    for n in SIZES {
        let table = build_table(n);
        // A service in the middle that has all four routes.
        let k = (n / 4 - 1) / 2;
        let cases = [
            ("literal_hit", format!("/svc{k}/static/index.html"), true),
            ("param_hit", format!("/svc{k}/items/42/tags/blue"), true),
            (
                "greedy_hit",
                format!("/svc{k}/static/index.html/v2/app.js"),
                true,
            ),
            ("miss", format!("/svc{k}/nothing/here"), false),
        ];
        for (name, path, hit) in &cases {
            let mut p = Params::new();
            assert_eq!(table.lookup(Method::Get, path, &mut p).is_some(), *hit);
            group.bench_with_input(BenchmarkId::new(*name, n), path.as_str(), |b, path| {
                b.iter(|| {
                    let mut params = Params::new();
                    let id = table.lookup(Method::Get, black_box(path), &mut params);
                    black_box((id, params.len()))
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);
