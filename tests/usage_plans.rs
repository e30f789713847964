//! API keys, usage plans, quotas and usage through the real server and its
//! admin socket: keys created (with generated values) and attached to a
//! plan with a daily quota, every 403 case, quota exhaustion and its reset
//! at the period boundary (on the gateway's shifted quota clock), the usage
//! report equal to what was sent, an extension, a route without
//! `api_key_required` ignoring the plan, CSV import, bad requests refused
//! with nothing changed, the file's keys read-only, and usage that survives
//! a restart and `kill -9` (losing at most one flush interval).

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringgate::admin::client::{request, Endpoint};
use ringgate::server::StartOptions;
use ringgate::throttle::quota::{format_day, DAY_SECS};
use serde_json::{json, Value};
use support::{BinaryServer, Client, TestServer};

const FILE_KEY: &str = "file-key-0123456789abcdef";

fn config(state: &Path, extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
pin_workers = false
drain_timeout = "2s"

[state]
dir = "{state}"

[throttle]
rate = -1

[[api]]
name = "t"
  [[api.stage]]
  name = "prod"
  [[api.stage]]
  name = "beta"
  [[api.route]]
  route = "GET /a"
  mock = {{ body = "a" }}
  api_key_required = true
  [[api.route]]
  route = "GET /b"
  mock = {{ body = "b" }}
  api_key_required = true
  [[api.route]]
  route = "GET /free"
  mock = {{ body = "free" }}

[[api_key]]
name = "filekey"
value = "{FILE_KEY}"

[[usage_plan]]
name = "fileplan"
quota = {{ limit = 3, period = "DAY" }}
keys = ["filekey"]
  [[usage_plan.stage]]
  api = "t"
  stage = "beta"
{extra}
"#,
        state = state.display()
    )
}

struct Gateway {
    dir: PathBuf,
    server: Option<TestServer>,
}

impl Gateway {
    fn start(name: &str) -> Gateway {
        let dir = support::temp_path(name).with_extension("d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("gw.toml"), config(&dir.join("state"), "")).unwrap();
        let mut g = Gateway { dir, server: None };
        g.boot();
        g
    }

    fn boot(&mut self) {
        let path = self.dir.join("gw.toml");
        let cfg = ringgate::config::load(&path).unwrap();
        self.server = Some(TestServer::start_config(
            cfg,
            StartOptions {
                config_path: Some(path),
                durable_state: true,
                admin: true,
                ..StartOptions::default()
            },
        ));
    }

    fn server(&self) -> &TestServer {
        self.server.as_ref().unwrap()
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.dir.join("state").join("admin.sock"))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.endpoint(), method, path, body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// Shifts the gateway's quota clock by `secs`.
    fn shift_clock(&self, secs: i64) {
        self.server().server().control().usage().clock().shift(secs);
    }

    fn today(&self) -> u64 {
        self.server().server().control().usage().clock().unix_secs() / DAY_SECS
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn call(endpoint: &Endpoint, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string().into_bytes());
    let reply = request(endpoint, method, path, body.as_deref())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = if reply.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&reply.body)
            )
        })
    };
    (reply.status, v)
}

