//! The control side: deployments, stages, canaries, cache operations and
//! reloads, applied to a running gateway without dropping a request.
//!
//! [`Control`] owns the configuration as last loaded, the durable
//! [`Store`] and its in-memory [`State`], and the health thread. Every
//! change goes the same way, under one lock:
//!
//! 1. check the request against the configuration and the state; a bad one
//!    is refused with a [`ControlError`] (4xx) and changes nothing;
//! 2. compute the writes and the state they lead to, and compile the
//!    snapshot that state gives ([`Snapshot::build_with`], reusing the
//!    stage caches and upstream targets of the running one); a state that
//!    does not compile is refused too;
//! 3. commit the writes to the store (durable from here on);
//! 4. publish the snapshot: workers pick it up at their next request, and
//!    requests in flight finish on the one they started with.
//!
//! ## Stages
//! A stage with `auto_deploy = true` (the default) serves the file's current
//! definition of its API and follows reloads; the admin socket can deploy
//! its API but not repoint or reconfigure it. A stage with
//! `auto_deploy = false` serves the deployment its record in the store points
//! at, with the record's variables and cache settings; the first time such a
//! stage is seen, the file's definition is deployed to it and its variables
//! and cache settings are copied from the file ("seeding"), so flipping the
//! flag never takes a stage off the air. From then on the file's variables
//! and cache settings for that stage are not used (a reload says so).
//!
//! ## Canaries (API Gateway's `canarySettings`)
//! Only on pinned stages. A canary names a deployment, a share of requests
//! (0–100 %, chosen at random per request), stage-variable overrides and
//! whether canary requests use the stage cache (their entries are keyed
//! apart from production's). Deploying to a stage with a canary moves only
//! the canary; the stage cannot be repointed until the canary is removed;
//! promote copies the canary's deployment and overrides to the stage and
//! sets the share to 0, keeping the canary.
//!
//! ## API keys, usage plans and usage
//! See `control/keys.rs`: keys and plans from the file (read-only here) and from the
//! store; every (plan, key) pair's usage counter lives in [`Control::usage`]
//! across snapshots and reaches the store through [`UsageFlusher`] every
//! [`USAGE_FLUSH_INTERVAL`] and when the server stops.
//!
//! ## Reload
//! [`Control::reload`] reads the file again, validates it as `ringgate
//! check` does, and applies `[[api]]`, `[[domain]]` and `[[upstream]]`. A
//! file that does not validate is refused with the same `file:line` error
//! and the running configuration stays. `[server]`, `[limits]`, `[state]` and
//! `[admin]` are read at start only; a reload that changes them says so.

#![forbid(unsafe_code)]

mod keys;

pub use keys::{
    KeyPatch, KeyPeriod, KeyView, NewKey, PlanPatch, PlanSpec, PlanView, Source, UsageReport,
};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::QuotaSettings;
use crate::config::{
    self, AccessLogConfig, ApiConfig, ApiDefinition, Config, StageCacheConfig, StageConfig,
    ThrottleLimit,
};
use crate::gateway::{
    BuildError, CanaryPlan, KeyDef, Plan, Published, Snapshot, StagePlan, UsagePlanDef,
};
use crate::state::{unix_now, Canary, Deployment, StageRecord, State, StateError, Store, Write};
use crate::throttle::quota::{Restored, DAY_SECS};
use crate::throttle::Usage;
use crate::upstream::health::Checker;

/// Why a control operation was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError {
    /// The HTTP status the admin socket answers with.
    pub status: u16,
    /// A stable, machine-readable code (`not_found`, `conflict`, ...).
    pub code: &'static str,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
    /// The request field at fault, if one is.
    pub field: Option<String>,
}

