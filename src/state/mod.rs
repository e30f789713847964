//! Durable control-plane state: deployments and the stages pinned to them.
//!
//! What lives here is what an operator changed through the admin socket and
//! must still be true after a restart or a `kill -9` (and the usage counted
//! against API keys' quotas): every deployment ever
//! made (an immutable copy of one API's routes and integrations, as the
//! configuration defined them when it was deployed), and for each stage with
//! `auto_deploy = false` the deployment it points at, its stage variables,
//! its cache settings and its canary. Stages with `auto_deploy = true` (the
//! default) follow the configuration file and have no record.
//!
//! ## The store
//! [`Store`] is a [redb](https://docs.rs/redb) database, `state.redb` in the
//! state directory (`[state] dir`, created mode 0700). redb commits are
//! copy-on-write with checksummed pages and an fsync'd commit record: a crash
//! in the middle of a write leaves the last committed state, never a torn
//! one. Every admin change is one write transaction ([`Store::apply`]),
//! committed before the running gateway is told of it. redb also locks the
//! file: a second ringgate on the same state directory is refused at start.
//!
//! The store is never on the request path. The control side keeps the whole
//! state in memory ([`State`], a few records per stage) and compiles it,
//! with the configuration, into the immutable snapshot the workers read.
//!
//! ## Tables and schema
//! - `meta`: `schema_version`, `next_deployment_id`.
//! - `deployments`: (api, id) → a [`Deployment`] as JSON.
//! - `stages`: (api, stage) → a [`StageRecord`] as JSON.
//! - `api_keys`: id → an [`ApiKeyRecord`] as JSON (keys made on the socket).
//! - `usage_plans`: id → a [`UsagePlanRecord`] as JSON (with its key ids).
//! - `usage`: (plan id, key id, UTC day) → requests admitted that day,
//!   added to by the usage flusher ([`Store::add_usage`]).
//! - `allowances`: (plan id, key id) → (period start, allowance) an operator
//!   set for a key's current quota period.
//! - `plans_seen`: plan id → when a plan of the file was first seen (its
//!   quota's first period, for `offset`).
//!
//! Tables added without a version bump are created empty when missing, so
//! an older state directory opens as it is.
//!
//! Records are JSON so that a later version can add fields with defaults
//! without a migration. A change that needs one bumps [`SCHEMA_VERSION`] and
//! appends a step to the migration list: [`Store::open`] runs the steps from
//! the stored version up, in the same transaction that records the new
//! version, so a crash mid-migration leaves the old version intact. A state
//! directory written by a newer ringgate is refused, not guessed at.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::config::{
    ApiDefinition, PlanStageConfig, QuotaSettings, StageCacheConfig, ThrottleLimit,
};
use crate::throttle::quota::UsageRow;

/// The schema this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u64 = 1;

/// The database file in the state directory.
pub const DB_FILE: &str = "state.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const DEPLOYMENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("deployments");
const STAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("stages");
const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
const USAGE_PLANS: TableDefinition<&str, &[u8]> = TableDefinition::new("usage_plans");
/// (plan id, key id, UTC day) → requests.
const USAGE: TableDefinition<(&str, &str, u64), u64> = TableDefinition::new("usage");
/// (plan id, key id) → (period start, allowance) set by an operator.
const ALLOWANCES: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("allowances");
/// Plan id → when a plan of the configuration file was first seen.
const PLANS_SEEN: TableDefinition<&str, u64> = TableDefinition::new("plans_seen");

const KEY_VERSION: &str = "schema_version";
const KEY_NEXT_ID: &str = "next_deployment_id";

/// One step of the schema's history: migrates the tables from version
/// `n + 1` to `n + 2`, where `n` is the step's index in the list.
pub type Migration = fn(&WriteTransaction) -> Result<(), StateError>;

/// The migrations of this build: none yet (version 1 is the first).
const MIGRATIONS: &[Migration] = &[];

/// A deployment: one API's definition, frozen when it was deployed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Unique in the store (not only within the API); never reused.
    pub id: u64,
    /// The API it is a deployment of.
    pub api: String,
    /// The operator's description (may be empty).
    #[serde(default)]
    pub description: String,
    /// When it was made, in seconds since the Unix epoch.
    pub created_at: u64,
    /// The routes and integrations.
    pub definition: ApiDefinition,
}

