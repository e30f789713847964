#![forbid(unsafe_code)]

use super::*;

/// Parses `text` (a leading newline is dropped so raw strings read well).
fn ok(text: &str) -> Config {
    let text = text.strip_prefix('\n').unwrap_or(text);
    match parse(text, "t.toml") {
        Ok(c) => c,
        Err(e) => panic!("unexpected error:\n{e}"),
    }
}

fn bad(text: &str) -> ConfigError {
    let text = text.strip_prefix('\n').unwrap_or(text);
    match parse(text, "t.toml") {
        Ok(c) => panic!("expected an error, got {c:#?}"),
        Err(e) => e,
    }
}

#[track_caller]
fn check(e: &ConfigError, line: usize, key: &str, problem: &str) {
    assert_eq!(
        (e.line, e.key.as_str()),
        (line, key),
        "wrong position or key in:\n{e}"
    );
    assert!(
        e.problem.contains(problem),
        "problem lacks {problem:?}:\n{e}"
    );
    assert!(!e.fix.is_empty(), "no fix in:\n{e}");
    assert_eq!(e.file, "t.toml");
}

/// A small valid API to append bad parts to.
const API: &str = r#"
[[api]]
name = "demo"
hosts = ["api.example.com"]
[[api.stage]]
name = "prod"
variables = { greeting = "hello" }
"#;

const FULL: &str = r#"
[server]
listen = ["127.0.0.1:8080", "[::1]:0"]
workers = 4
pin_workers = false
io_driver = "epoll"
ring_entries = 1024
drain_timeout = "500ms"

[limits]
max_header_bytes = 2048
max_headers = 50
max_url_bytes = 1024
max_body_bytes = "1MiB"
header_read_timeout = "2s"
keepalive_timeout = "2m"
max_connections_per_worker = 500

[[api]]
name = "demo"
hosts = ["API.Example.com:8443"]
unmatched_route = "not_found"

  [[api.stage]]
  name = "prod"
  variables = { greeting = "hello", backend = "127.0.0.1:9000" }

  [[api.stage]]
  name = "beta"
  variables = { greeting = "hi" }

  [[api.route]]
  route = "GET /pets/{id}"
  [api.route.mock]
  status = 201
  headers = { "Content-Type" = "application/json", x-extra = "1" }
  body = '{"id": "{id}", "greeting": "${stageVariables.greeting}"}'

  [[api.route]]
  route = "ANY /files/{proxy+}"
  [api.route.mock]
  body = "file {proxy}"

  [[api.route]]
  route = "$default"
  [api.route.mock]

[[api]]
name = "fallback"
  [[api.stage]]
  name = "live"

[[domain]]
host = "shop.example.com:443"
  [[domain.mapping]]
  base_path = "/orders/v1/items/"
  api = "demo"
  stage = "prod"
  [[domain.mapping]]
  api = "demo"
  stage = "beta"
"#;

#[test]
fn full_config() {
    let c = ok(FULL);
    assert_eq!(c.source, "t.toml");
    assert_eq!(
        c.server,
        ServerConfig {
            listen: vec![
                "127.0.0.1:8080".parse().unwrap(),
                "[::1]:0".parse().unwrap()
            ],
            workers: Some(4),
            pin_workers: false,
            io_driver: IoDriver::Epoll,
            ring_entries: 1024,
            drain_timeout: Duration::from_millis(500),
            health_path: None,
            listen_tls: Vec::new(),
        }
    );
    assert_eq!(
        c.limits,
        Limits {
            max_header_bytes: 2048,
            max_headers: 50,
            max_url_bytes: 1024,
            max_body_bytes: 1 << 20,
            header_read_timeout: Duration::from_secs(2),
            keepalive_timeout: Duration::from_secs(120),
            max_connections_per_worker: 500,
        }
    );
    assert_eq!(c.apis.len(), 2);
    let demo = &c.apis[0];
    assert_eq!(demo.name, "demo");
    assert_eq!(demo.hosts, ["api.example.com"]);
    assert_eq!(demo.unmatched_route, UnmatchedRoute::NotFound);
    assert_eq!(demo.stages.len(), 2);
    assert_eq!(
        demo.stage("prod").unwrap().variables["backend"],
        "127.0.0.1:9000"
    );
    assert_eq!(demo.stage("beta").unwrap().variables["greeting"], "hi");
    assert_eq!(demo.routes.len(), 3);

    let r = &demo.routes[0];
    assert_eq!(r.line, 32);
    assert_eq!(
        r.key,
        RouteKey::Route {
            method: Some("GET".into()),
            path: "/pets/{id}".into()
        }
    );
    assert_eq!(r.key.as_display(), "GET /pets/{id}");
    let Integration::Mock(m) = &r.integration else {
        panic!("not a mock")
    };
    assert_eq!(m.status, 201);
    assert_eq!(
        m.headers,
        [
            ("content-type".to_string(), "application/json".to_string()),
            ("x-extra".to_string(), "1".to_string())
        ]
    );
    use BodyPart::*;
    assert_eq!(
        m.body,
        [
            Literal("{\"id\": \"".into()),
            PathParam("id".into()),
            Literal("\", \"greeting\": \"".into()),
            StageVariable("greeting".into()),
            Literal("\"}".into()),
        ]
    );

    let r = &demo.routes[1];
    assert_eq!(r.key.as_display(), "ANY /files/{proxy+}");
    assert!(matches!(&r.key, RouteKey::Route { method: None, .. }));
    let Integration::Mock(m) = &r.integration else {
        panic!("not a mock")
    };
    assert_eq!(
        (m.status, m.body.clone()),
        (
            200,
            vec![Literal("file ".into()), PathParam("proxy".into())]
        )
    );

    let r = &demo.routes[2];
    assert_eq!(r.key, RouteKey::Default);
    assert_eq!(r.key.as_display(), "$default");
    let Integration::Mock(m) = &r.integration else {
        panic!("not a mock")
    };
    assert!(m.body.is_empty() && m.headers.is_empty());

    let fallback = &c.apis[1];
    assert!(fallback.hosts.is_empty() && fallback.routes.is_empty());
    assert_eq!(
        fallback.unmatched_route,
        UnmatchedRoute::MissingAuthenticationToken
    );
    assert!(fallback.stages[0].variables.is_empty());

    assert_eq!(
        c.domains,
        [DomainConfig {
            host: "shop.example.com".into(),
            mappings: vec![
                Mapping {
                    base_path: "orders/v1/items".into(),
                    api: "demo".into(),
                    stage: "prod".into()
                },
                Mapping {
                    base_path: String::new(),
                    api: "demo".into(),
                    stage: "beta".into()
                },
            ]
        }]
    );
}

#[test]
fn empty_file_gives_defaults() {
    let c = ok("");
    assert_eq!(c.server, ServerConfig::default());
    assert_eq!(c.limits, Limits::default());
    assert!(c.apis.is_empty() && c.domains.is_empty());
    assert_eq!(c.server.listen, ["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(c.server.workers, None);
    assert!(c.server.pin_workers);
    assert_eq!(c.server.io_driver, IoDriver::Auto);
    assert_eq!(c.server.ring_entries, 4096);
    assert_eq!(c.server.drain_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.max_header_bytes, 10240);
    assert_eq!(c.limits.max_headers, 100);
    assert_eq!(c.limits.max_url_bytes, 8192);
    assert_eq!(c.limits.max_body_bytes, 10_485_760);
    assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(c.limits.max_connections_per_worker, 10000);
}

#[test]
fn missing_sections_take_defaults() {
    let c = ok("[server]\nworkers = \"auto\"\n[limits]\nmax_headers = 20\n");
    assert_eq!(c.server, ServerConfig::default());
    assert_eq!(
        c.limits,
        Limits {
            max_headers: 20,
            ..Limits::default()
        }
    );
    let c = ok(API);
    assert_eq!(c.server, ServerConfig::default());
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.apis.len(), 1);
}

#[test]
fn durations_and_sizes() {
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    for (s, d) in [
        ("500ms", ms(500)),
        ("10s", secs(10)),
        ("2m", secs(120)),
        ("1h", secs(3600)),
        ("0s", Duration::ZERO),
        ("0ms", Duration::ZERO),
        // humantime's forms: compound, spaced, spelled out, fractional.
        ("1m30s", secs(90)),
        ("1h 30m", secs(5400)),
        ("250ms", ms(250)),
        ("10 s", secs(10)),
        ("60 sec", secs(60)),
        ("60 seconds", secs(60)),
        ("2 minutes", secs(120)),
        ("1hour", secs(3600)),
        ("1.5s", ms(1500)),
        ("0.25s", ms(250)),
        ("1000000ns", ms(1)),
        (" 1s ", secs(1)),
        // Parts add up in any order, even repeated.
        ("1s 1m", secs(61)),
        ("1h1h", secs(7200)),
        // Fixed-length long units parse; the keys' ranges (at most 1h) then
        // refuse them with the key, the line and the range.
        ("2d", secs(2 * 86400)),
        ("1w", secs(7 * 86400)),
        // The largest humantime takes; the ranges refuse it too.
        ("18446744073709551615s", secs(u64::MAX)),
    ] {
        assert_eq!(parse_duration(s), Ok(d), "{s:?}");
    }
    for (s, why) in [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("10", "a number needs a unit"),
        ("1.5", "a number needs a unit"),
        ("1m 30", "a number needs a unit"),
        ("0", "a number needs a unit (zero is \"0s\")"),
        ("s", "expected a number at \"s\""),
        ("-1s", "expected a number at \"-1s\""),
        ("+1s", "expected a number at \"+1s\""),
        ("sixty seconds", "expected a number at \"sixty seconds\""),
        ("1_000ms", "unexpected \"_000ms\""),
        ("1.s", "unexpected \".s\""),
        ("10sex", "unknown unit \"sex\""),
        ("10S", "unknown unit \"S\""),
        ("1e3ms", "unknown unit \"e\""),
        ("99999999999999999999h", "the number is too large"),
        ("18446744073709551616s", "the number is too large"),
        ("600000000000y", "the number is too large"),
        // Refused here although humantime takes them.
        (
            "5M",
            "\"M\" is a calendar unit with no fixed length (minutes are \"m\")",
        ),
        ("1 month", "\"month\" is a calendar unit"),
        ("1y", "\"y\" is a calendar unit"),
        ("2 years", "\"years\" is a calendar unit"),
        ("1us", "it is finer than a millisecond"),
        ("500ns", "it is finer than a millisecond"),
        ("0.0005s", "it is finer than a millisecond"),
        ("1.0001s", "it is finer than a millisecond"),
        ("1 0s", "a space inside a number"),
        ("1 000ms", "a space inside a number"),
        ("1. 5s", "a space inside a number"),
    ] {
        match parse_duration(s) {
            Ok(d) => panic!("{s:?} parsed as {d:?}"),
            Err(e) => assert!(
                e.starts_with(why),
                "{s:?}: {e:?} does not start with {why:?}"
            ),
        }
    }
    assert_eq!(parse_size("100B"), Some(100));
    assert_eq!(parse_size("100"), Some(100));
    assert_eq!(parse_size("512KiB"), Some(512 << 10));
    assert_eq!(parse_size("10MiB"), Some(10 << 20));
    assert_eq!(parse_size("1GiB"), Some(1 << 30));
    assert_eq!(parse_size("1TiB"), Some(1 << 40));
    for s in ["", "MiB", "10MB", "10 MiB", "1.5MiB", "99999999999TiB"] {
        assert_eq!(parse_size(s), None, "{s:?}");
    }
}

#[test]
fn display_format() {
    let e = bad("[server]\nworkers = 0\n");
    assert_eq!(
        e.to_string(),
        "t.toml:2:11: server.workers: workers must be between 1 and 1024, found 0\n  \
         fix: use an integer from 1 to 1024, or \"auto\" for one worker per core"
    );
    let e = load(Path::new("/nonexistent/ringgate.toml")).unwrap_err();
    assert_eq!((e.line, e.column), (0, 0));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/ringgate.toml: cannot read"),
        "{e}"
    );
}