impl ControlError {
    /// 400, naming the field at fault.
    pub fn invalid(field: &str, message: impl Into<String>) -> ControlError {
        ControlError {
            status: 400,
            code: "invalid_value",
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ControlError {
        ControlError {
            status: 404,
            code: "not_found",
            message: message.into(),
            field: None,
        }
    }

    /// 409: the request is well-formed but the state does not allow it.
    pub fn conflict(message: impl Into<String>) -> ControlError {
        ControlError {
            status: 409,
            code: "conflict",
            message: message.into(),
            field: None,
        }
    }

    fn internal(message: impl Into<String>) -> ControlError {
        ControlError {
            status: 500,
            code: "internal",
            message: message.into(),
            field: None,
        }
    }
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({field})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ControlError {}

impl From<StateError> for ControlError {
    fn from(e: StateError) -> Self {
        ControlError::internal(format!("the state store failed: {e}"))
    }
}

impl From<BuildError> for ControlError {
    fn from(e: BuildError) -> Self {
        ControlError::conflict(format!("the change does not compile: {e}"))
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Warnings of the new file (as `ringgate check` prints them).
    pub warnings: Vec<String>,
    /// Sections that changed but apply only at the next start.
    pub restart_required: Vec<String>,
    /// Pinned stages whose variables or cache settings in the file differ
    /// from their stored ones (the stored ones are served).
    pub pinned_differences: Vec<String>,
}

/// A change to a stage's cache settings ([`Control::update_stage`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachePatch {
    /// Turn the cache on or off.
    pub enabled: Option<bool>,
    /// A capacity class or size ([`config::parse_capacity`]).
    pub capacity: Option<String>,
    /// Time to live, 0..=3600 s.
    pub ttl_seconds: Option<u64>,
}

/// A change to a stage ([`Control::update_stage`]); `None` leaves a field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StagePatch {
    /// Point the stage at this deployment (rollback or roll forward).
    pub deployment: Option<u64>,
    /// Set (`Some`) or remove (`None`) variables.
    pub variables: BTreeMap<String, Option<String>>,
    /// Change the cache settings.
    pub cache: Option<CachePatch>,
    /// Set (`Some(Some)`) or remove (`Some(None)`) the stage's default
    /// per-route throttle.
    pub throttle: Option<Option<ThrottleLimit>>,
    /// Set or remove per-route throttles, by route key as written.
    pub route_throttle: BTreeMap<String, Option<ThrottleLimit>>,
}

/// A change to a canary ([`Control::set_canary`]); `None` leaves a field
/// (or takes the default when the canary is new).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CanaryPatch {
    /// The canary's deployment (default: the stage's own).
    pub deployment: Option<u64>,
    /// Share of requests, 0..=100 (required for a new canary).
    pub percent: Option<f64>,
    /// Set (`Some`) or remove (`None`) overrides.
    pub variable_overrides: BTreeMap<String, Option<String>>,
    /// Canary requests use the stage cache (default false).
    pub use_stage_cache: Option<bool>,
}

/// The control side of a running gateway.
pub struct Control {
    inner: Mutex<Inner>,
    published: Arc<Published>,
    /// The file [`Control::reload`] reads; `None`: built from text.
    config_path: Option<PathBuf>,
    /// Every (plan, key) usage counter, across snapshots.
    usage: Arc<Usage>,
}

struct Inner {
    config: Config,
    store: Store,
    state: State,
    snapshot: Arc<Snapshot>,
    health: Option<Checker>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

/// The plan for `config` given `state`, and the writes that seed pinned
/// stages seen for the first time.
fn plan(
    config: &Config,
    state: &State,
    store: &Store,
    usage: &Usage,
) -> Result<(Plan, Vec<Write>), ControlError> {
    let mut next_id = state.next_deployment_id();
    let mut writes = Vec::new();
    let mut apis = Vec::with_capacity(config.apis.len());
    for api in &config.apis {
        let mut stages = Vec::with_capacity(api.stages.len());
        for stage in &api.stages {
            if stage.auto_deploy {
                stages.push(StagePlan {
                    stage: stage.clone(),
                    deployment: None,
                    canary: None,
                });
                continue;
            }
            let (record, deployment) = match state.stage(&api.name, &stage.name) {
                Some(r) => {
                    let d = state
                        .deployment(&api.name, r.deployment)
                        .cloned()
                        .ok_or_else(|| {
                            ControlError::internal(format!(
                                "stage {:?} of api {:?} points at deployment {}, which the state \
                             does not have",
                                stage.name, api.name, r.deployment
                            ))
                        })?;
                    (r.clone(), d)
                }
                None => {
                    let d = Arc::new(Deployment {
                        id: next_id,
                        api: api.name.clone(),
                        description: format!(
                            "initial deployment of stage {:?} from {}",
                            stage.name, config.source
                        ),
                        created_at: unix_now(),
                        definition: api.definition(),
                    });
                    next_id += 1;
                    let r = StageRecord {
                        deployment: d.id,
                        variables: stage.variables.clone(),
                        cache: stage.cache.clone(),
                        throttle: stage.throttle,
                        route_throttle: stage.route_throttle.clone(),
                        canary: None,
                        updated_at: unix_now(),
                    };
                    writes.push(Write::Deployment(d.clone()));
                    writes.push(Write::Stage {
                        api: api.name.clone(),
                        stage: stage.name.clone(),
                        record: Some(Box::new(r.clone())),
                    });
                    (r, d)
                }
            };
            stages.push(stage_plan(api, stage, &record, deployment, state)?);
        }
        apis.push(stages);
    }
    let mut plan = Plan {
        apis,
        ..Plan::default()
    };
    let now = usage.clock().unix_secs();
    for p in &config.usage_plans {
        if state.plan_seen(&p.name).is_none() {
            writes.push(Write::PlanSeen {
                plan: p.name.clone(),
                at: now,
            });
        }
    }
    let quotas: BTreeMap<&str, Option<QuotaSettings>> = config
        .usage_plans
        .iter()
        .map(|p| (p.name.as_str(), p.quota))
        .chain(state.plans().values().map(|p| (p.id.as_str(), p.quota)))
        .collect();
    let restored = |plan: &str, key: &str| {
        restored_usage(
            store,
            state,
            usage,
            plan,
            key,
            quotas.get(plan).copied().flatten(),
        )
    };
    plan.add_file_keys(
        config,
        usage,
        |p| state.plan_seen(p).unwrap_or(now),
        restored,
    );
    // Then the store's keys and plans.
    let first = plan.keys.len();
    let index: BTreeMap<&str, usize> = state
        .keys()
        .keys()
        .enumerate()
        .map(|(i, id)| (id.as_str(), first + i))
        .collect();
    plan.keys.extend(state.keys().values().map(|k| KeyDef {
        id: k.id.clone(),
        value: k.value.clone(),
        enabled: k.enabled,
    }));
    // Values and ids are unique across the file and the store.
    let mut values: BTreeMap<&str, &str> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for k in &plan.keys {
        if let Some(other) = values.insert(k.value.as_str(), k.id.as_str()) {
            return Err(ControlError::conflict(format!(
                "api keys {other:?} and {:?} have the same value: give the file's key another \
                 value, or delete the one created through the admin socket",
                k.id
            )));
        }
        if !ids.insert(k.id.as_str()) {
            return Err(ControlError::conflict(format!(
                "the file's api key {:?} has the id of a key in the state store: rename it",
                k.id
            )));
        }
    }
    for p in &config.usage_plans {
        if state.plans().contains_key(&p.name) {
            return Err(ControlError::conflict(format!(
                "the file's usage plan {:?} has the id of a plan in the state store: rename it",
                p.name
            )));
        }
    }
    for p in state.plans().values() {
        let keys = p
            .keys
            .iter()
            .filter_map(|k| {
                let i = *index.get(k.as_str())?;
                let cell = usage.cell(&p.id, k, p.quota, p.created_at, || restored(&p.id, k));
                Some((i, cell))
            })
            .collect();
        plan.usage_plans.push(UsagePlanDef {
            id: p.id.clone(),
            throttle: p.throttle,
            stages: p.stages.clone(),
            keys,
        });
    }
    Ok((plan, writes))
}

/// What the store holds for a (plan, key) counter being created: the
/// requests already counted in the quota's current period, and an
/// operator's allowance for it.
fn restored_usage(
    store: &Store,
    state: &State,
    usage: &Usage,
    plan: &str,
    key: &str,
    quota: Option<QuotaSettings>,
) -> Restored {
    let Some(q) = quota else {
        return Restored::default();
    };
    let (start, _) = q.period.bounds(usage.clock().unix_secs());
    let today = usage.clock().unix_secs() / DAY_SECS;
    let used = match store.usage(plan, start / DAY_SECS, today) {
        Ok(rows) => rows.iter().filter(|r| r.key == key).map(|r| r.count).sum(),
        Err(e) => {
            // Fail open, as API Gateway does when it cannot check a plan.
            eprintln!("ringgate: usage plan {plan:?}: cannot read usage ({e}); counting from 0");
            0
        }
    };
    Restored {
        used,
        allowance: state.allowance(plan, key),
        force: false,
    }
}

fn stage_plan(
    api: &ApiConfig,
    stage: &StageConfig,
    record: &StageRecord,
    deployment: Arc<Deployment>,
    state: &State,
) -> Result<StagePlan, ControlError> {
    let canary = match &record.canary {
        None => None,
        Some(c) => {
            let d = state
                .deployment(&api.name, c.deployment)
                .cloned()
                .ok_or_else(|| {
                    ControlError::internal(format!(
                        "the canary of stage {:?} points at deployment {}, which the state does \
                     not have",
                        stage.name, c.deployment
                    ))
                })?;
            let mut variables = record.variables.clone();
            variables.extend(c.variable_overrides.clone());
            Some(CanaryPlan {
                deployment: d,
                percent: c.percent,
                variables,
                use_stage_cache: c.use_stage_cache,
            })
        }
    };
    Ok(StagePlan {
        stage: StageConfig {
            name: stage.name.clone(),
            auto_deploy: false,
            variables: record.variables.clone(),
            cache: record.cache.clone(),
            throttle: record.throttle,
            route_throttle: record.route_throttle.clone(),
            // A setting of the file's stage, not of the deployment.
            detailed_metrics: stage.detailed_metrics,
            access_log_format: stage.access_log_format.clone(),
        },
        deployment: Some(deployment),
        canary,
    })
}

impl Control {
    /// Seeds pinned stages, compiles the first snapshot and starts the
    /// health thread. `config_path` is the file reloads read.
    pub fn start(
        config: Config,
        config_path: Option<PathBuf>,
        store: Store,
        mut state: State,
    ) -> Result<(Control, Arc<Snapshot>), ControlError> {
        let usage = Arc::new(Usage::new());
        let (plan, seeds) = plan(&config, &state, &store, &usage)?;
        let snapshot =
            Arc::new(
                Snapshot::build_with(&config, &plan, None).map_err(|e| ControlError {
                    status: 400,
                    code: "invalid_config",
                    message: e.to_string(),
                    field: None,
                })?,
            );
        if !seeds.is_empty() {
            store.apply(&mut state, seeds)?;
        }
        let health = start_health(&snapshot)?;
        let control = Control {
            inner: Mutex::new(Inner {
                config,
                store,
                state,
                snapshot: snapshot.clone(),
                health,
            }),
            published: Arc::new(Published::new(snapshot.clone())),
            config_path,
            usage,
        };
        Ok((control, snapshot))
    }

