//! The import: a document ([`parse_document`]) → routes and stages →
//! TOML → a checked [`Config`].
//!
//! Reading is strict about shape (a value of the wrong type is an
//! [`ImportError`] at its pointer) and lenient about meaning (what ringgate
//! cannot do is left out or approximated, with a [`Note`], and the rest is
//! imported). The TOML written is then validated as `ringgate check` does;
//! a route the validator refuses is left out with its message, and the
//! file is validated again.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::{child, parse_document, ImportError};
use crate::admin::cli::encode;
use crate::config::{self, Config};
use write::{write_toml, Head};

mod write;

/// The largest number of operations an import takes (API Gateway allows
/// 300 resources per API by default).
const MAX_OPERATIONS: usize = 10_000;

/// Refused routes after which the others are validated one by one.
const ALONE_AFTER: usize = 8;

/// The longest integration timeout ringgate has, in milliseconds.
const MAX_TIMEOUT_MS: u64 = 29_000;
/// The shortest.
const MIN_TIMEOUT_MS: u64 = 50;

/// Stages by name, each with its variables.
type Stages = Vec<(String, BTreeMap<String, String>)>;

/// What to import as, besides the document.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The `[[api]]` name; default: the document's `info.title`, made a
    /// name (`[A-Za-z0-9_-]`, at most 64).
    pub api: Option<String>,
    /// The stages, each with its own variables; default: the document's
    /// (`x-ringgate-stages`, else the base path of `servers` or
    /// `basePath`, else an HTTP API's `$default`, else `prod`).
    pub stages: Stages,
    /// Stage variables given to every stage (a stage's own win).
    pub variables: BTreeMap<String, String>,
    /// Turn the stage cache on, at this capacity (a class such as `"0.5"`
    /// or a size): API Gateway's cache settings are stage settings, not
    /// part of an export.
    pub cache_capacity: Option<String>,
    /// Write an HTTP API's `$default` stage as stage `default` behind a
    /// `[[domain]] host = "*"` mapping at the root (as API Gateway serves
    /// it). Off for the admin socket, which imports routes only.
    pub root_domain: bool,
    /// Upstream names the stage variables may name (with whether each
    /// speaks TLS): the admin socket's import validates against the
    /// running gateway's. Written as placeholder `[[upstream]]` tables.
    pub upstreams: Vec<(String, bool)>,
}

/// One thing approximated or left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Where in the document (a JSON pointer; `""`: the document).
    pub pointer: String,
    /// What it concerns and why, in one line.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "(document): {}", self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// `info.title`.
    pub title: String,
    /// `OpenAPI 3.0.1` or `Swagger 2.0`.
    pub format: String,
    /// The `[[api]]` name written.
    pub api: String,
    /// The stage names written.
    pub stages: Vec<String>,
    /// Routes imported.
    pub routes: usize,
    /// Of which `http_proxy`.
    pub http_proxy: usize,
    /// Of which mock.
    pub mock: usize,
    /// Imported, but not exactly as API Gateway does it.
    pub approximated: Vec<Note>,
    /// Not imported.
    pub left_out: Vec<Note>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "imported {:?} ({}) as api {:?}, stage(s) {}: {} route(s), {} http_proxy, {} mock",
            self.title,
            self.format,
            self.api,
            self.stages.join(", "),
            self.routes,
            self.http_proxy,
            self.mock
        )?;
        writeln!(f, "approximated: {}", self.approximated.len())?;
        for n in &self.approximated {
            writeln!(f, "  {n}")?;
        }
        writeln!(f, "left out: {}", self.left_out.len())?;
        for n in &self.left_out {
            writeln!(f, "  {n}")?;
        }
        Ok(())
    }
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The configuration file, with comments where something was
    /// approximated or left out.
    pub toml: String,
    /// That file, validated.
    pub config: Config,
    /// What was done.
    pub summary: Summary,
}

/// Imports a document (JSON or YAML text).
pub fn import(text: &str, options: &ImportOptions) -> Result<Imported, ImportError> {
    let doc = parse_document(text)?;
    import_value(&doc, options)
}

/// Imports a document already read.
pub fn import_value(doc: &Value, options: &ImportOptions) -> Result<Imported, ImportError> {
    let root = obj(doc, "", "the document")?;
    let format = if let Some(v) = root.get("openapi") {
        let v = str_at(v, "/openapi")?;
        if !v.starts_with("3.") {
            return Err(ImportError::at(
                "/openapi",
                format!(
                    "OpenAPI {v:?} is not supported: export as OpenAPI 3.0 (oas30) or Swagger 2.0"
                ),
            ));
        }
        format!("OpenAPI {v}")
    } else if let Some(v) = root.get("swagger") {
        let v = str_at(v, "/swagger")?;
        if v != "2.0" {
            return Err(ImportError::at(
                "/swagger",
                format!("Swagger {v:?} is not supported: only 2.0 is"),
            ));
        }
        "Swagger 2.0".to_string()
    } else {
        return Err(ImportError::at(
            "",
            "neither \"openapi\" nor \"swagger\" is given: this is not an OpenAPI document",
        ));
    };
    let mut r = Reader::new(root, format)?;
    r.read_top_level()?;
    r.read_paths()?;
    let api = match &options.api {
        Some(a) => a.clone(),
        None => api_name(&r.title),
    };
    let stages = r.stages(options)?;
    r.finish(api, stages, options)
}

// --- the model ------------------------------------------------------------

/// A route as it will be written.
#[derive(Debug, Clone)]
struct Route {
    /// `"GET /pets"`, `"$default"`.
    key: String,
    /// The operation's pointer.
    pointer: String,
    api_key_required: bool,
    integration: Integration,
    cache: Option<RouteCache>,
    /// `x-ringgate-client-throttle`: rate and burst.
    client_throttle: Option<(f64, u64)>,
    /// Approximations, written as comments above the route.
    comments: Vec<String>,
}