// --- bad inputs ----------------------------------------------------------------

#[test]
fn unknown_key_in_server() {
    let e = bad("[server]\nworkers = 2\nworkrs = 3\n");
    check(&e, 3, "server.workrs", "unknown field `workrs`");
    assert_eq!(e.column, 1);
    assert!(
        e.fix.contains("listen, listen_tls, workers, pin_workers"),
        "{e}"
    );
    assert!(e.fix.contains("did you mean `workers`"), "{e}");
}

#[test]
fn unknown_keys_elsewhere() {
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /\"\ntimeout = 3\n[api.route.mock]\n"
    ));
    check(&e, 9, "api[0].route[0].timeout", "unknown field `timeout`");
    assert!(e.fix.contains("route, mock"), "{e}");

    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /\"\nmock = {{ stauts = 201 }}\n"
    ));
    check(
        &e,
        9,
        "api[0].route[0].mock.stauts",
        "unknown field `stauts`",
    );
    assert!(e.fix.contains("did you mean `status`"), "{e}");

    let e = bad("colour = 1\n");
    check(&e, 1, "colour", "unknown field `colour`");
    assert!(e.fix.contains("server, limits, api, domain"), "{e}");

    let e = bad("[server.tls]\ncert = \"x\"\n");
    check(&e, 1, "server.tls", "unknown field `tls`");
}

#[test]
fn bad_duration() {
    let e = bad("[limits]\nkeepalive_timeout = \"sixty seconds\"\n");
    check(
        &e,
        2,
        "limits.keepalive_timeout",
        "invalid duration \"sixty seconds\": expected a number at \"sixty seconds\"",
    );
    assert_eq!(e.column, 21);
    assert!(e.fix.contains("\"1m30s\""), "{e}");
    // A bare number, even 0, is refused: the message says a unit is needed.
    for v in ["60", "0"] {
        let e = bad(&format!("[limits]\nkeepalive_timeout = \"{v}\"\n"));
        check(
            &e,
            2,
            "limits.keepalive_timeout",
            &format!("invalid duration \"{v}\": a number needs a unit"),
        );
    }
    // "5M" is five months to humantime: refused before any range check.
    let e = bad("[limits]\nkeepalive_timeout = \"5M\"\n");
    check(
        &e,
        2,
        "limits.keepalive_timeout",
        "invalid duration \"5M\": \"M\" is a calendar unit with no fixed length (minutes are \"m\")",
    );
    // Sub-millisecond values are refused even where 0s is allowed.
    let e = bad("[server]\ndrain_timeout = \"1us\"\n");
    check(
        &e,
        2,
        "server.drain_timeout",
        "invalid duration \"1us\": it is finer than a millisecond",
    );
    // Days parse, and the key's range refuses them.
    let e = bad("[limits]\nkeepalive_timeout = \"2d\"\n");
    check(
        &e,
        2,
        "limits.keepalive_timeout",
        "between 1s and 1h, found 48h",
    );
    // humantime's compound and fractional forms are taken.
    let c = ok(&format!(
        "[server]\ndrain_timeout = \"1m30s\"\n[limits]\nkeepalive_timeout = \"1h 0m\"\nheader_read_timeout = \"2.5s\"\n{API}"
    ));
    assert_eq!(c.server.drain_timeout, Duration::from_secs(90));
    assert_eq!(c.limits.keepalive_timeout, Duration::from_secs(3600));
    assert_eq!(c.limits.header_read_timeout, Duration::from_millis(2500));
    let e = bad("[server]\ndrain_timeout = 10\n");
    check(&e, 2, "server.drain_timeout", "found integer 10");
    let e = bad("[limits]\nheader_read_timeout = \"50ms\"\n");
    check(
        &e,
        2,
        "limits.header_read_timeout",
        "between 100ms and 1h, found 50ms",
    );
}

#[test]
fn workers_out_of_range_or_wrong_type() {
    let e = bad("[server]\nworkers = 0\n");
    check(&e, 2, "server.workers", "between 1 and 1024, found 0");
    let e = bad("[server]\nworkers = true\n");
    check(&e, 2, "server.workers", "found boolean true");
    let e = bad("[server]\nworkers = \"many\"\n");
    check(&e, 2, "server.workers", "found string \"many\"");
}

#[test]
fn wrong_types_from_serde() {
    let e = bad("[server]\npin_workers = \"yes\"\n");
    check(
        &e,
        2,
        "server.pin_workers",
        "invalid type: string \"yes\", expected a boolean",
    );
    assert_eq!(e.fix, "change the value to a boolean");
    let e = bad("[server]\nlisten = [\"127.0.0.1:1\", 8080]\n");
    check(&e, 2, "server.listen[1]", "expected a string");
    let e = bad("[server]\nlisten = \"127.0.0.1:80\"\n");
    check(&e, 2, "server.listen", "expected an array");
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /\"\nmock = 5\n"
    ));
    check(
        &e,
        9,
        "api[0].route[0].mock",
        "integer `5`, expected a table",
    );
}

#[test]
fn missing_field() {
    let e = bad("[[api]]\nhosts = [\"a.example\"]\n");
    check(&e, 1, "api[0].name", "missing field `name`");
    let e = bad(&format!(
        "{API}[[domain]]\nhost = \"x.example\"\n[[domain.mapping]]\napi = \"demo\"\n"
    ));
    check(&e, 9, "domain[0].mapping[0].stage", "missing field `stage`");
}

#[test]
fn bad_method() {
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"FETCH /pets\"\n[api.route.mock]\n"
    ));
    check(&e, 8, "api[0].route[0].route", "unknown method \"FETCH\"");
    assert_eq!(e.column, 9);
    assert_eq!(
        e.fix,
        "use one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY"
    );
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"get /pets\"\n[api.route.mock]\n"
    ));
    check(&e, 8, "api[0].route[0].route", "upper case");
}

#[test]
fn bad_paths() {
    let cases = [
        ("GET /{proxy+}/x", "must be the last segment"),
        ("GET /a/", "ends with '/'"),
        ("GET /a//b", "empty segment"),
        ("GET /a/x{id}", "mixes literal text"),
        ("GET /{a}/{a}", "more than once"),
        ("GET /{a-b}", "not valid"),
        ("GET /a b", "contains ' '"),
        ("GET /a?x=1", "contains '?'"),
        ("GET pets", "must start with '/'"),
        ("/pets", "has no method"),
        ("$other", "unknown special route"),
    ];
    for (route, problem) in cases {
        let e = bad(&format!(
            "{API}[[api.route]]\nroute = \"{route}\"\n[api.route.mock]\n"
        ));
        check(&e, 8, "api[0].route[0].route", problem);
    }
}

#[test]
fn greedy_not_last() {
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /{{proxy+}}/tail\"\n[api.route.mock]\n"
    ));
    check(
        &e,
        8,
        "api[0].route[0].route",
        "greedy parameter {proxy+} must be the last segment",
    );
}

#[test]
fn duplicate_route_names_first_line() {
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /a/{{id}}\"\n[api.route.mock]\n\
         [[api.route]]\nroute = \"ANY /a/{{id}}\"\n[api.route.mock]\n\
         [[api.route]]\nroute = \"GET /a/{{x}}\"\n[api.route.mock]\n"
    ));
    check(
        &e,
        14,
        "api[0].route[2].route",
        "conflicts with \"GET /a/{id}\" on line 8",
    );
}

