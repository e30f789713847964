//! Moving from API Gateway: each fixture in tests/data/openapi (written
//! from API Gateway's documented export format) is imported with the real
//! `ringgate import openapi`, checked with `ringgate check`, served, and
//! requested over real HTTP through a real origin; then exported and
//! imported again, which must give the same configuration.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{run_binary, temp_path, Origin, Response, TestServer};

/// The hosts the fixtures name for their backends.
const FIXTURE_HOSTS: [&str; 2] = [
    "http://petstore-demo-endpoint.execute-api.com",
    "http://backend.example.com",
];

fn fixture(name: &str) -> PathBuf {
    support::manifest_path(&format!("tests/data/openapi/{name}"))
}

/// The fixture with its backend hosts pointed at `origin`'s `/echo`,
/// written to a temp file (same extension).
fn pointed_at(name: &str, origin: &Origin) -> PathBuf {
    let mut text = std::fs::read_to_string(fixture(name)).unwrap();
    for host in FIXTURE_HOSTS {
        text = text.replace(host, &format!("http://{}/echo", origin.addr()));
    }
    let ext = Path::new(name).extension().unwrap().to_str().unwrap();
    let path = temp_path("openapi").with_extension(ext);
    std::fs::write(&path, text).unwrap();
    path
}

struct Import {
    toml: String,
    summary: String,
    config_path: PathBuf,
}

/// `ringgate import openapi FILE ARGS... --output TMP`, which must succeed,
/// then `ringgate check --config TMP`, which must pass.
fn import(file: &Path, args: &[&str]) -> Import {
    let out = temp_path("imported").with_extension("toml");
    let mut all = vec![
        "import",
        "openapi",
        file.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_binary(&all);
    assert!(status.success(), "import failed: {stderr}");
    assert!(stdout.is_empty(), "--output given, yet stdout has {stdout}");
    let (status, _, check) = run_binary(&["check", "--config", out.to_str().unwrap()]);
    assert!(
        status.success(),
        "ringgate check refuses the import: {check}"
    );
    Import {
        toml: std::fs::read_to_string(&out).unwrap(),
        summary: stderr,
        config_path: out,
    }
}

/// The imported file served in-process on a port of its own.
fn serve(import: &Import, extra: &str) -> TestServer {
    TestServer::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nworkers = 1\n{extra}\n{}",
        import.toml
    ))
}

