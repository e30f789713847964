//! The request pipeline and the immutable [`Snapshot`] it reads.
//!
//! A [`Snapshot`] is compiled once from a validated [`Config`]: for each API
//! a [`RouteTable`], its stages with stage variables already substituted
//! into every mock body, and the host + base-path mapping table. Workers
//! share it behind an `Arc` and never lock it.
//!
//! How a request finds its API, stage and route ([`Snapshot::resolve`]):
//! 1. A `[[domain]]` whose host equals the request's `Host` (port ignored,
//!    case-insensitive), else the `*` domain: the mapping with the longest
//!    base path that is a whole-segment prefix of the path wins (SPEC §7.3);
//!    the base path is stripped. No mapping matches: 403 `Forbidden`.
//! 2. Otherwise the API whose `hosts` lists the host, else the API with no
//!    `hosts`: the first path segment names the stage (`/{stage}/…`) and is
//!    stripped. Unknown stage, or no API: 403 `Forbidden`.
//! 3. The API's route table matches method and path (SPEC §7.1/§7.2); no
//!    match gives 403 `Missing Authentication Token`, or 404 `Not Found`
//!    where the API sets `unmatched_route = "not_found"`. A `HEAD` with no
//!    route of its own is answered by the `GET` route, without a body.
//!
//! Hot-path cost: a few string comparisons to find the stage, one route
//! lookup, and the mock response copied into the connection's buffer with
//! `{param}` values spliced in. Nothing is allocated.

pub mod request_id;
pub mod response;

use std::sync::Arc;

use crate::config::{BodyPart, Config, Integration, RouteKey, UnmatchedRoute};
use crate::http::response::{
    write_common_headers, write_content_length, write_status_line, ConnectionHeader,
};
use crate::router::{
    Method, MethodSpec, Params, RouteError, RouteId, RouteTable, RouteTableBuilder,
};

pub use response::GatewayError;

/// An error compiling a configuration into a [`Snapshot`].
#[derive(Debug)]
pub struct BuildError {
    /// The configuration file.
    pub file: String,
    /// The line of the route (0 when unknown).
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for BuildError {}

/// The compiled, immutable gateway definition that workers serve.
#[derive(Debug)]
pub struct Snapshot {
    apis: Vec<Api>,
    /// Exact-host domains, then the `*` domain if any.
    domains: Vec<Domain>,
    wildcard_domain: Option<Domain>,
    /// (host, api index) for APIs that list hosts.
    api_hosts: Vec<(String, usize)>,
    /// The API with no `hosts`, answering any other host.
    default_api: Option<usize>,
}

#[derive(Debug)]
struct Domain {
    host: String,
    /// Longest base path first.
    mappings: Vec<BasePath>,
}

#[derive(Debug)]
struct BasePath {
    /// Without leading or trailing '/'; empty for the (none) mapping.
    path: String,
    api: usize,
    stage: usize,
}

/// One API: its routes and stages.
pub struct Api {
    /// The API's name.
    pub name: String,
    table: RouteTable,
    unmatched: UnmatchedRoute,
    routes: Vec<Route>,
    stages: Vec<Stage>,
}

#[derive(Debug)]
struct Route {
    display: String,
}

#[derive(Debug)]
struct Stage {
    name: String,
    /// One per route, indexed by `RouteId`.
    mocks: Vec<MockResponse>,
}

/// A mock response with the stage's variables already substituted.
#[derive(Debug)]
struct MockResponse {
    status: u16,
    /// Status line.
    status_line: Vec<u8>,
    /// `name: value\r\n` for each configured header.
    headers: Vec<u8>,
    body: Vec<Piece>,
    /// Sum of the literal pieces.
    literal_len: usize,
}

#[derive(Debug)]
enum Piece {
    Literal(Box<[u8]>),
    /// Index of the path parameter in the route's template.
    Param(usize),
}

/// Where a request goes: an API, a stage and the path left for routing.
#[derive(Debug)]
pub struct Target<'s, 'p> {
    /// The API.
    pub api: &'s Api,
    /// Index of the stage within the API.
    pub stage: usize,
    /// The path with the stage prefix or base path removed.
    pub path: &'p str,
}

/// What the per-request handler needs besides the head.
pub struct ResponseContext<'a> {
    /// The current `Date` value.
    pub date: &'a [u8],
    /// The request id for this exchange.
    pub request_id: &'a [u8],
    /// What the `Connection` header says.
    pub connection: ConnectionHeader,
}