#[test]
fn duplicate_default() {
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"$default\"\n[api.route.mock]\n\
         [[api.route]]\nroute = \"$default\"\n[api.route.mock]\n"
    ));
    check(
        &e,
        11,
        "api[0].route[1].route",
        "duplicate $default route; the first is on line 8",
    );
}

#[test]
fn mapping_to_unknown_stage_or_api() {
    let e = bad(&format!(
        "{API}[[domain]]\nhost = \"x.example\"\n[[domain.mapping]]\napi = \"demo\"\nstage = \"dev\"\n"
    ));
    check(
        &e,
        11,
        "domain[0].mapping[0].stage",
        "api \"demo\" has no stage \"dev\"",
    );
    assert!(e.fix.contains("prod"), "{e}");
    let e = bad(&format!(
        "{API}[[domain]]\nhost = \"x.example\"\n[[domain.mapping]]\napi = \"demp\"\nstage = \"prod\"\n"
    ));
    check(
        &e,
        10,
        "domain[0].mapping[0].api",
        "api \"demp\" is not defined",
    );
}

#[test]
fn mock_sets_reserved_header() {
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /\"\n[api.route.mock]\nheaders = {{ Content-Length = \"5\" }}\n"
    ));
    check(
        &e,
        10,
        "api[0].route[0].mock.headers.Content-Length",
        "may not set the content-length header",
    );
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /\"\n[api.route.mock]\nheaders = {{ \"bad name\" = \"5\" }}\n"
    ));
    check(
        &e,
        10,
        "api[0].route[0].mock.headers.\"bad name\"",
        "not a valid header name",
    );
}

#[test]
fn missing_stage_variable() {
    let e = bad(&format!(
        "{API}[[api.stage]]\nname = \"beta\"\n\
         [[api.route]]\nroute = \"GET /\"\n[api.route.mock]\nbody = \"${{stageVariables.greeting}}!\"\n"
    ));
    check(
        &e,
        12,
        "api[0].route[0].mock.body",
        "stage \"beta\" does not define the stage variable \"greeting\"",
    );
    assert!(e.fix.contains("(line 8)"), "{e}");
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /\"\n[api.route.mock]\nbody = \"${{stageVariables.a-b}}\"\n"
    ));
    check(
        &e,
        10,
        "api[0].route[0].mock.body",
        "not followed by a variable name",
    );
}

#[test]
fn body_braces_stay_literal() {
    let c = ok(&format!(
        "{API}[[api.route]]\nroute = \"GET /{{id}}\"\n[api.route.mock]\nbody = '{{\"a\": {{}}, \"{{x}}\": \"{{id}}\"}}'\n"
    ));
    let Integration::Mock(m) = &c.apis[0].routes[0].integration else {
        panic!("not a mock")
    };
    assert_eq!(
        m.body,
        [
            BodyPart::Literal("{\"a\": {}, \"{x}\": \"".into()),
            BodyPart::PathParam("id".into()),
            BodyPart::Literal("\"}".into()),
        ]
    );
}

#[test]
fn invalid_listen_address() {
    let e = bad("[server]\nlisten = [\"127.0.0.1:8080\", \"localhost:8080\"]\n");
    check(
        &e,
        2,
        "server.listen[1]",
        "invalid listen address \"localhost:8080\"",
    );
    assert_eq!(e.column, 29);
    let e = bad("[server]\nlisten = [\"127.0.0.1\"]\n");
    check(&e, 2, "server.listen[0]", "has no port");
    let e = bad("[server]\nlisten = []\n");
    check(&e, 2, "server.listen", "listen is empty");
}

#[test]
fn toml_syntax_error() {
    let e = bad("[server]\nworkers = 2\nio_driver = epoll\n");
    check(&e, 3, "server.io_driver", "invalid TOML");
    assert_eq!(e.column, 13);
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /\"\nroute = \"GET /x\"\n"
    ));
    check(&e, 9, "api[0].route[0].route", "duplicate key");
}

#[test]
fn two_apis_without_hosts() {
    let e = bad("[[api]]\nname = \"a\"\n[[api.stage]]\nname = \"s\"\n\
         [[api]]\nname = \"b\"\n[[api.stage]]\nname = \"s\"\n");
    check(&e, 6, "api[1].hosts", "neither has api \"a\" (line 2)");
}

#[test]
fn route_without_integration() {
    let e = bad(&format!("{API}[[api.route]]\nroute = \"GET /\"\n"));
    check(&e, 8, "api[0].route[0]", "has no integration");
    assert!(e.fix.contains("[api.route.mock]"), "{e}");
}

#[test]
fn other_value_checks() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[server]\nio_driver = \"uring\"\n",
            2,
            "server.io_driver",
            "unknown io_driver",
        ),
        (
            "[server]\nring_entries = 1000\n",
            2,
            "server.ring_entries",
            "power of two",
        ),
        (
            "[limits]\nmax_headers = 129\n",
            2,
            "limits.max_headers",
            "between 1 and 128",
        ),
        (
            "[limits]\nmax_body_bytes = \"10MB\"\n",
            2,
            "limits.max_body_bytes",
            "invalid size",
        ),
        (
            "[limits]\nmax_body_bytes = \"2TiB\"\n",
            2,
            "limits.max_body_bytes",
            "at most 1TiB",
        ),
        (
            "[[api]]\nname = \"a b\"\n",
            2,
            "api[0].name",
            "contains characters",
        ),
        (
            "[[api]]\nname = \"a\"\nhosts = [\"x.example\"]\n",
            2,
            "api[0].stage",
            "has no stage",
        ),
        (
            "[[api]]\nname = \"a\"\nhosts = [\"bad host\"]\n",
            3,
            "api[0].hosts[0]",
            "not a valid host",
        ),
        (
            "[[domain]]\nhost = \"x.example\"\n",
            2,
            "domain[0].mapping",
            "has no mappings",
        ),
        // Found by tests/hostile_input.rs: a multi-byte character right
        // after an IPv6 literal used to panic instead of failing.
        (
            "[[api]]\nname = \"a\"\nhosts = [\"[::1]\u{e9}\"]\n",
            3,
            "api[0].hosts[0]",
            "invalid port",
        ),
        (
            "[[domain]]\nhost = \"[::1]\u{e9}\"\n",
            2,
            "domain[0].host",
            "invalid port",
        ),
    ];
    for (text, line, key, problem) in cases {
        check(&bad(text), *line, key, problem);
    }
    let e = bad(&format!("{API}[[api]]\nname = \"demo\"\n"));
    check(
        &e,
        8,
        "api[1].name",
        "duplicate api name \"demo\"; the first is on line 2",
    );
    let e = bad(&format!("{API}[[api.stage]]\nname = \"prod\"\n"));
    check(&e, 8, "api[0].stage[1].name", "duplicate stage name");
    let e = bad(&format!(
        "{API}[[api.stage]]\nname = \"b\"\nvariables = {{ x = \"a b\" }}\n"
    ));
    check(&e, 9, "api[0].stage[1].variables.x", "contains ' '");
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /\"\nmock = {{ status = 204, body = \"x\" }}\n"
    ));
    check(&e, 9, "api[0].route[0].mock.body", "cannot have a body");
    let e = bad(&format!(
        "{API}[[api]]\nname = \"b\"\nhosts = [\"API.example.com\"]\n"
    ));
    check(&e, 9, "api[1].hosts[0]", "already claimed by api \"demo\"");
    let e = bad(&format!(
        "{API}[[domain]]\nhost = \"api.example.com\"\n[[domain.mapping]]\napi = \"demo\"\nstage = \"prod\"\n"
    ));
    check(
        &e,
        8,
        "domain[0].host",
        "also listed in the hosts of api \"demo\"",
    );
    let e = bad(&format!(
        "{API}[[domain]]\nhost = \"x.example\"\n[[domain.mapping]]\napi = \"demo\"\nstage = \"prod\"\n\
         [[domain.mapping]]\nbase_path = \"/\"\napi = \"demo\"\nstage = \"prod\"\n"
    ));
    check(
        &e,
        13,
        "domain[0].mapping[1].base_path",
        "duplicate base_path \"(none)\"; the first is on line 10",
    );
}

/// Every fixture in tests/data/bad starts with `# expect: line=N key=KEY`;
/// loading it must fail exactly there.
#[test]
fn bad_fixtures() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bad"));
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        match std::env::var_os("RINGGATE_BAD_CONFIGS") {
            Some(d) => d.into(),
            None => return, // not in the real crate: nothing to check
        }
    };
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or("");
        let expect = first.strip_prefix("# expect: ").unwrap_or_else(|| {
            panic!(
                "{}: first line must be `# expect: line=N key=KEY`",
                path.display()
            )
        });
        let mut line = None;
        let mut key = None;
        for word in expect.split_whitespace() {
            if let Some(n) = word.strip_prefix("line=") {
                line = n.parse::<usize>().ok();
            } else if let Some(k) = word.strip_prefix("key=") {
                key = Some(k);
            }
        }
        let e = load(&path).expect_err(&path.display().to_string());
        assert_eq!(
            (Some(e.line), Some(e.key.as_str())),
            (line, key),
            "{}:\n{e}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} fixtures in {}", dir.display());
}

// --- http_proxy and [[upstream]] ------------------------------------------------

const PROXY: &str = r#"
[[upstream]]
name = "pets"
targets = ["127.0.0.1:9000", "LocalHost:9001", "[::1]:9002"]
balance = "least_outstanding"
connect_timeout = "500ms"
idle_timeout = "2m"
max_idle_per_target = 0
  [upstream.passive_health]
  max_failures = 5
  ejection_time = "30s"
  [upstream.health_check]
  path = "/health?deep=1"
  interval = "2s"
  timeout = "1500ms"
  healthy_threshold = 1
  unhealthy_threshold = 4
  expected_status = "200-399"

