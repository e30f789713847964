//! Turns the raw, spanned file into [`Config`], checking every value and
//! every cross-reference. Stops at the first problem, in file order within
//! each section; sections are checked in the order server, limits,
//! upstreams, apis, domains (http_proxy uris refer to upstreams).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use toml::{Spanned, Value};

use super::error::{key_segment, ConfigError, Source};
use super::raw::{
    OrderedMap, RawAccessLog, RawAccountThrottle, RawAdmin, RawApi, RawApiKey, RawConfig,
    RawDomain, RawHealthCheck, RawHttpProxy, RawKeySource, RawLimits, RawMetrics, RawMock,
    RawPassiveHealth, RawQuota, RawRoute, RawServer, RawStage, RawStageCache, RawState,
    RawThrottle, RawUpstream, RawUsagePlan,
};
use super::template::{self, ParsedRoute, Problem};
use super::{
    parse_duration, parse_size, AccessLogConfig, AdminConfig, ApiConfig, ApiKeyConfig, Balance,
    BodyPart, Config, ConfigWarning, DomainConfig, HealthCheck, HttpProxyIntegration, Integration,
    IoDriver, KeyParameter, KeySourceConfig, Limits, Mapping, MetricsConfig, MockIntegration,
    PassiveHealth, Period, PlanStageConfig, QuotaSettings, RouteCacheConfig, RouteConfig, RouteKey,
    ServerConfig, StageCacheConfig, StageConfig, StateConfig, TargetAddr, ThrottleLimit,
    UnauthorizedStrategy, UnmatchedRoute, UpstreamConfig, UsagePlanConfig, ACCOUNT_THROTTLE,
    CAPACITY_CLASSES,
};

type Result<T> = std::result::Result<T, ConfigError>;

/// The integration kinds a route may have, as `[api.route.KIND]` tables.
const INTEGRATION_KINDS: &[&str] = &["mock", "http_proxy"];

/// Headers the gateway owns; a mock may not set them.
pub(crate) const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "server",
    "keep-alive",
    "upgrade",
];

/// The largest `max_body_bytes`: 1 TiB.
const MAX_BODY_LIMIT: u64 = 1 << 40;

pub(super) fn build(raw: RawConfig, src: &Source<'_>) -> Result<Config> {
    let server = server(raw.server, src)?;
    let limits = limits(raw.limits, src)?;
    let upstreams = upstreams(&raw.upstream, src)?;
    let mut warnings = Vec::new();
    let apis = apis(&raw.api, &upstreams, &mut warnings, src)?;
    let domains = domains(&raw.domain, &raw.api, &apis, src)?;
    let state = state(raw.state.as_ref(), src)?;
    let admin = admin(raw.admin.as_ref(), src)?;
    let throttle = account_throttle(raw.throttle.as_ref(), src)?;
    let throttle_headers = raw.throttle.as_ref().and_then(|t| t.headers) == Some(true);
    let key_source = key_source(raw.key_source.as_ref(), src)?;
    let metrics = metrics(raw.metrics.as_ref(), src)?;
    let access_log = access_log(raw.access_log.as_ref(), src)?;
    let tls = super::tls::tls(raw.tls.as_ref(), &server, src)?;
    check_stage_throttles(&raw.api, &apis, throttle, src)?;
    let api_keys = api_keys(&raw.api_key, src)?;
    let usage_plans = usage_plans(&raw.usage_plan, &apis, &api_keys, throttle, src)?;
    Ok(Config {
        server,
        limits,
        apis,
        domains,
        source: src.file.to_string(),
        upstreams,
        warnings,
        state,
        admin,
        throttle,
        api_keys,
        usage_plans,
        throttle_headers,
        key_source,
        metrics,
        access_log,
        tls,
    })
}

/// A `$context` format or preset name, checked.
fn log_format(f: &Spanned<String>, key: &str, src: &Source<'_>) -> Result<()> {
    crate::observe::access_log::LogFormat::from_setting(f.get_ref())
        .map(drop)
        .map_err(|e| {
            src.error(
                &f.span(),
                key,
                e.to_string(),
                "use a preset (clf, json, csv, http_api_clf) or a format of $context variables \
                 that includes $context.requestId",
            )
        })
}

/// `[access_log]`.
fn access_log(raw: Option<&RawAccessLog>, src: &Source<'_>) -> Result<Option<AccessLogConfig>> {
    let Some(a) = raw else {
        return Ok(None);
    };
    let path = a.path.get_ref();
    if path.is_empty() {
        return Err(src.error(
            &a.path.span(),
            "access_log.path",
            "the access log path is empty",
            "name a file, e.g. path = \"/var/log/ringgate/access.log\", or \"-\" for standard output",
        ));
    }
    let format = match &a.format {
        Some(f) => {
            log_format(f, "access_log.format", src)?;
            f.get_ref().clone()
        }
        None => "clf".to_string(),
    };
    let queue = match &a.queue {
        None => 1024,
        Some(q) => match usize::try_from(*q.get_ref()) {
            Ok(n @ 1..=65_536) => n,
            _ => {
                return Err(src.error(
                    &q.span(),
                    "access_log.queue",
                    format!("queue = {} is not 1 to 65536 batches", q.get_ref()),
                    "leave it out (1024 batches of about 32 KiB) or give a number in range",
                ))
            }
        },
    };
    Ok(Some(AccessLogConfig {
        path: (path != "-").then(|| std::path::PathBuf::from(path)),
        format,
        queue,
    }))
}

/// `[metrics]`.
fn metrics(raw: Option<&RawMetrics>, src: &Source<'_>) -> Result<MetricsConfig> {
    let mut out = MetricsConfig::default();
    let Some(m) = raw else {
        return Ok(out);
    };
    out.enabled = m.enabled.unwrap_or(true);
    if let Some(l) = &m.listen {
        let addr: std::net::SocketAddr = l.get_ref().parse().map_err(|_| {
            src.error(
                &l.span(),
                "metrics.listen",
                format!("{:?} is not an address and port", l.get_ref()),
                "write it as ip:port, e.g. listen = \"127.0.0.1:9464\"",
            )
        })?;
        if !private_ip(addr.ip()) {
            return Err(src.error(
                &l.span(),
                "metrics.listen",
                format!(
                    "{addr} is not a loopback or private address: the metrics listener has no \
                     authentication"
                ),
                "listen on 127.0.0.1 (or a private address your scraper reaches, e.g. 10.0.0.5:9464)",
            ));
        }
        out.listen = Some(addr);
    }
    Ok(out)
}

/// Loopback, RFC 1918, IPv6 unique-local or link-local: an address not
/// reachable from the internet.
fn private_ip(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        std::net::IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

// --- API keys and usage plans -------------------------------------------------

fn api_keys(raw: &[RawApiKey], src: &Source<'_>) -> Result<Vec<ApiKeyConfig>> {
    let mut out: Vec<ApiKeyConfig> = Vec::new();
    for (i, k) in raw.iter().enumerate() {
        let p = format!("api_key[{i}]");
        check_name(&k.name, 64, &format!("{p}.name"), "api key name", src)?;
        let name = k.name.get_ref();
        if out.iter().any(|o| o.name == *name) {
            return Err(src.error(
                &k.name.span(),
                format!("{p}.name"),
                format!("duplicate api key name {name:?}"),
                "give each [[api_key]] a different name",
            ));
        }
        let value = k.value.get_ref();
        let n = value.chars().count();
        if !(20..=128).contains(&n) || !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(src.error(
                &k.value.span(),
                format!("{p}.value"),
                format!("api key {name:?} has a value of {n} characters, or characters that are not printable ASCII"),
                "use 20 to 128 printable ASCII characters without spaces, e.g. from `head -c 30 /dev/urandom | base64`",
            ));
        }
        if let Some(o) = out.iter().find(|o| o.value == *value) {
            return Err(src.error(
                &k.value.span(),
                format!("{p}.value"),
                format!("api key {name:?} has the same value as {:?}", o.name),
                "give each key a value of its own",
            ));
        }
        out.push(ApiKeyConfig {
            name: name.clone(),
            value: value.clone(),
            enabled: k.enabled.unwrap_or(true),
        });
    }
    Ok(out)
}

fn usage_plans(
    raw: &[RawUsagePlan],
    apis: &[ApiConfig],
    keys: &[ApiKeyConfig],
    account: Option<ThrottleLimit>,
    src: &Source<'_>,
) -> Result<Vec<UsagePlanConfig>> {
    let mut out: Vec<UsagePlanConfig> = Vec::new();
    // (key, api, stage) -> plan, for "at most one plan per stage".
    let mut taken: HashMap<(String, String, String), String> = HashMap::new();
    let too_high =
        |l: &ThrottleLimit| account.is_some_and(|a| l.rate > a.rate || l.burst > a.burst);
    for (i, p) in raw.iter().enumerate() {
        let k = format!("usage_plan[{i}]");
        check_name(&p.name, 64, &format!("{k}.name"), "usage plan name", src)?;
        let name = p.name.get_ref().clone();
        if out.iter().any(|o| o.name == name) {
            return Err(src.error(
                &p.name.span(),
                format!("{k}.name"),
                format!("duplicate usage plan name {name:?}"),
                "give each [[usage_plan]] a different name",
            ));
        }
        let throttle = match &p.throttle {
            Some(t) => throttle_limit(t, &format!("{k}.throttle"), src)?,
            None => None,
        };
        if let (Some(l), Some(t)) = (&throttle, &p.throttle) {
            if too_high(l) {
                return Err(src.error(
                    &t.rate.span(),
                    format!("{k}.throttle"),
                    "a plan's limit may not be above the account's [throttle]",
                    "lower the plan's rate and burst, or raise [throttle]",
                ));
            }
        }
        let quota = match &p.quota {
            Some(q) => Some(quota(q, &format!("{k}.quota"), src)?),
            None => None,
        };
        let mut stages = Vec::new();
        for (j, s) in p.stage.iter().enumerate() {
            let sk = format!("{k}.stage[{j}]");
            let api = apis
                .iter()
                .find(|a| a.name == *s.api.get_ref())
                .ok_or_else(|| {
                    src.error(
                        &s.api.span(),
                        format!("{sk}.api"),
                        format!(
                            "usage plan {name:?} names api {:?}, which is not defined",
                            s.api.get_ref()
                        ),
                        "name an [[api]] of this file",
                    )
                })?;
            if api.stage(s.stage.get_ref()).is_none() {
                return Err(src.error(
                    &s.stage.span(),
                    format!("{sk}.stage"),
                    format!("api {:?} has no stage {:?}", api.name, s.stage.get_ref()),
                    "name one of the api's [[api.stage]]s",
                ));
            }
            let mut route_throttle = BTreeMap::new();
            for (route, t) in s.route_throttle.iter().flatten() {
                let rk = format!("{sk}.route_throttle.{}", key_segment(route));
                if !api.routes.iter().any(|r| r.key.as_display() == *route) {
                    return Err(src.error(
                        &t.rate.span(),
                        &rk,
                        format!("api {:?} has no route {route:?}", api.name),
                        "name one of its routes as written, e.g. \"GET /pets/{id}\"",
                    ));
                }
                if let Some(l) = throttle_limit(t, &rk, src)? {
                    if too_high(&l) {
                        return Err(src.error(
                            &t.rate.span(),
                            &rk,
                            "a plan's limit may not be above the account's [throttle]",
                            "lower the limit, or raise [throttle]",
                        ));
                    }
                    route_throttle.insert(route.to_string(), l);
                }
            }
            stages.push(PlanStageConfig {
                api: api.name.clone(),
                stage: s.stage.get_ref().clone(),
                route_throttle,
            });
        }
        let mut plan_keys = Vec::new();
        for (j, key) in p.keys.iter().enumerate() {
            let kk = format!("{k}.keys[{j}]");
            if !keys.iter().any(|x| x.name == *key.get_ref()) {
                return Err(src.error(
                    &key.span(),
                    kk,
                    format!(
                        "usage plan {name:?} lists key {:?}, which no [[api_key]] defines",
                        key.get_ref()
                    ),
                    "define the key with [[api_key]] name = ... value = ...",
                ));
            }
            for s in &stages {
                let slot = (key.get_ref().clone(), s.api.clone(), s.stage.clone());
                if let Some(other) = taken.insert(slot, name.clone()) {
                    return Err(src.error(
                        &key.span(),
                        kk,
                        format!(
                            "key {:?} is in usage plans {other:?} and {name:?} for stage {:?} of api {:?}",
                            key.get_ref(), s.stage, s.api
                        ),
                        "a key may be in at most one plan per stage: remove it from one",
                    ));
                }
            }
            plan_keys.push(key.get_ref().clone());
        }
        out.push(UsagePlanConfig {
            name,
            throttle,
            quota,
            keys: plan_keys,
            stages,
        });
    }
    Ok(out)
}

