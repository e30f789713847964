//! The admin API's API-key, usage-plan and usage endpoints (API Gateway's
//! `apikeys`, `usageplans`, `usageplans/{id}/keys`, `…/usage`), applied
//! through [`crate::control::Control`]. Listed in the [module page](super).

#![forbid(unsafe_code)]

use serde_json::{json, Map, Value};

use super::api::{limit, method_not_allowed, no_body, object, ok, page, Fields, Reply};
use super::http::{AdminRequest, AdminResponse};
use crate::config::{PlanStageConfig, QuotaSettings, ThrottleLimit};
use crate::control::{
    Control, ControlError, KeyPatch, KeyView, NewKey, PlanPatch, PlanSpec, PlanView,
};
use crate::throttle::quota::{format_day, parse_day, Period, DAY_SECS};

/// Routes `seg` if it is one of these endpoints.
pub(super) fn route(control: &Control, req: &AdminRequest, seg: &[&str]) -> Option<Reply> {
    let m = req.method.as_str();
    Some(match (m, seg) {
        ("GET", ["apikeys"]) => {
            let values = flag(req, "include_values");
            values.and_then(|values| {
                let name = req.query("name");
                let items = control
                    .keys()
                    .iter()
                    .filter(|k| name.is_none_or(|n| k.name.starts_with(n)))
                    .map(|k| key_json(k, values))
                    .collect();
                page(req, items)
            })
        }
        ("POST", ["apikeys"]) => match req.query("mode") {
            Some("import") => import(control, req),
            Some(other) => Err(ControlError::invalid(
                "mode",
                format!("mode {other:?} is not known: use mode=import&format=csv"),
            )),
            None => new_key(req).and_then(|k| {
                let v = control.create_key(k)?;
                Ok(AdminResponse::json(201, &key_json(&v, true))
                    .with_header("Location", format!("/apikeys/{}", v.id)))
            }),
        },
        (_, ["apikeys"]) => method_not_allowed("GET, POST"),
        ("GET", ["apikeys", id]) => flag(req, "include_value")
            .and_then(|values| control.key(id).map(|k| key_json(&k, values)).and_then(ok)),
        ("PATCH", ["apikeys", id]) => key_patch(req)
            .and_then(|p| control.update_key(id, p))
            .and_then(|k| ok(key_json(&k, false))),
        ("DELETE", ["apikeys", id]) => no_body(req)
            .and_then(|()| control.delete_key(id))
            .map(|()| AdminResponse::empty(204)),
        (_, ["apikeys", _]) => method_not_allowed("GET, PATCH, DELETE"),
        ("GET", ["usageplans"]) => page(req, control.plans().iter().map(plan_json).collect()),
        ("POST", ["usageplans"]) => plan_spec(req).and_then(|s| {
            let p = control.create_plan(s)?;
            Ok(AdminResponse::json(201, &plan_json(&p))
                .with_header("Location", format!("/usageplans/{}", p.id)))
        }),
        (_, ["usageplans"]) => method_not_allowed("GET, POST"),
        ("GET", ["usageplans", id]) => control.plan(id).and_then(|p| ok(plan_json(&p))),
        ("PATCH", ["usageplans", id]) => plan_patch(req)
            .and_then(|p| control.update_plan(id, p))
            .and_then(|p| ok(plan_json(&p))),
        ("DELETE", ["usageplans", id]) => no_body(req)
            .and_then(|()| control.delete_plan(id))
            .map(|()| AdminResponse::empty(204)),
        (_, ["usageplans", _]) => method_not_allowed("GET, PATCH, DELETE"),
        ("GET", ["usageplans", id, "keys"]) => control.plan(id).and_then(|p| {
            let keys = control.keys();
            let items = p
                .keys
                .iter()
                .filter_map(|k| keys.iter().find(|x| x.id == *k))
                .map(|k| key_json(k, false))
                .collect();
            page(req, items)
        }),
        ("POST", ["usageplans", id, "keys"]) => attach_body(req)
            .and_then(|key| control.attach_key(id, &key))
            .map(|p| AdminResponse::json(201, &plan_json(&p))),
        (_, ["usageplans", _, "keys"]) => method_not_allowed("GET, POST"),
        ("DELETE", ["usageplans", id, "keys", key]) => no_body(req)
            .and_then(|()| control.detach_key(id, key))
            .and_then(|p| ok(plan_json(&p))),
        (_, ["usageplans", _, "keys", _]) => method_not_allowed("DELETE"),
        ("GET", ["usageplans", id, "usage"]) => usage(control, req, id),
        (_, ["usageplans", _, "usage"]) => method_not_allowed("GET"),
        ("GET", ["usageplans", id, "keys", key, "usage"]) => control
            .key_period(id, key)
            .and_then(|p| ok(period_json(id, key, &p))),
        ("PATCH", ["usageplans", id, "keys", key, "usage"]) => remaining(req)
            .and_then(|n| control.set_remaining(id, key, n))
            .and_then(|p| ok(period_json(id, key, &p))),
        (_, ["usageplans", _, "keys", _, "usage"]) => method_not_allowed("GET, PATCH"),
        _ => return None,
    })
}

