//! The admin API's endpoints: JSON in, JSON out, over the transport of
//! [`super::http`], applied through [`crate::control::Control`].
//!
//! Every endpoint is listed in the [module page](super) and the README.
//! Bodies are JSON objects; a field this module does not know, a field of
//! the wrong type or an invalid value is refused with 400 naming the field
//! (`"field": "cache.ttl_seconds"`), an unknown API, stage or deployment
//! with 404, a change the stage's state does not allow (repointing a stage
//! that has a canary, changing an `auto_deploy` stage) with 409, a method a
//! path does not take with 405 and an `Allow` header. A refused request
//! changes nothing.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::http::{AdminRequest, AdminResponse, Handler};
use crate::config::{ApiConfig, Config, StageCacheConfig, ThrottleLimit};
use crate::control::{CachePatch, CanaryPatch, Control, ControlError, StagePatch};
use crate::gateway::EntryRequest;
use crate::runtime::Loads;
use crate::state::{Deployment, State};

/// Default and largest page of a list.
const PAGE_DEFAULT: usize = 25;
const PAGE_MAX: usize = 500;

/// The endpoints, over a running gateway's control side.
pub struct AdminApi {
    control: Arc<Control>,
    loads: Option<Loads>,
    started: Instant,
    metrics: Option<super::metrics::MetricsSources>,
}

impl AdminApi {
    /// Serves `control`; `loads` (the workers' load counters) feed `/status`.
    pub fn new(control: Arc<Control>, loads: Option<Loads>) -> AdminApi {
        AdminApi {
            control,
            loads,
            started: Instant::now(),
            metrics: None,
        }
    }

    /// Serves `GET /metrics` from `sources` (without them it answers 404).
    pub fn with_metrics(mut self, sources: super::metrics::MetricsSources) -> AdminApi {
        self.metrics = Some(sources);
        self
    }
}

pub(super) type Reply = Result<AdminResponse, ControlError>;

pub(super) fn ok(value: Value) -> Reply {
    Ok(AdminResponse::json(200, &value))
}

pub(super) fn method_not_allowed(allow: &str) -> Reply {
    Ok(AdminResponse::error(
        405,
        "method_not_allowed",
        format!("this path takes {allow}"),
        None,
    )
    .with_header("Allow", allow))
}

impl Handler for AdminApi {
    fn handle(&self, req: &AdminRequest) -> AdminResponse {
        match self.route(req) {
            Ok(r) => r,
            Err(e) => AdminResponse::error(e.status, e.code, e.message, e.field.as_deref()),
        }
    }
}