#[derive(Debug, Clone)]
enum Integration {
    Proxy {
        uri: String,
        /// `None`: the default (29 s).
        timeout_ms: Option<u64>,
        preserve_host: bool,
        allow_upgrade: bool,
    },
    Mock {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

#[derive(Debug, Clone, Default)]
struct RouteCache {
    enabled: Option<bool>,
    ttl_seconds: Option<u64>,
    key_parameters: Vec<String>,
    namespace: Option<String>,
}

/// A security scheme, as far as the import cares.
#[derive(Debug, Clone)]
enum Scheme {
    /// An API key in the `x-api-key` header: a usage plan's key.
    ApiKey,
    /// Anything else (authorizers, IAM, Cognito, OAuth…), described.
    Other(String),
}

struct Reader<'d> {
    root: &'d Map<String, Value>,
    format: String,
    title: String,
    /// An HTTP API (API Gateway v2) export rather than a REST API's.
    http_api: bool,
    schemes: BTreeMap<String, Scheme>,
    /// The document's `security`, for operations without their own.
    security: Option<(&'d Value, String)>,
    routes: Vec<Route>,
    approximated: Vec<Note>,
    left_out: Vec<Note>,
    /// Stage variables used as a whole uri authority: their values need a
    /// port.
    authority_vars: BTreeMap<String, bool>,
    /// `x-ringgate-stages`' cache capacities, by stage.
    stage_caches: BTreeMap<String, String>,
}

fn note(pointer: &str, message: impl Into<String>) -> Note {
    Note {
        pointer: pointer.to_string(),
        message: message.into(),
    }
}

impl<'d> Reader<'d> {
    fn new(root: &'d Map<String, Value>, format: String) -> Result<Reader<'d>, ImportError> {
        let title = match root.get("info") {
            Some(info) => {
                let info = obj(info, "/info", "info")?;
                opt_str(info, "title", "/info")?.unwrap_or("").to_string()
            }
            None => String::new(),
        };
        let http_api = root.contains_key("x-amazon-apigateway-importexport-version")
            || root.contains_key("x-amazon-apigateway-cors")
            || root
                .get("paths")
                .and_then(Value::as_object)
                .is_some_and(|p| p.contains_key("$default") || p.contains_key("/$default"));
        let http_api = match root.get("x-ringgate-unmatched-route") {
            None => http_api,
            Some(v) => match str_at(v, "/x-ringgate-unmatched-route")? {
                "not_found" => true,
                "missing_authentication_token" => false,
                other => {
                    return Err(ImportError::at(
                        "/x-ringgate-unmatched-route",
                        format!("{other:?} is neither not_found nor missing_authentication_token"),
                    ))
                }
            },
        };
        Ok(Reader {
            root,
            format,
            title,
            http_api,
            schemes: BTreeMap::new(),
            security: None,
            routes: Vec::new(),
            approximated: Vec::new(),
            left_out: Vec::new(),
            authority_vars: BTreeMap::new(),
            stage_caches: BTreeMap::new(),
        })
    }

    fn approx(&mut self, pointer: &str, message: impl Into<String>) {
        self.approximated.push(note(pointer, message));
    }

    fn leave_out(&mut self, pointer: &str, message: impl Into<String>) {
        self.left_out.push(note(pointer, message));
    }

    /// Security schemes and the document-wide settings.
    fn read_top_level(&mut self) -> Result<(), ImportError> {
        let root = self.root;
        let schemes = if self.format.starts_with("Swagger") {
            root.get("securityDefinitions")
                .map(|v| (v, "/securityDefinitions".to_string()))
        } else {
            match root.get("components") {
                Some(c) => obj(c, "/components", "components")?
                    .get("securitySchemes")
                    .map(|v| (v, "/components/securitySchemes".to_string())),
                None => None,
            }
        };
        if let Some((v, ptr)) = schemes {
            for (name, s) in obj(v, &ptr, "the security schemes")? {
                let p = child(&ptr, name);
                let s = obj(s, &p, "a security scheme")?;
                let kind = opt_str(s, "type", &p)?.unwrap_or("");
                let is_in = opt_str(s, "in", &p)?.unwrap_or("");
                let header = opt_str(s, "name", &p)?.unwrap_or("");
                let authtype = opt_str(s, "x-amazon-apigateway-authtype", &p)?;
                let scheme = if kind == "apiKey"
                    && is_in == "header"
                    && header.eq_ignore_ascii_case("x-api-key")
                    && authtype.is_none()
                    && !s.contains_key("x-amazon-apigateway-authorizer")
                {
                    Scheme::ApiKey
                } else if let Some(t) = authtype {
                    Scheme::Other(format!("{name:?} ({t})"))
                } else if s.contains_key("x-amazon-apigateway-authorizer") {
                    Scheme::Other(format!("{name:?} (a Lambda or JWT authorizer)"))
                } else {
                    Scheme::Other(format!("{name:?} (type {kind})"))
                };
                self.schemes.insert(name.clone(), scheme);
            }
        }
        if let Some(s) = root.get("security") {
            self.security = Some((s, "/security".to_string()));
        }
        for (key, value) in root {
            let p = child("", key);
            match key.as_str() {
                "x-amazon-apigateway-api-key-source" => match str_at(value, &p)? {
                    "HEADER" => {}
                    "AUTHORIZER" => self.approx(
                        &p,
                        "API keys come from an authorizer in API Gateway; ringgate reads them \
                         from the x-api-key header",
                    ),
                    other => {
                        return Err(ImportError::at(
                            &p,
                            format!("{other:?} is neither HEADER nor AUTHORIZER"),
                        ))
                    }
                },
                "x-amazon-apigateway-gateway-responses" => {
                    let names = keys_of(value, &p, "the gateway responses")?;
                    self.leave_out(
                        &p,
                        format!(
                            "gateway responses ({}) are not imported: ringgate answers its own \
                             errors with API Gateway's default statuses and bodies",
                            names
                        ),
                    );
                }
                "x-amazon-apigateway-binary-media-types" => {
                    let types = strings_at(value, &p)?;
                    self.approx(
                        &p,
                        format!(
                            "binary media types ({}): ringgate passes request and response \
                             bodies through as bytes, so no setting is needed",
                            types.join(", ")
                        ),
                    );
                }
                "x-amazon-apigateway-request-validators" => {
                    let names = keys_of(value, &p, "the request validators")?;
                    self.leave_out(
                        &p,
                        format!(
                            "request validators ({}) are not imported: ringgate does not \
                             validate request parameters or bodies",
                            names
                        ),
                    );
                }
                "x-amazon-apigateway-request-validator" => {
                    str_at(value, &p)?;
                    self.leave_out(&p, "the default request validator is not imported: ringgate does not validate requests");
                }
                "x-amazon-apigateway-cors" => {
                    let keys = keys_of(value, &p, "the CORS configuration")?;
                    self.leave_out(
                        &p,
                        format!(
                            "CORS ({}) is not imported: ringgate neither answers preflight \
                             requests nor adds CORS headers by itself; an OPTIONS mock route \
                             with the headers answers preflights",
                            keys
                        ),
                    );
                }
                "x-amazon-apigateway-importexport-version" | "x-ringgate-stages" => {}
                "x-amazon-apigateway-policy" => self.leave_out(
                    &p,
                    "the resource policy is not imported: ringgate does not restrict by it who \
                     may call the API (review before exposing it)",
                ),
                k if k.starts_with("x-amazon-apigateway-") => {
                    self.leave_out(&p, format!("extension {k} is not imported"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn read_paths(&mut self) -> Result<(), ImportError> {
        let Some(paths) = self.root.get("paths") else {
            return Err(ImportError::at("", "the document has no \"paths\""));
        };
        let paths = obj(paths, "/paths", "paths")?;
        let mut operations = 0usize;
        for (path, item) in paths {
            let pp = child("/paths", path);
            let item = obj(item, &pp, "a path item")?;
            // An HTTP API's default route: "/$default" in its exports
            // (with isDefaultRoute), "$default" in some documents.
            let is_default = path == "$default" || path == "/$default";
            if !is_default && !path.starts_with('/') {
                if path.starts_with("x-") {
                    continue; // an extension of the paths object
                }
                self.leave_out(&pp, format!("path {path:?} does not start with '/'"));
                continue;
            }
            for (key, op) in item {
                let method = match key.as_str() {
                    "get" | "put" | "post" | "delete" | "options" | "head" | "patch" => {
                        key.to_ascii_uppercase()
                    }
                    "x-amazon-apigateway-any-method" => "ANY".to_string(),
                    "trace" => {
                        self.leave_out(&child(&pp, key), "TRACE is not a method ringgate routes");
                        continue;
                    }
                    "$ref" => {
                        self.leave_out(&child(&pp, key), "a path item $ref is not followed");
                        continue;
                    }
                    _ => continue, // parameters, summary, servers, extensions
                };
                operations += 1;
                if operations > MAX_OPERATIONS {
                    return Err(ImportError::at(
                        &pp,
                        format!("more than {MAX_OPERATIONS} operations"),
                    ));
                }
                let op_ptr = child(&pp, key);
                let op = obj(op, &op_ptr, "an operation")?;
                let route_key = if is_default {
                    if method != "ANY" {
                        self.leave_out(
                            &op_ptr,
                            "the $default route takes every method: only x-amazon-apigateway-any-method is imported under it",
                        );
                        continue;
                    }
                    "$default".to_string()
                } else {
                    format!("{method} {path}")
                };
                if let Some(route) = self.operation(&route_key, path, &method, op, &op_ptr)? {
                    self.routes.push(route);
                }
            }
        }
        Ok(())
    }

    /// One operation; `None` when it is left out (a note says why).
    fn operation(
        &mut self,
        key: &str,
        path: &str,
        method: &str,
        op: &'d Map<String, Value>,
        ptr: &str,
    ) -> Result<Option<Route>, ImportError> {
        let params = route_params(path);
        // Extensions of the operation other than the integration.
        for (k, v) in op {
            let p = child(ptr, k);
            match k.as_str() {
                "x-amazon-apigateway-integration"
                | "x-ringgate-client-throttle"
                | "x-amazon-apigateway-auth" => {}
                "x-amazon-apigateway-request-validator" => {
                    str_at(v, &p)?;
                    self.leave_out(&p, format!("{key}: request validation is not done"));
                }
                k if k.starts_with("x-amazon-apigateway-") => {
                    self.leave_out(&p, format!("{key}: extension {k} is not imported"));
                }
                _ => {}
            }
        }
        if let Some(auth) = op.get("x-amazon-apigateway-auth") {
            let ap = child(ptr, "x-amazon-apigateway-auth");
            let kind = opt_str(obj(auth, &ap, "x-amazon-apigateway-auth")?, "type", &ap)?
                .unwrap_or("NONE");
            if !kind.eq_ignore_ascii_case("NONE") {
                self.leave_out(
                    &ap,
                    format!(
                        "{key}: it requires {kind} authorization, which ringgate does not \
                         support; the route is left out rather than served unprotected"
                    ),
                );
                return Ok(None);
            }
        }
        let api_key_required = match self.security_of(op, ptr)? {
            Ok(required) => required,
            Err(why) => {
                self.leave_out(
                    ptr,
                    format!("{key}: {why}; the route is left out rather than served unprotected"),
                );
                return Ok(None);
            }
        };
        let Some(integration) = op.get("x-amazon-apigateway-integration") else {
            self.leave_out(ptr, format!("{key}: no x-amazon-apigateway-integration"));
            return Ok(None);
        };
        let mut ip = child(ptr, "x-amazon-apigateway-integration");
        let mut integ = obj(integration, &ip, "the integration")?;
        // An HTTP API's shared integration:
        // {"$ref": "#/components/x-amazon-apigateway-integrations/NAME"}.
        if let Some(r) = integ.get("$ref") {
            let rp = child(&ip, "$ref");
            let target = str_at(r, &rp)?
                .strip_prefix('#')
                .filter(|t| t.is_empty() || t.starts_with('/'))
                .ok_or_else(|| {
                    ImportError::at(
                        &rp,
                        "only references inside the document (\"#/…\") are followed",
                    )
                })?;
            let found = self.resolve(target).ok_or_else(|| {
                ImportError::at(&rp, format!("{target:?} is not in the document"))
            })?;
            ip = target.to_string();
            integ = obj(found, &ip, "the referenced integration")?;
        }
        let Some(kind) = integ.get("type") else {
            return Err(ImportError::at(&ip, "the integration has no \"type\""));
        };
        let kind = str_at(kind, &child(&ip, "type"))?.to_ascii_lowercase();
        let mut comments = Vec::new();
        let integration = match kind.as_str() {
            "http_proxy" | "http" => {
                if let Some(c) = opt_str(integ, "connectionType", &ip)? {
                    if c != "INTERNET" {
                        self.leave_out(
                            &child(&ip, "connectionType"),
                            format!("{key}: connectionType {c} (a VPC link) is not supported"),
                        );
                        return Ok(None);
                    }
                }
                match self.proxy(
                    key,
                    method,
                    &params,
                    integ,
                    &ip,
                    kind == "http",
                    &mut comments,
                )? {
                    Some(i) => i,
                    None => return Ok(None),
                }
            }
            "mock" => match self.mock(key, &params, integ, &ip, &mut comments)? {
                Some(i) => i,
                None => return Ok(None),
            },
            "aws_proxy" => {
                self.leave_out(
                    &ip,
                    format!("{key}: a Lambda proxy integration (aws_proxy) is not supported"),
                );
                return Ok(None);
            }
            "aws" => {
                self.leave_out(
                    &ip,
                    format!("{key}: an AWS service or Lambda integration (aws) is not supported"),
                );
                return Ok(None);
            }
            other => {
                self.leave_out(
                    &child(&ip, "type"),
                    format!("{key}: integration type {other:?} is not supported"),
                );
                return Ok(None);
            }
        };
        let cache = self.cache(key, &params, integ, &ip)?;
        let client_throttle = match op.get("x-ringgate-client-throttle") {
            None => None,
            Some(v) => {
                let tp = child(ptr, "x-ringgate-client-throttle");
                let t = obj(v, &tp, "x-ringgate-client-throttle")?;
                let rate = t
                    .get("rate")
                    .and_then(Value::as_f64)
                    .filter(|r| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| {
                        ImportError::at(
                            &child(&tp, "rate"),
                            "expected a rate (requests per second, 0 or more)",
                        )
                    })?;
                let burst = t
                    .get("burst")
                    .and_then(Value::as_u64)
                    .filter(|b| *b <= u64::from(u32::MAX))
                    .ok_or_else(|| {
                        ImportError::at(&child(&tp, "burst"), "expected a burst (a whole number)")
                    })?;
                Some((rate, burst))
            }
        };
        for c in &comments {
            self.approx(ptr, format!("{key}: {c}"));
        }
        Ok(Some(Route {
            key: key.to_string(),
            pointer: ptr.to_string(),
            api_key_required,
            integration,
            cache,
            client_throttle,
            comments,
        }))
    }

    /// The value at a JSON pointer of the document.
    fn resolve(&self, pointer: &str) -> Option<&'d Value> {
        let mut tokens = pointer.split('/').skip(1);
        let first = tokens.next()?.replace("~1", "/").replace("~0", "~");
        let mut v = self.root.get(&first)?;
        for t in tokens {
            let t = t.replace("~1", "/").replace("~0", "~");
            v = match v {
                Value::Object(m) => m.get(&t)?,
                Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// `Ok(Ok(true))`: an API key is required; `Ok(Err(why))`: protected
    /// by something ringgate does not have.
    fn security_of(
        &self,
        op: &'d Map<String, Value>,
        ptr: &str,
    ) -> Result<Result<bool, String>, ImportError> {
        let (value, sp) = match op.get("security") {
            Some(v) => (v, child(ptr, "security")),
            None => match &self.security {
                Some((v, p)) => (*v, p.clone()),
                None => return Ok(Ok(false)),
            },
        };
        let alternatives = array_at(value, &sp)?;
        if alternatives.is_empty() {
            return Ok(Ok(false));
        }
        let mut all_key = true;
        for (i, alt) in alternatives.iter().enumerate() {
            let ap = child(&sp, &i.to_string());
            let alt = obj(alt, &ap, "a security requirement")?;
            if alt.is_empty() {
                // {} among the alternatives: anonymous access is allowed.
                return Ok(Ok(false));
            }
            for name in alt.keys() {
                match self.schemes.get(name) {
                    Some(Scheme::ApiKey) => {}
                    Some(Scheme::Other(what)) => {
                        return Ok(Err(format!(
                            "it is protected by {what}, which ringgate does not support"
                        )));
                    }
                    None => {
                        return Ok(Err(format!(
                            "its security names {name:?}, which no security scheme defines"
                        )));
                    }
                }
            }
            all_key &= !alt.is_empty();
        }
        Ok(Ok(all_key))
    }

    #[allow(clippy::too_many_arguments)]
    fn proxy(
        &mut self,
        key: &str,
        method: &str,
        params: &[String],
        integ: &'d Map<String, Value>,
        ip: &str,
        plain_http: bool,
        comments: &mut Vec<String>,
    ) -> Result<Option<Integration>, ImportError> {
        let Some(uri) = opt_str(integ, "uri", ip)? else {
            return Err(ImportError::at(ip, "an http integration needs a \"uri\""));
        };
        let up = child(ip, "uri");
        let (tls, rest) = if let Some(r) = strip_prefix_ci(uri, "http://") {
            (false, r)
        } else if let Some(r) = strip_prefix_ci(uri, "https://") {
            (true, r)
        } else {
            self.leave_out(
                &up,
                format!("{key}: uri {uri:?} is not an http or https URL"),
            );
            return Ok(None);
        };
        let rest = match rest.find('#') {
            Some(i) => &rest[..i],
            None => rest,
        };
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty() {
            self.leave_out(&up, format!("{key}: uri {uri:?} has no host"));
            return Ok(None);
        }
        let group = opt_str(integ, "x-ringgate-upstream", ip)?;
        if let Some(g) = group {
            if !api_name_ok(g) {
                return Err(ImportError::at(
                    &child(ip, "x-ringgate-upstream"),
                    "an upstream name is [A-Za-z0-9_-]{1,64}",
                ));
            }
        }
        let authority = if let Some(g) = group {
            g.to_string()
        } else if authority.contains("${stageVariables.") {
            let whole = authority
                .strip_prefix("${stageVariables.")
                .and_then(|r| r.strip_suffix('}'))
                .filter(|n| !n.contains(['}', '$']));
            match whole {
                Some(var) => {
                    self.authority_vars.insert(var.to_string(), tls);
                    authority.to_string()
                }
                None if !authority.contains(':') => {
                    format!("{authority}:{}", if tls { 443 } else { 80 })
                }
                None => authority.to_string(),
            }
        } else if has_port(authority) {
            authority.to_string()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };

        // requestParameters: what fills the uri's placeholders, and what
        // the query gets.
        let mut fill: BTreeMap<String, String> = BTreeMap::new();
        let mut query_add: Vec<String> = Vec::new();
        if let Some(rp) = integ.get("requestParameters") {
            let rpp = child(ip, "requestParameters");
            for (target, source) in obj(rp, &rpp, "the request parameters")? {
                let tp = child(&rpp, target);
                let source = str_at(source, &tp)?;
                let from = Source::parse(source, params);
                if let Some(name) = target.strip_prefix("integration.request.path.") {
                    match from.text() {
                        Some(text) => {
                            fill.insert(name.to_string(), text);
                        }
                        None => {
                            self.leave_out(
                                &tp,
                                format!(
                                    "{key}: the uri's {{{name}}} from {source} is not supported (path \
                                     parameters, literals and stage variables are); the route is left out"
                                ),
                            );
                            return Ok(None);
                        }
                    }
                } else if let Some(name) = target.strip_prefix("integration.request.querystring.") {
                    match &from {
                        Source::Query(q) if q == name => {} // a proxy passes the query on
                        _ => match from.text() {
                            Some(text) => query_add.push(format!("{}={text}", encode(name))),
                            None => self.leave_out(
                                &tp,
                                format!(
                                    "{key}: query parameter {name:?} from {source} is not sent \
                                     (the client's query string is passed on as it is)"
                                ),
                            ),
                        },
                    }
                } else if let Some(name) = target.strip_prefix("integration.request.header.") {
                    match &from {
                        Source::Header(h) if h.eq_ignore_ascii_case(name) => {}
                        _ => self.leave_out(
                            &tp,
                            format!(
                                "{key}: header {name:?} from {source} is not set (the client's \
                                 headers are passed on as they are)"
                            ),
                        ),
                    }
                } else {
                    self.leave_out(
                        &tp,
                        format!("{key}: request parameter {target} is not supported"),
                    );
                }
            }
        }
        // The path and query, placeholders filled.
        let mut out_tail = String::with_capacity(tail.len());
        let mut rest = tail;
        while let Some(i) = rest.find('{') {
            let (before, after) = rest.split_at(i);
            out_tail.push_str(before);
            if before.ends_with('$') {
                // ${stageVariables.x}: copied as it is.
                let end = after.find('}').map_or(after.len(), |e| e + 1);
                out_tail.push_str(&after[..end]);
                rest = &after[end..];
                continue;
            }
            let Some(end) = after.find('}') else {
                out_tail.push_str(after);
                rest = "";
                break;
            };
            let name = &after[1..end];
            let bare = name.strip_suffix('+').unwrap_or(name);
            if let Some(text) = fill.get(bare) {
                out_tail.push_str(text);
            } else if params.iter().any(|p| p == bare) {
                out_tail.push('{');
                out_tail.push_str(bare);
                out_tail.push('}');
            } else {
                self.leave_out(
                    &up,
                    format!(
                        "{key}: the uri's {{{bare}}} is not mapped from a path parameter \
                         (requestParameters integration.request.path.{bare}); the route is left out"
                    ),
                );
                return Ok(None);
            }
            rest = &after[end + 1..];
        }
        out_tail.push_str(rest);
        if !query_add.is_empty() {
            out_tail.push(if out_tail.contains('?') { '&' } else { '?' });
            out_tail.push_str(&query_add.join("&"));
        }
        let uri = format!(
            "{}://{authority}{out_tail}",
            if tls { "https" } else { "http" }
        );

        let timeout_ms = match integ.get("timeoutInMillis") {
            None => None,
            Some(v) => {
                let tp = child(ip, "timeoutInMillis");
                let ms = v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| {
                        ImportError::at(&tp, "expected a whole number of milliseconds")
                    })?;
                let clamped = ms.clamp(MIN_TIMEOUT_MS, MAX_TIMEOUT_MS);
                if clamped != ms {
                    comments.push(format!(
                        "timeoutInMillis {ms} is outside ringgate's 50 ms to 29 s: {clamped} ms"
                    ));
                }
                (clamped != MAX_TIMEOUT_MS).then_some(clamped)
            }
        };
        if let Some(hm) = opt_str(integ, "httpMethod", ip)? {
            if !hm.eq_ignore_ascii_case(method)
                && !hm.eq_ignore_ascii_case("ANY")
                && method != "ANY"
            {
                comments.push(format!(
                    "the backend is called with the client's method, not httpMethod {hm}"
                ));
            }
        }
        if plain_http {
            // Headers the integration responses add (CORS, typically):
            // ringgate's proxy passes the backend's headers as they are.
            let mut added = BTreeSet::new();
            if let Some(rs) = integ.get("responses") {
                let rsp = child(ip, "responses");
                for (pattern, r) in obj(rs, &rsp, "the integration responses")? {
                    let r = obj(r, &child(&rsp, pattern), "an integration response")?;
                    if let Some(rp) = r.get("responseParameters") {
                        let pp = child(&child(&rsp, pattern), "responseParameters");
                        for target in obj(rp, &pp, "the response parameters")?.keys() {
                            if let Some(h) = target.strip_prefix("method.response.header.") {
                                added.insert(h.to_string());
                            }
                        }
                    }
                }
            }
            if !added.is_empty() {
                self.leave_out(
                    &child(ip, "responses"),
                    format!(
                        "{key}: the integration response headers ({}) are not added: the \
                         backend's response passes through as it is",
                        added.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
            comments.push(
                "an \"http\" (non-proxy) integration, imported as http_proxy: the request and \
                 the response pass through unchanged (mapping templates are not applied)"
                    .to_string(),
            );
        }
        if let Some(c) = opt_str(integ, "contentHandling", ip)? {
            comments.push(format!(
                "contentHandling {c}: bodies pass through as bytes, unconverted"
            ));
        }
        let preserve_host = opt_bool(integ, "x-ringgate-preserve-host", ip)?.unwrap_or(false);
        let allow_upgrade = opt_bool(integ, "x-ringgate-allow-upgrade", ip)?.unwrap_or(false);
        Ok(Some(Integration::Proxy {
            uri,
            timeout_ms,
            preserve_host,
            allow_upgrade,
        }))
    }

    fn mock(
        &mut self,
        key: &str,
        params: &[String],
        integ: &'d Map<String, Value>,
        ip: &str,
        comments: &mut Vec<String>,
    ) -> Result<Option<Integration>, ImportError> {
        // The integration status the request template chooses.
        let mut status = 200u16;
        if let Some(rt) = integ.get("requestTemplates") {
            let rtp = child(ip, "requestTemplates");
            let templates = obj(rt, &rtp, "the request templates")?;
            let chosen = templates
                .get("application/json")
                .map(|v| (v, "application/json"))
                .or_else(|| templates.iter().next().map(|(k, v)| (v, k.as_str())));
            if let Some((t, ct)) = chosen {
                let t = str_at(t, &child(&rtp, ct))?;
                match STATUS_CODE
                    .captures(t)
                    .and_then(|c| c[1].parse::<u16>().ok())
                {
                    Some(s) => status = s,
                    None if t.trim().is_empty() => {}
                    None => comments.push(format!(
                        "the request template does not give a literal statusCode: {status} is used"
                    )),
                }
                if t.contains('#') || t.contains("$input") {
                    comments.push("the request template's VTL is not evaluated".to_string());
                }
            }
        }
        let status_text = status.to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut body = String::new();
        let mut answer = status;
        if let Some(rs) = integ.get("responses") {
            let rsp = child(ip, "responses");
            let responses = obj(rs, &rsp, "the integration responses")?;
            let mut chosen = None;
            for (pattern, r) in responses {
                if pattern == "default" {
                    continue;
                }
                match selection_matches(pattern, &status_text) {
                    Some(true) => {
                        chosen = Some((pattern, r));
                        break;
                    }
                    Some(false) => {}
                    None => self.approx(
                        &child(&rsp, pattern),
                        format!("{key}: selection pattern {pattern:?} is not a regex ringgate reads; skipped"),
                    ),
                }
            }
            let chosen = chosen.or_else(|| responses.get_key_value("default"));
            if let Some((pattern, r)) = chosen {
                let p = child(&rsp, pattern);
                let r = obj(r, &p, "an integration response")?;
                if let Some(sc) = r.get("statusCode") {
                    let scp = child(&p, "statusCode");
                    let code = sc
                        .as_u64()
                        .or_else(|| sc.as_str().and_then(|s| s.parse().ok()))
                        .ok_or_else(|| ImportError::at(&scp, "expected a status code"))?;
                    if !(200..=599).contains(&code) {
                        self.leave_out(
                            &scp,
                            format!("{key}: a mock answers 200 to 599, not {code}"),
                        );
                        return Ok(None);
                    }
                    answer = code as u16;
                }
                if let Some(params_v) = r.get("responseParameters") {
                    let pp = child(&p, "responseParameters");
                    for (target, source) in obj(params_v, &pp, "the response parameters")? {
                        let tp = child(&pp, target);
                        let source = str_at(source, &tp)?;
                        let Some(name) = target.strip_prefix("method.response.header.") else {
                            self.leave_out(
                                &tp,
                                format!("{key}: response parameter {target} is not supported"),
                            );
                            continue;
                        };
                        let lower = name.to_ascii_lowercase();
                        let literal = source.strip_prefix('\'').and_then(|s| s.strip_suffix('\''));
                        let Some(value) = literal else {
                            self.leave_out(
                                &tp,
                                format!("{key}: header {name} from {source} is not set (only literal values are)"),
                            );
                            continue;
                        };
                        if config::MOCK_RESERVED_HEADERS.contains(&lower.as_str()) {
                            self.leave_out(
                                &tp,
                                format!("{key}: header {name} is the gateway's own; a mock cannot set it"),
                            );
                            continue;
                        }
                        if http::HeaderName::from_bytes(lower.as_bytes()).is_err()
                            || http::HeaderValue::from_str(value).is_err()
                            || headers.iter().any(|(n, _)| *n == lower)
                        {
                            self.leave_out(&tp, format!("{key}: header {name:?} = {value:?} is not a valid header, or a repeated one"));
                            continue;
                        }
                        headers.push((lower, value.to_string()));
                    }
                }
                if let Some(t) = r.get("responseTemplates") {
                    let tp = child(&p, "responseTemplates");
                    let templates = obj(t, &tp, "the response templates")?;
                    let ct = headers
                        .iter()
                        .find(|(n, _)| n == "content-type")
                        .map(|(_, v)| v.clone());
                    let pick = ct
                        .as_deref()
                        .and_then(|ct| templates.iter().find(|(k, _)| k.eq_ignore_ascii_case(ct)))
                        .or_else(|| templates.get_key_value("application/json"))
                        .or_else(|| templates.iter().next());
                    if let Some((content_type, template)) = pick {
                        let text = match template {
                            Value::Null => "",
                            v => str_at(v, &child(&tp, content_type))?,
                        };
                        if templates.len() > 1 {
                            comments.push(format!(
                                "of the response templates, the {content_type} one is served to every client"
                            ));
                        }
                        let (converted, vtl_left) = convert_vtl(text, params);
                        if vtl_left {
                            comments.push(
                                "the response template's VTL ($input, $context, $util, #set, #if…) \
                                 is served as text, not evaluated"
                                    .to_string(),
                            );
                        }
                        body = converted;
                        let keep_bare =
                            opt_bool(r, "x-ringgate-no-content-type", &p)? == Some(true);
                        if ct.is_none()
                            && !keep_bare
                            && !text.is_empty()
                            && http::HeaderValue::from_str(content_type).is_ok()
                        {
                            headers.push(("content-type".to_string(), content_type.to_string()));
                        }
                    }
                }
            }
        }
        headers.sort();
        Ok(Some(Integration::Mock {
            status: answer,
            headers,
            body,
        }))
    }

    fn cache(
        &mut self,
        key: &str,
        params: &[String],
        integ: &'d Map<String, Value>,
        ip: &str,
    ) -> Result<Option<RouteCache>, ImportError> {
        let mut cache = RouteCache::default();
        let mut any = false;
        if let Some(v) = integ.get("cacheKeyParameters") {
            let cp = child(ip, "cacheKeyParameters");
            for (i, p) in strings_at(v, &cp)?.into_iter().enumerate() {
                let pp = child(&cp, &i.to_string());
                let entry = if let Some(q) = p
                    .strip_prefix("method.request.querystring.")
                    .or_else(|| p.strip_prefix("method.request.multivaluequerystring."))
                {
                    is_token(q).then(|| format!("querystring.{q}"))
                } else if let Some(h) = p
                    .strip_prefix("method.request.header.")
                    .or_else(|| p.strip_prefix("method.request.multivalueheader."))
                {
                    is_token(h).then(|| format!("header.{}", h.to_ascii_lowercase()))
                } else if let Some(n) = p.strip_prefix("method.request.path.") {
                    params.iter().any(|x| x == n).then(|| format!("path.{n}"))
                } else {
                    None
                };
                match entry {
                    Some(e) if !cache.key_parameters.contains(&e) => {
                        cache.key_parameters.push(e);
                        any = true;
                    }
                    Some(_) => {}
                    None => self.leave_out(
                        &pp,
                        format!("{key}: cache key parameter {p:?} is not one ringgate can key on"),
                    ),
                }
            }
        }
        if let Some(ns) = opt_str(integ, "cacheNamespace", ip)? {
            let ok = !ns.is_empty()
                && ns.len() <= 64
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if ok {
                cache.namespace = Some(ns.to_string());
                any = true;
            } else {
                self.leave_out(
                    &child(ip, "cacheNamespace"),
                    format!("{key}: cache namespace {ns:?} is not [A-Za-z0-9_-]{{1,64}}"),
                );
            }
        }
        if let Some(v) = integ.get("x-ringgate-cache") {
            let xp = child(ip, "x-ringgate-cache");
            let x = obj(v, &xp, "x-ringgate-cache")?;
            if let Some(e) = opt_bool(x, "enabled", &xp)? {
                cache.enabled = Some(e);
                any = true;
            }
            if let Some(t) = x.get("ttl_seconds") {
                let ttl = t.as_u64().filter(|t| *t <= 3600).ok_or_else(|| {
                    ImportError::at(&child(&xp, "ttl_seconds"), "expected 0 to 3600")
                })?;
                cache.ttl_seconds = Some(ttl);
                any = true;
            }
            if opt_bool(x, "whole_query", &xp)? == Some(true)
                && !cache
                    .key_parameters
                    .iter()
                    .any(|k| k.starts_with("querystring."))
            {
                cache.key_parameters.push("querystring.*".to_string());
                any = true;
            }
        }
        Ok(any.then_some(cache))
    }

    /// The stages to write, with their variables.
    fn stages(&mut self, options: &ImportOptions) -> Result<Stages, ImportError> {
        let mut stages: Stages = if !options.stages.is_empty() {
            options.stages.clone()
        } else if let Some(v) = self.root.get("x-ringgate-stages") {
            let p = "/x-ringgate-stages";
            let mut out = Vec::new();
            for (i, s) in array_at(v, p)?.iter().enumerate() {
                let sp = child(p, &i.to_string());
                let s = obj(s, &sp, "a stage")?;
                let name = opt_str(s, "name", &sp)?
                    .ok_or_else(|| ImportError::at(&sp, "a stage needs a \"name\""))?;
                if name != "$default" && !stage_name_ok(name) {
                    return Err(ImportError::at(
                        &child(&sp, "name"),
                        format!("stage name {name:?} is not [A-Za-z0-9_-]{{1,128}}"),
                    ));
                }
                let mut vars = BTreeMap::new();
                if let Some(v) = s.get("variables") {
                    let vp = child(&sp, "variables");
                    for (k, val) in obj(v, &vp, "stage variables")? {
                        let kp = child(&vp, k);
                        let val = str_at(val, &kp)?;
                        config::check_stage_variable(k, val)
                            .map_err(|why| ImportError::at(&kp, why))?;
                        vars.insert(k.clone(), val.to_string());
                    }
                }
                if let Some(c) = opt_str(s, "cache_capacity", &sp)? {
                    config::parse_capacity(c)
                        .map_err(|why| ImportError::at(&child(&sp, "cache_capacity"), why))?;
                    let written = if name == "$default" { "default" } else { name };
                    self.stage_caches.insert(written.to_string(), c.to_string());
                }
                out.push((name.to_string(), vars));
            }
            out
        } else {
            let base = self.base_path()?;
            let name = match base.as_deref() {
                Some(b) if stage_name_ok(b) => b.to_string(),
                Some("") | None if self.http_api => "$default".to_string(),
                Some(b) => {
                    if !b.is_empty() {
                        self.approx(
                            "",
                            format!("base path {b:?} is not a stage name: the stage is \"prod\""),
                        );
                    }
                    "prod".to_string()
                }
                None => "prod".to_string(),
            };
            vec![(name, BTreeMap::new())]
        };
        for (_, vars) in &mut stages {
            for (k, v) in &options.variables {
                vars.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        // A variable that is a whole uri authority needs a port, unless
        // it names an upstream group (the gateway's, or one the document
        // brings in x-ringgate-upstreams).
        let groups: Vec<&str> = self
            .root
            .get("x-ringgate-upstreams")
            .and_then(Value::as_object)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let is_group =
            |v: &str| groups.contains(&v) || options.upstreams.iter().any(|(n, _)| n == v);
        for (name, vars) in &mut stages {
            for (var, tls) in &self.authority_vars {
                if let Some(v) = vars.get_mut(var) {
                    if !v.is_empty() && !has_port(v) && !v.contains('$') && !is_group(v) {
                        let port = if *tls { 443 } else { 80 };
                        self.approximated.push(note(
                            "",
                            format!(
                                "stage {name}: variable {var} = {v:?} is a uri's host: written as \
                                 {v}:{port}, since ringgate needs the port"
                            ),
                        ));
                        v.push_str(&format!(":{port}"));
                    }
                }
            }
        }
        Ok(stages)
    }

    /// The base path the document gives: `servers[0]`'s path (with its
    /// `basePath` variable's default), or Swagger's `basePath`; without
    /// slashes.
    fn base_path(&self) -> Result<Option<String>, ImportError> {
        if let Some(b) = self.root.get("basePath") {
            return Ok(Some(str_at(b, "/basePath")?.trim_matches('/').to_string()));
        }
        let Some(servers) = self.root.get("servers") else {
            return Ok(None);
        };
        let servers = array_at(servers, "/servers")?;
        let Some(first) = servers.first() else {
            return Ok(None);
        };
        let s = obj(first, "/servers/0", "a server")?;
        let Some(url) = opt_str(s, "url", "/servers/0")? else {
            return Ok(None);
        };
        let mut url = url.to_string();
        if let Some(vars) = s.get("variables") {
            let vp = "/servers/0/variables";
            for (k, v) in obj(vars, vp, "server variables")? {
                let kp = child(vp, k);
                let v = obj(v, &kp, "a server variable")?;
                if let Some(d) = opt_str(v, "default", &kp)? {
                    url = url.replace(&format!("{{{k}}}"), d);
                }
            }
        }
        let path = match url.find("://") {
            Some(i) => {
                let after = &url[i + 3..];
                after.find('/').map_or("", |j| &after[j..])
            }
            None => url.as_str(),
        };
        Ok(Some(path.trim_matches('/').to_string()))
    }

    /// The host of `servers[0]` (or Swagger's `host`), lower case, when
    /// it is a plain DNS name.
    fn server_host(&self) -> Result<Option<String>, ImportError> {
        let host = if let Some(h) = self.root.get("host") {
            Some(str_at(h, "/host")?.to_string())
        } else {
            match self.root.get("servers") {
                Some(v) => match array_at(v, "/servers")?.first() {
                    Some(first) => {
                        let s = obj(first, "/servers/0", "a server")?;
                        opt_str(s, "url", "/servers/0")?
                            .and_then(|u| u.split_once("://"))
                            .map(|(_, rest)| {
                                rest.split(['/', ':']).next().unwrap_or("").to_string()
                            })
                    }
                    None => None,
                },
                None => None,
            }
        };
        Ok(host.map(|h| h.to_ascii_lowercase()).filter(|h| {
            !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }))
    }

    fn finish(
        mut self,
        api: String,
        stages: Stages,
        options: &ImportOptions,
    ) -> Result<Imported, ImportError> {
        if !api_name_ok(&api) {
            return Err(ImportError::at(
                "",
                format!("api name {api:?} is not [A-Za-z0-9_-]{{1,64}}: give --api NAME"),
            ));
        }
        let mut written = Vec::new();
        let mut root_stage = None;
        for (name, vars) in stages {
            let name = if name == "$default" {
                if options.root_domain {
                    root_stage = Some("default".to_string());
                }
                "default".to_string()
            } else {
                name
            };
            if !stage_name_ok(&name) {
                return Err(ImportError::at(
                    "",
                    format!("stage name {name:?} is not [A-Za-z0-9_-]{{1,128}}"),
                ));
            }
            written.push((name, vars));
        }
        // A stage variable a mock body uses and no stage defines is empty,
        // as API Gateway substitutes an undefined one (ringgate's values
        // are never empty).
        let mut undefined = BTreeSet::new();
        for r in &self.routes {
            if let Integration::Mock { body, .. } = &r.integration {
                for v in stage_variables(body) {
                    if written.iter().all(|(_, vars)| !vars.contains_key(&v)) {
                        undefined.insert(v);
                    }
                }
            }
        }
        for v in &undefined {
            self.approximated.push(note(
                "",
                format!(
                    "stage variable {v} is used by a mock body and given by no stage: it is \
                     written as empty text, as API Gateway substitutes it (give --variable {v}=VALUE)"
                ),
            ));
            let pattern = format!("${{stageVariables.{v}}}");
            for r in &mut self.routes {
                if let Integration::Mock { body, .. } = &mut r.integration {
                    *body = body.replace(&pattern, "");
                }
            }
        }
        let hosts = if let Some(h) = self.root.get("x-ringgate-hosts") {
            strings_at(h, "/x-ringgate-hosts")?
                .into_iter()
                .map(str::to_string)
                .collect()
        } else if root_stage.is_some() {
            let host = self
                .server_host()?
                .unwrap_or_else(|| format!("{api}.invalid"));
            vec![host]
        } else {
            Vec::new()
        };
        let mut groups = Vec::new();
        if let Some(g) = self.root.get("x-ringgate-upstreams") {
            let gp = "/x-ringgate-upstreams";
            for (name, spec) in obj(g, gp, "x-ringgate-upstreams")? {
                let p = child(gp, name);
                let spec = obj(spec, &p, "an upstream")?;
                let targets: Vec<String> = match spec.get("targets") {
                    Some(t) => strings_at(t, &child(&p, "targets"))?
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                    None => Vec::new(),
                };
                let tls = opt_bool(spec, "tls", &p)?.unwrap_or(false);
                if options.upstreams.iter().any(|(n, _)| n == name) {
                    continue; // the gateway's own
                }
                self.approximated.push(note(
                    &p,
                    format!(
                        "upstream {name}: its targets are imported; balance, timeouts, health \
                         checks and TLS settings take their defaults"
                    ),
                ));
                groups.push((name.clone(), targets, tls));
            }
        }
        self.routes.sort_by_key(|r| route_order(&r.key));
        // Two paths of the document that ringgate sees as one route.
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut routes = Vec::with_capacity(self.routes.len());
        for r in std::mem::take(&mut self.routes) {
            let shape = route_shape(&r.key);
            if let Some(first) = seen.get(&shape) {
                self.left_out.push(note(
                    &r.pointer,
                    format!(
                        "{}: it is the same route as {first} (parameter names aside)",
                        r.key
                    ),
                ));
                continue;
            }
            seen.insert(shape, r.key.clone());
            routes.push(r);
        }
        let head = Head {
            title: &self.title,
            format: &self.format,
            api: &api,
            http_api: self.http_api,
            hosts: &hosts,
            stages: &written,
            root_stage: root_stage.as_deref(),
            cache_capacity: options.cache_capacity.as_deref(),
            stage_caches: &self.stage_caches,
            upstreams: &options.upstreams,
            groups: &groups,
        };
        // Validate; a route the validator refuses is left out and the
        // file is validated again. After a few refusals, each route is
        // validated alone first, so that a document of many bad routes
        // costs one validation per route, not one of the whole file per
        // route.
        let mut refused = 0usize;
        let config = loop {
            let text = write_toml(&head, &routes, &[], &[]);
            let e = match config::parse(&text, "(import)") {
                Ok(cfg) => match crate::gateway::Snapshot::build(&cfg) {
                    Ok(_) => break cfg,
                    Err(e) => {
                        return Err(ImportError::at(
                            "",
                            format!("the imported configuration does not compile: {e}"),
                        ))
                    }
                },
                Err(e) => e,
            };
            let Some(i) = route_index(&e.key).filter(|i| *i < routes.len()) else {
                return Err(ImportError::at(
                    "",
                    format!("the imported configuration does not validate: {e}"),
                ));
            };
            let r = routes.remove(i);
            self.left_out.push(note(
                &r.pointer,
                format!("{}: {} ({})", r.key, e.problem, e.fix),
            ));
            refused += 1;
            if refused == ALONE_AFTER {
                let mut kept = Vec::with_capacity(routes.len());
                for r in routes {
                    let alone = write_toml(&head, std::slice::from_ref(&r), &[], &[]);
                    match config::parse(&alone, "(import)") {
                        Err(e) if route_index(&e.key).is_some() => self.left_out.push(note(
                            &r.pointer,
                            format!("{}: {} ({})", r.key, e.problem, e.fix),
                        )),
                        _ => kept.push(r),
                    }
                }
                routes = kept;
            }
        };
        let summary = Summary {
            title: self.title.clone(),
            format: self.format.clone(),
            api: api.clone(),
            stages: written.iter().map(|(n, _)| n.clone()).collect(),
            routes: routes.len(),
            http_proxy: routes
                .iter()
                .filter(|r| matches!(r.integration, Integration::Proxy { .. }))
                .count(),
            mock: routes
                .iter()
                .filter(|r| matches!(r.integration, Integration::Mock { .. }))
                .count(),
            approximated: self.approximated,
            left_out: self.left_out,
        };
        let toml = write_toml(&head, &routes, &summary.approximated, &summary.left_out);
        Ok(Imported {
            toml,
            config,
            summary,
        })
    }
}

// --- small pieces ---------------------------------------------------------

/// `api[0].route[N]…` → N.
fn route_index(key: &str) -> Option<usize> {
    let rest = key.strip_prefix("api[0].route[")?;
    rest[..rest.find(']')?].parse().ok()
}

/// Sort order: by path, then method (ANY last), `$default` last of all.
fn route_order(key: &str) -> (u8, String, u8) {
    if key == "$default" {
        return (1, String::new(), 0);
    }
    let (method, path) = key.split_once(' ').unwrap_or((key, ""));
    let m = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "ANY",
    ]
    .iter()
    .position(|x| *x == method)
    .unwrap_or(8) as u8;
    (0, path.to_string(), m)
}

/// The route with parameter names erased: two routes of one shape conflict.
fn route_shape(key: &str) -> String {
    key.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with("+}") {
                "{+}"
            } else if seg.starts_with('{') && seg.ends_with('}') {
                "{}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The path parameters of a document path (`{proxy+}` as `proxy`).
fn route_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|n| n.strip_suffix('+').unwrap_or(n).to_string())
        .collect()
}

/// Where a request parameter mapping takes its value from.
enum Source {
    Path(String),
    Query(String),
    Header(String),
    Literal(String),
    StageVariable(String),
    Other,
}

impl Source {
    fn parse(s: &str, params: &[String]) -> Source {
        if let Some(n) = s.strip_prefix("method.request.path.") {
            if params.iter().any(|p| p == n) {
                return Source::Path(n.to_string());
            }
            return Source::Other;
        }
        if let Some(n) = s.strip_prefix("method.request.querystring.") {
            return Source::Query(n.to_string());
        }
        if let Some(n) = s.strip_prefix("method.request.header.") {
            return Source::Header(n.to_string());
        }
        if let Some(n) = s.strip_prefix("stageVariables.") {
            if !n.is_empty()
                && n.len() <= 64
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Source::StageVariable(n.to_string());
            }
            return Source::Other;
        }
        if let Some(lit) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            return Source::Literal(lit.to_string());
        }
        Source::Other
    }

    /// The uri template text that gives this value, when there is one.
    fn text(&self) -> Option<String> {
        match self {
            Source::Path(p) => Some(format!("{{{p}}}")),
            Source::Literal(l) => Some(encode(l)),
            Source::StageVariable(v) => Some(format!("${{stageVariables.{v}}}")),
            _ => None,
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `host:port` or `[v6]:port` (or a stage variable's value so written).
fn has_port(authority: &str) -> bool {
    let after = match authority.rfind(']') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    after
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn stage_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn api_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A title made an API name: as it is when it is one; else lower case, runs of other characters as one
/// `-`, at most 64; `imported` when nothing is left.
fn api_name(title: &str) -> String {
    if api_name_ok(title) {
        return title.to_string();
    }
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    let out: String = out.chars().take(64).collect();
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "imported".to_string()
    } else {
        out
    }
}

static STATUS_CODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#""?statusCode"?\s*:\s*"?(\d{3})\b"#).expect("a valid regex"));

/// Whether an integration response's selection pattern (a Java regex, as
/// API Gateway reads it) matches a status code whole; `None` when the
/// pattern is not one the regex crate reads (or is too large).
fn selection_matches(pattern: &str, status: &str) -> Option<bool> {
    let re = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .ok()?;
    Some(re.is_match(status))
}

static VTL_STAGE_VAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"\$stageVariables(?:\.([A-Za-z0-9_]{1,64})|\[['"]([A-Za-z0-9_]{1,64})['"]\]|\.get\(['"]([A-Za-z0-9_]{1,64})['"]\))"#,
    )
    .expect("a valid regex")
});

static VTL_PARAM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\$input\.params\(\)\.path\.get\(['"]([^'"]{1,128})['"]\)|\$input\.params\(['"]([^'"]{1,128})['"]\)"#)
        .expect("a valid regex")
});

static VTL_LEFT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\$!?\{?(?:input|context|util|method|stageVariables)\b|#(?:set|if|foreach|else|end)\b",
    )
    .expect("a valid regex")
});

/// Converts what a mock body template has that ringgate substitutes too:
/// stage variables and path parameters. Returns the text and whether VTL
/// that ringgate serves as text remains.
fn convert_vtl(text: &str, params: &[String]) -> (String, bool) {
    let step = VTL_STAGE_VAR.replace_all(text, |c: &regex::Captures<'_>| {
        let name = c
            .get(1)
            .or_else(|| c.get(2))
            .or_else(|| c.get(3))
            .map_or("", |m| m.as_str());
        format!("${{stageVariables.{name}}}")
    });
    let step = VTL_PARAM.replace_all(&step, |c: &regex::Captures<'_>| {
        let name = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
        if params.iter().any(|p| p == name) {
            format!("{{{name}}}")
        } else {
            c[0].to_string()
        }
    });
    let out = step.into_owned();
    // ${stageVariables.x} is ringgate's own: not VTL left over.
    let without_vars = out.replace("${stageVariables.", "");
    let left = VTL_LEFT.is_match(&without_vars);
    (out, left)
}

/// The stage variables `${stageVariables.NAME}` a template uses.
fn stage_variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${stageVariables.") {
        let after = &rest[i + "${stageVariables.".len()..];
        match after.find('}') {
            Some(end) => {
                out.push(after[..end].to_string());
                rest = &after[end..];
            }
            None => break,
        }
    }
    out
}

// --- typed access with pointers --------------------------------------------------

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An object's keys, joined with ", ".
fn keys_of(v: &Value, ptr: &str, what: &str) -> Result<String, ImportError> {
    Ok(obj(v, ptr, what)?
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", "))
}

fn obj<'v>(v: &'v Value, ptr: &str, what: &str) -> Result<&'v Map<String, Value>, ImportError> {
    v.as_object().ok_or_else(|| {
        ImportError::at(
            ptr,
            format!("{what} must be an object, not {}", type_name(v)),
        )
    })
}