[[api]]
name = "shop"
  [[api.stage]]
  name = "prod"
  variables = { backend = "pets", version = "v2" }
  [[api.stage]]
  name = "beta"
  variables = { backend = "10.0.0.7:8080", version = "v3" }

  [[api.route]]
  route = "ANY /pets/{proxy+}"
  [api.route.http_proxy]
  uri = "http://pets/v1/{proxy}"
  timeout = "5s"
  preserve_host = true
  allow_upgrade = true

  [[api.route]]
  route = "GET /items/{id}"
  [api.route.http_proxy]
  uri = "http://127.0.0.1:7000/items/{id}?v=${stageVariables.version}&x=%2F"

  [[api.route]]
  route = "$default"
  [api.route.http_proxy]
  uri = "http://${stageVariables.backend}"
"#;

#[test]
fn proxy_full_config() {
    use BodyPart::*;
    let c = ok(PROXY);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.upstreams.len(), 1);
    let u = c.upstream("pets").unwrap();
    assert_eq!(
        *u,
        UpstreamConfig {
            name: "pets".into(),
            targets: vec![
                TargetAddr {
                    host: "127.0.0.1".into(),
                    port: 9000,
                    text: "127.0.0.1:9000".into()
                },
                TargetAddr {
                    host: "localhost".into(),
                    port: 9001,
                    text: "LocalHost:9001".into()
                },
                TargetAddr {
                    host: "::1".into(),
                    port: 9002,
                    text: "[::1]:9002".into()
                },
            ],
            balance: Balance::LeastOutstanding,
            connect_timeout: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(120),
            max_idle_per_target: 0,
            passive_health: Some(PassiveHealth {
                max_failures: 5,
                ejection_time: Duration::from_secs(30)
            }),
            health_check: Some(HealthCheck {
                path: "/health?deep=1".into(),
                interval: Duration::from_secs(2),
                timeout: Duration::from_millis(1500),
                healthy_threshold: 1,
                unhealthy_threshold: 4,
                expected_status: (200, 399),
            }),
            tls: None,
            line: 2,
        }
    );
    assert!(c.upstream("nope").is_none());

    let routes = &c.apis[0].routes;
    let Integration::HttpProxy(h) = &routes[0].integration else {
        panic!("not a proxy")
    };
    assert_eq!(
        *h,
        HttpProxyIntegration {
            tls: false,
            authority: vec![Literal("pets".into())],
            path: vec![Literal("/v1/".into()), PathParam("proxy".into())],
            query: vec![],
            timeout: Duration::from_secs(5),
            preserve_host: true,
            allow_upgrade: true,
            uri: "http://pets/v1/{proxy}".into(),
        }
    );
    let Integration::HttpProxy(h) = &routes[1].integration else {
        panic!("not a proxy")
    };
    assert_eq!(h.authority, [Literal("127.0.0.1:7000".into())]);
    assert_eq!(h.path, [Literal("/items/".into()), PathParam("id".into())]);
    assert_eq!(
        h.query,
        [
            Literal("v=".into()),
            StageVariable("version".into()),
            Literal("&x=%2F".into())
        ]
    );
    assert_eq!(h.timeout, Duration::from_secs(29));
    assert!(!h.preserve_host && !h.allow_upgrade);
    let Integration::HttpProxy(h) = &routes[2].integration else {
        panic!("not a proxy")
    };
    assert_eq!(h.authority, [StageVariable("backend".into())]);
    assert_eq!(h.path, [Literal("/".into())]);
    assert!(h.query.is_empty());
}

#[test]
fn upstream_and_proxy_defaults() {
    let c = ok(&format!(
        "[[upstream]]\nname = \"u\"\ntargets = [\"svc.internal:80\"]\n\
         [upstream.health_check]\npath = \"/\"\n\
         {API}[[api.route]]\nroute = \"GET /\"\n[api.route.http_proxy]\nuri = \"http://u\"\n"
    ));
    let u = &c.upstreams[0];
    assert_eq!(u.balance, Balance::RoundRobin);
    assert_eq!(u.connect_timeout, Duration::from_secs(2));
    assert_eq!(u.idle_timeout, Duration::from_secs(60));
    assert_eq!(u.max_idle_per_target, 512);
    assert_eq!(u.passive_health, None);
    assert_eq!(
        u.health_check,
        Some(HealthCheck {
            path: "/".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_status: (200, 299),
        })
    );
    let c = ok("[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n[upstream.passive_health]\n");
    assert_eq!(
        c.upstreams[0].passive_health,
        Some(PassiveHealth {
            max_failures: 3,
            ejection_time: Duration::from_secs(10)
        })
    );
    assert!(ok("").upstreams.is_empty() && ok("").warnings.is_empty());
}

#[test]
fn target_addr_parse() {
    let t = TargetAddr::parse("[2001:DB8::0:1]:443").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("2001:db8::1", 443));
    let t = TargetAddr::parse("Svc-1.Internal:8080").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("svc-1.internal", 8080));
    for (s, why) in [
        ("localhost", "has no port"),
        ("[::1]", "has no port"),
        (":80", "no host"),
        ("a:0", "invalid port"),
        ("a:65536", "invalid port"),
        ("a:+80", "invalid port"),
        ("::1:80", "more than one ':'"),
        ("1.2.3.999:80", "neither"),
        ("a b:80", "neither"),
        ("-a:80", "neither"),
        ("[zz]:80", "IPv6"),
    ] {
        let e = TargetAddr::parse(s).unwrap_err();
        assert!(e.contains(why), "{s:?}: {e}");
    }
}

#[test]
fn expected_status_forms() {
    for (v, range) in [
        ("\"5xx\"", (500, 599)),
        ("\"204\"", (204, 204)),
        ("204", (204, 204)),
        ("\"200-204\"", (200, 204)),
    ] {
        let c = ok(&format!(
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n[upstream.health_check]\npath = \"/\"\nexpected_status = {v}\n"
        ));
        assert_eq!(
            c.upstreams[0]
                .health_check
                .as_ref()
                .unwrap()
                .expected_status,
            range
        );
    }
}

/// `{API}` plus a route `route` with `[api.route.http_proxy]` and `rest`
/// (the uri is on line 10).
fn proxy_route(route: &str, rest: &str) -> String {
    format!("{API}[[api.route]]\nroute = \"{route}\"\n[api.route.http_proxy]\n{rest}")
}

const UPSTREAM: &str = "[[upstream]]\nname = \"pets\"\ntargets = [\"127.0.0.1:9000\"]\n";

#[test]
fn bad_proxy_integrations() {
    let uri_key = "api[0].route[0].http_proxy.uri";
    let cases: &[(&str, &str, usize, &str, &str)] = &[
        (
            "GET /",
            "uri = \"https://pets/\"\n",
            10,
            uri_key,
            "the uri says https, but [[upstream]] \"pets\" (line 2) has no [upstream.tls]",
        ),
        (
            "GET /",
            "timeout = \"1s\"\n",
            9,
            uri_key,
            "missing field `uri`",
        ),
        (
            "GET /",
            "uri = \"http://:80/\"\n",
            10,
            uri_key,
            "no host before the ':'",
        ),
        ("GET /", "uri = \"http:///x\"\n", 10, uri_key, "has no host"),
        (
            "GET /",
            "uri = \"ftp://a:1/\"\n",
            10,
            uri_key,
            "unsupported scheme \"ftp\"",
        ),
        (
            "GET /",
            "uri = \"http://a:1/#top\"\n",
            10,
            uri_key,
            "fragment",
        ),
        (
            "GET /",
            "uri = \"http://u@a:1/\"\n",
            10,
            uri_key,
            "user information",
        ),
        (
            "GET /pets/{id}",
            "uri = \"http://a:1/pets/{petId}\"\n",
            10,
            uri_key,
            "{petId} in the uri's path is not a path parameter of the route",
        ),
        (
            "GET /{proxy+}",
            "uri = \"http://a:1/{proxy+}\"\n",
            10,
            uri_key,
            "write {proxy} in the uri, not {proxy+}",
        ),
        (
            "GET /{id}",
            "uri = \"http://{id}:80/\"\n",
            10,
            uri_key,
            "cannot be used in the uri's host",
        ),
        (
            "GET /",
            "uri = \"http://a:1/a b\"\n",
            10,
            uri_key,
            "contains ' '",
        ),
        (
            "GET /",
            "uri = \"http://a:1/100%\"\n",
            10,
            uri_key,
            "%XX escape",
        ),
        (
            "GET /",
            "uri = \"http://pest/\"\n",
            10,
            uri_key,
            "\"pest\" is not the name of an [[upstream]]",
        ),
        (
            "GET /",
            "uri = \"http://a:1\"\ntimeout = \"10ms\"\n",
            11,
            "api[0].route[0].http_proxy.timeout",
            "between 50ms and 29s, found 10ms",
        ),
        (
            "GET /",
            "uri = \"http://a:1\"\ntimeout = \"30s\"\n",
            11,
            "api[0].route[0].http_proxy.timeout",
            "between 50ms and 29s, found 30s",
        ),
        (
            "GET /",
            "uri = \"http://a:1\"\nretries = 3\n",
            11,
            "api[0].route[0].http_proxy.retries",
            "unknown field `retries`",
        ),
        (
            "GET /",
            "uri = \"http://a:1\"\npreserve_host = \"yes\"\n",
            11,
            "api[0].route[0].http_proxy.preserve_host",
            "expected a boolean",
        ),
    ];
    for (route, rest, line, key, problem) in cases {
        let e = bad(&format!("{UPSTREAM}{}", proxy_route(route, rest)));
        // UPSTREAM adds 3 lines, and API's leading newline one more.
        check(&e, line + 4, key, problem);
    }
    // The uri keeps its fixes specific.
    let e = bad(&format!(
        "{UPSTREAM}{}",
        proxy_route("GET /", "uri = \"https://pets/x\"\n")
    ));
    assert_eq!(
        e.fix,
        "add tls = {} to that [[upstream]] (TLS verified against the system's CA certificates), \
         or write \"http://pets\""
    );
    let e = bad(&format!(
        "{UPSTREAM}{}",
        proxy_route("GET /", "uri = \"http://pest/\"\n")
    ));
    assert!(e.fix.contains("use one of the upstreams (pets)"), "{e}");
    let e = bad(&proxy_route("GET /", "uri = \"http://svc.internal/\"\n"));
    check(
        &e,
        10,
        "api[0].route[0].http_proxy.uri",
        "\"svc.internal\" has no port",
    );
    assert_eq!(e.fix, "add the port, e.g. \"svc.internal:80\"");
}

