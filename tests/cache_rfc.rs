//! The stage cache in the RFC 9111 mode (`respect_origin_cache_control`),
//! end to end: the gateway in front of a scripted origin that sets caching
//! headers per resource, answers conditional requests as an origin would
//! (304 when `If-None-Match` matches its current `ETag`, or
//! `If-Modified-Since` is not older than its `Last-Modified`), and records
//! every request head, so each test asserts both what the client got and
//! what the origin saw.
//!
//! Covered, by the issue's numbering: 1. freshness (`s-maxage`, `max-age`,
//! `Expires` minus `Date`, an invalid `Expires`, the origin's `Age`,
//! heuristics only with `Last-Modified` and a listed status); 2. what a hit
//! carries (the stored `Date`, `Age` always, validators); 3. revalidation
//! (304 freshens, 200 replaces, `no-cache` from either side, one
//! revalidation under a stampede); 4. clients' conditional requests
//! answered 304 from the cache; 5. invalidation by unsafe methods (target,
//! `Location`); 6. `Vary` variants (one per value, bounded, replaced when
//! the origin stops varying, all invalidated together; `Vary: *`); 7. `stale-while-revalidate` and `stale-if-error`; 8.
//! targeted fields (`CDN-Cache-Control`, a configured one); 9. ranges (206
//! and 416 from the cache, `If-Range`); 10. what is never stored
//! (`no-store`, `private`, `Authorization`, `Set-Cookie`, 206).

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringgate::http::date::HttpDate;
use support::{Client, Response, StubBackend, TestServer, SERVER};

/// What the origin serves at one path.
#[derive(Clone, Debug, Default)]
struct Resource {
    status: u16,
    /// Header lines (each ending in CRLF) besides Date, ETag,
    /// Last-Modified and Content-Length.
    headers: String,
    body: String,
    etag: Option<String>,
    /// Seconds since the epoch.
    last_modified: Option<u64>,
    /// Header lines added to a 304 answer.
    headers_304: String,
    /// Sent as the origin's `Date` instead of now.
    date: Option<u64>,
    /// Delay before answering.
    delay_ms: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn http_date(secs: u64) -> String {
    String::from_utf8(HttpDate::from_unix(secs).as_bytes().to_vec()).unwrap()
}

/// The scripted origin: resources by path (without the query).
struct Origin {
    stub: StubBackend,
    resources: Arc<Mutex<HashMap<String, Resource>>>,
}

impl Origin {
    fn start() -> Origin {
        let resources: Arc<Mutex<HashMap<String, Resource>>> = Arc::default();
        let r = resources.clone();
        let stub = StubBackend::start(move |head| {
            let target = head.split(' ').nth(1).unwrap_or("/");
            let path = target.split('?').next().unwrap_or(target);
            let header = |name: &str| {
                head.lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            };
            let res = r.lock().unwrap().get(path).cloned();
            let Some(res) = res else {
                return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec();
            };
            if res.delay_ms > 0 {
                std::thread::sleep(Duration::from_millis(res.delay_ms));
            }
            let method = head.split(' ').next().unwrap_or("GET");
            let not_modified = (method == "GET" || method == "HEAD")
                && match (header("if-none-match"), &res.etag) {
                    (Some(inm), Some(etag)) => inm.split(',').any(|t| t.trim() == etag),
                    (Some(_), None) => false,
                    (None, _) => match (header("if-modified-since"), res.last_modified) {
                        (Some(ims), Some(lm)) => {
                            support::parse_http_date(&ims).is_some_and(|since| lm <= since)
                        }
                        _ => false,
                    },
                };
            let mut out = String::new();
            let date = http_date(res.date.unwrap_or_else(now_secs));
            let validators = {
                let mut v = String::new();
                if let Some(e) = &res.etag {
                    v += &format!("ETag: {e}\r\n");
                }
                if let Some(lm) = res.last_modified {
                    v += &format!("Last-Modified: {}\r\n", http_date(lm));
                }
                v
            };
            if not_modified {
                out += &format!(
                    "HTTP/1.1 304 Not Modified\r\nDate: {date}\r\n{validators}{}\r\n",
                    res.headers_304
                );
            } else {
                out += &format!(
                    "HTTP/1.1 {} X\r\nDate: {date}\r\n{validators}{}Content-Length: {}\r\n\r\n{}",
                    res.status,
                    res.headers,
                    res.body.len(),
                    res.body
                );
            }
            out.into_bytes()
        });
        Origin { stub, resources }
    }

    fn addr(&self) -> SocketAddr {
        self.stub.addr()
    }

    fn set(&self, path: &str, r: Resource) {
        self.resources.lock().unwrap().insert(path.to_string(), r);
    }