impl AdminApi {
    fn route(&self, req: &AdminRequest) -> Reply {
        let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
        let m = req.method.as_str();
        match (m, &seg[..]) {
            ("GET", []) => ok(json!({ "endpoints": ENDPOINTS })),
            (_, []) => method_not_allowed("GET"),
            ("GET", ["status"]) => ok(self.status()),
            ("GET", ["metrics"]) => {
                let sources = self.metrics.as_ref().ok_or_else(|| {
                    ControlError::not_found("this gateway was started without metrics")
                })?;
                let text = self.control.read(|_, _, snap| {
                    super::metrics::render(sources, snap, self.loads.as_ref(), self.started)
                });
                Ok(AdminResponse {
                    status: 200,
                    body: text.into_bytes(),
                    headers: Vec::new(),
                }
                .with_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8"))
            }
            (_, ["metrics"]) => method_not_allowed("GET"),
            ("GET", ["stats"]) => {
                let sources = self.metrics.as_ref().ok_or_else(|| {
                    ControlError::not_found("this gateway was started without metrics")
                })?;
                ok(super::metrics::stats_json(sources, self.started))
            }
            (_, ["stats"]) => method_not_allowed("GET"),
            ("POST", ["logs", "reopen"]) => {
                no_body(req)?;
                let log = self
                    .metrics
                    .as_ref()
                    .and_then(|m| m.gateway.access_log())
                    .ok_or_else(|| ControlError::not_found("no [access_log] is configured"))?;
                log.reopen();
                ok(json!({ "reopened": log.target().to_string() }))
            }
            (_, ["logs", "reopen"]) => method_not_allowed("POST"),
            ("GET", ["tls"]) => ok(json!({ "certificates": self.certificates()? })),
            (_, ["tls"]) => method_not_allowed("GET"),
            ("POST", ["tls", "reload"]) => {
                no_body(req)?;
                let tls = self.tls()?;
                tls.reload().map_err(|e| {
                    ControlError::conflict(format!(
                        "the certificates were not reloaded, the served ones stay: {e}"
                    ))
                })?;
                ok(json!({ "reloaded": true, "certificates": self.certificates()? }))
            }
            (_, ["tls", "reload"]) => method_not_allowed("POST"),
            (_, ["status"]) => method_not_allowed("GET"),
            ("POST", ["reload"]) => {
                no_body(req)?;
                let r = self.control.reload()?;
                ok(json!({
                    "reloaded": true,
                    "warnings": r.warnings,
                    "restart_required": r.restart_required,
                    "pinned_stages": r.pinned_differences,
                }))
            }
            (_, ["reload"]) => method_not_allowed("POST"),
            ("GET", ["apis"]) => {
                let items = self
                    .control
                    .read(|c, s, _| c.apis.iter().map(|a| api_json(a, s)).collect::<Vec<_>>());
                page(req, items)
            }
            (_, ["apis"]) => method_not_allowed("GET"),
            ("GET", ["apis", api]) => self.control.read(|c, s, _| {
                let a = find_api(c, api)?;
                ok(api_json(a, s))
            }),
            (_, ["apis", _]) => method_not_allowed("GET"),
            ("GET", ["apis", api, "deployments"]) => {
                let items = self.control.read(|c, s, _| {
                    find_api(c, api)?;
                    // Newest first.
                    let mut v: Vec<Value> = s
                        .deployments(api)
                        .map(|d| deployment_json(d, false))
                        .collect();
                    v.reverse();
                    Ok::<_, ControlError>(v)
                })?;
                page(req, items)
            }
            ("POST", ["apis", api, "deployments"]) => {
                let body = object(req)?;
                let mut f = Fields::new(body);
                let description = f.string("description")?.unwrap_or_default();
                let stage = f.string("stage")?;
                f.done()?;
                let d = self
                    .control
                    .create_deployment(api, &description, stage.as_deref())?;
                Ok(AdminResponse::json(201, &deployment_json(&d, true))
                    .with_header("Location", format!("/apis/{api}/deployments/{}", d.id)))
            }
            (_, ["apis", _, "deployments"]) => method_not_allowed("GET, POST"),
            ("GET", ["apis", api, "deployments", id]) => {
                let id = parse_id(id)?;
                self.control.read(|c, s, _| {
                    find_api(c, api)?;
                    let d = s.deployment(api, id).ok_or_else(|| {
                        ControlError::not_found(format!("api {api:?} has no deployment {id}"))
                    })?;
                    ok(deployment_json(d, true))
                })
            }
            (_, ["apis", _, "deployments", _]) => method_not_allowed("GET"),
            ("GET", ["apis", api, "deployments", id, "export"]) => {
                let id = parse_id(id)?;
                let doc = self.control.read(|c, s, _| {
                    let a = find_api(c, api)?;
                    let d = s.deployment(api, id).ok_or_else(|| {
                        ControlError::not_found(format!("api {api:?} has no deployment {id}"))
                    })?;
                    Ok::<_, ControlError>(crate::openapi::export(
                        api,
                        &d.definition,
                        &crate::openapi::ExportContext {
                            hosts: &a.hosts,
                            stages: &export_stages(c, s, a),
                            upstreams: &c.upstreams,
                        },
                    ))
                })?;
                ok(doc)
            }
            (_, ["apis", _, "deployments", _, "export"]) => method_not_allowed("GET"),
            ("POST", ["apis", api, "import"]) => self.import(req, api),
            (_, ["apis", _, "import"]) => method_not_allowed("POST"),
            ("GET", ["apis", api, "stages"]) => {
                let items = self.control.read(|c, s, snap| {
                    let a = find_api(c, api)?;
                    Ok::<_, ControlError>(
                        a.stages
                            .iter()
                            .map(|st| stage_json(a, &st.name, c, s, snap))
                            .collect::<Vec<_>>(),
                    )
                })?;
                page(req, items)
            }
            (_, ["apis", _, "stages"]) => method_not_allowed("GET"),
            ("GET", ["apis", api, "stages", stage]) => self.stage(api, stage),
            ("PATCH", ["apis", api, "stages", stage]) => {
                let patch = stage_patch(object(req)?)?;
                self.control.update_stage(api, stage, &patch)?;
                self.stage(api, stage)
            }
            (_, ["apis", _, "stages", _]) => method_not_allowed("GET, PATCH"),
            ("PUT", ["apis", api, "stages", stage, "canary"]) => {
                let patch = canary_patch(object(req)?)?;
                self.control.set_canary(api, stage, &patch)?;
                self.stage(api, stage)
            }
            ("DELETE", ["apis", api, "stages", stage, "canary"]) => {
                no_body(req)?;
                self.control.remove_canary(api, stage)?;
                self.stage(api, stage)
            }
            (_, ["apis", _, "stages", _, "canary"]) => method_not_allowed("PUT, DELETE"),
            ("POST", ["apis", api, "stages", stage, "canary", "promote"]) => {
                no_body(req)?;
                self.control.promote_canary(api, stage)?;
                self.stage(api, stage)
            }
            (_, ["apis", _, "stages", _, "canary", "promote"]) => method_not_allowed("POST"),
            ("GET", ["apis", api, "stages", stage, "cache"]) => {
                let (snap, api, stage) = self.control.stage_cache(api, stage)?;
                let sc = snap
                    .stage_cache(&api, &stage)
                    .expect("checked by stage_cache");
                ok(cache_json(&sc.settings, &sc.store.stats()))
            }
            (_, ["apis", _, "stages", _, "cache"]) => method_not_allowed("GET"),
            ("DELETE", ["apis", api, "stages", stage, "cache", "data"]) => {
                no_body(req)?;
                let (snap, api, stage) = self.control.stage_cache(api, stage)?;
                snap.stage_cache(&api, &stage)
                    .expect("checked by stage_cache")
                    .store
                    .flush();
                // API Gateway's FlushStageCache: 202, empty body.
                Ok(AdminResponse::empty(202))
            }
            (_, ["apis", _, "stages", _, "cache", "data"]) => method_not_allowed("DELETE"),
            ("DELETE", ["apis", api, "stages", stage, "cache", "entries"]) => {
                no_body(req)?;
                self.drop_entry(req, api, stage)
            }
            (_, ["apis", _, "stages", _, "cache", "entries"]) => method_not_allowed("DELETE"),
            (_, ["apikeys", ..]) | (_, ["usageplans", ..]) => {
                super::plans::route(&self.control, req, &seg).unwrap_or_else(|| {
                    Err(ControlError::not_found(format!(
                        "no endpoint {} (GET / lists them)",
                        req.path
                    )))
                })
            }
            _ => Err(ControlError::not_found(format!(
                "no endpoint {} (GET / lists them)",
                req.path
            ))),
        }
    }

    /// `POST /apis/{api}/import`: an OpenAPI document becomes a
    /// deployment of the API (API Gateway's "import API" with
    /// `mode=overwrite`): checked against the API's stages and the
    /// gateway's upstreams; nothing changes unless it imports and, with
    /// `stage`, compiles.
    fn import(&self, req: &AdminRequest, api: &str) -> Reply {
        for (k, _) in &req.query {
            if !["stage", "description", "strict", "failonwarnings"].contains(&k.as_str()) {
                return Err(ControlError::invalid(
                    k,
                    format!("unknown parameter {k:?}: this endpoint takes stage, description and strict"),
                ));
            }
        }
        let flag = |name: &str| -> Result<bool, ControlError> {
            match req.query(name) {
                None | Some("false") => Ok(false),
                Some("true") | Some("") => Ok(true),
                Some(other) => Err(ControlError::invalid(
                    name,
                    format!("{other:?} is neither true nor false"),
                )),
            }
        };
        let strict = flag("strict")? || flag("failonwarnings")?;
        let description = req.query("description").unwrap_or("imported from OpenAPI");
        let stage = req.query("stage");
        let text = std::str::from_utf8(&req.body).map_err(|_| ControlError {
            status: 400,
            code: "invalid_document",
            message: "the document is not UTF-8 text".to_string(),
            field: Some(String::new()),
        })?;
        let options = self.control.read(|c, s, _| {
            let a = find_api(c, api)?;
            Ok::<_, ControlError>(crate::openapi::ImportOptions {
                api: Some(api.to_string()),
                stages: export_stages(c, s, a)
                    .into_iter()
                    .map(|st| (st.name, st.variables))
                    .collect(),
                upstreams: c
                    .upstreams
                    .iter()
                    .map(|u| (u.name.clone(), u.tls.is_some()))
                    .collect(),
                ..Default::default()
            })
        })?;
        let imported = crate::openapi::import(text, &options).map_err(|e| ControlError {
            status: 400,
            code: "invalid_document",
            message: e.to_string(),
            field: Some(e.pointer),
        })?;
        let notes = |v: &[crate::openapi::Note]| -> Vec<Value> {
            v.iter()
                .map(|n| json!({"pointer": n.pointer, "message": n.message}))
                .collect()
        };
        let summary = &imported.summary;
        if strict && !summary.left_out.is_empty() {
            let first = &summary.left_out[0];
            return Err(ControlError {
                status: 400,
                code: "left_out",
                message: format!(
                    "strict: {} thing(s) of the document would be left out, first {first}",
                    summary.left_out.len()
                ),
                field: Some(first.pointer.clone()),
            });
        }
        let definition = imported
            .config
            .apis
            .first()
            .map(|a| a.definition())
            .ok_or_else(|| ControlError::invalid("body", "the document imports no api"))?;
        let d = self
            .control
            .import_deployment(api, description, stage, definition)?;
        let mut body = deployment_json(&d, false);
        body["import"] = json!({
            "title": summary.title,
            "format": summary.format,
            "routes": summary.routes,
            "http_proxy": summary.http_proxy,
            "mock": summary.mock,
            "approximated": notes(&summary.approximated),
            "left_out": notes(&summary.left_out),
        });
        Ok(AdminResponse::json(201, &body)
            .with_header("Location", format!("/apis/{api}/deployments/{}", d.id)))
    }

    fn stage(&self, api: &str, stage: &str) -> Reply {
        self.control.read(|c, s, snap| {
            let a = find_api(c, api)?;
            if a.stage(stage).is_none() {
                return Err(ControlError::not_found(format!(
                    "api {api:?} has no stage {stage:?}"
                )));
            }
            ok(stage_json(a, stage, c, s, snap))
        })
    }

    /// The TLS listeners' certificates, or 404 without `listen_tls`.
    fn tls(&self) -> Result<&Arc<crate::tls::TlsAcceptor>, ControlError> {
        self.metrics
            .as_ref()
            .and_then(|m| m.gateway.tls())
            .ok_or_else(|| ControlError::not_found("no server.listen_tls is configured"))
    }

    /// `GET /tls`: each certificate's hosts, names and validity.
    fn certificates(&self) -> Result<Vec<Value>, ControlError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Ok(self
            .tls()?
            .certificates()
            .iter()
            .map(|c| {
                json!({
                    "hosts": c.hosts,
                    "chain": c.chain.display().to_string(),
                    "subject": c.subject,
                    "issuer": c.issuer,
                    "serial": c.serial,
                    "not_before": c.not_before,
                    "not_after": c.not_after,
                    "expires_in_days": (c.not_after - now).div_euclid(86_400),
                })
            })
            .collect())
    }

