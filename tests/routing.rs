//! Route selection end to end, by API Gateway's rules: HTTP API precedence
//! (the routing example from API Gateway's HTTP API documentation, and what
//! its rules imply), REST precedence with backtracking, custom-domain base
//! paths with longest-prefix matching, unmatched-route answers, and HEAD.

mod support;

use support::{Client, TestServer, SERVER};

fn get_host(c: &mut Client, host: &str, path: &str) -> support::Response {
    c.request(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n"))
}

fn call(c: &mut Client, method: &str, path: &str) -> support::Response {
    c.request(format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n"
    ))
}

/// A `[[api.route]]` with a mock body.
fn route_with_body(key: &str, body: &str) -> String {
    format!("\n  [[api.route]]\n  route = \"{key}\"\n  [api.route.mock]\n  body = '{body}'\n")
}

/// A route whose mock body names it (`{p}` written `<p>` so it is not
/// substituted), followed by `params`, e.g. `"|id={id}"`.
fn route(key: &str, params: &str) -> String {
    let label = key.replace('{', "<").replace('}', ">");
    route_with_body(key, &format!("{label}{params}"))
}

// --- HTTP API precedence ------------------------------------------------------

fn http_api_server() -> TestServer {
    let mut toml = format!(
        "{SERVER}[[api]]\nname = \"httpapi\"\nunmatched_route = \"not_found\"\n  [[api.stage]]\n  name = \"s\"\n"
    );
    toml += &route("GET /pets/dog/1", "");
    toml += &route("GET /pets/dog/{id}", "|id={id}");
    toml += &route("GET /pets/{proxy+}", "|proxy={proxy}");
    toml += &route("ANY /{proxy+}", "|proxy={proxy}");
    toml += &route("$default", "");
    TestServer::start(&toml)
}

#[test]
fn http_api_precedence_table() {
    let srv = http_api_server();
    let mut c = srv.client();
    let table = [
        // The routing example in API Gateway's HTTP API documentation:
        ("GET", "/s/pets/dog/1", "GET /pets/dog/1"),
        ("GET", "/s/pets/dog/2", "GET /pets/dog/<id>|id=2"),
        ("GET", "/s/pets/cat/1", "GET /pets/<proxy+>|proxy=cat/1"),
        ("POST", "/s/test/5", "ANY /<proxy+>|proxy=test/5"),
        // Not in that example, but implied by its rules:
        ("POST", "/s/pets/dog/1", "ANY /<proxy+>|proxy=pets/dog/1"),
        ("GET", "/s/pets/dog/2/", "GET /pets/dog/<id>|id=2"),
        ("GET", "/s/pets/dog/2?x=1", "GET /pets/dog/<id>|id=2"),
        ("GET", "/s/", "$default"),
        ("GET", "/s", "$default"),
    ];
    for (method, path, want) in table {
        let r = call(&mut c, method, path);
        assert_eq!(r.status, 200, "{method} {path}: {r:?}");
        assert_eq!(r.text(), want, "{method} {path}");
    }
}