impl Snapshot {
    /// Compiles a validated configuration.
    pub fn build(config: &Config) -> Result<Snapshot, BuildError> {
        let mut apis = Vec::with_capacity(config.apis.len());
        let mut api_hosts = Vec::new();
        let mut default_api = None;
        for (ai, api) in config.apis.iter().enumerate() {
            let mut builder = RouteTableBuilder::new();
            let mut routes = Vec::with_capacity(api.routes.len());
            let mut param_names: Vec<Vec<String>> = Vec::with_capacity(api.routes.len());
            for (ri, route) in api.routes.iter().enumerate() {
                let id = RouteId(ri as u32);
                let err = |e: RouteError| BuildError {
                    file: config.source.clone(),
                    line: route.line,
                    message: format!(
                        "api {:?}, route {:?}: {e}",
                        api.name,
                        route.key.as_display()
                    ),
                };
                match &route.key {
                    RouteKey::Default => {
                        builder.set_default(id).map_err(err)?;
                        param_names.push(Vec::new());
                    }
                    RouteKey::Route { method, path } => {
                        let spec = match method {
                            None => MethodSpec::Any,
                            Some(m) => MethodSpec::One(
                                Method::from_bytes(m.as_bytes()).ok_or_else(|| BuildError {
                                    file: config.source.clone(),
                                    line: route.line,
                                    message: format!("unknown method {m:?}"),
                                })?,
                            ),
                        };
                        builder.add(spec, path, id).map_err(err)?;
                        param_names.push(template_params(path));
                    }
                }
                routes.push(Route {
                    display: route.key.as_display(),
                });
            }
            let mut stages = Vec::with_capacity(api.stages.len());
            for stage in &api.stages {
                let mut mocks = Vec::with_capacity(api.routes.len());
                for (ri, route) in api.routes.iter().enumerate() {
                    let mock = match &route.integration {
                        Integration::Mock(m) => m,
                        #[allow(unreachable_patterns)]
                        _ => {
                            return Err(BuildError {
                                file: config.source.clone(),
                                line: route.line,
                                message: "integration kind not supported by this build".into(),
                            })
                        }
                    };
                    let mut body = Vec::new();
                    let mut literal = Vec::new();
                    let mut literal_len = 0;
                    for part in &mock.body {
                        match part {
                            BodyPart::Literal(s) => literal.extend_from_slice(s.as_bytes()),
                            BodyPart::StageVariable(name) => {
                                let value =
                                    stage.variables.get(name).ok_or_else(|| BuildError {
                                        file: config.source.clone(),
                                        line: route.line,
                                        message: format!(
                                        "stage {:?} has no variable {name:?} used by route {:?}",
                                        stage.name,
                                        route.key.as_display()
                                    ),
                                    })?;
                                literal.extend_from_slice(value.as_bytes());
                            }
                            BodyPart::PathParam(name) => {
                                let index = param_names[ri].iter().position(|p| p == name);
                                match index {
                                    Some(i) => {
                                        if !literal.is_empty() {
                                            literal_len += literal.len();
                                            body.push(Piece::Literal(
                                                std::mem::take(&mut literal).into(),
                                            ));
                                        }
                                        body.push(Piece::Param(i));
                                    }
                                    // Not a parameter of this route: literal text.
                                    None => {
                                        literal.push(b'{');
                                        literal.extend_from_slice(name.as_bytes());
                                        literal.push(b'}');
                                    }
                                }
                            }
                        }
                    }
                    if !literal.is_empty() {
                        literal_len += literal.len();
                        body.push(Piece::Literal(literal.into()));
                    }
                    let mut status_line = Vec::new();
                    write_status_line(&mut status_line, mock.status);
                    let mut headers = Vec::new();
                    for (name, value) in &mock.headers {
                        headers.extend_from_slice(name.as_bytes());
                        headers.extend_from_slice(b": ");
                        headers.extend_from_slice(value.as_bytes());
                        headers.extend_from_slice(b"\r\n");
                    }
                    mocks.push(MockResponse {
                        status: mock.status,
                        status_line,
                        headers,
                        body,
                        literal_len,
                    });
                }
                stages.push(Stage {
                    name: stage.name.clone(),
                    mocks,
                });
            }
            if api.hosts.is_empty() {
                default_api = Some(ai);
            }
            for host in &api.hosts {
                api_hosts.push((host.to_ascii_lowercase(), ai));
            }
            apis.push(Api {
                name: api.name.clone(),
                table: builder.build(),
                unmatched: api.unmatched_route,
                routes,
                stages,
            });
        }

        let mut domains = Vec::new();
        let mut wildcard_domain = None;
        for d in &config.domains {
            let mut mappings = Vec::with_capacity(d.mappings.len());
            for m in &d.mappings {
                let api = apis.iter().position(|a| a.name == m.api);
                let stage = api.and_then(|a| apis[a].stages.iter().position(|s| s.name == m.stage));
                let (Some(api), Some(stage)) = (api, stage) else {
                    return Err(BuildError {
                        file: config.source.clone(),
                        line: 0,
                        message: format!(
                            "domain {:?}: no stage {:?} in api {:?}",
                            d.host, m.stage, m.api
                        ),
                    });
                };
                mappings.push(BasePath {
                    path: m.base_path.trim_matches('/').to_string(),
                    api,
                    stage,
                });
            }
            mappings.sort_by_key(|m| std::cmp::Reverse(m.path.len()));
            let domain = Domain {
                host: d.host.to_ascii_lowercase(),
                mappings,
            };
            if domain.host == "*" {
                wildcard_domain = Some(domain);
            } else {
                domains.push(domain);
            }
        }
        Ok(Snapshot {
            apis,
            domains,
            wildcard_domain,
            api_hosts,
            default_api,
        })
    }