    fn status(&self) -> Value {
        let workers: Vec<Value> = self.loads.as_ref().map_or_else(Vec::new, |l| {
            l.read()
                .iter()
                .enumerate()
                .map(|(id, l)| {
                    json!({
                        "worker": id,
                        "connections": l.connections,
                        "pooled_buffers": l.pooled_buffers,
                        "parked": l.parked,
                    })
                })
                .collect()
        });
        let state = self.control.store_path().map(|p| p.display().to_string());
        let config = self.control.config_path().map(|p| p.display().to_string());
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "config": config,
            "state": state,
            "workers": workers,
            "tls": self.certificates().ok().map(|c| {
                c.iter()
                    .map(|c| json!({ "hosts": c["hosts"], "not_after": c["not_after"],
                                     "expires_in_days": c["expires_in_days"] }))
                    .collect::<Vec<_>>()
            }),
        })
    }

    /// `DELETE .../cache/entries?method=GET&path=/items/1[&query=a=1][&header.X=v][&canary=true]`.
    fn drop_entry(&self, req: &AdminRequest, api: &str, stage: &str) -> Reply {
        let mut method = "GET".to_string();
        let mut path = None;
        let mut query = String::new();
        let mut canary = false;
        let mut headers = Vec::new();
        for (k, v) in &req.query {
            match k.as_str() {
                "method" => method = v.to_ascii_uppercase(),
                "path" => path = Some(v.clone()),
                "query" => query = v.clone(),
                "canary" => {
                    canary = match v.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(ControlError::invalid("canary", "canary is true or false"))
                        }
                    }
                }
                h if h.starts_with("header.") && h.len() > 7 => {
                    headers.push((h[7..].to_string(), v.clone()))
                }
                other => {
                    return Err(ControlError::invalid(
                        other,
                        format!(
                            "unknown parameter {other:?}: use method, path, query, \
                             header.NAME and canary"
                        ),
                    ))
                }
            }
        }
        let path = path
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| ControlError::invalid("path", "path (starting with /) is required"))?;
        let (snap, api, stage) = self.control.stage_cache(api, stage)?;
        let key = snap
            .cache_key(
                &api,
                &stage,
                canary,
                &EntryRequest {
                    method: &method,
                    path: &path,
                    query: &query,
                    headers: &headers,
                },
            )
            .map_err(|m| ControlError::invalid("path", m))?;
        let removed = snap
            .stage_cache(&api, &stage)
            .expect("checked by stage_cache")
            .store
            .remove(&key);
        ok(json!({ "removed": removed }))
    }
}

