//! The immutable [`Snapshot`] the request pipeline reads.
//!
//! A [`Snapshot`] is compiled once from a validated [`Config`]: for each API
//! a [`RouteTable`], its stages with stage variables already substituted
//! into every mock body and proxy URI ([`ProxyRoute`]), each stage's cache
//! ([`StageCacheState`]) and each route's cache policy ([`RouteCache`]),
//! the upstream [`Registry`], and the host + base-path mapping table.
//! Workers share it behind an `Arc` and never lock it.
//!
//! How a request finds its API, stage and route ([`Snapshot::resolve`]):
//! 1. A `[[domain]]` whose host equals the request's `Host` (port ignored,
//!    case-insensitive), else the `*` domain: the mapping with the longest
//!    base path that is a whole-segment prefix of the path wins (as API Gateway's custom domain names do);
//!    the base path is stripped. No mapping matches: 403 `Forbidden`.
//! 2. Otherwise the API whose `hosts` lists the host, else the API with no
//!    `hosts`: the first path segment names the stage (`/{stage}/…`) and is
//!    stripped. Unknown stage, or no API: 403 `Forbidden`.
//! 3. The API's route table matches method and path; no
//!    match gives 403 `Missing Authentication Token`, or 404 `Not Found`
//!    where the API sets `unmatched_route = "not_found"`. A `HEAD` with no
//!    route of its own is answered by the `GET` route, without a body.
//! 4. [`Snapshot::dispatch`] returns what answers: a mock, a proxied route
//!    (with the stage cache, if any), or a gateway error; a proxied route
//!    whose stage lacks a stage variable its URI uses answers 500.
//!
//! Each stage also carries its routes' throttle buckets and, by API key,
//! the buckets of the key's usage plan on that stage ([`KeyAccess`]); the
//! account's bucket is the snapshot's. All are [`crate::throttle::Level`]s
//! carried to the next snapshot when their limit is unchanged.
//!
//! Hot-path cost: a few string comparisons to find the stage, one route
//! lookup, and for a mock the response copied into the connection's buffer
//! with `{param}` values spliced in. Nothing is allocated.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::cache::StageCache;
use crate::config::{
    BodyPart, Config, Integration, KeyParameter, RouteKey, StageCacheConfig, StageConfig,
    ThrottleLimit, UnmatchedRoute,
};
use crate::http::response::{
    write_common_headers, write_content_length, write_rate_headers, write_status_line,
    ConnectionHeader, RateHeaders,
};
use crate::observe::access_log::LogFormat;
use crate::observe::metrics::{SeriesLabels, UNROUTED};
use crate::router::{
    Method, MethodSpec, Params, RouteError, RouteId, RouteTable, RouteTableBuilder,
};
use crate::state::Deployment;
use crate::throttle::quota::Restored;
use crate::throttle::{KeyedBuckets, Level, Limit, Usage, UsageCell};
use crate::upstream::Registry;

use super::key_source::KeySource;
use super::limits::ClientTables;
use super::response::GatewayError;

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
    /// Backend groups and targets (shared with the health thread).
    pub upstreams: Arc<Registry>,
    /// The account-level throttle over every API (`[throttle]`).
    account: Option<Level>,
    /// API keys, found by a hash of their value under a per-snapshot
    /// random key, then compared in constant time ([`KeyTable`]).
    keys: KeyTable,
    /// Usage-plan buckets by `plan\0key[\0api\0stage\0route]`, to carry
    /// them to the next snapshot.
    plan_levels: HashMap<String, Level>,
    /// Opt-in: every per-client table (`client_throttle`), to carry and
    /// to sweep.
    client_tables: ClientTables,
    /// Opt-in `[throttle] headers`.
    rate_headers: bool,
    /// Some route of some stage has a per-client table (else `dispatch`
    /// skips the lookup).
    any_client_table: bool,
    /// `[key_source]`.
    key_source: KeySource,
    /// The metrics label sets this snapshot's stages count under; index 0
    /// is the requests no stage answered.
    series_labels: Vec<SeriesLabels>,
    /// Their process-wide ids, set when the snapshot is published
    /// ([`super::Published`]) and before any worker sees it.
    series_ids: OnceLock<Box<[u32]>>,
    /// `[access_log] format`: for requests no stage answered (`None`: no
    /// access log).
    default_log: Option<Arc<LogFormat>>,
}

/// API keys by value. A lookup hashes the presented value with a random
/// key (so its time says nothing about stored values), then compares each
/// candidate with the same hash in constant time; nothing is allocated.
struct KeyTable {
    hasher: ahash::RandomState,
    /// Hash → the keys with that hash. The map's own hasher passes the
    /// hash through: it is already a keyed, well-mixed hash (SipHash over
    /// it again cost about 120 instructions per request, callgrind).
    by_hash: HashMap<u64, Vec<StoredKey>, std::hash::BuildHasherDefault<PassThrough>>,
    /// Each key's id, by index (what access logs show, never the value).
    ids: Vec<Box<str>>,
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with it; fold anything else in.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A key's value, its index in [`Plan::keys`] and whether it is enabled.
type StoredKey = (Box<[u8]>, usize, bool);

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key values.
        f.debug_struct("KeyTable")
            .field("keys", &self.by_hash.values().map(Vec::len).sum::<usize>())
            .finish()
    }
}

impl KeyTable {
    fn new(keys: &[KeyDef]) -> KeyTable {
        let hasher = ahash::RandomState::new();
        let mut by_hash: HashMap<u64, Vec<StoredKey>, _> = HashMap::default();
        for (i, k) in keys.iter().enumerate() {
            let v = k.value.as_bytes();
            by_hash
                .entry(hasher.hash_one(v))
                .or_default()
                .push((v.into(), i, k.enabled));
        }
        KeyTable {
            hasher,
            by_hash,
            ids: keys.iter().map(|k| k.id.as_str().into()).collect(),
        }
    }

    /// The index and enabled flag of the key whose value is `value`.
    fn find(&self, value: &[u8]) -> Option<(usize, bool)> {
        let candidates = self.by_hash.get(&self.hasher.hash_one(value))?;
        candidates
            .iter()
            .find(|(v, _, _)| constant_time_eq(v, value))
            .map(|&(_, i, enabled)| (i, enabled))
    }
}

/// Equality whose time depends only on the lengths, not on where the
/// bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Eight bytes at a time (a byte loop cost about 40 instructions for a
    // 28-byte key), then the tail; every byte is read whatever it holds.
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .fold(0u64, |acc, (x, y)| acc | u64::from(x ^ y));
    let diff = ac.zip(bc).fold(tail, |acc, (x, y)| {
        let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
        acc | (word(x) ^ word(y))
    });
    std::hint::black_box(diff) == 0
}