/// GET `path` with `x-api-key: key` (none when `key` is empty).
fn get(c: &mut Client, path: &str, key: &str) -> support::Response {
    let header = if key.is_empty() {
        String::new()
    } else {
        format!("x-api-key: {key}\r\n")
    };
    c.request(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{header}\r\n"))
}

/// Sends `n` requests; counts (200, 429 Limit Exceeded), panicking on
/// anything else.
fn send(c: &mut Client, path: &str, key: &str, n: usize) -> (usize, usize) {
    let (mut ok, mut quota) = (0, 0);
    for _ in 0..n {
        let r = get(c, path, key);
        match r.status {
            200 => ok += 1,
            429 => {
                assert_eq!(r.text(), r#"{"message":"Limit Exceeded"}"#);
                assert_eq!(r.header("x-amzn-errortype"), Some("LimitExceededException"));
                quota += 1;
            }
            s => panic!("{path}: {s} {}", r.text()),
        }
    }
    (ok, quota)
}

fn forbidden(c: &mut Client, path: &str, key: &str) {
    let r = get(c, path, key);
    assert_eq!(r.status, 403, "{path} with {key:?}: {}", r.text());
    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
    assert_eq!(r.header("x-amzn-errortype"), Some("ForbiddenException"));
}

/// The plan's usage report for `from..=to` (days), as `key -> [[used, remaining]]`.
fn report(g: &Gateway, plan: &str, from: u64, to: u64) -> Value {
    let v = g.ok(
        "GET",
        &format!(
            "/usageplans/{plan}/usage?startDate={}&endDate={}",
            format_day(from),
            format_day(to)
        ),
        None,
    );
    assert_eq!(v["usagePlanId"], plan);
    assert_eq!(v["startDate"], format_day(from));
    v["items"].clone()
}

#[test]
fn keys_plans_quota_and_usage_through_the_socket() {
    let g = Gateway::start("plans");
    let plan = g.ok(
        "POST",
        "/usageplans",
        Some(json!({
            "name": "gold",
            "throttle": { "rate": 1000, "burst": 1000 },
            "quota": { "limit": 5, "period": "DAY" },
            "stages": [{ "api": "t", "stage": "prod" }],
        })),
    );
    let plan_id = plan["id"].as_str().unwrap().to_string();
    assert_eq!(plan_id.len(), 10);
    assert_eq!(plan["quota"]["period"], "DAY");
    // A generated value, shown at creation.
    let key = g.ok(
        "POST",
        "/apikeys",
        Some(json!({ "name": "alice", "usage_plan_ids": [plan_id] })),
    );
    let key_id = key["id"].as_str().unwrap().to_string();
    let value = key["value"].as_str().unwrap().to_string();
    assert_eq!(value.len(), 40);
    assert!(value.bytes().all(|b| b.is_ascii_alphanumeric()));
    // Not shown again unless asked for.
    let read = g.ok("GET", &format!("/apikeys/{key_id}"), None);
    assert!(read.get("value").is_none());
    assert_eq!(read["usage_plan_ids"], json!([plan_id]));
    let read = g.ok(
        "GET",
        &format!("/apikeys/{key_id}?include_value=true"),
        None,
    );
    assert_eq!(read["value"], value);
    // A second key, with its own quota under the same plan.
    let bob = g.ok(
        "POST",
        "/apikeys",
        Some(json!({ "name": "bob", "value": "bob-0123456789-abcdefghij", "usage_plan_ids": [plan_id] })),
    );
    let bob_id = bob["id"].as_str().unwrap().to_string();

    let mut c = g.server().client();
    // The quota: 5 admitted, then Limit Exceeded.
    assert_eq!(send(&mut c, "/prod/a", &value, 3), (3, 0));
    assert_eq!(send(&mut c, "/prod/b", &value, 4), (2, 2));
    // Bob's quota is his own.
    assert_eq!(
        send(&mut c, "/prod/a", "bob-0123456789-abcdefghij", 1),
        (1, 0)
    );
    // A route without api_key_required ignores the plan, key or not.
    for _ in 0..10 {
        assert_eq!(get(&mut c, "/prod/free", &value).status, 200);
    }
    // Every 403: missing, empty, unknown, not in a plan of this stage.
    forbidden(&mut c, "/prod/a", "");
    forbidden(&mut c, "/prod/a", " ");
    forbidden(&mut c, "/prod/a", "nobody-0123456789-abcdefghij");
    forbidden(&mut c, "/beta/a", &value);
    // Disabled.
    g.ok(
        "PATCH",
        &format!("/apikeys/{key_id}"),
        Some(json!({ "enabled": false })),
    );
    forbidden(&mut c, "/prod/a", &value);
    g.ok(
        "PATCH",
        &format!("/apikeys/{key_id}"),
        Some(json!({ "enabled": true })),
    );

    // The report equals what was sent: 5 used of 5 today, 1 for bob.
    let today = g.today();
    let items = report(&g, &plan_id, today, today);
    assert_eq!(items[&key_id], json!([[5, 0]]));
    assert_eq!(items[&bob_id], json!([[1, 4]]));
    // Filter by key.
    let v = g.ok(
        "GET",
        &format!(
            "/usageplans/{plan_id}/usage?startDate={d}&endDate={d}&keyId={bob_id}",
            d = format_day(today)
        ),
        None,
    );
    assert_eq!(v["items"].as_object().unwrap().len(), 1);
    // Paging over keys.
    let v = g.ok(
        "GET",
        &format!(
            "/usageplans/{plan_id}/usage?startDate={d}&endDate={d}&limit=1",
            d = format_day(today)
        ),
        None,
    );
    assert_eq!(v["items"].as_object().unwrap().len(), 1);
    let pos = v["position"].as_str().unwrap().to_string();
    let v = g.ok(
        "GET",
        &format!(
            "/usageplans/{plan_id}/usage?startDate={d}&endDate={d}&limit=1&position={pos}",
            d = format_day(today)
        ),
        None,
    );
    assert_eq!(v["items"].as_object().unwrap().len(), 1);
    assert!(v.get("position").is_none());

    // Extension: 3 more in this period (API Gateway's UpdateUsage form).
    let p = g.ok(
        "PATCH",
        &format!("/usageplans/{plan_id}/keys/{key_id}/usage"),
        Some(
            json!({ "patchOperations": [{ "op": "replace", "path": "/remaining", "value": "3" }] }),
        ),
    );
    assert_eq!(
        (p["used"].as_u64(), p["remaining"].as_u64()),
        (Some(5), Some(3))
    );
    assert_eq!(send(&mut c, "/prod/a", &value, 5), (3, 2));
    assert_eq!(report(&g, &plan_id, today, today)[&key_id], json!([[8, 0]]));

    // The next day: the quota starts over (the extension does not carry).
    let now = g.server().server().control().usage().clock().unix_secs();
    g.shift_clock(((today + 1) * DAY_SECS - now) as i64 + 5);
    assert_eq!(send(&mut c, "/prod/a", &value, 7), (5, 2));
    let items = report(&g, &plan_id, today, today + 1);
    assert_eq!(items[&key_id], json!([[8, 0], [5, 0]]));
    assert_eq!(items[&bob_id], json!([[1, 4], [0, 5]]));

    // Detached: 403 on the stage; attached again: counted where it was.
    g.ok(
        "DELETE",
        &format!("/usageplans/{plan_id}/keys/{key_id}"),
        None,
    );
    forbidden(&mut c, "/prod/a", &value);
    g.ok(
        "POST",
        &format!("/usageplans/{plan_id}/keys"),
        Some(json!({ "keyId": key_id, "keyType": "API_KEY" })),
    );
    assert_eq!(send(&mut c, "/prod/a", &value, 1), (0, 1));

    // Deleted: 403, and gone from the plan.
    g.ok("DELETE", &format!("/apikeys/{key_id}"), None);
    forbidden(&mut c, "/prod/a", &value);
    let plan = g.ok("GET", &format!("/usageplans/{plan_id}"), None);
    assert_eq!(plan["key_ids"], json!([bob_id]));
}

#[test]
fn file_plans_count_and_stay_read_only() {
    let g = Gateway::start("fileplan");
    let mut c = g.server().client();
    assert_eq!(send(&mut c, "/beta/a", FILE_KEY, 5), (3, 2));
    forbidden(&mut c, "/prod/a", FILE_KEY);
    let today = g.today();
    assert_eq!(
        report(&g, "fileplan", today, today)["filekey"],
        json!([[3, 0]])
    );
    // Read-only on the socket.
    for (method, path, body) in [
        ("PATCH", "/apikeys/filekey", json!({ "enabled": false })),
        ("DELETE", "/apikeys/filekey", Value::Null),
        ("PATCH", "/usageplans/fileplan", json!({ "name": "x" })),
        ("DELETE", "/usageplans/fileplan", Value::Null),
    ] {
        let body = (!body.is_null()).then_some(body);
        let (status, v) = g.call(method, path, body);
        assert_eq!(status, 409, "{method} {path}: {v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("configuration file"),
            "{v}"
        );
    }
    // Extending a file plan's key works (it is usage, not configuration).
    g.ok(
        "PATCH",
        "/usageplans/fileplan/keys/filekey/usage",
        Some(json!({ "remaining": 1 })),
    );
    assert_eq!(send(&mut c, "/beta/a", FILE_KEY, 2), (1, 1));
    // A reload keeps the count.
    g.ok("POST", "/reload", None);
    assert_eq!(send(&mut c, "/beta/a", FILE_KEY, 1), (0, 1));
}

#[test]
fn csv_import_is_all_or_nothing() {
    let g = Gateway::start("csv");
    let plan = g.ok(
        "POST",
        "/usageplans",
        Some(json!({ "name": "p", "stages": [{ "api": "t", "stage": "prod" }] })),
    );
    let plan_id = plan["id"].as_str().unwrap();
    let endpoint = g.endpoint();
    let import = |csv: &str| {
        let r = request(
            &endpoint,
            "POST",
            "/apikeys?mode=import&format=csv",
            Some(csv.as_bytes()),
        )
        .unwrap();
        (r.status, serde_json::from_slice::<Value>(&r.body).unwrap())
    };
    // Line 3 is bad (a short value): nothing is created.
    let (status, v) = import(&format!(
        "Name,key,description,Enabled,usageplanIds\n\
         one,csv-key-one-0123456789abc,first,TRUE,{plan_id}\n\
         two,short,second,TRUE,{plan_id}\n"
    ));
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["field"], "line 3: value");
    assert_eq!(
        g.ok("GET", "/apikeys", None)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A good file: two keys, one disabled, attached to the plan.
    let (status, v) = import(&format!(
        "key,name,enabled,usageplanIds\r\n\
         csv-key-one-0123456789abc,one,true,{plan_id}\r\n\
         \"csv-key-two-0123456789,abc\",\"two, quoted\",FALSE,{plan_id}\r\n"
    ));
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["ids"].as_array().unwrap().len(), 2);
    let mut c = g.server().client();
    assert_eq!(
        get(&mut c, "/prod/a", "csv-key-one-0123456789abc").status,
        200
    );
    forbidden(&mut c, "/prod/a", "csv-key-two-0123456789,abc");
    // The same value twice is refused.
    let (status, _) = import("key\ncsv-key-one-0123456789abc\n");
    assert_eq!(status, 409);
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let g = Gateway::start("badplans");
    let plan = g.ok(
        "POST",
        "/usageplans",
        Some(json!({ "name": "p", "stages": [{ "api": "t", "stage": "prod" }] })),
    );
    let plan_id = plan["id"].as_str().unwrap().to_string();
    let key = g.ok(
        "POST",
        "/apikeys",
        Some(json!({ "name": "k", "usage_plan_ids": [plan_id] })),
    );
    let key_id = key["id"].as_str().unwrap().to_string();
    let other = g.ok(
        "POST",
        "/usageplans",
        Some(json!({ "name": "other", "stages": [{ "api": "t", "stage": "prod" }] })),
    );
    let other_id = other["id"].as_str().unwrap().to_string();
    let before = (
        g.ok("GET", "/apikeys?include_values=true", None),
        g.ok("GET", "/usageplans", None),
    );
    let cases: Vec<(&str, String, Option<Value>, u16, &str)> = vec![
        ("POST", "/apikeys".into(), Some(json!({})), 400, "name"),
        (
            "POST",
            "/apikeys".into(),
            Some(json!({ "name": "x", "value": "short" })),
            400,
            "value",
        ),
        (
            "POST",
            "/apikeys".into(),
            Some(json!({ "name": "x", "value": FILE_KEY })),
            409,
            "value",
        ),
        (
            "POST",
            "/apikeys".into(),
            Some(json!({ "name": "x", "colour": 1 })),
            400,
            "colour",
        ),
        (
            "POST",
            "/apikeys".into(),
            Some(json!({ "name": "x", "usage_plan_ids": ["nope"] })),
            404,
            "usage_plan_ids[0]",
        ),
        (
            "POST",
            "/apikeys".into(),
            Some(json!({ "name": "x", "usage_plan_ids": [plan_id, other_id] })),
            409,
            "",
        ),
        ("POST", "/apikeys?mode=export".into(), None, 400, "mode"),
        (
            "PATCH",
            format!("/apikeys/{key_id}"),
            Some(json!({ "enabled": "yes" })),
            400,
            "enabled",
        ),
        (
            "PATCH",
            "/apikeys/nope".into(),
            Some(json!({ "enabled": false })),
            404,
            "",
        ),
        (
            "POST",
            "/usageplans".into(),
            Some(json!({ "name": "q", "quota": { "limit": 5, "period": "YEAR" } })),
            400,
            "quota.period",
        ),
        (
            "POST",
            "/usageplans".into(),
            Some(json!({ "name": "q", "quota": { "limit": 5, "period": "DAY", "offset": 6 } })),
            400,
            "quota.offset",
        ),
        (
            "POST",
            "/usageplans".into(),
            Some(json!({ "name": "q", "throttle": { "rate": 5 } })),
            400,
            "throttle.burst",
        ),
        (
            "POST",
            "/usageplans".into(),
            Some(json!({ "name": "q", "stages": [{ "api": "t", "stage": "nope" }] })),
            400,
            "stages[0].stage",
        ),
        (
            "POST",
            "/usageplans".into(),
            Some(
                json!({ "name": "q", "stages": [{ "api": "t", "stage": "prod", "route_throttle": { "GET /nope": { "rate": 1, "burst": 1 } } }] }),
            ),
            400,
            "stages[0].route_throttle.GET /nope",
        ),
        (
            "POST",
            format!("/usageplans/{other_id}/keys"),
            Some(json!({ "key_id": key_id })),
            409,
            "",
        ),
        (
            "POST",
            format!("/usageplans/{plan_id}/keys"),
            Some(json!({ "key_id": "filekey" })),
            409,
            "keyId",
        ),
        (
            "POST",
            format!("/usageplans/{plan_id}/keys"),
            Some(json!({ "key_id": key_id })),
            409,
            "",
        ),
        (
            "DELETE",
            format!("/usageplans/{plan_id}/keys/nope"),
            None,
            404,
            "",
        ),
        (
            "GET",
            format!("/usageplans/{plan_id}/usage?startDate=2026-01-01"),
            None,
            400,
            "endDate",
        ),
        (
            "GET",
            format!("/usageplans/{plan_id}/usage?startDate=2026-02-30&endDate=2026-03-01"),
            None,
            400,
            "startDate",
        ),
        (
            "GET",
            format!("/usageplans/{plan_id}/usage?startDate=2026-03-01&endDate=2026-02-01"),
            None,
            400,
            "endDate",
        ),
        (
            "GET",
            format!("/usageplans/{plan_id}/usage?startDate=2020-01-01&endDate=2026-01-01"),
            None,
            400,
            "endDate",
        ),
        (
            "PATCH",
            format!("/usageplans/{plan_id}/keys/{key_id}/usage"),
            Some(json!({ "remaining": 5 })),
            409,
            "",
        ),
        (
            "PATCH",
            format!("/usageplans/{plan_id}"),
            Some(json!({ "quota": { "limit": -1, "period": "DAY" } })),
            400,
            "quota.limit",
        ),
        ("PUT", "/usageplans".into(), None, 405, ""),
    ];
    for (method, path, body, status, field) in cases {
        let (got, v) = g.call(method, &path, body.clone());
        assert_eq!(got, status, "{method} {path} {body:?}: {v}");
        if !field.is_empty() {
            assert_eq!(v["field"], field, "{method} {path}: {v}");
        }
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let after = (
        g.ok("GET", "/apikeys?include_values=true", None),
        g.ok("GET", "/usageplans", None),
    );
    assert_eq!(before, after);
}

#[test]
fn keys_plans_and_usage_survive_a_restart_and_kill_9() {
    let dir = support::temp_path("usage-kill9").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let toml = config(&state, "");
    let socket = state.join("admin.sock");
    let endpoint = Endpoint::Unix(socket.clone());
    let mut server = BinaryServer::start(&toml);
    let (_, plan) = call(
        &endpoint,
        "POST",
        "/usageplans",
        Some(
            json!({ "name": "metered", "quota": { "limit": 1000000, "period": "MONTH" },
                     "stages": [{ "api": "t", "stage": "prod" }] }),
        ),
    );
    let plan_id = plan["id"].as_str().unwrap().to_string();
    let (status, key) = call(
        &endpoint,
        "POST",
        "/apikeys",
        Some(
            json!({ "name": "k", "value": "kill9-key-0123456789abcdef", "usage_plan_ids": [plan_id] }),
        ),
    );
    assert_eq!(status, 201, "{key}");
    let key_id = key["id"].as_str().unwrap().to_string();

    // Requests flow; each 200 is recorded with its time.
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let answered: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let load = {
        let (stop, answered) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            while !stop.load(Ordering::SeqCst) {
                c.send("GET /prod/a HTTP/1.1\r\nHost: t\r\nx-api-key: kill9-key-0123456789abcdef\r\n\r\n");
                let Ok(r) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.read_response()))
                else {
                    return;
                };
                if r.status != 200 {
                    return;
                }
                answered.lock().unwrap().push(Instant::now());
            }
        })
    };
    std::thread::sleep(Duration::from_millis(2_500));
    server.signal(libc::SIGKILL);
    let killed = Instant::now();
    let _ = server.wait_timeout(Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    let _ = load.join();
    drop(server);
    let answered = answered.lock().unwrap().clone();
    let sent = answered.len() as u64;
    assert!(sent > 100, "only {sent} requests went through");
    // What may be lost: the requests of the last flush interval (1 s), with
    // a margin for a flush that was slow to commit.
    let window = Duration::from_millis(1_500);
    let recent = answered
        .iter()
        .filter(|t| killed.duration_since(**t) <= window)
        .count() as u64;

    // Restarted: the store opens clean, keys and plans are intact.
    let server = BinaryServer::start(&toml);
    let (status, k) = call(&endpoint, "GET", &format!("/apikeys/{key_id}"), None);
    assert_eq!(status, 200, "{k}");
    let (_, p) = call(&endpoint, "GET", &format!("/usageplans/{plan_id}"), None);
    assert_eq!(p["key_ids"], json!([key_id]));
    let today = ringgate::state::unix_now() / DAY_SECS;
    let (_, r) = call(
        &endpoint,
        "GET",
        &format!(
            "/usageplans/{plan_id}/usage?startDate={}&endDate={}",
            format_day(today.saturating_sub(1)),
            format_day(today)
        ),
        None,
    );
    let stored: u64 = r["items"][&key_id]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[0].as_u64().unwrap())
        .sum();
    eprintln!("kill -9: {sent} answered, {stored} stored, {recent} in the last 1.5 s");
    assert!(stored <= sent, "stored {stored} > answered {sent}");
    assert!(
        sent - stored <= recent,
        "lost {} requests, more than the {recent} of the last flush interval",
        sent - stored
    );
    // The key still works, and its count goes on from what was stored.
    let mut c = server.client();
    assert_eq!(
        get(&mut c, "/prod/a", "kill9-key-0123456789abcdef").status,
        200
    );
    // A graceful stop flushes everything.
    drop(c);
    let mut server = server;
    server.sigterm();
    let _ = server.wait_timeout(Duration::from_secs(10));
    drop(server);
    let (store, _) = ringgate::state::Store::open(&state).unwrap();
    let after: u64 = store
        .usage(&plan_id, today.saturating_sub(1), today)
        .unwrap()
        .iter()
        .map(|r| r.count)
        .sum();
    assert_eq!(after, stored + 1);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ten_thousand_imported_keys() {
    let g = Gateway::start("manykeys");
    let plan = g.ok(
        "POST",
        "/usageplans",
        Some(
            json!({ "name": "bulk", "quota": { "limit": 10, "period": "DAY" },
                     "stages": [{ "api": "t", "stage": "prod" }] }),
        ),
    );
    let plan_id = plan["id"].as_str().unwrap();
    let mut csv = String::from("key,name,usageplanIds\n");
    for i in 0..10_000 {
        csv.push_str(&format!("bulk-key-{i:08}-abcdefghij,k{i},{plan_id}\n"));
    }
    let started = Instant::now();
    let r = request(
        &g.endpoint(),
        "POST",
        "/apikeys?mode=import&format=csv",
        Some(csv.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let import = started.elapsed();
    // One more key through the socket (a snapshot with 10,001 keys).
    let started = Instant::now();
    g.ok(
        "POST",
        "/apikeys",
        Some(json!({ "name": "one-more", "usage_plan_ids": [plan_id] })),
    );
    let one = started.elapsed();
    eprintln!("imported 10,000 keys in {import:?}; one more key in {one:?}");
    let mut c = g.server().client();
    for i in [0, 4_999, 9_999] {
        assert_eq!(
            get(&mut c, "/prod/a", &format!("bulk-key-{i:08}-abcdefghij")).status,
            200
        );
    }
    let plan = g.ok("GET", &format!("/usageplans/{plan_id}"), None);
    assert_eq!(plan["key_ids"].as_array().unwrap().len(), 10_001);
}

#[test]
fn a_quota_refusal_says_when_the_period_ends_when_headers_are_on() {
    let dir = support::temp_path("quota-headers").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = config(&dir.join("state"), "").replace(
        "[throttle]\nrate = -1",
        "[throttle]\nrate = -1\nheaders = true",
    );
    let srv = TestServer::start(&toml);
    let mut c = srv.client();
    assert_eq!(send(&mut c, "/beta/a", FILE_KEY, 3), (3, 0));
    let r = get(&mut c, "/beta/a", FILE_KEY);
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), r#"{"message":"Limit Exceeded"}"#);
    // Until the next 00:00 UTC.
    let now = ringgate::state::unix_now();
    let to_midnight = (now / DAY_SECS + 1) * DAY_SECS - now;
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry.abs_diff(to_midnight) <= 2,
        "Retry-After {retry}, midnight in {to_midnight}"
    );
    assert_eq!(r.header("ratelimit-limit"), Some("3"));
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