/// Every endpoint, for `GET /` (and the docs).
pub const ENDPOINTS: &[&str] = &[
    "GET /status",
    "GET /metrics",
    "GET /stats",
    "POST /logs/reopen",
    "GET /tls",
    "POST /tls/reload",
    "GET /apikeys",
    "POST /apikeys",
    "POST /apikeys?mode=import&format=csv",
    "GET /apikeys/{id}",
    "PATCH /apikeys/{id}",
    "DELETE /apikeys/{id}",
    "GET /usageplans",
    "POST /usageplans",
    "GET /usageplans/{id}",
    "PATCH /usageplans/{id}",
    "DELETE /usageplans/{id}",
    "GET /usageplans/{id}/keys",
    "POST /usageplans/{id}/keys",
    "DELETE /usageplans/{id}/keys/{key}",
    "GET /usageplans/{id}/usage",
    "GET /usageplans/{id}/keys/{key}/usage",
    "PATCH /usageplans/{id}/keys/{key}/usage",
    "POST /reload",
    "GET /apis",
    "GET /apis/{api}",
    "GET /apis/{api}/deployments",
    "POST /apis/{api}/deployments",
    "GET /apis/{api}/deployments/{id}",
    "GET /apis/{api}/deployments/{id}/export",
    "POST /apis/{api}/import",
    "GET /apis/{api}/stages",
    "GET /apis/{api}/stages/{stage}",
    "PATCH /apis/{api}/stages/{stage}",
    "PUT /apis/{api}/stages/{stage}/canary",
    "DELETE /apis/{api}/stages/{stage}/canary",
    "POST /apis/{api}/stages/{stage}/canary/promote",
    "GET /apis/{api}/stages/{stage}/cache",
    "DELETE /apis/{api}/stages/{stage}/cache/data",
    "DELETE /apis/{api}/stages/{stage}/cache/entries",
];

