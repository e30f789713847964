//! The admin API through its socket, against a running gateway with real
//! traffic: every endpoint, every kind of bad request (answered 4xx and
//! read back to prove nothing changed), deployments with a canary driven by
//! real requests, promote and rollback, cache operations, reload under
//! load, the TCP listener's token, and the state after a restart and after
//! `kill -9` in the middle of a burst of writes.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringgate::admin::client::{request, Endpoint};
use ringgate::server::StartOptions;
use serde_json::{json, Value};
use support::{BinaryServer, Client, Origin, TestServer};

/// The test API: `shop`, stages `prod` (pinned, with a cache) and `beta`
/// (follows the file, with a cache); `GET /version` is a mock that says
/// `version` and the stage's `who`; `GET /items/{id}` is proxied to the
/// origin's `/echo` and cached.
fn config(version: &str, origin: SocketAddr, state: &Path) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
pin_workers = false
drain_timeout = "2s"

[state]
dir = "{state}"

[[api]]
name = "shop"

  [[api.stage]]
  name = "prod"
  auto_deploy = false
  variables = {{ who = "prod" }}
  [api.stage.cache]
  enabled = true
  capacity = "4MiB"
  ttl = "300s"
  status_header = true

  [[api.stage]]
  name = "beta"
  variables = {{ who = "beta" }}
  [api.stage.cache]
  enabled = true
  capacity = "4MiB"
  ttl = "300s"
  status_header = true

  [[api.stage]]
  name = "plain"
  auto_deploy = false
  variables = {{ who = "plain" }}

  [[api.route]]
  route = "GET /version"
  mock = {{ body = "{version} ${{stageVariables.who}}" }}

  [[api.route]]
  route = "GET /items/{{id}}"
  http_proxy = {{ uri = "http://{origin}/echo/{{id}}" }}
  cache = {{ key_parameters = ["path.id"] }}
"#,
        state = state.display()
    )
}

/// A gateway started from a file, with its state directory and admin
/// socket, and the origin it proxies to.
struct Gateway {
    dir: PathBuf,
    server: Option<TestServer>,
    origin: Origin,
}