fn request(server: &TestServer, method: &str, target: &str, headers: &str, body: &str) -> Response {
    let mut c = server.client();
    c.request(format!(
        "{method} {target} HTTP/1.1\r\nHost: api.test\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// What the origin's /echo saw.
fn echoed(r: &Response) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-origin").is_some(), "not from the origin: {r:?}");
    serde_json::from_str(&r.text()).unwrap()
}

fn without_comments(toml: &str) -> String {
    toml.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `ringgate export openapi` of the import, then `ringgate import
/// openapi` of that (with no options: the export carries the stages and
/// their variables): the same configuration, comments aside.
fn assert_round_trip(first: &Import) {
    let exported = temp_path("exported").with_extension("json");
    let (status, _, stderr) = run_binary(&[
        "export",
        "openapi",
        "--config",
        first.config_path.to_str().unwrap(),
        "--output",
        exported.to_str().unwrap(),
    ]);
    assert!(status.success(), "export failed: {stderr}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&exported).unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.0.1");
    let second = import(&exported, &[]);
    assert_eq!(
        without_comments(&first.toml),
        without_comments(&second.toml),
        "export + import changed the configuration"
    );
    // And the YAML form of the export imports the same.
    let yaml = temp_path("exported").with_extension("yaml");
    let (status, _, stderr) = run_binary(&[
        "export",
        "openapi",
        "--config",
        first.config_path.to_str().unwrap(),
        "--yaml",
        "--output",
        yaml.to_str().unwrap(),
    ]);
    assert!(status.success(), "export --yaml failed: {stderr}");
    let third = import(&yaml, &[]);
    assert_eq!(without_comments(&first.toml), without_comments(&third.toml));
}

#[test]
fn petstore_rest_api() {
    let origin = Origin::start("petstore");
    let file = pointed_at("petstore-oas30.json", &origin);
    let imported = import(&file, &[]);
    assert!(
        imported
            .summary
            .contains("as api \"PetStore\", stage(s) prod: 6 route(s), 3 http_proxy, 3 mock"),
        "{}",
        imported.summary
    );
    // The http (non-proxy) integrations are approximated, and say so.
    assert!(
        imported.summary.contains("approximated: 4"),
        "{}",
        imported.summary
    );
    // Their integration responses' CORS header is not added: left out,
    // named (ringgate's proxy has no response header mapping).
    assert!(
        imported.summary.contains("left out: 3"),
        "{}",
        imported.summary
    );
    assert!(imported.summary.contains(
        "/paths/~1pets/get/x-amazon-apigateway-integration/responses: GET /pets: the integration \
         response headers (Access-Control-Allow-Origin) are not added"
    ));
    assert!(imported
        .toml
        .contains("# an \"http\" (non-proxy) integration"));
    let server = serve(&imported, "");

    let r = request(&server, "GET", "/prod/", "", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(r.text().contains("Welcome to your Pet Store API"));

    let e = echoed(&request(
        &server,
        "GET",
        "/prod/pets?type=dog&page=2",
        "",
        "",
    ));
    assert_eq!(e["method"], "GET");
    assert_eq!(e["path"], "/echo/petstore/pets");
    assert_eq!(e["query"], "type=dog&page=2");

    let e = echoed(&request(&server, "GET", "/prod/pets/7", "", ""));
    assert_eq!(e["path"], "/echo/petstore/pets/7");

    let e = echoed(&request(
        &server,
        "POST",
        "/prod/pets",
        "Content-Type: application/json\r\n",
        "{\"type\": \"cat\", \"price\": 123.11}",
    ));
    assert_eq!(e["method"], "POST");
    assert_eq!(e["body_len"], 32);

    // The CORS preflight mocks answer with their headers.
    let r = request(&server, "OPTIONS", "/prod/pets/7", "", "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET,OPTIONS")
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    // A REST API: no route is 403 Missing Authentication Token.
    request(&server, "DELETE", "/prod/pets/7", "", "")
        .assert_gateway_error(403, r#"{"message":"Missing Authentication Token"}"#);
    assert_round_trip(&imported);
}

#[test]
fn http_api_with_default_route_and_cors() {
    let origin = Origin::start("http-api");
    let file = pointed_at("http-api.yaml", &origin);
    let imported = import(&file, &[]);
    assert!(
        imported
            .summary
            .contains("stage(s) default: 3 route(s), 3 http_proxy"),
        "{}",
        imported.summary
    );
    // CORS is reported, not dropped silently; 30 s timeouts are 29 s.
    assert!(imported.summary.contains("/x-amazon-apigateway-cors: CORS"));
    assert!(imported.summary.contains("timeoutInMillis 30000"));
    let server = serve(&imported, "");

    // The $default stage is served at the root, as API Gateway serves it.
    let e = echoed(&request(&server, "GET", "/pets/5", "", ""));
    assert_eq!(e["path"], "/echo/pets/5");
    let e = echoed(&request(&server, "POST", "/pets", "", "{}"));
    assert_eq!(
        (e["method"].as_str(), e["path"].as_str()),
        (Some("POST"), Some("/echo/pets"))
    );
    // Anything else goes to the $default route's integration.
    let e = echoed(&request(&server, "PATCH", "/somewhere/else", "", ""));
    assert_eq!(
        (e["method"].as_str(), e["path"].as_str()),
        (Some("PATCH"), Some("/echo/"))
    );
    assert_round_trip(&imported);
}

#[test]
fn rest_api_with_a_greedy_proxy_resource() {
    let origin = Origin::start("greedy");
    let variable = format!("backendHost={}", origin.addr());
    let imported = import(
        &fixture("greedy-proxy-swagger2.json"),
        &["--variable", &variable, "--cache-capacity", "0.5"],
    );
    assert!(
        imported.summary.contains("(Swagger 2.0)")
            && imported.summary.contains("stage(s) v1: 2 route(s)"),
        "{}",
        imported.summary
    );
    let server = serve(&imported, "");
    for method in ["GET", "POST", "DELETE"] {
        let e = echoed(&request(&server, method, "/v1/echo/a/b?x=1", "", ""));
        assert_eq!(e["method"], method);
        assert_eq!(e["path"], "/echo/a/b");
        assert_eq!(e["query"], "x=1");
    }
    // ANY / reaches the backend's root (the origin has nothing there).
    let r = request(&server, "GET", "/v1/", "", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-origin"), Some("greedy"));
    // cacheKeyParameters [path.proxy]: a repeated GET is a cache hit.
    let before = origin.count();
    let a = request(&server, "GET", "/v1/echo/cached", "", "");
    let b = request(&server, "GET", "/v1/echo/cached", "", "");
    assert_eq!(a.text(), b.text());
    assert_eq!(origin.count(), before + 1);
    assert_round_trip(&imported);

    // Two stages, each with its own backend.
    let other = Origin::start("greedy-dev");
    let (prod, dev) = (
        format!("prod:backendHost={}", origin.addr()),
        format!("dev:backendHost={}", other.addr()),
    );
    let imported = import(
        &fixture("greedy-proxy-swagger2.json"),
        &[
            "--stage",
            "prod",
            "--stage",
            "dev",
            "--variable",
            &prod,
            "--variable",
            &dev,
        ],
    );
    let server = serve(&imported, "");
    let r = request(&server, "GET", "/prod/echo/x", "", "");
    assert_eq!(r.header("x-origin"), Some("greedy"));
    let r = request(&server, "GET", "/dev/echo/x", "", "");
    assert_eq!(r.header("x-origin"), Some("greedy-dev"));
    assert_round_trip(&imported);
}

#[test]
fn mock_integrations_and_unsupported_ones() {
    let imported = import(&fixture("mock.yaml"), &["--variable", "env=staging"]);
    // Lambda, AWS-service and VPC-link integrations: left out, named.
    assert!(
        imported
            .summary
            .contains("3 route(s), 0 http_proxy, 3 mock"),
        "{}",
        imported.summary
    );
    assert!(
        imported.summary.contains("left out: 3"),
        "{}",
        imported.summary
    );
    for what in [
        "/paths/~1hello/get/x-amazon-apigateway-integration: GET /hello: a Lambda proxy integration",
        "/paths/~1queue/post/x-amazon-apigateway-integration: POST /queue: an AWS service",
        "/paths/~1internal/get/x-amazon-apigateway-integration/connectionType: GET /internal: connectionType VPC_LINK",
    ] {
        assert!(imported.summary.contains(what), "{what} not in\n{}", imported.summary);
        assert!(imported.toml.contains(what), "{what} not in the file's comments");
    }
    let server = serve(&imported, "");
    let r = request(&server, "GET", "/test/status", "", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(body["environment"], "staging");
    // The request template chooses 201, which the "2\d{2}" response selects.
    let r = request(&server, "POST", "/test/orders", "", "{}");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("/orders/1001"));
    assert!(r.text().contains("Order accepted."));
    let r = request(&server, "GET", "/test/version", "", "");
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert_eq!(r.header("x-api-version"), Some("2024-03-14"));
    request(&server, "GET", "/test/hello", "", "")
        .assert_gateway_error(403, r#"{"message":"Missing Authentication Token"}"#);

    // --strict: the same import exits 3, the file still written.
    let out = temp_path("strict").with_extension("toml");
    let (status, _, stderr) = run_binary(&[
        "import",
        "openapi",
        fixture("mock.yaml").to_str().unwrap(),
        "--strict",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("--strict: 3 thing(s) left out"), "{stderr}");
    assert!(out.exists());
    assert_round_trip(&imported);
}

#[test]
fn api_keys_and_usage_plan_protected_methods() {
    let origin = Origin::start("keys");
    let file = pointed_at("api-keys.json", &origin);
    let imported = import(&file, &[]);
    assert_eq!(imported.toml.matches("api_key_required = true").count(), 3);
    for what in [
        "gateway responses (DEFAULT_4XX",
        "request validators (all, params-only)",
        "binary media types (image/png, application/octet-stream)",
    ] {
        assert!(
            imported.summary.contains(what),
            "{what} not in\n{}",
            imported.summary
        );
    }
    let plan = "[[api_key]]\nname = \"alice\"\nvalue = \"alice-0123456789abcdef01\"\n\
                [[usage_plan]]\nname = \"basic\"\nkeys = [\"alice\"]\n\
                [[usage_plan.stage]]\napi = \"keys-api\"\nstage = \"v1\"\n";
    let server = serve(&imported, plan);
    request(&server, "GET", "/v1/pets", "", "")
        .assert_gateway_error(403, r#"{"message":"Forbidden"}"#);
    let e = echoed(&request(
        &server,
        "GET",
        "/v1/pets/3",
        "x-api-key: alice-0123456789abcdef01\r\n",
        "",
    ));
    assert_eq!(e["path"], "/echo/pets/3");
    let e = echoed(&request(
        &server,
        "POST",
        "/v1/pets",
        "x-api-key: alice-0123456789abcdef01\r\n",
        "{\"type\": \"dog\"}",
    ));
    assert_eq!(
        (e["method"].as_str(), e["path"].as_str()),
        (Some("POST"), Some("/echo/pets"))
    );
    request(
        &server,
        "POST",
        "/v1/pets",
        "x-api-key: wrong-0123456789abcdef01\r\n",
        "{}",
    )
    .assert_gateway_error(403, r#"{"message":"Forbidden"}"#);
    // Methods without security need no key.
    let e = echoed(&request(&server, "GET", "/v1/health", "", ""));
    assert_eq!(e["path"], "/echo/health");
    let e = echoed(&request(&server, "GET", "/v1/images/cat.png", "", ""));
    assert_eq!(e["path"], "/echo/images/cat.png");
    assert_round_trip(&imported);
}

#[test]
fn cache_key_parameters() {
    let origin = Origin::start("cache");
    let file = pointed_at("cache-keys.json", &origin);
    let imported = import(&file, &["--cache-capacity", "0.5"]);
    assert!(imported
        .toml
        .contains("key_parameters = [\"querystring.type\", \"header.accept-language\"]"));
    let server = serve(&imported, "");
    let get = |target: &str, lang: &str| {
        let r = request(
            &server,
            "GET",
            target,
            &format!("Accept-Language: {lang}\r\n"),
            "",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r
    };
    let start = origin.count();
    get("/prod/items?type=book&x=1", "en");
    // Same type and language, another query parameter that is not a key
    // parameter: a hit.
    get("/prod/items?type=book&x=2", "en");
    assert_eq!(origin.count(), start + 1);
    // Another type, another language: misses.
    get("/prod/items?type=toy", "en");
    get("/prod/items?type=book", "de");
    assert_eq!(origin.count(), start + 3);
    // Path key parameter: /items/1 and /items/2 are apart.
    get("/prod/items/1", "en");
    get("/prod/items/1", "en");
    get("/prod/items/2", "en");
    assert_eq!(origin.count(), start + 5);
    assert_round_trip(&imported);
}

#[test]
fn a_bad_document_names_the_pointer_and_writes_nothing() {
    let bad = temp_path("bad").with_extension("json");
    std::fs::write(
        &bad,
        r#"{"openapi": "3.0.1", "paths": {"/a": {"get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "uri": 5}}}}}"#,
    )
    .unwrap();
    let out = temp_path("bad-out").with_extension("toml");
    let (status, stdout, stderr) = run_binary(&[
        "import",
        "openapi",
        bad.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(status.code(), Some(1));
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(
            "/paths/~1a/get/x-amazon-apigateway-integration/uri: expected a string, not a number"
        ),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// `ringgate admin --socket S --json ARGS...`: (exit code, stdout as JSON).
fn admin_json(server: &support::BinaryServer, args: &[&str]) -> (i32, Value) {
    let socket = server.admin_socket();
    let mut all = vec!["admin", "--socket", socket.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_binary(&all);
    let v = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (status.code().unwrap(), v)
}

#[test]
fn the_admin_socket_deploys_an_import_and_exports_a_deployment() {
    let origin = Origin::start("admin-import");
    let server = support::BinaryServer::start(&format!(
        r#"{}
[[api]]
name = "pets"
  [[api.stage]]
  name = "prod"
  auto_deploy = false
  variables = {{ backendHost = "{}" }}
  [[api.route]]
  route = "GET /health"
  mock = {{ body = "ok" }}
"#,
        support::SERVER,
        origin.addr()
    ));
    let mut client = server.client();
    client
        .get("/prod/echo/a")
        .assert_gateway_error(403, r#"{"message":"Missing Authentication Token"}"#);
    let (_, before) = admin_json(&server, &["deployments", "list", "pets"]);
    let deployments = before["items"].as_array().unwrap().len();

    // A document that is not one: 400 naming the pointer, nothing deployed.
    let bad = temp_path("bad-doc").with_extension("json");
    std::fs::write(
        &bad,
        r#"{"openapi": "3.0.1", "paths": {"/a": {"get": {"x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": true}}}}}}}"#,
    )
    .unwrap();
    let (code, e) = admin_json(
        &server,
        &[
            "deployments",
            "import",
            "pets",
            bad.to_str().unwrap(),
            "--stage",
            "prod",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(e["error"], "invalid_document", "{e}");
    assert_eq!(
        e["field"],
        "/paths/~1a/get/x-amazon-apigateway-integration/responses/default/statusCode"
    );
    // --strict and something left out: refused, nothing deployed.
    let (code, e) = admin_json(
        &server,
        &[
            "deployments",
            "import",
            "pets",
            fixture("mock.yaml").to_str().unwrap(),
            "--strict",
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(e["error"], "left_out", "{e}");
    let (_, after) = admin_json(&server, &["deployments", "list", "pets"]);
    assert_eq!(after["items"].as_array().unwrap().len(), deployments);

    // The greedy proxy export, deployed to the pinned stage.
    let (code, d) = admin_json(
        &server,
        &[
            "deployments",
            "import",
            "pets",
            fixture("greedy-proxy-swagger2.json").to_str().unwrap(),
            "--stage",
            "prod",
            "--description",
            "from API Gateway",
        ],
    );
    assert_eq!(code, 0, "{d}");
    assert_eq!(d["import"]["routes"], 2);
    assert_eq!(d["routes"], serde_json::json!(["ANY /", "ANY /{proxy+}"]));
    let id = d["id"].as_u64().unwrap().to_string();
    let e = echoed(&client.get("/prod/echo/a?b=1"));
    assert_eq!(e["path"], "/echo/a");
    assert_eq!(e["query"], "b=1");
    // The file's mock is gone from that stage: the deployment replaced
    // it, and ANY /{proxy+} takes the path to the origin (which has no
    // /health).
    let r = client.get("/prod/health");
    assert_eq!(
        (r.status, r.header("x-origin")),
        (404, Some("admin-import"))
    );

    // Export the deployment, import the export: the same definition.
    let (code, doc) = admin_json(&server, &["deployments", "export", "pets", &id]);
    assert_eq!(code, 0);
    assert_eq!(doc["x-ringgate-stages"][0]["name"], "prod");
    let exported = temp_path("deployment").with_extension("json");
    std::fs::write(&exported, doc.to_string()).unwrap();
    let (code, again) = admin_json(
        &server,
        &["deployments", "import", "pets", exported.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["import"]["left_out"], serde_json::json!([]));
    let (_, first) = admin_json(&server, &["deployments", "show", "pets", &id]);
    let (_, second) = admin_json(
        &server,
        &["deployments", "show", "pets", &again["id"].to_string()],
    );
    assert_eq!(first["definition"], second["definition"]);
}