/// An API key created through the admin socket.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Generated, unique among keys (file keys use their name as id).
    pub id: String,
    /// The operator's name for it.
    pub name: String,
    /// The operator's description.
    #[serde(default)]
    pub description: String,
    /// What clients send in `x-api-key`.
    pub value: String,
    /// A disabled key is refused (403).
    pub enabled: bool,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// Seconds since the Unix epoch.
    pub updated_at: u64,
}

impl std::fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the value.
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A usage plan created through the admin socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsagePlanRecord {
    /// Generated, unique among plans (file plans use their name as id).
    pub id: String,
    /// The operator's name for it.
    pub name: String,
    /// The operator's description.
    #[serde(default)]
    pub description: String,
    /// Per key over every stage of the plan.
    #[serde(default)]
    pub throttle: Option<ThrottleLimit>,
    /// Per key over every stage of the plan.
    #[serde(default)]
    pub quota: Option<QuotaSettings>,
    /// The stages, with per-route throttles.
    #[serde(default)]
    pub stages: Vec<PlanStageConfig>,
    /// Ids of the keys attached (keys created through the socket).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Seconds since the Unix epoch (the quota's first period contains it).
    pub created_at: u64,
    /// Seconds since the Unix epoch.
    pub updated_at: u64,
}

/// A pinned stage (`auto_deploy = false`): what it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The deployment production traffic gets.
    pub deployment: u64,
    /// The stage variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The stage cache settings; `None`: no cache.
    #[serde(default)]
    pub cache: Option<StageCacheConfig>,
    /// The stage's default per-route throttle.
    #[serde(default)]
    pub throttle: Option<ThrottleLimit>,
    /// Per-route throttles, by route key as written.
    #[serde(default)]
    pub route_throttle: BTreeMap<String, ThrottleLimit>,
    /// The canary, when one is set.
    #[serde(default)]
    pub canary: Option<Canary>,
    /// When the record last changed, in seconds since the Unix epoch.
    #[serde(default)]
    pub updated_at: u64,
}

/// A stage's canary (API Gateway's `canarySettings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// The deployment canary traffic gets.
    pub deployment: u64,
    /// Share of requests sent to the canary, 0.0..=100.0, chosen at random
    /// per request.
    pub percent: f64,
    /// Stage variables added or replaced for canary requests.
    #[serde(default)]
    pub variable_overrides: BTreeMap<String, String>,
    /// Canary requests use the stage cache (with entries of their own).
    #[serde(default)]
    pub use_stage_cache: bool,
}

/// An error reading or writing the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError(pub String);

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StateError {}

fn err(context: &str) -> impl Fn(redb::Error) -> StateError + '_ {
    move |e| StateError(format!("{context}: {e}"))
}

fn db_err<E: Into<redb::Error>>(context: &str) -> impl Fn(E) -> StateError + '_ {
    move |e| err(context)(e.into())
}

/// The whole state, in memory: what the store holds, as of its last commit.
#[derive(Debug, Clone, Default)]
pub struct State {
    deployments: BTreeMap<(String, u64), Arc<Deployment>>,
    stages: BTreeMap<(String, String), StageRecord>,
    next_id: u64,
    keys: BTreeMap<String, ApiKeyRecord>,
    plans: BTreeMap<String, UsagePlanRecord>,
    /// (plan, key) → (period start, allowance).
    allowances: BTreeMap<(String, String), (u64, u64)>,
    plans_seen: BTreeMap<String, u64>,
}

impl State {
    /// The deployment `id` of `api`.
    pub fn deployment(&self, api: &str, id: u64) -> Option<&Arc<Deployment>> {
        self.deployments.get(&(api.to_string(), id))
    }

    /// The deployments of `api`, oldest first.
    pub fn deployments<'a>(&'a self, api: &'a str) -> impl Iterator<Item = &'a Arc<Deployment>> {
        self.deployments
            .range((api.to_string(), 0)..=(api.to_string(), u64::MAX))
            .map(|(_, d)| d)
    }

    /// The record of a pinned stage.
    pub fn stage(&self, api: &str, stage: &str) -> Option<&StageRecord> {
        self.stages.get(&(api.to_string(), stage.to_string()))
    }

    /// Every stage record, by (api, stage).
    pub fn stages(&self) -> impl Iterator<Item = (&(String, String), &StageRecord)> {
        self.stages.iter()
    }