impl Gateway {
    fn start() -> Gateway {
        let dir = support::temp_path("admin").with_extension("d");
        std::fs::create_dir_all(&dir).unwrap();
        let origin = Origin::start("o");
        let mut g = Gateway {
            dir,
            server: None,
            origin,
        };
        g.write_config("v1");
        g.server = Some(g.boot());
        g
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("gw.toml")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn write_config(&self, version: &str) {
        let text = config(version, self.origin.addr(), &self.state_dir());
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn boot(&self) -> TestServer {
        let path = self.config_path();
        let cfg = ringgate::config::load(&path).unwrap();
        TestServer::start_config(
            cfg,
            StartOptions {
                config_path: Some(path),
                durable_state: true,
                admin: true,
                ..StartOptions::default()
            },
        )
    }

    fn server(&self) -> &TestServer {
        self.server.as_ref().unwrap()
    }

    fn restart(&mut self) {
        drop(self.server.take());
        self.server = Some(self.boot());
    }

    fn socket(&self) -> PathBuf {
        self.state_dir().join("admin.sock")
    }

    /// One admin request: the status and the JSON body (`Null` if empty).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&Endpoint::Unix(self.socket()), method, path, body)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// GET /{stage}/version, the body.
    fn version(&self, client: &mut Client, stage: &str) -> String {
        let r = client.get(&format!("/{stage}/version"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
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

#[test]
fn the_socket_is_private_and_lists_its_endpoints() {
    use std::os::unix::fs::PermissionsExt;
    let g = Gateway::start();
    let mode = std::fs::metadata(g.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(g.state_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let v = g.ok("GET", "/", None);
    let endpoints = v["endpoints"].as_array().unwrap();
    assert!(endpoints.len() >= 16, "{v}");
    let status = g.ok("GET", "/status", None);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["workers"].as_array().unwrap().len(), 2);
    // curl, as the README shows it.
    let out = match std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(g.socket())
        .arg("http://ringgate/apis/shop/stages/prod")
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("notice: curl not found; skipping the curl part of this test");
            return;
        }
        Err(e) => panic!("curl: {e}"),
    };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deployment_id"], 1);
}

#[test]
fn apis_deployments_and_stages_read_back() {
    let g = Gateway::start();
    let apis = g.ok("GET", "/apis", None);
    assert_eq!(apis["items"][0]["name"], "shop");
    let api = g.ok("GET", "/apis/shop", None);
    assert_eq!(api["routes"], json!(["GET /version", "GET /items/{id}"]));

    // The pinned stages were seeded from the file: one deployment each.
    let deployments = g.ok("GET", "/apis/shop/deployments", None);
    assert_eq!(deployments["items"].as_array().unwrap().len(), 2);
    for n in 0..5 {
        let d = g.ok(
            "POST",
            "/apis/shop/deployments",
            Some(json!({ "description": format!("d{n}") })),
        );
        assert_eq!(d["id"], 3 + n);
        assert_eq!(d["description"], format!("d{n}"));
    }
    // Paging: newest first, 3 at a time.
    let p1 = g.ok("GET", "/apis/shop/deployments?limit=3", None);
    let ids: Vec<u64> = p1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [7, 6, 5]);
    let pos = p1["position"].as_str().unwrap();
    let p2 = g.ok(
        "GET",
        &format!("/apis/shop/deployments?limit=3&position={pos}"),
        None,
    );
    let p3 = g.ok(
        "GET",
        &format!(
            "/apis/shop/deployments?limit=3&position={}",
            p2["position"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(p3["items"].as_array().unwrap().len(), 1);
    assert!(p3.get("position").is_none());

    let d = g.ok("GET", "/apis/shop/deployments/7", None);
    assert_eq!(d["definition"]["routes"].as_array().unwrap().len(), 2);

    let stages = g.ok("GET", "/apis/shop/stages", None);
    let names: Vec<&str> = stages["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["prod", "beta", "plain"]);
    let beta = g.ok("GET", "/apis/shop/stages/beta", None);
    assert_eq!(beta["source"], "file");
    assert_eq!(beta["deployment_id"], Value::Null);

    // Stage variables and cache settings of a pinned stage.
    let s = g.ok(
        "PATCH",
        "/apis/shop/stages/plain",
        Some(json!({
            "variables": { "who": "changed", "extra": "x" },
            "cache": { "enabled": true, "capacity": "0.5", "ttl_seconds": 60 }
        })),
    );
    assert_eq!(s["variables"], json!({ "who": "changed", "extra": "x" }));
    assert_eq!(s["cache"]["capacity_class"], "0.5");
    assert_eq!(s["cache"]["ttl_seconds"], 60);
    let mut c = g.server().client();
    assert_eq!(g.version(&mut c, "plain"), "v1 changed");
    let s = g.ok(
        "PATCH",
        "/apis/shop/stages/plain",
        Some(json!({ "variables": { "extra": null }, "cache": { "enabled": false } })),
    );
    assert_eq!(s["variables"], json!({ "who": "changed" }));
    assert_eq!(s["cache"]["enabled"], false);
}

/// (method, path, body, status, error code, field).
type BadCase = (
    &'static str,
    &'static str,
    Option<Value>,
    u16,
    &'static str,
    Option<&'static str>,
);

/// Everything an admin request can get wrong: each is refused with the
/// status and error code given, names the field where there is one, and
/// changes nothing (the stages and deployments read back the same).
#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let g = Gateway::start();
    // A canary on prod, so that repointing it is a conflict.
    g.ok(
        "PUT",
        "/apis/shop/stages/prod/canary",
        Some(json!({ "percent": 10 })),
    );
    let snapshot = |g: &Gateway| {
        (
            g.ok("GET", "/apis/shop/stages", None),
            g.ok("GET", "/apis/shop/deployments?limit=500", None),
        )
    };
    let before = snapshot(&g);
    let raw = |method: &str, path: &str, body: &[u8]| -> (u16, Value) {
        let reply = request(&Endpoint::Unix(g.socket()), method, path, Some(body)).unwrap();
        (reply.status, serde_json::from_slice(&reply.body).unwrap())
    };

    // (method, path, body, status, error code, field)
    let cases: Vec<BadCase> = vec![
        ("GET", "/nope", None, 404, "not_found", None),
        ("DELETE", "/apis", None, 405, "method_not_allowed", None),
        ("GET", "/apis/nope", None, 404, "not_found", None),
        (
            "GET",
            "/apis/shop/stages/nope",
            None,
            404,
            "not_found",
            None,
        ),
        (
            "GET",
            "/apis/shop/deployments/99",
            None,
            404,
            "not_found",
            None,
        ),
        (
            "GET",
            "/apis/shop/deployments/x",
            None,
            400,
            "invalid_value",
            Some("id"),
        ),
        (
            "GET",
            "/apis/shop/deployments?limit=0",
            None,
            400,
            "invalid_value",
            Some("limit"),
        ),
        (
            "GET",
            "/apis/shop/deployments?limit=501",
            None,
            400,
            "invalid_value",
            Some("limit"),
        ),
        (
            "GET",
            "/apis/shop/deployments?position=77",
            None,
            400,
            "invalid_value",
            Some("position"),
        ),
        (
            "POST",
            "/apis/nope/deployments",
            Some(json!({})),
            404,
            "not_found",
            None,
        ),
        (
            "POST",
            "/apis/shop/deployments",
            Some(json!({ "description": 5 })),
            400,
            "invalid_value",
            Some("description"),
        ),
        (
            "POST",
            "/apis/shop/deployments",
            Some(json!({ "colour": "red" })),
            400,
            "invalid_value",
            Some("colour"),
        ),
        (
            "POST",
            "/apis/shop/deployments",
            Some(json!({ "stage": "beta" })),
            409,
            "conflict",
            Some("stage"),
        ),
        (
            "POST",
            "/apis/shop/deployments",
            Some(json!({ "stage": "nope" })),
            404,
            "not_found",
            Some("stage"),
        ),
        (
            "POST",
            "/apis/shop/deployments",
            Some(json!([1])),
            400,
            "invalid_value",
            Some("body"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/prod",
            Some(json!({ "deployment_id": 2 })),
            409,
            "conflict",
            Some("deployment_id"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "deployment_id": 99 })),
            404,
            "not_found",
            Some("deployment_id"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "deployment_id": -1 })),
            400,
            "invalid_value",
            Some("deployment_id"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "deployment_id": "1" })),
            400,
            "invalid_value",
            Some("deployment_id"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/beta",
            Some(json!({ "variables": { "who": "x" } })),
            409,
            "conflict",
            None,
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "variables": { "who": "a b" } })),
            400,
            "invalid_value",
            Some("variables.who"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "variables": { "bad-name": "x" } })),
            400,
            "invalid_value",
            Some("variables.bad-name"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "variables": { "who": 3 } })),
            400,
            "invalid_value",
            Some("variables.who"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "variables": "who" })),
            400,
            "invalid_value",
            Some("variables"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "cache": { "capacity": "3" } })),
            400,
            "invalid_value",
            Some("cache.capacity"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "cache": { "ttl_seconds": 3601 } })),
            400,
            "invalid_value",
            Some("cache.ttl_seconds"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "cache": { "enabled": "yes" } })),
            400,
            "invalid_value",
            Some("cache.enabled"),
        ),
        (
            "PATCH",
            "/apis/shop/stages/plain",
            Some(json!({ "cache": { "size": 1 } })),
            400,
            "invalid_value",
            Some("cache.size"),
        ),
        (
            "PUT",
            "/apis/shop/stages/plain/canary",
            Some(json!({})),
            400,
            "invalid_value",
            Some("percent"),
        ),
        (
            "PUT",
            "/apis/shop/stages/plain/canary",
            Some(json!({ "percent": 101 })),
            400,
            "invalid_value",
            Some("percent"),
        ),
        (
            "PUT",
            "/apis/shop/stages/plain/canary",
            Some(json!({ "percent": -1 })),
            400,
            "invalid_value",
            Some("percent"),
        ),
        (
            "PUT",
            "/apis/shop/stages/plain/canary",
            Some(json!({ "percent": 5, "deployment_id": 99 })),
            404,
            "not_found",
            Some("deployment_id"),
        ),
        (
            "PUT",
            "/apis/shop/stages/beta/canary",
            Some(json!({ "percent": 5 })),
            409,
            "conflict",
            None,
        ),
        (
            "PUT",
            "/apis/shop/stages/prod/canary",
            Some(json!({ "percent": 5, "use_stage_cache": 1 })),
            400,
            "invalid_value",
            Some("use_stage_cache"),
        ),
        (
            "DELETE",
            "/apis/shop/stages/plain/canary",
            None,
            404,
            "not_found",
            None,
        ),
        (
            "POST",
            "/apis/shop/stages/plain/canary/promote",
            None,
            404,
            "not_found",
            None,
        ),
        (
            "GET",
            "/apis/shop/stages/plain/canary/promote",
            None,
            405,
            "method_not_allowed",
            None,
        ),
        (
            "GET",
            "/apis/shop/stages/plain/cache",
            None,
            409,
            "conflict",
            None,
        ),
        (
            "DELETE",
            "/apis/shop/stages/plain/cache/data",
            None,
            409,
            "conflict",
            None,
        ),
        (
            "DELETE",
            "/apis/shop/stages/prod/cache/entries",
            None,
            400,
            "invalid_value",
            Some("path"),
        ),
        (
            "DELETE",
            "/apis/shop/stages/prod/cache/entries?path=/version",
            None,
            400,
            "invalid_value",
            Some("path"),
        ),
        (
            "DELETE",
            "/apis/shop/stages/prod/cache/entries?path=/items/1&colour=red",
            None,
            400,
            "invalid_value",
            Some("colour"),
        ),
        (
            "POST",
            "/reload",
            Some(json!({ "now": true })),
            400,
            "invalid_value",
            Some("body"),
        ),
    ];
    for (method, path, body, status, code, field) in cases {
        let (got, v) = g.call(method, path, body.clone());
        assert_eq!(got, status, "{method} {path} {body:?}: {v}");
        assert_eq!(v["error"], code, "{method} {path} {body:?}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        match field {
            Some(f) => assert_eq!(v["field"], f, "{method} {path} {body:?}: {v}"),
            None => assert!(v.get("field").is_none(), "{method} {path}: {v}"),
        }
        assert_eq!(snapshot(&g), before, "{method} {path} changed something");
    }
    // Malformed JSON, and a body that is not an object.
    for body in [&b"{\"variables\": "[..], b"not json", b"{\"a\":1}}"] {
        let (status, v) = raw("PATCH", "/apis/shop/stages/plain", body);
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"], "malformed_json");
        assert_eq!(v["field"], "body");
    }
    assert_eq!(snapshot(&g), before);
}

