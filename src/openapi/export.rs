//! The export: an API's routes as an OpenAPI 3.0.1 document with API
//! Gateway's extensions (`x-amazon-apigateway-integration`,
//! `x-amazon-apigateway-any-method`, `x-amazon-apigateway-api-key-source`,
//! `x-amazon-apigateway-importexport-version` for an HTTP-API-style API),
//! plus a few `x-ringgate-*` extensions for what API Gateway has no field
//! for (the stages with their variables and cache capacity, the API's
//! hosts and `unmatched_route`, per-route cache switches and TTLs, client
//! throttles, `preserve_host`, `allow_upgrade`, and the upstream group a
//! uri names, whose first target stands in the uri itself). API Gateway's own
//! import ignores those with a warning; [`super::import`] reads them back,
//! so an export imports to the configuration it came from.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::config::{
    ApiDefinition, BodyPart, Config, Integration, KeyParameter, RouteConfig, RouteKey,
    StageCacheConfig, UnmatchedRoute, UpstreamConfig,
};

/// A stage as the export names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportStage {
    /// The stage name; `$default` for one served at the root of every
    /// host (a `[[domain]] host = "*"` mapping with base path `""`).
    pub name: String,
    /// Its stage variables.
    pub variables: BTreeMap<String, String>,
    /// The capacity of its stage cache, when one is on: a class (`"0.5"`)
    /// or a size in bytes.
    pub cache_capacity: Option<String>,
}

/// The document for the API `api` of a configuration; `Err` when there is
/// no such API.
pub fn export_config(cfg: &Config, api: &str) -> Result<Value, String> {
    let a = cfg.apis.iter().find(|a| a.name == api).ok_or_else(|| {
        let names: Vec<&str> = cfg.apis.iter().map(|a| a.name.as_str()).collect();
        format!(
            "no api {api:?} (the configuration has {})",
            names.join(", ")
        )
    })?;
    let root = root_stage(cfg, api);
    let stages: Vec<ExportStage> = a
        .stages
        .iter()
        .map(|s| ExportStage {
            name: export_name(&s.name, root),
            variables: s.variables.clone(),
            cache_capacity: capacity(s.cache.as_ref()),
        })
        .collect();
    Ok(export(
        api,
        &a.definition(),
        &ExportContext {
            hosts: &a.hosts,
            stages: &stages,
            upstreams: &cfg.upstreams,
        },
    ))
}

/// The stage of `api` served at the root of every host (a `[[domain]]
/// host = "*"` mapping with base path `""`), which an export names
/// `$default`.
pub(crate) fn root_stage<'c>(cfg: &'c Config, api: &str) -> Option<&'c str> {
    cfg.domains
        .iter()
        .filter(|d| d.host == "*")
        .flat_map(|d| &d.mappings)
        .find(|m| m.base_path.is_empty() && m.api == api)
        .map(|m| m.stage.as_str())
}

/// A stage's name in an export, given the root stage.
pub(crate) fn export_name(stage: &str, root: Option<&str>) -> String {
    if Some(stage) == root {
        "$default".to_string()
    } else {
        stage.to_string()
    }
}

/// An enabled stage cache's capacity: its class, or its size in bytes.
pub(crate) fn capacity(cache: Option<&StageCacheConfig>) -> Option<String> {
    cache.filter(|c| c.enabled).map(|c| {
        c.capacity_class
            .clone()
            .unwrap_or_else(|| c.capacity_bytes.to_string())
    })
}

/// What an export names besides the routes.
#[derive(Debug, Clone, Copy)]
pub struct ExportContext<'a> {
    /// The API's `hosts` (the first names the server).
    pub hosts: &'a [String],
    /// Its stages.
    pub stages: &'a [ExportStage],
    /// The gateway's upstreams: a uri naming one is exported with its
    /// first target's address, and the group's targets go along in
    /// `x-ringgate-upstreams`.
    pub upstreams: &'a [UpstreamConfig],
}

