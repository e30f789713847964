//! `ringgate admin ...` against a real `ringgate serve` child process: each
//! command run as the binary would be, over the server's admin socket,
//! checking what it prints and its exit code (0 done, 1 refused by the
//! server, 2 not reachable or bad arguments). The API-key, usage-plan,
//! usage and quota commands are checked against real requests with
//! `x-api-key` through the gateway.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{binary, BinaryServer, Origin, SERVER};

/// An api `shop` with a pinned, cached stage `prod` and an auto-deployed
/// stage `dev`; `GET /items/{id}` goes to `origin` and is cached per id.
fn config(origin: &Origin) -> String {
    format!(
        r#"{SERVER}
[[upstream]]
name = "origin"
targets = ["{}"]

[[api]]
name = "shop"

  [[api.stage]]
  name = "prod"
  auto_deploy = false
  variables = {{ env = "production" }}
    [api.stage.cache]
    capacity = "1MiB"
    ttl = "60s"

  [[api.stage]]
  name = "dev"

  [[api.route]]
  route = "GET /items/{{id}}"
  [api.route.http_proxy]
  uri = "http://origin/echo?item={{id}}"
    [api.route.cache]
    key_parameters = ["path.id"]

  [[api.route]]
  route = "GET /health"
  [api.route.mock]
  body = "ok"
"#,
        origin.addr()
    )
}

struct Gateway {
    // Dropped first: the gateway stops before its origin.
    server: BinaryServer,
    _origin: Origin,
}

fn start() -> Gateway {
    start_with("")
}

/// [`config`] and then `extra`.
fn start_with(extra: &str) -> Gateway {
    let origin = Origin::start("cli");
    let server = BinaryServer::start(&format!("{}\n{extra}", config(&origin)));
    Gateway {
        server,
        _origin: origin,
    }
}

/// What one `ringgate admin` run gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    fn ok(self) -> String {
        assert_eq!(self.code, 0, "{self:?}");
        assert_eq!(self.stderr, "", "{self:?}");
        self.stdout
    }
}

/// `ringgate admin ARGS...` as given.
fn ringgate_admin(args: &[&str]) -> Run {
    ringgate_admin_stdin(args, None)
}

/// `ringgate admin ARGS...` with `stdin` on its standard input (none:
/// /dev/null).
fn ringgate_admin_stdin(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(binary())
        .arg("admin")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringgate admin");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(bytes).unwrap();
    }
    let out = child.wait_with_output().expect("ringgate admin ran");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ringgate admin --socket <the server's socket> ARGS...`.
fn admin(g: &Gateway, args: &[&str]) -> Run {
    admin_stdin(g, args, None)
}

/// [`admin`] with `stdin` on its standard input.
fn admin_stdin(g: &Gateway, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let socket = g.server.admin_socket();
    let mut all = vec!["--socket", socket.to_str().expect("UTF-8 temp path")];
    all.extend_from_slice(args);
    ringgate_admin_stdin(&all, stdin)
}

