//! Tests of the import and export through their public functions, and
//! property tests over generated documents: the import never panics; a
//! refused document is refused at a pointer that exists in it; an
//! accepted one gives a configuration that validates, and exporting that
//! configuration and importing the export gives the same file.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::*;

/// The file without its comment lines: what a round trip must keep.
fn without_comments(toml: &str) -> String {
    toml.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn import_doc(doc: &Value) -> Result<Imported, ImportError> {
    import(&doc.to_string(), &ImportOptions::default())
}

fn round_trip(first: &Imported) {
    let api = &first.summary.api;
    let exported = export_config(&first.config, api).expect("the imported api is there");
    let second = import(
        &exported.to_string(),
        &ImportOptions {
            root_domain: true,
            ..ImportOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("the export of\n{}\ndoes not import: {e}", first.toml));
    assert_eq!(
        without_comments(&first.toml),
        without_comments(&second.toml),
        "export then import changed the configuration; export:\n{exported:#}"
    );
}

#[test]
fn a_small_rest_api() {
    let doc = json!({
        "openapi": "3.0.1",
        "info": {"title": "shop"},
        "servers": [{"url": "https://x.execute-api.eu-west-1.amazonaws.com/{basePath}",
                     "variables": {"basePath": {"default": "/live"}}}],
        "paths": {
            "/items/{id}": {"get": {"x-amazon-apigateway-integration": {
                "type": "http_proxy", "uri": "http://items.internal/v1/items/{itemId}",
                "httpMethod": "GET", "timeoutInMillis": 5000,
                "requestParameters": {
                    "integration.request.path.itemId": "method.request.path.id",
                    "integration.request.querystring.src": "'gw'",
                    "integration.request.header.x-b": "method.request.header.x-a"
                }
            }}}
        }
    });
    let i = import_doc(&doc).unwrap();
    assert_eq!(i.summary.api, "shop");
    assert_eq!(i.summary.stages, vec!["live".to_string()]);
    assert_eq!(i.summary.http_proxy, 1);
    assert!(
        i.toml
            .contains("uri = \"http://items.internal:80/v1/items/{id}?src=gw\""),
        "{}",
        i.toml
    );
    assert!(i.toml.contains("timeout = \"5s\""), "{}", i.toml);
    // The header rename cannot be done: left out, named.
    assert_eq!(i.summary.left_out.len(), 1, "{:?}", i.summary.left_out);
    assert!(i.summary.left_out[0]
        .pointer
        .ends_with("integration.request.header.x-b"));
    round_trip(&i);
}

#[test]
fn a_ringgate_configuration_survives_export_and_import() {
    let cfg = crate::config::parse(
        r#"
[[upstream]]
name = "pets"
targets = ["127.0.0.1:9001", "127.0.0.1:9002"]

[[api]]
name = "Shop"
hosts = ["shop.example.com", "api.shop.example.com"]
  [[api.stage]]
  name = "prod"
  variables = { backend = "pets", env = "production" }
  cache = { capacity = "0.5" }
  [[api.stage]]
  name = "dev"
  variables = { backend = "127.0.0.1:9003", env = "development" }

  [[api.route]]
  route = "GET /pets/{id}"
  api_key_required = true
  client_throttle = { rate = 2.5, burst = 10 }
  [api.route.http_proxy]
  uri = "http://pets/v1/pets/{id}?src=gw&id={id}"
  timeout = "3500ms"
  preserve_host = true
  [api.route.cache]
  ttl = "60s"
  key_parameters = ["path.id", "header.accept"]

  [[api.route]]
  route = "ANY /through/{proxy+}"
  [api.route.http_proxy]
  uri = "http://${stageVariables.backend}/{proxy}"
  allow_upgrade = true
  [api.route.cache]
  enabled = false

  [[api.route]]
  route = "POST /hello/{name}"
  [api.route.mock]
  status = 203
  headers = { "x-a" = "b" }
  body = "hello {name} from ${stageVariables.env}"

  [[api.route]]
  route = "$default"
  mock = { status = 404 }
"#,
        "t.toml",
    )
    .unwrap();
    let doc = export_config(&cfg, "Shop").unwrap();
    let get = &doc["paths"]["/pets/{id}"]["get"];
    let integration = &get["x-amazon-apigateway-integration"];
    assert_eq!(
        integration["uri"],
        "http://127.0.0.1:9001/v1/pets/{id}?src=gw&id={id}"
    );
    assert_eq!(integration["x-ringgate-upstream"], "pets");
    assert_eq!(integration["timeoutInMillis"], 3500);
    assert_eq!(
        integration["cacheKeyParameters"],
        json!(["method.request.path.id", "method.request.header.accept"])
    );
    assert_eq!(get["security"], json!([{"api_key": []}]));
    assert_eq!(
        doc["x-ringgate-upstreams"]["pets"]["targets"],
        json!(["127.0.0.1:9001", "127.0.0.1:9002"])
    );
    let i = import(&doc.to_string(), &ImportOptions::default()).unwrap();
    let (a, b) = (&cfg.apis[0], &i.config.apis[0]);
    assert_eq!(a.name, b.name);
    assert_eq!(a.hosts, b.hosts);
    assert_eq!(a.stages, b.stages);
    let strip = |d: crate::config::ApiDefinition| {
        let mut d = d;
        for r in &mut d.routes {
            r.line = 0;
            if let crate::config::Integration::HttpProxy(h) = &mut r.integration {
                h.uri.clear();
            }
        }
        d.routes.sort_by_key(|r| r.key.as_display());
        d
    };
    assert_eq!(strip(a.definition()), strip(b.definition()));
    assert_eq!(i.config.upstreams.len(), 1);
    assert_eq!(i.config.upstreams[0].targets, cfg.upstreams[0].targets);
    // The upstream's other settings took their defaults: said.
    assert!(i.summary.approximated[0].message.contains("upstream pets"));
    round_trip(&i);
}

#[test]
fn a_host_variable_without_a_port_gets_the_schemes() {
    let doc = json!({"openapi": "3.0.1", "paths": {"/{proxy+}": {"get": {
        "x-amazon-apigateway-integration": {"type": "http_proxy",
            "uri": "https://${stageVariables.host}/{proxy}"}}}}});
    let options = ImportOptions {
        stages: vec![
            ("a".into(), [("host".into(), "localhost".into())].into()),
            ("b".into(), [("host".into(), "pets".into())].into()),
            ("c".into(), [("host".into(), "10.0.0.5:8443".into())].into()),
        ],
        upstreams: vec![("pets".into(), true)],
        ..ImportOptions::default()
    };
    let i = import(&doc.to_string(), &options).unwrap();
    let vars: Vec<&str> = i.config.apis[0]
        .stages
        .iter()
        .map(|s| s.variables["host"].as_str())
        .collect();
    assert_eq!(vars, ["localhost:443", "pets", "10.0.0.5:8443"]);
}

#[test]
fn errors_name_the_pointer() {
    let cases = [
        (json!([1]), ""),
        (json!({"openapi": 3}), "/openapi"),
        (json!({"openapi": "3.0.1", "paths": []}), "/paths"),
        (
            json!({"openapi": "3.0.1", "paths": {"/a~b/c": {"get": 7}}}),
            "/paths/~1a~0b~1c/get",
        ),
        (
            json!({"openapi": "3.0.1", "paths": {"/a": {"get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "uri": "http://h/", "timeoutInMillis": "soon"}}}}}),
            "/paths/~1a/get/x-amazon-apigateway-integration/timeoutInMillis",
        ),
        (
            json!({"openapi": "3.0.1", "paths": {"/a": {"get": {"x-amazon-apigateway-integration": {"uri": "http://h/"}}}}}),
            "/paths/~1a/get/x-amazon-apigateway-integration",
        ),
        (
            json!({"swagger": "2.0", "securityDefinitions": {"k": 1}, "paths": {}}),
            "/securityDefinitions/k",
        ),
        (
            json!({"openapi": "3.0.1", "paths": {},
                   "x-ringgate-stages": [{"name": "prod", "variables": {"bad name": "x"}}]}),
            "/x-ringgate-stages/0/variables/bad name",
        ),
        (
            json!({"openapi": "3.0.1", "paths": {},
                   "x-ringgate-stages": [{"name": "a/b"}]}),
            "/x-ringgate-stages/0/name",
        ),
        (
            json!({"openapi": "3.0.1", "paths": {},
                   "x-ringgate-stages": [{"name": "p", "cache_capacity": "lots"}]}),
            "/x-ringgate-stages/0/cache_capacity",
        ),
    ];
    for (doc, pointer) in cases {
        let e = import_doc(&doc).expect_err(&doc.to_string());
        assert_eq!(e.pointer, pointer, "{e}");
        if !pointer.is_empty() {
            assert!(doc.pointer(pointer).is_some());
        }
    }
    let e = import("{\"openapi\": ", &ImportOptions::default()).unwrap_err();
    assert!(e.message.contains("line 1 column"), "{e}");
    let e = import("openapi: [unclosed", &ImportOptions::default()).unwrap_err();
    assert!(e.message.contains("YAML"), "{e}");
}

#[test]
fn a_yaml_alias_bomb_is_refused() {
    let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        doc.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    // 10^12 strings if expanded: refused instead (serde_norway's limit on
    // alias expansion).
    let e = import(&doc, &ImportOptions::default()).unwrap_err();
    assert!(e.pointer.is_empty(), "{e}");
    assert!(e.message.contains("YAML"), "{e}");
}

#[test]
fn yaml_integer_keys_are_read_as_text() {
    let doc = "openapi: 3.0.1\npaths:\n  /a:\n    get:\n      responses:\n        200:\n          description: ok\n      x-amazon-apigateway-integration:\n        type: mock\n        requestTemplates:\n          application/json: '{\"statusCode\": 404}'\n        responses:\n          404:\n            statusCode: 404\n            responseTemplates:\n              text/plain: gone\n          default:\n            statusCode: 200\n";
    let i = import(doc, &ImportOptions::default()).unwrap();
    assert!(i.toml.contains("status = 404"), "{}", i.toml);
    assert!(i.toml.contains("body = \"gone\""), "{}", i.toml);
}

#[test]
fn authorizers_leave_the_route_out() {
    let doc = json!({
        "openapi": "3.0.1",
        "components": {"securitySchemes": {
            "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"},
            "auth": {"type": "apiKey", "name": "Authorization", "in": "header",
                     "x-amazon-apigateway-authtype": "custom",
                     "x-amazon-apigateway-authorizer": {"type": "token"}}
        }},
        "paths": {
            "/open": {"get": {"x-amazon-apigateway-integration": {"type": "mock"}}},
            "/keyed": {"get": {"security": [{"api_key": []}],
                       "x-amazon-apigateway-integration": {"type": "mock"}}},
            "/either": {"get": {"security": [{"api_key": []}, {}],
                       "x-amazon-apigateway-integration": {"type": "mock"}}},
            "/guarded": {"get": {"security": [{"auth": []}],
                       "x-amazon-apigateway-integration": {"type": "mock"}}}
        }
    });
    let i = import_doc(&doc).unwrap();
    assert_eq!(i.summary.routes, 3);
    assert_eq!(i.summary.left_out.len(), 1);
    assert!(i.summary.left_out[0].message.contains("unprotected"));
    let keyed: Vec<_> = i.config.apis[0]
        .routes
        .iter()
        .map(|r| (r.key.as_display(), r.api_key_required))
        .collect();
    assert!(keyed.contains(&("GET /keyed".to_string(), true)));
    assert!(keyed.contains(&("GET /either".to_string(), false)));
    assert!(keyed.contains(&("GET /open".to_string(), false)));
    round_trip(&i);
}

#[test]
fn iam_authorization_leaves_the_route_out() {
    let doc = json!({
        "openapi": "3.0.1",
        "paths": {
            "/iam": {"get": {"x-amazon-apigateway-auth": {"type": "AWS_IAM"},
                             "x-amazon-apigateway-integration": {"type": "mock"}}},
            "/open": {"get": {"x-amazon-apigateway-auth": {"type": "NONE"},
                              "x-amazon-apigateway-integration": {"type": "mock"}}}
        },
        "x-amazon-apigateway-policy": {"Version": "2012-10-17", "Statement": []}
    });
    let i = import_doc(&doc).unwrap();
    assert_eq!(i.summary.routes, 1);
    let out: Vec<&str> = i
        .summary
        .left_out
        .iter()
        .map(|n| n.pointer.as_str())
        .collect();
    assert_eq!(
        out,
        vec![
            "/x-amazon-apigateway-policy",
            "/paths/~1iam/get/x-amazon-apigateway-auth"
        ]
    );
    assert!(i.summary.left_out[1].message.contains("AWS_IAM"));
}

#[test]
fn shared_integrations_are_followed() {
    let doc = json!({
        "openapi": "3.0.1",
        "x-amazon-apigateway-importexport-version": "1.0",
        "components": {"x-amazon-apigateway-integrations": {"backend": {
            "type": "http_proxy", "uri": "http://backend.example.com:8080/{proxy}",
            "payloadFormatVersion": "1.0", "timeoutInMillis": "oops"
        }, "ok": {"type": "http_proxy", "uri": "http://backend.example.com:8080/{proxy}"}}},
        "paths": {"/{proxy+}": {"x-amazon-apigateway-any-method": {
            "x-amazon-apigateway-integration": {"$ref": "#/components/x-amazon-apigateway-integrations/ok"}
        }}}
    });
    let i = import_doc(&doc).unwrap();
    assert!(
        i.toml
            .contains("uri = \"http://backend.example.com:8080/{proxy}\""),
        "{}",
        i.toml
    );
    round_trip(&i);
    // An error inside the shared integration is reported where it is.
    let mut bad = doc.clone();
    bad["paths"]["/{proxy+}"]["x-amazon-apigateway-any-method"]
        ["x-amazon-apigateway-integration"]["$ref"] =
        json!("#/components/x-amazon-apigateway-integrations/backend");
    let e = import_doc(&bad).unwrap_err();
    assert_eq!(
        e.pointer,
        "/components/x-amazon-apigateway-integrations/backend/timeoutInMillis"
    );
    // A reference to nothing, or outside the document.
    for r in ["#/components/nothing", "other.json#/x"] {
        let mut bad = doc.clone();
        bad["paths"]["/{proxy+}"]["x-amazon-apigateway-any-method"]
            ["x-amazon-apigateway-integration"]["$ref"] = json!(r);
        let e = import_doc(&bad).unwrap_err();
        assert_eq!(
            e.pointer,
            "/paths/~1{proxy+}/x-amazon-apigateway-any-method/x-amazon-apigateway-integration/$ref"
        );
    }
}

#[test]
fn a_route_the_validator_refuses_is_left_out_with_its_reason() {
    let doc = json!({
        "openapi": "3.0.1",
        "paths": {
            "/ok": {"get": {"x-amazon-apigateway-integration": {"type": "mock"}}},
            "/bad{x}": {"get": {"x-amazon-apigateway-integration": {"type": "mock"}}},
            "/a/{id}": {"get": {"x-amazon-apigateway-integration": {"type": "mock"}}},
            "/a/{other}": {"get": {"x-amazon-apigateway-integration": {"type": "mock"}}}
        }
    });
    let i = import_doc(&doc).unwrap();
    assert_eq!(i.summary.routes, 2, "{}", i.toml);
    let out: Vec<&str> = i
        .summary
        .left_out
        .iter()
        .map(|n| n.pointer.as_str())
        .collect();
    assert!(out.contains(&"/paths/~1bad{x}/get"), "{out:?}");
    assert!(out.contains(&"/paths/~1a~1{other}/get"), "{out:?}");
}

#[test]
fn deep_nesting_is_refused_not_recursed() {
    let json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = import(&json, &ImportOptions::default()).unwrap_err();
    assert!(e.message.contains("not valid JSON"), "{e}");
    let json = format!(
        "{{\"openapi\": \"3.0.1\", \"paths\": {}{}}}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    assert!(import(&json, &ImportOptions::default()).is_err());
    let yaml = format!(
        "openapi: 3.0.1\npaths: {}{}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = import(&yaml, &ImportOptions::default()).unwrap_err();
    assert!(e.message.contains("nested deeper than 160"), "{e}");
    // Within the bound but past serde's 128 levels: refused by the parser.
    let yaml = format!(
        "openapi: 3.0.1\npaths: {}{}",
        "[".repeat(150),
        "]".repeat(150)
    );
    assert!(import(&yaml, &ImportOptions::default()).is_err());
}

#[test]
fn many_refused_routes_are_each_left_out() {
    let mut paths = Map::new();
    for i in 0..400 {
        paths.insert(
            format!("/bad{{x}}{i}"),
            json!({"get": {"x-amazon-apigateway-integration": {"type": "mock"}}}),
        );
    }
    paths.insert(
        "/good".into(),
        json!({"get": {"x-amazon-apigateway-integration": {"type": "mock"}}}),
    );
    let doc = json!({"openapi": "3.0.1", "paths": paths});
    let i = import_doc(&doc).unwrap();
    assert_eq!(i.summary.routes, 1);
    assert_eq!(i.summary.left_out.len(), 400);
}

// --- generated documents -------------------------------------------------------

fn pick(options: &'static [&'static str]) -> BoxedStrategy<String> {
    prop::sample::select(options)
        .prop_map(str::to_string)
        .boxed()
}

/// A string: mostly from the vocabulary an import looks for, sometimes
/// anything.
fn word(options: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![30 => pick(options), 1 => any::<String>()].boxed()
}

/// Any JSON value, small.
fn junk() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A value of the expected kind, or now and then anything.
fn or_junk(s: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![40 => s, 1 => junk()].boxed()
}

fn object(entries: Vec<(String, Value)>) -> Value {
    Value::Object(entries.into_iter().collect::<Map<String, Value>>())
}

fn entries(
    keys: BoxedStrategy<String>,
    values: BoxedStrategy<Value>,
    n: std::ops::Range<usize>,
) -> BoxedStrategy<Value> {
    prop::collection::vec((keys, values), n)
        .prop_map(object)
        .boxed()
}

const URIS: &[&str] = &[
    "http://backend.example.com/pets/{id}",
    "http://backend.example.com/pets",
    "http://backend.example.com/",
    "https://backend.example.com/{proxy}",
    "http://${stageVariables.host}/{proxy}",
    "http://backend.example.com/pets/{id}",
    "http://backend.example.com:8080/{proxy}",
    "https://secure.example.com/a?b=c",
    "http://${stageVariables.host}/{proxy}",
    "http://${stageVariables.host}.example.com/x",
    "http://[::1]:9000/v6",
    "http://127.0.0.1:9/{petId}",
    "ftp://x/",
    "http:///nohost",
    "http://h/{unmapped}",
    "arn:aws:apigateway:us-east-1:lambda:path/x",
    "http://h/%zz",
];

fn integration() -> BoxedStrategy<Value> {
    let kinds = word(&[
        "http_proxy",
        "http",
        "mock",
        "aws",
        "aws_proxy",
        "HTTP_PROXY",
    ]);
    let params = entries(
        word(&[
            "integration.request.path.id",
            "integration.request.path.proxy",
            "integration.request.path.petId",
            "integration.request.querystring.q",
            "integration.request.header.x-h",
            "integration.request.body",
        ]),
        or_junk(
            word(&[
                "method.request.path.id",
                "method.request.path.proxy",
                "method.request.querystring.q",
                "method.request.header.x-h",
                "'literal value'",
                "stageVariables.host",
                "context.requestId",
            ])
            .prop_map(Value::String)
            .boxed(),
        ),
        0..4,
    );
    let response = entries(
        word(&[
            "statusCode",
            "responseParameters",
            "responseTemplates",
            "x-ringgate-no-content-type",
        ]),
        or_junk(
            prop_oneof![
                word(&["200", "201", "404", "99", "600"]).prop_map(Value::String),
                entries(
                    word(&[
                        "method.response.header.Content-Type",
                        "method.response.header.X-A",
                        "method.response.header.Date",
                        "application/json",
                        "text/plain",
                    ]),
                    word(&[
                        "'text/plain'",
                        "'v'",
                        "integration.response.header.h",
                        "{\"a\": \"$stageVariables.env\"}",
                        "#set($x = 1) $input.params('id')",
                    ])
                    .prop_map(Value::String)
                    .boxed(),
                    0..3,
                ),
            ]
            .boxed(),
        ),
        0..4,
    );
    let responses = entries(
        word(&["default", "2\\d{2}", "4\\d{2}", "200", "(", "[a-"]),
        or_junk(response),
        0..3,
    );
    let templates = entries(
        word(&["application/json", "text/plain"]),
        or_junk(
            word(&[
                "{\"statusCode\": 200}",
                "{\"statusCode\": 201}",
                "{\"statusCode\": 500}",
                "#if(1){\"statusCode\": 404}#end",
                "",
            ])
            .prop_map(Value::String)
            .boxed(),
        ),
        0..2,
    );
    let cache_keys = prop::collection::vec(
        or_junk(
            word(&[
                "method.request.querystring.q",
                "method.request.header.Accept",
                "method.request.path.id",
                "method.request.path.none",
                "method.request.querystring.bad name",
            ])
            .prop_map(Value::String)
            .boxed(),
        ),
        0..3,
    )
    .prop_map(Value::Array);
    let fields: Vec<(&'static str, BoxedStrategy<Value>)> = vec![
        ("type", kinds.prop_map(Value::String).boxed()),
        ("uri", word(URIS).prop_map(Value::String).boxed()),
        ("requestParameters", params),
        ("responses", responses),
        ("requestTemplates", templates),
        (
            "timeoutInMillis",
            prop_oneof![
                (0u64..40_000).prop_map(|n| json!(n)),
                Just(json!("1000")),
                Just(json!(-5))
            ]
            .boxed(),
        ),
        ("cacheKeyParameters", cache_keys.boxed()),
        (
            "cacheNamespace",
            word(&["ns1", "ns2", "ns1", "bad ns", ""])
                .prop_map(Value::String)
                .boxed(),
        ),
        (
            "connectionType",
            word(&["INTERNET", "VPC_LINK"])
                .prop_map(Value::String)
                .boxed(),
        ),
        (
            "httpMethod",
            word(&["GET", "POST", "ANY"])
                .prop_map(Value::String)
                .boxed(),
        ),
    ];
    // Each field present or not, each value sometimes junk.
    let per_field: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(k, s)| {
            prop::option::weighted(
                match k {
                    "type" => 0.995,
                    "uri" => 0.97,
                    _ => 0.6,
                },
                or_junk(s),
            )
            .prop_map(move |v| v.map(|v| (k.to_string(), v)))
            .boxed()
        })
        .collect();
    per_field
        .prop_map(|fields| object(fields.into_iter().flatten().collect()))
        .boxed()
}

fn operation() -> BoxedStrategy<Value> {
    let security = prop_oneof![
        Just(json!([{"api_key": []}])),
        Just(json!([])),
        Just(json!([{"auth": []}])),
        Just(json!([{"unknown": []}])),
        junk(),
    ];
    (
        or_junk(integration()),
        prop::option::weighted(0.3, security),
        prop::bool::weighted(0.95),
        prop::option::weighted(0.1, word(&["NONE", "AWS_IAM", "none"])),
    )
        .prop_map(|(integration, security, with_integration, auth)| {
            let mut op = Map::new();
            if let Some(t) = auth {
                op.insert("x-amazon-apigateway-auth".into(), json!({ "type": t }));
            }
            if with_integration {
                op.insert("x-amazon-apigateway-integration".into(), integration);
            }
            if let Some(s) = security {
                op.insert("security".into(), s);
            }
            Value::Object(op)
        })
        .boxed()
}

fn document() -> BoxedStrategy<Value> {
    let path_item = entries(
        word(&[
            "get",
            "post",
            "put",
            "delete",
            "options",
            "head",
            "patch",
            "trace",
            "x-amazon-apigateway-any-method",
            "get",
            "post",
            "x-amazon-apigateway-any-method",
            "parameters",
            "$ref",
        ]),
        or_junk(operation()),
        1..4,
    );
    let paths = entries(
        word(&[
            "/",
            "/pets",
            "/pets/{id}",
            "/pets/{petId}",
            "/{proxy+}",
            "/a/{proxy+}",
            "$default",
            "/$default",
            "/a b",
            "/x/{id}/{id}",
            "noslash",
            "/é",
            "/pets",
            "/pets/{id}",
            "/{proxy+}",
            "/orders/{id}/items",
        ]),
        or_junk(path_item),
        1..6,
    );
    let top = (
        prop_oneof![
            12 => Just("3.0.1".to_string()),
            6 => Just("2.0".to_string()),
            1 => word(&["3.1.0", "1.0"]),
        ],
        or_junk(paths),
        prop::option::of(word(&["/prod", "/v1", "", "/a/b", "/{bad}"])),
        prop::option::of(word(&["PetStore", "my api", "", "😀"])),
        prop::option::of(or_junk(
            prop::sample::select(vec![
                json!({"x-amazon-apigateway-binary-media-types": ["image/png"]}),
                json!({"x-amazon-apigateway-gateway-responses": {"DEFAULT_4XX": {}}}),
                json!({"x-amazon-apigateway-api-key-source": "HEADER"}),
                json!({"x-amazon-apigateway-api-key-source": "AUTHORIZER"}),
                json!({"x-amazon-apigateway-cors": {"allowOrigins": ["*"]}}),
                json!({"x-amazon-apigateway-importexport-version": "1.0"}),
                json!({"x-amazon-apigateway-policy": {}}),
            ])
            .boxed(),
        )),
    );
    top.prop_map(|(version, paths, base, title, extension)| {
        let mut doc = Map::new();
        if version == "2.0" {
            doc.insert("swagger".into(), json!(version));
            doc.insert(
                "securityDefinitions".into(),
                json!({"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"},
                       "auth": {"type": "oauth2"}}),
            );
            if let Some(b) = base {
                doc.insert("basePath".into(), json!(b));
            }
        } else {
            doc.insert("openapi".into(), json!(version));
            doc.insert(
                "components".into(),
                json!({"securitySchemes": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"},
                                           "auth": {"type": "http", "scheme": "bearer"}}}),
            );
            if let Some(b) = base {
                doc.insert(
                    "servers".into(),
                    json!([{"url": "https://h.example.com/{basePath}", "variables": {"basePath": {"default": b}}}]),
                );
            }
        }
        if let Some(t) = title {
            doc.insert("info".into(), json!({"title": t}));
        }
        match extension {
            Some(Value::Object(e)) => doc.extend(e),
            Some(junk) => {
                doc.insert("x-amazon-apigateway-binary-media-types".into(), junk);
            }
            None => {}
        }
        doc.insert("paths".into(), paths);
        Value::Object(doc)
    })
    .boxed()
}

/// A coherent operation: a path and an integration that fit it, with
/// varied settings.
fn coherent_route() -> BoxedStrategy<(String, String, Value)> {
    let proxy = (
        prop::sample::select(vec![
            ("/pets", "http://backend.example.com/pets"),
            ("/pets/{id}", "http://backend.example.com/pets/{id}"),
            ("/{proxy+}", "https://${stageVariables.host}/{proxy}"),
            ("/a/{x}/b/{y}", "http://127.0.0.1:8080/{y}/{x}?k=v"),
            ("/files/{path+}", "http://[::1]:9000/f/{path}"),
        ]),
        prop::option::of(0u64..40_000),
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec![
                "method.request.querystring.q",
                "method.request.header.Accept",
                "method.request.multivaluequerystring.m",
            ]),
            0..3,
        )),
        prop::option::of("[a-z0-9]{1,8}"),
        any::<bool>(),
    )
        .prop_map(|((path, uri), timeout, keys, ns, http)| {
            let mut i = json!({"type": if http { "http" } else { "http_proxy" }, "uri": uri,
                               "connectionType": "INTERNET"});
            let params: Vec<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(|n| n.trim_end_matches('+').to_string())
                .collect();
            let mut rp = Map::new();
            for p in &params {
                rp.insert(
                    format!("integration.request.path.{p}"),
                    json!(format!("method.request.path.{p}")),
                );
            }
            i["requestParameters"] = Value::Object(rp);
            if let Some(t) = timeout {
                i["timeoutInMillis"] = json!(t);
            }
            if let Some(k) = keys {
                i["cacheKeyParameters"] = json!(k);
            }
            if let Some(ns) = ns {
                i["cacheNamespace"] = json!(ns);
            }
            (path.to_string(), i)
        });
    let mock = (
        prop::sample::select(vec!["/health", "/v/{id}", "/"]),
        200u16..600,
        prop::option::of(prop::sample::select(vec![
            "{\"id\": \"$input.params('id')\", \"env\": \"$stageVariables.env\"}",
            "plain text",
            "#set($a = 1)$a",
            "",
        ])),
        prop::option::of(prop::sample::select(vec!["text/plain", "application/json", "text/html"])),
        prop::collection::btree_map("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}", 0..3),
    )
        .prop_map(|(path, status, body, ct, headers)| {
            let mut response = json!({"statusCode": status.to_string()});
            let rp: Map<String, Value> = headers
                .into_iter()
                .map(|(k, v)| (format!("method.response.header.{k}"), json!(format!("'{v}'"))))
                .collect();
            response["responseParameters"] = Value::Object(rp);
            if let Some(b) = body {
                response["responseTemplates"] = json!({ct.unwrap_or("application/json"): b});
            }
            (
                path.to_string(),
                json!({"type": "mock",
                       "requestTemplates": {"application/json": format!("{{\"statusCode\": {status}}}")},
                       "responses": {"default": response}}),
            )
        });
    (
        prop_oneof![proxy, mock],
        prop::sample::select(vec!["get", "post", "put", "x-amazon-apigateway-any-method"]),
        any::<bool>(),
    )
        .prop_map(|((path, integration), method, keyed)| {
            let mut op = json!({"x-amazon-apigateway-integration": integration});
            if keyed {
                op["security"] = json!([{"api_key": []}]);
            }
            (path, method.to_string(), op)
        })
        .boxed()
}