/// A `true`/`false` query flag (absent: false).
fn flag(req: &AdminRequest, name: &str) -> Result<bool, ControlError> {
    match req.query(name) {
        None | Some("false") => Ok(false),
        Some("true") | Some("") => Ok(true),
        Some(v) => Err(ControlError::invalid(
            name,
            format!("{name}={v:?}: write true or false"),
        )),
    }
}

fn key_json(k: &KeyView, value: bool) -> Value {
    let mut v = json!({
        "id": k.id,
        "name": k.name,
        "description": k.description,
        "enabled": k.enabled,
        "source": k.source.as_str(),
        "created_at": k.created_at,
        "usage_plan_ids": k.plans,
    });
    if value {
        v["value"] = json!(k.value);
    }
    v
}

fn limit_json(l: &Option<ThrottleLimit>) -> Value {
    match l {
        Some(l) => json!({ "rate": l.rate, "burst": l.burst }),
        None => Value::Null,
    }
}

fn plan_json(p: &PlanView) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "source": p.source.as_str(),
        "throttle": limit_json(&p.throttle),
        "quota": p.quota.map(|q| json!({
            "limit": q.limit,
            "period": q.period.as_str(),
            "offset": q.offset,
        })),
        "stages": p.stages.iter().map(|s| json!({
            "api": s.api,
            "stage": s.stage,
            "route_throttle": s.route_throttle.iter()
                .map(|(r, l)| (r.clone(), limit_json(&Some(*l))))
                .collect::<Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "key_ids": p.keys,
        "created_at": p.created_at,
    })
}

fn period_json(plan: &str, key: &str, p: &crate::control::KeyPeriod) -> Value {
    json!({
        "usage_plan_id": plan,
        "key_id": key,
        "quota": { "limit": p.quota.limit, "period": p.quota.period.as_str(), "offset": p.quota.offset },
        "period_start": format_day(p.period.start / DAY_SECS),
        "period_end": format_day(p.period.end / DAY_SECS),
        "allowance": p.period.allowance,
        "used": p.period.used,
        "remaining": p.period.remaining(),
    })
}

fn new_key(req: &AdminRequest) -> Result<NewKey, ControlError> {
    let mut f = Fields::new(object(req)?);
    let name = f
        .string("name")?
        .ok_or_else(|| ControlError::invalid("name", "name is required"))?;
    let k = NewKey {
        name,
        value: f.string("value")?,
        description: f.string("description")?.unwrap_or_default(),
        enabled: f.bool("enabled")?.unwrap_or(true),
        plans: f.strings("usage_plan_ids")?,
    };
    f.done()?;
    Ok(k)
}

fn key_patch(req: &AdminRequest) -> Result<KeyPatch, ControlError> {
    let mut f = Fields::new(object(req)?);
    let p = KeyPatch {
        name: f.string("name")?,
        description: f.string("description")?,
        enabled: f.bool("enabled")?,
    };
    f.done()?;
    Ok(p)
}

