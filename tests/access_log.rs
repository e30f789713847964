//! Access logs end to end: real requests through the gateway, the lines
//! read back with real parsers (serde_json, the csv crate, a CLF regex);
//! Latency ≥ IntegrationLatency on every proxied line; the API key only as
//! its id; the integration error of a 5xx; a writer that cannot keep up
//! drops and counts instead of blocking; SIGUSR1 and `POST /logs/reopen`
//! reopen the file after a rename.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ringgate::admin::client::{request, Endpoint};
use ringgate::server::StartOptions;
use support::{BinaryServer, Origin, TestServer};

/// The lines of `path` once there are at least `n` (the workers ship their
/// lines each second).
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > deadline {
            assert!(
                lines.len() >= n,
                "{} has {} lines, expected {n}:\n{text}",
                path.display(),
                lines.len()
            );
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(dir: &Path, log: &Path, format: &str, origin: std::net::SocketAddr) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 2
pin_workers = false

[state]
dir = "{state}"

[access_log]
path = "{log}"
format = '{format}'

[[api_key]]
name = "partner"
value = "SECRETKEYVALUE0123456789abcdef"

[[usage_plan]]
name = "basic"
keys = ["partner"]
  [[usage_plan.stage]]
  api = "shop"
  stage = "prod"

[[api]]
name = "shop"
  [[api.stage]]
  name = "prod"
  [[api.route]]
  route = "GET /items/{{id}}"
  mock = {{ body = "item {{id}}" }}
  [[api.route]]
  route = "GET /up/{{proxy+}}"
  http_proxy = {{ uri = "http://{origin}/{{proxy}}" }}
  [[api.route]]
  route = "GET /private"
  api_key_required = true
  mock = {{ body = "secret" }}
  [[api.route]]
  route = "GET /dead"
  http_proxy = {{ uri = "http://127.0.0.1:1/x", timeout = "2s" }}
"#,
        state = dir.join("state").display(),
        log = log.display(),
    )
}

struct Setup {
    dir: PathBuf,
    log: PathBuf,
    srv: TestServer,
    _origin: Origin,
}

fn start(name: &str, format: &str) -> Setup {
    let dir = support::temp_path(name).with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let origin = Origin::start("o");
    let cfg = ringgate::config::parse(&config(&dir, &log, format, origin.addr()), "a.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let srv = TestServer::start_config(
        cfg,
        StartOptions {
            durable_state: true,
            admin: true,
            ..StartOptions::default()
        },
    );
    Setup {
        dir,
        log,
        srv,
        _origin: origin,
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn json_preset_lines_parse_and_carry_the_request() {
    let s = start("log-json", "json");
    let mut c = s.srv.client();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut req = format!(
            "GET /prod/items/{i} HTTP/1.1\r\nHost: shop.example:8080\r\nUser-Agent: t\"e\\st"
        )
        .into_bytes();
        req.extend_from_slice(b"\xe9\r\n\r\n");
        let r = c.request(req);
        assert_eq!(r.status, 200);
        ids.push(r.header("x-request-id").unwrap().to_string());
    }
    assert_eq!(c.get("/nostage/x").status, 403);
    let lines = wait_lines(&s.log, 6);
    let clf_time =
        regex::Regex::new(r"^\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000$").unwrap();
    for (line, id) in lines.iter().zip(&ids) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["requestId"], id.as_str(), "{line}");
        assert_eq!(v["httpMethod"], "GET");
        assert_eq!(v["resourcePath"], "/items/{id}");
        assert_eq!(v["status"], "200");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["responseLength"], "6");
        assert_eq!(v["ip"], "127.0.0.1");
        assert_eq!(v["caller"], "-");
        let t = v["requestTime"].as_str().unwrap();
        assert!(clf_time.is_match(t), "{t}");
    }
    // No stage: the default format, an unset resource path.
    let v: serde_json::Value = serde_json::from_str(&lines[5]).unwrap();
    assert_eq!(v["status"], "403");
    assert_eq!(v["resourcePath"], "-");
}