fn json(run: Run) -> Value {
    let out = run.ok();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[test]
fn status_and_apis() {
    let g = start();
    let out = admin(&g, &["status"]).ok();
    assert!(out.starts_with("version:    0.1.0\n"), "{out}");
    assert!(
        out.contains(&format!(
            "config:     {}\n",
            g.server.config_path().display()
        )),
        "{out}"
    );
    assert!(out.contains("workers:    1\n  worker 0: "), "{out}");

    let out = admin(&g, &["apis"]).ok();
    assert_eq!(
        out,
        "NAME  HOSTS  STAGES      ROUTES  DEPLOYMENTS\n\
         shop  *      prod@1,dev  2       1\n"
    );

    // --config finds the same socket.
    let config = g.server.config_path().to_str().unwrap();
    let out = ringgate_admin(&["--config", config, "apis"]).ok();
    assert!(out.contains("shop  *      prod@1,dev"), "{out}");
}

#[test]
fn json_output_is_the_servers_body() {
    let g = start();
    let v = json(admin(&g, &["--json", "status"]));
    assert_eq!(v["version"], "0.1.0");
    let v = json(admin(&g, &["apis", "--json"]));
    assert_eq!(v["items"][0]["name"], "shop");
    let v = json(admin(&g, &["stages", "show", "shop", "prod", "--json"]));
    assert_eq!(v["deployment_id"], 1);
    assert_eq!(v["variables"]["env"], "production");
    let v = json(admin(&g, &["--json", "deployments", "show", "shop", "1"]));
    assert!(v["definition"].is_object(), "{v}");
    // An error reply is printed too, and still exits 1.
    let r = admin(&g, &["--json", "stages", "show", "shop", "nope"]);
    assert_eq!(r.code, 1, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["error"], "not_found");
    // Pretty-printed.
    let out = admin(&g, &["--json", "apis"]).ok();
    assert!(out.starts_with("{\n  \"items\": [\n"), "{out}");
}

#[test]
fn deployments_create_list_show() {
    let g = start();
    let out = admin(
        &g,
        &[
            "deployments",
            "create",
            "shop",
            "--description",
            "second one",
            "--stage",
            "prod",
        ],
    )
    .ok();
    assert_eq!(out, "deployment 2 created; stage prod now serves it\n");
    let out = admin(&g, &["deployments", "create", "shop"]).ok();
    assert_eq!(out, "deployment 3 created\n");

    let out = admin(&g, &["deployments", "list", "shop"]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("ID  CREATED               DESCRIPTION"),
        "{out}"
    );
    assert!(lines[0].ends_with("ROUTES"), "{out}");
    // Newest first, created in UTC.
    assert!(lines[1].starts_with("3   20"), "{out}");
    assert!(lines[1].contains("Z  -  "), "{out}");
    assert!(lines[2].starts_with("2   "), "{out}");
    assert!(lines[2].contains("second one"), "{out}");
    assert!(lines[2].ends_with(" 2"), "{out}");
    assert!(
        lines[3].contains("initial deployment of stage \"prod\""),
        "{out}"
    );

    // Paging: a hint with the next position, which works.
    let out = admin(&g, &["deployments", "list", "shop", "--limit", "2"]).ok();
    assert!(
        out.ends_with("more: add --position 2 for the next page\n"),
        "{out}"
    );
    let out = admin(
        &g,
        &[
            "deployments",
            "list",
            "shop",
            "--limit",
            "2",
            "--position",
            "2",
        ],
    )
    .ok();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().nth(1).unwrap().starts_with("1 "), "{out}");

    let out = admin(&g, &["deployments", "show", "shop", "2"]).ok();
    assert!(
        out.starts_with("id:          2\napi:         shop\n"),
        "{out}"
    );
    assert!(out.contains("description: second one\n"), "{out}");
    assert!(
        out.ends_with("routes:      2\n  GET /items/{id}\n  GET /health\n"),
        "{out}"
    );

    let out = admin(&g, &["stages", "show", "shop", "prod"]).ok();
    assert!(out.contains("deployment: 2\n"), "{out}");
}

#[test]
fn stages_set_then_show() {
    let g = start();
    let out = admin(
        &g,
        &[
            "stages",
            "set",
            "shop",
            "prod",
            "--var",
            "env=staging",
            "--var",
            "extra=a:b",
            "--cache-ttl",
            "120",
            "--cache-capacity",
            "2MiB",
        ],
    )
    .ok();
    assert_eq!(
        out,
        "updated stage prod: deployment 1, 2 variables, cache 2 MiB, ttl 120s\n"
    );
    let out = admin(&g, &["stages", "show", "shop", "prod"]).ok();
    assert!(out.contains("source:     state (pinned"), "{out}");
    assert!(
        out.contains("cache:      2 MiB, ttl 120s, 0 entries\n"),
        "{out}"
    );
    assert!(
        out.contains("variables:  2\n  env = staging\n  extra = a:b\n"),
        "{out}"
    );

    let out = admin(
        &g,
        &[
            "stages",
            "set",
            "shop",
            "prod",
            "--unset-var",
            "extra",
            "--cache",
            "off",
        ],
    )
    .ok();
    assert_eq!(
        out,
        "updated stage prod: deployment 1, 1 variable, cache off\n"
    );
    let out = admin(&g, &["stages", "list", "shop"]).ok();
    assert_eq!(
        out,
        "NAME  SOURCE  DEPLOYMENT  CANARY  CACHE\n\
         prod  state   1           -       off\n\
         dev   file    -           -       off\n"
    );
}