    /// Where snapshots are published (the gateway's workers read it).
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads under the lock: the configuration, the state and the snapshot
    /// being served.
    pub fn read<T>(&self, f: impl FnOnce(&Config, &State, &Arc<Snapshot>) -> T) -> T {
        let inner = self.lock();
        f(&inner.config, &inner.state, &inner.snapshot)
    }

    /// The store's file (`None`: in memory).
    pub fn store_path(&self) -> Option<PathBuf> {
        self.lock().store.path().map(|p| p.to_path_buf())
    }

    /// The configuration file reloads read.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    /// Every (plan, key) usage counter; its clock is the one quotas run on
    /// (tests shift it to cross a period boundary).
    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }

    /// Writes the usage counted since the last flush to the store, in one
    /// transaction; returns how many (plan, key, day) rows it added to.
    /// Counts that could not be written stay pending for the next flush.
    pub fn flush_usage(&self) -> Result<usize, ControlError> {
        let inner = self.lock();
        self.flush_locked(&inner)
    }

    fn flush_locked(&self, inner: &Inner) -> Result<usize, ControlError> {
        let rows = self.usage.drain();
        match inner.store.add_usage(&rows) {
            Ok(()) => Ok(rows.len()),
            Err(e) => {
                self.usage.restore(&rows);
                Err(e.into())
            }
        }
    }