/// What an API key may do on one stage: its usage plan's buckets.
#[derive(Debug, Clone)]
pub struct KeyAccess {
    /// The plan's per-key bucket (over every stage of the plan).
    key_level: Option<Level>,
    /// The plan's per-key bucket for each route of the definition.
    route_levels: Vec<Option<Level>>,
    /// The (plan, key) usage counters and quota.
    usage: Arc<UsageCell>,
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

/// One API: its stages, each with the definition it serves.
pub struct Api {
    /// The API's name.
    pub name: String,
    /// The file's current definition (what `auto_deploy` stages serve).
    file: Arc<Definition>,
    stages: Vec<Stage>,
}

/// One definition of an API compiled: the file's, or a deployment's.
struct Definition {
    /// `None`: the file's current definition.
    deployment: Option<u64>,
    table: RouteTable,
    unmatched: UnmatchedRoute,
    routes: Vec<Route>,
    /// Each route's path parameter names, in template order.
    params: Vec<Vec<String>>,
    /// Each route's `api_key_required`.
    key_required: Vec<bool>,
}

impl std::fmt::Debug for Definition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Definition")
            .field("deployment", &self.deployment)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Route {
    display: String,
    /// Where the path template starts in `display` (after `METHOD `; 0
    /// for `$default`).
    template_at: usize,
}

impl Route {
    /// The path template (`/pets/{id}`), or the whole key for `$default`.
    fn template(&self) -> &str {
        &self.display[self.template_at..]
    }
}

#[derive(Debug)]
struct Stage {
    name: String,
    /// What production traffic is routed by.
    def: Arc<Definition>,
    /// One per route of `def`, indexed by `RouteId`.
    integrations: Vec<StageIntegration>,
    /// The stage cache, when the stage enables one.
    cache: Option<Arc<StageCacheState>>,
    /// Each route's throttle (its own bucket), indexed like `integrations`.
    throttles: Vec<Option<Level>>,
    /// By API key index: the key's plan on this stage, if it has one.
    access: Vec<Option<KeyAccess>>,
    /// Each route's per-client table (`client_throttle`), indexed like
    /// `integrations`.
    clients: Vec<Option<Arc<KeyedBuckets>>>,
    /// The canary, when the stage has one.
    canary: Option<Box<Canary>>,
    /// Metrics series ([`Snapshot::series_labels`] index) of the stage.
    series: Series,
    /// The access log format of the stage's requests (`None`: not logged).
    log: Option<Arc<LogFormat>>,
}

/// Where a stage's (or canary's) requests are counted: indexes into
/// [`Snapshot::series_labels`].
#[derive(Debug)]
struct Series {
    /// Requests no route of the stage matched, and every request when the
    /// stage does not record detailed metrics.
    stage: u32,
    /// By route (`detailed_metrics`), indexed like the integrations.
    routes: Option<Box<[u32]>>,
}

impl Series {
    fn new(
        labels: &mut Vec<SeriesLabels>,
        api: &str,
        stage: &str,
        detailed: bool,
        def: &Definition,
        canary: bool,
    ) -> Series {
        let mut add = |route: &str| {
            labels.push(SeriesLabels::new(api, stage, route, canary));
            (labels.len() - 1) as u32
        };
        let stage = add("");
        let routes = detailed.then(|| def.routes.iter().map(|r| add(&r.display)).collect());
        Series { stage, routes }
    }

    #[inline]
    fn route(&self, route: usize) -> u32 {
        match &self.routes {
            Some(r) => r.get(route).copied().unwrap_or(self.stage),
            None => self.stage,
        }
    }
}

/// A stage's canary: a share of requests served by another deployment.
#[derive(Debug)]
struct Canary {
    /// A request whose 32-bit roll is below this goes to the canary
    /// (`percent / 100 × 2^32`; 2^32 for 100 %).
    threshold: u64,
    def: Arc<Definition>,
    integrations: Vec<StageIntegration>,
    /// The stage's cache when the canary uses it (its keys apart).
    cache: Option<Arc<StageCacheState>>,
    /// Each route's throttle: the stage's bucket for the same route key.
    throttles: Vec<Option<Level>>,
    /// By API key index: the key's plan (the stage's buckets).
    access: Vec<Option<KeyAccess>>,
    /// Each route's per-client table (the stage's for the same route and
    /// limit).
    clients: Vec<Option<Arc<KeyedBuckets>>>,
    /// Metrics series of the canary's requests (`canary="true"`).
    series: Series,
}

/// A request described by its parts, to find its cache entry
/// ([`Snapshot::cache_key`]).
#[derive(Debug, Clone, Copy)]
pub struct EntryRequest<'a> {
    /// The method (HEAD is keyed as GET).
    pub method: &'a str,
    /// The path within the stage.
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: &'a str,
    /// Headers the route's key parameters name.
    pub headers: &'a [(String, String)],
}

/// What one stage serves ([`Api::served`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served<'a> {
    /// The stage's name.
    pub stage: &'a str,
    /// Its deployment; `None`: the file's current definition.
    pub deployment: Option<u64>,
    /// Its canary's deployment and share of requests (percent), if any.
    pub canary: Option<(Option<u64>, f64)>,
}

/// How each stage is built: an entry per stage of each API, in the
/// configuration's order, and the API keys and usage plans of every source
/// ([`Plan::from_file`] for the file alone).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// `apis[i][j]`: stage `j` of `config.apis[i]`.
    pub apis: Vec<Vec<StagePlan>>,
    /// Every API key (the file's and the state store's); values unique.
    pub keys: Vec<KeyDef>,
    /// Every usage plan.
    pub usage_plans: Vec<UsagePlanDef>,
}

/// An API key as the snapshot knows it.
#[derive(Clone)]
pub struct KeyDef {
    /// Its id (a file key's name, or the store's generated id).
    pub id: String,
    /// What clients send.
    pub value: String,
    /// A disabled key is refused.
    pub enabled: bool,
}

impl std::fmt::Debug for KeyDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the value.
        f.debug_struct("KeyDef")
            .field("id", &self.id)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A usage plan as the snapshot builds it.
#[derive(Debug, Clone)]
pub struct UsagePlanDef {
    /// Its id (a file plan's name, or the store's generated id).
    pub id: String,
    /// Per key over every stage of the plan.
    pub throttle: Option<ThrottleLimit>,
    /// The stages, with per-key per-route throttles.
    pub stages: Vec<crate::config::PlanStageConfig>,
    /// The keys: an index into [`Plan::keys`] and the (plan, key) usage
    /// counters (quota included).
    pub keys: Vec<(usize, Arc<UsageCell>)>,
}

/// How one stage is built.
#[derive(Debug, Clone)]
pub struct StagePlan {
    /// The stage as served: its name, variables and cache settings.
    pub stage: StageConfig,
    /// The deployment it serves; `None`: the file's current definition.
    pub deployment: Option<Arc<Deployment>>,
    /// Its canary.
    pub canary: Option<CanaryPlan>,
}

/// A stage's canary, as built.
#[derive(Debug, Clone)]
pub struct CanaryPlan {
    /// The deployment canary requests get.
    pub deployment: Arc<Deployment>,
    /// Share of requests, 0.0..=100.0.
    pub percent: f64,
    /// The stage variables canary requests see (overrides applied).
    pub variables: std::collections::BTreeMap<String, String>,
    /// Canary requests use the stage cache, keys apart.
    pub use_stage_cache: bool,
}