fn find_api<'c>(config: &'c Config, api: &str) -> Result<&'c ApiConfig, ControlError> {
    config
        .apis
        .iter()
        .find(|a| a.name == api)
        .ok_or_else(|| ControlError::not_found(format!("no api {api:?} in the configuration")))
}

fn parse_id(s: &str) -> Result<u64, ControlError> {
    s.parse()
        .map_err(|_| ControlError::invalid("id", format!("{s:?} is not a deployment id")))
}

/// A list endpoint's page: `limit` (1..=500, default 25) items from
/// `position` (the opaque token the previous page returned).
pub(super) fn page(req: &AdminRequest, items: Vec<Value>) -> Reply {
    let limit = match req.query("limit") {
        None => PAGE_DEFAULT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=PAGE_MAX).contains(&n) => n,
            _ => {
                return Err(ControlError::invalid(
                    "limit",
                    format!("limit {l:?} is not a number from 1 to {PAGE_MAX}"),
                ))
            }
        },
    };
    let start = match req.query("position") {
        None => 0,
        Some(p) => p
            .parse::<usize>()
            .ok()
            .filter(|&n| n <= items.len())
            .ok_or_else(|| {
                ControlError::invalid(
                    "position",
                    format!("position {p:?} is not one this list gave"),
                )
            })?,
    };
    let end = (start + limit).min(items.len());
    let mut out = json!({ "items": items[start..end] });
    if end < items.len() {
        out["position"] = json!(end.to_string());
    }
    ok(out)
}