#[test]
fn csv_and_clf_presets_parse() {
    let clf = regex::Regex::new(
        r#"^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET (\S+) HTTP/1\.1" (\d{3}) (\d+) ([0-9a-f-]{36}) ([0-9a-f-]{36})$"#,
    )
    .unwrap();
    let http_api_clf = regex::Regex::new(
        r#"^127\.0\.0\.1 - - \[[^\]]+\] "GET (GET /\S+) HTTP/1\.1" (\d{3}) (\d+) [0-9a-f-]{36}$"#,
    )
    .unwrap();
    for (format, check) in [("csv", 0), ("clf", 1), ("http_api_clf", 2)] {
        let s = start(&format!("log-{format}"), format);
        let mut c = s.srv.client();
        for i in 0..3 {
            assert_eq!(c.get(&format!("/prod/items/{i}")).status, 200);
        }
        assert_eq!(c.get("/prod/up/status/404").status, 404);
        let lines = wait_lines(&s.log, 4);
        match check {
            0 => {
                let joined = lines.join("\n");
                let mut r = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(joined.as_bytes());
                let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
                assert_eq!(rows.len(), 4);
                for row in &rows {
                    assert_eq!(row.len(), 11, "{row:?}");
                    assert_eq!(&row[0], "127.0.0.1");
                    assert_eq!(&row[4], "GET");
                }
                assert_eq!(&rows[0][5], "/items/{id}");
                assert_eq!(&rows[0][7], "200");
                assert_eq!(&rows[3][5], "/up/{proxy+}");
                assert_eq!(&rows[3][7], "404");
            }
            1 => {
                let re = &clf;
                for l in &lines {
                    let m = re.captures(l).unwrap_or_else(|| panic!("not CLF: {l}"));
                    assert_eq!(&m[4], &m[5]);
                }
                let m = re.captures(&lines[3]).unwrap();
                assert_eq!((&m[1], &m[2], &m[3]), ("/up/{proxy+}", "404", "11"));
            }
            _ => {
                let re = &http_api_clf;
                for l in &lines {
                    assert!(re.is_match(l), "not HTTP API CLF: {l}");
                }
                let m = re.captures(&lines[0]).unwrap();
                assert_eq!(&m[1], "GET /items/{id}");
            }
        }
    }
}