#[test]
fn http_api_without_fallback_answers_404() {
    let mut toml = format!(
        "{SERVER}[[api]]\nname = \"httpapi\"\nunmatched_route = \"not_found\"\n  [[api.stage]]\n  name = \"s\"\n"
    );
    toml += &route("GET /pets/dog/1", "");
    toml += &route("GET /pets/dog/{id}", "");
    let srv = TestServer::start(&toml);
    let mut c = srv.client();
    for (method, path) in [
        ("GET", "/s/unknown"),
        ("GET", "/s/pets/dog/1/more"),
        ("POST", "/s/pets/dog/1"),
    ] {
        let r = call(&mut c, method, path);
        r.assert_gateway_error(404, r#"{"message":"Not Found"}"#);
        assert_eq!(r.header("x-amzn-errortype"), Some("NotFoundException"));
        r.assert_common_headers();
    }
    assert_eq!(c.get("/s/pets/dog/1").text(), "GET /pets/dog/1");
}

// --- REST API precedence ------------------------------------------------------

fn rest_server() -> TestServer {
    let mut toml = format!("{SERVER}[[api]]\nname = \"rest\"\n  [[api.stage]]\n  name = \"v1\"\n");
    toml += &route("GET /a/b/c", "");
    toml += &route("GET /a/{x}/d", "|x={x}");
    toml += &route("GET /{proxy+}", "|proxy={proxy}");
    toml += &route("GET /m", "");
    toml += &route("ANY /m", "");
    toml += &route("GET /only-get", "");
    toml += &route("POST /only-post/{id}", "");
    TestServer::start(&toml)
}

#[test]
fn rest_static_beats_param_beats_greedy_with_backtracking() {
    let srv = rest_server();
    let mut c = srv.client();
    let table = [
        ("/v1/a/b/c", "GET /a/b/c"),
        ("/v1/a/b/d", "GET /a/<x>/d|x=b"),
        ("/v1/a/zz/d", "GET /a/<x>/d|x=zz"),
        ("/v1/a/b/e", "GET /<proxy+>|proxy=a/b/e"),
        ("/v1/a/b/c/d", "GET /<proxy+>|proxy=a/b/c/d"),
        ("/v1/a", "GET /<proxy+>|proxy=a"),
        ("/v1/A/b/c", "GET /<proxy+>|proxy=A/b/c"),
    ];
    for (path, want) in table {
        let r = c.get(path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.text(), want, "{path}");
    }
}

#[test]
fn rest_any_versus_explicit_method() {
    let srv = rest_server();
    let mut c = srv.client();
    assert_eq!(call(&mut c, "GET", "/v1/m").text(), "GET /m");
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        assert_eq!(call(&mut c, method, "/v1/m").text(), "ANY /m", "{method}");
    }
}