    /// The keys created through the socket, by id.
    pub fn keys(&self) -> &BTreeMap<String, ApiKeyRecord> {
        &self.keys
    }

    /// The plans created through the socket, by id.
    pub fn plans(&self) -> &BTreeMap<String, UsagePlanRecord> {
        &self.plans
    }

    /// An operator's allowance for (plan, key): (period start, allowance).
    pub fn allowance(&self, plan: &str, key: &str) -> Option<(u64, u64)> {
        self.allowances
            .get(&(plan.to_string(), key.to_string()))
            .copied()
    }

    /// When a plan of the file was first seen.
    pub fn plan_seen(&self, plan: &str) -> Option<u64> {
        self.plans_seen.get(plan).copied()
    }

    /// The id the next deployment gets.
    pub fn next_deployment_id(&self) -> u64 {
        self.next_id.max(1)
    }

    /// Applies `writes` to this in-memory copy only (what [`Store::apply`]
    /// does after its commit; the control side also uses it to try a change
    /// before committing it).
    pub(crate) fn apply(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::Deployment(d) => {
                    self.next_id = self.next_id.max(d.id + 1);
                    self.deployments.insert((d.api.clone(), d.id), d.clone());
                }
                Write::Stage { api, stage, record } => {
                    let key = (api.clone(), stage.clone());
                    match record {
                        Some(r) => self.stages.insert(key, (**r).clone()),
                        None => self.stages.remove(&key),
                    };
                }
                Write::ApiKey { id, record } => {
                    match record {
                        Some(r) => self.keys.insert(id.clone(), (**r).clone()),
                        None => self.keys.remove(id),
                    };
                }
                Write::UsagePlan { id, record } => {
                    match record {
                        Some(r) => self.plans.insert(id.clone(), (**r).clone()),
                        None => self.plans.remove(id),
                    };
                }
                Write::Allowance {
                    plan,
                    key,
                    allowance,
                } => {
                    let k = (plan.clone(), key.clone());
                    match allowance {
                        Some(a) => self.allowances.insert(k, *a),
                        None => self.allowances.remove(&k),
                    };
                }
                Write::PlanSeen { plan, at } => {
                    self.plans_seen.entry(plan.clone()).or_insert(*at);
                }
                Write::ForgetUsage { .. } => {}
            }
        }
    }
}

/// One change, part of a transaction ([`Store::apply`]).
#[derive(Debug, Clone)]
pub enum Write {
    /// Adds a deployment (ids are never reused; an existing id is refused).
    Deployment(Arc<Deployment>),
    /// Sets (or, with `None`, removes) a stage's record.
    Stage {
        /// The API.
        api: String,
        /// The stage.
        stage: String,
        /// The new record.
        record: Option<Box<StageRecord>>,
    },
    /// Sets (or removes) an API key.
    ApiKey {
        /// The key's id.
        id: String,
        /// The new record.
        record: Option<Box<ApiKeyRecord>>,
    },
    /// Sets (or removes) a usage plan.
    UsagePlan {
        /// The plan's id.
        id: String,
        /// The new record.
        record: Option<Box<UsagePlanRecord>>,
    },
    /// Sets (or removes) an operator's allowance for a key's current period.
    Allowance {
        /// The plan's id.
        plan: String,
        /// The key's id.
        key: String,
        /// (period start, allowance).
        allowance: Option<(u64, u64)>,
    },
    /// Records when a plan of the file was first seen (kept if known).
    PlanSeen {
        /// The plan's id.
        plan: String,
        /// Seconds since the epoch.
        at: u64,
    },
    /// Deletes the usage counts of a plan (with `key`: of one key in it).
    ForgetUsage {
        /// The plan's id.
        plan: String,
        /// The key's id; `None`: every key.
        key: Option<String>,
    },
}

/// The durable store.
pub struct Store {
    db: Database,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, created mode 0700
    /// with its parents, and reads the whole state.
    pub fn open(dir: &Path) -> Result<(Store, State), StateError> {
        Self::open_with(dir, SCHEMA_VERSION, MIGRATIONS)
    }