#[test]
fn canary_set_promote_remove() {
    let g = start();
    admin(
        &g,
        &["deployments", "create", "shop", "--description", "v2"],
    )
    .ok();
    let out = admin(
        &g,
        &[
            "canary",
            "set",
            "shop",
            "prod",
            "--percent",
            "10",
            "--deployment",
            "2",
            "--override",
            "env=canary",
        ],
    )
    .ok();
    assert_eq!(
        out,
        "canary of stage prod: deployment 2 @ 10%, 1 override, does not use the stage cache\n"
    );
    let out = admin(&g, &["stages", "list", "shop"]).ok();
    assert!(
        out.contains("prod  state   1           2 @ 10%  1 MiB, ttl 60s\n"),
        "{out}"
    );
    let out = admin(
        &g,
        &["canary", "set", "shop", "prod", "--use-stage-cache", "true"],
    )
    .ok();
    assert!(out.ends_with(", uses the stage cache\n"), "{out}");

    // Deploying to a stage with a canary moves the canary only.
    let out = admin(&g, &["deployments", "create", "shop", "--stage", "prod"]).ok();
    assert_eq!(
        out,
        "deployment 3 created; the canary of stage prod now serves it\n"
    );

    let out = admin(&g, &["canary", "promote", "shop", "prod"]).ok();
    assert_eq!(
        out,
        "promoted the canary of stage prod: the stage now serves deployment 3; \
         the canary stays at 0% until removed\n"
    );
    let out = admin(&g, &["stages", "show", "shop", "prod"]).ok();
    assert!(out.contains("deployment: 3\n"), "{out}");
    assert!(out.contains("  env = canary\n"), "{out}");

    let out = admin(&g, &["canary", "remove", "shop", "prod"]).ok();
    assert_eq!(
        out,
        "removed the canary of stage prod; it serves deployment 3\n"
    );
    let r = admin(&g, &["canary", "remove", "shop", "prod"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "ringgate admin: stage \"prod\" of api \"shop\" has no canary [HTTP 404 not_found]\n"
    );
    assert_eq!(r.stdout, "");
}

#[test]
fn cache_stats_drop_and_flush() {
    let g = start();
    let get = |path: &str| {
        let r = g.server.client().get(path);
        assert_eq!(r.status, 200, "{r:?}");
    };
    get("/prod/items/1");
    get("/prod/items/1");
    get("/prod/items/2");
    let out = admin(&g, &["cache", "stats", "shop", "prod"]).ok();
    assert!(out.starts_with("cache:      1 MiB, ttl 60s\n"), "{out}");
    assert!(out.contains("entries:    2\n"), "{out}");
    assert!(out.contains("hits:       1\nmisses:     2\n"), "{out}");

    let out = admin(&g, &["cache", "drop", "shop", "prod", "--path", "/items/1"]).ok();
    assert_eq!(
        out,
        "dropped the cache entry for GET /items/1 from stage prod\n"
    );
    let out = admin(&g, &["cache", "drop", "shop", "prod", "--path", "/items/1"]).ok();
    assert_eq!(out, "stage prod had no cache entry for GET /items/1\n");
    let v = json(admin(&g, &["--json", "cache", "stats", "shop", "prod"]));
    assert_eq!(v["entries"], 1);

    let out = admin(&g, &["cache", "flush", "shop", "prod"]).ok();
    assert_eq!(out, "flushed the cache of stage prod\n");
    let v = json(admin(&g, &["--json", "cache", "stats", "shop", "prod"]));
    assert_eq!(v["entries"], 0);
    // --json with an empty body (202) prints nothing.
    assert_eq!(
        admin(&g, &["--json", "cache", "flush", "shop", "prod"]).ok(),
        ""
    );

    // A stage without a cache: refused with 409.
    let r = admin(&g, &["cache", "flush", "shop", "dev"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "ringgate admin: stage \"dev\" of api \"shop\" has no cache enabled [HTTP 409 conflict]\n"
    );
}

#[test]
fn refusals_exit_1_with_the_servers_message() {
    let g = start();
    let r = admin(&g, &["stages", "list", "nope"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "ringgate admin: no api \"nope\" in the configuration [HTTP 404 not_found]\n"
    );
    assert_eq!(r.stdout, "");

    // The field at fault is named.
    let r = admin(&g, &["canary", "set", "shop", "prod", "--percent", "150"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "ringgate admin: percent 150 is not between 0 and 100 (field: percent) \
         [HTTP 400 invalid_value]\n"
    );

    // Names are percent-encoded: this one reaches the server whole.
    let r = admin(&g, &["stages", "show", "shop", "a b/c?d"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "ringgate admin: api \"shop\" has no stage \"a b/c?d\" [HTTP 404 not_found]\n"
    );

    // An auto-deployed stage cannot be changed.
    let r = admin(&g, &["stages", "set", "shop", "dev", "--var", "a=b"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("[HTTP 409 conflict]"), "{r:?}");
}

#[test]
fn no_gateway_exits_2() {
    let dir = support::temp_path("cli-none");
    let socket = dir.with_extension("sock");
    let r = ringgate_admin(&["--socket", socket.to_str().unwrap(), "status"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        format!(
            "ringgate admin: cannot connect to {}: No such file or directory \
             (is ringgate running with this config?)\n",
            socket.display()
        )
    );
    assert_eq!(r.stdout, "");

    // A configuration that does not load: said so, with the way out.
    let missing = Path::new("/nonexistent/ringgate.toml");
    let r = ringgate_admin(&["--config", missing.to_str().unwrap(), "apis"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .starts_with("ringgate admin: cannot find the admin socket: the configuration"),
        "{r:?}"
    );
    assert!(r.stderr.contains("--socket PATH"), "{r:?}");

    // A change of nothing is refused before connecting.
    let r = ringgate_admin(&["--socket", "/nonexistent.sock", "stages", "set", "a", "b"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("nothing to change"), "{r:?}");
}

#[test]
fn the_tcp_listener_with_its_token() {
    let origin = Origin::start("cli-tcp");
    let token = support::temp_path("cli-token").with_extension("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    let wrong = token.with_extension("wrong");
    std::fs::write(&wrong, "not-the-token-at-all-not-at-all").unwrap();
    let addr = support::closed_port();
    let toml = format!(
        "{}\n[admin]\nlisten = \"{addr}\"\ntoken_file = {:?}\n",
        config(&origin),
        token.display().to_string()
    );
    let server = BinaryServer::start(&toml);
    let url = format!("http://{addr}");
    let r = ringgate_admin(&[
        "--url",
        &url,
        "--token-file",
        token.to_str().unwrap(),
        "apis",
    ]);
    assert!(r.ok().contains("shop  *      prod@1,dev"));
    let r = ringgate_admin(&[
        "--url",
        &url,
        "--token-file",
        wrong.to_str().unwrap(),
        "apis",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.ends_with("[HTTP 401 unauthorized]\n"), "{r:?}");
    drop(server);
    let _ = std::fs::remove_file(&token);
    let _ = std::fs::remove_file(&wrong);
}

/// An api `metered` whose `GET /a` needs an API key (a mock answering `a`),
/// with a stage `prod`, and `GET /free` that does not.
const METERED: &str = r#"
[[api]]
name = "metered"
hosts = ["metered"]
  [[api.stage]]
  name = "prod"
  [[api.route]]
  route = "GET /a"
  mock = { body = "a" }
  api_key_required = true
  [[api.route]]
  route = "GET /free"
  mock = { body = "free" }
"#;

/// `GET /prod/a` on the `metered` api with `x-api-key: key`: the status
/// and body.
fn metered(g: &Gateway, key: &str) -> (u16, String) {
    let r = g.server.client().request(format!(
        "GET /prod/a HTTP/1.1\r\nHost: metered\r\nx-api-key: {key}\r\n\r\n"
    ));
    (r.status, r.text())
}

/// Today (UTC) as YYYY-MM-DD.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ringgate::throttle::quota::format_day(secs / 86_400)
}

/// The word after `prefix` on the line that starts with it.
fn after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{out}"))
        .split([' ', ','])
        .next()
        .unwrap()
}

#[test]
fn keys_plans_quota_and_usage() {
    let g = start_with(METERED);
    let out = admin(
        &g,
        &[
            "plans",
            "create",
            "gold",
            "--quota",
            "3",
            "--period",
            "day",
            "--stage",
            "metered:prod",
            "--rate",
            "100",
            "--burst",
            "50",
        ],
    )
    .ok();
    let plan = after(&out, "created plan ").to_string();
    assert_eq!(
        out,
        format!(
            "created plan {plan} (gold): throttle 100/s, burst 50, quota 3 per DAY, \
             stages metered:prod, 0 keys\n"
        )
    );

    // A key attached to the plan: its id and its value, shown this once.
    let out = admin(&g, &["keys", "create", "alice", "--plan", &plan]).ok();
    let key = after(&out, "created key ").to_string();
    let value = after(&out, "value: ").to_string();
    assert_eq!(value.len(), 40, "{out}");
    assert_eq!(
        out,
        format!(
            "created key {key} (alice), enabled, plans: {plan}\n\
             value: {value}\n\
             note: the value is shown this once; other commands leave it out unless asked \
             (keys get {key} --include-value)\n"
        )
    );
    let out = admin(&g, &["keys", "list"]).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].ends_with("  CREATED"),
        "{out}"
    );
    assert!(lines[1].starts_with(&format!("{key}  alice  yes      state   {plan}  20")));
    assert!(!out.contains(&value), "{out}");
    let out = admin(&g, &["keys", "list", "--include-values"]).ok();
    assert!(out.lines().next().unwrap().ends_with("  VALUE"), "{out}");
    assert!(out.lines().nth(1).unwrap().ends_with(&value), "{out}");
    assert_eq!(
        admin(&g, &["keys", "list", "--name", "bo"]).ok(),
        "(none)\n"
    );
    let out = admin(&g, &["keys", "get", &key]).ok();
    assert!(
        out.starts_with(&format!("id:          {key}\nname:        alice\n")),
        "{out}"
    );
    assert!(!out.contains(&value), "{out}");
    let out = admin(&g, &["keys", "get", &key, "--include-value"]).ok();
    assert!(out.ends_with(&format!("value:       {value}\n")), "{out}");

    let out = admin(&g, &["plans", "get", &plan]).ok();
    assert!(out.contains("quota:       3 per DAY\n"), "{out}");
    assert!(
        out.contains(&format!(
            "stages:      1\n  metered:prod\nkeys:        1\n  {key}\n"
        )),
        "{out}"
    );
    let out = admin(&g, &["plans", "keys", &plan]).ok();
    assert!(out.contains(&format!("{key}  alice")), "{out}");

    // Requests with the key: 3 through, then Limit Exceeded.
    for _ in 0..3 {
        assert_eq!(metered(&g, &value), (200, "a".to_string()));
    }
    assert_eq!(
        metered(&g, &value),
        (429, r#"{"message":"Limit Exceeded"}"#.to_string())
    );

    // The usage: a row per key per day.
    let day = today();
    let out = admin(&g, &["usage", &plan, "--from", &day, "--to", &day]).ok();
    assert_eq!(
        out,
        format!(
            "KEY{pad}  DATE        USED  REMAINING\n{key}  {day}  3     0\n",
            pad = " ".repeat(key.len() - 3)
        )
    );
    let v = json(admin(
        &g,
        &[
            "usage", &plan, "--from", &day, "--to", &day, "--json", "--key", &key,
        ],
    ));
    assert_eq!(v["usagePlanId"], plan.as_str());
    assert_eq!(v["items"][&key], serde_json::json!([[3, 0]]));

    // The quota period, then two more.
    let out = admin(&g, &["quota", &plan, &key]).ok();
    assert!(out.contains("quota:      3 per DAY\n"), "{out}");
    assert!(
        out.ends_with("allowance:  3\nused:       3\nremaining:  0\n"),
        "{out}"
    );
    let out = admin(&g, &["quota", &plan, &key, "--remaining", "2"]).ok();
    assert!(
        out.starts_with(&format!("key {key} of plan {plan}: 2 remaining until ")),
        "{out}"
    );
    assert!(out.ends_with("(UTC); allowance 5, used 3\n"), "{out}");
    assert_eq!(metered(&g, &value).0, 200);
    assert_eq!(metered(&g, &value).0, 200);
    assert_eq!(metered(&g, &value).0, 429);
    let out = admin(&g, &["usage", &plan, "--from", &day, "--to", &day]).ok();
    assert!(out.ends_with(&format!("{key}  {day}  5     0\n")), "{out}");

    // Disabled: 403; enabled again: counted as before.
    let out = admin(&g, &["keys", "disable", &key]).ok();
    assert_eq!(
        out,
        format!("disabled key {key} (alice): its requests are refused (403) until enabled\n")
    );
    assert_eq!(
        metered(&g, &value),
        (403, r#"{"message":"Forbidden"}"#.to_string())
    );
    assert!(admin(&g, &["keys", "list"]).ok().contains("alice  no "));
    assert_eq!(
        admin(&g, &["keys", "enable", &key]).ok(),
        format!("enabled key {key} (alice)\n")
    );
    assert_eq!(metered(&g, &value).0, 429);
    assert_eq!(
        admin(&g, &["keys", "rename", &key, "alicia"]).ok(),
        format!("renamed key {key} (alicia)\n")
    );

    // Without a quota the key goes through; REMAINING is `-`.
    let out = admin(
        &g,
        &["plans", "update", &plan, "--no-quota", "--no-throttle"],
    )
    .ok();
    assert_eq!(
        out,
        format!(
            "updated plan {plan} (gold): throttle none, quota none, stages metered:prod, 1 key\n"
        )
    );
    assert_eq!(metered(&g, &value).0, 200);
    let out = admin(&g, &["usage", &plan, "--from", &day, "--to", &day]).ok();
    assert!(out.ends_with(&format!("{key}  {day}  6     -\n")), "{out}");
    let out = admin(&g, &["plans", "list"]).ok();
    assert!(
        out.contains(&format!(
            "{plan}  gold  state   none      none   metered:prod  1\n"
        )),
        "{out}"
    );

    // Detached: 403; attached: through.
    let out = admin(&g, &["plans", "detach", &plan, &key]).ok();
    assert!(out.starts_with(&format!("detached key {key} from plan {plan} (gold)")));
    assert!(out.ends_with(", 0 keys\n"), "{out}");
    assert_eq!(metered(&g, &value).0, 403);
    let out = admin(&g, &["plans", "attach", &plan, &key]).ok();
    assert!(out.ends_with(", 1 key\n"), "{out}");
    assert_eq!(metered(&g, &value).0, 200);

    // Route throttles are given per listed stage.
    let out = admin(
        &g,
        &[
            "plans",
            "update",
            &plan,
            "--stage",
            "metered:prod",
            "--route-throttle",
            "metered:prod:GET /a=5/10",
        ],
    )
    .ok();
    assert!(out.contains("stages metered:prod"), "{out}");
    let out = admin(&g, &["plans", "get", &plan]).ok();
    assert!(
        out.contains("  metered:prod\n    GET /a: 5/s, burst 10\n"),
        "{out}"
    );

    // Deleted: 403, and gone.
    assert_eq!(
        admin(&g, &["keys", "delete", &key]).ok(),
        format!("deleted key {key}\n")
    );
    assert_eq!(metered(&g, &value).0, 403);
    assert_eq!(
        admin(&g, &["plans", "delete", &plan]).ok(),
        format!("deleted plan {plan}\n")
    );
    assert_eq!(admin(&g, &["plans", "list"]).ok(), "(none)\n");
}

#[test]
fn keys_import_and_refusals() {
    let g = start_with(METERED);
    let v = json(admin(
        &g,
        &["--json", "plans", "create", "p", "--stage", "metered:prod"],
    ));
    let plan = v["id"].as_str().unwrap().to_string();

    // Two keys from a CSV file, one more from standard input.
    let csv = support::temp_path("cli-keys").with_extension("csv");
    std::fs::write(
        &csv,
        format!(
            "key,name,enabled,usageplanIds\n\
             csv-key-one-0123456789abc,one,true,{plan}\n\
             csv-key-two-0123456789abc,two,false,{plan}\n"
        ),
    )
    .unwrap();
    let out = admin(&g, &["keys", "import", csv.to_str().unwrap()]).ok();
    let _ = std::fs::remove_file(&csv);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "imported 2 keys", "{out}");
    assert!(lines[1].starts_with("ID "), "{out}");
    assert!(lines[2].contains("  one   yes      "), "{out}");
    assert!(lines[3].contains("  two   no       "), "{out}");
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(metered(&g, "csv-key-one-0123456789abc").0, 200);
    assert_eq!(metered(&g, "csv-key-two-0123456789abc").0, 403);
    let out = admin_stdin(
        &g,
        &["keys", "import", "-"],
        Some(b"key,name\ncsv-key-three-0123456789ab,three\n"),
    )
    .ok();
    assert!(out.starts_with("imported 1 key\n"), "{out}");
    assert_eq!(admin(&g, &["keys", "list"]).ok().lines().count(), 4);
    let plans_before = admin(&g, &["plans", "list", "--json"]).ok();
    let keys_before = admin(&g, &["keys", "list", "--json"]).ok();

    // A bad argument: a usage error (exit 2) naming it; nothing sent.
    let r = admin(
        &g,
        &["plans", "create", "q", "--quota", "5", "--period", "YEAR"],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains("invalid value 'YEAR' for '--period <DAY|WEEK|MONTH>'"),
        "{r:?}"
    );
    assert!(
        r.stderr.contains("[possible values: DAY, WEEK, MONTH]"),
        "{r:?}"
    );
    let r = admin(&g, &["plans", "create", "q", "--quota", "5"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--period"), "{r:?}");
    let r = admin(
        &g,
        &[
            "plans",
            "create",
            "q",
            "--stage",
            "metered:prod",
            "--route-throttle",
            "metered:beta:GET /a=1/1",
        ],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(
        r.stderr,
        "ringgate admin: --route-throttle metered:beta:GET /a: stage metered:beta \
         is not given with --stage\n"
    );
    let r = admin(&g, &["plans", "update", &plan]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("nothing to change"), "{r:?}");
    let r = admin(
        &g,
        &["usage", &plan, "--from", "2026-02-30", "--to", "2026-03-01"],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("is not a date YYYY-MM-DD"), "{r:?}");
    let r = admin(&g, &["keys", "import", "/nonexistent/keys.csv"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .starts_with("ringgate admin: cannot read /nonexistent/keys.csv"),
        "{r:?}"
    );

    // Refused by the server: exit 1 with its message.
    let r = admin(&g, &["keys", "get", "nope"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "ringgate admin: no api key \"nope\" [HTTP 404 not_found]\n"
    );
    assert_eq!(r.stdout, "");
    let r = admin(&g, &["plans", "attach", "nope", "x"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(
        r.stderr,
        "ringgate admin: no usage plan \"nope\" [HTTP 404 not_found]\n"
    );
    let r = admin(&g, &["plans", "create", "q", "--stage", "metered:nope"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("(field: stages[0].stage) [HTTP 400"),
        "{r:?}"
    );
    let r = admin(&g, &["keys", "create", "x", "--value", "short"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("(field: value) [HTTP 400"), "{r:?}");
    // The same CSV again: refused whole.
    let r = admin_stdin(
        &g,
        &["keys", "import", "-"],
        Some(b"key,name\nfresh-key-0123456789abcdef,fresh\ncsv-key-one-0123456789abc,dup\n"),
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("[HTTP 409"), "{r:?}");
    let r = admin(&g, &["quota", &plan, "nope"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("[HTTP 404 not_found]"), "{r:?}");

    // Nothing changed.
    assert_eq!(admin(&g, &["plans", "list", "--json"]).ok(), plans_before);
    assert_eq!(admin(&g, &["keys", "list", "--json"]).ok(), keys_before);
}

#[test]
fn lists_are_fetched_whole() {
    let g = start_with(METERED);
    // More keys than one page of 500.
    let mut csv = String::from("key,name\n");
    for i in 0..501 {
        csv.push_str(&format!("bulk-key-{i:04}-0123456789abcdef,k{i:04}\n"));
    }
    let out = admin_stdin(&g, &["keys", "import", "-"], Some(csv.as_bytes())).ok();
    assert!(out.starts_with("imported 501 keys\n"), "{out}");
    let out = admin(&g, &["keys", "list"]).ok();
    assert_eq!(out.lines().count(), 502);
    assert!(!out.contains("more:"), "{out}");
    let v = json(admin(&g, &["keys", "list", "--json"]));
    assert_eq!(v["items"].as_array().unwrap().len(), 501);
    assert!(v.get("position").is_none(), "{v}");
}