/// `quota = { limit, period, offset }`.
fn quota(q: &Spanned<RawQuota>, key: &str, src: &Source<'_>) -> Result<QuotaSettings> {
    let r = q.get_ref();
    let limit = *r.limit.get_ref();
    if limit < 0 {
        return Err(src.error(
            &r.limit.span(),
            format!("{key}.limit"),
            format!("a quota limit of {limit} is negative"),
            "give the requests allowed per period, 0 or more",
        ));
    }
    let Some(period) = Period::parse(r.period.get_ref()) else {
        return Err(src.error(
            &r.period.span(),
            format!("{key}.period"),
            format!("{:?} is not a quota period", r.period.get_ref()),
            "use \"DAY\", \"WEEK\" (from Monday 00:00 UTC) or \"MONTH\"",
        ));
    };
    let offset = match &r.offset {
        None => 0,
        Some(o) if *o.get_ref() < 0 || *o.get_ref() > limit => {
            return Err(src.error(
                &o.span(),
                format!("{key}.offset"),
                format!(
                    "an offset of {} is outside 0..=limit ({limit})",
                    o.get_ref()
                ),
                "the offset is taken off the limit in the first period only: 0 to the limit",
            ));
        }
        Some(o) => *o.get_ref() as u64,
    };
    Ok(QuotaSettings {
        limit: limit as u64,
        period,
        offset,
    })
}

// --- throttling ----------------------------------------------------------------

/// The largest rate and burst accepted anywhere (far above what one host
/// serves; keeps the bucket arithmetic in range).
const MAX_RATE: f64 = 1e9;
const MAX_BURST: i64 = 1_000_000_000;

/// A `{ rate, burst }` table; `rate = -1` means no limit (`None`).
fn throttle_limit(t: &RawThrottle, key: &str, src: &Source<'_>) -> Result<Option<ThrottleLimit>> {
    let rate = match t.rate.get_ref() {
        Value::Integer(n) => *n as f64,
        Value::Float(f) => *f,
        other => {
            return Err(src.error(
                &t.rate.span(),
                format!("{key}.rate"),
                format!(
                    "rate must be a number of requests per second, found {}",
                    describe(other)
                ),
                "write e.g. rate = 100 or rate = 0.5 (-1: no limit)",
            ))
        }
    };
    if rate == -1.0 {
        return Ok(None);
    }
    if !(rate.is_finite() && (0.0..=MAX_RATE).contains(&rate)) {
        return Err(src.error(
            &t.rate.span(),
            format!("{key}.rate"),
            format!("rate {rate} is not between 0 and {MAX_RATE}"),
            "use a rate from 0 to 1e9 requests per second, or -1 for no limit",
        ));
    }
    let Some(burst) = &t.burst else {
        return Err(src.error(
            &t.rate.span(),
            format!("{key}.burst"),
            "a limit needs a burst (the bucket's capacity) besides its rate",
            "add burst = N, e.g. { rate = 100, burst = 50 }",
        ));
    };
    let burst = int_range(burst, &format!("{key}.burst"), "burst", 0, MAX_BURST, src)? as u32;
    Ok(Some(ThrottleLimit { rate, burst }))
}

/// The top-level `[throttle]`: `rate` and `burst` as any limit, both
/// optional (absent: API Gateway's default), besides `headers`.
fn account_throttle(
    raw: Option<&RawAccountThrottle>,
    src: &Source<'_>,
) -> Result<Option<ThrottleLimit>> {
    let Some(t) = raw else {
        return Ok(Some(ACCOUNT_THROTTLE));
    };
    match (&t.rate, &t.burst) {
        (None, None) => Ok(Some(ACCOUNT_THROTTLE)),
        (None, Some(burst)) => Err(src.error(
            &burst.span(),
            "throttle.rate",
            "[throttle] has a burst but no rate",
            "add rate = N next to burst (or remove both for the default 10,000 / 5,000)",
        )),
        (Some(rate), burst) => throttle_limit(
            &RawThrottle {
                rate: rate.clone(),
                burst: burst.clone(),
            },
            "throttle",
            src,
        ),
    }
}

/// Headers a `[key_source] header` may not name: the gateway sets or
/// rewrites them on the way to a backend (or they frame the request).
const GATEWAY_OWNED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-request-id",
];

/// `[key_source]`.
fn key_source(raw: Option<&RawKeySource>, src: &Source<'_>) -> Result<KeySourceConfig> {
    let mut out = KeySourceConfig::default();
    let Some(k) = raw else {
        return Ok(out);
    };
    if let Some(h) = &k.header {
        let name = header_name(h, "key_source.header", src)?;
        if GATEWAY_OWNED_HEADERS.contains(&name.as_str()) || name.starts_with("proxy-") {
            return Err(src.error(
                &h.span(),
                "key_source.header",
                format!("{name:?} is a header the gateway itself sets or frames requests with"),
                "name a header of your own for the key, e.g. header = \"x-api-key\"",
            ));
        }
        out.header = name;
    }
    if let Some(q) = &k.query {
        let name = q.get_ref();
        let unreserved = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-');
        if name.is_empty() || name.len() > 64 || !name.chars().all(unreserved) {
            return Err(src.error(
                &q.span(),
                "key_source.query",
                format!("{name:?} is not a query parameter name of 1 to 64 letters, digits, '.', '_', '~' or '-'"),
                "use a plain name that needs no percent-encoding, e.g. query = \"apikey\"",
            ));
        }
        out.query = Some(name.clone());
    }
    out.hide = k.hide.unwrap_or(false);
    Ok(out)
}

/// Stage limits may not exceed the account's (as in API Gateway).
fn check_stage_throttles(
    raw: &[RawApi],
    apis: &[ApiConfig],
    account: Option<ThrottleLimit>,
    src: &Source<'_>,
) -> Result<()> {
    let Some(account) = account else {
        return Ok(());
    };
    for (i, (ra, a)) in raw.iter().zip(apis).enumerate() {
        for (j, (rs, s)) in ra.stage.iter().zip(&a.stages).enumerate() {
            let limits = s.throttle.iter().chain(s.route_throttle.values());
            for l in limits {
                if l.rate > account.rate || l.burst > account.burst {
                    let span = rs
                        .throttle
                        .as_ref()
                        .map(|t| t.rate.span())
                        .or_else(|| {
                            rs.route_throttle
                                .as_ref()
                                .and_then(|m| m.values().next())
                                .map(|t| t.rate.span())
                        })
                        .unwrap_or_else(|| rs.name.span());
                    return Err(src.error(
                        &span,
                        format!("api[{i}].stage[{j}].throttle"),
                        format!(
                            "stage {:?} allows rate {} / burst {}, more than the account's \
                             rate {} / burst {}",
                            s.name, l.rate, l.burst, account.rate, account.burst
                        ),
                        "lower the stage's limit, or raise [throttle] rate and burst",
                    ));
                }
            }
        }
    }
    Ok(())
}

// --- [state] and [admin] -----------------------------------------------------

fn path_value(v: &Spanned<String>, key: &str, src: &Source<'_>) -> Result<std::path::PathBuf> {
    let s = v.get_ref();
    if s.is_empty() || s.contains('\0') {
        return Err(src.error(
            &v.span(),
            key,
            format!("{key} {s:?} is not a usable path"),
            "write a path, absolute or relative to the configuration file's directory",
        ));
    }
    Ok(std::path::PathBuf::from(s))
}

fn state(raw: Option<&RawState>, src: &Source<'_>) -> Result<StateConfig> {
    let dir = match raw.and_then(|r| r.dir.as_ref()) {
        Some(d) => Some(path_value(d, "state.dir", src)?),
        None => None,
    };
    Ok(StateConfig { dir })
}

fn admin(raw: Option<&RawAdmin>, src: &Source<'_>) -> Result<AdminConfig> {
    let Some(raw) = raw else {
        return Ok(AdminConfig::default());
    };
    let socket = match &raw.socket {
        Some(s) => Some(path_value(s, "admin.socket", src)?),
        None => None,
    };
    let token_file = match &raw.token_file {
        Some(s) => Some(path_value(s, "admin.token_file", src)?),
        None => None,
    };
    let listen = match &raw.listen {
        Some(l) => {
            let addr = parse_listen(l.get_ref())
                .map_err(|p| problem_at(src, &l.span(), "admin.listen", p))?;
            if !addr.ip().is_loopback() {
                return Err(src.error(
                    &l.span(),
                    "admin.listen",
                    format!("admin listen address {addr} is not a loopback address"),
                    "the TCP admin listener only listens on loopback: use 127.0.0.1 or [::1] \
                     (reach it from elsewhere through an SSH tunnel)",
                ));
            }
            if token_file.is_none() {
                return Err(src.error(
                    &l.span(),
                    "admin.listen",
                    "admin.listen needs admin.token_file: the TCP listener requires a bearer token",
                    "add token_file = \"admin.token\" (a file holding the token) under [admin]",
                ));
            }
            Some(addr)
        }
        None => None,
    };
    if let (Some(t), None) = (&raw.token_file, &listen) {
        return Err(src.error(
            &t.span(),
            "admin.token_file",
            "admin.token_file is only used by the TCP listener, and admin.listen is not set",
            "add listen = \"127.0.0.1:9901\" under [admin], or remove token_file",
        ));
    }
    Ok(AdminConfig {
        socket,
        listen,
        token_file,
    })
}

// --- value helpers -----------------------------------------------------------

/// "integer 5", "boolean true", "string \"x\"", ...
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(f) => format!("float {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("date-time {d}"),
        Value::Array(_) => "an array".to_string(),
        Value::Table(_) => "a table".to_string(),
    }
}

fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn int_range(
    v: &Spanned<i64>,
    key: &str,
    name: &str,
    min: i64,
    max: i64,
    src: &Source<'_>,
) -> Result<i64> {
    let n = *v.get_ref();
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(src.error(
            &v.span(),
            key,
            format!("{name} must be between {min} and {max}, found {n}"),
            format!("use a value from {min} to {max}"),
        ))
    }
}

fn duration(
    v: &Spanned<Value>,
    key: &str,
    name: &str,
    min: Duration,
    max: Duration,
    src: &Source<'_>,
) -> Result<Duration> {
    let span = v.span();
    let d = match v.get_ref() {
        Value::String(s) => parse_duration(s).map_err(|why| {
            src.error(
                &span,
                key,
                format!("invalid duration {s:?}: {why}"),
                "write a number and a unit ms, s, m or h, parts adding up, e.g. \"500ms\", \"10s\", \"1m30s\", \"1h\"",
            )
        })?,
        other => {
            return Err(src.error(
                &span,
                key,
                format!("{name} must be a duration string like \"10s\", found {}", describe(other)),
                format!("write it as a string with a unit, e.g. {name} = \"10s\""),
            ))
        }
    };
    if d < min || d > max {
        return Err(src.error(
            &span,
            key,
            format!(
                "{name} must be between {} and {}, found {}",
                fmt_duration(min),
                fmt_duration(max),
                fmt_duration(d)
            ),
            format!(
                "use a duration from {} to {}",
                fmt_duration(min),
                fmt_duration(max)
            ),
        ));
    }
    Ok(d)
}

fn problem_at(src: &Source<'_>, span: &Range<usize>, key: &str, p: Problem) -> ConfigError {
    src.error(span, key, p.problem, p.fix)
}

// --- [server] ----------------------------------------------------------------