#[test]
fn rest_known_resource_without_the_method_is_missing_authentication_token() {
    let srv = rest_server();
    let mut c = srv.client();
    // GET /{proxy+} catches GETs, but nothing answers other methods.
    for (method, path) in [
        ("POST", "/v1/only-get"),
        ("GET", "/v1/only-post/7"),
        ("DELETE", "/v1/a/b/c"),
    ] {
        let r = call(&mut c, method, path);
        if method == "GET" {
            // GET /only-post/7 falls back to the greedy GET route.
            assert_eq!(r.text(), "GET /<proxy+>|proxy=only-post/7");
            continue;
        }
        r.assert_gateway_error(403, r#"{"message":"Missing Authentication Token"}"#);
        assert_eq!(
            r.header("x-amzn-ErrorType"),
            Some("MissingAuthenticationTokenException"),
            "{method} {path}"
        );
    }
    assert_eq!(
        call(&mut c, "POST", "/v1/only-post/7").text(),
        "POST /only-post/<id>"
    );
}

#[test]
fn head_is_answered_by_the_get_route_without_body() {
    let srv = rest_server();
    let mut c = srv.client();
    c.send("HEAD /v1/a/b/c HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-length"),
        Some("10"),
        "len of \"GET /a/b/c\""
    );
    // With a parameter, the length is that of the substituted body.
    c.send("HEAD /v1/a/xyz/d HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.header("content-length"), Some("18"), "{r:?}");
    // A HEAD the greedy GET route catches.
    c.send("HEAD /v1/only-post/1/x HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 200, "greedy GET answers HEAD: {r:?}");
    // Nothing else arrived: the next GET parses cleanly.
    assert_eq!(c.get("/v1/a/b/c").text(), "GET /a/b/c");
}

#[test]
fn head_to_unmatched_route_gets_error_headers_only() {
    let mut toml = format!("{SERVER}[[api]]\nname = \"rest\"\n  [[api.stage]]\n  name = \"v1\"\n");
    toml += &route("POST /only-post", "");
    let srv = TestServer::start(&toml);
    let mut c = srv.client();
    c.send("HEAD /v1/only-post HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("content-length"), Some("42"), "{r:?}");
    c.send("HEAD /nostage/x HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.read_head_response();
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("content-length"), Some("23"), "{r:?}");
    assert_eq!(
        c.request("POST /v1/only-post HTTP/1.1\r\nHost: t\r\n\r\n")
            .text(),
        "POST /only-post"
    );
}

// --- custom domains and base path mappings -----------------------------------

fn domain_server() -> TestServer {
    let mut toml = SERVER.to_string();
    for (i, hosts) in [
        (1, ""),
        (2, "api2.internal"),
        (3, "api3.internal"),
        (4, "api4.internal"),
    ] {
        toml += &format!("\n[[api]]\nname = \"API{i}\"\n");
        if !hosts.is_empty() {
            toml += &format!("hosts = [\"{hosts}\"]\n");
        }
        toml += "  [[api.stage]]\n  name = \"live\"\n";
        toml += &route_with_body("ANY /{proxy+}", &format!("API{i} proxy={{proxy}}"));
        toml += &route_with_body("ANY /", &format!("API{i} root"));
    }
    toml += r#"
[[domain]]
host = "api.example.com"
  [[domain.mapping]]
  base_path = ""
  api = "API1"
  stage = "live"
  [[domain.mapping]]
  base_path = "orders/v1/items"
  api = "API2"
  stage = "live"
  [[domain.mapping]]
  base_path = "orders/v2/items"
  api = "API3"
  stage = "live"
  [[domain.mapping]]
  base_path = "orders/v2/items/categories"
  api = "API4"
  stage = "live"
"#;
    TestServer::start(&toml)
}

#[test]
fn custom_domain_longest_base_path_wins() {
    let srv = domain_server();
    let mut c = srv.client();
    let table = [
        ("/orders/v1/items/123", "API2 proxy=123"),
        ("/orders/v2/items/categories/5", "API4 proxy=5"),
        ("/orders/v2/items/7", "API3 proxy=7"),
        ("/orders/v2/items", "API3 root"),
        ("/orders/v2/items/categories", "API4 root"),
        ("/customers", "API1 proxy=customers"),
        ("/", "API1 root"),
        // Base paths match whole segments only.
        ("/orders/v1/itemsX/1", "API1 proxy=orders/v1/itemsX/1"),
        ("/orders/v2/items/categoriesX", "API3 proxy=categoriesX"),
    ];
    for (path, want) in table {
        let r = get_host(&mut c, "api.example.com", path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.text(), want, "{path}");
    }
    // Host matching ignores case and port.
    let r = get_host(&mut c, "API.Example.COM:8443", "/orders/v1/items/9");
    assert_eq!(r.text(), "API2 proxy=9", "{r:?}");
}

#[test]
fn absolute_form_target_names_the_host() {
    let srv = domain_server();
    let mut c = srv.client();
    let r = c.request(
        "GET http://api.example.com/orders/v1/items/77?q=1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    );
    assert_eq!(r.text(), "API2 proxy=77", "{r:?}");
}

#[test]
fn hosts_and_stage_prefixes_outside_the_domain() {
    let srv = domain_server();
    let mut c = srv.client();
    // An API's own host: execute-api style, /{stage}/path.
    let r = get_host(&mut c, "api3.internal", "/live/x/y");
    assert_eq!(r.text(), "API3 proxy=x/y", "{r:?}");
    // Any other host: the API without hosts.
    let r = get_host(&mut c, "localhost", "/live/z");
    assert_eq!(r.text(), "API1 proxy=z", "{r:?}");
    // An unknown stage prefix: 403 Forbidden.
    for (host, path) in [
        ("localhost", "/nostage/z"),
        ("api2.internal", "/prod/x"),
        ("localhost", "/"),
    ] {
        let r = get_host(&mut c, host, path);
        r.assert_gateway_error(403, r#"{"message":"Forbidden"}"#);
        assert_eq!(
            r.header("x-amzn-errortype"),
            Some("ForbiddenException"),
            "{host}{path}"
        );
    }
}

#[test]
fn domain_without_root_mapping_forbids_other_paths() {
    let mut toml = SERVER.to_string();
    toml += "\n[[api]]\nname = \"only\"\nhosts = [\"only.internal\"]\n  [[api.stage]]\n  name = \"live\"\n";
    toml += &route_with_body("ANY /{proxy+}", "only proxy={proxy}");
    toml += r#"
[[domain]]
host = "*"
  [[domain.mapping]]
  base_path = "v1"
  api = "only"
  stage = "live"
"#;
    let srv = TestServer::start(&toml);
    let mut c = srv.client();
    let r = get_host(&mut c, "anything.example", "/v1/a/b");
    assert_eq!(r.text(), "only proxy=a/b", "{r:?}");
    let r = get_host(&mut c, "anything.example", "/v2/a");
    r.assert_gateway_error(403, r#"{"message":"Forbidden"}"#);
}