fn array_at<'v>(v: &'v Value, ptr: &str) -> Result<&'v Vec<Value>, ImportError> {
    v.as_array()
        .ok_or_else(|| ImportError::at(ptr, format!("expected an array, not {}", type_name(v))))
}

fn str_at<'v>(v: &'v Value, ptr: &str) -> Result<&'v str, ImportError> {
    v.as_str()
        .ok_or_else(|| ImportError::at(ptr, format!("expected a string, not {}", type_name(v))))
}

fn strings_at<'v>(v: &'v Value, ptr: &str) -> Result<Vec<&'v str>, ImportError> {
    array_at(v, ptr)?
        .iter()
        .enumerate()
        .map(|(i, s)| str_at(s, &child(ptr, &i.to_string())))
        .collect()
}

fn opt_str<'v>(
    m: &'v Map<String, Value>,
    key: &str,
    ptr: &str,
) -> Result<Option<&'v str>, ImportError> {
    m.get(key).map(|v| str_at(v, &child(ptr, key))).transpose()
}

fn opt_bool(m: &Map<String, Value>, key: &str, ptr: &str) -> Result<Option<bool>, ImportError> {
    m.get(key)
        .map(|v| {
            v.as_bool().ok_or_else(|| {
                ImportError::at(
                    &child(ptr, key),
                    format!("expected a boolean, not {}", type_name(v)),
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests;