#[test]
fn mock_and_http_proxy_on_one_route() {
    let e = bad(&format!(
        "{API}[[api.route]]\nroute = \"GET /\"\n[api.route.mock]\n[api.route.http_proxy]\nuri = \"http://a:1\"\n"
    ));
    check(&e, 8, "api[0].route[0]", "has two integrations");
}

#[test]
fn bad_upstreams() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\", \"localhost\"]\n",
            3,
            "upstream[0].targets[1]",
            "target \"localhost\" has no port",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n[[upstream]]\nname = \"u\"\ntargets = [\"b:1\"]\n",
            5,
            "upstream[1].name",
            "duplicate upstream name \"u\"; the first is on line 2",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"A:1\", \"b:2\", \"a:1\"]\n",
            3,
            "upstream[0].targets[2]",
            "listed twice (also upstream[0].targets[0], \"A:1\")",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = []\n",
            3,
            "upstream[0].targets",
            "targets is empty",
        ),
        (
            "[[upstream]]\nname = \"u v\"\ntargets = [\"a:1\"]\n",
            2,
            "upstream[0].name",
            "contains characters",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\nbalance = \"random\"\n",
            4,
            "upstream[0].balance",
            "unknown balance \"random\"",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\nconnect_timeout = \"5ms\"\n",
            4,
            "upstream[0].connect_timeout",
            "between 10ms and 1m",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\nmax_idle_per_target = 65537\n",
            4,
            "upstream[0].max_idle_per_target",
            "between 0 and 65536",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n[upstream.passive_health]\nmax_failures = 0\n",
            5,
            "upstream[0].passive_health.max_failures",
            "between 1 and 1000",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n[upstream.health_check]\npath = \"/h\"\ninterval = \"1s\"\ntimeout = \"1s\"\n",
            7,
            "upstream[0].health_check.timeout",
            "timeout (1s) must be less than its interval (1s)",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n[upstream.health_check]\npath = \"/h\"\ninterval = \"500ms\"\n",
            6,
            "upstream[0].health_check.interval",
            "timeout (1s) must be less than its interval (500ms)",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n[upstream.health_check]\npath = \"/h\"\nexpected_status = \"2XY\"\n",
            6,
            "upstream[0].health_check.expected_status",
            "invalid expected_status \"2XY\"",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n[upstream.health_check]\npath = \"/h\"\nexpected_status = \"399-200\"\n",
            6,
            "upstream[0].health_check.expected_status",
            "invalid expected_status",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n[upstream.health_check]\npath = \"/h\"\nexpected_status = 600\n",
            6,
            "upstream[0].health_check.expected_status",
            "invalid expected_status integer 600",
        ),
        (
            "[[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n[upstream.health_check]\npath = \"health\"\n",
            5,
            "upstream[0].health_check.path",
            "does not start with '/'",
        ),
        (
            "[[upstream]]\nname = \"u\"\n",
            1,
            "upstream[0].targets",
            "missing field `targets`",
        ),
    ];
    for (text, line, key, problem) in cases {
        check(&bad(text), *line, key, problem);
    }
    let e = bad("[[upstream]]\nname = \"u\"\ntargets = [\"localhost\"]\n");
    assert!(e.fix.contains("\"localhost:80\""), "{e}");
}

/// Two stages; `backend` is set in both, `svc` only in prod.
const STAGES: &str = r#"
[[api]]
name = "demo"
[[api.stage]]
name = "prod"
variables = { backend = "pets", svc = "orders" }
[[api.stage]]
name = "beta"
variables = { backend = "BETA" }
"#;

#[test]
fn stage_variable_authority_checked_per_stage() {
    let stages = STAGES.replace("BETA", "a/b");
    let e = bad(&format!(
        "{UPSTREAM}{stages}[[api.route]]\nroute = \"GET /\"\n[api.route.http_proxy]\nuri = \"http://${{stageVariables.backend}}/x\"\n"
    ));
    check(
        &e,
        16,
        "api[0].route[0].http_proxy.uri",
        "in stage \"beta\" the uri's host becomes \"a/b\": \"a/b\" has no port",
    );
    assert!(e.fix.contains("stage \"beta\" (line 11)"), "{e}");

    let stages = STAGES.replace("BETA", "10.0.0.1:99999");
    let e = bad(&format!(
        "{UPSTREAM}{stages}[[api.route]]\nroute = \"GET /\"\n[api.route.http_proxy]\nuri = \"http://${{stageVariables.backend}}\"\n"
    ));
    check(
        &e,
        16,
        "api[0].route[0].http_proxy.uri",
        "in stage \"beta\" the uri's host becomes \"10.0.0.1:99999\": host:port \"10.0.0.1:99999\" has the invalid port",
    );

    // A partial authority: prod defines svc and gives a valid host:port.
    let stages = STAGES.replace("BETA", "x");
    let c = ok(&format!(
        "{UPSTREAM}{stages}[[api.route]]\nroute = \"GET /\"\n[api.route.http_proxy]\nuri = \"http://${{stageVariables.svc}}.internal:9000/\"\n"
    ));
    let Integration::HttpProxy(h) = &c.apis[0].routes[0].integration else {
        panic!("not a proxy")
    };
    assert_eq!(
        h.authority,
        [
            BodyPart::StageVariable("svc".into()),
            BodyPart::Literal(".internal:9000".into())
        ]
    );
    // ... and beta, which lacks svc, gets a warning, not an error.
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
}

#[test]
fn missing_stage_variable_in_uri_is_a_warning() {
    let c = ok(&format!(
        "{UPSTREAM}{STAGES}[[api.route]]\nroute = \"GET /{{id}}\"\n[api.route.http_proxy]\n\
         uri = \"http://${{stageVariables.svc}}:80/${{stageVariables.ver}}/{{id}}?s=${{stageVariables.svc}}\"\n"
    ));
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "t.toml:16: warning: api[0].route[0].http_proxy.uri: stage \"prod\" does not define the stage variable \"ver\" used by this uri; requests to this route in that stage will get 500 until it is defined",
            "t.toml:16: warning: api[0].route[0].http_proxy.uri: stage \"beta\" does not define the stage variable \"svc\" used by this uri; requests to this route in that stage will get 500 until it is defined",
            "t.toml:16: warning: api[0].route[0].http_proxy.uri: stage \"beta\" does not define the stage variable \"ver\" used by this uri; requests to this route in that stage will get 500 until it is defined",
        ]
    );
    let w = &c.warnings[0];
    assert_eq!(
        (w.file.as_str(), w.line, w.key.as_str()),
        ("t.toml", 16, "api[0].route[0].http_proxy.uri")
    );
}

// --- stage cache ------------------------------------------------------------------

const CACHE_FULL: &str = r#"
[[api]]
name = "shop"
  [[api.stage]]
  name = "prod"
    [api.stage.cache]
    enabled = true
    capacity = "1.6"
    ttl = "120s"
    status_header = true
    cache_statuses = [200, 404]
    require_authorization_for_cache_control = true
    unauthorized_strategy = "FAIL_WITH_403"
    authorization_header = "X-Cache-Token"
    authorization_token = "s3cret"
    respect_origin_cache_control = false
    stale_if_error = "30s"
    lock_timeout = "250ms"
  [[api.stage]]
  name = "dev"
    [api.stage.cache]
    capacity = "64MiB"
    ttl = "0s"
  [[api.stage]]
  name = "nocache"

  [[api.route]]
  route = "GET /items/{id}"
  [api.route.mock]
  body = "item {id}"
  [api.route.cache]
  ttl = "60s"
  key_parameters = ["path.id", "querystring.lang", "header.Accept-Language"]
  namespace = "items"

  [[api.route]]
  route = "POST /search"
  [api.route.http_proxy]
  uri = "http://127.0.0.1:9000/search"
  [api.route.cache]
  enabled = true
  key_parameters = ["querystring.*", "header.x-tenant"]

  [[api.route]]
  route = "ANY /{proxy+}"
  [api.route.mock]
  [api.route.cache]
  enabled = false

  [[api.route]]
  route = "DELETE /items/{id}"
  [api.route.mock]

  [[api.route]]
  route = "$default"
  [api.route.mock]
"#;