impl Plan {
    /// Every stage from the file, as `auto_deploy` stages are built, with
    /// the file's keys and plans counting usage in a registry of their own
    /// (a gateway's control side builds its plans with its own registry).
    pub fn from_file(config: &Config) -> Plan {
        let mut plan = Plan {
            apis: config
                .apis
                .iter()
                .map(|api| {
                    api.stages
                        .iter()
                        .map(|s| StagePlan {
                            stage: s.clone(),
                            deployment: None,
                            canary: None,
                        })
                        .collect()
                })
                .collect(),
            ..Plan::default()
        };
        let usage = Usage::new();
        let now = usage.clock().unix_secs();
        plan.add_file_keys(config, &usage, |_| now, |_, _| Restored::default());
        plan
    }

    /// Adds the file's `[[api_key]]`s and `[[usage_plan]]`s, their usage
    /// counted in `usage`: `seen(plan)` is when the plan was first seen (its
    /// quota's first period), `restored(plan, key)` what the store holds for
    /// a counter created now.
    pub fn add_file_keys(
        &mut self,
        config: &Config,
        usage: &Usage,
        seen: impl Fn(&str) -> u64,
        restored: impl Fn(&str, &str) -> Restored,
    ) {
        let first = self.keys.len();
        self.keys.extend(config.api_keys.iter().map(|k| KeyDef {
            id: k.name.clone(),
            value: k.value.clone(),
            enabled: k.enabled,
        }));
        for p in &config.usage_plans {
            let created = seen(&p.name);
            let keys = p
                .keys
                .iter()
                .filter_map(|name| {
                    let i = config.api_keys.iter().position(|k| k.name == *name)?;
                    let cell =
                        usage.cell(&p.name, name, p.quota, created, || restored(&p.name, name));
                    Some((first + i, cell))
                })
                .collect();
            self.usage_plans.push(UsagePlanDef {
                id: p.name.clone(),
                throttle: p.throttle,
                stages: p.stages.clone(),
                keys,
            });
        }
    }
}

/// Builds the usage-plan buckets of one snapshot, carrying those of the
/// previous one whose limit is unchanged.
struct PlanLevels<'c> {
    config: &'c Config,
    previous: Option<&'c HashMap<String, Level>>,
    levels: HashMap<String, Level>,
    usage_plans: &'c [UsagePlanDef],
    /// The keys' ids, by index.
    key_ids: Vec<&'c str>,
    /// How many keys there are.
    keys: usize,
}