/// A list of listen addresses (`key`), none twice, none in `others`
/// (the plain listeners, for `listen_tls`).
fn listen_addrs(
    listen: &Spanned<Vec<Spanned<String>>>,
    key: &str,
    others: &[SocketAddr],
    src: &Source<'_>,
) -> Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (i, a) in listen.get_ref().iter().enumerate() {
        let key = format!("{key}[{i}]");
        let addr = parse_listen(a.get_ref()).map_err(|p| problem_at(src, &a.span(), &key, p))?;
        if addr.port() != 0 {
            if let Some(j) = addrs.iter().position(|b| *b == addr) {
                return Err(src.error(
                    &a.span(),
                    key,
                    format!("listen address {addr} is listed twice (also at index {j})"),
                    "remove one of them",
                ));
            }
            if others.contains(&addr) {
                return Err(src.error(
                    &a.span(),
                    key,
                    format!("{addr} is also in server.listen: one port cannot serve both plain HTTP and TLS"),
                    "use another port for TLS, e.g. 8443",
                ));
            }
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

fn server(raw: Option<RawServer>, src: &Source<'_>) -> Result<ServerConfig> {
    let mut out = ServerConfig::default();
    let Some(raw) = raw else { return Ok(out) };
    if let Some(listen) = &raw.listen {
        if listen.get_ref().is_empty() {
            return Err(src.error(
                &listen.span(),
                "server.listen",
                "listen is empty",
                "give at least one address, e.g. listen = [\"127.0.0.1:8080\"]",
            ));
        }
        out.listen = listen_addrs(listen, "server.listen", &[], src)?;
    }
    if let Some(listen) = &raw.listen_tls {
        out.listen_tls = listen_addrs(listen, "server.listen_tls", &out.listen, src)?;
    }
    if let Some(w) = &raw.workers {
        out.workers = match w.get_ref() {
            Value::String(s) if s == "auto" => None,
            Value::Integer(n) if (1..=1024).contains(n) => Some(*n as usize),
            Value::Integer(n) => {
                return Err(src.error(
                    &w.span(),
                    "server.workers",
                    format!("workers must be between 1 and 1024, found {n}"),
                    "use an integer from 1 to 1024, or \"auto\" for one worker per core",
                ))
            }
            other => {
                return Err(src.error(
                    &w.span(),
                    "server.workers",
                    format!(
                        "workers must be \"auto\" or an integer, found {}",
                        describe(other)
                    ),
                    "write workers = \"auto\" (one per core) or an integer from 1 to 1024",
                ))
            }
        };
    }
    if let Some(p) = raw.pin_workers {
        out.pin_workers = p;
    }
    if let Some(d) = &raw.io_driver {
        out.io_driver = match d.get_ref().as_str() {
            "auto" => IoDriver::Auto,
            "io_uring" => IoDriver::IoUring,
            "epoll" => IoDriver::Epoll,
            other => {
                return Err(src.error(
                    &d.span(),
                    "server.io_driver",
                    format!("unknown io_driver {other:?}"),
                    "use \"auto\", \"io_uring\" or \"epoll\"",
                ))
            }
        };
    }
    if let Some(r) = &raw.ring_entries {
        let n = *r.get_ref();
        if !(64..=32768).contains(&n) || !(n as u64).is_power_of_two() {
            let near = (n.clamp(64, 32768) as u64).next_power_of_two().min(32768);
            return Err(src.error(
                &r.span(),
                "server.ring_entries",
                format!("ring_entries must be a power of two from 64 to 32768, found {n}"),
                format!("use a power of two such as {near}"),
            ));
        }
        out.ring_entries = n as u32;
    }
    if let Some(d) = &raw.drain_timeout {
        out.drain_timeout = duration(
            d,
            "server.drain_timeout",
            "drain_timeout",
            Duration::ZERO,
            Duration::from_secs(3600),
            src,
        )?;
    }
    if let Some(p) = &raw.health_path {
        let v = p.get_ref();
        let ok = v.starts_with('/')
            && v.len() <= 256
            && v.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        if !ok {
            return Err(src.error(
                &p.span(),
                "server.health_path",
                format!("{v:?} is not a request path"),
                "use an absolute path without a query, e.g. health_path = \"/ringgate/health\"",
            ));
        }
        out.health_path = Some(v.clone());
    }
    Ok(out)
}

fn parse_listen(s: &str) -> std::result::Result<SocketAddr, Problem> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if s.parse::<IpAddr>().is_ok() {
        return Err(Problem {
            problem: format!("listen address {s:?} has no port"),
            fix: format!(
                "add a port, e.g. \"{s}:8080\" (IPv6 as \"[::1]:8080\"; port 0 lets the OS choose)"
            ),
        });
    }
    Err(Problem {
        problem: format!("invalid listen address {s:?}"),
        fix: "write an IP address and a port, e.g. \"127.0.0.1:8080\", \"0.0.0.0:80\" or \"[::]:8080\"; \
              host names are not resolved"
            .to_string(),
    })
}

// --- [limits] ----------------------------------------------------------------

fn limits(raw: Option<RawLimits>, src: &Source<'_>) -> Result<Limits> {
    let mut out = Limits::default();
    let Some(raw) = raw else { return Ok(out) };
    let int = |value: &Option<Spanned<i64>>, name: &str, min: i64, max: i64, slot: &mut usize| {
        if let Some(v) = value {
            *slot = int_range(v, &format!("limits.{name}"), name, min, max, src)? as usize;
        }
        Ok::<(), ConfigError>(())
    };
    int(
        &raw.max_header_bytes,
        "max_header_bytes",
        1024,
        1 << 20,
        &mut out.max_header_bytes,
    )?;
    int(
        &raw.max_headers,
        "max_headers",
        1,
        128,
        &mut out.max_headers,
    )?;
    int(
        &raw.max_url_bytes,
        "max_url_bytes",
        64,
        1 << 20,
        &mut out.max_url_bytes,
    )?;
    int(
        &raw.max_connections_per_worker,
        "max_connections_per_worker",
        1,
        1_000_000,
        &mut out.max_connections_per_worker,
    )?;
    if let Some(v) = &raw.max_body_bytes {
        out.max_body_bytes = body_size(v, src)?;
    }
    if let Some(v) = &raw.header_read_timeout {
        out.header_read_timeout = duration(
            v,
            "limits.header_read_timeout",
            "header_read_timeout",
            Duration::from_millis(100),
            Duration::from_secs(3600),
            src,
        )?;
    }
    if let Some(v) = &raw.keepalive_timeout {
        out.keepalive_timeout = duration(
            v,
            "limits.keepalive_timeout",
            "keepalive_timeout",
            Duration::from_secs(1),
            Duration::from_secs(3600),
            src,
        )?;
    }
    Ok(out)
}

fn body_size(v: &Spanned<Value>, src: &Source<'_>) -> Result<u64> {
    const KEY: &str = "limits.max_body_bytes";
    let span = v.span();
    let n = match v.get_ref() {
        Value::Integer(n) if *n >= 0 => *n as u64,
        Value::String(s) => parse_size(s).ok_or_else(|| {
            let mut fix = "write a number of bytes, or a string with a unit B, KiB, MiB, GiB or TiB, e.g. \"10MiB\"".to_string();
            if let Some(stem) = ["KB", "MB", "GB", "TB"].iter().find_map(|u| s.strip_suffix(u)) {
                let unit = &s[stem.len()..stem.len() + 1];
                fix = format!("sizes use binary units: write \"{stem}{unit}iB\"");
            }
            src.error(&span, KEY, format!("invalid size {s:?}"), fix)
        })?,
        other => {
            return Err(src.error(
                &span,
                KEY,
                format!("max_body_bytes must be a size, found {}", describe(other)),
                "write a number of bytes, or a string with a unit B, KiB, MiB, GiB or TiB, e.g. \"10MiB\"",
            ))
        }
    };
    if n > MAX_BODY_LIMIT {
        return Err(src.error(
            &span,
            KEY,
            format!("max_body_bytes must be at most 1TiB ({MAX_BODY_LIMIT} bytes), found {n}"),
            "use a size from 0 to \"1TiB\"",
        ));
    }
    Ok(n)
}

// --- [[api]] -----------------------------------------------------------------

fn name_ok(s: &str, max: usize, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// Checks a `[A-Za-z0-9_-]{1,max}` name.
fn check_name(
    v: &Spanned<String>,
    max: usize,
    key: &str,
    what: &str,
    src: &Source<'_>,
) -> Result<()> {
    let s = v.get_ref();
    if name_ok(s, max, &['_', '-']) {
        return Ok(());
    }
    let problem = if s.is_empty() {
        format!("{what} is empty")
    } else if s.len() > max {
        format!("{what} {s:?} is longer than {max} characters")
    } else {
        format!("{what} {s:?} contains characters other than letters, digits, '_' and '-'")
    };
    Err(src.error(
        &v.span(),
        key,
        problem,
        format!("use 1 to {max} letters, digits, '_' or '-'"),
    ))
}

/// Lowercases a Host value and drops its port; `Err` says what is wrong.
fn normalize_host(s: &str) -> std::result::Result<String, String> {
    if s.is_empty() {
        return Err("is empty".to_string());
    }
    let lower = s.to_ascii_lowercase();
    let (host, port) = if let Some(rest) = lower.strip_prefix('[') {
        let end = rest.find(']').ok_or("has '[' without ']'")?;
        if rest[..end].parse::<Ipv6Addr>().is_err() {
            return Err("is not a valid IPv6 address".to_string());
        }
        (lower[..end + 2].to_string(), &rest[end + 1..])
    } else {
        match lower.find(':') {
            Some(i) => (lower[..i].to_string(), &lower[i..]),
            None => (lower.clone(), ""),
        }
    };
    if let Some(after) = port.chars().next() {
        // `port` is what follows the host: ":" and digits, or nothing.
        if after != ':' || port[1..].parse::<u16>().is_err() {
            return Err("has an invalid port".to_string());
        }
    }
    if !host.starts_with('[') {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if host.len() > 253 || !host.split('.').all(label_ok) {
            return Err("is not a valid host name".to_string());
        }
    }
    Ok(host)
}

fn host_error(src: &Source<'_>, v: &Spanned<String>, key: &str, why: &str) -> ConfigError {
    src.error(
        &v.span(),
        key,
        format!("host {:?} {why}", v.get_ref()),
        "write a host name like \"api.example.com\" or an IP address; a port, if given, is ignored",
    )
}

fn apis(
    raw: &[RawApi],
    upstreams: &[UpstreamConfig],
    warnings: &mut Vec<ConfigWarning>,
    src: &Source<'_>,
) -> Result<Vec<ApiConfig>> {
    let mut out: Vec<ApiConfig> = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut host_owner: HashMap<String, (String, usize)> = HashMap::new();
    let mut hostless: Option<(String, usize)> = None;
    for (i, a) in raw.iter().enumerate() {
        let p = format!("api[{i}]");
        let name = a.name.get_ref().as_str();
        let name_line = src.line(&a.name.span());
        check_name(&a.name, 64, &format!("{p}.name"), "api name", src)?;
        if let Some(line) = names.insert(name, name_line) {
            return Err(src.error(
                &a.name.span(),
                format!("{p}.name"),
                format!("duplicate api name {name:?}; the first is on line {line}"),
                "give each [[api]] a different name",
            ));
        }

        let mut hosts = Vec::new();
        match &a.hosts {
            Some(list) if list.get_ref().is_empty() => {
                return Err(src.error(
                    &list.span(),
                    format!("{p}.hosts"),
                    "hosts is empty",
                    "list at least one host, or remove the key to let this api answer any host not claimed otherwise",
                ))
            }
            Some(list) => {
                for (j, h) in list.get_ref().iter().enumerate() {
                    let key = format!("{p}.hosts[{j}]");
                    if h.get_ref() == "*" {
                        return Err(src.error(
                            &h.span(),
                            key,
                            "\"*\" is only allowed as a [[domain]] host",
                            "remove `hosts` from this api to let it answer any host not claimed otherwise",
                        ));
                    }
                    let host = normalize_host(h.get_ref()).map_err(|why| host_error(src, h, &key, &why))?;
                    if let Some((owner, line)) = host_owner.get(&host) {
                        return Err(src.error(
                            &h.span(),
                            key,
                            format!("host {host:?} is already claimed by api {owner:?} (line {line})"),
                            "a host may be listed by one api only; remove one of them",
                        ));
                    }
                    host_owner.insert(host.clone(), (name.to_string(), src.line(&h.span())));
                    hosts.push(host);
                }
            }
            None => {
                if let Some((other, line)) = &hostless {
                    return Err(src.error(
                        &a.name.span(),
                        format!("{p}.hosts"),
                        format!("api {name:?} has no hosts, and neither has api {other:?} (line {line}); at most one api may omit hosts"),
                        format!("add hosts = [\"...\"] to api {name:?} or to api {other:?}"),
                    ));
                }
                hostless = Some((name.to_string(), name_line));
            }
        }

        let unmatched_route = match a.unmatched_route.as_ref() {
            None => UnmatchedRoute::MissingAuthenticationToken,
            Some(u) => match u.get_ref().as_str() {
                "missing_authentication_token" => UnmatchedRoute::MissingAuthenticationToken,
                "not_found" => UnmatchedRoute::NotFound,
                other => {
                    return Err(src.error(
                        &u.span(),
                        format!("{p}.unmatched_route"),
                        format!("unknown unmatched_route {other:?}"),
                        "use \"missing_authentication_token\" (403, REST API style) or \"not_found\" (404, HTTP API style)",
                    ))
                }
            },
        };

        if a.stage.is_empty() {
            return Err(src.error(
                &a.name.span(),
                format!("{p}.stage"),
                format!("api {name:?} has no stage"),
                "add a stage: [[api.stage]] with name = \"prod\"",
            ));
        }
        let mut stages: Vec<StageConfig> = Vec::new();
        let mut stage_lines: Vec<usize> = Vec::new();
        for (j, s) in a.stage.iter().enumerate() {
            let stage = stage(s, &format!("{p}.stage[{j}]"), src)?;
            if let Some(k) = stages.iter().position(|o| o.name == stage.name) {
                return Err(src.error(
                    &s.name.span(),
                    format!("{p}.stage[{j}].name"),
                    format!(
                        "duplicate stage name {:?}; the first is on line {}",
                        stage.name, stage_lines[k]
                    ),
                    "give each stage of an api a different name",
                ));
            }
            stage_lines.push(src.line(&s.name.span()));
            stages.push(stage);
        }

        let mut routes: Vec<RouteConfig> = Vec::new();
        let mut shapes: HashMap<String, (usize, String)> = HashMap::new();
        let ctx = ApiCtx {
            api: name,
            stages: &stages,
            stage_lines: &stage_lines,
            upstreams,
            src,
        };
        for (j, r) in a.route.iter().enumerate() {
            let rp = format!("{p}.route[{j}]");
            let route = route(r, &rp, &ctx, warnings)?;
            if let Some((line, first)) = shapes.get(&route.1) {
                let (problem, fix) = if route.1 == "$default" {
                    (
                        format!("duplicate $default route; the first is on line {line}"),
                        "keep one $default route per api".to_string(),
                    )
                } else {
                    (
                        format!(
                            "route {:?} conflicts with {first:?} on line {line} (same method and path; parameter names do not matter)",
                            r.route.get_ref()
                        ),
                        "remove one of them or change one path".to_string(),
                    )
                };
                return Err(src.error(&r.route.span(), format!("{rp}.route"), problem, fix));
            }
            shapes.insert(route.1, (route.0.line, r.route.get_ref().clone()));
            routes.push(route.0);
        }

        for (j, (rs, st)) in a.stage.iter().zip(&stages).enumerate() {
            for (route, t) in rs.route_throttle.iter().flatten() {
                if !routes.iter().any(|r| r.key.as_display() == *route) {
                    let known: Vec<String> = routes.iter().map(|r| r.key.as_display()).collect();
                    return Err(src.error(
                        &t.rate.span(),
                        format!("{p}.stage[{j}].route_throttle.{}", key_segment(route)),
                        format!(
                            "stage {:?} limits route {route:?}, which api {name:?} does not have",
                            st.name
                        ),
                        format!("name one of its routes as written: {}", known.join(", ")),
                    ));
                }
            }
        }

        out.push(ApiConfig {
            name: name.to_string(),
            hosts,
            unmatched_route,
            stages,
            routes,
        });
    }
    Ok(out)
}

/// What is wrong with a stage variable's value, if anything.
pub(super) fn variable_value_problem(value: &str) -> Option<String> {
    let bad = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~:/?#&=,".contains(*c)));
    if value.is_empty() {
        Some("is empty".to_string())
    } else if value.chars().count() > 512 {
        Some("is longer than 512 characters".to_string())
    } else {
        bad.map(|c| format!("contains {c:?}, which is not allowed"))
    }
}

fn stage(s: &RawStage, p: &str, src: &Source<'_>) -> Result<StageConfig> {
    check_name(&s.name, 128, &format!("{p}.name"), "stage name", src)?;
    let mut variables = BTreeMap::new();
    let entries = s.variables.as_ref().map_or(&[][..], |v| &v.0[..]);
    for (n, (k, v)) in entries.iter().enumerate() {
        let key = format!("{p}.variables.{}", key_segment(k.get_ref()));
        if n == 100 {
            return Err(src.error(
                &k.span(),
                key,
                "a stage may have at most 100 variables",
                "remove some variables",
            ));
        }
        if !template::variable_name_ok(k.get_ref()) {
            return Err(src.error(
                &k.span(),
                key,
                format!("stage variable name {:?} is not valid", k.get_ref()),
                "use 1 to 64 letters, digits or '_'",
            ));
        }
        let value = v.get_ref();
        if let Some(problem) = variable_value_problem(value) {
            return Err(src.error(
                &v.span(),
                key,
                format!("value of stage variable {:?} {problem}", k.get_ref()),
                "use 1 to 512 characters from letters, digits and - . _ ~ : / ? # & = ,",
            ));
        }
        variables.insert(k.get_ref().clone(), value.clone());
    }
    let cache = match &s.cache {
        Some(c) => Some(stage_cache(c, &format!("{p}.cache"), src)?),
        None => None,
    };
    let throttle = match &s.throttle {
        Some(t) => throttle_limit(t, &format!("{p}.throttle"), src)?,
        None => None,
    };
    let mut route_throttle = BTreeMap::new();
    for (route, t) in s.route_throttle.iter().flatten() {
        let key = format!("{p}.route_throttle.{}", key_segment(route));
        if let Some(limit) = throttle_limit(t, &key, src)? {
            route_throttle.insert(route.clone(), limit);
        }
    }
    Ok(StageConfig {
        name: s.name.get_ref().clone(),
        auto_deploy: s.auto_deploy.unwrap_or(true),
        variables,
        cache,
        throttle,
        route_throttle,
        detailed_metrics: s.detailed_metrics.unwrap_or(false),
        access_log_format: match &s.access_log_format {
            None => None,
            Some(f) if f.get_ref() == "off" => Some("off".to_string()),
            Some(f) => {
                log_format(f, &format!("{p}.access_log_format"), src)?;
                Some(f.get_ref().clone())
            }
        },
    })
}

/// What a route's integration may refer to.
struct ApiCtx<'a, 's> {
    /// The api's name.
    api: &'a str,
    stages: &'a [StageConfig],
    /// Line of each stage's name.
    stage_lines: &'a [usize],
    upstreams: &'a [UpstreamConfig],
    src: &'a Source<'s>,
}

/// Validates one route; returns it with its conflict shape.
fn route(
    r: &RawRoute,
    p: &str,
    ctx: &ApiCtx<'_, '_>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<(RouteConfig, String)> {
    let (stages, stage_lines, src) = (ctx.stages, ctx.stage_lines, ctx.src);
    let span = r.route.span();
    let parsed = template::parse_route(r.route.get_ref())
        .map_err(|e| problem_at(src, &span, &format!("{p}.route"), e))?;
    let kinds = INTEGRATION_KINDS
        .iter()
        .map(|k| format!("[api.route.{k}]"))
        .collect::<Vec<_>>()
        .join(", ");
    let integration = match (&r.mock, &r.http_proxy) {
        (Some(_), Some(_)) => {
            return Err(src.error(
                &span,
                p,
                format!(
                    "route {:?} has two integrations, [api.route.mock] and [api.route.http_proxy]",
                    r.route.get_ref()
                ),
                "keep exactly one integration table per route",
            ))
        }
        (Some(mock), None) => Integration::Mock(mock_integration(
            mock,
            p,
            &parsed.params,
            stages,
            stage_lines,
            src,
        )?),
        (None, Some(h)) => Integration::HttpProxy(http_proxy_integration(
            h,
            &format!("{p}.http_proxy"),
            &parsed.params,
            ctx,
            warnings,
        )?),
        (None, None) => {
            return Err(src.error(
                &span,
                p,
                format!("route {:?} has no integration", r.route.get_ref()),
                format!("add exactly one integration table after this route, one of: {kinds}"),
            ))
        }
    };
    let cache = route_cache(r, p, &parsed, ctx, warnings)?;
    let client_throttle = match &r.client_throttle {
        Some(t) => throttle_limit(t, &format!("{p}.client_throttle"), src)?,
        None => None,
    };
    Ok((
        RouteConfig {
            key: parsed.key,
            integration,
            line: src.line(&span),
            cache,
            client_throttle,
            api_key_required: r.api_key_required.unwrap_or(false),
        },
        parsed.shape,
    ))
}

fn mock_integration(
    m: &RawMock,
    p: &str,
    params: &[String],
    stages: &[StageConfig],
    stage_lines: &[usize],
    src: &Source<'_>,
) -> Result<MockIntegration> {
    let status = match &m.status {
        Some(s) => int_range(s, &format!("{p}.mock.status"), "status", 200, 599, src)? as u16,
        None => 200,
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    let entries = m
        .headers
        .as_ref()
        .map_or(&[][..], |h: &OrderedMap| &h.0[..]);
    for (k, v) in entries {
        let key = format!("{p}.mock.headers.{}", key_segment(k.get_ref()));
        let name = http::HeaderName::from_bytes(k.get_ref().as_bytes()).map_err(|_| {
            src.error(
                &k.span(),
                &key,
                format!("{:?} is not a valid header name", k.get_ref()),
                "use a token of letters, digits and !#$%&'*+-.^_`|~, e.g. \"content-type\"",
            )
        })?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(src.error(
                &k.span(),
                key,
                format!("a mock may not set the {} header", name.as_str()),
                format!(
                    "remove it; the gateway sets {} itself",
                    RESERVED_HEADERS.join(", ")
                ),
            ));
        }
        if headers.iter().any(|(n, _)| n == name.as_str()) {
            return Err(src.error(
                &k.span(),
                key,
                format!(
                    "header {} is set twice (header names ignore case)",
                    name.as_str()
                ),
                "remove one of them",
            ));
        }
        if http::HeaderValue::from_str(v.get_ref()).is_err() {
            return Err(src.error(
                &v.span(),
                key,
                format!("{:?} is not a valid header value", v.get_ref()),
                "use visible ASCII characters, spaces and tabs only",
            ));
        }
        headers.push((name.as_str().to_string(), v.get_ref().clone()));
    }
    let body = match &m.body {
        None => Vec::new(),
        Some(b) => {
            let key = format!("{p}.mock.body");
            let parts = template::parse_body(b.get_ref(), params)
                .map_err(|e| problem_at(src, &b.span(), &key, e))?;
            if matches!(status, 204 | 304) && !parts.is_empty() {
                return Err(src.error(
                    &b.span(),
                    key,
                    format!("a {status} response cannot have a body"),
                    "remove the body or use another status",
                ));
            }
            for part in &parts {
                let BodyPart::StageVariable(var) = part else {
                    continue;
                };
                for (stage, line) in stages.iter().zip(stage_lines) {
                    if !stage.variables.contains_key(var) {
                        return Err(src.error(
                            &b.span(),
                            key,
                            format!("stage {:?} does not define the stage variable {var:?} used by this body", stage.name),
                            format!("add {var} = \"...\" to the variables of stage {:?} (line {line})", stage.name),
                        ));
                    }
                }
            }
            parts
        }
    };
    Ok(MockIntegration {
        status,
        headers,
        body,
    })
}

// --- [api.stage.cache] and [api.route.cache] ----------------------------------

/// "0.5, 1.6, 6.1, 13.5, 28.4, 58.2, 118 or 237"
fn class_list() -> String {
    let names: Vec<&str> = CAPACITY_CLASSES.iter().map(|(c, _)| *c).collect();
    format!(
        "{} or {}",
        names[..names.len() - 1].join(", "),
        names[names.len() - 1]
    )
}

/// The smallest and largest explicit cache size.
pub(super) const MIN_CACHE_SIZE: u64 = 1 << 20;
pub(super) const MAX_CACHE_SIZE: u64 = 1 << 30;

/// `cache.capacity`: a class (number or numeric string) or a size string.
fn capacity(v: &Spanned<Value>, key: &str, src: &Source<'_>) -> Result<(u64, Option<String>)> {
    let span = v.span();
    let classes = class_list();
    let fix = format!(
        "use a capacity class in GB: {classes} (e.g. capacity = 1.6), \
         or an explicit size from \"1MiB\" to \"1GiB\" such as \"64MiB\""
    );
    let class = |x: f64, shown: String| {
        CAPACITY_CLASSES
            .iter()
            .find(|(c, _)| c.parse::<f64>().ok() == Some(x))
            .map(|(c, bytes)| (*bytes, Some(c.to_string())))
            .ok_or_else(|| {
                src.error(
                    &span,
                    key,
                    format!("capacity {shown} is not a capacity class"),
                    &fix,
                )
            })
    };
    match v.get_ref() {
        Value::Integer(n) => {
            let mut found = class(*n as f64, n.to_string());
            if let Err(e) = &mut found {
                if *n >= MIN_CACHE_SIZE as i64 {
                    e.fix
                        .push_str("; a number of bytes must be written as a size string");
                }
            }
            found
        }
        Value::Float(f) => class(*f, f.to_string()),
        Value::String(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            match s.parse::<f64>() {
                Ok(f) => class(f, format!("{s:?}")),
                Err(_) => class(f64::NAN, format!("{s:?}")),
            }
        }
        Value::String(s) => {
            let Some(n) = parse_size(s) else {
                let stem = ["GB", "G", "gb"]
                    .iter()
                    .find_map(|u| s.strip_suffix(u))
                    .map(str::trim);
                let fix = match stem {
                    Some(stem) if CAPACITY_CLASSES.iter().any(|(c, _)| *c == stem) => {
                        format!("write the class as a number: capacity = {stem}")
                    }
                    _ => match ["KB", "MB", "GB", "TB"]
                        .iter()
                        .find_map(|u| s.strip_suffix(u))
                    {
                        Some(stem) => format!(
                            "sizes use binary units: write \"{stem}{}iB\", or {fix}",
                            &s[stem.len()..stem.len() + 1]
                        ),
                        None => fix,
                    },
                };
                return Err(src.error(&span, key, format!("invalid capacity {s:?}"), fix));
            };
            if (MIN_CACHE_SIZE..=MAX_CACHE_SIZE).contains(&n) {
                return Ok((n, None));
            }
            let (problem, fix) = if n > MAX_CACHE_SIZE {
                (
                    format!("explicit cache size {s:?} is more than 1GiB ({n} bytes)"),
                    format!(
                        "for a larger cache use a capacity class in GB: {classes} \
                         (e.g. capacity = 6.1); explicit sizes go from \"1MiB\" to \"1GiB\""
                    ),
                )
            } else {
                (
                    format!("explicit cache size {s:?} is less than 1MiB ({n} bytes)"),
                    "use a size from \"1MiB\" to \"1GiB\", e.g. \"64MiB\"".to_string(),
                )
            };
            Err(src.error(&span, key, problem, fix))
        }
        other => Err(src.error(
            &span,
            key,
            format!(
                "capacity must be a capacity class or a size string, found {}",
                describe(other)
            ),
            fix,
        )),
    }
}

/// Checks a header name; returns it lowercased.
fn header_name(v: &Spanned<String>, key: &str, src: &Source<'_>) -> Result<String> {
    http::HeaderName::from_bytes(v.get_ref().as_bytes())
        .map(|n| n.as_str().to_string())
        .map_err(|_| {
            src.error(
                &v.span(),
                key,
                format!("{:?} is not a valid header name", v.get_ref()),
                "use a token of letters, digits and !#$%&'*+-.^_`|~, e.g. \"x-cache-token\"",
            )
        })
}

fn stage_cache(c: &RawStageCache, p: &str, src: &Source<'_>) -> Result<StageCacheConfig> {
    let secs = Duration::from_secs;
    let (capacity_bytes, capacity_class) = match &c.capacity {
        Some(v) => capacity(v, &format!("{p}.capacity"), src)?,
        None => (
            CAPACITY_CLASSES[0].1,
            Some(CAPACITY_CLASSES[0].0.to_string()),
        ),
    };
    let ttl = opt_duration(
        &c.ttl,
        &format!("{p}.ttl"),
        "ttl",
        (Duration::ZERO, secs(3600), secs(300)),
        src,
    )?;
    let cache_statuses = match &c.cache_statuses {
        None => None,
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(src.error(
                    &list.span(),
                    format!("{p}.cache_statuses"),
                    "cache_statuses is empty, so nothing would be cached",
                    "list the statuses to cache, e.g. [200, 404], or remove the key to cache every status",
                ));
            }
            let mut out: Vec<u16> = Vec::new();
            for (i, v) in list.get_ref().iter().enumerate() {
                let key = format!("{p}.cache_statuses[{i}]");
                let n = int_range(v, &key, "a cached status", 100, 599, src)? as u16;
                if let Some(j) = out.iter().position(|o| *o == n) {
                    return Err(src.error(
                        &v.span(),
                        key,
                        format!("status {n} is listed twice (also {p}.cache_statuses[{j}])"),
                        "remove one of them",
                    ));
                }
                out.push(n);
            }
            Some(out)
        }
    };
    let unauthorized_strategy = match &c.unauthorized_strategy {
        None => UnauthorizedStrategy::SucceedWithResponseHeader,
        Some(v) => match v.get_ref().as_str() {
            "FAIL_WITH_403" => UnauthorizedStrategy::FailWith403,
            "SUCCEED_WITH_RESPONSE_HEADER" => UnauthorizedStrategy::SucceedWithResponseHeader,
            "SUCCEED_WITHOUT_RESPONSE_HEADER" => UnauthorizedStrategy::SucceedWithoutResponseHeader,
            other => {
                return Err(src.error(
                    &v.span(),
                    format!("{p}.unauthorized_strategy"),
                    format!("unknown unauthorized_strategy {other:?}"),
                    "use \"FAIL_WITH_403\", \"SUCCEED_WITH_RESPONSE_HEADER\" (the default) \
                     or \"SUCCEED_WITHOUT_RESPONSE_HEADER\", in upper case",
                ))
            }
        },
    };
    let authorization_header = match &c.authorization_header {
        Some(v) => Some(header_name(v, &format!("{p}.authorization_header"), src)?),
        None => None,
    };
    let authorization_token = match &c.authorization_token {
        None => None,
        Some(v) => {
            let t = v.get_ref();
            let problem = if t.is_empty() {
                Some("authorization_token is empty".to_string())
            } else if t.trim() != t || http::HeaderValue::from_str(t).is_err() {
                Some("authorization_token is not a valid header value".to_string())
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(src.error(
                    &v.span(),
                    format!("{p}.authorization_token"),
                    problem,
                    "use visible ASCII characters (no leading or trailing spaces), e.g. a long random string",
                ));
            }
            Some(t.clone())
        }
    };
    let require = c.require_authorization_for_cache_control.as_ref();
    match require {
        Some(r) if *r.get_ref() => {
            for (name, set) in [
                ("authorization_header", authorization_header.is_some()),
                ("authorization_token", authorization_token.is_some()),
            ] {
                if !set {
                    return Err(src.error(
                        &r.span(),
                        format!("{p}.{name}"),
                        format!(
                            "require_authorization_for_cache_control = true needs {name}, which is not set"
                        ),
                        format!(
                            "add {name} = {}, or set require_authorization_for_cache_control = false \
                             (a request whose authorization_header equals authorization_token \
                             may refresh entries with Cache-Control: max-age=0)",
                            if name == "authorization_header" {
                                "\"x-cache-token\""
                            } else {
                                "\"a long random string\""
                            }
                        ),
                    ));
                }
            }
        }
        _ => {
            let written = [
                ("authorization_header", &c.authorization_header),
                ("authorization_token", &c.authorization_token),
            ];
            if let Some((name, Some(v))) = written.into_iter().find(|(_, v)| v.is_some()) {
                return Err(src.error(
                    &v.span(),
                    format!("{p}.{name}"),
                    format!(
                        "{name} is set but require_authorization_for_cache_control is not true, \
                         so any client may refresh cache entries"
                    ),
                    "add require_authorization_for_cache_control = true to enforce it, \
                     or remove authorization_header and authorization_token",
                ));
            }
        }
    }
    let stale_if_error = opt_duration(
        &c.stale_if_error,
        &format!("{p}.stale_if_error"),
        "stale_if_error",
        (Duration::ZERO, secs(3600), Duration::ZERO),
        src,
    )?;
    let lock_timeout = opt_duration(
        &c.lock_timeout,
        &format!("{p}.lock_timeout"),
        "lock_timeout",
        (Duration::from_millis(10), secs(60), secs(10)),
        src,
    )?;
    let rfc = c.respect_origin_cache_control.unwrap_or(false);
    if !rfc {
        let written = [
            ("heuristic_max", c.heuristic_max.as_ref().map(|v| v.span())),
            (
                "targeted_cache_control",
                c.targeted_cache_control.as_ref().map(|v| v.span()),
            ),
            (
                "store_set_cookie",
                c.store_set_cookie.as_ref().map(|v| v.span()),
            ),
        ];
        if let Some((name, Some(span))) = written.into_iter().find(|(_, v)| v.is_some()) {
            return Err(src.error(
                &span,
                format!("{p}.{name}"),
                format!(
                    "{name} applies only to the RFC 9111 mode, and respect_origin_cache_control \
                     is not true (the API Gateway mode stores every response for the TTL)"
                ),
                format!("add respect_origin_cache_control = true, or remove {name}"),
            ));
        }
    }
    let heuristic_max = opt_duration(
        &c.heuristic_max,
        &format!("{p}.heuristic_max"),
        "heuristic_max",
        (Duration::ZERO, secs(365 * 86_400), secs(86_400)),
        src,
    )?;
    let targeted_cache_control = match &c.targeted_cache_control {
        None => None,
        Some(t) => {
            let name = t.get_ref().to_ascii_lowercase();
            let problem = if !is_token(&name) {
                Some(format!("{:?} is not a header field name", t.get_ref()))
            } else if name == "cache-control" || name == "cdn-cache-control" {
                Some(format!(
                    "{:?} is not a targeted field of this cache alone \
                     (CDN-Cache-Control is always honoured in the RFC 9111 mode)",
                    t.get_ref()
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(src.error(
                    &t.span(),
                    format!("{p}.targeted_cache_control"),
                    problem,
                    "name a field of this cache's own, e.g. \"Ringgate-Cache-Control\"",
                ));
            }
            Some(name)
        }
    };
    Ok(StageCacheConfig {
        enabled: c.enabled.unwrap_or(true),
        capacity_bytes,
        capacity_class,
        ttl,
        status_header: c.status_header.unwrap_or(false),
        cache_statuses,
        require_authorization: require.is_some_and(|r| *r.get_ref()),
        unauthorized_strategy,
        authorization_header,
        authorization_token,
        respect_origin_cache_control: rfc,
        stale_if_error,
        lock_timeout,
        heuristic_max,
        targeted_cache_control,
        store_set_cookie: c.store_set_cookie.as_ref().is_some_and(|v| *v.get_ref()),
    })
}

/// An RFC 9110 token.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// One `key_parameters` entry: a parameter, or `None` for `"querystring.*"`.
fn key_parameter(
    s: &str,
    parsed: &ParsedRoute,
    route: &str,
) -> std::result::Result<Option<KeyParameter>, Problem> {
    const FORMS: &str = "write path.NAME, querystring.NAME, header.NAME or \"querystring.*\"";
    let err = |problem: String, fix: String| Err(Problem { problem, fix });
    if let Some(rest) = s.strip_prefix("method.request.") {
        return err(
            format!("key parameter {s:?} uses API Gateway's long form"),
            format!("write {rest:?}"),
        );
    }
    let Some((source, name)) = s.split_once('.') else {
        return err(
            format!("key parameter {s:?} has no source"),
            format!("{FORMS}, e.g. \"querystring.{s}\""),
        );
    };
    if name.is_empty() {
        return err(
            format!("key parameter {s:?} has no name"),
            FORMS.to_string(),
        );
    }
    match source {
        "path" => {
            if parsed.params.iter().any(|p| p == name) {
                return Ok(Some(KeyParameter::Path(name.to_string())));
            }
            let listed: Vec<String> = parsed.params.iter().map(|p| format!("path.{p}")).collect();
            let fix = match name.strip_suffix('+') {
                Some(stem) if parsed.params.iter().any(|p| p == stem) => {
                    format!("write \"path.{stem}\" (without the '+')")
                }
                _ if listed.is_empty() => {
                    "the route has no path parameters: remove this entry".to_string()
                }
                _ => format!("use one of its path parameters: {}", listed.join(", ")),
            };
            err(
                format!("route {route:?} has no path parameter {{{name}}}"),
                fix,
            )
        }
        "querystring" if name == "*" => Ok(None),
        "querystring" if is_token(name) => Ok(Some(KeyParameter::Query(name.to_string()))),
        "header" if name != "*" => match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => Ok(Some(KeyParameter::Header(h.as_str().to_string()))),
            Err(_) => err(
                format!("{name:?} in {s:?} is not a valid header name"),
                "use a token of letters, digits and !#$%&'*+-.^_`|~, e.g. \"header.accept-language\""
                    .to_string(),
            ),
        },
        "querystring" | "header" => err(
            format!("{name:?} in {s:?} is not a valid {source} name"),
            "use a token of letters, digits and !#$%&'*+-.^_`|~; \
             only \"querystring.*\" may use '*' (the whole query string)"
                .to_string(),
        ),
        other => err(
            format!("unknown key parameter source {other:?} in {s:?}"),
            format!("{FORMS}; only the path, query string and headers can vary the key"),
        ),
    }
}

/// `[api.route.cache]` of one route (`p` is the route's key prefix).
fn route_cache(
    r: &RawRoute,
    p: &str,
    parsed: &ParsedRoute,
    ctx: &ApiCtx<'_, '_>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Option<RouteCacheConfig>> {
    let src = ctx.src;
    let enabled_caches = || ctx.stages.iter().filter_map(|s| s.cache.as_ref());
    let enabled_caches = || enabled_caches().filter(|c| c.enabled);
    let respect_origin = enabled_caches().any(|c| c.respect_origin_cache_control);
    let Some(c) = &r.cache else {
        return Ok(respect_origin.then(|| RouteCacheConfig {
            enabled: None,
            ttl: None,
            key_parameters: Vec::new(),
            whole_query: true,
            namespace: None,
        }));
    };
    let p = format!("{p}.cache");
    let ttl = match &c.ttl {
        Some(t) => Some(duration(
            t,
            &format!("{p}.ttl"),
            "ttl",
            Duration::ZERO,
            Duration::from_secs(3600),
            src,
        )?),
        None => None,
    };
    let route = r.route.get_ref();
    let mut key_parameters: Vec<KeyParameter> = Vec::new();
    let mut whole_query = respect_origin && c.key_parameters.is_none();
    // Index of each accepted entry, parallel to key_parameters; and of "querystring.*".
    let mut indices: Vec<usize> = Vec::new();
    let mut whole_at: Option<usize> = None;
    let list = c
        .key_parameters
        .as_ref()
        .map_or(&[][..], |l| &l.get_ref()[..]);
    for (i, v) in list.iter().enumerate() {
        let key = format!("{p}.key_parameters[{i}]");
        let param = key_parameter(v.get_ref(), parsed, route)
            .map_err(|e| problem_at(src, &v.span(), &key, e))?;
        let clash = match &param {
            None => whole_at
                .map(|j| format!("\"querystring.*\" is listed twice (also {p}.key_parameters[{j}])"))
                .or_else(|| {
                    key_parameters
                        .iter()
                        .zip(&indices)
                        .find(|(k, _)| matches!(k, KeyParameter::Query(_)))
                        .map(|(_, j)| {
                            format!(
                                "\"querystring.*\" (the whole query string) cannot be combined with \
                                 {:?} ({p}.key_parameters[{j}])",
                                list[*j].get_ref()
                            )
                        })
                }),
            Some(KeyParameter::Query(_)) if whole_at.is_some() => Some(format!(
                "{:?} cannot be combined with \"querystring.*\" ({p}.key_parameters[{}]), \
                 which already covers the whole query string",
                v.get_ref(),
                whole_at.unwrap_or_default()
            )),
            Some(k) => key_parameters
                .iter()
                .zip(&indices)
                .find(|(o, _)| *o == k)
                .map(|(_, j)| {
                    format!(
                        "{:?} is listed twice (also {p}.key_parameters[{j}], {:?}; header names ignore case)",
                        v.get_ref(),
                        list[*j].get_ref()
                    )
                }),
        };
        if let Some(problem) = clash {
            return Err(src.error(
                &v.span(),
                key,
                problem,
                "keep either \"querystring.*\" or individual querystring.NAME entries, and each entry once",
            ));
        }
        match param {
            None => {
                whole_at = Some(i);
                whole_query = true;
            }
            Some(k) => {
                key_parameters.push(k);
                indices.push(i);
            }
        }
    }
    let namespace = match &c.namespace {
        Some(n) => {
            check_name(n, 64, &format!("{p}.namespace"), "cache namespace", src)?;
            Some(n.get_ref().clone())
        }
        None => None,
    };
    let enabled = c.enabled.as_ref().map(|e| *e.get_ref());

    // Settings that cannot take effect are worth a warning.
    let line = [
        c.enabled.as_ref().map(|v| v.span().start),
        c.ttl.as_ref().map(|v| v.span().start),
        c.key_parameters.as_ref().map(|v| v.span().start),
        c.namespace.as_ref().map(|v| v.span().start),
    ]
    .into_iter()
    .flatten()
    .min()
    .map_or_else(
        || src.line(&r.route.span()),
        |start| src.line(&(start..start)),
    );
    let message = if enabled_caches().next().is_none() {
        Some(format!(
            "[api.route.cache] has no effect: no stage of api {:?} enables a cache; \
             add [api.stage.cache] to a stage",
            ctx.api
        ))
    } else {
        match &parsed.key {
            RouteKey::Route {
                method: Some(m), ..
            } if m != "GET" && enabled.is_none() => Some(format!(
                "[api.route.cache] has no effect: {m} routes are cached only with enabled = true"
            )),
            _ => None,
        }
    };
    if let Some(message) = message {
        warnings.push(ConfigWarning {
            file: src.file.to_string(),
            line,
            key: p.clone(),
            message,
        });
    }
    Ok(Some(RouteCacheConfig {
        enabled,
        ttl,
        key_parameters,
        whole_query,
        namespace,
    }))
}

// --- [api.route.http_proxy] ---------------------------------------------------

fn http_proxy_integration(
    h: &RawHttpProxy,
    p: &str,
    params: &[String],
    ctx: &ApiCtx<'_, '_>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<HttpProxyIntegration> {
    let src = ctx.src;
    let uri = h.uri.get_ref();
    let span = h.uri.span();
    let key = format!("{p}.uri");
    let parsed = template::parse_uri(uri, params).map_err(|e| problem_at(src, &span, &key, e))?;

    // Every stage variable the uri uses, in order of first use.
    let mut vars: Vec<&str> = Vec::new();
    for part in parsed
        .authority
        .iter()
        .chain(&parsed.path)
        .chain(&parsed.query)
    {
        if let BodyPart::StageVariable(v) = part {
            if !vars.contains(&v.as_str()) {
                vars.push(v);
            }
        }
    }
    let line = src.line(&span);
    for stage in ctx.stages {
        for var in &vars {
            if !stage.variables.contains_key(*var) {
                warnings.push(ConfigWarning {
                    file: src.file.to_string(),
                    line,
                    key: key.clone(),
                    message: format!(
                        "stage {:?} does not define the stage variable {var:?} used by this uri; \
                         requests to this route in that stage will get 500 until it is defined",
                        stage.name
                    ),
                });
            }
        }
    }

    let authority_vars = parsed
        .authority
        .iter()
        .any(|p| matches!(p, BodyPart::StageVariable(_)));
    if !authority_vars {
        let text = substitute(&parsed.authority, &BTreeMap::new()).unwrap_or_default();
        check_authority(&text, parsed.tls, ctx.upstreams)
            .map_err(|e| problem_at(src, &span, &key, e))?;
    } else {
        for (stage, stage_line) in ctx.stages.iter().zip(ctx.stage_lines) {
            let Some(text) = substitute(&parsed.authority, &stage.variables) else {
                continue; // a warning says what is missing
            };
            if let Err(e) = check_authority(&text, parsed.tls, ctx.upstreams) {
                return Err(src.error(
                    &span,
                    key,
                    format!(
                        "in stage {:?} the uri's host becomes {text:?}: {}",
                        stage.name, e.problem
                    ),
                    format!(
                        "change the stage variables of stage {:?} (line {stage_line}): {}",
                        stage.name, e.fix
                    ),
                ));
            }
        }
    }

    let timeout = match &h.timeout {
        Some(t) => duration(
            t,
            &format!("{p}.timeout"),
            "timeout",
            Duration::from_millis(50),
            Duration::from_secs(29),
            src,
        )?,
        None => Duration::from_secs(29),
    };
    Ok(HttpProxyIntegration {
        tls: parsed.tls,
        authority: parsed.authority,
        path: parsed.path,
        query: parsed.query,
        timeout,
        preserve_host: h.preserve_host.unwrap_or(false),
        allow_upgrade: h.allow_upgrade.unwrap_or(false),
        uri: uri.clone(),
    })
}

/// The template with stage variables replaced; `None` if one is missing.
fn substitute(parts: &[BodyPart], vars: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::new();
    for part in parts {
        match part {
            BodyPart::Literal(s) => out.push_str(s),
            BodyPart::StageVariable(v) => out.push_str(vars.get(v)?),
            BodyPart::PathParam(_) => return None,
        }
    }
    Some(out)
}

/// Checks a (substituted) uri authority: an upstream name when it has no
/// `:` (and no `[`), else a `host:port`; and that the scheme (`tls`:
/// https) is the one the upstream speaks.
fn check_authority(
    text: &str,
    tls: bool,
    upstreams: &[UpstreamConfig],
) -> std::result::Result<(), Problem> {
    if !text.contains([':', '[']) {
        if let Some(u) = upstreams.iter().find(|u| u.name == text) {
            return match (tls, u.tls.is_some()) {
                (true, false) => Err(Problem {
                    problem: format!(
                        "the uri says https, but [[upstream]] {text:?} (line {}) has no [upstream.tls]",
                        u.line
                    ),
                    fix: format!(
                        "add tls = {{}} to that [[upstream]] (TLS verified against the system's CA \
                         certificates), or write \"http://{text}\""
                    ),
                }),
                (false, true) => Err(Problem {
                    problem: format!(
                        "the uri says http, but [[upstream]] {text:?} (line {}) speaks TLS ([upstream.tls])",
                        u.line
                    ),
                    fix: format!("write \"https://{text}\", or remove its [upstream.tls]"),
                }),
                _ => Ok(()),
            };
        }
        if !name_ok(text, 64, &['_', '-']) {
            return Err(Problem {
                problem: format!(
                    "{text:?} has no port, and without one it would have to name an [[upstream]]"
                ),
                fix: format!("add the port, e.g. \"{text}:80\""),
            });
        }
        let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
        let mut fix = if names.is_empty() {
            format!("define it with [[upstream]] name = {text:?}, or write host:port")
        } else {
            format!(
                "use one of the upstreams ({}), define it with [[upstream]], or write host:port",
                names.join(", ")
            )
        };
        fix.push_str(" (an address needs its port, e.g. \"localhost:80\")");
        return Err(Problem {
            problem: format!("{text:?} is not the name of an [[upstream]]"),
            fix,
        });
    }
    parse_target(text).map_err(|why| Problem {
        problem: format!("host:port {text:?} {why}"),
        fix: "write the name of an [[upstream]], or host:port with a port from 1 to 65535, e.g. \"10.0.0.5:8080\" or \"[::1]:8080\"".to_string(),
    })?;
    if tls {
        crate::tls::client::ClientTls::system_default().map_err(|why| Problem {
            problem: format!("https://{text} is verified against the system's CA certificates: {why}"),
            fix: "define an [[upstream]] for it with [upstream.tls] ca = \"webpki\" or ca = \"bundle.pem\"".to_string(),
        })?;
    }
    Ok(())
}

// --- [[upstream]] --------------------------------------------------------------

/// Parses `host:port` (see [`TargetAddr::parse`]).
pub(super) fn parse_target(text: &str) -> std::result::Result<TargetAddr, String> {
    if text.is_empty() {
        return Err("is empty".to_string());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']').ok_or("has '[' without ']'")?;
        let ip: Ipv6Addr = rest[..end]
            .parse()
            .map_err(|_| "is not a valid IPv6 address".to_string())?;
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => return Err("has no port".to_string()),
            None => return Err("has text after ']' that is not \":port\"".to_string()),
        };
        (ip.to_string(), port)
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err("has no port".to_string());
        };
        if host.contains(':') {
            return Err("has more than one ':' (write an IPv6 address as [addr]:port)".to_string());
        }
        if host.is_empty() {
            return Err("has no host before the ':'".to_string());
        }
        let host = match host.parse::<Ipv4Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                let lower = host.to_ascii_lowercase();
                let label_ok = |l: &str| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                };
                let last_numeric = lower
                    .rsplit('.')
                    .next()
                    .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()));
                if lower.len() > 253 || !lower.split('.').all(label_ok) || last_numeric {
                    return Err(format!(
                        "has {host:?}, which is neither an IPv4 address nor a host name"
                    ));
                }
                lower
            }
        };
        (host, port)
    };
    if port.is_empty() {
        return Err("has no port after the ':'".to_string());
    }
    match port.parse::<u16>() {
        Ok(n) if n != 0 && port.chars().all(|c| c.is_ascii_digit()) => Ok(TargetAddr {
            host,
            port: n,
            text: text.to_string(),
        }),
        _ => Err(format!("has the invalid port {port:?} (use 1 to 65535)")),
    }
}