/// A coherent document, then perhaps one value somewhere replaced by
/// anything.
fn mutated_document() -> BoxedStrategy<Value> {
    (
        prop::collection::vec(coherent_route(), 1..8),
        any::<bool>(),
        prop::option::of((any::<prop::sample::Index>(), junk())),
    )
        .prop_map(|(routes, swagger, mutation)| {
            let mut paths = Map::new();
            for (path, method, op) in routes {
                let item = paths.entry(path).or_insert_with(|| json!({}));
                item[method] = op;
            }
            let mut doc = if swagger {
                json!({"swagger": "2.0", "basePath": "/v1",
                       "securityDefinitions": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}})
            } else {
                json!({"openapi": "3.0.1",
                       "components": {"securitySchemes": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}}})
            };
            doc["paths"] = Value::Object(paths);
            if let Some((at, junk)) = mutation {
                let mut pointers = Vec::new();
                collect_pointers(&doc, String::new(), &mut pointers);
                let p = at.get(&pointers).clone();
                if let Some(slot) = doc.pointer_mut(&p) {
                    *slot = junk;
                }
            }
            doc
        })
        .boxed()
}

fn collect_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = super::child(&at, k);
                out.push(p.clone());
                collect_pointers(v, p, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                collect_pointers(v, p, out);
            }
        }
        _ => {}
    }
}

