//! `ringgate admin ...` against a real `ringgate serve` child process: each
//! command run as the binary would be, over the server's admin socket,
//! checking what it prints and its exit code (0 done, 1 refused by the
//! server, 2 not reachable).

mod support;

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
    let origin = Origin::start("cli");
    let server = BinaryServer::start(&config(&origin));
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
    let out = Command::new(binary())
        .arg("admin")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringgate admin");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ringgate admin --socket <the server's socket> ARGS...`.
fn admin(g: &Gateway, args: &[&str]) -> Run {
    let socket = g.server.admin_socket();
    let mut all = vec!["--socket", socket.to_str().expect("UTF-8 temp path")];
    all.extend_from_slice(args);
    ringgate_admin(&all)
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