#[test]
fn cache_full_config() {
    let c = ok(CACHE_FULL);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let api = &c.apis[0];
    let secs = Duration::from_secs;
    assert_eq!(
        api.stages[0].cache,
        Some(StageCacheConfig {
            enabled: true,
            capacity_bytes: 1717986918,
            capacity_class: Some("1.6".into()),
            ttl: secs(120),
            status_header: true,
            cache_statuses: Some(vec![200, 404]),
            require_authorization: true,
            unauthorized_strategy: UnauthorizedStrategy::FailWith403,
            authorization_header: Some("x-cache-token".into()),
            authorization_token: Some("s3cret".into()),
            respect_origin_cache_control: false,
            stale_if_error: secs(30),
            lock_timeout: Duration::from_millis(250),
            heuristic_max: secs(86_400),
            targeted_cache_control: None,
            store_set_cookie: false,
        })
    );
    let dev = api.stages[1].cache.as_ref().unwrap();
    assert_eq!(
        (dev.capacity_bytes, dev.capacity_class.as_deref()),
        (64 << 20, None)
    );
    assert_eq!(api.stages[2].cache, None);

    let r = &api.routes;
    assert_eq!(
        r[0].cache,
        Some(RouteCacheConfig {
            enabled: None,
            ttl: Some(secs(60)),
            key_parameters: vec![
                KeyParameter::Path("id".into()),
                KeyParameter::Query("lang".into()),
                KeyParameter::Header("accept-language".into()),
            ],
            whole_query: false,
            namespace: Some("items".into()),
        })
    );
    assert_eq!(
        r[1].cache,
        Some(RouteCacheConfig {
            enabled: Some(true),
            ttl: None,
            key_parameters: vec![KeyParameter::Header("x-tenant".into())],
            whole_query: true,
            namespace: None,
        })
    );
    assert_eq!(r[3].cache, None);

    // Which requests are cached, and for how long.
    let (prod, dev, none) = (&api.stages[0], &api.stages[1], &api.stages[2]);
    assert_eq!(r[0].cache_ttl(prod, "GET"), Some(secs(60)));
    assert_eq!(r[0].cache_ttl(dev, "GET"), Some(secs(60)), "route ttl wins");
    assert_eq!(r[0].cache_ttl(none, "GET"), None);
    assert_eq!(r[1].cache_ttl(prod, "POST"), Some(secs(120)));
    assert_eq!(r[1].cache_ttl(dev, "POST"), None, "stage ttl 0");
    assert_eq!(r[2].cache_ttl(prod, "GET"), None, "enabled = false");
    assert_eq!(r[3].cache_ttl(prod, "DELETE"), None, "not GET");
    assert_eq!(r[4].cache_ttl(prod, "GET"), Some(secs(120)));
    assert_eq!(r[4].cache_ttl(prod, "HEAD"), Some(secs(120)));
    assert_eq!(r[4].cache_ttl(prod, "POST"), None);
}

#[test]
fn cache_defaults() {
    let c = ok(&format!(
        "{API}[api.stage.cache]\nenabled = true\n[[api.route]]\nroute = \"GET /x\"\n[api.route.mock]\n"
    ));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let stage = &c.apis[0].stages[0];
    assert_eq!(
        stage.cache,
        Some(StageCacheConfig {
            enabled: true,
            capacity_bytes: 536870912,
            capacity_class: Some("0.5".into()),
            ttl: Duration::from_secs(300),
            status_header: false,
            cache_statuses: None,
            require_authorization: false,
            unauthorized_strategy: UnauthorizedStrategy::SucceedWithResponseHeader,
            authorization_header: None,
            authorization_token: None,
            respect_origin_cache_control: false,
            stale_if_error: Duration::ZERO,
            lock_timeout: Duration::from_secs(10),
            heuristic_max: Duration::from_secs(86_400),
            targeted_cache_control: None,
            store_set_cookie: false,
        })
    );
    let route = &c.apis[0].routes[0];
    assert_eq!(route.cache, None);
    assert_eq!(
        route.cache_ttl(stage, "GET"),
        Some(Duration::from_secs(300))
    );

    // An empty table is the same; enabled = false keeps the settings.
    let c = ok(&format!("{API}[api.stage.cache]\n"));
    assert_eq!(c.apis[0].stages[0].cache, stage.cache);
    let c = ok(&format!(
        "{API}[api.stage.cache]\nenabled = false\n[[api.route]]\nroute = \"GET /x\"\n[api.route.mock]\n"
    ));
    let off = &c.apis[0].stages[0];
    assert!(!off.cache.as_ref().unwrap().enabled);
    assert_eq!(c.apis[0].routes[0].cache_ttl(off, "GET"), None);
}

#[test]
fn cache_capacity_classes() {
    let expected: [(&str, u64); 8] = [
        ("0.5", 536870912),
        ("1.6", 1717986918),
        ("6.1", 6549825126),
        ("13.5", 14495514624),
        ("28.4", 30494267801),
        ("58.2", 62491774156),
        ("118", 126701535232),
        ("237", 254476812288),
    ];
    assert_eq!(CAPACITY_CLASSES, expected);
    for (class, bytes) in expected {
        let written = if class.contains('.') {
            class.to_string()
        } else {
            format!("{class}.0")
        };
        for value in [class.to_string(), format!("\"{class}\""), written] {
            let c = ok(&format!("{API}[api.stage.cache]\ncapacity = {value}\n"));
            let cache = c.apis[0].stages[0].cache.clone().unwrap();
            assert_eq!(
                (cache.capacity_bytes, cache.capacity_class.as_deref()),
                (bytes, Some(class)),
                "capacity = {value}"
            );
        }
    }
    for (size, bytes) in [("1MiB", 1 << 20), ("1GiB", 1 << 30), ("1048576B", 1 << 20)] {
        let c = ok(&format!("{API}[api.stage.cache]\ncapacity = \"{size}\"\n"));
        let cache = c.apis[0].stages[0].cache.clone().unwrap();
        assert_eq!((cache.capacity_bytes, cache.capacity_class), (bytes, None));
    }
}

#[test]
fn cache_key_defaults_with_origin_cache_control() {
    let c = ok(&format!(
        "{API}[api.stage.cache]\nrespect_origin_cache_control = true\n\
         [[api.route]]\nroute = \"GET /a\"\n[api.route.mock]\n\
         [[api.route]]\nroute = \"GET /b/{{id}}\"\n[api.route.mock]\n[api.route.cache]\nttl = \"5s\"\n\
         [[api.route]]\nroute = \"GET /c/{{id}}\"\n[api.route.mock]\n[api.route.cache]\nkey_parameters = [\"path.id\"]\n\
         [[api.route]]\nroute = \"GET /d\"\n[api.route.mock]\n[api.route.cache]\nkey_parameters = []\n"
    ));
    let whole: Vec<bool> = c.apis[0]
        .routes
        .iter()
        .map(|r| r.cache.as_ref().unwrap().whole_query)
        .collect();
    assert_eq!(whole, [true, true, false, false]);
    // Without it, no table means no RouteCacheConfig.
    let c = ok(&format!(
        "{API}[api.stage.cache]\n[[api.route]]\nroute = \"GET /a\"\n[api.route.mock]\n"
    ));
    assert_eq!(c.apis[0].routes[0].cache, None);
}

#[test]
fn rfc_mode_cache_settings() {
    let c = ok(&format!(
        "{API}[api.stage.cache]\nrespect_origin_cache_control = true\nheuristic_max = \"600s\"\n\
         targeted_cache_control = \"Ringgate-Cache-Control\"\nstore_set_cookie = true\n"
    ));
    let cache = c.apis[0].stages[0].cache.clone().unwrap();
    assert_eq!(cache.heuristic_max, Duration::from_secs(600));
    assert_eq!(
        cache.targeted_cache_control.as_deref(),
        Some("ringgate-cache-control")
    );
    assert!(cache.store_set_cookie);
    // Only in the RFC mode: each key names the fix.
    for (line, key) in [
        ("heuristic_max = \"60s\"", "heuristic_max"),
        ("targeted_cache_control = \"X-C\"", "targeted_cache_control"),
        ("store_set_cookie = true", "store_set_cookie"),
    ] {
        let e = bad(&format!("{API}[api.stage.cache]\n{line}\n"));
        check(
            &e,
            8,
            &format!("api[0].stage[0].cache.{key}"),
            "applies only to the RFC 9111 mode",
        );
        assert!(e.fix.contains("respect_origin_cache_control = true"), "{e}");
    }
    for (value, problem) in [
        (
            "\"CDN-Cache-Control\"",
            "not a targeted field of this cache alone",
        ),
        (
            "\"cache-control\"",
            "not a targeted field of this cache alone",
        ),
        ("\"bad name\"", "is not a header field name"),
    ] {
        let e = bad(&format!(
            "{API}[api.stage.cache]\nrespect_origin_cache_control = true\ntargeted_cache_control = {value}\n"
        ));
        check(
            &e,
            9,
            "api[0].stage[0].cache.targeted_cache_control",
            problem,
        );
    }
    let e = bad(&format!(
        "{API}[api.stage.cache]\nrespect_origin_cache_control = true\nheuristic_max = \"400d\"\n"
    ));
    assert_eq!(e.key, "api[0].stage[0].cache.heuristic_max", "{e}");
}

#[test]
fn cache_warnings() {
    let route =
        "[[api.route]]\nroute = \"GET /x\"\n[api.route.mock]\n[api.route.cache]\nttl = \"5s\"\n";
    let c = ok(&format!("{API}{route}"));
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "t.toml:11: warning: api[0].route[0].cache: [api.route.cache] has no effect: \
          no stage of api \"demo\" enables a cache; add [api.stage.cache] to a stage"
        ]
    );
    let c = ok(&format!("{API}[api.stage.cache]\nenabled = false\n{route}"));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].message.contains("no stage of api \"demo\""));
    // A POST route without enabled = true.
    let c = ok(&format!(
        "{API}[api.stage.cache]\n{}",
        route.replace("GET", "POST")
    ));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0]
            .message
            .contains("POST routes are cached only with enabled = true"),
        "{:?}",
        c.warnings
    );
    assert_eq!(c.warnings[0].line, 12);
    // An empty table points at the route.
    let c = ok(&format!(
        "{API}[[api.route]]\nroute = \"GET /x\"\n[api.route.mock]\n[api.route.cache]\n"
    ));
    assert_eq!(c.warnings[0].line, 8);
}