/// The property: an import succeeds with a file that is the configuration
/// it says (checked inside; parsed again here) and that survives export +
/// import, or fails at a pointer that exists in the document.
fn imports_or_is_refused_at_a_pointer(doc: &Value) -> Result<(), TestCaseError> {
    match import_doc(doc) {
        Ok(i) => {
            let again = crate::config::parse(&i.toml, "(again)")
                .map_err(|e| TestCaseError::fail(format!("{e}\n{}", i.toml)))?;
            prop_assert_eq!(again.apis[0].routes.len(), i.summary.routes);
            round_trip(&i);
        }
        Err(e) => {
            prop_assert!(
                e.pointer.is_empty() || doc.pointer(&e.pointer).is_some(),
                "{} does not exist in {}",
                e.pointer,
                doc
            );
        }
    }
    Ok(())
}

proptest! {
    // Each case imports twice (and validates and compiles each time).
    #![proptest_config(crate::proptest_config(128))]

    #[test]
    fn coherent_documents_import_and_round_trip(doc in mutated_document()) {
        imports_or_is_refused_at_a_pointer(&doc)?;
    }

    #[test]
    fn generated_documents_import_or_are_refused_at_a_pointer(doc in document()) {
        imports_or_is_refused_at_a_pointer(&doc)?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = import(&text, &ImportOptions::default());
    }

    #[test]
    fn arbitrary_json_never_panics(doc in junk()) {
        imports_or_is_refused_at_a_pointer(&doc)?;
    }
}