fn opt_duration(
    v: &Option<Spanned<Value>>,
    key: &str,
    name: &str,
    (min, max, default): (Duration, Duration, Duration),
    src: &Source<'_>,
) -> Result<Duration> {
    match v {
        Some(v) => duration(v, key, name, min, max, src),
        None => Ok(default),
    }
}

fn opt_int(
    v: &Option<Spanned<i64>>,
    key: &str,
    name: &str,
    (min, max, default): (i64, i64, i64),
    src: &Source<'_>,
) -> Result<i64> {
    match v {
        Some(v) => int_range(v, key, name, min, max, src),
        None => Ok(default),
    }
}

fn upstreams(raw: &[RawUpstream], src: &Source<'_>) -> Result<Vec<UpstreamConfig>> {
    let mut out: Vec<UpstreamConfig> = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        let p = format!("upstream[{i}]");
        check_name(&u.name, 64, &format!("{p}.name"), "upstream name", src)?;
        let name = u.name.get_ref();
        if let Some(first) = out.iter().find(|o| &o.name == name) {
            return Err(src.error(
                &u.name.span(),
                format!("{p}.name"),
                format!(
                    "duplicate upstream name {name:?}; the first is on line {}",
                    first.line
                ),
                "give each [[upstream]] a different name",
            ));
        }

        let list = u.targets.get_ref();
        if list.is_empty() || list.len() > 256 {
            let problem = if list.is_empty() {
                "targets is empty".to_string()
            } else {
                format!(
                    "an upstream may have at most 256 targets, found {}",
                    list.len()
                )
            };
            return Err(src.error(
                &u.targets.span(),
                format!("{p}.targets"),
                problem,
                "list 1 to 256 addresses as host:port, e.g. targets = [\"127.0.0.1:9000\"]",
            ));
        }
        let mut targets: Vec<TargetAddr> = Vec::new();
        for (j, t) in list.iter().enumerate() {
            let key = format!("{p}.targets[{j}]");
            let text = t.get_ref();
            let target = parse_target(text).map_err(|why| {
                let fix = if why == "has no port" {
                    format!("add the port, e.g. \"{text}:80\" (IPv6 as \"[::1]:80\")")
                } else {
                    "write an IPv4 address, [IPv6] address or host name, ':' and a port from 1 to 65535, e.g. \"10.0.0.5:8080\"".to_string()
                };
                src.error(&t.span(), &key, format!("target {text:?} {why}"), fix)
            })?;
            if let Some(k) = targets
                .iter()
                .position(|o| o.host == target.host && o.port == target.port)
            {
                return Err(src.error(
                    &t.span(),
                    key,
                    format!(
                        "target {text:?} is listed twice (also {p}.targets[{k}], {:?})",
                        targets[k].text
                    ),
                    "remove one of them; to weight a target, run more of its instances",
                ));
            }
            targets.push(target);
        }

        let balance = match u.balance.as_ref() {
            None => Balance::RoundRobin,
            Some(b) => match b.get_ref().as_str() {
                "round_robin" => Balance::RoundRobin,
                "least_outstanding" => Balance::LeastOutstanding,
                other => {
                    return Err(src.error(
                        &b.span(),
                        format!("{p}.balance"),
                        format!("unknown balance {other:?}"),
                        "use \"round_robin\" or \"least_outstanding\"",
                    ))
                }
            },
        };
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let connect_timeout = opt_duration(
            &u.connect_timeout,
            &format!("{p}.connect_timeout"),
            "connect_timeout",
            (ms(10), secs(60), secs(2)),
            src,
        )?;
        let idle_timeout = opt_duration(
            &u.idle_timeout,
            &format!("{p}.idle_timeout"),
            "idle_timeout",
            (secs(1), secs(3600), secs(60)),
            src,
        )?;
        let max_idle_per_target = opt_int(
            &u.max_idle_per_target,
            &format!("{p}.max_idle_per_target"),
            "max_idle_per_target",
            (0, 65536, 512),
            src,
        )? as usize;
        let passive_health = match &u.passive_health {
            Some(ph) => Some(passive_health(ph, &format!("{p}.passive_health"), src)?),
            None => None,
        };
        let health_check = match &u.health_check {
            Some(hc) => Some(health_check(hc, &format!("{p}.health_check"), src)?),
            None => None,
        };
        out.push(UpstreamConfig {
            name: name.clone(),
            targets,
            balance,
            connect_timeout,
            idle_timeout,
            max_idle_per_target,
            passive_health,
            health_check,
            tls: match &u.tls {
                Some(t) => Some(super::tls::upstream_tls(t, &p, src)?),
                None => None,
            },
            line: src.line(&u.name.span()),
        });
    }
    Ok(out)
}