/// The document for an API's definition (a configuration's, or a
/// deployment's) in its context.
pub fn export(api: &str, definition: &ApiDefinition, cx: &ExportContext<'_>) -> Value {
    let (hosts, stages) = (cx.hosts, cx.stages);
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut keys = false;
    // Upstream groups named by a uri, directly or through a stage
    // variable that is its whole host.
    let mut groups: BTreeMap<String, Value> = BTreeMap::new();
    let mut note_group = |name: &str| {
        if let Some(u) = cx.upstreams.iter().find(|u| u.name == name) {
            groups.entry(name.to_string()).or_insert_with(|| {
                json!({"targets": u.targets.iter().map(|t| t.text.clone()).collect::<Vec<_>>(),
                       "tls": u.tls.is_some()})
            });
        }
    };
    for route in &definition.routes {
        if let Integration::HttpProxy(h) = &route.integration {
            match &h.authority[..] {
                [BodyPart::Literal(a)] if !a.contains([':', '[']) => note_group(a),
                [BodyPart::StageVariable(v)] => {
                    for s in stages {
                        if let Some(value) = s.variables.get(v) {
                            note_group(value);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for route in &definition.routes {
        let (path, method) = match &route.key {
            RouteKey::Default => ("$default".to_string(), None),
            RouteKey::Route { method, path } => (path.clone(), method.clone()),
        };
        let method_key = match &method {
            Some(m) => m.to_ascii_lowercase(),
            None => "x-amazon-apigateway-any-method".to_string(),
        };
        keys |= route.api_key_required;
        paths.entry(path.clone()).or_default().insert(
            method_key,
            operation(route, &path, method.as_deref(), cx.upstreams),
        );
    }
    let mut doc = Map::new();
    doc.insert("openapi".into(), json!("3.0.1"));
    doc.insert("info".into(), json!({"title": api, "version": "1.0"}));
    let base = match stages.first() {
        Some(s) if s.name == "$default" => String::new(),
        Some(s) => format!("/{}", s.name),
        None => String::new(),
    };
    doc.insert(
        "servers".into(),
        json!([{
            "url": match hosts.first() {
                Some(h) => format!("http://{h}/{{basePath}}"),
                None => "/{basePath}".to_string(),
            },
            "variables": {"basePath": {"default": base}}
        }]),
    );
    doc.insert(
        "paths".into(),
        Value::Object(
            paths
                .into_iter()
                .map(|(k, v)| (k, Value::Object(v)))
                .collect(),
        ),
    );
    if keys {
        doc.insert(
            "components".into(),
            json!({"securitySchemes": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}}),
        );
        doc.insert("x-amazon-apigateway-api-key-source".into(), json!("HEADER"));
    }
    if definition.unmatched_route == UnmatchedRoute::NotFound {
        doc.insert(
            "x-amazon-apigateway-importexport-version".into(),
            json!("1.0"),
        );
    }
    // Said outright: a REST-style API may have a $default route too.
    doc.insert(
        "x-ringgate-unmatched-route".into(),
        json!(match definition.unmatched_route {
            UnmatchedRoute::NotFound => "not_found",
            UnmatchedRoute::MissingAuthenticationToken => "missing_authentication_token",
        }),
    );
    if !hosts.is_empty() {
        doc.insert("x-ringgate-hosts".into(), json!(hosts));
    }
    if !groups.is_empty() {
        doc.insert(
            "x-ringgate-upstreams".into(),
            Value::Object(groups.into_iter().collect()),
        );
    }
    doc.insert(
        "x-ringgate-stages".into(),
        Value::Array(
            stages
                .iter()
                .map(|s| {
                    let mut v = json!({"name": s.name, "variables": s.variables});
                    if let Some(c) = &s.cache_capacity {
                        v["cache_capacity"] = json!(c);
                    }
                    v
                })
                .collect(),
        ),
    );
    Value::Object(doc)
}

fn operation(
    route: &RouteConfig,
    path: &str,
    method: Option<&str>,
    upstreams: &[UpstreamConfig],
) -> Value {
    let mut op = Map::new();
    let params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|n| {
            json!({"name": n.strip_suffix('+').unwrap_or(n), "in": "path", "required": true,
                   "schema": {"type": "string"}})
        })
        .collect();
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if route.api_key_required {
        op.insert("security".into(), json!([{"api_key": []}]));
    }
    let mut integration = Map::new();
    let status = match &route.integration {
        Integration::HttpProxy(h) => {
            integration.insert("type".into(), json!("http_proxy"));
            integration.insert("httpMethod".into(), json!(method.unwrap_or("ANY")));
            let mut uri = String::from(if h.tls { "https://" } else { "http://" });
            let authority = template_text(&h.authority, false);
            let default_port = if h.tls { ":443" } else { ":80" };
            let literal = h
                .authority
                .iter()
                .all(|p| matches!(p, BodyPart::Literal(_)));
            let group = upstreams.iter().find(|u| literal && u.name == authority);
            if let Some((u, first)) = group.and_then(|u| Some((u, u.targets.first()?))) {
                // API Gateway needs an address: the group's first target.
                uri.push_str(&first.text);
                integration.insert("x-ringgate-upstream".into(), json!(u.name));
            } else {
                match authority.strip_suffix(default_port) {
                    Some(host) if literal && !host.ends_with(']') && !host.contains(':') => {
                        uri.push_str(host)
                    }
                    _ => uri.push_str(&authority),
                }
            }
            uri.push_str(&template_text(&h.path, false));
            if !h.query.is_empty() {
                uri.push('?');
                uri.push_str(&template_text(&h.query, false));
            }
            integration.insert("uri".into(), json!(uri));
            let mut mapped = Map::new();
            for part in h.path.iter().chain(&h.query) {
                if let BodyPart::PathParam(p) = part {
                    mapped.insert(
                        format!("integration.request.path.{p}"),
                        json!(format!("method.request.path.{p}")),
                    );
                }
            }
            if !mapped.is_empty() {
                integration.insert("requestParameters".into(), Value::Object(mapped));
            }
            integration.insert("connectionType".into(), json!("INTERNET"));
            integration.insert("passthroughBehavior".into(), json!("when_no_match"));
            integration.insert(
                "timeoutInMillis".into(),
                json!(h.timeout.as_millis() as u64),
            );
            if h.preserve_host {
                integration.insert("x-ringgate-preserve-host".into(), json!(true));
            }
            if h.allow_upgrade {
                integration.insert("x-ringgate-allow-upgrade".into(), json!(true));
            }
            200
        }
        Integration::Mock(m) => {
            integration.insert("type".into(), json!("mock"));
            integration.insert(
                "requestTemplates".into(),
                json!({"application/json": format!("{{\"statusCode\": {}}}", m.status)}),
            );
            integration.insert("passthroughBehavior".into(), json!("when_no_match"));
            let mut response = Map::new();
            response.insert("statusCode".into(), json!(m.status.to_string()));
            if !m.headers.is_empty() {
                let params: Map<String, Value> = m
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            format!("method.response.header.{k}"),
                            json!(format!("'{v}'")),
                        )
                    })
                    .collect();
                response.insert("responseParameters".into(), Value::Object(params));
            }
            if !m.body.is_empty() {
                let content_type = m
                    .headers
                    .iter()
                    .find(|(k, _)| k == "content-type")
                    .map(|(_, v)| v.as_str());
                response.insert(
                    "responseTemplates".into(),
                    json!({content_type.unwrap_or("application/json"): template_text(&m.body, true)}),
                );
                if content_type.is_none() {
                    response.insert("x-ringgate-no-content-type".into(), json!(true));
                }
            }
            integration.insert(
                "responses".into(),
                json!({"default": Value::Object(response)}),
            );
            m.status
        }
        // A kind added later: exported as what API Gateway would not
        // deploy, so the gap shows.
        #[allow(unreachable_patterns)]
        _ => 500,
    };
    op.insert(
        "responses".into(),
        json!({status.to_string(): {"description": format!("{status} response")}}),
    );
    if let Some(c) = &route.cache {
        let mut params: Vec<Value> = c
            .key_parameters
            .iter()
            .map(|k| {
                json!(match k {
                    KeyParameter::Path(p) => format!("method.request.path.{p}"),
                    KeyParameter::Query(q) => format!("method.request.querystring.{q}"),
                    KeyParameter::Header(h) => format!("method.request.header.{h}"),
                })
            })
            .collect();
        if !params.is_empty() {
            integration.insert(
                "cacheKeyParameters".into(),
                Value::Array(std::mem::take(&mut params)),
            );
        }
        if let Some(ns) = &c.namespace {
            integration.insert("cacheNamespace".into(), json!(ns));
        }
        let mut extra = Map::new();
        if let Some(e) = c.enabled {
            extra.insert("enabled".into(), json!(e));
        }
        if let Some(t) = c.ttl {
            extra.insert("ttl_seconds".into(), json!(t.as_secs()));
        }
        if c.whole_query {
            extra.insert("whole_query".into(), json!(true));
        }
        if !extra.is_empty() {
            integration.insert("x-ringgate-cache".into(), Value::Object(extra));
        }
    }
    op.insert(
        "x-amazon-apigateway-integration".into(),
        Value::Object(integration),
    );
    if let Some(t) = &route.client_throttle {
        op.insert(
            "x-ringgate-client-throttle".into(),
            json!({"rate": t.rate, "burst": t.burst}),
        );
    }
    Value::Object(op)
}

/// A template as text: stage variables as `${stageVariables.x}`, path
/// parameters as `{p}` (a uri) or `$input.params('p')` (a mock body, VTL).
fn template_text(parts: &[BodyPart], vtl: bool) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            BodyPart::Literal(s) => out.push_str(s),
            BodyPart::StageVariable(v) => {
                out.push_str("${stageVariables.");
                out.push_str(v);
                out.push('}');
            }
            BodyPart::PathParam(p) if vtl => {
                out.push_str("$input.params('");
                out.push_str(p);
                out.push_str("')");
            }
            BodyPart::PathParam(p) => {
                out.push('{');
                out.push_str(p);
                out.push('}');
            }
        }
    }
    out
}