    fn update(&self, path: &str, f: impl FnOnce(&mut Resource)) {
        f(self.resources.lock().unwrap().get_mut(path).unwrap());
    }

    /// Request heads for `path` (method and target line first).
    fn seen(&self, path: &str) -> Vec<String> {
        self.stub
            .heads()
            .into_iter()
            .filter(|h| {
                let target = h.split(' ').nth(1).unwrap_or("");
                target.split('?').next() == Some(path)
            })
            .collect()
    }

    fn count(&self, path: &str) -> usize {
        self.seen(path).len()
    }

    /// Requests for `path` that carried a validator.
    fn conditional(&self, path: &str) -> usize {
        self.seen(path)
            .iter()
            .filter(|h| {
                let l = h.to_ascii_lowercase();
                l.contains("\r\nif-none-match:") || l.contains("\r\nif-modified-since:")
            })
            .count()
    }
}

fn ok(body: &str, headers: &str) -> Resource {
    Resource {
        status: 200,
        headers: headers.to_string(),
        body: body.to_string(),
        ..Resource::default()
    }
}

/// A gateway with one RFC-mode stage `s` (status header on, `extra` stage
/// cache lines) and a greedy proxy route to the origin.
fn gateway(origin: &Origin, extra: &str) -> TestServer {
    let toml = format!(
        "{SERVER}[[api]]\nname = \"c\"\n[[api.stage]]\nname = \"s\"\n\
         [api.stage.cache]\ncapacity = \"64MiB\"\nstatus_header = true\n\
         respect_origin_cache_control = true\n{extra}\n\
         [[api.route]]\nroute = \"ANY /{{proxy+}}\"\n[api.route.http_proxy]\n\
         uri = \"http://{}/{{proxy}}\"\n[api.route.cache]\nkey_parameters = [\"path.proxy\", \"querystring.*\"]\n",
        origin.addr()
    );
    TestServer::start(&toml)
}

fn get(c: &mut Client, path: &str, headers: &str) -> Response {
    c.request(format!("GET /s{path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n"))
}

fn cs(r: &Response) -> &str {
    r.header("x-cache-status").unwrap_or("-")
}

fn age(r: &Response) -> u64 {
    r.header("age")
        .unwrap_or_else(|| panic!("no Age: {r:?}"))
        .parse()
        .unwrap()
}

#[track_caller]
fn assert_answer(r: &Response, status: u16, cache: &str, body: &str) {
    assert_eq!(
        (r.status, cs(r), r.text().as_str()),
        (status, cache, body),
        "{r:?}"
    );
}

// --- 1. freshness ----------------------------------------------------------------

#[test]
fn freshness_from_s_maxage_max_age_and_expires() {
    let o = Origin::start();
    o.set(
        "/smax",
        ok("a", "Cache-Control: max-age=0, s-maxage=60\r\n"),
    );
    o.set("/max", ok("b", "Cache-Control: max-age=60\r\n"));
    let exp = http_date(now_secs() + 60);
    o.set("/exp", ok("c", &format!("Expires: {exp}\r\n")));
    o.set(
        "/past",
        ok("d", &format!("Expires: {}\r\n", http_date(now_secs() - 60))),
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    for (path, body) in [("/smax", "a"), ("/max", "b"), ("/exp", "c")] {
        assert_answer(&get(&mut c, path, ""), 200, "Miss", body);
        assert_answer(&get(&mut c, path, ""), 200, "Hit", body);
        assert_eq!(o.count(path), 1, "{path}");
    }
    // Expired on arrival and no validator: never reused.
    assert_answer(&get(&mut c, "/past", ""), 200, "Miss", "d");
    assert_answer(&get(&mut c, "/past", ""), 200, "Miss", "d");
    assert_eq!(o.count("/past"), 2);
}

#[test]
fn invalid_expires_is_stale_and_revalidated() {
    let o = Origin::start();
    o.set(
        "/bad",
        Resource {
            etag: Some("\"v1\"".into()),
            ..ok("body", "Expires: 0\r\n")
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/bad", ""), 200, "Miss", "body");
    // Stored (it has a validator) but stale: every use is revalidated.
    for _ in 0..2 {
        assert_answer(&get(&mut c, "/bad", ""), 200, "Revalidated", "body");
    }
    assert_eq!((o.count("/bad"), o.conditional("/bad")), (3, 2));
}

#[test]
fn the_origins_age_counts_toward_the_entrys() {
    let o = Origin::start();
    o.set("/aged", ok("x", "Cache-Control: max-age=3\r\nAge: 2\r\n"));
    let gw = gateway(&o, "");
    let mut c = gw.client();
    let first = get(&mut c, "/aged", "");
    assert_answer(&first, 200, "Miss", "x");
    let hit = get(&mut c, "/aged", "");
    assert_answer(&hit, 200, "Hit", "x");
    assert!(age(&hit) >= 2, "{hit:?}");
    // One second more and it is stale (3 s of lifetime, 2 already used).
    std::thread::sleep(Duration::from_millis(1100));
    assert_answer(&get(&mut c, "/aged", ""), 200, "Miss", "x");
    assert_eq!(o.count("/aged"), 2);
}

#[test]
fn heuristic_freshness_needs_last_modified_and_a_listed_status() {
    let o = Origin::start();
    let lm = Some(now_secs() - 10_000);
    o.set(
        "/lm",
        Resource {
            last_modified: lm,
            ..ok("lm", "")
        },
    );
    o.set("/plain", ok("plain", ""));
    for (path, status) in [
        ("/forbidden", 403),
        ("/bad-gateway", 502),
        ("/unavailable", 503),
    ] {
        o.set(
            path,
            Resource {
                status,
                last_modified: lm,
                ..ok("no", "")
            },
        );
    }
    o.set(
        "/gone",
        Resource {
            status: 404,
            last_modified: lm,
            ..ok("gone", "")
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    // 10 % of 10,000 s: fresh for about 1,000 s.
    assert_answer(&get(&mut c, "/lm", ""), 200, "Miss", "lm");
    assert_answer(&get(&mut c, "/lm", ""), 200, "Hit", "lm");
    assert_answer(&get(&mut c, "/gone", ""), 404, "Miss", "gone");
    assert_answer(&get(&mut c, "/gone", ""), 404, "Hit", "gone");
    // Neither explicit freshness nor Last-Modified: not reused.
    assert_answer(&get(&mut c, "/plain", ""), 200, "Miss", "plain");
    assert_answer(&get(&mut c, "/plain", ""), 200, "Miss", "plain");
    // Statuses that are not heuristically cacheable are never stored
    // without explicit freshness, whatever the stage TTL.
    for (path, status) in [
        ("/forbidden", 403),
        ("/bad-gateway", 502),
        ("/unavailable", 503),
    ] {
        assert_answer(&get(&mut c, path, ""), status, "Miss", "no");
        assert_answer(&get(&mut c, path, ""), status, "Miss", "no");
        assert_eq!(o.count(path), 2, "{path}");
    }
    assert_eq!(
        (o.count("/lm"), o.count("/gone"), o.count("/plain")),
        (1, 1, 2)
    );
}

#[test]
fn heuristic_max_caps_and_zero_turns_heuristics_off() {
    let o = Origin::start();
    o.set(
        "/lm",
        Resource {
            last_modified: Some(now_secs() - 10_000),
            ..ok("lm", "")
        },
    );
    let gw = gateway(&o, "heuristic_max = \"1s\"");
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/lm", ""), 200, "Miss", "lm");
    assert_answer(&get(&mut c, "/lm", ""), 200, "Hit", "lm");
    std::thread::sleep(Duration::from_millis(1100));
    // Stale after the cap: revalidated with If-Modified-Since.
    assert_answer(&get(&mut c, "/lm", ""), 200, "Revalidated", "lm");
    assert_eq!(o.conditional("/lm"), 1);
    drop(gw);
    let off = gateway(&o, "heuristic_max = \"0s\"");
    let mut c = off.client();
    let before = o.count("/lm");
    assert_answer(&get(&mut c, "/lm", ""), 200, "Miss", "lm");
    // Stored for revalidation only: each use asks the origin.
    assert_answer(&get(&mut c, "/lm", ""), 200, "Revalidated", "lm");
    assert_eq!(o.count("/lm") - before, 2);
}

// --- 2. what a hit carries ------------------------------------------------------------

#[test]
fn a_hit_carries_the_stored_date_an_age_and_the_validators() {
    let o = Origin::start();
    let origin_date = now_secs() - 5;
    o.set(
        "/d",
        Resource {
            date: Some(origin_date),
            etag: Some("\"e1\"".into()),
            last_modified: Some(origin_date - 100),
            ..ok("d", "Cache-Control: max-age=600\r\n")
        },
    );
    // Without the status header: Age is still sent in this mode.
    let toml_gw = gateway(&o, "");
    let mut c = toml_gw.client();
    get(&mut c, "/d", "");
    let hit = get(&mut c, "/d", "");
    assert_answer(&hit, 200, "Hit", "d");
    assert_eq!(
        hit.header("date"),
        Some(http_date(origin_date).as_str()),
        "{hit:?}"
    );
    // The apparent age (now - Date) counts: about 5 s.
    assert!((4..=8).contains(&age(&hit)), "{hit:?}");
    assert_eq!(hit.header("etag"), Some("\"e1\""));
    assert_eq!(
        hit.header("last-modified"),
        Some(http_date(origin_date - 100).as_str())
    );
    assert_eq!(hit.header_all("age").len(), 1, "{hit:?}");
}

// --- 3. revalidation ---------------------------------------------------------------

#[test]
fn a_304_freshens_the_entry_and_a_200_replaces_it() {
    let o = Origin::start();
    o.set(
        "/r",
        Resource {
            etag: Some("\"v1\"".into()),
            headers_304: "Cache-Control: max-age=600\r\nX-Updated: yes\r\nContent-Length: 99\r\n"
                .into(),
            ..ok(
                "version one",
                "Cache-Control: max-age=1\r\nX-Updated: no\r\n",
            )
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/r", ""), 200, "Miss", "version one");
    std::thread::sleep(Duration::from_millis(1100));
    let r = get(&mut c, "/r", "");
    assert_answer(&r, 200, "Revalidated", "version one");
    // §4.3.4: the 304's fields replace the stored ones, not Content-Length.
    assert_eq!(r.header("x-updated"), Some("yes"), "{r:?}");
    assert_eq!(r.header("content-length"), Some("11"), "{r:?}");
    assert_eq!(r.header("cache-control"), Some("max-age=600"), "{r:?}");
    let seen = o.seen("/r");
    assert!(seen[1].contains("If-None-Match: \"v1\"\r\n"), "{seen:?}");
    // Freshened by the 304's max-age=600: a hit now.
    assert_answer(&get(&mut c, "/r", ""), 200, "Hit", "version one");
    assert_eq!(o.count("/r"), 2);

    // A changed resource: the conditional request gets a 200, which
    // replaces the entry.
    o.set(
        "/r2",
        Resource {
            etag: Some("\"a\"".into()),
            ..ok("old", "Cache-Control: max-age=1\r\n")
        },
    );
    assert_answer(&get(&mut c, "/r2", ""), 200, "Miss", "old");
    o.update("/r2", |r| {
        r.etag = Some("\"b\"".into());
        r.body = "new".into();
        r.headers = "Cache-Control: max-age=600\r\n".into();
    });
    std::thread::sleep(Duration::from_millis(1100));
    assert_answer(&get(&mut c, "/r2", ""), 200, "Miss", "new");
    let hit = get(&mut c, "/r2", "");
    assert_answer(&hit, 200, "Hit", "new");
    assert_eq!(hit.header("etag"), Some("\"b\""));
    assert_eq!((o.count("/r2"), o.conditional("/r2")), (2, 1));
}

#[test]
fn no_cache_from_the_origin_stores_but_revalidates_every_use() {
    let o = Origin::start();
    o.set(
        "/nc",
        Resource {
            etag: Some("\"n\"".into()),
            ..ok("nc", "Cache-Control: no-cache, max-age=600\r\n")
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/nc", ""), 200, "Miss", "nc");
    for _ in 0..3 {
        assert_answer(&get(&mut c, "/nc", ""), 200, "Revalidated", "nc");
    }
    assert_eq!((o.count("/nc"), o.conditional("/nc")), (4, 3));
}

#[test]
fn no_cache_and_max_age_zero_from_the_client_revalidate() {
    let o = Origin::start();
    o.set(
        "/c",
        Resource {
            etag: Some("\"c\"".into()),
            ..ok("c", "Cache-Control: max-age=600\r\n")
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/c", ""), 200, "Miss", "c");
    assert_answer(&get(&mut c, "/c", ""), 200, "Hit", "c");
    for h in [
        "Cache-Control: no-cache\r\n",
        "Cache-Control: max-age=0\r\n",
        "Pragma: no-cache\r\n",
    ] {
        assert_answer(&get(&mut c, "/c", h), 200, "Revalidated", "c");
    }
    // max-age=N accepts an entry younger than N.
    assert_answer(
        &get(&mut c, "/c", "Cache-Control: max-age=60\r\n"),
        200,
        "Hit",
        "c",
    );
    assert_eq!((o.count("/c"), o.conditional("/c")), (4, 3));
}

#[test]
fn only_if_cached_and_max_stale() {
    let o = Origin::start();
    o.set(
        "/oic",
        Resource {
            etag: Some("\"o\"".into()),
            ..ok("oic", "Cache-Control: max-age=1\r\n")
        },
    );
    o.set(
        "/strict",
        Resource {
            etag: Some("\"s\"".into()),
            ..ok("strict", "Cache-Control: max-age=1, must-revalidate\r\n")
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    // Nothing stored: 504, and the origin is not asked.
    let r = get(&mut c, "/oic", "Cache-Control: only-if-cached\r\n");
    r.assert_gateway_error(504, r#"{"message":"Not in cache"}"#);
    assert_eq!(o.count("/oic"), 0);
    assert_answer(&get(&mut c, "/oic", ""), 200, "Miss", "oic");
    assert_answer(
        &get(&mut c, "/oic", "Cache-Control: only-if-cached\r\n"),
        200,
        "Hit",
        "oic",
    );
    assert_answer(&get(&mut c, "/strict", ""), 200, "Miss", "strict");
    std::thread::sleep(Duration::from_millis(1100));
    // Stale: max-stale takes it as it is, unless it must be revalidated.
    assert_answer(
        &get(&mut c, "/oic", "Cache-Control: max-stale\r\n"),
        200,
        "Stale",
        "oic",
    );
    assert_answer(
        &get(&mut c, "/oic", "Cache-Control: max-stale=60\r\n"),
        200,
        "Stale",
        "oic",
    );
    assert_answer(
        &get(&mut c, "/strict", "Cache-Control: max-stale\r\n"),
        200,
        "Revalidated",
        "strict",
    );
    let r = get(&mut c, "/oic", "Cache-Control: only-if-cached\r\n");
    assert_eq!(r.status, 504, "{r:?}");
    assert_answer(
        &get(
            &mut c,
            "/oic",
            "Cache-Control: only-if-cached, max-stale\r\n",
        ),
        200,
        "Stale",
        "oic",
    );
    assert_eq!((o.count("/oic"), o.count("/strict")), (1, 2));
}

#[test]
fn one_revalidation_per_key_under_a_stampede() {
    let o = Origin::start();
    o.set(
        "/st",
        Resource {
            etag: Some("\"s\"".into()),
            headers_304: "Cache-Control: max-age=600\r\n".into(),
            ..ok("stampede", "Cache-Control: max-age=1\r\n")
        },
    );
    let gw = gateway(&o, "");
    assert_answer(&get(&mut gw.client(), "/st", ""), 200, "Miss", "stampede");
    std::thread::sleep(Duration::from_millis(1100));
    o.update("/st", |r| r.delay_ms = 400);
    let addr = gw.addr();
    let answers: Vec<Response> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(move || get(&mut support::connect(addr), "/st", "")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &answers {
        assert_eq!((r.status, r.text().as_str()), (200, "stampede"), "{r:?}");
    }
    assert_eq!(o.conditional("/st"), 1, "{:?}", o.seen("/st"));
    assert_eq!(o.count("/st"), 2);
}

// --- 4. clients' conditional requests --------------------------------------------------

#[test]
fn conditional_requests_are_answered_304_from_the_cache() {
    let o = Origin::start();
    let lm = now_secs() - 3600;
    o.set(
        "/cond",
        Resource {
            etag: Some("W/\"w1\"".into()),
            last_modified: Some(lm),
            ..ok("conditional", "Cache-Control: max-age=600\r\n")
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/cond", ""), 200, "Miss", "conditional");
    let r = get(&mut c, "/cond", "If-None-Match: \"x\", \"w1\"\r\n");
    assert_eq!((r.status, cs(&r)), (304, "Hit"), "{r:?}");
    assert!(
        r.body.is_empty() && r.header("content-length").is_none(),
        "{r:?}"
    );
    assert_eq!(r.header("etag"), Some("W/\"w1\""));
    let r = get(
        &mut c,
        "/cond",
        &format!("If-Modified-Since: {}\r\n", http_date(lm)),
    );
    assert_eq!(r.status, 304, "{r:?}");
    // No match: the full response.
    assert_answer(
        &get(&mut c, "/cond", "If-None-Match: \"other\"\r\n"),
        200,
        "Hit",
        "conditional",
    );
    let earlier = http_date(lm - 10);
    assert_answer(
        &get(
            &mut c,
            "/cond",
            &format!("If-Modified-Since: {earlier}\r\n"),
        ),
        200,
        "Hit",
        "conditional",
    );
    // If-None-Match takes precedence over If-Modified-Since.
    let both = format!(
        "If-None-Match: \"other\"\r\nIf-Modified-Since: {}\r\n",
        http_date(lm)
    );
    assert_eq!(get(&mut c, "/cond", &both).status, 200);
    assert_eq!(o.count("/cond"), 1);
}

// --- 5. invalidation -------------------------------------------------------------------

#[test]
fn unsafe_methods_invalidate_the_target_and_its_location() {
    let o = Origin::start();
    o.set("/items", ok("list", "Cache-Control: max-age=600\r\n"));
    o.set(
        "/items/7",
        ok(
            "item",
            "Cache-Control: max-age=600\r\nLocation: /s/items\r\n",
        ),
    );
    o.set(
        "/missing",
        Resource {
            status: 404,
            ..ok("", "Cache-Control: max-age=600\r\n")
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/items", ""), 200, "Miss", "list");
    assert_answer(&get(&mut c, "/items/7", ""), 200, "Miss", "item");
    assert_answer(&get(&mut c, "/items", ""), 200, "Hit", "list");
    // PUT /items/7 answers 200 with Location: /s/items: both go.
    let r = c.request("PUT /s/items/7 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(r.status, 200, "{r:?}");
    assert_answer(&get(&mut c, "/items/7", ""), 200, "Miss", "item");
    assert_answer(&get(&mut c, "/items", ""), 200, "Miss", "list");
    // An error answer invalidates nothing.
    assert_answer(&get(&mut c, "/missing", ""), 404, "Miss", "");
    let r = c.request("DELETE /s/items HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_answer(&get(&mut c, "/items", ""), 200, "Miss", "list");
    o.update("/items", |r| r.status = 500);
    let r = c.request("POST /s/items HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 500, "{r:?}");
    o.update("/items", |r| r.status = 200);
    assert_answer(&get(&mut c, "/items", ""), 200, "Hit", "list");
}

// --- 6. Vary ------------------------------------------------------------------------

#[test]
fn responses_that_vary_are_stored_as_variants() {
    let o = Origin::start();
    o.set(
        "/v",
        ok(
            "variant",
            "Cache-Control: max-age=600\r\nVary: Accept-Encoding, X-Tenant\r\n",
        ),
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    let gzip = "Accept-Encoding: gzip\r\nX-Tenant: a\r\n";
    let br = "Accept-Encoding: br\r\nX-Tenant: a\r\n";
    assert_answer(&get(&mut c, "/v", gzip), 200, "Miss", "variant");
    assert_answer(&get(&mut c, "/v", gzip), 200, "Hit", "variant");
    // Another value of a Vary header: another variant, fetched once.
    assert_answer(&get(&mut c, "/v", br), 200, "Miss", "variant");
    assert_answer(&get(&mut c, "/v", br), 200, "Hit", "variant");
    assert_answer(&get(&mut c, "/v", gzip), 200, "Hit", "variant");
    // A request without the headers is a variant of its own.
    assert_answer(&get(&mut c, "/v", ""), 200, "Miss", "variant");
    assert_answer(&get(&mut c, "/v", ""), 200, "Hit", "variant");
    assert_eq!(o.count("/v"), 3);
    // The origin stops varying: its answer replaces the variants.
    o.update("/v", |r| {
        r.headers = "Cache-Control: max-age=600\r\n".into()
    });
    let before = o.count("/v");
    assert_answer(
        &get(&mut c, "/v", "Accept-Encoding: zstd\r\n"),
        200,
        "Miss",
        "variant",
    );
    assert_answer(
        &get(&mut c, "/v", "Accept-Encoding: deflate\r\n"),
        200,
        "Hit",
        "variant",
    );
    assert_eq!(o.count("/v") - before, 1);
    // Invalidation by an unsafe method removes every variant.
    o.set(
        "/w",
        ok(
            "w",
            "Cache-Control: max-age=600\r\nVary: Accept-Encoding\r\n",
        ),
    );
    for ae in ["gzip", "br"] {
        let h = format!("Accept-Encoding: {ae}\r\n");
        assert_answer(&get(&mut c, "/w", &h), 200, "Miss", "w");
        assert_answer(&get(&mut c, "/w", &h), 200, "Hit", "w");
    }
    let r = c.request("POST /s/w HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    for ae in ["gzip", "br"] {
        let h = format!("Accept-Encoding: {ae}\r\n");
        assert_answer(&get(&mut c, "/w", &h), 200, "Miss", "w");
    }
}

#[test]
fn variants_per_url_are_bounded_and_vary_star_is_never_stored() {
    let o = Origin::start();
    o.set(
        "/many",
        ok("m", "Cache-Control: max-age=600\r\nVary: X-Id\r\n"),
    );
    o.set(
        "/star",
        ok("s", "Cache-Control: max-age=600\r\nVary: *\r\n"),
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    for i in 0..20 {
        let h = format!("X-Id: {i}\r\n");
        assert_answer(&get(&mut c, "/many", &h), 200, "Miss", "m");
    }
    // The first 16 values were stored; the rest pass through.
    assert_answer(&get(&mut c, "/many", "X-Id: 3\r\n"), 200, "Hit", "m");
    assert_answer(&get(&mut c, "/many", "X-Id: 19\r\n"), 200, "Miss", "m");
    assert_answer(&get(&mut c, "/star", ""), 200, "Miss", "s");
    assert_answer(&get(&mut c, "/star", ""), 200, "Miss", "s");
}

// --- 7. stale content -----------------------------------------------------------------

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let o = Origin::start();
    o.set(
        "/swr",
        Resource {
            etag: Some("\"1\"".into()),
            ..ok(
                "one",
                "Cache-Control: max-age=1, stale-while-revalidate=60\r\n",
            )
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/swr", ""), 200, "Miss", "one");
    o.update("/swr", |r| {
        r.etag = Some("\"2\"".into());
        r.body = "two".into();
    });
    std::thread::sleep(Duration::from_millis(1100));
    // Stale at once; the refresh follows on this connection.
    assert_answer(&get(&mut c, "/swr", ""), 200, "Stale", "one");
    let refreshed = support::poll_until(Duration::from_secs(5), || {
        let r = get(&mut gw.client(), "/swr", "");
        (r.text() == "two").then_some(r)
    })
    .expect("the entry was refreshed");
    assert_eq!(cs(&refreshed), "Hit", "{refreshed:?}");
    assert_eq!(o.count("/swr"), 2, "{:?}", o.seen("/swr"));
    assert_eq!(o.conditional("/swr"), 1);
}

#[test]
fn stale_if_error_from_the_origin_and_must_revalidate() {
    let o = Origin::start();
    o.set(
        "/sie",
        ok("kept", "Cache-Control: max-age=1, stale-if-error=60\r\n"),
    );
    o.set(
        "/strict",
        ok(
            "strict",
            "Cache-Control: max-age=1, stale-if-error=60, must-revalidate\r\n",
        ),
    );
    let addr = o.addr();
    let toml = format!(
        "{SERVER}[[api]]\nname = \"c\"\n[[api.stage]]\nname = \"s\"\n\
         [api.stage.cache]\ncapacity = \"64MiB\"\nstatus_header = true\n\
         respect_origin_cache_control = true\n\
         [[api.route]]\nroute = \"GET /{{proxy+}}\"\n[api.route.http_proxy]\n\
         uri = \"http://{addr}/{{proxy}}\"\ntimeout = \"2s\"\n[api.route.cache]\nkey_parameters = [\"path.proxy\"]\n"
    );
    let gw = TestServer::start(&toml);
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/sie", ""), 200, "Miss", "kept");
    assert_answer(&get(&mut c, "/strict", ""), 200, "Miss", "strict");
    drop(o);
    std::thread::sleep(Duration::from_millis(1100));
    // The origin is gone (connections refused).
    let r = get(&mut gw.client(), "/sie", "");
    assert_answer(&r, 200, "Stale", "kept");
    let r = get(&mut gw.client(), "/strict", "");
    assert_eq!(
        r.status, 504,
        "must-revalidate forbids a stale answer: {r:?}"
    );
}

// --- 8. targeted fields ------------------------------------------------------------------

#[test]
fn cdn_cache_control_overrides_and_is_not_forwarded() {
    let o = Origin::start();
    o.set(
        "/cdn",
        ok(
            "cdn",
            "Cache-Control: no-store\r\nCDN-Cache-Control: max-age=600\r\n",
        ),
    );
    o.set(
        "/own",
        ok(
            "own",
            "CDN-Cache-Control: no-store\r\nRinggate-Cache-Control: max-age=600\r\nCache-Control: private\r\n",
        ),
    );
    let gw = gateway(&o, "targeted_cache_control = \"Ringgate-Cache-Control\"");
    let mut c = gw.client();
    for (path, body) in [("/cdn", "cdn"), ("/own", "own")] {
        let miss = get(&mut c, path, "");
        assert_answer(&miss, 200, "Miss", body);
        let hit = get(&mut c, path, "");
        assert_answer(&hit, 200, "Hit", body);
        for r in [&miss, &hit] {
            assert!(r.header("cdn-cache-control").is_none(), "{r:?}");
            assert!(r.header("ringgate-cache-control").is_none(), "{r:?}");
        }
        assert_eq!(o.count(path), 1, "{path}");
    }
    // Cache-Control itself still reaches the client.
    assert_eq!(
        get(&mut c, "/cdn", "").header("cache-control"),
        Some("no-store")
    );
}

// --- 9. ranges -------------------------------------------------------------------

#[test]
fn single_ranges_are_answered_206_from_the_cache() {
    let o = Origin::start();
    o.set(
        "/digits",
        Resource {
            etag: Some("\"d\"".into()),
            ..ok(
                "0123456789",
                "Cache-Control: max-age=600\r\nContent-Type: text/plain\r\n",
            )
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/digits", ""), 200, "Miss", "0123456789");
    let r = get(&mut c, "/digits", "Range: bytes=2-5\r\n");
    assert_answer(&r, 206, "Hit", "2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");
    let r = get(&mut c, "/digits", "Range: bytes=-3\r\n");
    assert_answer(&r, 206, "Hit", "789");
    assert_eq!(r.header("content-range"), Some("bytes 7-9/10"));
    let r = get(&mut c, "/digits", "Range: bytes=7-\r\n");
    assert_answer(&r, 206, "Hit", "789");
    let r = get(&mut c, "/digits", "Range: bytes=20-\r\n");
    assert_eq!((r.status, r.text().as_str()), (416, ""), "{r:?}");
    assert_eq!(r.header("content-range"), Some("bytes */10"), "{r:?}");
    // Several ranges, or another unit: the whole entry.
    assert_answer(
        &get(&mut c, "/digits", "Range: bytes=0-1,4-5\r\n"),
        200,
        "Hit",
        "0123456789",
    );
    assert_answer(
        &get(&mut c, "/digits", "Range: items=0-1\r\n"),
        200,
        "Hit",
        "0123456789",
    );
    // If-Range: the range only while the entity tag still matches.
    let r = get(&mut c, "/digits", "Range: bytes=0-0\r\nIf-Range: \"d\"\r\n");
    assert_answer(&r, 206, "Hit", "0");
    let r = get(
        &mut c,
        "/digits",
        "Range: bytes=0-0\r\nIf-Range: \"old\"\r\n",
    );
    assert_answer(&r, 200, "Hit", "0123456789");
    // HEAD ignores Range.
    c.send("HEAD /s/digits HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("10"), "{r:?}");
    assert_eq!(o.count("/digits"), 1);
}

// --- 10. never stored ------------------------------------------------------------------

#[test]
fn what_is_never_stored() {
    let o = Origin::start();
    o.set("/ns", ok("ns", "Cache-Control: no-store\r\n"));
    o.set("/pr", ok("pr", "Cache-Control: private, max-age=600\r\n"));
    o.set(
        "/ck",
        ok("ck", "Cache-Control: max-age=600\r\nSet-Cookie: a=b\r\n"),
    );
    o.set("/auth", ok("auth", "Cache-Control: max-age=600\r\n"));
    o.set("/pub", ok("pub", "Cache-Control: public, max-age=600\r\n"));
    o.set(
        "/part",
        Resource {
            status: 206,
            ..ok(
                "part",
                "Cache-Control: max-age=600\r\nContent-Range: bytes 0-3/10\r\n",
            )
        },
    );
    let gw = gateway(&o, "");
    let mut c = gw.client();
    for (path, status, body) in [
        ("/ns", 200, "ns"),
        ("/pr", 200, "pr"),
        ("/ck", 200, "ck"),
        ("/part", 206, "part"),
    ] {
        assert_answer(&get(&mut c, path, ""), status, "Miss", body);
        assert_answer(&get(&mut c, path, ""), status, "Miss", body);
        assert_eq!(o.count(path), 2, "{path}");
    }
    let auth = "Authorization: Bearer t\r\n";
    assert_answer(&get(&mut c, "/auth", auth), 200, "Miss", "auth");
    assert_answer(&get(&mut c, "/auth", auth), 200, "Miss", "auth");
    assert_answer(&get(&mut c, "/pub", auth), 200, "Miss", "pub");
    assert_answer(&get(&mut c, "/pub", auth), 200, "Hit", "pub");
    // The stage may allow Set-Cookie.
    drop(gw);
    let gw = gateway(&o, "store_set_cookie = true");
    let mut c = gw.client();
    assert_answer(&get(&mut c, "/ck", ""), 200, "Miss", "ck");
    let hit = get(&mut c, "/ck", "");
    assert_answer(&hit, 200, "Hit", "ck");
    assert_eq!(hit.header("set-cookie"), Some("a=b"));
}

#[test]
fn client_no_store_goes_around_the_cache() {
    let o = Origin::start();
    o.set("/cns", ok("cns", "Cache-Control: max-age=600\r\n"));
    let gw = gateway(&o, "");
    let mut c = gw.client();
    assert_answer(
        &get(&mut c, "/cns", "Cache-Control: no-store\r\n"),
        200,
        "Bypass",
        "cns",
    );
    assert_answer(&get(&mut c, "/cns", ""), 200, "Miss", "cns");
    assert_answer(&get(&mut c, "/cns", ""), 200, "Hit", "cns");
}