impl PlanLevels<'_> {
    fn level(
        &mut self,
        key: String,
        l: &crate::config::ThrottleLimit,
    ) -> Result<Level, BuildError> {
        if let Some(level) = self.levels.get(&key) {
            return Ok(level.clone());
        }
        let limit = Limit::new(l.rate, l.burst).map_err(|e| BuildError {
            file: self.config.source.clone(),
            line: 0,
            message: format!("usage plan bucket {key:?}: {e}"),
        })?;
        let level = self
            .previous
            .and_then(|p| p.get(&key))
            .map_or_else(|| Level::new(limit), |prev| prev.carry(limit));
        self.levels.insert(key, level.clone());
        Ok(level)
    }

    /// Each API key's access to one stage serving `def`.
    fn access(
        &mut self,
        api: &str,
        stage: &str,
        def: &Definition,
    ) -> Result<Vec<Option<KeyAccess>>, BuildError> {
        let usage_plans = self.usage_plans;
        let mut out = vec![None; self.keys];
        for plan in usage_plans {
            let Some(ps) = plan
                .stages
                .iter()
                .find(|s| s.api == api && s.stage == stage)
            else {
                continue;
            };
            for (index, cell) in &plan.keys {
                let key: &str = self.key_ids[*index];
                let key_level = match &plan.throttle {
                    Some(l) => Some(self.level(format!("{}\0{key}", plan.id), l)?),
                    None => None,
                };
                let mut route_levels = Vec::with_capacity(def.routes.len());
                for r in &def.routes {
                    route_levels.push(match ps.route_throttle.get(&r.display) {
                        Some(l) => Some(self.level(
                            format!("{}\0{key}\0{api}\0{stage}\0{}", plan.id, r.display),
                            l,
                        )?),
                        None => None,
                    });
                }
                if let Some(slot) = out.get_mut(*index) {
                    *slot = Some(KeyAccess {
                        key_level,
                        route_levels,
                        usage: cell.clone(),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// The roll threshold for `percent` (clamped to 0..=100).
fn canary_threshold(percent: f64) -> u64 {
    let p = if percent.is_nan() {
        0.0
    } else {
        percent.clamp(0.0, 100.0)
    };
    ((p / 100.0) * (1u64 << 32) as f64).round() as u64
}

/// Compiles one definition's route table.
fn compile_definition(
    file: &str,
    api: &str,
    unmatched: UnmatchedRoute,
    routes: &[crate::config::RouteConfig],
    deployment: Option<u64>,
) -> Result<Definition, BuildError> {
    let mut builder = RouteTableBuilder::new();
    let mut compiled = Vec::with_capacity(routes.len());
    let mut params: Vec<Vec<String>> = Vec::with_capacity(routes.len());
    let origin = deployment.map_or_else(String::new, |id| format!(" (deployment {id})"));
    for (ri, route) in routes.iter().enumerate() {
        let id = RouteId(ri as u32);
        let err = |e: RouteError| BuildError {
            file: file.to_string(),
            line: route.line,
            message: format!(
                "api {api:?}{origin}, route {:?}: {e}",
                route.key.as_display()
            ),
        };
        match &route.key {
            RouteKey::Default => {
                builder.set_default(id).map_err(err)?;
                params.push(Vec::new());
            }
            RouteKey::Route { method, path } => {
                let spec = match method {
                    None => MethodSpec::Any,
                    Some(m) => {
                        MethodSpec::One(Method::from_bytes(m.as_bytes()).ok_or_else(|| {
                            BuildError {
                                file: file.to_string(),
                                line: route.line,
                                message: format!("api {api:?}{origin}: unknown method {m:?}"),
                            }
                        })?)
                    }
                };
                builder.add(spec, path, id).map_err(err)?;
                params.push(template_params(path));
            }
        }
        compiled.push(Route {
            template_at: route.key.as_display().find(' ').map_or(0, |i| i + 1),
            display: route.key.as_display(),
        });
    }
    Ok(Definition {
        deployment,
        table: builder.build(),
        unmatched,
        routes: compiled,
        params,
        key_required: routes.iter().map(|r| r.api_key_required).collect(),
    })
}

/// The compiled definition of deployment `d`, compiled once per API.
fn deployment_definition(
    defs: &mut Vec<Arc<Definition>>,
    config: &Config,
    d: &Deployment,
) -> Result<Arc<Definition>, BuildError> {
    if let Some(def) = defs.iter().find(|x| x.deployment == Some(d.id)) {
        return Ok(def.clone());
    }
    let def = Arc::new(compile_definition(
        &config.source,
        &d.api,
        d.definition.unmatched_route,
        &d.definition.routes,
        Some(d.id),
    )?);
    defs.push(def.clone());
    Ok(def)
}

/// Each route's integration as `stage` serves it. `prefix` goes before
/// every cache namespace (deployments and canaries keep their entries
/// apart). `lenient`: a backend the running configuration cannot name (a
/// deployment's upstream since removed from the file) makes the route
/// answer 500 instead of failing the build.
fn stage_integrations(
    config: &Config,
    routes: &[crate::config::RouteConfig],
    def: &Definition,
    stage: &StageConfig,
    registry: &mut Registry,
    prefix: &str,
    lenient: bool,
) -> Result<Vec<StageIntegration>, BuildError> {
    let mut integrations = Vec::with_capacity(routes.len());
    for (ri, route) in routes.iter().enumerate() {
        let params = &def.params[ri];
        let vars = &stage.variables;
        let integration = match &route.integration {
            Integration::Mock(mock) => match compile(&mock.body, vars, params) {
                Ok((body, literal_len)) => {
                    let mut status_line = Vec::new();
                    write_status_line(&mut status_line, mock.status);
                    let mut headers = Vec::new();
                    for (name, value) in &mock.headers {
                        headers.extend_from_slice(name.as_bytes());
                        headers.extend_from_slice(b": ");
                        headers.extend_from_slice(value.as_bytes());
                        headers.extend_from_slice(b"\r\n");
                    }
                    StageIntegration::Mock(MockResponse {
                        status: mock.status,
                        status_line,
                        headers,
                        body,
                        literal_len,
                    })
                }
                Err(name) if lenient => StageIntegration::Unresolved(format!(
                    "stage {:?} has no variable {name:?} used by the mock of route {:?}",
                    stage.name,
                    route.key.as_display()
                )),
                Err(name) => {
                    return Err(BuildError {
                        file: config.source.clone(),
                        line: route.line,
                        message: format!(
                            "stage {:?} has no variable {name:?} used by route {:?}",
                            stage.name,
                            route.key.as_display()
                        ),
                    })
                }
            },
            Integration::HttpProxy(proxy) => match proxy_route(proxy, vars, params, registry) {
                Ok(mut p) => {
                    p.cache = route_cache(route, stage, params, prefix);
                    StageIntegration::Proxy(p)
                }
                Err(ProxyBuildError::MissingVariable(name)) => {
                    StageIntegration::Unresolved(format!(
                        "stage {:?} has no variable {name:?} used by {:?}",
                        stage.name, proxy.uri
                    ))
                }
                Err(ProxyBuildError::Authority(why)) if lenient => {
                    StageIntegration::Unresolved(format!("stage {:?}: {why}", stage.name))
                }
                Err(ProxyBuildError::Authority(why)) => {
                    return Err(BuildError {
                        file: config.source.clone(),
                        line: route.line,
                        message: format!("stage {:?}: {why}", stage.name),
                    })
                }
            },
            #[allow(unreachable_patterns)]
            _ => {
                return Err(BuildError {
                    file: config.source.clone(),
                    line: route.line,
                    message: "integration kind not supported by this build".into(),
                })
            }
        };
        integrations.push(integration);
    }
    Ok(integrations)
}

/// A stage's cache and its settings.
#[derive(Debug)]
pub struct StageCacheState {
    /// The store, shared by every worker (and kept across reloads that do
    /// not change its capacity).
    pub store: Arc<StageCache>,
    /// The stage's `[api.stage.cache]`.
    pub settings: StageCacheConfig,
    /// RFC mode: the targeted cache-control fields (RFC 9213), lowercase,
    /// in order of precedence (the stage's own, then `cdn-cache-control`);
    /// empty in the API Gateway mode.
    pub targeted: Box<[Box<str>]>,
}

impl StageCacheState {
    /// The state of a stage cache with these settings.
    pub fn new(store: Arc<StageCache>, settings: StageCacheConfig) -> StageCacheState {
        let targeted = if settings.respect_origin_cache_control {
            settings
                .targeted_cache_control
                .iter()
                .map(|t| Box::from(t.as_str()))
                .chain([Box::from("cdn-cache-control")])
                .collect()
        } else {
            Box::default()
        };
        StageCacheState {
            store,
            settings,
            targeted,
        }
    }
}

/// How one route caches in one stage.
#[derive(Debug)]
pub struct RouteCache {
    /// TTL for GET (and HEAD, answered from the GET entry); `None`: not cached.
    pub ttl_get: Option<std::time::Duration>,
    /// TTL for the route's own method when it is not GET (`enabled = true`).
    pub ttl_own: Option<(Method, std::time::Duration)>,
    /// Routes naming the same namespace share entries.
    pub namespace: String,
    /// The parameters that vary the key, in order.
    pub params: Vec<KeyParam>,
    /// The whole query string varies the key.
    pub whole_query: bool,
}

/// One key parameter, resolved against the route.
#[derive(Debug)]
pub enum KeyParam {
    /// The route's path parameter at this index (and its name).
    Path(usize, String),
    /// A query-string parameter.
    Query(String),
    /// A request header (lowercase name).
    Header(String),
}

impl RouteCache {
    /// The TTL for a request with `method`, if such requests are cached.
    pub fn ttl_for(&self, method: &str) -> Option<std::time::Duration> {
        match method {
            "GET" | "HEAD" => self.ttl_get,
            m => self
                .ttl_own
                .filter(|(own, _)| own.as_str() == m)
                .map(|(_, ttl)| ttl),
        }
    }
}

/// A route's integration as one stage sees it (its variables substituted).
#[derive(Debug)]
enum StageIntegration {
    Mock(MockResponse),
    Proxy(ProxyRoute),
    /// The stage lacks a variable the integration uses: 500 at request time
    /// (API Gateway's API_CONFIGURATION_ERROR).
    Unresolved(String),
}

/// An `http_proxy` integration compiled for one stage.
#[derive(Debug)]
pub struct ProxyRoute {
    /// The upstream group, an index into [`Snapshot::upstreams`].
    pub group: usize,
    /// The backend path, `{param}`s to splice in per request.
    path: Vec<Piece>,
    /// The template's query (without `?`); the client's query is appended.
    query: Vec<Piece>,
    /// Integration timeout.
    pub timeout: std::time::Duration,
    /// Send the client's Host.
    pub preserve_host: bool,
    /// Pass upgrades (WebSocket) through.
    pub allow_upgrade: bool,
    /// The route's caching in this stage, when the stage has a cache.
    pub cache: Option<RouteCache>,
}

impl ProxyRoute {
    /// Appends the backend request target (path and query) to `out`.
    pub fn write_target(&self, params: &Params<'_, '_>, client_query: &str, out: &mut Vec<u8>) {
        write_pieces(&self.path, params, out);
        let has_template_query = !self.query.is_empty();
        if has_template_query || !client_query.is_empty() {
            out.push(b'?');
            write_pieces(&self.query, params, out);
            if has_template_query && !client_query.is_empty() {
                out.push(b'&');
            }
            out.extend_from_slice(client_query.as_bytes());
        }
    }
}

fn write_pieces(pieces: &[Piece], params: &Params<'_, '_>, out: &mut Vec<u8>) {
    for piece in pieces {
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

/// The cache policy of a proxied route in a stage (`None`: not cached).
fn route_cache(
    route: &crate::config::RouteConfig,
    stage: &crate::config::StageConfig,
    params: &[String],
    prefix: &str,
) -> Option<RouteCache> {
    stage.cache.as_ref().filter(|c| c.enabled)?;
    let ttl_get = route.cache_ttl(stage, "GET");
    let ttl_own = match &route.key {
        RouteKey::Route {
            method: Some(m), ..
        } if m != "GET" => Method::from_bytes(m.as_bytes())
            .and_then(|own| route.cache_ttl(stage, m).map(|ttl| (own, ttl))),
        _ => None,
    };
    if ttl_get.is_none() && ttl_own.is_none() {
        return None;
    }
    let rc = route.cache.as_ref();
    let key_params = rc.map_or(&[][..], |c| &c.key_parameters[..]);
    let resolved = key_params
        .iter()
        .filter_map(|p| match p {
            KeyParameter::Path(name) => params
                .iter()
                .position(|n| n == name)
                .map(|i| KeyParam::Path(i, name.clone())),
            KeyParameter::Query(name) => Some(KeyParam::Query(name.clone())),
            KeyParameter::Header(name) => Some(KeyParam::Header(name.to_ascii_lowercase())),
        })
        .collect();
    Some(RouteCache {
        ttl_get,
        ttl_own,
        namespace: format!(
            "{prefix}{}",
            rc.and_then(|c| c.namespace.as_deref())
                .map_or_else(|| route.key.as_display(), str::to_string)
        ),
        params: resolved,
        whole_query: rc.is_some_and(|c| c.whole_query),
    })
}

enum ProxyBuildError {
    MissingVariable(String),
    Authority(String),
}

fn proxy_route(
    proxy: &crate::config::HttpProxyIntegration,
    vars: &std::collections::BTreeMap<String, String>,
    params: &[String],
    registry: &mut Registry,
) -> Result<ProxyRoute, ProxyBuildError> {
    let mut authority = String::new();
    for part in &proxy.authority {
        match part {
            BodyPart::Literal(s) => authority.push_str(s),
            BodyPart::StageVariable(name) => authority.push_str(
                vars.get(name)
                    .ok_or_else(|| ProxyBuildError::MissingVariable(name.clone()))?,
            ),
            BodyPart::PathParam(_) => {
                return Err(ProxyBuildError::Authority(
                    "a path parameter cannot name the backend".into(),
                ))
            }
        }
    }
    let group = registry
        .group_for(&authority, proxy.tls)
        .map_err(ProxyBuildError::Authority)?;
    let (path, _) = compile(&proxy.path, vars, params).map_err(ProxyBuildError::MissingVariable)?;
    let (query, _) =
        compile(&proxy.query, vars, params).map_err(ProxyBuildError::MissingVariable)?;
    Ok(ProxyRoute {
        group,
        path,
        query,
        timeout: proxy.timeout,
        preserve_host: proxy.preserve_host,
        allow_upgrade: proxy.allow_upgrade,
        cache: None,
    })
}

/// Compiles a template for one stage: stage variables substituted,
/// `{param}`s of the route kept as pieces, other `{text}` literal. Returns
/// the pieces and the total literal length; `Err(name)` for a variable the
/// stage lacks.
fn compile(
    parts: &[BodyPart],
    vars: &std::collections::BTreeMap<String, String>,
    params: &[String],
) -> Result<(Vec<Piece>, usize), String> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut literal_len = 0;
    for part in parts {
        match part {
            BodyPart::Literal(s) => literal.extend_from_slice(s.as_bytes()),
            BodyPart::StageVariable(name) => {
                literal.extend_from_slice(vars.get(name).ok_or_else(|| name.clone())?.as_bytes())
            }
            BodyPart::PathParam(name) => match params.iter().position(|p| p == name) {
                Some(i) => {
                    if !literal.is_empty() {
                        literal_len += literal.len();
                        pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
                    }
                    pieces.push(Piece::Param(i));
                }
                None => {
                    literal.push(b'{');
                    literal.extend_from_slice(name.as_bytes());
                    literal.push(b'}');
                }
            },
        }
    }
    if !literal.is_empty() {
        literal_len += literal.len();
        pieces.push(Piece::Literal(literal.into()));
    }
    Ok((pieces, literal_len))
}

/// A mock response with the stage's variables already substituted.
#[derive(Debug)]
pub struct MockResponse {
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
    /// Rate-limit headers (opt-in), if the request has them.
    pub rate: Option<&'a RateHeaders>,
}

impl Snapshot {
    /// Compiles a validated configuration, every stage following the file.
    pub fn build(config: &Config) -> Result<Snapshot, BuildError> {
        Self::build_with(config, &Plan::from_file(config), None)
    }

    /// Compiles a configuration with each stage built as `plan` says (from
    /// the file, or from a deployment, with a canary). Stage caches of
    /// `previous` whose capacity is unchanged are kept, entries and all.
    pub fn build_with(
        config: &Config,
        plan: &Plan,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, BuildError> {
        let mut registry = Registry::from_config_reusing(config, previous.map(|p| &*p.upstreams));
        let mut plans = PlanLevels {
            config,
            previous: previous.map(|p| &p.plan_levels),
            levels: HashMap::new(),
            usage_plans: &plan.usage_plans,
            key_ids: plan.keys.iter().map(|k| k.id.as_str()).collect(),
            keys: plan.keys.len(),
        };
        let mut client_tables = ClientTables::default();
        let client_err = |message: String| BuildError {
            file: config.source.clone(),
            line: 0,
            message,
        };
        let mut series_labels = vec![SeriesLabels::new("", "", "", false)];
        let log_err = |e: crate::observe::access_log::FormatError| BuildError {
            file: config.source.clone(),
            line: 0,
            message: format!("access log format: {e}"),
        };
        let default_log = match &config.access_log {
            None => None,
            Some(a) => Some(Arc::new(
                LogFormat::from_setting(&a.format).map_err(log_err)?,
            )),
        };
        let mut apis = Vec::with_capacity(config.apis.len());
        let mut api_hosts = Vec::new();
        let mut default_api = None;
        for (ai, api) in config.apis.iter().enumerate() {
            let file_def = Arc::new(compile_definition(
                &config.source,
                &api.name,
                api.unmatched_route,
                &api.routes,
                None,
            )?);
            let mut defs: Vec<Arc<Definition>> = Vec::new();
            let mut stages = Vec::with_capacity(api.stages.len());
            let stage_plans = plan.apis.get(ai).map_or(&[][..], |p| &p[..]);
            for sp in stage_plans {
                let def = match &sp.deployment {
                    None => file_def.clone(),
                    Some(d) => deployment_definition(&mut defs, config, d)?,
                };
                let routes = sp
                    .deployment
                    .as_ref()
                    .map_or(&api.routes[..], |d| &d.definition.routes[..]);
                let cache = sp.stage.cache.as_ref().filter(|c| c.enabled).map(|c| {
                    let store = previous
                        .and_then(|p| p.stage_cache(&api.name, &sp.stage.name))
                        // Entries of the other mode carry other metadata.
                        .filter(|prev| {
                            prev.store.capacity() == c.capacity_bytes
                                && prev.settings.respect_origin_cache_control
                                    == c.respect_origin_cache_control
                        })
                        .map_or_else(
                            || Arc::new(StageCache::new(c.capacity_bytes)),
                            |prev| prev.store.clone(),
                        );
                    Arc::new(StageCacheState::new(store, c.clone()))
                });
                let prefix = sp
                    .deployment
                    .as_ref()
                    .map_or_else(String::new, |d| format!("d{}/", d.id));
                let integrations = stage_integrations(
                    config,
                    routes,
                    &def,
                    &sp.stage,
                    &mut registry,
                    &prefix,
                    sp.deployment.is_some(),
                )?;
                // One bucket per (stage, route key), shared with the canary
                // and carried from the previous snapshot when its limit is
                // unchanged.
                let mut levels: Vec<(String, Level)> = Vec::new();
                let mut throttles_for =
                    |def: &Definition| -> Result<Vec<Option<Level>>, BuildError> {
                        def.routes
                            .iter()
                            .map(|r| {
                                let Some(l) = sp
                                    .stage
                                    .route_throttle
                                    .get(&r.display)
                                    .or(sp.stage.throttle.as_ref())
                                else {
                                    return Ok(None);
                                };
                                if let Some((_, level)) =
                                    levels.iter().find(|(k, _)| *k == r.display)
                                {
                                    return Ok(Some(level.clone()));
                                }
                                let limit =
                                    Limit::new(l.rate, l.burst).map_err(|e| BuildError {
                                        file: config.source.clone(),
                                        line: 0,
                                        message: format!(
                                            "api {:?} stage {:?} route {:?}: {e}",
                                            api.name, sp.stage.name, r.display
                                        ),
                                    })?;
                                let level = previous
                                    .and_then(|p| {
                                        p.route_level(&api.name, &sp.stage.name, &r.display)
                                    })
                                    .map_or_else(|| Level::new(limit), |prev| prev.carry(limit));
                                levels.push((r.display.clone(), level.clone()));
                                Ok(Some(level))
                            })
                            .collect()
                    };
                let throttles = throttles_for(&def)?;
                let access = plans.access(&api.name, &sp.stage.name, &def)?;
                let clients = client_tables
                    .for_routes(
                        previous.map(|p| &p.client_tables),
                        &api.name,
                        &sp.stage.name,
                        routes,
                    )
                    .map_err(client_err)?;
                let canary = match &sp.canary {
                    None => None,
                    Some(c) => {
                        let cdef = deployment_definition(&mut defs, config, &c.deployment)?;
                        let mut cstage = sp.stage.clone();
                        cstage.variables = c.variables.clone();
                        if !c.use_stage_cache {
                            cstage.cache = None;
                        }
                        let integrations = stage_integrations(
                            config,
                            &c.deployment.definition.routes,
                            &cdef,
                            &cstage,
                            &mut registry,
                            &format!("canary/d{}/", c.deployment.id),
                            true,
                        )?;
                        let throttles = throttles_for(&cdef)?;
                        let access = plans.access(&api.name, &sp.stage.name, &cdef)?;
                        let clients = client_tables
                            .for_routes(
                                previous.map(|p| &p.client_tables),
                                &api.name,
                                &sp.stage.name,
                                &c.deployment.definition.routes,
                            )
                            .map_err(client_err)?;
                        let series = Series::new(
                            &mut series_labels,
                            &api.name,
                            &sp.stage.name,
                            sp.stage.detailed_metrics,
                            &cdef,
                            true,
                        );
                        Some(Box::new(Canary {
                            series,
                            access,
                            clients,
                            threshold: canary_threshold(c.percent),
                            def: cdef,
                            integrations,
                            cache: cache.clone().filter(|_| c.use_stage_cache),
                            throttles,
                        }))
                    }
                };
                let series = Series::new(
                    &mut series_labels,
                    &api.name,
                    &sp.stage.name,
                    sp.stage.detailed_metrics,
                    &def,
                    false,
                );
                let log = match (&default_log, sp.stage.access_log_format.as_deref()) {
                    (None, _) | (_, Some("off")) => None,
                    (Some(d), None) => Some(d.clone()),
                    (Some(_), Some(f)) => {
                        Some(Arc::new(LogFormat::from_setting(f).map_err(log_err)?))
                    }
                };
                stages.push(Stage {
                    series,
                    log,
                    name: sp.stage.name.clone(),
                    def,
                    integrations,
                    cache,
                    throttles,
                    access,
                    clients,
                    canary,
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
                file: file_def,
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
        registry.finish();
        let account = match &config.throttle {
            None => None,
            Some(l) => {
                let limit = Limit::new(l.rate, l.burst).map_err(|e| BuildError {
                    file: config.source.clone(),
                    line: 0,
                    message: format!("[throttle]: {e}"),
                })?;
                Some(
                    previous
                        .and_then(|p| p.account.as_ref())
                        .map_or_else(|| Level::new(limit), |prev| prev.carry(limit)),
                )
            }
        };
        let keys = KeyTable::new(&plan.keys);
        let plan_levels = plans.levels;
        Ok(Snapshot {
            account,
            keys,
            plan_levels,
            any_client_table: client_tables.len() > 0,
            client_tables,
            rate_headers: config.throttle_headers,
            key_source: KeySource::new(&config.key_source),
            series_labels,
            series_ids: OnceLock::new(),
            default_log,
            upstreams: Arc::new(registry),
            apis,
            domains,
            wildcard_domain,
            api_hosts,
            default_api,
        })
    }

    /// The metrics label sets this snapshot counts requests under, by the
    /// index [`Routed::series`] gives.
    pub fn series_labels(&self) -> &[SeriesLabels] {
        &self.series_labels
    }

    /// Gives the label sets their process-wide ids (once; the publisher
    /// does it before any worker sees the snapshot).
    pub fn set_series_ids(&self, ids: Box<[u32]>) {
        let _ = self.series_ids.set(ids);
    }

    /// The process-wide metrics id of series `local` ([`UNROUTED`] before
    /// the snapshot was published).
    #[inline]
    pub fn series_id(&self, local: u32) -> u32 {
        self.series_ids
            .get()
            .and_then(|ids| ids.get(local as usize))
            .copied()
            .unwrap_or(UNROUTED)
    }

    /// Routes some stage (or canary) cannot serve (a stage variable their
    /// integration uses is missing, a deployment names a backend the file
    /// no longer has): each answers 500 until fixed. (api, route, why).
    pub fn problems(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.apis.iter().flat_map(|api| {
            api.stages.iter().flat_map(move |stage| {
                let canary = stage
                    .canary
                    .iter()
                    .flat_map(|c| c.integrations.iter().zip(&c.def.routes));
                stage
                    .integrations
                    .iter()
                    .zip(&stage.def.routes)
                    .chain(canary)
                    .filter_map(move |(i, r)| match i {
                        StageIntegration::Unresolved(why) => {
                            Some((api.name.as_str(), r.display.as_str(), why.as_str()))
                        }
                        _ => None,
                    })
            })
        })
    }

    /// The throttle of `route` (its key as written) in a stage, if any.
    fn route_level(&self, api: &str, stage: &str, route: &str) -> Option<&Level> {
        let s = self
            .apis
            .iter()
            .find(|a| a.name == api)?
            .stages
            .iter()
            .find(|s| s.name == stage)?;
        let i = s.def.routes.iter().position(|r| r.display == route)?;
        s.throttles.get(i)?.as_ref()
    }

    /// The account-level throttle, if one is set.
    pub fn account_throttle(&self) -> Option<&Level> {
        self.account.as_ref()
    }

    /// Drops the idle buckets of every per-client table (`client_throttle`);
    /// returns how many. Run every few seconds off the request path (the
    /// server's `ringgate-sweep` thread does, see
    /// [`ClientSweeper`](super::limits::ClientSweeper)).
    pub fn sweep_client_buckets(&self, now_ns: u64) -> usize {
        self.client_tables.sweep(now_ns)
    }

    /// How many per-client tables the snapshot has (one per stage and
    /// route with `client_throttle`, shared with a canary of the same
    /// limit).
    pub fn client_table_count(&self) -> usize {
        self.client_tables.len()
    }

    /// Whether responses carry rate-limit headers (`[throttle] headers`).
    pub fn rate_headers(&self) -> bool {
        self.rate_headers
    }

    /// Where API keys are read from (`[key_source]`).
    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// The cache of a stage, if it has one (for flushing and statistics).
    pub fn stage_cache(&self, api: &str, stage: &str) -> Option<&StageCacheState> {
        let api = self.apis.iter().find(|a| a.name == api)?;
        api.stages
            .iter()
            .find(|s| s.name == stage)?
            .cache
            .as_deref()
    }

    /// The cache key a request would have in a stage's cache (or its
    /// canary's entries): `path` is the path within the stage (what routing
    /// sees), `query` the query string without `?`, `headers` the request
    /// headers that the route's key parameters name. `Err` says why there
    /// is no such key (no such stage or route, or the route is not cached
    /// for `method`).
    pub fn cache_key(
        &self,
        api: &str,
        stage: &str,
        canary: bool,
        req: &EntryRequest<'_>,
    ) -> Result<crate::cache::CacheKey, String> {
        let EntryRequest {
            method,
            path,
            query,
            headers,
        } = *req;
        let a = self
            .apis
            .iter()
            .find(|a| a.name == api)
            .ok_or_else(|| format!("no api {api:?}"))?;
        let s = a
            .stages
            .iter()
            .find(|s| s.name == stage)
            .ok_or_else(|| format!("api {api:?} has no stage {stage:?}"))?;
        let (def, integrations) = if canary {
            let c = s
                .canary
                .as_ref()
                .ok_or_else(|| format!("stage {stage:?} has no canary"))?;
            (&*c.def, &c.integrations)
        } else {
            (&*s.def, &s.integrations)
        };
        let m = Method::from_bytes(method.as_bytes())
            .ok_or_else(|| format!("{method:?} is not a method routes use"))?;
        let mut params = Params::new();
        let RouteId(route) = def
            .table
            .lookup(m, path, &mut params)
            .ok_or_else(|| format!("no route of stage {stage:?} matches {method} {path}"))?;
        let rc = match &integrations[route as usize] {
            StageIntegration::Proxy(p) => p.cache.as_ref(),
            _ => None,
        }
        .filter(|rc| rc.ttl_for(method).is_some())
        .ok_or_else(|| {
            format!(
                "route {:?} does not cache {method} requests in stage {stage:?}",
                def.routes[route as usize].display
            )
        })?;
        let mut keys = crate::cache::KeyBuilder::new();
        let hidden = self.key_source.hidden_query();
        super::cached::key_fields(&mut keys, rc, method, &params, (query, hidden), |name| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().as_bytes())
        });
        Ok(keys.finish())
    }

    /// RFC 9111 §4.4: removes the entries stored for a GET of `path` and
    /// `query` (as a request with this `host` would reach them) from the
    /// stage's cache and its canary's, where they are in the RFC mode.
    /// `header(name)` gives the request header values that a route's key
    /// parameters name: an entry keyed on a header is removed for the
    /// values this request carries. Returns how many entries were removed.
    pub fn invalidate<'h>(
        &self,
        host: Option<&[u8]>,
        path: &str,
        query: &str,
        header: &dyn Fn(&str) -> Option<&'h [u8]>,
    ) -> u32 {
        let Ok(target) = self.resolve(host, path) else {
            return 0;
        };
        let stage = &target.api.stages[target.stage];
        let sides = [
            Some((&*stage.def, &stage.integrations, stage.cache.as_deref())),
            stage
                .canary
                .as_ref()
                .map(|c| (&*c.def, &c.integrations, c.cache.as_deref())),
        ];
        let mut removed = 0;
        for (def, integrations, cache) in sides.into_iter().flatten() {
            let Some(cache) = cache.filter(|c| c.settings.respect_origin_cache_control) else {
                continue;
            };
            let mut params = Params::new();
            let Some(RouteId(route)) = def.table.lookup(Method::Get, target.path, &mut params)
            else {
                continue;
            };
            let rc = match integrations.get(route as usize) {
                Some(StageIntegration::Proxy(p)) => p.cache.as_ref(),
                _ => None,
            };
            let Some(rc) = rc.filter(|rc| rc.ttl_for("GET").is_some()) else {
                continue;
            };
            let mut keys = crate::cache::KeyBuilder::new();
            let hidden = self.key_source.hidden_query();
            super::cached::key_fields(&mut keys, rc, "GET", &params, (query, hidden), header);
            if cache.store.remove(&keys.finish()) {
                removed += 1;
            }
        }
        removed
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

    /// `[access_log]`'s format, for requests refused before they are
    /// routed.
    pub fn default_log(&self) -> Option<&LogFormat> {
        self.default_log.as_deref()
    }

    /// Resolves and routes a request: what should answer it, whether the
    /// stage's canary does, and the route's throttle. `roll` is asked for a
    /// uniform random `u32` only when the stage has a canary. Path
    /// parameters are left in `params`.
    pub fn dispatch<'s, 'p>(
        &'s self,
        method: &str,
        host: Option<&[u8]>,
        path: &'p str,
        params: &mut Params<'s, 'p>,
        roll: impl FnOnce() -> u32,
    ) -> Routed<'s> {
        let target = match self.resolve(host, path) {
            Ok(t) => t,
            Err(e) => {
                let mut r = Routed::fail(e, false, 0);
                r.log = self.default_log.as_deref();
                return r;
            }
        };
        let stage = &target.api.stages[target.stage];
        let (def, integrations, cache, throttles, access, clients, series, is_canary) =
            match &stage.canary {
                Some(c) if u64::from(roll()) < c.threshold => (
                    &*c.def,
                    &c.integrations,
                    c.cache.as_deref(),
                    &c.throttles,
                    &c.access,
                    &c.clients,
                    &c.series,
                    true,
                ),
                _ => (
                    &*stage.def,
                    &stage.integrations,
                    stage.cache.as_deref(),
                    &stage.throttles,
                    &stage.access,
                    &stage.clients,
                    &stage.series,
                    false,
                ),
            };
        let route = Method::from_bytes(method.as_bytes()).and_then(|m| {
            def.table.lookup(m, target.path, params).or_else(|| {
                if m == Method::Head {
                    params.clear();
                    def.table.lookup(Method::Get, target.path, params)
                } else {
                    None
                }
            })
        });
        let Some(RouteId(route)) = route else {
            let e = match def.unmatched {
                UnmatchedRoute::MissingAuthenticationToken => {
                    GatewayError::MissingAuthenticationToken
                }
                UnmatchedRoute::NotFound => GatewayError::NotFound,
            };
            let mut r = Routed::fail(e, is_canary, series.stage);
            r.log = stage.log.as_deref();
            r.names = Some((&target.api.name, &stage.name));
            return r;
        };
        let route = route as usize;
        let dispatch = match &integrations[route] {
            StageIntegration::Mock(m) => Dispatch::Mock(m),
            StageIntegration::Proxy(p) => Dispatch::Proxy(p, cache),
            StageIntegration::Unresolved(_) => Dispatch::Fail(GatewayError::ApiConfiguration),
        };
        Routed {
            dispatch,
            is_canary,
            series: series.route(route),
            log: stage.log.as_deref(),
            names: Some((&target.api.name, &stage.name)),
            route_template: def.routes.get(route).map(Route::template),
            throttle: throttles[route].as_ref(),
            client: if self.any_client_table {
                clients[route].as_deref()
            } else {
                None
            },
            keys: def.key_required[route].then_some(KeyCheck {
                access: &access[..],
                route,
            }),
        }
    }

    /// The plan of the API key `value` on a stage whose routing gave
    /// `check`: `None` when the key is unknown, disabled or in no plan of
    /// the stage (API Gateway answers all three 403 Forbidden). The lookup
    /// hashes with a per-process random key, so its time tells nothing
    /// about the stored keys.
    pub fn key_access<'s>(
        &'s self,
        check: &KeyCheck<'s>,
        value: &[u8],
    ) -> Option<(&'s KeyAccess, usize)> {
        self.key_access_id(check, value)
            .map(|(a, route, _)| (a, route))
    }

    /// [`Snapshot::key_access`], with the key's id (for access logs).
    pub fn key_access_id<'s>(
        &'s self,
        check: &KeyCheck<'s>,
        value: &[u8],
    ) -> Option<(&'s KeyAccess, usize, &'s str)> {
        let (index, enabled) = self.keys.find(value)?;
        if !enabled {
            return None;
        }
        let id = self.keys.ids.get(index).map_or("", |id| &**id);
        check
            .access
            .get(index)?
            .as_ref()
            .map(|a| (a, check.route, id))
    }
}

/// A route that requires an API key: the stage's key table and the route.
#[derive(Debug, Clone, Copy)]
pub struct KeyCheck<'s> {
    access: &'s [Option<KeyAccess>],
    route: usize,
}

impl KeyAccess {
    /// The plan's buckets for a request to `route`: per key per route, then
    /// per key (API Gateway's order).
    pub fn levels(&self, route: usize) -> [Option<&Level>; 2] {
        [
            self.route_levels.get(route).and_then(Option::as_ref),
            self.key_level.as_ref(),
        ]
    }

    /// The key's usage under its plan: counts the request, or refuses it
    /// when the quota is used up.
    pub fn usage(&self) -> &UsageCell {
        &self.usage
    }
}

/// A routed request ([`Snapshot::dispatch`]).
#[derive(Debug)]
pub struct Routed<'s> {
    /// What answers it.
    pub dispatch: Dispatch<'s>,
    /// The stage's canary answers it.
    pub is_canary: bool,
    /// Where it is counted ([`Snapshot::series_id`] gives the metrics id).
    pub series: u32,
    /// Its access log format (`None`: not logged).
    pub log: Option<&'s LogFormat>,
    /// The API's and the stage's names, once the stage is known.
    pub names: Option<(&'s str, &'s str)>,
    /// The matched route's path template (`/pets/{id}`; `$default` for
    /// the default route).
    pub route_template: Option<&'s str>,
    /// The route's throttle in its stage, if it has one.
    pub throttle: Option<&'s Level>,
    /// The route's per-client table in its stage (`client_throttle`).
    pub client: Option<&'s KeyedBuckets>,
    /// The route requires an API key: where to find the key's plan.
    pub keys: Option<KeyCheck<'s>>,
}

impl Routed<'_> {
    fn fail(e: GatewayError, is_canary: bool, series: u32) -> Self {
        Routed {
            dispatch: Dispatch::Fail(e),
            is_canary,
            series,
            log: None,
            names: None,
            route_template: None,
            throttle: None,
            client: None,
            keys: None,
        }
    }
}

/// What answers a request.
#[derive(Debug)]
pub enum Dispatch<'s> {
    /// A mock integration.
    Mock(&'s MockResponse),
    /// An `http_proxy` integration, with the stage's cache if it has one.
    Proxy(&'s ProxyRoute, Option<&'s StageCacheState>),
    /// A gateway error.
    Fail(GatewayError),
}

impl MockResponse {
    /// Writes the response into `out`; returns its status and the length
    /// of the body sent (0 for `HEAD`).
    pub fn write(
        &self,
        params: &Params<'_, '_>,
        ctx: &ResponseContext<'_>,
        out: &mut Vec<u8>,
        head_only: bool,
    ) -> (u16, u64) {
        out.extend_from_slice(&self.status_line);
        write_common_headers(out, ctx.date, ctx.request_id, ctx.connection);
        write_rate_headers(out, ctx.rate);
        out.extend_from_slice(&self.headers);
        if crate::http::response::status_has_no_body(self.status) {
            out.extend_from_slice(b"\r\n");
            return (self.status, 0);
        }
        let mut len = self.literal_len;
        for piece in &self.body {
            if let Piece::Param(i) = piece {
                len += params.iter().nth(*i).map_or(0, |(_, v)| v.len());
            }
        }
        write_content_length(out, len as u64);
        out.extend_from_slice(b"\r\n");
        if head_only {
            return (self.status, 0);
        }
        write_pieces(&self.body, params, out);
        (self.status, len as u64)
    }
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// Stage names, in configuration order.
    pub fn stage_names(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.name.as_str())
    }

    /// Route keys of the file's definition, as written (`GET /pets/{id}`,
    /// `$default`).
    pub fn route_names(&self) -> impl Iterator<Item = &str> {
        self.file.routes.iter().map(|r| r.display.as_str())
    }

    /// What each stage serves, in configuration order.
    pub fn served(&self) -> impl Iterator<Item = Served<'_>> {
        self.stages.iter().map(|s| Served {
            stage: &s.name,
            deployment: s.def.deployment,
            canary: s.canary.as_ref().map(|c| {
                (
                    c.def.deployment,
                    c.threshold as f64 * 100.0 / (1u64 << 32) as f64,
                )
            }),
        })
    }
}

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
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
        // Every position, in the words and in the tail.
        let a: Vec<u8> = (0..29u8).collect();
        assert!(constant_time_eq(&a, &a.clone()));
        for i in 0..a.len() {
            let mut b = a.clone();
            b[i] ^= 0x80;
            assert!(!constant_time_eq(&a, &b), "{i}");
        }
    }

    #[test]
    fn template_param_order() {
        assert_eq!(template_params("/a/{x}/b/{rest+}"), ["x", "rest"]);
    }
}