    /// Applies `writes` to a copy of the state, compiles it with `config`,
    /// commits and publishes.
    fn commit(
        &self,
        inner: &mut Inner,
        config: Option<Config>,
        writes: Vec<Write>,
    ) -> Result<(), ControlError> {
        let mut trial = inner.state.clone();
        let config_ref = config.as_ref().unwrap_or(&inner.config);
        // What the state would be: the writes applied to a copy, compiled
        // before anything is committed.
        trial.apply(&writes);
        let (plan, seeds) = plan(config_ref, &trial, &inner.store, &self.usage)?;
        let snapshot = Arc::new(Snapshot::build_with(
            config_ref,
            &plan,
            Some(&inner.snapshot),
        )?);
        let mut all = writes;
        all.extend(seeds);
        if !all.is_empty() {
            inner.store.apply(&mut inner.state, all)?;
        }
        if let Some(c) = config {
            inner.config = c;
        }
        self.publish(inner, snapshot)
    }

    fn publish(&self, inner: &mut Inner, snapshot: Arc<Snapshot>) -> Result<(), ControlError> {
        // The health thread follows the new targets; when they are the same
        // objects with the same checks, the running thread goes on.
        if !same_targets(&inner.snapshot, &snapshot) {
            if let Some(mut h) = inner.health.take() {
                h.stop();
            }
            inner.health = start_health(&snapshot)?;
        }
        inner.snapshot = snapshot.clone();
        self.published.publish(snapshot);
        Ok(())
    }

