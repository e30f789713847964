//! Throttling through the real server: each route's bucket in its stage
//! (the stage default or the route's own limit), the account level over
//! everything, 429 as API Gateway answers it, a refusal at one level taking
//! nothing from the other, bucket state kept across reloads that leave a
//! limit alone, an admin change to a pinned stage's limits, and the
//! accuracy of a stage limit with two workers under load.
//!
//! Limits with a tiny rate (0.001/s) make the counts exact: a bucket admits
//! its burst and nothing more for the length of a test.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringgate::control::StagePatch;
use ringgate::server::StartOptions;
use support::{Client, TestServer};

const SLOW: &str = "rate = 0.001";

fn config(account: &str, stage_lines: &str, workers: usize) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = {workers}
pin_workers = false
drain_timeout = "2s"

{account}

[[api]]
name = "t"
  [[api.stage]]
  name = "prod"
  {stage_lines}
  [[api.stage]]
  name = "other"
  [[api.route]]
  route = "GET /a"
  mock = {{ body = "a" }}
  [[api.route]]
  route = "GET /b"
  mock = {{ body = "b" }}
  [[api.route]]
  route = "GET /c"
  mock = {{ body = "c" }}
"#
    )
}

fn start(account: &str, stage_lines: &str) -> TestServer {
    TestServer::start(&config(account, stage_lines, 1))
}

/// Sends `n` requests on one keep-alive connection; how many got 200.
fn admitted(c: &mut Client, path: &str, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let r = c.get(path);
        match r.status {
            200 => ok += 1,
            429 => {
                assert_eq!(r.text(), r#"{"message":"Too Many Requests"}"#);
                assert_eq!(
                    r.header("x-amzn-errortype"),
                    Some("TooManyRequestsException")
                );
                assert_eq!(r.header("content-type"), Some("application/json"));
                assert!(r.header("x-request-id").is_some());
            }
            s => panic!("{path}: unexpected status {s}: {}", r.text()),
        }
    }
    ok
}

#[test]
fn each_route_has_its_own_bucket_under_the_stage_default() {
    let srv = start(
        "[throttle]\nrate = -1",
        &format!(
            "throttle = {{ {SLOW}, burst = 3 }}\n  \
             route_throttle = {{ \"GET /b\" = {{ {SLOW}, burst = 1 }} }}"
        ),
    );
    let mut c = srv.client();
    assert_eq!(admitted(&mut c, "/prod/a", 10), 3);
    assert_eq!(admitted(&mut c, "/prod/b", 10), 1);
    // /c has the stage default in a bucket of its own.
    assert_eq!(admitted(&mut c, "/prod/c", 10), 3);
    // Another stage without limits is not touched.
    assert_eq!(admitted(&mut c, "/other/a", 50), 50);
    // The connection stayed open through every 429.
    assert_eq!(c.get("/other/b").status, 200);
}

#[test]
fn the_account_limit_covers_every_stage() {
    let srv = start(&format!("[throttle]\n{SLOW}\nburst = 5"), "");
    let mut c = srv.client();
    let total = admitted(&mut c, "/prod/a", 4) + admitted(&mut c, "/other/b", 4);
    assert_eq!(total, 5);
}

#[test]
fn a_refusal_at_the_route_takes_nothing_from_the_account() {
    let srv = start(
        &format!("[throttle]\n{SLOW}\nburst = 5"),
        &format!("route_throttle = {{ \"GET /a\" = {{ {SLOW}, burst = 1 }} }}"),
    );
    let mut c = srv.client();
    // One admitted, nine refused by the route's bucket...
    assert_eq!(admitted(&mut c, "/prod/a", 10), 1);
    // ... which cost the account only the one: four left.
    assert_eq!(admitted(&mut c, "/prod/b", 10), 4);
}

#[test]
fn reloads_keep_a_bucket_whose_limit_is_unchanged() {
    let text = |body: &str, burst: u32| {
        config(
            "[throttle]\nrate = -1",
            &format!("throttle = {{ {SLOW}, burst = {burst} }}"),
            1,
        )
        .replace("body = \"a\"", &format!("body = \"{body}\""))
    };
    let srv = TestServer::start(&text("a", 2));
    let mut c = srv.client();
    assert_eq!(admitted(&mut c, "/prod/a", 5), 2);
    let control = srv.server().control();
    // Another body, the same limit: the bucket is still empty.
    control
        .apply_config(ringgate::config::parse(&text("a2", 2), "t.toml").unwrap())
        .unwrap();
    assert_eq!(admitted(&mut c, "/prod/a", 5), 0);
    // A changed limit starts a full bucket.
    control
        .apply_config(ringgate::config::parse(&text("a3", 4), "t.toml").unwrap())
        .unwrap();
    assert_eq!(admitted(&mut c, "/prod/a", 10), 4);
    assert_eq!(c.get("/other/a").text(), "a3");
}