fn passive_health(ph: &RawPassiveHealth, p: &str, src: &Source<'_>) -> Result<PassiveHealth> {
    Ok(PassiveHealth {
        max_failures: opt_int(
            &ph.max_failures,
            &format!("{p}.max_failures"),
            "max_failures",
            (1, 1000, 3),
            src,
        )? as u32,
        ejection_time: opt_duration(
            &ph.ejection_time,
            &format!("{p}.ejection_time"),
            "ejection_time",
            (
                Duration::from_secs(1),
                Duration::from_secs(3600),
                Duration::from_secs(10),
            ),
            src,
        )?,
    })
}

fn health_check(hc: &RawHealthCheck, p: &str, src: &Source<'_>) -> Result<HealthCheck> {
    let path = hc.path.get_ref();
    let bad = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/?%".contains(*c)));
    let problem = if !path.starts_with('/') {
        Some(format!(
            "health check path {path:?} does not start with '/'"
        ))
    } else {
        bad.map(|c| format!("health check path {path:?} contains {c:?}, which is not allowed"))
    };
    if let Some(problem) = problem {
        return Err(src.error(
            &hc.path.span(),
            format!("{p}.path"),
            problem,
            "write a path (and optional query) starting with '/', percent-encoding other characters, e.g. \"/health\"",
        ));
    }
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    let interval = opt_duration(
        &hc.interval,
        &format!("{p}.interval"),
        "interval",
        (ms(100), secs(3600), secs(5)),
        src,
    )?;
    let timeout = opt_duration(
        &hc.timeout,
        &format!("{p}.timeout"),
        "timeout",
        (ms(10), secs(60), secs(1)),
        src,
    )?;
    if timeout >= interval {
        // Point at the value that was written (timeout when both were).
        let (span, name) = match (&hc.timeout, &hc.interval) {
            (Some(t), _) => (t.span(), "timeout"),
            (None, Some(i)) => (i.span(), "interval"),
            (None, None) => unreachable!("the defaults are 1s < 5s"),
        };
        return Err(src.error(
            &span,
            format!("{p}.{name}"),
            format!(
                "health check timeout ({}) must be less than its interval ({})",
                fmt_duration(timeout),
                fmt_duration(interval)
            ),
            "shorten the timeout or lengthen the interval",
        ));
    }
    let healthy_threshold = opt_int(
        &hc.healthy_threshold,
        &format!("{p}.healthy_threshold"),
        "healthy_threshold",
        (1, 100, 2),
        src,
    )? as u32;
    let unhealthy_threshold = opt_int(
        &hc.unhealthy_threshold,
        &format!("{p}.unhealthy_threshold"),
        "unhealthy_threshold",
        (1, 100, 3),
        src,
    )? as u32;
    let expected_status = match &hc.expected_status {
        None => (200, 299),
        Some(v) => status_range(v.get_ref()).ok_or_else(|| {
            let shown = match v.get_ref() {
                Value::String(s) => format!("{s:?}"),
                other => describe(other),
            };
            src.error(
                &v.span(),
                format!("{p}.expected_status"),
                format!("invalid expected_status {shown}"),
                "write a class like \"2xx\", a range like \"200-399\" or one code like 204, all within 100..=599",
            )
        })?,
    };
    Ok(HealthCheck {
        path: path.clone(),
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        expected_status,
    })
}