    /// The APIs, in configuration order.
    pub fn apis(&self) -> impl Iterator<Item = &Api> {
        self.apis.iter()
    }

    /// Finds the API, stage and remaining path for a request.
    pub fn resolve<'s, 'p>(
        &'s self,
        host: Option<&[u8]>,
        path: &'p str,
    ) -> Result<Target<'s, 'p>, GatewayError> {
        let host = host.map(strip_port).unwrap_or(b"");
        if !self.domains.is_empty() || self.wildcard_domain.is_some() {
            let domain = self
                .domains
                .iter()
                .find(|d| d.host.as_bytes().eq_ignore_ascii_case(host))
                .or(self.wildcard_domain.as_ref());
            if let Some(domain) = domain {
                return self.resolve_mapping(domain, path);
            }
        }
        let api = self
            .api_hosts
            .iter()
            .find(|(h, _)| h.as_bytes().eq_ignore_ascii_case(host))
            .map(|&(_, a)| a)
            .or(self.default_api)
            .ok_or(GatewayError::Forbidden)?;
        let api = &self.apis[api];
        // "/{stage}/rest": the stage is the first segment.
        let after = path.strip_prefix('/').ok_or(GatewayError::Forbidden)?;
        let (stage_name, rest) = match crate::http::find_byte(after, b'/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, "/"),
        };
        let stage = api
            .stages
            .iter()
            .position(|s| s.name == stage_name)
            .ok_or(GatewayError::Forbidden)?;
        Ok(Target {
            api,
            stage,
            path: rest,
        })
    }