    fn api<'c>(config: &'c Config, api: &str) -> Result<&'c ApiConfig, ControlError> {
        config
            .apis
            .iter()
            .find(|a| a.name == api)
            .ok_or_else(|| ControlError::not_found(format!("no api {api:?} in the configuration")))
    }

    fn stage<'c>(
        config: &'c Config,
        api: &str,
        stage: &str,
    ) -> Result<(&'c ApiConfig, &'c StageConfig), ControlError> {
        let a = Self::api(config, api)?;
        let s = a.stage(stage).ok_or_else(|| {
            ControlError::not_found(format!("api {api:?} has no stage {stage:?}"))
        })?;
        Ok((a, s))
    }

    /// The record of a pinned stage; 409 for an `auto_deploy` stage.
    fn pinned(
        config: &Config,
        state: &State,
        api: &str,
        stage: &str,
        what: &str,
    ) -> Result<StageRecord, ControlError> {
        let (_, s) = Self::stage(config, api, stage)?;
        if s.auto_deploy {
            return Err(ControlError::conflict(format!(
                "stage {stage:?} of api {api:?} follows the configuration file \
                 (auto_deploy = true), so {what} through the admin socket is not possible: \
                 edit the file and reload, or set auto_deploy = false on the stage"
            )));
        }
        state
            .stage(api, stage)
            .cloned()
            .ok_or_else(|| ControlError::internal(format!("pinned stage {stage:?} has no record")))
    }

    fn deployment_of(state: &State, api: &str, id: u64, field: &str) -> Result<(), ControlError> {
        if state.deployment(api, id).is_none() {
            return Err(ControlError {
                status: 404,
                code: "not_found",
                message: format!("api {api:?} has no deployment {id}"),
                field: Some(field.to_string()),
            });
        }
        Ok(())
    }

    /// Deploys the API's current definition from the file, with a
    /// description; with `stage`, also points that (pinned) stage at it —
    /// or only its canary, when it has one.
    pub fn create_deployment(
        &self,
        api: &str,
        description: &str,
        stage: Option<&str>,
    ) -> Result<Arc<Deployment>, ControlError> {
        self.deploy(api, description, stage, None)
    }

    /// Deploys `definition` (an imported one) as a deployment of the API,
    /// as [`Control::create_deployment`] deploys the file's.
    pub fn import_deployment(
        &self,
        api: &str,
        description: &str,
        stage: Option<&str>,
        definition: ApiDefinition,
    ) -> Result<Arc<Deployment>, ControlError> {
        self.deploy(api, description, stage, Some(definition))
    }

    fn deploy(
        &self,
        api: &str,
        description: &str,
        stage: Option<&str>,
        definition: Option<ApiDefinition>,
    ) -> Result<Arc<Deployment>, ControlError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if description.chars().count() > 1024 {
            return Err(ControlError::invalid(
                "description",
                "description is longer than 1024 characters",
            ));
        }
        let a = Self::api(&inner.config, api)?;
        let d = Arc::new(Deployment {
            id: inner.state.next_deployment_id(),
            api: api.to_string(),
            description: description.to_string(),
            created_at: unix_now(),
            definition: definition.unwrap_or_else(|| a.definition()),
        });
        let mut writes = vec![Write::Deployment(d.clone())];
        if let Some(stage) = stage {
            let mut r = Self::pinned(&inner.config, &inner.state, api, stage, "deploying to it")
                .map_err(|mut e| {
                    e.field = Some("stage".into());
                    e
                })?;
            match &mut r.canary {
                Some(c) => c.deployment = d.id,
                None => r.deployment = d.id,
            }
            r.updated_at = unix_now();
            writes.push(Write::Stage {
                api: api.to_string(),
                stage: stage.to_string(),
                record: Some(Box::new(r)),
            });
        }
        self.commit(inner, None, writes)?;
        Ok(d)
    }

    /// Changes a pinned stage: its deployment (refused while it has a
    /// canary), variables and cache settings. Returns the new record.
    pub fn update_stage(
        &self,
        api: &str,
        stage: &str,
        patch: &StagePatch,
    ) -> Result<StageRecord, ControlError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut r = Self::pinned(&inner.config, &inner.state, api, stage, "changing it")?;
        if let Some(id) = patch.deployment {
            Self::deployment_of(&inner.state, api, id, "deployment_id")?;
            if r.canary.is_some() && id != r.deployment {
                return Err(ControlError {
                    field: Some("deployment_id".into()),
                    ..ControlError::conflict(format!(
                        "stage {stage:?} has a canary: remove the canary (or promote it) \
                         before pointing the stage at another deployment"
                    ))
                });
            }
            r.deployment = id;
        }
        patch_variables(&mut r.variables, &patch.variables, "variables")?;
        if let Some(c) = &patch.cache {
            r.cache = patch_cache(r.cache.take(), c)?;
        }
        let account = inner.config.throttle;
        if let Some(t) = patch.throttle {
            if let Some(l) = t {
                check_limit(&l, account, "throttle")?;
            }
            r.throttle = t;
        }
        if !patch.route_throttle.is_empty() {
            let d = inner
                .state
                .deployment(api, r.deployment)
                .ok_or_else(|| ControlError::internal("the stage's deployment is missing"))?;
            for (route, limit) in &patch.route_throttle {
                let field = format!("route_throttle.{route}");
                match limit {
                    Some(l) => {
                        if !d
                            .definition
                            .routes
                            .iter()
                            .any(|x| x.key.as_display() == *route)
                        {
                            return Err(ControlError::invalid(
                                &field,
                                format!(
                                    "deployment {} of api {api:?} has no route {route:?}",
                                    d.id
                                ),
                            ));
                        }
                        check_limit(l, account, &field)?;
                        r.route_throttle.insert(route.clone(), *l);
                    }
                    None => {
                        r.route_throttle.remove(route);
                    }
                }
            }
        }
        self.save_stage(inner, api, stage, r)
    }

    /// Stamps and commits a pinned stage's new record, and returns it.
    fn save_stage(
        &self,
        inner: &mut Inner,
        api: &str,
        stage: &str,
        mut r: StageRecord,
    ) -> Result<StageRecord, ControlError> {
        r.updated_at = unix_now();
        self.commit(
            inner,
            None,
            vec![Write::Stage {
                api: api.to_string(),
                stage: stage.to_string(),
                record: Some(Box::new(r.clone())),
            }],
        )?;
        Ok(r)
    }

    /// Creates or changes a pinned stage's canary.
    pub fn set_canary(
        &self,
        api: &str,
        stage: &str,
        patch: &CanaryPatch,
    ) -> Result<StageRecord, ControlError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut r = Self::pinned(&inner.config, &inner.state, api, stage, "a canary")?;
        let mut c = match r.canary.take() {
            Some(c) => c,
            None => Canary {
                deployment: r.deployment,
                percent: patch.percent.ok_or_else(|| {
                    ControlError::invalid("percent", "a new canary needs percent (0 to 100)")
                })?,
                variable_overrides: BTreeMap::new(),
                use_stage_cache: false,
            },
        };
        if let Some(id) = patch.deployment {
            Self::deployment_of(&inner.state, api, id, "deployment_id")?;
            c.deployment = id;
        }
        if let Some(p) = patch.percent {
            if !(0.0..=100.0).contains(&p) {
                return Err(ControlError::invalid(
                    "percent",
                    format!("percent {p} is not between 0 and 100"),
                ));
            }
            c.percent = p;
        }
        patch_variables(
            &mut c.variable_overrides,
            &patch.variable_overrides,
            "variable_overrides",
        )?;
        if let Some(u) = patch.use_stage_cache {
            c.use_stage_cache = u;
        }
        r.canary = Some(c);
        self.save_stage(inner, api, stage, r)
    }

    /// Removes a stage's canary (404 when it has none).
    pub fn remove_canary(&self, api: &str, stage: &str) -> Result<StageRecord, ControlError> {
        self.change_canary(api, stage, |r| {
            r.canary = None;
        })
    }

    /// Promotes the canary: its deployment becomes the stage's, its
    /// overrides are merged into the stage's variables, and its share
    /// becomes 0 (the canary stays until removed).
    pub fn promote_canary(&self, api: &str, stage: &str) -> Result<StageRecord, ControlError> {
        self.change_canary(api, stage, |r| {
            if let Some(c) = &mut r.canary {
                r.deployment = c.deployment;
                r.variables
                    .extend(std::mem::take(&mut c.variable_overrides));
                c.percent = 0.0;
            }
        })
    }

    fn change_canary(
        &self,
        api: &str,
        stage: &str,
        f: impl FnOnce(&mut StageRecord),
    ) -> Result<StageRecord, ControlError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut r = Self::pinned(&inner.config, &inner.state, api, stage, "a canary")?;
        if r.canary.is_none() {
            return Err(ControlError::not_found(format!(
                "stage {stage:?} of api {api:?} has no canary"
            )));
        }
        f(&mut r);
        self.save_stage(inner, api, stage, r)
    }

    /// Reads the configuration file again and applies it. A file that
    /// does not validate (or compile with the state) is refused and the
    /// running configuration stays.
    pub fn reload(&self) -> Result<ReloadReport, ControlError> {
        let path = self.config_path.as_ref().ok_or_else(|| {
            ControlError::conflict("this gateway was not started from a file: nothing to reload")
        })?;
        let new = config::load(path).map_err(|e| ControlError {
            status: 400,
            code: "invalid_config",
            message: e.to_string(),
            field: None,
        })?;
        self.apply_config(new)
    }

    /// Applies a new configuration as [`Control::reload`] does.
    pub fn apply_config(&self, mut new: Config) -> Result<ReloadReport, ControlError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut report = ReloadReport {
            warnings: new.warnings.iter().map(|w| w.to_string()).collect(),
            ..ReloadReport::default()
        };
        let old = &inner.config;
        let log_place = |c: &Config| c.access_log.as_ref().map(|a| (a.path.clone(), a.queue));
        let sections: [(&str, bool); 6] = [
            ("[server]", old.server != new.server),
            ("[limits]", old.limits != new.limits),
            ("[state]", old.state != new.state),
            ("[admin]", old.admin != new.admin),
            ("[metrics]", old.metrics != new.metrics),
            (
                "[access_log] path or queue",
                log_place(old) != log_place(&new),
            ),
        ];
        for (name, changed) in sections {
            if changed {
                report.restart_required.push(name.to_string());
            }
        }
        // What only a restart applies keeps its running value.
        new.server = old.server.clone();
        new.limits = old.limits.clone();
        new.state = old.state.clone();
        new.admin = old.admin.clone();
        new.metrics = old.metrics.clone();
        // The format applies now; the file and queue at the next start.
        new.access_log = match (&old.access_log, new.access_log.take()) {
            (Some(o), Some(n)) => Some(AccessLogConfig {
                format: n.format,
                ..o.clone()
            }),
            (o, _) => o.clone(),
        };
        for api in &new.apis {
            for s in api.stages.iter().filter(|s| !s.auto_deploy) {
                if let Some(r) = inner.state.stage(&api.name, &s.name) {
                    if r.variables != s.variables
                        || r.cache != s.cache
                        || r.throttle != s.throttle
                        || r.route_throttle != s.route_throttle
                    {
                        report.pinned_differences.push(format!(
                            "api {:?} stage {:?} is pinned (auto_deploy = false): its variables, \
                             cache and throttle settings come from the state store, not the file",
                            api.name, s.name
                        ));
                    }
                }
            }
        }
        self.commit(inner, Some(new), Vec::new()).map_err(|e| {
            if e.code == "conflict" {
                ControlError {
                    status: 400,
                    code: "invalid_config",
                    ..e
                }
            } else {
                e
            }
        })?;
        for (api, route, why) in inner.snapshot.problems() {
            report.warnings.push(format!(
                "api {api:?}, route {route:?}: {why}; it answers 500 until fixed"
            ));
        }
        Ok(report)
    }

    /// The stage's cache, for flushing, dropping one entry or reading the
    /// counters: 404 for an unknown stage, 409 for a stage without a cache.
    pub fn stage_cache(
        &self,
        api: &str,
        stage: &str,
    ) -> Result<(Arc<Snapshot>, String, String), ControlError> {
        let inner = self.lock();
        Self::stage(&inner.config, api, stage)?;
        if inner.snapshot.stage_cache(api, stage).is_none() {
            return Err(ControlError::conflict(format!(
                "stage {stage:?} of api {api:?} has no cache enabled"
            )));
        }
        Ok((inner.snapshot.clone(), api.to_string(), stage.to_string()))
    }
}