/// Deploy, canary at 25 % on real requests, promote, roll back.
#[test]
fn deploy_canary_promote_rollback() {
    let g = Gateway::start();
    let mut c = g.server().client();
    assert_eq!(g.version(&mut c, "prod"), "v1 prod");

    // A new definition in the file: the pinned stage keeps serving v1, the
    // auto-deployed one follows.
    g.write_config("v2");
    let r = g.ok("POST", "/reload", None);
    assert_eq!(r["reloaded"], true);
    assert_eq!(g.version(&mut c, "prod"), "v1 prod");
    assert_eq!(g.version(&mut c, "beta"), "v2 beta");

    let d = g.ok(
        "POST",
        "/apis/shop/deployments",
        Some(json!({ "description": "v2" })),
    );
    let v2 = d["id"].as_u64().unwrap();
    let s = g.ok(
        "PUT",
        "/apis/shop/stages/prod/canary",
        Some(json!({
            "percent": 25, "deployment_id": v2,
            "variable_overrides": { "who": "canary" }
        })),
    );
    assert_eq!(s["canary"]["percent"], 25.0);

    let n = 2000;
    let mut canary = 0;
    for _ in 0..n {
        match g.version(&mut c, "prod").as_str() {
            "v2 canary" => canary += 1,
            "v1 prod" => {}
            other => panic!("unexpected body {other:?}"),
        }
    }
    // Binomial(2000, 0.25): mean 500, sd 19.4; ±5 sd.
    assert!(
        (403..=597).contains(&canary),
        "{canary} of {n} from the canary"
    );
    // The metrics count the canary's share under canary="true".
    let stats = g.ok("GET", "/stats", None);
    let canary_rows: Vec<&serde_json::Value> = stats["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["stage"] == "prod" && r["canary"] == true)
        .collect();
    assert_eq!(canary_rows.len(), 1, "{stats}");
    assert_eq!(canary_rows[0]["count"], canary, "{stats}");

    // Deploying to a stage with a canary moves only the canary.
    let d3 = g.ok(
        "POST",
        "/apis/shop/deployments",
        Some(json!({ "description": "v2 again", "stage": "prod" })),
    );
    let s = g.ok("GET", "/apis/shop/stages/prod", None);
    assert_eq!(s["canary"]["deployment_id"], d3["id"]);
    assert_eq!(s["deployment_id"], 1);

    // Promote: everything from the new deployment, with the overrides.
    let s = g.ok("POST", "/apis/shop/stages/prod/canary/promote", None);
    assert_eq!(s["deployment_id"], d3["id"]);
    assert_eq!(s["canary"]["percent"], 0.0);
    assert_eq!(s["variables"]["who"], "canary");
    for _ in 0..300 {
        assert_eq!(g.version(&mut c, "prod"), "v2 canary");
    }

    // Roll back: refused while the canary exists, then done.
    let (status, _) = g.call(
        "PATCH",
        "/apis/shop/stages/prod",
        Some(json!({ "deployment_id": 1, "variables": { "who": "prod" } })),
    );
    assert_eq!(status, 409);
    g.ok("DELETE", "/apis/shop/stages/prod/canary", None);
    g.ok(
        "PATCH",
        "/apis/shop/stages/prod",
        Some(json!({ "deployment_id": 1, "variables": { "who": "prod" } })),
    );
    for _ in 0..300 {
        assert_eq!(g.version(&mut c, "prod"), "v1 prod");
    }
}

#[test]
fn cache_flush_drop_and_counters() {
    let g = Gateway::start();
    let mut c = g.server().client();
    let status = |c: &mut Client, path: &str| {
        let r = c.get(path);
        assert_eq!(r.status, 200, "{}", r.text());
        r.header("x-cache-status").unwrap_or("").to_string()
    };
    assert_eq!(status(&mut c, "/prod/items/1"), "Miss");
    assert_eq!(status(&mut c, "/prod/items/1"), "Hit");
    assert_eq!(status(&mut c, "/prod/items/2"), "Miss");
    let stats = g.ok("GET", "/apis/shop/stages/prod/cache", None);
    assert_eq!(stats["entries"], 2);
    assert_eq!(stats["hits"], 1);
    assert_eq!(stats["misses"], 2);

    // One entry.
    let v = g.ok(
        "DELETE",
        "/apis/shop/stages/prod/cache/entries?method=GET&path=/items/1",
        None,
    );
    assert_eq!(v["removed"], true);
    let v = g.ok(
        "DELETE",
        "/apis/shop/stages/prod/cache/entries?path=/items/1",
        None,
    );
    assert_eq!(v["removed"], false);
    assert_eq!(status(&mut c, "/prod/items/1"), "Miss");
    assert_eq!(status(&mut c, "/prod/items/2"), "Hit");

    // The whole stage: 202, empty body (API Gateway's FlushStageCache).
    let (code, body) = g.call("DELETE", "/apis/shop/stages/prod/cache/data", None);
    assert_eq!((code, body), (202, Value::Null));
    assert_eq!(status(&mut c, "/prod/items/1"), "Miss");
    assert_eq!(status(&mut c, "/prod/items/2"), "Miss");
    // beta's cache is its own.
    assert_eq!(status(&mut c, "/beta/items/1"), "Miss");
    assert_eq!(status(&mut c, "/beta/items/1"), "Hit");
}

/// A keep-alive client loop runs while the file is changed and reloaded
/// ten times, with one bad file among them: no request fails, the
/// connection is never reset, and an untouched stage's cache entries are
/// still hits.
#[test]
fn reload_under_load_loses_nothing() {
    let g = Gateway::start();
    let mut warm = g.server().client();
    let get = |c: &mut Client, p: &str| c.get(p);
    assert_eq!(
        get(&mut warm, "/prod/items/7").header("x-cache-status"),
        Some("Miss")
    );
    assert_eq!(
        get(&mut warm, "/beta/items/7").header("x-cache-status"),
        Some("Miss")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let addr = g.server().addr();
    let loops: Vec<_> = (0..2)
        .map(|i| {
            let stop = stop.clone();
            let served = served.clone();
            std::thread::spawn(move || {
                // One connection for the whole run: a reset panics here.
                let mut c = Client::connect(addr);
                let mut versions = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let path = if i == 0 {
                        "/beta/version"
                    } else {
                        "/prod/items/7"
                    };
                    let r = c.get(path);
                    assert_eq!(r.status, 200, "{}", r.text());
                    if i == 0 {
                        versions.push(r.text());
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                }
                versions
            })
        })
        .collect();
    for n in 2..12 {
        std::thread::sleep(Duration::from_millis(50));
        if n == 6 {
            std::fs::write(g.config_path(), "[[api]]\nname = 3\n").unwrap();
            let (status, v) = g.call("POST", "/reload", None);
            assert_eq!(status, 400, "{v}");
            assert_eq!(v["error"], "invalid_config");
            assert!(v["message"].as_str().unwrap().contains("gw.toml:2"), "{v}");
        }
        g.write_config(&format!("v{n}"));
        let r = g.ok("POST", "/reload", None);
        assert_eq!(r["restart_required"], json!([]));
    }
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let mut results = loops
        .into_iter()
        .map(|t| t.join().expect("no request failed"));
    let versions = results.next().unwrap();
    assert!(served.load(Ordering::Relaxed) > 100);
    // The versions seen only ever move forward, and end at the last one.
    let numbers: Vec<u32> = versions
        .iter()
        .map(|v| {
            v.trim_start_matches('v')
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{numbers:?}");
    assert_eq!(*numbers.last().unwrap(), 11);
    // prod (pinned, untouched by the file) and beta (reloaded ten times,
    // same cache settings) still hit.
    assert_eq!(
        get(&mut warm, "/prod/items/7").header("x-cache-status"),
        Some("Hit")
    );
    assert_eq!(
        get(&mut warm, "/beta/items/7").header("x-cache-status"),
        Some("Hit")
    );
}

#[test]
fn stage_pointers_survive_a_restart() {
    let mut g = Gateway::start();
    let d = g.ok(
        "POST",
        "/apis/shop/deployments",
        Some(json!({ "stage": "plain" })),
    );
    g.ok(
        "PUT",
        "/apis/shop/stages/prod/canary",
        Some(json!({ "percent": 40, "deployment_id": d["id"], "use_stage_cache": true })),
    );
    let before = g.ok("GET", "/apis/shop/stages", None);
    let deployments = g.ok("GET", "/apis/shop/deployments", None);
    g.restart();
    assert_eq!(g.ok("GET", "/apis/shop/stages", None), before);
    assert_eq!(g.ok("GET", "/apis/shop/deployments", None), deployments);
    let mut c = g.server().client();
    assert_eq!(g.version(&mut c, "plain"), "v1 plain");
}

/// `kill -9` while admin writes stream in: the store opens cleanly, and
/// every write that was acknowledged is there.
#[test]
fn state_survives_kill_9_during_writes() {
    let dir = support::temp_path("kill9").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let origin = Origin::start("o");
    let state = dir.join("state");
    let toml = config("v1", origin.addr(), &state);
    let socket = state.join("admin.sock");
    for round in 0..3 {
        let mut server = BinaryServer::start(&toml);
        let endpoint = Endpoint::Unix(socket.clone());
        let (_, before) = call(&endpoint, "GET", "/apis/shop/stages/plain", None);
        let start: u64 = before["variables"]["n"]
            .as_str()
            .map_or(0, |n| n.parse().unwrap());
        // Writes until killed; the last acknowledged value is recorded.
        let acked = Arc::new(AtomicU64::new(start));
        let writer = {
            let acked = acked.clone();
            let endpoint = Endpoint::Unix(socket.clone());
            std::thread::spawn(move || {
                for n in start + 1.. {
                    let body = json!({ "variables": { "n": n.to_string() } }).to_string();
                    match request(
                        &endpoint,
                        "PATCH",
                        "/apis/shop/stages/plain",
                        Some(body.as_bytes()),
                    ) {
                        Ok(r) if r.status == 200 => acked.store(n, Ordering::SeqCst),
                        _ => return,
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300 + 100 * round));
        let last = acked.load(Ordering::SeqCst);
        server.signal(libc::SIGKILL);
        let _ = server.wait_timeout(Duration::from_secs(5));
        writer.join().unwrap();
        let acked = acked.load(Ordering::SeqCst);
        assert!(acked > start, "round {round}: no write was acknowledged");
        assert!(acked >= last);
        drop(server);

        // Reopen: the store opens and holds at least every acknowledged
        // write (one more may have committed without its answer arriving).
        let (_store, st) = ringgate::state::Store::open(&state).unwrap();
        let n: u64 = st.stage("shop", "plain").unwrap().variables["n"]
            .parse()
            .unwrap();
        assert!(
            n == acked || n == acked + 1,
            "round {round}: stored {n}, acked {acked}"
        );
    }
    // And it serves again.
    let server = BinaryServer::start(&toml);
    let (status, v) = call(
        &Endpoint::Unix(socket),
        "GET",
        "/apis/shop/stages/plain",
        None,
    );
    assert_eq!(status, 200, "{v}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_tcp_listener_needs_the_token_and_only_listens_on_loopback() {
    let dir = support::temp_path("tcp").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let token = "0123456789abcdef-secret";
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let toml = format!(
        "{}[state]\ndir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\
         [[api]]\nname = \"a\"\n[[api.stage]]\nname = \"s\"\n[[api.route]]\nroute = \"$default\"\nmock = {{}}\n",
        support::SERVER,
        dir.join("state").display(),
        dir.join("token").display()
    );
    let cfg = ringgate::config::parse(&toml, "t.toml").unwrap();
    let server = TestServer::start_config(
        cfg,
        StartOptions {
            admin: true,
            durable_state: true,
            ..StartOptions::default()
        },
    );
    let addr = server.server().admin_tcp_addr().expect("a TCP listener");
    assert!(addr.ip().is_loopback());
    let with = |t: &str| Endpoint::Tcp {
        addr,
        token: t.to_string(),
    };
    assert_eq!(call(&with(token), "GET", "/apis", None).0, 200);
    assert_eq!(
        call(&with("wrong-token-wrong"), "GET", "/apis", None).0,
        401
    );
    // No Authorization header at all.
    let mut raw = Client::connect(addr);
    let r = raw.request("GET /apis HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 401);
    drop(server);

    // Anything but loopback is refused when the file is read.
    let bad = toml.replace("127.0.0.1:0", "0.0.0.0:9901");
    let e = ringgate::config::parse(&bad, "t.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin.listen") && e.contains("loopback"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The gateway's established connections to `port` (their local ports),
/// from /proc/net/tcp: which pooled backend connections exist.
fn connections_to(port: u16) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let mut out: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            let remote = u16::from_str_radix(f[2].rsplit(':').next()?, 16).ok()?;
            (remote == port && f[3] == "01").then_some(local)
        })
        .collect();
    out.sort_unstable();
    out
}

/// A reload and an admin change that keep the backends keep the worker's
/// pooled connection to them: the same socket carries the next request.
#[test]
fn pooled_backend_connections_survive_changes_that_keep_their_targets() {
    let g = Gateway::start();
    let mut c = g.server().client();
    // beta has a cache: a key the next requests do not share, so each one
    // goes to the backend.
    let fetch = |c: &mut Client, n: u32| {
        let r = c.get(&format!("/beta/items/{n}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-cache-status"), Some("Miss"));
    };
    fetch(&mut c, 1);
    let before = connections_to(g.origin.addr().port());
    assert!(!before.is_empty(), "no pooled connection to the origin");
    g.write_config("v2");
    g.ok("POST", "/reload", None);
    g.ok(
        "POST",
        "/apis/shop/deployments",
        Some(json!({ "stage": "plain" })),
    );
    for n in 2..6 {
        fetch(&mut c, n);
    }
    assert_eq!(connections_to(g.origin.addr().port()), before);
}

/// SIGHUP reloads the file, as `POST /reload` does; a bad file is refused
/// and the running configuration stays.
#[test]
fn sighup_reloads_the_file() {
    let origin = Origin::start("o");
    let dir = support::temp_path("hup").with_extension("d");
    let toml = |v: &str| config(v, origin.addr(), &dir.join("state"));
    let mut server = BinaryServer::start(&toml("v1"));
    let mut c = server.client();
    let body = |c: &mut Client| c.get("/beta/version").text();
    assert_eq!(body(&mut c), "v1 beta");
    std::fs::write(server.config_path(), toml("v2")).unwrap();
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while body(&mut c) != "v2 beta" {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A bad file: refused, v2 keeps serving, the reason is logged.
    std::fs::write(server.config_path(), "[[api]]\nname = 3\n").unwrap();
    server.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("reload refused") {
        assert!(std::time::Instant::now() < deadline, "no refusal logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(body(&mut c), "v2 beta");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