fn import(control: &Control, req: &AdminRequest) -> Reply {
    match req.query("format") {
        Some(f) if f.eq_ignore_ascii_case("csv") => {}
        other => {
            return Err(ControlError::invalid(
                "format",
                format!("format {other:?}: only format=csv is imported"),
            ))
        }
    }
    let text = std::str::from_utf8(&req.body)
        .map_err(|_| ControlError::invalid("body", "the CSV is not UTF-8"))?;
    let keys = control.import_keys_csv(text)?;
    Ok(AdminResponse::json(
        201,
        &json!({
            "ids": keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
            "items": keys.iter().map(|k| key_json(k, false)).collect::<Vec<_>>(),
        }),
    ))
}

/// An optional limit: absent → `None`, null → `Some(None)`.
fn opt_limit(f: &mut Fields, key: &str) -> Result<Option<Option<ThrottleLimit>>, ControlError> {
    match f.take(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => Ok(Some(Some(limit(v, key)?))),
    }
}

fn opt_quota(f: &mut Fields) -> Result<Option<Option<QuotaSettings>>, ControlError> {
    let v = match f.take("quota") {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(None)),
        Some(v) => v,
    };
    let Value::Object(m) = v else {
        return Err(ControlError::invalid(
            "quota",
            "quota must be {\"limit\": n, \"period\": \"DAY\"|\"WEEK\"|\"MONTH\", \"offset\"?: n} or null",
        ));
    };
    let mut q = Fields::nested(m, "quota.");
    let limit = q
        .u64("limit")?
        .ok_or_else(|| ControlError::invalid("quota.limit", "quota.limit is required"))?;
    let period = q
        .string("period")?
        .ok_or_else(|| ControlError::invalid("quota.period", "quota.period is required"))?;
    let period = Period::parse(&period).ok_or_else(|| {
        ControlError::invalid(
            "quota.period",
            format!("{period:?} is not DAY, WEEK or MONTH"),
        )
    })?;
    let offset = q.u64("offset")?.unwrap_or(0);
    q.done()?;
    Ok(Some(Some(QuotaSettings {
        limit,
        period,
        offset,
    })))
}