/// `{API}` with `[api.stage.cache]` on line 7; `line` goes on line 8.
fn stage_cache(line: &str) -> String {
    format!("{API}[api.stage.cache]\n{line}\n")
}

/// A cached stage and route `GET /items/{id}`; `line` goes on line 12.
fn route_cache(line: &str) -> String {
    format!(
        "{API}[api.stage.cache]\n[[api.route]]\nroute = \"GET /items/{{id}}\"\n\
         [api.route.mock]\n[api.route.cache]\n{line}\n"
    )
}

#[test]
fn bad_stage_cache() {
    let k = "api[0].stage[0].cache";
    let cases: &[(&str, &str, &str)] = &[
        ("capacity = 2", "capacity", "capacity 2 is not a capacity class"),
        ("capacity = 1.5", "capacity", "capacity 1.5 is not a capacity class"),
        ("capacity = \"3\"", "capacity", "capacity \"3\" is not a capacity class"),
        ("capacity = \"3GiB\"", "capacity", "explicit cache size \"3GiB\" is more than 1GiB"),
        ("capacity = \"512KiB\"", "capacity", "is less than 1MiB"),
        ("capacity = \"64MB\"", "capacity", "invalid capacity \"64MB\""),
        ("capacity = true", "capacity", "found boolean true"),
        ("ttl = \"3601s\"", "ttl", "ttl must be between 0s and 1h, found 3601s"),
        ("ttl = 300", "ttl", "found integer 300"),
        ("unauthorized_strategy = \"FAIL\"", "unauthorized_strategy", "unknown unauthorized_strategy \"FAIL\""),
        ("cache_statuses = [200, 99]", "cache_statuses[1]", "between 100 and 599, found 99"),
        ("cache_statuses = [200, 200]", "cache_statuses[1]", "status 200 is listed twice"),
        ("cache_statuses = []", "cache_statuses", "cache_statuses is empty"),
        ("colour = 1", "colour", "unknown field `colour`"),
        ("stale_if_error = \"2h\"", "stale_if_error", "between 0s and 1h, found 2h"),
        ("lock_timeout = \"5ms\"", "lock_timeout", "between 10ms and 1m, found 5ms"),
        ("authorization_header = \"a b\"", "authorization_header", "\"a b\" is not a valid header name"),
        (
            "require_authorization_for_cache_control = true\nauthorization_header = \"x-t\"",
            "authorization_token",
            "require_authorization_for_cache_control = true needs authorization_token",
        ),
        (
            "require_authorization_for_cache_control = true\nauthorization_token = \"t\"",
            "authorization_header",
            "needs authorization_header",
        ),
        (
            "authorization_token = \"t\"",
            "authorization_token",
            "require_authorization_for_cache_control is not true",
        ),
        (
            "require_authorization_for_cache_control = true\nauthorization_header = \"x-t\"\nauthorization_token = \"\"",
            "authorization_token",
            "authorization_token is empty",
        ),
    ];
    for (line, key, problem) in cases {
        let e = bad(&stage_cache(line));
        let at = if line.contains("authorization_token = \"\"") {
            10
        } else {
            8
        };
        check(&e, at, &format!("{k}.{key}"), problem);
    }
    let e = bad(&stage_cache("capacity = 2"));
    assert!(
        e.fix
            .contains("0.5, 1.6, 6.1, 13.5, 28.4, 58.2, 118 or 237"),
        "{e}"
    );
    let e = bad(&stage_cache("colour = 1"));
    assert!(e.fix.contains("capacity, ttl"), "{e}");
    let e = bad(&stage_cache("capacity = \"1.6GB\""));
    assert!(e.fix.contains("capacity = 1.6"), "{e}");
}

#[test]
fn bad_route_cache() {
    let k = "api[0].route[0].cache";
    let cases: &[(&str, &str, &str)] = &[
        (
            "key_parameters = [\"cookie.x\"]",
            "key_parameters[0]",
            "unknown key parameter source \"cookie\"",
        ),
        (
            "key_parameters = [\"path.id\", \"path.nope\"]",
            "key_parameters[1]",
            "route \"GET /items/{id}\" has no path parameter {nope}",
        ),
        (
            "key_parameters = [\"querystring.a\", \"querystring.*\"]",
            "key_parameters[1]",
            "cannot be combined",
        ),
        (
            "key_parameters = [\"querystring.*\", \"querystring.a\"]",
            "key_parameters[1]",
            "cannot be combined",
        ),
        (
            "key_parameters = [\"header.A\", \"header.a\"]",
            "key_parameters[1]",
            "listed twice",
        ),
        (
            "key_parameters = [\"lang\"]",
            "key_parameters[0]",
            "has no source",
        ),
        (
            "key_parameters = [\"header.*\"]",
            "key_parameters[0]",
            "is not a valid header name",
        ),
        (
            "key_parameters = [\"querystring.a b\"]",
            "key_parameters[0]",
            "is not a valid querystring name",
        ),
        (
            "key_parameters = [\"method.request.path.id\"]",
            "key_parameters[0]",
            "long form",
        ),
        (
            "key_parameters = \"path.id\"",
            "key_parameters",
            "expected an array",
        ),
        (
            "namespace = \"a b\"",
            "namespace",
            "cache namespace \"a b\" contains characters",
        ),
        ("namespace = \"\"", "namespace", "cache namespace is empty"),
        ("ttl = \"2h\"", "ttl", "between 0s and 1h, found 2h"),
        ("enabled = \"yes\"", "enabled", "expected a boolean"),
        ("size = 1", "size", "unknown field `size`"),
    ];
    for (line, key, problem) in cases {
        check(&bad(&route_cache(line)), 12, &format!("{k}.{key}"), problem);
    }
    let e = bad(&route_cache("key_parameters = [\"path.nope\"]"));
    assert!(e.fix.contains("path.id"), "{e}");
    let e = bad(&route_cache(
        "key_parameters = [\"method.request.path.id\"]",
    ));
    assert!(e.fix.contains("\"path.id\""), "{e}");
    let e = bad(&route_cache("key_parameters = [\"cookie.x\"]"));
    assert!(
        e.fix.contains("path.NAME, querystring.NAME, header.NAME"),
        "{e}"
    );
    // A greedy parameter is named without its '+'.
    let e =
        bad(&route_cache("key_parameters = [\"path.p+\"]").replace("/items/{id}", "/files/{p+}"));
    assert!(e.fix.contains("\"path.p\""), "{e}");
    let c = ok(&route_cache("key_parameters = [\"path.p\"]").replace("/items/{id}", "/f/{p+}"));
    assert_eq!(
        c.apis[0].routes[0].cache.as_ref().unwrap().key_parameters,
        [KeyParameter::Path("p".into())]
    );
    // $default has no path parameters.
    let e =
        bad(&route_cache("key_parameters = [\"path.id\"]").replace("GET /items/{id}", "$default"));
    assert!(e.fix.contains("no path parameters"), "{e}");
}

// --- throttling ----------------------------------------------------------------

/// `{API}` plus a route `GET /items/{id}`, then `extra` on line 10.
fn throttled(stage_lines: &str, extra: &str) -> String {
    format!(
        "{API}{stage_lines}\n[[api.route]]\nroute = \"GET /items/{{id}}\"\n[api.route.mock]\n{extra}"
    )
}

#[test]
fn throttle_settings() {
    let c = ok(&throttled(
        "throttle = { rate = 100, burst = 50 }\nroute_throttle = { \"GET /items/{id}\" = { rate = 0.5, burst = 1 } }",
        "",
    ));
    assert_eq!(c.throttle, Some(ACCOUNT_THROTTLE));
    let s = &c.apis[0].stages[0];
    assert_eq!(
        s.throttle,
        Some(ThrottleLimit {
            rate: 100.0,
            burst: 50
        })
    );
    assert_eq!(
        s.route_throttle["GET /items/{id}"],
        ThrottleLimit {
            rate: 0.5,
            burst: 1
        }
    );
    // The account level off, and one route's limit removed with -1.
    let c = ok(&format!(
        "[throttle]\nrate = -1\n{}",
        throttled(
            "route_throttle = { \"GET /items/{id}\" = { rate = -1, burst = 0 } }",
            ""
        )
    ));
    assert_eq!(c.throttle, None);
    assert!(c.apis[0].stages[0].route_throttle.is_empty());
    assert_eq!(ok(API).apis[0].stages[0].throttle, None);
}

#[test]
fn bad_throttle_settings() {
    let k = "api[0].stage[0]";
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "throttle = { rate = \"fast\", burst = 1 }",
            7,
            "throttle.rate",
            "found string",
        ),
        (
            "throttle = { rate = -2, burst = 1 }",
            7,
            "throttle.rate",
            "rate -2 is not between 0",
        ),
        (
            "throttle = { rate = 1, burst = -1 }",
            7,
            "throttle.burst",
            "burst must be between 0",
        ),
        (
            "throttle = { rate = 1 }",
            7,
            "throttle.burst",
            "needs a burst",
        ),
        (
            "throttle = { rate = 20000, burst = 1 }",
            7,
            "throttle",
            "more than the account's",
        ),
        (
            "route_throttle = { \"GET /nope\" = { rate = 1, burst = 1 } }",
            7,
            "route_throttle.\"GET /nope\"",
            "does not have",
        ),
    ];
    for (line, at, key, problem) in cases {
        let e = bad(&throttled(line, ""));
        let want = format!("{k}.{key}");
        assert_eq!(e.line, *at, "{line}: {e}");
        assert!(e.key.starts_with(&want) || e.key == want, "{line}: {e}");
        assert!(e.problem.contains(problem), "{line}: {e}");
        assert!(!e.fix.is_empty());
    }
    let e = bad("[throttle]\nrate = 1\nburst = 1\ncolour = 2\n");
    assert!(e.to_string().contains("colour"), "{e}");
}