#[test]
fn a_pinned_stage_takes_its_limits_from_the_admin() {
    let text = config("[throttle]\nrate = -1", "auto_deploy = false", 1);
    let cfg = ringgate::config::parse(&text, "t.toml").unwrap();
    let srv = TestServer::start_config(cfg, StartOptions::default());
    let mut c = srv.client();
    assert_eq!(admitted(&mut c, "/prod/a", 20), 20);
    let control = srv.server().control();
    let patch = StagePatch {
        route_throttle: [(
            "GET /a".to_string(),
            Some(ringgate::config::ThrottleLimit {
                rate: 0.001,
                burst: 2,
            }),
        )]
        .into(),
        ..StagePatch::default()
    };
    control.update_stage("t", "prod", &patch).unwrap();
    assert_eq!(admitted(&mut c, "/prod/a", 5), 2);
    assert_eq!(admitted(&mut c, "/prod/b", 5), 5);
    // An unknown route is refused and changes nothing.
    let bad = StagePatch {
        route_throttle: [(
            "GET /nope".to_string(),
            Some(ringgate::config::ThrottleLimit {
                rate: 1.0,
                burst: 1,
            }),
        )]
        .into(),
        ..StagePatch::default()
    };
    let e = control.update_stage("t", "prod", &bad).unwrap_err();
    assert_eq!(e.status, 400, "{e}");
    assert_eq!(admitted(&mut c, "/prod/a", 5), 0);
}

/// Two workers, a stage limit of 1,000 rps with a burst of 100, and ten
/// seconds of load well above it: the admitted count is within 3 % of the
/// allowance, burst + rate × elapsed.
#[test]
fn a_stage_limit_holds_across_two_workers() {
    let srv = TestServer::start(&config(
        "[throttle]\nrate = -1",
        "throttle = { rate = 1000, burst = 100 }",
        2,
    ));
    let addr = srv.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, refused) = (stop.clone(), ok.clone(), refused.clone());
            std::thread::spawn(move || {
                // Several connections, so both workers serve some.
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    match c.get("/prod/a").status {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        429 => refused.fetch_add(1, Ordering::Relaxed),
                        s => panic!("status {s}"),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let admitted = ok.load(Ordering::Relaxed) as f64;
    let allowance = 100.0 + 1000.0 * elapsed;
    let refused = refused.load(Ordering::Relaxed);
    eprintln!(
        "admitted {admitted} of {} in {elapsed:.2} s; allowance {allowance:.0}; ratio {:.4}",
        admitted as u64 + refused,
        admitted / allowance
    );
    assert!(
        refused as f64 > admitted,
        "the load was not well above the limit ({refused} refused)"
    );
    assert!(
        (0.97..=1.03).contains(&(admitted / allowance)),
        "admitted {admitted}, allowance {allowance:.0}"
    );
}

const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-0123456789abcdefgh";
const CAROL: &str = "carol-0123456789abcdef";
const DAVE: &str = "dave-0123456789abcdefg";

/// API keys and a usage plan: `GET /a` and `GET /b` require a key, `GET
/// /c` does not; plan `gold` (alice, bob, carol — disabled) covers stage
/// prod with 3 requests per key and 1 per key on `GET /b`; dave is in no
/// plan.
fn keyed() -> TestServer {
    let text = config("[throttle]\nrate = -1", "", 1)
        .replace(
            "route = \"GET /a\"",
            "route = \"GET /a\"\n  api_key_required = true",
        )
        .replace(
            "route = \"GET /b\"",
            "route = \"GET /b\"\n  api_key_required = true",
        )
        + &format!(
            r#"
[[api_key]]
name = "alice"
value = "{ALICE}"
[[api_key]]
name = "bob"
value = "{BOB}"
[[api_key]]
name = "carol"
value = "{CAROL}"
enabled = false
[[api_key]]
name = "dave"
value = "{DAVE}"

[[usage_plan]]
name = "gold"
throttle = {{ {SLOW}, burst = 3 }}
keys = ["alice", "bob", "carol"]
  [[usage_plan.stage]]
  api = "t"
  stage = "prod"
  route_throttle = {{ "GET /b" = {{ {SLOW}, burst = 1 }} }}
"#
        );
    TestServer::start(&text)
}

fn with_key(c: &mut Client, path: &str, key: Option<&str>) -> support::Response {
    let header = key.map_or(String::new(), |k| format!("x-api-key: {k}\r\n"));
    c.request(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\n"))
}

#[test]
fn api_keys_are_checked_on_the_routes_that_require_them() {
    let srv = keyed();
    let mut c = srv.client();
    for key in [
        None,
        Some("no-such-key-0123456789"),
        Some(CAROL),
        Some(DAVE),
    ] {
        let r = with_key(&mut c, "/prod/a", key);
        assert_eq!(r.status, 403, "{key:?}: {}", r.text());
        assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
    }
    // A stage the plan does not cover.
    assert_eq!(with_key(&mut c, "/other/a", Some(ALICE)).status, 403);
    // A route without api_key_required ignores keys and plans.
    for _ in 0..10 {
        assert_eq!(with_key(&mut c, "/prod/c", Some(ALICE)).status, 200);
        assert_eq!(with_key(&mut c, "/prod/c", None).status, 200);
    }
}

#[test]
fn a_usage_plan_limits_each_key_on_its_own() {
    let srv = keyed();
    let mut c = srv.client();
    let count = |c: &mut Client, path: &str, key: &str, n: usize| {
        (0..n)
            .filter(|_| {
                let r = with_key(c, path, Some(key));
                assert!(r.status == 200 || r.status == 429, "{}", r.status);
                r.status == 200
            })
            .count()
    };
    // GET /b: one per key; the refused ones cost the key's bucket nothing.
    assert_eq!(count(&mut c, "/prod/b", ALICE, 5), 1);
    // The key's bucket (3) has two left.
    assert_eq!(count(&mut c, "/prod/a", ALICE, 5), 2);
    // Bob has buckets of his own.
    assert_eq!(count(&mut c, "/prod/a", BOB, 5), 3);
}