fn stages(f: &mut Fields) -> Result<Option<Vec<PlanStageConfig>>, ControlError> {
    let v = match f.take("stages") {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let Value::Array(items) = v else {
        return Err(ControlError::invalid(
            "stages",
            "stages must be a list of {\"api\", \"stage\", \"route_throttle\"?}",
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("stages[{i}]");
        let Value::Object(m) = item else {
            return Err(ControlError::invalid(
                &field,
                format!("{field} must be {{\"api\", \"stage\", \"route_throttle\"?}}"),
            ));
        };
        let mut s = Fields::nested(m, &format!("{field}."));
        let api = s
            .string("api")?
            .ok_or_else(|| ControlError::invalid(&format!("{field}.api"), "api is required"))?;
        let stage = s
            .string("stage")?
            .ok_or_else(|| ControlError::invalid(&format!("{field}.stage"), "stage is required"))?;
        let mut route_throttle = std::collections::BTreeMap::new();
        match s.take("route_throttle") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (route, v) in m {
                    let rf = format!("{field}.route_throttle.{route}");
                    route_throttle.insert(route, limit(v, &rf)?);
                }
            }
            Some(_) => {
                return Err(ControlError::invalid(
                    &format!("{field}.route_throttle"),
                    "route_throttle must be an object of route key -> {rate, burst}",
                ))
            }
        }
        s.done()?;
        out.push(PlanStageConfig {
            api,
            stage,
            route_throttle,
        });
    }
    Ok(Some(out))
}

fn plan_spec(req: &AdminRequest) -> Result<PlanSpec, ControlError> {
    let mut f = Fields::new(object(req)?);
    let name = f
        .string("name")?
        .ok_or_else(|| ControlError::invalid("name", "name is required"))?;
    let spec = PlanSpec {
        name,
        description: f.string("description")?.unwrap_or_default(),
        throttle: opt_limit(&mut f, "throttle")?.flatten(),
        quota: opt_quota(&mut f)?.flatten(),
        stages: stages(&mut f)?.unwrap_or_default(),
    };
    f.done()?;
    Ok(spec)
}

fn plan_patch(req: &AdminRequest) -> Result<PlanPatch, ControlError> {
    let mut f = Fields::new(object(req)?);
    let p = PlanPatch {
        name: f.string("name")?,
        description: f.string("description")?,
        throttle: opt_limit(&mut f, "throttle")?,
        quota: opt_quota(&mut f)?,
        stages: stages(&mut f)?,
    };
    f.done()?;
    Ok(p)
}

/// `{"key_id": id}` (or API Gateway's `{"keyId": id, "keyType": "API_KEY"}`).
fn attach_body(req: &AdminRequest) -> Result<String, ControlError> {
    let mut f = Fields::new(object(req)?);
    let key = match (f.string("key_id")?, f.string("keyId")?) {
        (Some(k), None) | (None, Some(k)) => k,
        (Some(_), Some(_)) => {
            return Err(ControlError::invalid(
                "keyId",
                "give key_id or keyId, not both",
            ))
        }
        (None, None) => return Err(ControlError::invalid("key_id", "key_id is required")),
    };
    match f.string("keyType")?.as_deref() {
        None | Some("API_KEY") => {}
        Some(t) => {
            return Err(ControlError::invalid(
                "keyType",
                format!("keyType {t:?}: only API_KEY"),
            ))
        }
    }
    f.done()?;
    Ok(key)
}

/// `{"remaining": n}`, or API Gateway's
/// `{"patchOperations": [{"op": "replace", "path": "/remaining", "value": "n"}]}`.
fn remaining(req: &AdminRequest) -> Result<u64, ControlError> {
    let mut f = Fields::new(object(req)?);
    if let Some(n) = f.u64("remaining")? {
        f.done()?;
        return Ok(n);
    }
    let bad = || {
        ControlError::invalid(
            "remaining",
            "give {\"remaining\": n} or patchOperations [{\"op\": \"replace\", \"path\": \
             \"/remaining\", \"value\": \"n\"}]",
        )
    };
    let ops = match f.take("patchOperations") {
        Some(Value::Array(ops)) if ops.len() == 1 => ops,
        _ => return Err(bad()),
    };
    f.done()?;
    let op = &ops[0];
    if op["op"] != "replace" || op["path"] != "/remaining" {
        return Err(bad());
    }
    match &op["value"] {
        Value::String(s) => s.parse().map_err(|_| bad()),
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn usage(control: &Control, req: &AdminRequest, plan: &str) -> Reply {
    let day = |name: &str| -> Result<u64, ControlError> {
        let v = req.query(name).ok_or_else(|| {
            ControlError::invalid(name, format!("{name} is required (YYYY-MM-DD, UTC)"))
        })?;
        parse_day(v).ok_or_else(|| {
            ControlError::invalid(name, format!("{name} {v:?} is not a date YYYY-MM-DD"))
        })
    };
    let (start, end) = (day("startDate")?, day("endDate")?);
    let limit = match req.query("limit") {
        None => 25,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ControlError::invalid("limit", "limit is a number from 1 to 500"))?,
    };
    let r = control.usage_report(
        plan,
        start,
        end,
        req.query("keyId"),
        limit,
        req.query("position"),
    )?;
    let items: Map<String, Value> = r
        .items
        .iter()
        .map(|(k, days)| {
            (
                k.clone(),
                days.iter()
                    .map(|(used, rem)| json!([used, rem]))
                    .collect::<Value>(),
            )
        })
        .collect();
    let mut out = json!({
        "usagePlanId": r.plan,
        "startDate": format_day(r.start),
        "endDate": format_day(r.end),
        "items": items,
    });
    if let Some(p) = r.position {
        out["position"] = json!(p);
    }
    ok(out)
}