fn api_json(a: &ApiConfig, state: &State) -> Value {
    json!({
        "name": a.name,
        "hosts": a.hosts,
        "routes": a.routes.iter().map(|r| r.key.as_display()).collect::<Vec<_>>(),
        "stages": a.stages.iter().map(|s| json!({
            "name": s.name,
            "auto_deploy": s.auto_deploy,
            "deployment_id": if s.auto_deploy { None } else { state.stage(&a.name, &s.name).map(|r| r.deployment) },
        })).collect::<Vec<_>>(),
        "deployments": state.deployments(&a.name).count(),
    })
}

/// The API's stages as an export names them: variables (a pinned stage's
/// from the store), cache capacity, `$default` for one mapped at the root
/// of `[[domain]] host = "*"`.
fn export_stages(c: &Config, s: &State, a: &ApiConfig) -> Vec<crate::openapi::ExportStage> {
    let root = crate::openapi::root_stage(c, &a.name);
    a.stages
        .iter()
        .map(|st| {
            let record = (!st.auto_deploy)
                .then(|| s.stage(&a.name, &st.name))
                .flatten();
            let (variables, cache) = match record {
                Some(r) => (r.variables.clone(), r.cache.clone()),
                None => (st.variables.clone(), st.cache.clone()),
            };
            crate::openapi::ExportStage {
                name: crate::openapi::export_name(&st.name, root),
                variables,
                cache_capacity: crate::openapi::capacity(cache.as_ref()),
            }
        })
        .collect()
}

fn deployment_json(d: &Deployment, full: bool) -> Value {
    let mut v = json!({
        "id": d.id,
        "api": d.api,
        "description": d.description,
        "created_at": d.created_at,
        "routes": d.definition.routes.iter().map(|r| r.key.as_display()).collect::<Vec<_>>(),
    });
    if full {
        v["definition"] = serde_json::to_value(&d.definition).unwrap_or(Value::Null);
    }
    v
}