/// `"2xx"`, `"200-399"`, `"204"` or `204` as an inclusive range within
/// 100..=599.
fn status_range(v: &Value) -> Option<(u16, u16)> {
    let code = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n) && s.len() == 3)
    };
    match v {
        Value::Integer(n) => code(&n.to_string()).map(|n| (n, n)),
        Value::String(s) => {
            let s = s.trim();
            if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
                let d = code(&format!("{class}00"))?;
                return Some((d, d + 99));
            }
            if let Some((lo, hi)) = s.split_once('-') {
                let (lo, hi) = (code(lo.trim())?, code(hi.trim())?);
                return (lo <= hi).then_some((lo, hi));
            }
            code(s).map(|n| (n, n))
        }
        _ => None,
    }
}

// --- [[domain]] --------------------------------------------------------------

fn domains(
    raw: &[RawDomain],
    raw_apis: &[RawApi],
    apis: &[ApiConfig],
    src: &Source<'_>,
) -> Result<Vec<DomainConfig>> {
    let mut out: Vec<DomainConfig> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let p = format!("domain[{i}]");
        let key = format!("{p}.host");
        let host = if d.host.get_ref() == "*" {
            "*".to_string()
        } else {
            normalize_host(d.host.get_ref()).map_err(|why| host_error(src, &d.host, &key, &why))?
        };
        if let Some(k) = out.iter().position(|o| o.host == host) {
            return Err(src.error(
                &d.host.span(),
                key,
                format!(
                    "duplicate domain {host:?}; the first is on line {}",
                    lines[k]
                ),
                "put all mappings of a host under one [[domain]]",
            ));
        }
        for (a, ra) in apis.iter().zip(raw_apis) {
            let line = src.line(&ra.name.span());
            if host == "*" && a.hosts.is_empty() {
                return Err(src.error(
                    &d.host.span(),
                    key,
                    format!("domain \"*\" claims every host, so api {:?} (line {line}), which has no hosts, could never be reached", a.name),
                    format!("give api {:?} hosts, or remove this domain", a.name),
                ));
            }
            if a.hosts.contains(&host) {
                return Err(src.error(
                    &d.host.span(),
                    key,
                    format!(
                        "host {host:?} is also listed in the hosts of api {:?} (line {line})",
                        a.name
                    ),
                    "a host is served either by one api's hosts or by one [[domain]]; remove one",
                ));
            }
        }
        if d.mapping.is_empty() {
            return Err(src.error(
                &d.host.span(),
                format!("{p}.mapping"),
                format!("domain {host:?} has no mappings"),
                "add a [[domain.mapping]] with base_path, api and stage",
            ));
        }
        let mut mappings: Vec<Mapping> = Vec::new();
        let mut mapping_lines: Vec<usize> = Vec::new();
        for (j, m) in d.mapping.iter().enumerate() {
            let mp = format!("{p}.mapping[{j}]");
            let (base_path, line) = match &m.base_path {
                Some(b) => (
                    normalize_base_path(b, &format!("{mp}.base_path"), src)?,
                    src.line(&b.span()),
                ),
                None => (String::new(), src.line(&m.api.span())),
            };
            if let Some(k) = mappings.iter().position(|o| o.base_path == base_path) {
                let shown = if base_path.is_empty() {
                    "(none)"
                } else {
                    &base_path
                };
                let span = m.base_path.as_ref().map_or(m.api.span(), |b| b.span());
                return Err(src.error(
                    &span,
                    format!("{mp}.base_path"),
                    format!(
                        "duplicate base_path {shown:?}; the first is on line {}",
                        mapping_lines[k]
                    ),
                    "give each mapping of a domain a different base_path",
                ));
            }
            let api_name = m.api.get_ref();
            let Some(api) = apis.iter().find(|a| &a.name == api_name) else {
                let known = apis.iter().map(|a| a.name.as_str()).collect::<Vec<_>>();
                let fix = if known.is_empty() {
                    format!("define it with [[api]] name = {api_name:?}")
                } else {
                    format!(
                        "use one of: {}, or define it with [[api]]",
                        known.join(", ")
                    )
                };
                return Err(src.error(
                    &m.api.span(),
                    format!("{mp}.api"),
                    format!("api {api_name:?} is not defined"),
                    fix,
                ));
            };
            let stage = m.stage.get_ref();
            if !api.stages.iter().any(|s| &s.name == stage) {
                let known = api
                    .stages
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>();
                return Err(src.error(
                    &m.stage.span(),
                    format!("{mp}.stage"),
                    format!("api {api_name:?} has no stage {stage:?}"),
                    format!("use one of its stages: {}", known.join(", ")),
                ));
            }
            mapping_lines.push(line);
            mappings.push(Mapping {
                base_path,
                api: api_name.clone(),
                stage: stage.clone(),
            });
        }
        lines.push(src.line(&d.host.span()));
        out.push(DomainConfig { host, mappings });
    }
    Ok(out)
}

fn normalize_base_path(v: &Spanned<String>, key: &str, src: &Source<'_>) -> Result<String> {
    let t = v.get_ref().trim_matches('/');
    let err = |problem: String| {
        src.error(
            &v.span(),
            key,
            problem,
            "use at most 300 letters, digits and $-_.+!*'()/, e.g. \"orders/v1\" (\"\" maps the whole host)",
        )
    };
    if let Some(c) = t
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "$-_.+!*'()/".contains(*c)))
    {
        return Err(err(format!(
            "base_path {:?} contains {c:?}, which is not allowed",
            v.get_ref()
        )));
    }
    if t.len() > 300 {
        return Err(err(format!(
            "base_path is longer than 300 characters ({})",
            t.len()
        )));
    }
    if !t.is_empty() && t.split('/').any(str::is_empty) {
        return Err(err(format!(
            "base_path {:?} has an empty segment",
            v.get_ref()
        )));
    }
    Ok(t.to_string())
}