    fn resolve_mapping<'s, 'p>(
        &'s self,
        domain: &'s Domain,
        path: &'p str,
    ) -> Result<Target<'s, 'p>, GatewayError> {
        let after = path.strip_prefix('/').unwrap_or(path);
        for m in &domain.mappings {
            let rest = if m.path.is_empty() {
                Some(path)
            } else if let Some(tail) = after.strip_prefix(m.path.as_str()) {
                if tail.is_empty() {
                    Some("/")
                } else if tail.starts_with('/') {
                    Some(tail)
                } else {
                    None
                }
            } else {
                None
            };
            if let Some(rest) = rest {
                return Ok(Target {
                    api: &self.apis[m.api],
                    stage: m.stage,
                    path: rest,
                });
            }
        }
        Err(GatewayError::Forbidden)
    }

    /// Answers one request into `out`: resolves it, routes it, and writes
    /// the integration's (mock) response or the gateway error. Returns the
    /// status written.
    pub fn respond(
        &self,
        method: &str,
        host: Option<&[u8]>,
        path: &str,
        ctx: &ResponseContext<'_>,
        out: &mut Vec<u8>,
    ) -> u16 {
        let head_only = method == "HEAD";
        let target = match self.resolve(host, path) {
            Ok(t) => t,
            Err(e) => {
                e.write(out, ctx.date, ctx.request_id, ctx.connection, head_only);
                return e.status();
            }
        };
        let api = target.api;
        let mut params = Params::new();
        let route = Method::from_bytes(method.as_bytes()).and_then(|m| {
            api.table.lookup(m, target.path, &mut params).or_else(|| {
                if m == Method::Head {
                    params.clear();
                    api.table.lookup(Method::Get, target.path, &mut params)
                } else {
                    None
                }
            })
        });
        let Some(RouteId(route)) = route else {
            let e = match api.unmatched {
                UnmatchedRoute::MissingAuthenticationToken => {
                    GatewayError::MissingAuthenticationToken
                }
                UnmatchedRoute::NotFound => GatewayError::NotFound,
            };
            e.write(out, ctx.date, ctx.request_id, ctx.connection, head_only);
            return e.status();
        };
        let mock = &api.stages[target.stage].mocks[route as usize];
        out.extend_from_slice(&mock.status_line);
        write_common_headers(out, ctx.date, ctx.request_id, ctx.connection);
        out.extend_from_slice(&mock.headers);
        if crate::http::response::status_has_no_body(mock.status) {
            out.extend_from_slice(b"\r\n");
            return mock.status;
        }
        let mut len = mock.literal_len;
        for piece in &mock.body {
            if let Piece::Param(i) = piece {
                len += params.iter().nth(*i).map_or(0, |(_, v)| v.len());
            }
        }
        write_content_length(out, len as u64);
        out.extend_from_slice(b"\r\n");
        if !head_only {
            for piece in &mock.body {
                match piece {
                    Piece::Literal(bytes) => out.extend_from_slice(bytes),
                    Piece::Param(i) => {
                        if let Some((_, v)) = params.iter().nth(*i) {
                            out.extend_from_slice(v.as_bytes());
                        }
                    }
                }
            }
        }
        mock.status
    }
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("name", &self.name)
            .field("routes", &self.routes)
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// Stage names, in configuration order.
    pub fn stage_names(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.name.as_str())
    }

    /// Route keys as written (`GET /pets/{id}`, `$default`).
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| r.display.as_str())
    }
}

/// A shared, immutable snapshot.
pub type SharedSnapshot = Arc<Snapshot>;

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
fn strip_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        if let Some(end) = host.iter().position(|&b| b == b']') {
            return &host[..end + 1];
        }
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
        _ => host,
    }
}

/// Parameter names of a template, in order (`{proxy+}` gives `proxy`).
fn template_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| name.trim_end_matches('+').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port(b"example.com:8080"), b"example.com");
        assert_eq!(strip_port(b"example.com"), b"example.com");
        assert_eq!(strip_port(b"[::1]:80"), b"[::1]");
        assert_eq!(strip_port(b"[::1]"), b"[::1]");
    }

    #[test]
    fn template_param_order() {
        assert_eq!(template_params("/a/{x}/b/{rest+}"), ["x", "rest"]);
    }
}