fn stage_json(
    a: &ApiConfig,
    stage: &str,
    _config: &Config,
    state: &State,
    snap: &crate::gateway::Snapshot,
) -> Value {
    let s = a.stage(stage).expect("caller checked the stage");
    let record = state.stage(&a.name, stage).filter(|_| !s.auto_deploy);
    let (variables, cache, throttle, route_throttle) = match record {
        Some(r) => (
            r.variables.clone(),
            r.cache.clone(),
            r.throttle,
            r.route_throttle.clone(),
        ),
        None => (
            s.variables.clone(),
            s.cache.clone(),
            s.throttle,
            s.route_throttle.clone(),
        ),
    };
    let mut v = json!({
        "api": a.name,
        "name": stage,
        "auto_deploy": s.auto_deploy,
        "source": if s.auto_deploy { "file" } else { "state" },
        "deployment_id": record.map(|r| r.deployment),
        "variables": variables,
        "cache": cache.as_ref().map(cache_settings_json),
        "throttle": throttle.map(|l| json!({ "rate": l.rate, "burst": l.burst })),
        "route_throttle": route_throttle
            .iter()
            .map(|(k, l)| (k.clone(), json!({ "rate": l.rate, "burst": l.burst })))
            .collect::<Map<String, Value>>(),
        "canary": record.and_then(|r| r.canary.as_ref()).map(|c| json!({
            "deployment_id": c.deployment,
            "percent": c.percent,
            "variable_overrides": c.variable_overrides,
            "use_stage_cache": c.use_stage_cache,
        })),
        "updated_at": record.map(|r| r.updated_at),
    });
    if let Some(sc) = snap.stage_cache(&a.name, stage) {
        v["cache_entries"] = json!(sc.store.entries());
    }
    v
}

fn cache_settings_json(c: &StageCacheConfig) -> Value {
    json!({
        "enabled": c.enabled,
        "capacity_bytes": c.capacity_bytes,
        "capacity_class": c.capacity_class,
        "ttl_seconds": c.ttl.as_secs(),
    })
}

fn cache_json(settings: &StageCacheConfig, s: &crate::cache::CacheStats) -> Value {
    json!({
        "settings": cache_settings_json(settings),
        "hits": s.hits,
        "misses": s.misses,
        "evictions": s.evictions,
        "rejected": s.rejected,
        "entries": s.entries,
        "bytes": s.bytes,
        "capacity": s.capacity,
    })
}

// --- request bodies ------------------------------------------------------------

pub(super) fn no_body(req: &AdminRequest) -> Result<(), ControlError> {
    let blank = req.body.iter().all(u8::is_ascii_whitespace);
    if blank || req.body == b"{}" {
        Ok(())
    } else {
        Err(ControlError::invalid("body", "this endpoint takes no body"))
    }
}

pub(super) fn object(req: &AdminRequest) -> Result<Map<String, Value>, ControlError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ControlError::invalid(
            "body",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ControlError {
            code: "malformed_json",
            ..ControlError::invalid("body", format!("the body is not valid JSON: {e}"))
        }),
    }
}

/// Takes typed fields out of a JSON object, naming each one at fault.
pub(super) struct Fields {
    map: Map<String, Value>,
    prefix: String,
}

impl Fields {
    pub(super) fn new(map: Map<String, Value>) -> Fields {
        Fields {
            map,
            prefix: String::new(),
        }
    }

    /// An object found at a field: its own fields are named with `prefix`.
    pub(super) fn nested(map: Map<String, Value>, prefix: &str) -> Fields {
        Fields {
            map,
            prefix: prefix.to_string(),
        }
    }

    /// Takes a field's raw value.
    pub(super) fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    /// A list of strings (absent or null: empty).
    pub(super) fn strings(&mut self, key: &str) -> Result<Vec<String>, ControlError> {
        let field = self.name(key);
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(v)) => v
                .into_iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s),
                    _ => Err(ControlError::invalid(
                        &field,
                        format!("{field} must be a list of strings"),
                    )),
                })
                .collect(),
            Some(_) => Err(ControlError::invalid(
                &field,
                format!("{field} must be a list of strings"),
            )),
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub(super) fn string(&mut self, key: &str) -> Result<Option<String>, ControlError> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ControlError::invalid(
                &self.name(key),
                format!("{} must be a string", self.name(key)),
            )),
        }
    }

    pub(super) fn bool(&mut self, key: &str) -> Result<Option<bool>, ControlError> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(ControlError::invalid(
                &self.name(key),
                format!("{} must be true or false", self.name(key)),
            )),
        }
    }

    pub(super) fn u64(&mut self, key: &str) -> Result<Option<u64>, ControlError> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(_) => Err(ControlError::invalid(
                &self.name(key),
                format!("{} must be a whole number", self.name(key)),
            )),
        }
    }

    pub(super) fn f64(&mut self, key: &str) -> Result<Option<f64>, ControlError> {
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(ControlError::invalid(
                &self.name(key),
                format!("{} must be a number", self.name(key)),
            )),
        }
    }

    /// `{"name": "value" | null}`: set or remove.
    fn variables(&mut self, key: &str) -> Result<BTreeMap<String, Option<String>>, ControlError> {
        let field = self.name(key);
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, Some(s))),
                    Value::Null => Ok((k, None)),
                    _ => Err(ControlError::invalid(
                        &format!("{field}.{k}"),
                        format!("{field}.{k} must be a string, or null to remove it"),
                    )),
                })
                .collect(),
            Some(_) => Err(ControlError::invalid(
                &field,
                format!("{field} must be an object of strings"),
            )),
        }
    }

    fn object(&mut self, key: &str) -> Result<Option<Fields>, ControlError> {
        let field = self.name(key);
        match self.map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(Fields {
                map: m,
                prefix: format!("{field}."),
            })),
            Some(_) => Err(ControlError::invalid(
                &field,
                format!("{field} must be an object"),
            )),
        }
    }

    /// Refuses what is left: a field this endpoint does not know.
    pub(super) fn done(self) -> Result<(), ControlError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => {
                let field = self.name(k);
                Err(ControlError::invalid(
                    &field,
                    format!("unknown field {field:?}"),
                ))
            }
        }
    }
}