/// Latency ≥ IntegrationLatency for every proxied request; a 5xx names its
/// integration error; the API key is logged by id only.
#[test]
fn latencies_errors_and_key_ids() {
    let format = r#"{"id":"$context.requestId","status":"$context.status","latency":"$context.responseLatency","integration":"$context.integrationLatency","istatus":"$context.integration.status","ierror":"$context.integration.error","etype":"$context.error.responseType","emsg":"$context.error.message","key":"$context.identity.apiKey","keyId":"$context.identity.apiKeyId","outcome":"$context.ringgate.outcome","stage":"$context.stage","api":"$context.apiId","routeKey":"$context.routeKey","path":"$context.path","domain":"$context.domainName","len":"$context.responseLength"}"#;
    let s = start("log-latency", format);
    let mut c = s.srv.client();
    for _ in 0..20 {
        assert_eq!(c.get("/prod/up/hello").status, 200);
    }
    for _ in 0..3 {
        assert_eq!(c.get("/prod/up/slow/30").status, 200);
    }
    assert_eq!(c.get("/prod/dead").status, 504);
    let r = c.request(
        "GET /prod/private HTTP/1.1\r\nHost: x\r\nx-api-key: SECRETKEYVALUE0123456789abcdef\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(c.get("/prod/private").status, 403);
    let lines = wait_lines(&s.log, 26);
    assert!(
        lines.iter().all(|l| !l.contains("SECRETKEYVALUE")),
        "a key value was logged"
    );
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let num = |v: &serde_json::Value| v.as_str().unwrap().parse::<u64>().unwrap();
    for v in &parsed[..23] {
        assert_eq!(v["status"], "200");
        assert_eq!(v["istatus"], "200");
        assert_eq!(v["outcome"], "proxied");
        assert_eq!(v["routeKey"], "GET /up/{proxy+}");
        assert_eq!(v["stage"], "prod");
        assert_eq!(v["api"], "shop");
        assert_eq!(v["domain"], "test");
        assert!(num(&v["latency"]) >= num(&v["integration"]), "{v}");
    }
    assert_eq!(parsed[0]["path"], "/prod/up/hello");
    assert_eq!(parsed[0]["len"], "13");
    for v in &parsed[20..23] {
        assert!(num(&v["integration"]) >= 30, "{v}");
    }
    let dead = &parsed[23];
    assert_eq!(dead["status"], "504");
    assert_eq!(dead["ierror"], "connect_refused");
    assert_eq!(dead["istatus"], "-");
    assert_eq!(dead["etype"], "INTEGRATION_FAILURE");
    assert_eq!(dead["emsg"], "Network error communicating with endpoint");
    let keyed = &parsed[24];
    assert_eq!(keyed["status"], "200");
    assert!(keyed["keyId"].as_str().unwrap().len() > 1, "{keyed}");
    assert_eq!(keyed["key"], keyed["keyId"]);
    let refused = &parsed[25];
    assert_eq!(refused["status"], "403");
    assert_eq!(refused["keyId"], "-");
    assert_eq!(refused["etype"], "ACCESS_DENIED");
    // The same 504 counted by reason.
    let endpoint = Endpoint::Unix(s.dir.join("state").join("admin.sock"));
    let m = support::prom::scrape(&endpoint);
    assert_eq!(
        m.value(
            "ringgate_gateway_errors_total",
            &[("reason", "connect_refused")]
        ),
        1.0
    );
    assert_eq!(m.value("ringgate_access_log_dropped_lines_total", &[]), 0.0);
    for family in [
        "ringgate_access_log_lines_total",
        "ringgate_access_log_bytes_total",
        "ringgate_access_log_write_errors_total",
        "ringgate_access_log_reopens_total",
        "ringgate_access_log_queued_batches",
    ] {
        assert!(m.families.contains_key(family), "no {family}");
    }
    assert!(m.value("ringgate_access_log_lines_total", &[]) >= 26.0);
}

/// A stage's own format, and a stage that logs nothing.
#[test]
fn stage_formats_override_the_default() {
    let dir = support::temp_path("log-stages").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let toml = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
pin_workers = false

[state]
dir = "{state}"

[access_log]
path = "{log}"
format = "csv"

[[api]]
name = "shop"
  [[api.stage]]
  name = "plain"
  [[api.stage]]
  name = "json"
  access_log_format = "json"
  [[api.stage]]
  name = "quiet"
  access_log_format = "off"
  [[api.route]]
  route = "GET /items/{{id}}"
  mock = {{ body = "item {{id}}" }}
"#,
        state = dir.join("state").display(),
        log = log.display()
    );
    let cfg = ringgate::config::parse(&toml, "s.toml").unwrap();
    let srv = TestServer::start_config(cfg, StartOptions::default());
    let mut c = srv.client();
    for stage in ["quiet", "plain", "quiet", "json", "quiet"] {
        assert_eq!(c.get(&format!("/{stage}/items/1")).status, 200);
    }
    let lines = wait_lines(&log, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("127.0.0.1,-,-,"), "{}", lines[0]);
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(v["status"], "200");
    // A bad stage format is refused at load, naming the key.
    let bad = toml.replace(
        "access_log_format = \"json\"",
        "access_log_format = \"$context.nope\"",
    );
    let e = ringgate::config::parse(&bad, "s.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("api[0].stage[1].access_log_format") && e.contains("nope"),
        "{e}"
    );
    drop(c);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A writer that cannot keep up (a FIFO nobody reads) makes the workers
/// drop lines and count them; no request waits for the disk.
#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let dir = support::temp_path("log-fifo").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("access.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Our read end, opened and never read (non-blocking so the open does
    // not wait for a writer).
    let reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap()
    };
    let toml = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