    /// [`Store::open`] with another schema history (for tests of the
    /// migration path).
    pub fn open_with(
        dir: &Path,
        version: u64,
        migrations: &[Migration],
    ) -> Result<(Store, State), StateError> {
        create_private_dir(dir)?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StateError(format!(
                "state {} is in use by another process (another ringgate with the same \
                 [state] dir?)",
                path.display()
            )),
            e => StateError(format!("cannot open state {}: {e}", path.display())),
        })?;
        let store = Store {
            db,
            path: Some(path),
        };
        store.init(version, migrations)?;
        let state = store.read()?;
        Ok((store, state))
    }

    /// A store that lives in memory only, for an embedded server with no
    /// state directory: admin changes last until the process ends.
    pub fn in_memory() -> Result<(Store, State), StateError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db_err("cannot create the in-memory state"))?;
        let store = Store { db, path: None };
        store.init(SCHEMA_VERSION, MIGRATIONS)?;
        let state = store.read()?;
        Ok((store, state))
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Creates the tables, checks the schema version and migrates.
    fn init(&self, version: u64, migrations: &[Migration]) -> Result<(), StateError> {
        let tx = self
            .db
            .begin_write()
            .map_err(db_err("cannot start a transaction"))?;
        {
            let mut meta = tx.open_table(META).map_err(db_err("meta table"))?;
            tx.open_table(DEPLOYMENTS)
                .map_err(db_err("deployments table"))?;
            tx.open_table(STAGES).map_err(db_err("stages table"))?;
            tx.open_table(API_KEYS).map_err(db_err("api_keys table"))?;
            tx.open_table(USAGE_PLANS)
                .map_err(db_err("usage_plans table"))?;
            tx.open_table(USAGE).map_err(db_err("usage table"))?;
            tx.open_table(ALLOWANCES)
                .map_err(db_err("allowances table"))?;
            tx.open_table(PLANS_SEEN)
                .map_err(db_err("plans_seen table"))?;
            let stored = meta
                .get(KEY_VERSION)
                .map_err(db_err("schema version"))?
                .map(|v| v.value());
            match stored {
                None => {
                    meta.insert(KEY_VERSION, version)
                        .map_err(db_err("schema version"))?;
                }
                Some(v) if v > version => {
                    return Err(StateError(format!(
                        "the state was written by a newer ringgate (schema version {v}); \
                         this build reads versions up to {version}: run the newer build, \
                         or move the state directory away to start empty"
                    )));
                }
                Some(v) if v < version => {
                    drop(meta);
                    for step in v..version {
                        let migrate = migrations.get(step as usize - 1).ok_or_else(|| {
                            StateError(format!("no migration from schema version {step}"))
                        })?;
                        migrate(&tx)?;
                    }
                    tx.open_table(META)
                        .map_err(db_err("meta table"))?
                        .insert(KEY_VERSION, version)
                        .map_err(db_err("schema version"))?;
                }
                Some(_) => {}
            }
        }
        tx.commit().map_err(db_err("cannot commit"))?;
        Ok(())
    }

    /// Reads every record.
    fn read(&self) -> Result<State, StateError> {
        let tx = self
            .db
            .begin_read()
            .map_err(db_err("cannot start a read"))?;
        let mut state = State::default();
        let meta = tx.open_table(META).map_err(db_err("meta table"))?;
        state.next_id = meta
            .get(KEY_NEXT_ID)
            .map_err(db_err("next deployment id"))?
            .map_or(1, |v| v.value());
        let deployments = tx
            .open_table(DEPLOYMENTS)
            .map_err(db_err("deployments table"))?;
        for row in deployments.iter().map_err(db_err("deployments"))? {
            let (k, v) = row.map_err(db_err("deployments"))?;
            let (api, id) = k.value();
            let d: Deployment = serde_json::from_slice(v.value()).map_err(|e| {
                StateError(format!("deployment {id} of api {api:?} is unreadable: {e}"))
            })?;
            state.next_id = state.next_id.max(id + 1);
            state.deployments.insert((api.to_string(), id), Arc::new(d));
        }
        let stages = tx.open_table(STAGES).map_err(db_err("stages table"))?;
        for row in stages.iter().map_err(db_err("stages"))? {
            let (k, v) = row.map_err(db_err("stages"))?;
            let (api, stage) = k.value();
            let r: StageRecord = serde_json::from_slice(v.value()).map_err(|e| {
                StateError(format!("stage {stage:?} of api {api:?} is unreadable: {e}"))
            })?;
            state.stages.insert((api.to_string(), stage.to_string()), r);
        }
        let keys = tx.open_table(API_KEYS).map_err(db_err("api_keys table"))?;
        for row in keys.iter().map_err(db_err("api_keys"))? {
            let (k, v) = row.map_err(db_err("api_keys"))?;
            let r: ApiKeyRecord = serde_json::from_slice(v.value())
                .map_err(|e| StateError(format!("api key {:?} is unreadable: {e}", k.value())))?;
            state.keys.insert(k.value().to_string(), r);
        }
        let plans = tx
            .open_table(USAGE_PLANS)
            .map_err(db_err("usage_plans table"))?;
        for row in plans.iter().map_err(db_err("usage_plans"))? {
            let (k, v) = row.map_err(db_err("usage_plans"))?;
            let r: UsagePlanRecord = serde_json::from_slice(v.value()).map_err(|e| {
                StateError(format!("usage plan {:?} is unreadable: {e}", k.value()))
            })?;
            state.plans.insert(k.value().to_string(), r);
        }
        let allowances = tx
            .open_table(ALLOWANCES)
            .map_err(db_err("allowances table"))?;
        for row in allowances.iter().map_err(db_err("allowances"))? {
            let (k, v) = row.map_err(db_err("allowances"))?;
            let (plan, key) = k.value();
            state
                .allowances
                .insert((plan.to_string(), key.to_string()), v.value());
        }
        let seen = tx
            .open_table(PLANS_SEEN)
            .map_err(db_err("plans_seen table"))?;
        for row in seen.iter().map_err(db_err("plans_seen"))? {
            let (k, v) = row.map_err(db_err("plans_seen"))?;
            state.plans_seen.insert(k.value().to_string(), v.value());
        }
        Ok(state)
    }

    /// Adds usage counts, in one transaction (durable when this returns).
    pub fn add_usage(&self, rows: &[UsageRow]) -> Result<(), StateError> {
        if rows.is_empty() {
            return Ok(());
        }
        let tx = self
            .db
            .begin_write()
            .map_err(db_err("cannot start a transaction"))?;
        {
            let mut usage = tx.open_table(USAGE).map_err(db_err("usage table"))?;
            for r in rows {
                let key = (r.plan.as_str(), r.key.as_str(), r.day);
                let old = usage
                    .get(key)
                    .map_err(db_err("usage"))?
                    .map_or(0, |v| v.value());
                usage
                    .insert(key, old.saturating_add(r.count))
                    .map_err(db_err("usage"))?;
            }
        }
        tx.commit().map_err(db_err("cannot commit"))?;
        Ok(())
    }

    /// The stored usage of `plan` on days `from..=to`: (key, day, count),
    /// by key then day.
    pub fn usage(&self, plan: &str, from: u64, to: u64) -> Result<Vec<UsageRow>, StateError> {
        let tx = self
            .db
            .begin_read()
            .map_err(db_err("cannot start a read"))?;
        let usage = tx.open_table(USAGE).map_err(db_err("usage table"))?;
        let mut out = Vec::new();
        // Keys sort by (plan, key, day): scan the plan's range.
        for row in usage.range((plan, "", 0)..).map_err(db_err("usage"))? {
            let (k, v) = row.map_err(db_err("usage"))?;
            let (p, key, day) = k.value();
            if p != plan {
                break;
            }
            if (from..=to).contains(&day) {
                out.push(UsageRow {
                    plan: p.to_string(),
                    key: key.to_string(),
                    day,
                    count: v.value(),
                });
            }
        }
        Ok(out)
    }

    /// Commits `writes` in one transaction (durable when this returns
    /// `Ok`), then applies them to `state`. On error nothing is written and
    /// `state` is unchanged.
    pub fn apply(&self, state: &mut State, writes: Vec<Write>) -> Result<(), StateError> {
        let tx = self
            .db
            .begin_write()
            .map_err(db_err("cannot start a transaction"))?;
        {
            let mut deployments = tx
                .open_table(DEPLOYMENTS)
                .map_err(db_err("deployments table"))?;
            let mut stages = tx.open_table(STAGES).map_err(db_err("stages table"))?;
            let mut meta = tx.open_table(META).map_err(db_err("meta table"))?;
            let mut next_id = state.next_id;
            for w in &writes {
                match w {
                    Write::Deployment(d) => {
                        let key = (d.api.as_str(), d.id);
                        if deployments
                            .get(key)
                            .map_err(db_err("deployments"))?
                            .is_some()
                        {
                            return Err(StateError(format!(
                                "deployment {} of api {:?} exists already",
                                d.id, d.api
                            )));
                        }
                        let json = serde_json::to_vec(&**d)
                            .map_err(|e| StateError(format!("cannot encode deployment: {e}")))?;
                        deployments
                            .insert(key, json.as_slice())
                            .map_err(db_err("deployments"))?;
                        next_id = next_id.max(d.id + 1);
                    }
                    Write::Stage { api, stage, record } => {
                        let key = (api.as_str(), stage.as_str());
                        match record {
                            Some(r) => {
                                let json = serde_json::to_vec(r)
                                    .map_err(|e| StateError(format!("cannot encode stage: {e}")))?;
                                stages
                                    .insert(key, json.as_slice())
                                    .map_err(db_err("stages"))?;
                            }
                            None => {
                                stages.remove(key).map_err(db_err("stages"))?;
                            }
                        }
                    }
                    Write::ApiKey { id, record } => {
                        let mut t = tx.open_table(API_KEYS).map_err(db_err("api_keys"))?;
                        match record {
                            Some(r) => {
                                let json = serde_json::to_vec(r).map_err(|e| {
                                    StateError(format!("cannot encode api key: {e}"))
                                })?;
                                t.insert(id.as_str(), json.as_slice())
                                    .map_err(db_err("api_keys"))?;
                            }
                            None => {
                                t.remove(id.as_str()).map_err(db_err("api_keys"))?;
                            }
                        }
                    }
                    Write::UsagePlan { id, record } => {
                        let mut t = tx.open_table(USAGE_PLANS).map_err(db_err("usage_plans"))?;
                        match record {
                            Some(r) => {
                                let json = serde_json::to_vec(r).map_err(|e| {
                                    StateError(format!("cannot encode usage plan: {e}"))
                                })?;
                                t.insert(id.as_str(), json.as_slice())
                                    .map_err(db_err("usage_plans"))?;
                            }
                            None => {
                                t.remove(id.as_str()).map_err(db_err("usage_plans"))?;
                            }
                        }
                    }
                    Write::Allowance {
                        plan,
                        key,
                        allowance,
                    } => {
                        let mut t = tx.open_table(ALLOWANCES).map_err(db_err("allowances"))?;
                        let k = (plan.as_str(), key.as_str());
                        match allowance {
                            Some(a) => {
                                t.insert(k, *a).map_err(db_err("allowances"))?;
                            }
                            None => {
                                t.remove(k).map_err(db_err("allowances"))?;
                            }
                        }
                    }
                    Write::PlanSeen { plan, at } => {
                        let mut t = tx.open_table(PLANS_SEEN).map_err(db_err("plans_seen"))?;
                        if t.get(plan.as_str())
                            .map_err(db_err("plans_seen"))?
                            .is_none()
                        {
                            t.insert(plan.as_str(), *at).map_err(db_err("plans_seen"))?;
                        }
                    }
                    Write::ForgetUsage { plan, key } => {
                        let mut t = tx.open_table(USAGE).map_err(db_err("usage"))?;
                        let doomed: Vec<(String, u64)> = t
                            .range((plan.as_str(), "", 0)..)
                            .map_err(db_err("usage"))?
                            .map_while(|row| {
                                let (k, _) = row.ok()?;
                                let (p, kk, day) = k.value();
                                (p == plan.as_str()).then(|| (kk.to_string(), day))
                            })
                            .filter(|(kk, _)| key.as_ref().is_none_or(|want| want == kk))
                            .collect();
                        for (kk, day) in doomed {
                            t.remove((plan.as_str(), kk.as_str(), day))
                                .map_err(db_err("usage"))?;
                        }
                    }
                }
            }
            meta.insert(KEY_NEXT_ID, next_id)
                .map_err(db_err("next deployment id"))?;
        }
        tx.commit().map_err(db_err("cannot commit"))?;
        state.apply(&writes);
        Ok(())
    }
}

/// Creates `dir` (and its parents) mode 0700 if it does not exist.
fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StateError(format!(
            "state directory {} exists and is not a directory",
            dir.display()
        ))),
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                StateError(format!(
                    "cannot create the state directory {}: {e}",
                    dir.display()
                ))
            }),
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