/// `{"rate": n, "burst": n}` at `field`.
pub(super) fn limit(v: Value, field: &str) -> Result<ThrottleLimit, ControlError> {
    let Value::Object(m) = v else {
        return Err(ControlError::invalid(
            field,
            format!("{field} must be {{\"rate\": number, \"burst\": whole number}} or null"),
        ));
    };
    let mut f = Fields {
        map: m,
        prefix: format!("{field}."),
    };
    let rate = f
        .f64("rate")?
        .ok_or_else(|| ControlError::invalid(&format!("{field}.rate"), "rate is required"))?;
    let burst = f
        .u64("burst")?
        .ok_or_else(|| ControlError::invalid(&format!("{field}.burst"), "burst is required"))?;
    f.done()?;
    let burst = u32::try_from(burst)
        .map_err(|_| ControlError::invalid(&format!("{field}.burst"), "burst is too large"))?;
    Ok(ThrottleLimit { rate, burst })
}

fn stage_patch(body: Map<String, Value>) -> Result<StagePatch, ControlError> {
    let mut f = Fields::new(body);
    let deployment = f.u64("deployment_id")?;
    let throttle = match f.map.remove("throttle") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(limit(v, "throttle")?)),
    };
    let mut route_throttle = BTreeMap::new();
    match f.map.remove("route_throttle") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (route, v) in m {
                let field = format!("route_throttle.{route}");
                let l = match v {
                    Value::Null => None,
                    v => Some(limit(v, &field)?),
                };
                route_throttle.insert(route, l);
            }
        }
        Some(_) => {
            return Err(ControlError::invalid(
                "route_throttle",
                "route_throttle must be an object of route key -> {rate, burst} or null",
            ))
        }
    }
    let variables = f.variables("variables")?;
    let cache = match f.object("cache")? {
        None => None,
        Some(mut c) => {
            let capacity = match c.map.remove("capacity") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => {
                    return Err(ControlError::invalid(
                        "cache.capacity",
                        "cache.capacity is a class in GB (e.g. \"0.5\") or a size (\"64MiB\")",
                    ))
                }
            };
            let patch = CachePatch {
                enabled: c.bool("enabled")?,
                capacity,
                ttl_seconds: c.u64("ttl_seconds")?,
            };
            c.done()?;
            Some(patch)
        }
    };
    f.done()?;
    Ok(StagePatch {
        deployment,
        variables,
        cache,
        throttle,
        route_throttle,
    })
}

fn canary_patch(body: Map<String, Value>) -> Result<CanaryPatch, ControlError> {
    let mut f = Fields::new(body);
    let patch = CanaryPatch {
        deployment: f.u64("deployment_id")?,
        percent: f.f64("percent")?,
        variable_overrides: f.variables("variable_overrides")?,
        use_stage_cache: f.bool("use_stage_cache")?,
    };
    f.done()?;
    Ok(patch)
}