fn patch_variables(
    vars: &mut BTreeMap<String, String>,
    patch: &BTreeMap<String, Option<String>>,
    field: &str,
) -> Result<(), ControlError> {
    for (name, value) in patch {
        let key = format!("{field}.{name}");
        match value {
            Some(v) => {
                config::check_stage_variable(name, v)
                    .map_err(|m| ControlError::invalid(&key, m))?;
                vars.insert(name.clone(), v.clone());
            }
            None => {
                vars.remove(name);
            }
        }
    }
    if vars.len() > 100 {
        return Err(ControlError::invalid(
            field,
            "a stage may have at most 100 variables",
        ));
    }
    Ok(())
}

/// A stage limit: finite, at most the account's (API Gateway's rule).
/// Flushes usage counts to the store every `interval` on a thread of its
/// own, and once more when stopped ([`UsageFlusher::stop`], or dropped).
pub struct UsageFlusher {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often usage counts reach the store: the most a `kill -9` loses.
pub const USAGE_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl UsageFlusher {
    /// Starts flushing `control`'s usage every `interval`.
    pub fn start(control: Arc<Control>, interval: std::time::Duration) -> std::io::Result<Self> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ringgate-usage".into())
            .spawn(move || loop {
                let last = !matches!(
                    stopped.recv_timeout(interval),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                if let Err(e) = control.flush_usage() {
                    eprintln!("ringgate: cannot store usage counts (kept for the next try): {e}");
                }
                if last {
                    return;
                }
            })?;
        Ok(UsageFlusher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Flushes one last time and stops the thread.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for UsageFlusher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn check_limit(
    l: &ThrottleLimit,
    account: Option<ThrottleLimit>,
    field: &str,
) -> Result<(), ControlError> {
    if !(l.rate.is_finite() && (0.0..=1e9).contains(&l.rate)) || l.burst > 1_000_000_000 {
        return Err(ControlError::invalid(
            field,
            format!(
                "rate {} / burst {} is out of range (rate 0 to 1e9, burst 0 to 1e9)",
                l.rate, l.burst
            ),
        ));
    }
    if let Some(a) = account {
        if l.rate > a.rate || l.burst > a.burst {
            return Err(ControlError::invalid(
                field,
                format!(
                    "rate {} / burst {} is more than the account's rate {} / burst {}",
                    l.rate, l.burst, a.rate, a.burst
                ),
            ));
        }
    }
    Ok(())
}

fn patch_cache(
    current: Option<StageCacheConfig>,
    patch: &CachePatch,
) -> Result<Option<StageCacheConfig>, ControlError> {
    let mut c = current.unwrap_or_else(|| {
        let mut d = config::default_stage_cache();
        d.enabled = false;
        d
    });
    if let Some(e) = patch.enabled {
        c.enabled = e;
    }
    if let Some(cap) = &patch.capacity {
        let (bytes, class) =
            config::parse_capacity(cap).map_err(|m| ControlError::invalid("cache.capacity", m))?;
        c.capacity_bytes = bytes;
        c.capacity_class = class;
    }
    if let Some(ttl) = patch.ttl_seconds {
        if ttl > 3600 {
            return Err(ControlError::invalid(
                "cache.ttl_seconds",
                format!("ttl_seconds {ttl} is more than 3600"),
            ));
        }
        c.ttl = std::time::Duration::from_secs(ttl);
    }
    Ok(Some(c))
}

/// Whether two snapshots have the same targets (the same objects) in the
/// same groups with the same health checks.
fn same_targets(a: &Snapshot, b: &Snapshot) -> bool {
    let (a, b) = (&a.upstreams, &b.upstreams);
    a.targets.len() == b.targets.len()
        && a.targets
            .iter()
            .zip(&b.targets)
            .all(|(x, y)| Arc::ptr_eq(x, y))
        && a.groups.len() == b.groups.len()
        && a.groups
            .iter()
            .zip(&b.groups)
            .all(|(x, y)| x.targets == y.targets && x.health_check == y.health_check)
}

fn start_health(snapshot: &Snapshot) -> Result<Option<Checker>, ControlError> {
    if snapshot.upstreams.targets.is_empty() {
        return Ok(None);
    }
    Checker::start(snapshot.upstreams.clone())
        .map(Some)
        .map_err(|e| ControlError::internal(format!("cannot start the health thread: {e}")))
}

#[cfg(test)]
mod tests;