pin_workers = false

[state]
dir = "{state}"

[throttle]
rate = -1

[access_log]
path = "{log}"
format = "clf"
queue = 1

[[api]]
name = "shop"
  [[api.stage]]
  name = "prod"
  [[api.route]]
  route = "GET /items/{{id}}"
  mock = {{ body = "item {{id}}" }}
"#,
        state = dir.join("state").display(),
        log = fifo.display()
    );
    let cfg = ringgate::config::parse(&toml, "f.toml").unwrap();
    let srv = TestServer::start_config(
        cfg,
        StartOptions {
            durable_state: true,
            admin: true,
            ..StartOptions::default()
        },
    );
    // About 150 bytes a line: 4,000 lines are ten times the pipe's 64 KiB.
    let mut c = srv.client();
    let started = Instant::now();
    for i in 0..4_000 {
        assert_eq!(c.get(&format!("/prod/items/{i}")).status, 200);
    }
    let took = started.elapsed();
    // Let the last partial batch ship (once a second).
    std::thread::sleep(Duration::from_millis(1_500));
    let endpoint = Endpoint::Unix(dir.join("state").join("admin.sock"));
    let m = support::prom::scrape(&endpoint);
    let dropped = m.value("ringgate_access_log_dropped_lines_total", &[]);
    let written = m.value("ringgate_access_log_lines_total", &[]);
    assert!(dropped > 0.0, "nothing dropped ({written} written)");
    assert!(dropped + written <= 4_000.0);
    // Generous: blocking on the pipe would have stopped the loop for good.
    assert!(took < Duration::from_secs(60), "{took:?}");
    // Let the writer finish (its write fails once nobody can read) so the
    // server stops.
    drop(reader);
    drop(c);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

/// logrotate: rename the file, then SIGUSR1 (the binary) makes new lines
/// go to a new file at the path, the old one keeping what it had.
#[test]
fn sigusr1_reopens_after_a_rename() {
    let dir = support::temp_path("log-rotate").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let toml = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
workers = 1
pin_workers = false

[state]
dir = "{state}"

[access_log]
path = "{log}"
format = "$context.path $context.requestId"

[[api]]
name = "shop"
  [[api.stage]]
  name = "prod"
  [[api.route]]
  route = "GET /items/{{id}}"
  mock = {{ body = "item {{id}}" }}
"#,
        state = dir.join("state").display(),
        log = log.display()
    );
    let srv = BinaryServer::start(&toml);
    let mut c = srv.client();
    for i in 0..3 {
        assert_eq!(c.get(&format!("/prod/items/before{i}")).status, 200);
    }
    wait_lines(&log, 3);
    let rotated = dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    srv.signal(libc::SIGUSR1);
    // The reopen happens on the writer thread: wait until the new file is
    // there before sending what belongs in it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(Instant::now() < deadline, "no new file after SIGUSR1");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..2 {
        assert_eq!(c.get(&format!("/prod/items/after{i}")).status, 200);
    }
    let new = wait_lines(&log, 2);
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 3, "{old}");
    assert!(old.lines().all(|l| l.contains("before")), "{old}");
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(new.iter().all(|l| l.contains("after")), "{new:?}");

    // And through the admin socket.
    std::fs::rename(&log, dir.join("access.log.2")).unwrap();
    let endpoint = Endpoint::Unix(srv.admin_socket());
    let reply = request(&endpoint, "POST", "/logs/reopen", None).unwrap();
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    while !log.exists() {
        assert!(
            Instant::now() < deadline,
            "no new file after POST /logs/reopen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.get("/prod/items/third").status, 200);
    let third = wait_lines(&log, 1);
    assert!(third[0].contains("third"), "{third:?}");
    drop(c);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