// --- API keys and usage plans ---------------------------------------------------

const KEYS: &str = "[[api_key]]\nname = \"k1\"\nvalue = \"k1-0123456789abcdefgh\"\n\
                    [[api_key]]\nname = \"k2\"\nvalue = \"k2-0123456789abcdefgh\"\nenabled = false\n";

#[test]
fn api_keys_and_plans() {
    let c = ok(&format!(
        "{}{KEYS}[[usage_plan]]\nname = \"p\"\nthrottle = {{ rate = 5, burst = 10 }}\nkeys = [\"k1\", \"k2\"]\n\
         [[usage_plan.stage]]\napi = \"demo\"\nstage = \"prod\"\n\
         route_throttle = {{ \"GET /items/{{id}}\" = {{ rate = 1, burst = 1 }} }}\n",
        throttled("", "").replace(
            "route = \"GET /items/{id}\"",
            "route = \"GET /items/{id}\"\napi_key_required = true"
        )
    ));
    assert!(c.apis[0].routes[0].api_key_required);
    assert_eq!(c.api_keys.len(), 2);
    assert!(c.api_keys[0].enabled && !c.api_keys[1].enabled);
    let p = &c.usage_plans[0];
    assert_eq!(p.keys, ["k1", "k2"]);
    assert_eq!(p.stages[0].route_throttle["GET /items/{id}"].burst, 1);
}

#[test]
fn bad_api_keys_and_plans() {
    let base = throttled("", "");
    let plan = |lines: &str| format!("{base}{KEYS}[[usage_plan]]\nname = \"p\"\n{lines}\n");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{base}[[api_key]]\nname = \"k\"\nvalue = \"short\"\n"),
            "api_key[0].value",
            "5 characters",
        ),
        (
            format!("{base}{KEYS}[[api_key]]\nname = \"k3\"\nvalue = \"k1-0123456789abcdefgh\"\n"),
            "api_key[2].value",
            "same value",
        ),
        (plan("keys = [\"nobody\"]"), "usage_plan[0].keys[0]", "no [[api_key]]"),
        (
            plan("[[usage_plan.stage]]\napi = \"demo\"\nstage = \"nope\""),
            "usage_plan[0].stage[0].stage",
            "has no stage",
        ),
        (
            plan("[[usage_plan.stage]]\napi = \"demo\"\nstage = \"prod\"\nroute_throttle = { \"GET /x\" = { rate = 1, burst = 1 } }"),
            "usage_plan[0].stage[0].route_throttle",
            "has no route",
        ),
        (
            format!(
                "{}[[usage_plan]]\nname = \"q\"\nkeys = [\"k1\"]\n[[usage_plan.stage]]\napi = \"demo\"\nstage = \"prod\"\n",
                plan("keys = [\"k1\"]\n[[usage_plan.stage]]\napi = \"demo\"\nstage = \"prod\"")
            ),
            "usage_plan[1].keys[0]",
            "is in usage plans \"p\" and \"q\"",
        ),
    ];
    for (text, key, problem) in cases {
        let e = bad(&text);
        assert!(e.key.starts_with(key), "{key}: {e}");
        assert!(e.problem.contains(problem), "{problem}: {e}");
        assert!(!e.fix.is_empty());
    }
}

// --- opt-in extensions: rate-limit headers, per-client buckets, key source ------

#[test]
fn throttle_optins_default_off() {
    let c = ok(&throttled("", ""));
    assert!(!c.throttle_headers);
    assert_eq!(c.key_source, KeySourceConfig::default());
    assert_eq!(c.key_source.header, "x-api-key");
    assert_eq!(c.apis[0].routes[0].client_throttle, None);
}

#[test]
fn throttle_optins() {
    // headers alone keeps the account default; with rate and burst, theirs.
    let c = ok(&format!(
        "[throttle]\nheaders = true\n{}",
        throttled("", "")
    ));
    assert!(c.throttle_headers);
    assert_eq!(c.throttle, Some(ACCOUNT_THROTTLE));
    let c = ok(&format!(
        "[throttle]\nrate = 7\nburst = 3\nheaders = false\n{}",
        throttled("", "")
    ));
    assert!(!c.throttle_headers);
    assert_eq!(
        c.throttle,
        Some(ThrottleLimit {
            rate: 7.0,
            burst: 3
        })
    );

    let c = ok(&format!(
        "[key_source]\nheader = \"X-Client-Key\"\nquery = \"api_key\"\nhide = true\n{}",
        throttled("", "")
    ));
    assert_eq!(
        c.key_source,
        KeySourceConfig {
            header: "x-client-key".into(),
            query: Some("api_key".into()),
            hide: true,
        }
    );

    let text = throttled("", "").replace(
        "route = \"GET /items/{id}\"",
        "route = \"GET /items/{id}\"\nclient_throttle = { rate = 5, burst = 10 }",
    );
    let c = ok(&text);
    assert_eq!(
        c.apis[0].routes[0].client_throttle,
        Some(ThrottleLimit {
            rate: 5.0,
            burst: 10
        })
    );
    // rate = -1: no per-client limit, as at every level.
    let text = throttled("", "").replace(
        "route = \"GET /items/{id}\"",
        "route = \"GET /items/{id}\"\nclient_throttle = { rate = -1 }",
    );
    assert_eq!(ok(&text).apis[0].routes[0].client_throttle, None);
}

#[test]
fn route_config_without_client_throttle_still_deserializes() {
    // A deployment stored before client_throttle existed.
    let c = ok(&throttled("", ""));
    let mut json = serde_json::to_value(&c.apis[0].routes[0]).unwrap();
    json.as_object_mut().unwrap().remove("client_throttle");
    let back: RouteConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, c.apis[0].routes[0]);
}

#[test]
fn bad_throttle_optins() {
    let base = throttled("", "");
    let route = |line: &str| {
        base.replace(
            "route = \"GET /items/{id}\"",
            &format!("route = \"GET /items/{{id}}\"\n{line}"),
        )
    };
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (
            format!("[throttle]\nburst = 5\n{base}"),
            2,
            "throttle.rate",
            "has a burst but no rate",
        ),
        (
            format!("[key_source]\nheader = \"bad header\"\n{base}"),
            2,
            "key_source.header",
            "not a valid header name",
        ),
        (
            format!("[key_source]\nheader = \"Host\"\n{base}"),
            2,
            "key_source.header",
            "gateway itself sets",
        ),
        (
            format!("[key_source]\nquery = \"a&b\"\n{base}"),
            2,
            "key_source.query",
            "not a query parameter name",
        ),
        (
            format!("[key_source]\nquery = \"\"\n{base}"),
            2,
            "key_source.query",
            "not a query parameter name",
        ),
        (
            route("client_throttle = { rate = 5 }"),
            10,
            "api[0].route[0].client_throttle.burst",
            "needs a burst",
        ),
        (
            route("client_throttle = { rate = \"fast\", burst = 1 }"),
            10,
            "api[0].route[0].client_throttle.rate",
            "found string",
        ),
    ];
    for (text, line, key, problem) in &cases {
        let e = bad(text);
        check(&e, *line, key, problem);
    }
    let e = bad(&format!("[key_source]\ncolour = 2\n{base}"));
    assert!(e.to_string().contains("colour"), "{e}");
    let e = bad(&format!("[throttle]\nheaders = \"yes\"\n{base}"));
    assert!(e.to_string().contains("headers"), "{e}");
    let e = bad(&route(
        "client_throttle = { rate = 1, burst = 1, headers = true }",
    ));
    assert!(e.to_string().contains("headers"), "{e}");
}

#[test]
fn metrics_settings() {
    let base = throttled("", "");
    let c = parse(
        &format!("[metrics]\nenabled = false\nlisten = \"127.0.0.1:9464\"\n{base}"),
        "m.toml",
    )
    .unwrap();
    assert!(!c.metrics.enabled);
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    let c = parse(
        &format!("[metrics]\nlisten = \"10.1.2.3:9464\"\n{base}"),
        "m.toml",
    )
    .unwrap();
    assert!(c.metrics.enabled);
    assert!(parse(
        &format!("[metrics]\nlisten = \"[fd00::1]:9464\"\n{base}"),
        "m.toml"
    )
    .is_ok());
    let c = parse(&base, "m.toml").unwrap();
    assert_eq!(c.metrics, MetricsConfig::default());
    assert!(!c.apis[0].stages[0].detailed_metrics);
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (
            format!("[metrics]\nlisten = \"0.0.0.0:9464\"\n{base}"),
            2,
            "metrics.listen",
            "not a loopback or private address",
        ),
        (
            format!("[metrics]\nlisten = \"8.8.8.8:9464\"\n{base}"),
            2,
            "metrics.listen",
            "not a loopback or private address",
        ),
        (
            format!("[metrics]\nlisten = \"localhost\"\n{base}"),
            2,
            "metrics.listen",
            "not an address and port",
        ),
    ];
    for (text, line, key, problem) in &cases {
        let e = bad(text);
        check(&e, *line, key, problem);
    }
    let e = bad(&format!("[metrics]\nenabled = \"yes\"\n{base}"));
    assert!(e.to_string().contains("enabled"), "{e}");
}
