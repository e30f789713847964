//! `ringgate admin ...`: a thin command-line client of a running gateway's
//! admin API (the endpoints of [`super::api`] and its `plans` module), one
//! request per command (one per page for the lists fetched whole) over
//! [`super::client`].
//!
//! ## Which gateway
//! - `--socket PATH`: that Unix socket;
//! - else `--config PATH` (default `config/ringgate.toml`): the socket that
//!   configuration names ([`crate::config::Config::admin_socket`]:
//!   `[admin] socket`, or `admin.sock` in the state directory); a file that
//!   does not load is reported, with a hint to give `--socket`;
//! - or `--url http://127.0.0.1:PORT --token-file FILE`: the loopback TCP
//!   listener (`[admin] listen`), sending the file's token (surrounding
//!   whitespace trimmed) as `Authorization: Bearer`. Only plain `http://`
//!   to a loopback address is accepted: the server listens nowhere else.
//!
//! `--socket`, `--config`, `--url`, `--token-file` and `--json` may stand
//! before or after the command.
//!
//! ## Commands
//! | command | request | what it does |
//! |---------|---------|--------------|
//! | `status` | `GET /status` | version, uptime, configuration and state files, per-worker load |
//! | `reload` | `POST /reload` | re-reads the configuration file and applies it; prints its warnings, the sections that need a restart and the pinned stages whose file settings are not used |
//! | `apis [--limit N] [--position P]` | `GET /apis` | the APIs with their stages, routes and deployment counts |
//! | `deployments list API [--limit N] [--position P]` | `GET /apis/{api}/deployments` | the API's deployments, newest first |
//! | `deployments create API [--description TEXT] [--stage STAGE]` | `POST /apis/{api}/deployments` | deploys the file's current definition of the API; with `--stage`, points that pinned stage at it (only its canary, when it has one) |
//! | `deployments show API ID` | `GET /apis/{api}/deployments/{id}` | one deployment and its routes (`--json` adds the whole definition) |
//! | `deployments import API FILE [--description TEXT] [--stage STAGE] [--strict]` | `POST /apis/{api}/import?stage&description&strict` | deploys an OpenAPI document (an API Gateway export, JSON or YAML; `-`: standard input) as a new deployment; prints what was approximated and left out (`--strict`: refused, nothing changed, when anything would be left out) |
//! | `deployments export API ID` | `GET /apis/{api}/deployments/{id}/export` | the deployment as OpenAPI 3.0.1 with API Gateway's extensions |
//! | `stages list API [--limit N] [--position P]` | `GET /apis/{api}/stages` | the API's stages: source, deployment, canary, cache |
//! | `stages show API STAGE` | `GET /apis/{api}/stages/{stage}` | one stage: deployment, variables, cache settings, canary |
//! | `stages set API STAGE [--deployment ID] [--var NAME=VALUE]... [--unset-var NAME]... [--cache on\|off] [--cache-capacity C] [--cache-ttl SECS]` | `PATCH /apis/{api}/stages/{stage}` | changes a pinned stage: rollback or roll forward, variables, cache settings (a capacity is a class in GB such as `0.5`, or a size such as `64MiB`) |
//! | `canary set API STAGE [--percent P] [--deployment ID] [--override NAME=VALUE]... [--unset-override NAME]... [--use-stage-cache true\|false]` | `PUT /apis/{api}/stages/{stage}/canary` | creates (`--percent` required) or changes a pinned stage's canary |
//! | `canary promote API STAGE` | `POST .../canary/promote` | the canary's deployment and overrides become the stage's; the canary stays, at 0 % |
//! | `canary remove API STAGE` | `DELETE .../canary` | removes the canary |
//! | `cache stats API STAGE` | `GET .../cache` | the stage cache's settings and counters |
//! | `cache flush API STAGE` | `DELETE .../cache/data` | empties the stage cache |
//! | `cache drop API STAGE --path P [--method M] [--query Q] [--header NAME=VALUE]... [--canary]` | `DELETE .../cache/entries?...` | drops the one entry that request would use (method GET unless given; `--canary` for the canary's entries) |
//! | `keys list [--include-values] [--name PREFIX]` | `GET /apikeys` | every API key (all pages): id, name, enabled, source, plans, created; values only when asked |
//! | `keys get ID [--include-value]` | `GET /apikeys/{id}` | one key |
//! | `keys create NAME [--value V] [--description D] [--disabled] [--plan PLAN_ID]...` | `POST /apikeys` | creates a key (its value generated unless given), attached to the plans; prints its id and its value, which no other output shows unless asked |
//! | `keys enable ID`, `keys disable ID` | `PATCH /apikeys/{id}` | `{"enabled": true\|false}`: a disabled key gets 403 |
//! | `keys rename ID NAME` | `PATCH /apikeys/{id}` | `{"name": NAME}` |
//! | `keys delete ID` | `DELETE /apikeys/{id}` | deletes the key, detaching it from its plans |
//! | `keys import FILE.csv` | `POST /apikeys?mode=import&format=csv` | creates the file's keys (`-`: standard input; sent as `text/csv`), all or none |
//! | `plans list` | `GET /usageplans` | every usage plan (all pages): throttle, quota, stages, key count |
//! | `plans get ID` | `GET /usageplans/{id}` | one plan, with its stages' route throttles and its keys |
//! | `plans create NAME [--description D] [--rate R --burst B] [--quota N --period DAY\|WEEK\|MONTH [--offset O]] [--stage API:STAGE]... [--route-throttle API:STAGE:'METHOD /path'=RATE/BURST]...` | `POST /usageplans` | creates a plan; a route throttle's stage must be given with `--stage` |
//! | `plans update ID [--name NAME]` + the options of `create` `[--no-throttle] [--no-quota] [--no-stages]` | `PATCH /usageplans/{id}` | changes what is given; `--stage` replaces the whole stage list (with its route throttles) |
//! | `plans delete ID` | `DELETE /usageplans/{id}` | deletes the plan (its keys stay) |
//! | `plans attach PLAN KEY`, `plans detach PLAN KEY` | `POST /usageplans/{plan}/keys`, `DELETE .../keys/{key}` | attaches or detaches a key |
//! | `plans keys PLAN` | `GET /usageplans/{plan}/keys` | the plan's keys (all pages) |
//! | `usage PLAN --from YYYY-MM-DD --to YYYY-MM-DD [--key ID] [--limit N] [--position P]` | `GET /usageplans/{plan}/usage?startDate&endDate&keyId` | one row per key per day: requests used and what remained of the quota (`-` without one); all keys unless `--limit` or `--position` asks for one page |
//! | `quota PLAN KEY [--remaining N]` | `GET`, or `PATCH` with `{"remaining": N}`, `/usageplans/{plan}/keys/{key}/usage` | the key's current quota period (allowance, used, remaining); with `--remaining`, sets what remains in this period (API Gateway's UpdateUsage: more extends it, less reduces it) |
//!
//! Path segments and query values are percent-encoded (all but RFC 3986's
//! unreserved characters).
//!
//! The lists of keys and plans (and `usage` without `--limit` or
//! `--position`) are fetched whole: pages of 500, following `position`
//! until the server gives none; `--json` prints the pages' `items` merged
//! into one body, without `position`. The other lists are one page, with
//! `--limit` and `--position`.
//!
//! ## Output
//! Human-readable by default: aligned tables for lists (with a hint naming
//! the next `--position` when the server has more), `key: value` lines for
//! one object, one line for an action. Times are UTC, ISO-8601. Text from
//! the server has its control characters replaced, so it cannot drive the
//! terminal. With `--json`, the server's JSON body, pretty-printed (nothing
//! for an empty body, as `cache flush` gets), also for an error reply.
//!
//! The formatting functions are pure (a JSON value in, a `String` out):
//! [`render`], [`format_status`], [`format_apis`], [`format_keys`],
//! [`format_plan`], [`format_usage`], ... and [`error_message`].
//!
//! ## Exit codes
//! - 0: done;
//! - 1: the server refused the request; `ringgate admin: <message> (field:
//!   <field>) [HTTP <status> <code>]` on stderr;
//! - 2: the request could not be made: no socket, no answer, a
//!   configuration that does not load, a token file or CSV file that
//!   cannot be read, bad arguments (as clap's usage errors: `--period
//!   YEAR`, a date that is not `YYYY-MM-DD`, `--quota` without
//!   `--period`, ...).

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use super::client::{self, Endpoint};

/// The configuration read for the socket path when neither `--socket`,
/// `--config` nor `--url` is given.
pub const DEFAULT_CONFIG: &str = "config/ringgate.toml";

/// Exit code: the server refused the request (an error reply).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: the request could not be made (transport, configuration,
/// token file, arguments).
pub const EXIT_UNREACHABLE: u8 = 2;

/// `ringgate admin`'s options and command.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The admin socket of the gateway (default: the socket its
    /// configuration names).
    #[arg(
        long,
        value_name = "PATH",
        global = true,
        help_heading = "Gateway",
        conflicts_with_all = ["config", "url"]
    )]
    pub socket: Option<PathBuf>,
    /// The gateway's configuration file, read for its admin socket
    /// [default: config/ringgate.toml].
    #[arg(
        long,
        value_name = "PATH",
        global = true,
        help_heading = "Gateway",
        conflicts_with = "url"
    )]
    pub config: Option<PathBuf>,
    /// The loopback TCP admin listener instead of the socket
    /// (`[admin] listen`), e.g. http://127.0.0.1:9901.
    #[arg(
        long,
        value_name = "URL",
        global = true,
        help_heading = "Gateway",
        requires = "token_file"
    )]
    pub url: Option<String>,
    /// The file holding the bearer token for --url (`[admin] token_file`).
    #[arg(
        long,
        value_name = "FILE",
        global = true,
        help_heading = "Gateway",
        requires = "url"
    )]
    pub token_file: Option<PathBuf>,
    /// Print the server's JSON body (pretty-printed) instead of text.
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// A list's page (`limit`, `position`).
#[derive(Debug, Clone, Default, Args)]
pub struct Page {
    /// Items per page, 1 to 500 (the server's default: 25).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Where to start: the position a previous page printed.
    #[arg(long, value_name = "P")]
    pub position: Option<String>,
}

/// `ringgate admin`'s commands.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Version, uptime, files and worker loads (GET /status).
    Status,
    /// Requests and latency percentiles by API, stage, route and canary
    /// (GET /stats).
    Stats,
    /// Re-read the configuration file and apply it (POST /reload).
    Reload,
    /// The APIs, their stages and deployment counts (GET /apis).
    Apis {
        /// The page.
        #[command(flatten)]
        page: Page,
    },
    /// List, create and show deployments.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// List, show and change stages.
    #[command(subcommand)]
    Stages(StagesCommand),
    /// Set, promote and remove a pinned stage's canary.
    #[command(subcommand)]
    Canary(CanaryCommand),
    /// A stage cache's counters; flush it or drop one entry.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// List, create, enable, disable, rename, delete and import API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List, create, change and delete usage plans; attach and detach keys.
    #[command(subcommand)]
    Plans(PlansCommand),
    /// A usage plan's requests per key per day, with what remained of the
    /// quota (GET /usageplans/{plan}/usage).
    Usage(UsageArgs),
    /// A key's quota period under a plan; with --remaining, extend or
    /// reduce what remains of it.
    Quota {
        /// The usage plan's id.
        #[arg(value_parser = non_empty)]
        plan: String,
        /// The API key's id.
        #[arg(value_parser = non_empty)]
        key: String,
        /// Set what remains in the current period to N (more than now
        /// extends it, less reduces it; the next period starts from the
        /// plan's limit again).
        #[arg(long, value_name = "N")]
        remaining: Option<u64>,
    },
}

/// `ringgate admin keys ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Every key (all pages), without their values unless asked.
    List {
        /// Show the keys' values too.
        #[arg(long)]
        include_values: bool,
        /// Only the keys whose name starts with PREFIX.
        #[arg(long, value_name = "PREFIX")]
        name: Option<String>,
    },
    /// One key.
    #[command(alias = "show")]
    Get {
        /// The key's id.
        #[arg(value_parser = non_empty)]
        id: String,
        /// Show its value too.
        #[arg(long)]
        include_value: bool,
    },
    /// Create a key; prints its id and its value (generated unless given).
    Create {
        /// The key's name.
        #[arg(value_parser = non_empty)]
        name: String,
        /// The value clients send as x-api-key (default: 40 random
        /// characters).
        #[arg(long, value_name = "V")]
        value: Option<String>,
        /// What the key is for.
        #[arg(long, value_name = "D")]
        description: Option<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        /// Attach it to this usage plan (repeatable).
        #[arg(long = "plan", value_name = "PLAN_ID", value_parser = non_empty)]
        plans: Vec<String>,
    },
    /// Let the key's requests through again.
    Enable {
        /// The key's id.
        #[arg(value_parser = non_empty)]
        id: String,
    },
    /// Refuse the key's requests (403) until enabled.
    Disable {
        /// The key's id.
        #[arg(value_parser = non_empty)]
        id: String,
    },
    /// Give the key another name.
    Rename {
        /// The key's id.
        #[arg(value_parser = non_empty)]
        id: String,
        /// The new name.
        #[arg(value_parser = non_empty)]
        name: String,
    },
    /// Delete the key (it is detached from its plans).
    Delete {
        /// The key's id.
        #[arg(value_parser = non_empty)]
        id: String,
    },
    /// Create keys from a CSV file (API Gateway's import format: header
    /// `key,name,description,enabled,usageplanIds`): all or none.
    Import {
        /// The CSV file; `-` reads standard input.
        #[arg(value_name = "FILE.csv")]
        file: PathBuf,
    },
}

/// `ringgate admin plans ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum PlansCommand {
    /// Every usage plan (all pages).
    List,
    /// One usage plan.
    #[command(alias = "show")]
    Get {
        /// The plan's id.
        #[arg(value_parser = non_empty)]
        id: String,
    },
    /// Create a usage plan.
    Create(PlanCreate),
    /// Change a usage plan (only what is given).
    Update(PlanUpdate),
    /// Delete a usage plan (its keys are detached, not deleted).
    Delete {
        /// The plan's id.
        #[arg(value_parser = non_empty)]
        id: String,
    },
    /// Attach an API key to the plan.
    Attach {
        /// The plan's id.
        #[arg(value_parser = non_empty)]
        plan: String,
        /// The key's id.
        #[arg(value_parser = non_empty)]
        key: String,
    },
    /// Detach an API key from the plan.
    Detach {
        /// The plan's id.
        #[arg(value_parser = non_empty)]
        plan: String,
        /// The key's id.
        #[arg(value_parser = non_empty)]
        key: String,
    },
    /// The plan's keys (all pages).
    Keys {
        /// The plan's id.
        #[arg(value_parser = non_empty)]
        plan: String,
    },
}

/// A plan's limits and stages, as `plans create` and `plans update` take
/// them.
#[derive(Debug, Clone, Default, Args)]
pub struct PlanLimits {
    /// What the plan is for.
    #[arg(long, value_name = "D")]
    pub description: Option<String>,
    /// The plan's throttle: steady requests per second per key (with --burst).
    #[arg(long, value_name = "R", requires = "burst")]
    pub rate: Option<f64>,
    /// The plan's throttle: the most requests at once per key (with --rate).
    #[arg(long, value_name = "B", requires = "rate")]
    pub burst: Option<u32>,
    /// The quota: requests per key per period (with --period).
    #[arg(long, value_name = "N", requires = "period")]
    pub quota: Option<u64>,
    /// The quota's period.
    #[arg(
        long,
        value_name = "DAY|WEEK|MONTH",
        requires = "quota",
        ignore_case = true
    )]
    pub period: Option<QuotaPeriod>,
    /// Requests taken off the quota in the plan's first period only
    /// (API Gateway's offset).
    #[arg(long, value_name = "O", requires = "quota")]
    pub offset: Option<u64>,
    /// A stage where the plan's keys are accepted (repeatable; the list is
    /// replaced as a whole).
    #[arg(long = "stage", value_name = "API:STAGE", value_parser = api_stage)]
    pub stages: Vec<(String, String)>,
    /// A throttle for one route of a listed stage (repeatable), e.g.
    /// shop:prod:'GET /items/{id}'=10/20.
    #[arg(
        long = "route-throttle",
        value_name = "API:STAGE:'METHOD /path'=RATE/BURST",
        value_parser = route_throttle,
        requires = "stages"
    )]
    pub route_throttles: Vec<RouteThrottle>,
}

/// `ringgate admin plans create ...`.
#[derive(Debug, Clone, Args)]
pub struct PlanCreate {
    /// The plan's name.
    #[arg(value_parser = non_empty)]
    pub name: String,
    /// Limits and stages.
    #[command(flatten)]
    pub limits: PlanLimits,
}

/// `ringgate admin plans update ...`.
#[derive(Debug, Clone, Args)]
pub struct PlanUpdate {
    /// The plan's id.
    #[arg(value_parser = non_empty)]
    pub id: String,
    /// A new name.
    #[arg(long, value_name = "NAME", value_parser = non_empty)]
    pub name: Option<String>,
    /// Limits and stages.
    #[command(flatten)]
    pub limits: PlanLimits,
    /// Remove the plan's throttle.
    #[arg(long, conflicts_with_all = ["rate", "burst"])]
    pub no_throttle: bool,
    /// Remove the plan's quota.
    #[arg(long, conflicts_with_all = ["quota", "period", "offset"])]
    pub no_quota: bool,
    /// Remove every stage (the plan's keys are then accepted nowhere).
    #[arg(long, conflicts_with_all = ["stages", "route_throttles"])]
    pub no_stages: bool,
}

/// A quota period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuotaPeriod {
    /// A UTC day.
    #[value(name = "DAY")]
    Day,
    /// A week, from Monday 00:00 UTC.
    #[value(name = "WEEK")]
    Week,
    /// A month, from the 1st, 00:00 UTC.
    #[value(name = "MONTH")]
    Month,
}

impl QuotaPeriod {
    fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Day => "DAY",
            QuotaPeriod::Week => "WEEK",
            QuotaPeriod::Month => "MONTH",
        }
    }
}

/// `--route-throttle API:STAGE:ROUTE=RATE/BURST`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteThrottle {
    /// The API.
    pub api: String,
    /// The stage.
    pub stage: String,
    /// The route key, e.g. `GET /items/{id}`.
    pub route: String,
    /// Requests per second.
    pub rate: f64,
    /// The most requests at once.
    pub burst: u32,
}

/// `ringgate admin usage ...`.
#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// The usage plan's id.
    #[arg(value_parser = non_empty)]
    pub plan: String,
    /// The first day, YYYY-MM-DD (UTC).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = day)]
    pub from: String,
    /// The last day, YYYY-MM-DD (UTC), at most 366 days after --from.
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = day)]
    pub to: String,
    /// Only this key.
    #[arg(long, value_name = "ID", value_parser = non_empty)]
    pub key: Option<String>,
    /// Keys per page, 1 to 500 (default: every key, all pages).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Start after this key: the position a previous page printed (only
    /// that page is fetched).
    #[arg(long, value_name = "P")]
    pub position: Option<String>,
}

/// `ringgate admin deployments ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum DeploymentsCommand {
    /// The API's deployments, newest first.
    List {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// The page.
        #[command(flatten)]
        page: Page,
    },
    /// Deploy the API's current definition from the configuration file.
    Create {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// What this deployment is (at most 1024 characters).
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Also point this pinned stage at it (only its canary, if it has one).
        #[arg(long, value_name = "STAGE", value_parser = non_empty)]
        stage: Option<String>,
    },
    /// One deployment.
    Show {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// The deployment's id.
        id: u64,
    },
    /// Deploy an OpenAPI document (an API Gateway export) as a new
    /// deployment of the API.
    Import {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// The document, JSON or YAML (`-`: standard input).
        file: PathBuf,
        /// What this deployment is (at most 1024 characters).
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Also point this pinned stage at it (only its canary, if it has one).
        #[arg(long, value_name = "STAGE", value_parser = non_empty)]
        stage: Option<String>,
        /// Refuse the document, changing nothing, when anything in it would
        /// be left out.
        #[arg(long)]
        strict: bool,
    },
    /// A deployment as OpenAPI 3.0.1 with API Gateway's extensions.
    Export {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// The deployment's id.
        id: u64,
    },
}

/// `ringgate admin stages ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum StagesCommand {
    /// The API's stages.
    List {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// The page.
        #[command(flatten)]
        page: Page,
    },
    /// One stage.
    Show {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// The stage.
        #[arg(value_parser = non_empty)]
        stage: String,
    },
    /// Change a pinned stage (auto_deploy = false).
    Set(StageSet),
}

/// `ringgate admin stages set ...`.
#[derive(Debug, Clone, Args)]
pub struct StageSet {
    /// The API.
    #[arg(value_parser = non_empty)]
    pub api: String,
    /// The stage.
    #[arg(value_parser = non_empty)]
    pub stage: String,
    /// Serve this deployment (refused while the stage has a canary).
    #[arg(long, value_name = "ID")]
    pub deployment: Option<u64>,
    /// Set a stage variable (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = name_value)]
    pub vars: Vec<(String, String)>,
    /// Remove a stage variable (repeatable).
    #[arg(long = "unset-var", value_name = "NAME", value_parser = non_empty)]
    pub unset_vars: Vec<String>,
    /// Turn the stage cache on or off.
    #[arg(long, value_name = "on|off", hide_possible_values = true)]
    pub cache: Option<OnOff>,
    /// The cache capacity: a class in GB (0.5, 1.6, ...) or a size (64MiB).
    #[arg(long, value_name = "C")]
    pub cache_capacity: Option<String>,
    /// The cache time to live in seconds (0 to 3600).
    #[arg(long, value_name = "SECS")]
    pub cache_ttl: Option<u64>,
}

/// `ringgate admin canary ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum CanaryCommand {
    /// Create (--percent required) or change the canary.
    Set(CanarySet),
    /// Make the canary's deployment and overrides the stage's (the canary
    /// stays, at 0 %).
    Promote {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// The stage.
        #[arg(value_parser = non_empty)]
        stage: String,
    },
    /// Remove the canary.
    Remove {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// The stage.
        #[arg(value_parser = non_empty)]
        stage: String,
    },
}

/// `ringgate admin canary set ...`.
#[derive(Debug, Clone, Args)]
pub struct CanarySet {
    /// The API.
    #[arg(value_parser = non_empty)]
    pub api: String,
    /// The stage.
    #[arg(value_parser = non_empty)]
    pub stage: String,
    /// Share of requests sent to the canary, 0 to 100.
    #[arg(long, value_name = "P")]
    pub percent: Option<f64>,
    /// The canary's deployment (default for a new canary: the stage's).
    #[arg(long, value_name = "ID")]
    pub deployment: Option<u64>,
    /// Override a stage variable for canary requests (repeatable).
    #[arg(long = "override", value_name = "NAME=VALUE", value_parser = name_value)]
    pub overrides: Vec<(String, String)>,
    /// Remove an override (repeatable).
    #[arg(long = "unset-override", value_name = "NAME", value_parser = non_empty)]
    pub unset_overrides: Vec<String>,
    /// Whether canary requests use the stage cache.
    #[arg(long, value_name = "true|false")]
    pub use_stage_cache: Option<bool>,
}

/// `ringgate admin cache ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum CacheCommand {
    /// The cache's settings and counters.
    Stats {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// The stage.
        #[arg(value_parser = non_empty)]
        stage: String,
    },
    /// Empty the stage cache.
    Flush {
        /// The API.
        #[arg(value_parser = non_empty)]
        api: String,
        /// The stage.
        #[arg(value_parser = non_empty)]
        stage: String,
    },
    /// Drop the entry one request would use.
    Drop(CacheDrop),
}

/// `ringgate admin cache drop ...`.
#[derive(Debug, Clone, Args)]
pub struct CacheDrop {
    /// The API.
    #[arg(value_parser = non_empty)]
    pub api: String,
    /// The stage.
    #[arg(value_parser = non_empty)]
    pub stage: String,
    /// The request's path within the stage, e.g. /items/1.
    #[arg(long, value_name = "P")]
    pub path: String,
    /// The request's method (the server's default: GET).
    #[arg(long, value_name = "M")]
    pub method: Option<String>,
    /// The request's query string, without `?`.
    #[arg(long, value_name = "Q")]
    pub query: Option<String>,
    /// A request header that is part of the key (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = name_value)]
    pub headers: Vec<(String, String)>,
    /// The canary's entry rather than production's.
    #[arg(long)]
    pub canary: bool,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(s.to_string())
    }
}

/// `API:STAGE`, split at the first `:`; neither may be empty.
fn api_stage(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((a, st)) if !a.is_empty() && !st.is_empty() => Ok((a.to_string(), st.to_string())),
        _ => Err(format!("{s:?} is not API:STAGE")),
    }
}

/// `API:STAGE:ROUTE=RATE/BURST`: the API and stage end at the first two
/// `:`, the route at the last `=`.
fn route_throttle(s: &str) -> Result<RouteThrottle, String> {
    let bad = || format!("{s:?} is not API:STAGE:'METHOD /path'=RATE/BURST");
    let (head, limit) = s.rsplit_once('=').ok_or_else(bad)?;
    let (api, rest) = head.split_once(':').ok_or_else(bad)?;
    let (stage, route) = rest.split_once(':').ok_or_else(bad)?;
    let (rate, burst) = limit.split_once('/').ok_or_else(bad)?;
    let route = route.trim();
    if api.is_empty() || stage.is_empty() || route.is_empty() {
        return Err(bad());
    }
    let rate = rate
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r >= 0.0)
        .ok_or_else(|| format!("{s:?}: the rate {rate:?} is not a number >= 0"))?;
    let burst = burst
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("{s:?}: the burst {burst:?} is not a whole number"))?;
    Ok(RouteThrottle {
        api: api.to_string(),
        stage: stage.to_string(),
        route: route.to_string(),
        rate,
        burst,
    })
}

/// A date `YYYY-MM-DD`.
fn day(s: &str) -> Result<String, String> {
    match crate::throttle::quota::parse_day(s) {
        Some(_) => Ok(s.to_string()),
        None => Err(format!("{s:?} is not a date YYYY-MM-DD")),
    }
}

/// `NAME=VALUE`, split at the first `=`; the name must not be empty.
fn name_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

// --- the request -------------------------------------------------------------

/// One request to the admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The HTTP method.
    pub method: &'static str,
    /// The percent-encoded path and query.
    pub path: String,
    /// The JSON body, if any.
    pub body: Option<Value>,
    /// Instead of `body`: this file's bytes (`-`: standard input), sent as
    /// `text/csv` (`keys import`), or as JSON or YAML (`deployments import`).
    pub upload: Option<PathBuf>,
    /// A list to fetch whole: follow each page's `position` and merge the
    /// pages' `items` (see [`merge_page`]).
    pub pages: bool,
}

/// Percent-encodes everything but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`), for a path segment or a query name or value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn stage_path(api: &str, stage: &str) -> String {
    format!("/apis/{}/stages/{}", encode(api), encode(stage))
}

fn with_page(path: String, page: &Page) -> String {
    let mut q = Vec::new();
    if let Some(l) = page.limit {
        q.push(format!("limit={l}"));
    }
    if let Some(p) = &page.position {
        q.push(format!("position={}", encode(p)));
    }
    if q.is_empty() {
        path
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// `{"NAME": "VALUE" | null}` from the set and unset lists; a name in both
/// is refused.
fn variables(
    set: &[(String, String)],
    unset: &[String],
    what: &str,
) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    for (n, v) in set {
        m.insert(n.clone(), Value::String(v.clone()));
    }
    for n in unset {
        if m.contains_key(n) {
            return Err(format!("{what} {n:?} is both set and unset"));
        }
        m.insert(n.clone(), Value::Null);
    }
    Ok(m)
}

/// The request a command makes. Pure; refuses a `stages set` or `canary
/// set` that changes nothing, and a name both set and unset.
pub fn call(cmd: &AdminCommand) -> Result<Call, String> {
    use AdminCommand as A;
    let get = |path: String| Call {
        method: "GET",
        path,
        body: None,
        upload: None,
        pages: false,
    };
    Ok(match cmd {
        A::Status => get("/status".into()),
        A::Stats => get("/stats".into()),
        A::Reload => Call {
            method: "POST",
            path: "/reload".into(),
            body: None,
            upload: None,
            pages: false,
        },
        A::Apis { page } => get(with_page("/apis".into(), page)),
        A::Deployments(d) => match d {
            DeploymentsCommand::List { api, page } => get(with_page(
                format!("/apis/{}/deployments", encode(api)),
                page,
            )),
            DeploymentsCommand::Create {
                api,
                description,
                stage,
            } => {
                let mut body = Map::new();
                if let Some(d) = description {
                    body.insert("description".into(), json!(d));
                }
                if let Some(s) = stage {
                    body.insert("stage".into(), json!(s));
                }
                Call {
                    method: "POST",
                    path: format!("/apis/{}/deployments", encode(api)),
                    body: Some(Value::Object(body)),
                    upload: None,
                    pages: false,
                }
            }
            DeploymentsCommand::Show { api, id } => {
                get(format!("/apis/{}/deployments/{id}", encode(api)))
            }
            DeploymentsCommand::Import {
                api,
                file,
                description,
                stage,
                strict,
            } => {
                let mut query = Vec::new();
                if let Some(s) = stage {
                    query.push(format!("stage={}", encode(s)));
                }
                if let Some(d) = description {
                    query.push(format!("description={}", encode(d)));
                }
                if *strict {
                    query.push("strict=true".to_string());
                }
                let mut path = format!("/apis/{}/import", encode(api));
                if !query.is_empty() {
                    path.push('?');
                    path.push_str(&query.join("&"));
                }
                Call {
                    method: "POST",
                    path,
                    body: None,
                    upload: Some(file.clone()),
                    pages: false,
                }
            }
            DeploymentsCommand::Export { api, id } => {
                get(format!("/apis/{}/deployments/{id}/export", encode(api)))
            }
        },
        A::Stages(s) => match s {
            StagesCommand::List { api, page } => {
                get(with_page(format!("/apis/{}/stages", encode(api)), page))
            }
            StagesCommand::Show { api, stage } => get(stage_path(api, stage)),
            StagesCommand::Set(s) => {
                let mut body = Map::new();
                if let Some(id) = s.deployment {
                    body.insert("deployment_id".into(), json!(id));
                }
                let vars = variables(&s.vars, &s.unset_vars, "variable")?;
                if !vars.is_empty() {
                    body.insert("variables".into(), Value::Object(vars));
                }
                let mut cache = Map::new();
                if let Some(c) = s.cache {
                    cache.insert("enabled".into(), json!(c == OnOff::On));
                }
                if let Some(c) = &s.cache_capacity {
                    cache.insert("capacity".into(), json!(c));
                }
                if let Some(t) = s.cache_ttl {
                    cache.insert("ttl_seconds".into(), json!(t));
                }
                if !cache.is_empty() {
                    body.insert("cache".into(), Value::Object(cache));
                }
                if body.is_empty() {
                    return Err("nothing to change: give --deployment, --var, --unset-var, \
                                --cache, --cache-capacity or --cache-ttl"
                        .into());
                }
                Call {
                    method: "PATCH",
                    path: stage_path(&s.api, &s.stage),
                    body: Some(Value::Object(body)),
                    upload: None,
                    pages: false,
                }
            }
        },
        A::Canary(c) => match c {
            CanaryCommand::Set(c) => {
                let mut body = Map::new();
                if let Some(p) = c.percent {
                    body.insert("percent".into(), json!(p));
                }
                if let Some(id) = c.deployment {
                    body.insert("deployment_id".into(), json!(id));
                }
                let o = variables(&c.overrides, &c.unset_overrides, "override")?;
                if !o.is_empty() {
                    body.insert("variable_overrides".into(), Value::Object(o));
                }
                if let Some(u) = c.use_stage_cache {
                    body.insert("use_stage_cache".into(), json!(u));
                }
                if body.is_empty() {
                    return Err(
                        "nothing to change: give --percent, --deployment, --override, \
                                --unset-override or --use-stage-cache"
                            .into(),
                    );
                }
                Call {
                    method: "PUT",
                    path: format!("{}/canary", stage_path(&c.api, &c.stage)),
                    body: Some(Value::Object(body)),
                    upload: None,
                    pages: false,
                }
            }
            CanaryCommand::Promote { api, stage } => Call {
                method: "POST",
                path: format!("{}/canary/promote", stage_path(api, stage)),
                body: None,
                upload: None,
                pages: false,
            },
            CanaryCommand::Remove { api, stage } => Call {
                method: "DELETE",
                path: format!("{}/canary", stage_path(api, stage)),
                body: None,
                upload: None,
                pages: false,
            },
        },
        A::Cache(c) => match c {
            CacheCommand::Stats { api, stage } => get(format!("{}/cache", stage_path(api, stage))),
            CacheCommand::Flush { api, stage } => Call {
                method: "DELETE",
                path: format!("{}/cache/data", stage_path(api, stage)),
                body: None,
                upload: None,
                pages: false,
            },
            CacheCommand::Drop(d) => {
                let mut q = Vec::new();
                if let Some(m) = &d.method {
                    q.push(format!("method={}", encode(m)));
                }
                q.push(format!("path={}", encode(&d.path)));
                if let Some(query) = &d.query {
                    q.push(format!("query={}", encode(query)));
                }
                for (n, v) in &d.headers {
                    q.push(format!("header.{}={}", encode(n), encode(v)));
                }
                if d.canary {
                    q.push("canary=true".into());
                }
                Call {
                    method: "DELETE",
                    path: format!(
                        "{}/cache/entries?{}",
                        stage_path(&d.api, &d.stage),
                        q.join("&")
                    ),
                    body: None,
                    upload: None,
                    pages: false,
                }
            }
        },
        A::Keys(k) => keys_call(k),
        A::Plans(p) => plans_call(p)?,
        A::Usage(u) => {
            let mut q = vec![
                format!("startDate={}", encode(&u.from)),
                format!("endDate={}", encode(&u.to)),
            ];
            if let Some(k) = &u.key {
                q.push(format!("keyId={}", encode(k)));
            }
            let pages = u.limit.is_none() && u.position.is_none();
            q.push(format!("limit={}", u.limit.unwrap_or(PAGE_LIMIT)));
            if let Some(p) = &u.position {
                q.push(format!("position={}", encode(p)));
            }
            Call {
                pages,
                ..get(format!(
                    "/usageplans/{}/usage?{}",
                    encode(&u.plan),
                    q.join("&")
                ))
            }
        }
        A::Quota {
            plan,
            key,
            remaining,
        } => {
            let path = format!("/usageplans/{}/keys/{}/usage", encode(plan), encode(key));
            match remaining {
                None => get(path),
                Some(n) => Call {
                    method: "PATCH",
                    body: Some(json!({ "remaining": n })),
                    ..get(path)
                },
            }
        }
    })
}

/// The page size of the lists fetched whole.
pub const PAGE_LIMIT: u32 = 500;

/// `GET path?limit=500&...`, all pages.
fn whole_list(path: String, query: &[String]) -> Call {
    let mut q = vec![format!("limit={PAGE_LIMIT}")];
    q.extend_from_slice(query);
    Call {
        method: "GET",
        path: format!("{path}?{}", q.join("&")),
        body: None,
        upload: None,
        pages: true,
    }
}

fn key_path(id: &str) -> String {
    format!("/apikeys/{}", encode(id))
}

fn plan_path(id: &str) -> String {
    format!("/usageplans/{}", encode(id))
}

fn keys_call(k: &KeysCommand) -> Call {
    let call = |method: &'static str, path: String, body: Option<Value>| Call {
        method,
        path,
        body,
        upload: None,
        pages: false,
    };
    match k {
        KeysCommand::List {
            include_values,
            name,
        } => {
            let mut q = Vec::new();
            if *include_values {
                q.push("include_values=true".to_string());
            }
            if let Some(n) = name {
                q.push(format!("name={}", encode(n)));
            }
            whole_list("/apikeys".into(), &q)
        }
        KeysCommand::Get { id, include_value } => {
            let mut path = key_path(id);
            if *include_value {
                path.push_str("?include_value=true");
            }
            call("GET", path, None)
        }
        KeysCommand::Create {
            name,
            value,
            description,
            disabled,
            plans,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            if let Some(v) = value {
                body.insert("value".into(), json!(v));
            }
            if let Some(d) = description {
                body.insert("description".into(), json!(d));
            }
            if *disabled {
                body.insert("enabled".into(), json!(false));
            }
            if !plans.is_empty() {
                body.insert("usage_plan_ids".into(), json!(plans));
            }
            call("POST", "/apikeys".into(), Some(Value::Object(body)))
        }
        KeysCommand::Enable { id } => call("PATCH", key_path(id), Some(json!({"enabled": true}))),
        KeysCommand::Disable { id } => call("PATCH", key_path(id), Some(json!({"enabled": false}))),
        KeysCommand::Rename { id, name } => {
            call("PATCH", key_path(id), Some(json!({ "name": name })))
        }
        KeysCommand::Delete { id } => call("DELETE", key_path(id), None),
        KeysCommand::Import { file } => Call {
            upload: Some(file.clone()),
            ..call("POST", "/apikeys?mode=import&format=csv".into(), None)
        },
    }
}

/// The plan fields `plans create` and `plans update` share: description,
/// throttle, quota, stages (with their route throttles).
fn plan_fields(l: &PlanLimits, body: &mut Map<String, Value>) -> Result<(), String> {
    if let Some(d) = &l.description {
        body.insert("description".into(), json!(d));
    }
    if let (Some(rate), Some(burst)) = (l.rate, l.burst) {
        body.insert("throttle".into(), json!({ "rate": rate, "burst": burst }));
    }
    if let (Some(limit), Some(period)) = (l.quota, l.period) {
        let mut q = json!({ "limit": limit, "period": period.as_str() });
        if let Some(o) = l.offset {
            q["offset"] = json!(o);
        }
        body.insert("quota".into(), q);
    }
    if !l.stages.is_empty() {
        for t in &l.route_throttles {
            if !l.stages.iter().any(|(a, s)| *a == t.api && *s == t.stage) {
                return Err(format!(
                    "--route-throttle {}:{}:{}: stage {}:{} is not given with --stage",
                    t.api, t.stage, t.route, t.api, t.stage
                ));
            }
        }
        let stages: Vec<Value> = l
            .stages
            .iter()
            .map(|(api, stage)| {
                let routes: Map<String, Value> = l
                    .route_throttles
                    .iter()
                    .filter(|t| t.api == *api && t.stage == *stage)
                    .map(|t| (t.route.clone(), json!({ "rate": t.rate, "burst": t.burst })))
                    .collect();
                let mut s = json!({ "api": api, "stage": stage });
                if !routes.is_empty() {
                    s["route_throttle"] = Value::Object(routes);
                }
                s
            })
            .collect();
        body.insert("stages".into(), Value::Array(stages));
    }
    Ok(())
}

fn plans_call(p: &PlansCommand) -> Result<Call, String> {
    let call = |method: &'static str, path: String, body: Option<Value>| Call {
        method,
        path,
        body,
        upload: None,
        pages: false,
    };
    Ok(match p {
        PlansCommand::List => whole_list("/usageplans".into(), &[]),
        PlansCommand::Get { id } => call("GET", plan_path(id), None),
        PlansCommand::Create(c) => {
            let mut body = Map::new();
            body.insert("name".into(), json!(c.name));
            plan_fields(&c.limits, &mut body)?;
            call("POST", "/usageplans".into(), Some(Value::Object(body)))
        }
        PlansCommand::Update(u) => {
            let mut body = Map::new();
            if let Some(n) = &u.name {
                body.insert("name".into(), json!(n));
            }
            plan_fields(&u.limits, &mut body)?;
            if u.no_throttle {
                body.insert("throttle".into(), Value::Null);
            }
            if u.no_quota {
                body.insert("quota".into(), Value::Null);
            }
            if u.no_stages {
                body.insert("stages".into(), json!([]));
            }
            if body.is_empty() {
                return Err("nothing to change: give --name, --description, --rate and \
                            --burst, --quota and --period, --stage, --no-throttle, \
                            --no-quota or --no-stages"
                    .into());
            }
            call("PATCH", plan_path(&u.id), Some(Value::Object(body)))
        }
        PlansCommand::Delete { id } => call("DELETE", plan_path(id), None),
        PlansCommand::Attach { plan, key } => call(
            "POST",
            format!("{}/keys", plan_path(plan)),
            Some(json!({ "key_id": key })),
        ),
        PlansCommand::Detach { plan, key } => call(
            "DELETE",
            format!("{}/keys/{}", plan_path(plan), encode(key)),
            None,
        ),
        PlansCommand::Keys { plan } => whole_list(format!("{}/keys", plan_path(plan)), &[]),
    })
}

/// The request for the page after `position` of a list fetched whole.
pub fn next_page(call: &Call, position: &str) -> Call {
    let sep = if call.path.contains('?') { '&' } else { '?' };
    Call {
        path: format!("{}{sep}position={}", call.path, encode(position)),
        ..call.clone()
    }
}

/// Adds a page to what was fetched so far: `items` (a list, or an object
/// by key as in the usage report) appended, `position` dropped.
pub fn merge_page(acc: &mut Value, page: Value) {
    match (&mut acc["items"], page) {
        (Value::Array(a), Value::Object(mut p)) => {
            if let Some(Value::Array(more)) = p.remove("items") {
                a.extend(more);
            }
        }
        (Value::Object(a), Value::Object(mut p)) => {
            if let Some(Value::Object(more)) = p.remove("items") {
                a.extend(more);
            }
        }
        _ => {}
    }
    if let Some(m) = acc.as_object_mut() {
        m.remove("position");
    }
}

// --- which gateway -----------------------------------------------------------

/// Where to send the request: `--socket`, else `--url` with its token,
/// else the socket of `--config` (or [`DEFAULT_CONFIG`]).
pub fn endpoint(args: &AdminArgs) -> Result<Endpoint, String> {
    if let Some(s) = &args.socket {
        return Ok(Endpoint::Unix(s.clone()));
    }
    if let Some(url) = &args.url {
        let addr = parse_url(url)?;
        let file = args
            .token_file
            .as_deref()
            .ok_or("--url needs --token-file")?;
        let token = read_token(file)?;
        return Ok(Endpoint::Tcp { addr, token });
    }
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match crate::config::load(&path) {
        Ok(c) => Ok(Endpoint::Unix(c.admin_socket())),
        Err(e) => Err(format!(
            "cannot find the admin socket: the configuration {} does not load: {e}\n\
             (give the socket with --socket PATH, or the configuration with --config PATH)",
            path.display()
        )),
    }
}

/// `http://HOST:PORT[/]` with a loopback HOST (an IP address or
/// `localhost`) → its address.
pub fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!(
            "--url {url:?}: the admin listener speaks plain http://, e.g. http://127.0.0.1:9901"
        )
    })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "--url {url:?}: give only http://HOST:PORT, without a path"
        ));
    }
    let addr = match authority.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p)),
        None => authority.parse::<SocketAddr>().ok(),
    }
    .ok_or_else(|| format!("--url {url:?}: expected http://IP:PORT, e.g. http://127.0.0.1:9901"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--url {url:?}: the admin listener is loopback only (127.0.0.0/8 or [::1])"
        ));
    }
    Ok(addr)
}

fn read_token(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the token file {}: {e}", file.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", file.display()));
    }
    Ok(token.to_string())
}

// --- running -----------------------------------------------------------------

/// Runs one command: resolves the gateway, sends the request, prints the
/// answer. Returns the exit code (0, [`EXIT_REFUSED`] or
/// [`EXIT_UNREACHABLE`]).
pub fn run(args: &AdminArgs) -> u8 {
    let fail = |m: &str| {
        eprintln!("ringgate admin: {m}");
        EXIT_UNREACHABLE
    };
    let call = match call(&args.command) {
        Ok(c) => c,
        Err(m) => return fail(&m),
    };
    let endpoint = match endpoint(args) {
        Ok(e) => e,
        Err(m) => return fail(&m),
    };
    let reply = match send(&endpoint, &call) {
        Ok(r) => r,
        Err(m) => return fail(&m),
    };
    let value: Option<Value> = if reply.body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice(&reply.body).ok()
    };
    if args.json {
        match &value {
            Some(v) => out(&pretty(v)),
            None if !reply.body.is_empty() => out(&String::from_utf8_lossy(&reply.body)),
            None => {}
        }
    }
    if !(200..300).contains(&reply.status) {
        eprintln!(
            "ringgate admin: {}",
            error_message(reply.status, &reply.body)
        );
        return EXIT_REFUSED;
    }
    if args.json {
        return 0;
    }
    let value = match value {
        Some(v) => v,
        None if reply.body.is_empty() => Value::Null,
        None => {
            return fail(&format!(
                "the answer from {endpoint} (HTTP {}) is not JSON",
                reply.status
            ))
        }
    };
    // After deploying to a stage, ask what it serves now: the stage itself,
    // or only its canary.
    let stage = match &args.command {
        AdminCommand::Deployments(DeploymentsCommand::Create {
            api,
            stage: Some(stage),
            ..
        }) => client::request(&endpoint, "GET", &stage_path(api, stage), None)
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok()),
        _ => None,
    };
    out(&render(&args.command, &value, stage.as_ref()));
    0
}

/// Sends `call`: its JSON body, or the file it uploads; a list fetched
/// whole page by page, merged into one answer (the first error reply is
/// the answer).
fn send(endpoint: &Endpoint, call: &Call) -> Result<client::Reply, String> {
    if let Some(file) = &call.upload {
        let bytes = read_upload(file)?;
        let content_type = if call.path.starts_with("/apikeys") {
            "text/csv"
        } else if bytes.trim_ascii_start().starts_with(b"{") {
            "application/json"
        } else {
            "application/yaml"
        };
        return client::request_typed(endpoint, call.method, &call.path, &bytes, content_type);
    }
    let body = call.body.as_ref().map(|b| b.to_string().into_bytes());
    let first = client::request(endpoint, call.method, &call.path, body.as_deref())?;
    if !call.pages || !(200..300).contains(&first.status) {
        return Ok(first);
    }
    let not_json = |status: u16| format!("the answer from {endpoint} (HTTP {status}) is not JSON");
    let mut all: Value = serde_json::from_slice(&first.body).map_err(|_| not_json(first.status))?;
    let mut next = all["position"].as_str().map(str::to_string);
    merge_page(&mut all, json!({}));
    let mut pages = 1u32;
    while let Some(position) = next {
        pages += 1;
        if pages > 100_000 {
            return Err(format!("the list from {endpoint} does not end"));
        }
        let reply = client::request(endpoint, "GET", &next_page(call, &position).path, None)?;
        if !(200..300).contains(&reply.status) {
            return Ok(reply);
        }
        let page: Value =
            serde_json::from_slice(&reply.body).map_err(|_| not_json(reply.status))?;
        next = page["position"].as_str().map(str::to_string);
        if next.as_deref() == Some(position.as_str()) {
            return Err(format!(
                "the list from {endpoint} gave position {position:?} twice"
            ));
        }
        merge_page(&mut all, page);
    }
    Ok(client::Reply {
        status: first.status,
        body: all.to_string().into_bytes(),
    })
}

/// The bytes of the file `keys import` sends (`-`: standard input).
fn read_upload(file: &Path) -> Result<Vec<u8>, String> {
    if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        Ok(bytes)
    } else {
        std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))
    }
}

/// Writes `text` to stdout with a final newline; a closed stdout (`| head`)
/// is not an error.
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = o.write_all(b"\n");
    }
    let _ = o.flush();
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

// --- formatting (pure) -------------------------------------------------------

/// The line for an error reply (without the `ringgate admin: ` prefix):
/// `<message> (field: <field>) [HTTP <status> <code>]`; a body that is not
/// the admin API's error object is quoted as text.
pub fn error_message(status: u16, body: &[u8]) -> String {
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let message = parsed.as_ref().and_then(|v| v["message"].as_str());
    match (parsed.as_ref(), message) {
        (Some(v), Some(m)) => {
            let mut s = clean_lines(m);
            if let Some(f) = v["field"].as_str() {
                let _ = write!(s, " (field: {})", clean(f));
            }
            let _ = write!(s, " [HTTP {status}");
            if let Some(code) = v["error"].as_str() {
                let _ = write!(s, " {}", clean(code));
            }
            s.push(']');
            s
        }
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("the server answered HTTP {status}")
            } else {
                format!("the server answered HTTP {status}: {}", clean(text))
            }
        }
    }
}

/// The human-readable output of `cmd` given the server's (successful)
/// answer `v`; `stage` is the stage read after `deployments create
/// --stage`, when it could be.
pub fn render(cmd: &AdminCommand, v: &Value, stage: Option<&Value>) -> String {
    use AdminCommand as A;
    match cmd {
        A::Status => format_status(v),
        A::Stats => format_stats(v),
        A::Reload => format_reload(v),
        A::Apis { .. } => format_apis(v),
        A::Deployments(DeploymentsCommand::List { .. }) => format_deployments(v),
        A::Deployments(DeploymentsCommand::Create { stage: name, .. }) => {
            format_created(v, name.as_deref(), stage)
        }
        A::Deployments(DeploymentsCommand::Show { .. }) => format_deployment(v),
        A::Deployments(DeploymentsCommand::Import { .. }) => format_import(v),
        A::Deployments(DeploymentsCommand::Export { .. }) => {
            let mut t = serde_json::to_string_pretty(v).unwrap_or_default();
            t.push('\n');
            t
        }
        A::Stages(StagesCommand::List { .. }) => format_stages(v),
        A::Stages(StagesCommand::Show { .. }) => format_stage(v),
        A::Stages(StagesCommand::Set(_)) => format_stage_updated(v),
        A::Canary(CanaryCommand::Set(_)) => format_canary_set(v),
        A::Canary(CanaryCommand::Promote { .. }) => format_canary_promoted(v),
        A::Canary(CanaryCommand::Remove { .. }) => format_canary_removed(v),
        A::Cache(CacheCommand::Stats { .. }) => format_cache_stats(v),
        A::Cache(CacheCommand::Flush { stage, .. }) => {
            format!("flushed the cache of stage {}\n", clean(stage))
        }
        A::Cache(CacheCommand::Drop(d)) => format_dropped(v, d),
        A::Keys(k) => match k {
            KeysCommand::List { .. } => format_keys(v),
            KeysCommand::Get { .. } => format_key(v),
            KeysCommand::Create { .. } => format_key_created(v),
            KeysCommand::Enable { .. } => format!("enabled {}\n", key_name(v)),
            KeysCommand::Disable { .. } => format!(
                "disabled {}: its requests are refused (403) until enabled\n",
                key_name(v)
            ),
            KeysCommand::Rename { .. } => format!("renamed {}\n", key_name(v)),
            KeysCommand::Delete { id } => format!("deleted key {}\n", clean(id)),
            KeysCommand::Import { .. } => format_imported(v),
        },
        A::Plans(p) => match p {
            PlansCommand::List => format_plans(v),
            PlansCommand::Get { .. } => format_plan(v),
            PlansCommand::Create(_) => format!("created {}", plan_line(v)),
            PlansCommand::Update(_) => format!("updated {}", plan_line(v)),
            PlansCommand::Delete { id } => format!("deleted plan {}\n", clean(id)),
            PlansCommand::Attach { key, .. } => {
                format!("attached key {} to {}", clean(key), plan_line(v))
            }
            PlansCommand::Detach { key, .. } => {
                format!("detached key {} from {}", clean(key), plan_line(v))
            }
            PlansCommand::Keys { .. } => format_keys(v),
        },
        A::Usage(_) => format_usage(v),
        A::Quota {
            remaining: None, ..
        } => format_quota(v),
        A::Quota { .. } => format_quota_set(v),
    }
}

/// Control characters (which could drive the terminal, or break a table
/// row) replaced by spaces.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// [`clean`], but keeping line breaks: for messages of several lines
/// (a configuration error and its `fix:` line).
fn clean_lines(s: &str) -> String {
    s.lines().map(clean).collect::<Vec<_>>().join("\n")
}

/// A JSON scalar as text: strings as they are (cleaned), `null` and
/// missing as `-`, numbers without a needless `.0`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => clean(s),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => u.to_string(),
            (None, Some(i), _) => i.to_string(),
            (None, None, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        other => clean(&other.to_string()),
    }
}

/// Seconds since the Unix epoch as UTC, ISO-8601 (`2024-05-01T12:00:00Z`).
pub fn iso8601(secs: u64) -> String {
    // Howard Hinnant's civil_from_days.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn time(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), iso8601)
}

/// A duration in seconds as `1h 2m 3s` (largest units first, zeros left out).
fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = Vec::new();
    if h > 0 {
        out.push(format!("{h}h"));
    }
    if m > 0 {
        out.push(format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push(format!("{s}s"));
    }
    out.join(" ")
}

/// A byte count in the largest binary unit that divides it exactly.
fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes % unit == 0 {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

fn percent(v: &Value) -> String {
    format!("{}%", text(v))
}

/// Aligned columns, two spaces apart, the last one not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(cell);
            if i + 1 < widths.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                l.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// `key: value` lines, the values aligned (keys padded to at least 10
/// characters, so that consecutive blocks of short keys line up too).
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).fold(10, usize::max) + 1;
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        let _ = writeln!(out, "{key:<width$} {v}");
    }
    out
}

/// A list page: the table, "(none)" when empty, and the hint for the
/// next page.
fn list(v: &Value, headers: &[&str], row: impl Fn(&Value) -> Vec<String>) -> String {
    let items = v["items"].as_array().map_or(&[][..], Vec::as_slice);
    let mut out = if items.is_empty() {
        "(none)\n".to_string()
    } else {
        table(headers, &items.iter().map(row).collect::<Vec<_>>())
    };
    if let Some(p) = v["position"].as_str() {
        let _ = writeln!(out, "more: add --position {} for the next page", clean(p));
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(3)).collect();
        t.push_str("...");
        t
    }
}

fn count(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// `GET /status`.
pub fn format_status(v: &Value) -> String {
    let workers = v["workers"].as_array().map_or(&[][..], Vec::as_slice);
    let mut out = fields(&[
        ("version", text(&v["version"])),
        (
            "uptime",
            v["uptime_seconds"]
                .as_u64()
                .map_or_else(|| "-".into(), duration),
        ),
        ("config", text(&v["config"])),
        ("state", text(&v["state"])),
        ("workers", workers.len().to_string()),
    ]);
    for w in workers {
        let _ = writeln!(
            out,
            "  worker {}: {} connections, {} pooled buffers, {} parks",
            text(&w["worker"]),
            text(&w["connections"]),
            text(&w["pooled_buffers"]),
            text(&w["parked"])
        );
    }
    out
}

/// `POST /reload`.
pub fn format_reload(v: &Value) -> String {
    let mut out = "reloaded the configuration\n".to_string();
    let lines = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| clean_lines(l.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default()
    };
    for w in lines("warnings") {
        let _ = writeln!(out, "warning: {w}");
    }
    for r in lines("restart_required") {
        let _ = writeln!(out, "{r} changed: it applies at the next start");
    }
    for p in lines("pinned_stages") {
        let _ = writeln!(out, "note: {p}");
    }
    out
}

/// `GET /apis`: NAME, HOSTS, STAGES (pinned ones with their deployment),
/// ROUTES, DEPLOYMENTS.
pub fn format_apis(v: &Value) -> String {
    list(
        v,
        &["NAME", "HOSTS", "STAGES", "ROUTES", "DEPLOYMENTS"],
        |a| {
            let hosts = a["hosts"].as_array().filter(|h| !h.is_empty()).map_or_else(
                || "*".to_string(),
                |h| h.iter().map(text).collect::<Vec<_>>().join(","),
            );
            let stages = a["stages"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .map(|s| {
                            if s["auto_deploy"].as_bool() == Some(false) {
                                format!("{}@{}", text(&s["name"]), text(&s["deployment_id"]))
                            } else {
                                text(&s["name"])
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                text(&a["name"]),
                hosts,
                stages,
                count(&a["routes"]).to_string(),
                text(&a["deployments"]),
            ]
        },
    )
}

/// `GET /apis/{api}/deployments`: ID, CREATED, DESCRIPTION, ROUTES.
pub fn format_deployments(v: &Value) -> String {
    list(v, &["ID", "CREATED", "DESCRIPTION", "ROUTES"], |d| {
        let desc = d["description"].as_str().unwrap_or("");
        vec![
            text(&d["id"]),
            time(&d["created_at"]),
            if desc.is_empty() {
                "-".into()
            } else {
                truncate(&clean(desc), 60)
            },
            count(&d["routes"]).to_string(),
        ]
    })
}

/// `deployments import`: the new deployment and what the import did.
pub fn format_import(v: &Value) -> String {
    let mut out = format!(
        "deployment {} of {}: imported {} ({}): {} route(s), {} http_proxy, {} mock\n",
        v["id"],
        clean(v["api"].as_str().unwrap_or("")),
        clean(&v["import"]["title"].to_string()),
        clean(v["import"]["format"].as_str().unwrap_or("")),
        v["import"]["routes"],
        v["import"]["http_proxy"],
        v["import"]["mock"],
    );
    for (kind, key) in [("approximated", "approximated"), ("left out", "left_out")] {
        let notes = v["import"][key].as_array().map_or(&[][..], Vec::as_slice);
        let _ = writeln!(out, "{kind}: {}", notes.len());
        for n in notes {
            let _ = writeln!(
                out,
                "  {}: {}",
                clean(n["pointer"].as_str().unwrap_or("")),
                clean(n["message"].as_str().unwrap_or(""))
            );
        }
    }
    out
}

/// `GET /apis/{api}/deployments/{id}`: its fields and routes.
pub fn format_deployment(v: &Value) -> String {
    let desc = v["description"].as_str().unwrap_or("");
    let mut out = fields(&[
        ("id", text(&v["id"])),
        ("api", text(&v["api"])),
        ("created", time(&v["created_at"])),
        (
            "description",
            if desc.is_empty() {
                "-".into()
            } else {
                clean(desc)
            },
        ),
        ("routes", count(&v["routes"]).to_string()),
    ]);
    for r in v["routes"].as_array().map_or(&[][..], Vec::as_slice) {
        let _ = writeln!(out, "  {}", text(r));
    }
    out
}

/// `deployments create`: one line, naming what now serves it.
pub fn format_created(v: &Value, stage: Option<&str>, stage_now: Option<&Value>) -> String {
    let id = text(&v["id"]);
    let Some(name) = stage else {
        return format!("deployment {id} created\n");
    };
    let name = clean(name);
    let canary = stage_now
        .is_some_and(|s| s["canary"]["deployment_id"] == v["id"] && s["deployment_id"] != v["id"]);
    if canary {
        format!("deployment {id} created; the canary of stage {name} now serves it\n")
    } else {
        format!("deployment {id} created; stage {name} now serves it\n")
    }
}

/// A stage's cache settings in a few words: `off`, or `64 MiB, ttl 60s`.
fn cache_summary(c: &Value) -> String {
    if c.is_null() || c["enabled"].as_bool() != Some(true) {
        return "off".into();
    }
    let capacity = match c["capacity_class"].as_str() {
        Some(class) => format!("{} GB", clean(class)),
        None => c["capacity_bytes"]
            .as_u64()
            .map_or_else(|| "-".into(), size),
    };
    format!("{capacity}, ttl {}s", text(&c["ttl_seconds"]))
}

fn canary_summary(c: &Value) -> String {
    if c.is_null() {
        return "-".into();
    }
    format!("{} @ {}", text(&c["deployment_id"]), percent(&c["percent"]))
}

/// `GET /apis/{api}/stages`: NAME, SOURCE, DEPLOYMENT, CANARY, CACHE.
pub fn format_stages(v: &Value) -> String {
    list(
        v,
        &["NAME", "SOURCE", "DEPLOYMENT", "CANARY", "CACHE"],
        |s| {
            vec![
                text(&s["name"]),
                text(&s["source"]),
                text(&s["deployment_id"]),
                canary_summary(&s["canary"]),
                cache_summary(&s["cache"]),
            ]
        },
    )
}

/// `  NAME = VALUE` lines of a JSON object of strings.
fn map_lines(out: &mut String, m: &Value) {
    if let Some(m) = m.as_object() {
        for (k, v) in m {
            let _ = writeln!(out, "  {} = {}", clean(k), text(v));
        }
    }
}

/// `GET /apis/{api}/stages/{stage}`: its fields, variables and canary.
pub fn format_stage(v: &Value) -> String {
    let pinned = v["auto_deploy"].as_bool() == Some(false);
    let source = if pinned {
        "state (pinned: auto_deploy = false)"
    } else {
        "file (auto_deploy: serves the file's current definition)"
    };
    let mut cache = cache_summary(&v["cache"]);
    if let Some(n) = v["cache_entries"].as_u64() {
        let _ = write!(cache, ", {n} entries");
    }
    let c = &v["canary"];
    let canary = if c.is_null() {
        "-".to_string()
    } else {
        let stage_cache = if c["use_stage_cache"].as_bool() == Some(true) {
            "uses"
        } else {
            "does not use"
        };
        format!("{}, {stage_cache} the stage cache", canary_summary(c))
    };
    let vars = v["variables"].as_object().map_or(0, Map::len);
    let mut out = fields(&[
        ("api", text(&v["api"])),
        ("stage", text(&v["name"])),
        ("source", source.to_string()),
        ("deployment", text(&v["deployment_id"])),
        ("updated", time(&v["updated_at"])),
        ("cache", cache),
        ("canary", canary),
        ("variables", vars.to_string()),
    ]);
    map_lines(&mut out, &v["variables"]);
    if !c.is_null() {
        let n = c["variable_overrides"].as_object().map_or(0, Map::len);
        out.push_str(&fields(&[("overrides", n.to_string())]));
        map_lines(&mut out, &c["variable_overrides"]);
    }
    out
}

/// `stages set`: one line with the stage's settings after the change.
pub fn format_stage_updated(v: &Value) -> String {
    let vars = v["variables"].as_object().map_or(0, Map::len);
    format!(
        "updated stage {}: deployment {}, {vars} variable{}, cache {}\n",
        text(&v["name"]),
        text(&v["deployment_id"]),
        if vars == 1 { "" } else { "s" },
        cache_summary(&v["cache"])
    )
}

/// `canary set`: one line with the canary after the change.
pub fn format_canary_set(v: &Value) -> String {
    let c = &v["canary"];
    let n = c["variable_overrides"].as_object().map_or(0, Map::len);
    format!(
        "canary of stage {}: deployment {}, {n} override{}, {} the stage cache\n",
        text(&v["name"]),
        canary_summary(c),
        if n == 1 { "" } else { "s" },
        if c["use_stage_cache"].as_bool() == Some(true) {
            "uses"
        } else {
            "does not use"
        }
    )
}

/// `canary promote`: one line.
pub fn format_canary_promoted(v: &Value) -> String {
    format!(
        "promoted the canary of stage {}: the stage now serves deployment {}; the canary \
         stays at {} until removed\n",
        text(&v["name"]),
        text(&v["deployment_id"]),
        percent(&v["canary"]["percent"])
    )
}

/// `canary remove`: one line.
pub fn format_canary_removed(v: &Value) -> String {
    format!(
        "removed the canary of stage {}; it serves deployment {}\n",
        text(&v["name"]),
        text(&v["deployment_id"])
    )
}

/// `GET .../cache`: settings and counters.
pub fn format_cache_stats(v: &Value) -> String {
    let hits = v["hits"].as_u64().unwrap_or(0);
    let misses = v["misses"].as_u64().unwrap_or(0);
    let ratio = if hits + misses == 0 {
        "-".to_string()
    } else {
        format!("{:.1}%", hits as f64 * 100.0 / (hits + misses) as f64)
    };
    fields(&[
        ("cache", cache_summary(&v["settings"])),
        ("entries", text(&v["entries"])),
        (
            "bytes",
            format!("{} of {}", text(&v["bytes"]), text(&v["capacity"])),
        ),
        ("hits", text(&v["hits"])),
        ("misses", text(&v["misses"])),
        ("hit ratio", ratio),
        ("evictions", text(&v["evictions"])),
        ("rejected", text(&v["rejected"])),
    ])
}

/// `stats`: a row per series: requests, status classes, cache hits and
/// misses, throttled and quota-refused, and latency percentiles in ms.
pub fn format_stats(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["series"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|r| {
            let name = if r["api"].as_str() == Some("") {
                "(no stage)".to_string()
            } else {
                let mut n = format!("{}/{}", text(&r["api"]), text(&r["stage"]));
                if let Some(route) = r["route"].as_str() {
                    let _ = write!(n, " {}", clean(route));
                }
                if r["canary"] == Value::Bool(true) {
                    n.push_str(" (canary)");
                }
                n
            };
            let ms = |h: &Value, q: &str| match h[q].as_f64() {
                Some(x) if x >= 100.0 => format!("{x:.0}"),
                Some(x) => format!("{x:.2}"),
                None => "-".to_string(),
            };
            let l = &r["latency_ms"];
            let i = &r["integration_latency_ms"];
            vec![
                name,
                text(&r["count"]),
                text(&r["2xx"]),
                text(&r["4xx"]),
                text(&r["5xx"]),
                format!("{}/{}", text(&r["cache_hits"]), text(&r["cache_misses"])),
                format!("{}/{}", text(&r["throttled"]), text(&r["quota_exceeded"])),
                ms(l, "p50"),
                ms(l, "p90"),
                ms(l, "p99"),
                ms(l, "p99.9"),
                ms(l, "max"),
                ms(i, "p99"),
            ]
        })
        .collect();
    if rows.is_empty() {
        return if v["enabled"] == Value::Bool(false) {
            "(metrics are off: [metrics] enabled = false)\n".to_string()
        } else {
            "(no requests yet)\n".to_string()
        };
    }
    let mut out = table(
        &[
            "SERIES",
            "COUNT",
            "2XX",
            "4XX",
            "5XX",
            "HIT/MISS",
            "429/QUOTA",
            "P50",
            "P90",
            "P99",
            "P99.9",
            "MAX",
            "INT P99",
        ],
        &rows,
    );
    out.push_str("latency in ms (INT: the backend's part)\n");
    out
}

/// `cache drop`: one line, whether there was an entry or not.
pub fn format_dropped(v: &Value, d: &CacheDrop) -> String {
    let mut request = format!(
        "{} {}",
        clean(&d.method.as_deref().unwrap_or("GET").to_ascii_uppercase()),
        clean(&d.path)
    );
    if let Some(q) = d.query.as_deref().filter(|q| !q.is_empty()) {
        let _ = write!(request, "?{}", clean(q));
    }
    let which = if d.canary { "canary " } else { "" };
    if v["removed"].as_bool() == Some(true) {
        format!(
            "dropped the {which}cache entry for {request} from stage {}\n",
            clean(&d.stage)
        )
    } else {
        format!(
            "stage {} had no {which}cache entry for {request}\n",
            clean(&d.stage)
        )
    }
}

/// `key ID (NAME)`.
fn key_name(v: &Value) -> String {
    format!("key {} ({})", text(&v["id"]), text(&v["name"]))
}

fn enabled(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}

/// A list of strings joined with `,`, or `-`.
fn joined(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a.iter().map(text).collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

fn or_dash(v: &Value) -> String {
    match v.as_str() {
        Some("") => "-".into(),
        _ => text(v),
    }
}

/// `GET /apikeys`, `GET /usageplans/{id}/keys`: ID, NAME, ENABLED, SOURCE,
/// PLANS, CREATED, and VALUE when the values were asked for.
pub fn format_keys(v: &Value) -> String {
    let items = v["items"].as_array().map_or(&[][..], Vec::as_slice);
    let values = items.iter().any(|k| k.get("value").is_some());
    let mut headers = vec!["ID", "NAME", "ENABLED", "SOURCE", "PLANS", "CREATED"];
    if values {
        headers.push("VALUE");
    }
    list(v, &headers, |k| {
        let mut row = vec![
            text(&k["id"]),
            text(&k["name"]),
            enabled(&k["enabled"]),
            text(&k["source"]),
            joined(&k["usage_plan_ids"]),
            time(&k["created_at"]),
        ];
        if values {
            row.push(text(&k["value"]));
        }
        row
    })
}

/// `GET /apikeys/{id}`: its fields.
pub fn format_key(v: &Value) -> String {
    let mut pairs = vec![
        ("id", text(&v["id"])),
        ("name", text(&v["name"])),
        ("description", or_dash(&v["description"])),
        ("enabled", enabled(&v["enabled"])),
        ("source", text(&v["source"])),
        ("created", time(&v["created_at"])),
        ("plans", joined(&v["usage_plan_ids"])),
    ];
    if v.get("value").is_some() {
        pairs.push(("value", text(&v["value"])));
    }
    fields(&pairs)
}

/// `keys create`: the id and the value, which is shown this once.
pub fn format_key_created(v: &Value) -> String {
    format!(
        "created {}, {}, plans: {}\n\
         value: {}\n\
         note: the value is shown this once; other commands leave it out unless asked \
         (keys get {} --include-value)\n",
        key_name(v),
        if v["enabled"].as_bool() == Some(false) {
            "disabled"
        } else {
            "enabled"
        },
        joined(&v["usage_plan_ids"]),
        text(&v["value"]),
        text(&v["id"]),
    )
}

/// `keys import`: how many, and the keys (without their values).
pub fn format_imported(v: &Value) -> String {
    let n = count(&v["items"]);
    let mut out = format!("imported {n} key{}\n", if n == 1 { "" } else { "s" });
    if n > 0 {
        out.push_str(&list(v, &["ID", "NAME", "ENABLED", "PLANS"], |k| {
            vec![
                text(&k["id"]),
                text(&k["name"]),
                enabled(&k["enabled"]),
                joined(&k["usage_plan_ids"]),
            ]
        }));
    }
    out
}

/// A `{rate, burst}` limit: `10/s, burst 20`, or `none`.
fn limit_summary(l: &Value) -> String {
    if l.is_null() {
        return "none".into();
    }
    format!("{}/s, burst {}", text(&l["rate"]), text(&l["burst"]))
}

/// A quota: `1000 per DAY` (`, 10 off the first period`), or `none`.
fn quota_summary(q: &Value) -> String {
    if q.is_null() {
        return "none".into();
    }
    let mut s = format!("{} per {}", text(&q["limit"]), text(&q["period"]));
    if q["offset"].as_u64().is_some_and(|o| o > 0) {
        let _ = write!(s, ", {} off the first period", text(&q["offset"]));
    }
    s
}

/// A plan's stages as `api:stage,...`.
fn plan_stages(p: &Value) -> String {
    match p["stages"].as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|s| format!("{}:{}", text(&s["api"]), text(&s["stage"])))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

/// One line for a plan after a change: `plan ID (NAME): throttle ...,
/// quota ..., stages ..., N keys`.
fn plan_line(p: &Value) -> String {
    let keys = count(&p["key_ids"]);
    format!(
        "plan {} ({}): throttle {}, quota {}, stages {}, {keys} key{}\n",
        text(&p["id"]),
        text(&p["name"]),
        limit_summary(&p["throttle"]),
        quota_summary(&p["quota"]),
        plan_stages(p),
        if keys == 1 { "" } else { "s" }
    )
}

/// `GET /usageplans`: ID, NAME, SOURCE, THROTTLE, QUOTA, STAGES, KEYS.
pub fn format_plans(v: &Value) -> String {
    list(
        v,
        &[
            "ID", "NAME", "SOURCE", "THROTTLE", "QUOTA", "STAGES", "KEYS",
        ],
        |p| {
            vec![
                text(&p["id"]),
                text(&p["name"]),
                text(&p["source"]),
                limit_summary(&p["throttle"]),
                quota_summary(&p["quota"]),
                plan_stages(p),
                count(&p["key_ids"]).to_string(),
            ]
        },
    )
}

/// `GET /usageplans/{id}`: its fields, stages (with route throttles) and
/// keys.
pub fn format_plan(v: &Value) -> String {
    let stages = v["stages"].as_array().map_or(&[][..], Vec::as_slice);
    let mut out = fields(&[
        ("id", text(&v["id"])),
        ("name", text(&v["name"])),
        ("description", or_dash(&v["description"])),
        ("source", text(&v["source"])),
        ("created", time(&v["created_at"])),
        ("throttle", limit_summary(&v["throttle"])),
        ("quota", quota_summary(&v["quota"])),
        ("stages", stages.len().to_string()),
        ("keys", count(&v["key_ids"]).to_string()),
    ]);
    // The keys line goes after the stages' lines, aligned with the rest.
    let keys_line = out.split_off(out.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1));
    for s in stages {
        let _ = writeln!(out, "  {}:{}", text(&s["api"]), text(&s["stage"]));
        if let Some(routes) = s["route_throttle"].as_object() {
            for (route, l) in routes {
                let _ = writeln!(out, "    {}: {}", clean(route), limit_summary(l));
            }
        }
    }
    out.push_str(&keys_line);
    for k in v["key_ids"].as_array().map_or(&[][..], Vec::as_slice) {
        let _ = writeln!(out, "  {}", text(k));
    }
    out
}

/// `GET /usageplans/{id}/usage`: KEY, DATE, USED, REMAINING (`-` without
/// a quota), one row per key per day.
pub fn format_usage(v: &Value) -> String {
    use crate::throttle::quota::{format_day, parse_day};
    let start = v["startDate"].as_str().and_then(parse_day);
    let mut rows = Vec::new();
    if let Some(items) = v["items"].as_object() {
        for (key, days) in items {
            for (i, d) in days
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .enumerate()
            {
                let date = start.map_or_else(|| "-".into(), |s| format_day(s + i as u64));
                rows.push(vec![clean(key), date, text(&d[0]), text(&d[1])]);
            }
        }
    }
    let mut out = if rows.is_empty() {
        "(none)\n".to_string()
    } else {
        table(&["KEY", "DATE", "USED", "REMAINING"], &rows)
    };
    if let Some(p) = v["position"].as_str() {
        let _ = writeln!(out, "more: add --position {} for the next page", clean(p));
    }
    out
}

/// `GET /usageplans/{plan}/keys/{key}/usage`: the current quota period.
pub fn format_quota(v: &Value) -> String {
    fields(&[
        ("plan", text(&v["usage_plan_id"])),
        ("key", text(&v["key_id"])),
        ("quota", quota_summary(&v["quota"])),
        (
            "period",
            format!(
                "{} until {} (UTC)",
                text(&v["period_start"]),
                text(&v["period_end"])
            ),
        ),
        ("allowance", text(&v["allowance"])),
        ("used", text(&v["used"])),
        ("remaining", text(&v["remaining"])),
    ])
}

/// `quota --remaining`: one line.
pub fn format_quota_set(v: &Value) -> String {
    format!(
        "key {} of plan {}: {} remaining until {} (UTC); allowance {}, used {}\n",
        text(&v["key_id"]),
        text(&v["usage_plan_id"]),
        text(&v["remaining"]),
        text(&v["period_end"]),
        text(&v["allowance"]),
        text(&v["used"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    fn parse(args: &[&str]) -> Result<AdminArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("admin").chain(args.iter().copied())).map(|c| c.admin)
    }

    fn call_of(args: &[&str]) -> Result<Call, String> {
        call(&parse(args).expect("arguments parse").command)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_go_before_or_after_the_command() {
        let a = parse(&["--socket", "/s", "stages", "list", "demo", "--json"]).unwrap();
        assert!(a.json);
        assert_eq!(a.socket.as_deref(), Some(Path::new("/s")));
        let a = parse(&["status", "--config", "c.toml"]).unwrap();
        assert_eq!(a.config.as_deref(), Some(Path::new("c.toml")));
    }

    #[test]
    fn conflicting_or_incomplete_gateway_options_are_refused() {
        assert!(parse(&["--socket", "/s", "--config", "c", "status"]).is_err());
        assert!(parse(&["--url", "http://127.0.0.1:1", "status"]).is_err());
        assert!(parse(&["--token-file", "t", "status"]).is_err());
        assert!(parse(&[
            "--socket",
            "/s",
            "--url",
            "http://127.0.0.1:1",
            "--token-file",
            "t",
            "status"
        ])
        .is_err());
        assert!(parse(&["--url", "http://127.0.0.1:1", "--token-file", "t", "status"]).is_ok());
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        assert!(parse(&["stages", "set", "demo", "prod", "--var", "novalue"]).is_err());
        assert!(parse(&["stages", "set", "demo", "prod", "--var", "=x"]).is_err());
        assert!(parse(&["stages", "set", "demo", "prod", "--cache", "maybe"]).is_err());
        assert!(parse(&["canary", "set", "demo", "prod", "--use-stage-cache", "yes"]).is_err());
        assert!(parse(&["deployments", "show", "demo", "x"]).is_err());
        assert!(parse(&["stages", "show", "", "prod"]).is_err());
        assert!(
            parse(&["cache", "drop", "demo", "prod"]).is_err(),
            "--path is required"
        );
    }

    #[test]
    fn encode_keeps_only_unreserved_characters() {
        assert_eq!(encode("prod-1.a_b~"), "prod-1.a_b~");
        assert_eq!(encode("a/b c+d%é?&="), "a%2Fb%20c%2Bd%25%C3%A9%3F%26%3D");
        assert_eq!(encode(""), "");
    }

    #[test]
    fn simple_commands_map_to_their_endpoints() {
        let c = call_of(&["status"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str(), c.body),
            ("GET", "/status", None)
        );
        let c = call_of(&["reload"]).unwrap();
        assert_eq!((c.method, c.path.as_str()), ("POST", "/reload"));
        let c = call_of(&["apis"]).unwrap();
        assert_eq!(c.path, "/apis");
        let c = call_of(&[
            "deployments",
            "list",
            "my api",
            "--limit",
            "5",
            "--position",
            "10",
        ])
        .unwrap();
        assert_eq!(c.path, "/apis/my%20api/deployments?limit=5&position=10");
        let c = call_of(&["deployments", "show", "demo", "7"]).unwrap();
        assert_eq!(c.path, "/apis/demo/deployments/7");
        let c = call_of(&["stages", "show", "demo", "a/b"]).unwrap();
        assert_eq!(c.path, "/apis/demo/stages/a%2Fb");
        let c = call_of(&["canary", "promote", "demo", "prod"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str()),
            ("POST", "/apis/demo/stages/prod/canary/promote")
        );
        let c = call_of(&["canary", "remove", "demo", "prod"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str()),
            ("DELETE", "/apis/demo/stages/prod/canary")
        );
        let c = call_of(&["cache", "stats", "demo", "prod"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str()),
            ("GET", "/apis/demo/stages/prod/cache")
        );
        let c = call_of(&["cache", "flush", "demo", "prod"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str()),
            ("DELETE", "/apis/demo/stages/prod/cache/data")
        );
    }

    #[test]
    fn deployments_create_sends_description_and_stage() {
        let c = call_of(&[
            "deployments",
            "create",
            "demo",
            "--description",
            "v2",
            "--stage",
            "prod",
        ])
        .unwrap();
        assert_eq!(
            (c.method, c.path.as_str()),
            ("POST", "/apis/demo/deployments")
        );
        assert_eq!(c.body, Some(json!({"description": "v2", "stage": "prod"})));
        let c = call_of(&["deployments", "create", "demo"]).unwrap();
        assert_eq!(c.body, Some(json!({})));
    }

    #[test]
    fn stages_set_builds_the_patch() {
        let c = call_of(&[
            "stages",
            "set",
            "demo",
            "prod",
            "--deployment",
            "3",
            "--var",
            "env=a=b",
            "--var",
            "empty=",
            "--unset-var",
            "old",
            "--cache",
            "on",
            "--cache-capacity",
            "0.5",
            "--cache-ttl",
            "60",
        ])
        .unwrap();
        assert_eq!(
            (c.method, c.path.as_str()),
            ("PATCH", "/apis/demo/stages/prod")
        );
        assert_eq!(
            c.body,
            Some(json!({
                "deployment_id": 3,
                "variables": {"env": "a=b", "empty": "", "old": null},
                "cache": {"enabled": true, "capacity": "0.5", "ttl_seconds": 60},
            }))
        );
        let c = call_of(&["stages", "set", "demo", "prod", "--cache", "off"]).unwrap();
        assert_eq!(c.body, Some(json!({"cache": {"enabled": false}})));
    }

    #[test]
    fn a_change_of_nothing_or_a_contradiction_is_refused() {
        let e = call_of(&["stages", "set", "demo", "prod"]).unwrap_err();
        assert!(e.starts_with("nothing to change"), "{e}");
        let e = call_of(&["canary", "set", "demo", "prod"]).unwrap_err();
        assert!(e.starts_with("nothing to change"), "{e}");
        let e = call_of(&[
            "stages",
            "set",
            "demo",
            "prod",
            "--var",
            "a=1",
            "--unset-var",
            "a",
        ])
        .unwrap_err();
        assert!(e.contains("both set and unset"), "{e}");
    }

    #[test]
    fn canary_set_builds_the_body() {
        let c = call_of(&[
            "canary",
            "set",
            "demo",
            "prod",
            "--percent",
            "12.5",
            "--deployment",
            "4",
            "--override",
            "env=canary",
            "--unset-override",
            "x",
            "--use-stage-cache",
            "true",
        ])
        .unwrap();
        assert_eq!(
            (c.method, c.path.as_str()),
            ("PUT", "/apis/demo/stages/prod/canary")
        );
        assert_eq!(
            c.body,
            Some(json!({
                "percent": 12.5,
                "deployment_id": 4,
                "variable_overrides": {"env": "canary", "x": null},
                "use_stage_cache": true,
            }))
        );
    }

    #[test]
    fn cache_drop_encodes_its_query() {
        let c = call_of(&[
            "cache",
            "drop",
            "demo",
            "prod",
            "--path",
            "/items/1 2",
            "--method",
            "get",
            "--query",
            "a=1&b=+",
            "--header",
            "X-Lang=en us",
            "--canary",
        ])
        .unwrap();
        assert_eq!(c.method, "DELETE");
        assert_eq!(
            c.path,
            "/apis/demo/stages/prod/cache/entries?method=get&path=%2Fitems%2F1%202\
             &query=a%3D1%26b%3D%2B&header.X-Lang=en%20us&canary=true"
        );
        let c = call_of(&["cache", "drop", "demo", "prod", "--path", "/x"]).unwrap();
        assert_eq!(c.path, "/apis/demo/stages/prod/cache/entries?path=%2Fx");
    }

    #[test]
    fn urls_must_be_plain_http_to_loopback() {
        assert_eq!(
            parse_url("http://127.0.0.1:9901").unwrap(),
            "127.0.0.1:9901".parse().unwrap()
        );
        assert_eq!(parse_url("http://127.0.0.1:9901/").unwrap().port(), 9901);
        assert_eq!(
            parse_url("http://[::1]:80").unwrap(),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            parse_url("http://localhost:5").unwrap(),
            "127.0.0.1:5".parse().unwrap()
        );
        assert!(parse_url("https://127.0.0.1:1")
            .unwrap_err()
            .contains("plain http"));
        assert!(parse_url("http://10.0.0.1:1")
            .unwrap_err()
            .contains("loopback only"));
        assert!(parse_url("http://127.0.0.1:1/status")
            .unwrap_err()
            .contains("without a path"));
        assert!(parse_url("http://127.0.0.1").is_err());
        assert!(parse_url("http://example.com:80").is_err());
    }

    #[test]
    fn times_are_utc_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_704_067_199), "2023-12-31T23:59:59Z");
        assert_eq!(iso8601(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn small_formatters() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(3725), "1h 2m 5s");
        assert_eq!(duration(120), "2m");
        assert_eq!(size(64 << 20), "64 MiB");
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(size(1000), "1000 bytes");
        assert_eq!(text(&json!(10.0)), "10");
        assert_eq!(text(&json!(12.5)), "12.5");
        assert_eq!(text(&Value::Null), "-");
        assert_eq!(clean("a\x1b[31mb\nc"), "a [31mb c");
        assert_eq!(truncate("abcdef", 5), "ab...");
        assert_eq!(truncate("abc", 5), "abc");
    }

    #[test]
    fn error_replies_give_message_field_and_status() {
        let body = br#"{"error":"invalid_value","message":"percent 150 is not between 0 and 100","field":"percent"}"#;
        assert_eq!(
            error_message(400, body),
            "percent 150 is not between 0 and 100 (field: percent) [HTTP 400 invalid_value]"
        );
        let body = br#"{"error":"not_found","message":"no api \"x\" in the configuration"}"#;
        assert_eq!(
            error_message(404, body),
            "no api \"x\" in the configuration [HTTP 404 not_found]"
        );
        assert_eq!(error_message(502, b""), "the server answered HTTP 502");
        let body = br#"{"error":"invalid_config","message":"c.toml:3: bad\n  fix: this\u001b[2J"}"#;
        assert_eq!(
            error_message(400, body),
            "c.toml:3: bad\n  fix: this [2J [HTTP 400 invalid_config]"
        );
        assert_eq!(
            error_message(500, b"oops\n"),
            "the server answered HTTP 500: oops"
        );
    }

    #[test]
    fn deployments_are_a_table_with_a_next_page_hint() {
        let v = json!({
            "items": [
                {"id": 12, "api": "demo", "description": "roll\nforward", "created_at": 1_704_067_199u64,
                 "routes": ["GET /a", "GET /b"]},
                {"id": 3, "api": "demo", "description": "", "created_at": 0, "routes": []},
            ],
            "position": "2",
        });
        assert_eq!(
            format_deployments(&v),
            "ID  CREATED               DESCRIPTION   ROUTES\n\
             12  2023-12-31T23:59:59Z  roll forward  2\n\
             3   1970-01-01T00:00:00Z  -             0\n\
             more: add --position 2 for the next page\n"
        );
        assert_eq!(format_deployments(&json!({"items": []})), "(none)\n");
    }

    fn prod() -> Value {
        json!({
            "api": "demo", "name": "prod", "auto_deploy": false, "source": "state",
            "deployment_id": 2, "variables": {"env": "production"},
            "cache": {"enabled": true, "capacity_bytes": 67_108_864u64, "capacity_class": null, "ttl_seconds": 60},
            "canary": {"deployment_id": 3, "percent": 12.5, "variable_overrides": {"env": "canary"},
                       "use_stage_cache": false},
            "updated_at": 0, "cache_entries": 4,
        })
    }

    fn dev() -> Value {
        json!({
            "api": "demo", "name": "dev", "auto_deploy": true, "source": "file", "deployment_id": null,
            "variables": {}, "cache": null, "canary": null, "updated_at": null,
        })
    }

    #[test]
    fn stages_table() {
        assert_eq!(
            format_stages(&json!({"items": [prod(), dev()]})),
            "NAME  SOURCE  DEPLOYMENT  CANARY     CACHE\n\
             prod  state   2           3 @ 12.5%  64 MiB, ttl 60s\n\
             dev   file    -           -          off\n"
        );
    }

    #[test]
    fn one_stage() {
        assert_eq!(
            format_stage(&prod()),
            "api:        demo\n\
             stage:      prod\n\
             source:     state (pinned: auto_deploy = false)\n\
             deployment: 2\n\
             updated:    1970-01-01T00:00:00Z\n\
             cache:      64 MiB, ttl 60s, 4 entries\n\
             canary:     3 @ 12.5%, does not use the stage cache\n\
             variables:  1\n\
             \x20 env = production\n\
             overrides:  1\n\
             \x20 env = canary\n"
        );
        let out = format_stage(&dev());
        assert!(out.contains("source:     file (auto_deploy"), "{out}");
        assert!(out.contains("canary:     -\n"), "{out}");
        assert!(!out.contains("overrides"), "{out}");
    }

    #[test]
    fn actions_are_one_line() {
        let mut v = prod();
        assert_eq!(
            format_stage_updated(&v),
            "updated stage prod: deployment 2, 1 variable, cache 64 MiB, ttl 60s\n"
        );
        assert_eq!(
            format_canary_set(&v),
            "canary of stage prod: deployment 3 @ 12.5%, 1 override, does not use the stage cache\n"
        );
        v["canary"]["percent"] = json!(0.0);
        assert!(format_canary_promoted(&v).contains("the canary stays at 0% until removed"));
        assert_eq!(
            format_canary_removed(&dev()),
            "removed the canary of stage dev; it serves deployment -\n"
        );
        let d = json!({"id": 3});
        assert_eq!(format_created(&d, None, None), "deployment 3 created\n");
        assert_eq!(
            format_created(
                &d,
                Some("prod"),
                Some(&json!({"deployment_id": 3, "canary": null}))
            ),
            "deployment 3 created; stage prod now serves it\n"
        );
        assert_eq!(
            format_created(&d, Some("prod"), Some(&prod())),
            "deployment 3 created; the canary of stage prod now serves it\n"
        );
        let cmd = parse(&["cache", "flush", "demo", "prod"]).unwrap().command;
        assert_eq!(
            render(&cmd, &Value::Null, None),
            "flushed the cache of stage prod\n"
        );
    }

    #[test]
    fn cache_drop_says_whether_there_was_an_entry() {
        let AdminCommand::Cache(CacheCommand::Drop(d)) = parse(&[
            "cache", "drop", "demo", "prod", "--path", "/items/1", "--query", "lang=en",
        ])
        .unwrap()
        .command
        else {
            panic!("not cache drop")
        };
        assert_eq!(
            format_dropped(&json!({"removed": true}), &d),
            "dropped the cache entry for GET /items/1?lang=en from stage prod\n"
        );
        assert_eq!(
            format_dropped(&json!({"removed": false}), &d),
            "stage prod had no cache entry for GET /items/1?lang=en\n"
        );
    }

    #[test]
    fn status_and_reload_and_cache_stats() {
        let v = json!({
            "version": "0.1.0", "uptime_seconds": 61, "config": "c.toml", "state": null,
            "workers": [{"worker": 0, "connections": 2, "pooled_buffers": 5, "parked": 1}],
        });
        assert_eq!(
            format_status(&v),
            "version:    0.1.0\n\
             uptime:     1m 1s\n\
             config:     c.toml\n\
             state:      -\n\
             workers:    1\n\
             \x20 worker 0: 2 connections, 5 pooled buffers, 1 parks\n"
        );
        let v = json!({"reloaded": true, "warnings": ["w1"], "restart_required": ["[server]"], "pinned_stages": []});
        assert_eq!(
            format_reload(&v),
            "reloaded the configuration\nwarning: w1\n[server] changed: it applies at the next start\n"
        );
        let v = json!({
            "settings": {"enabled": true, "capacity_bytes": 1, "capacity_class": "0.5", "ttl_seconds": 300},
            "hits": 3, "misses": 1, "evictions": 0, "rejected": 0, "entries": 1, "bytes": 10, "capacity": 500,
        });
        let out = format_cache_stats(&v);
        assert!(out.starts_with("cache:      0.5 GB, ttl 300s\n"), "{out}");
        assert!(out.contains("hit ratio:  75.0%\n"), "{out}");
        assert!(out.contains("bytes:      10 of 500\n"), "{out}");
    }

    #[test]
    fn stats_table() {
        let v = json!({"enabled": true, "series": [
            {"api": "", "stage": "", "route": null, "canary": false, "count": 2, "2xx": 0,
             "3xx": 0, "4xx": 2, "5xx": 0, "cache_hits": 0, "cache_misses": 0, "throttled": 0,
             "quota_exceeded": 0, "latency_ms": {"p50": 0.05, "p90": 0.05, "p99": 0.05,
             "p99.9": 0.05, "max": 0.05, "count": 2}, "integration_latency_ms": null},
            {"api": "shop", "stage": "prod", "route": "GET /a", "canary": true, "count": 10,
             "2xx": 9, "3xx": 0, "4xx": 0, "5xx": 1, "cache_hits": 3, "cache_misses": 1,
             "throttled": 0, "quota_exceeded": 0, "latency_ms": {"p50": 1.5, "p90": 2.0,
             "p99": 250.4, "p99.9": 250.4, "max": 251.0, "count": 10},
             "integration_latency_ms": {"p99": 249.0}},
        ]});
        let out = format_stats(&v);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("SERIES"), "{out}");
        assert!(lines[1].starts_with("(no stage)"), "{out}");
        assert!(lines[2].starts_with("shop/prod GET /a (canary)"), "{out}");
        assert!(lines[2].contains(" 3/1 "), "{out}");
        assert!(
            lines[2].trim_end().ends_with("250   250    251   249"),
            "{out}"
        );
        assert_eq!(
            format_stats(&json!({"enabled": false, "series": []})),
            "(metrics are off: [metrics] enabled = false)\n"
        );
    }

    #[test]
    fn apis_table() {
        let v = json!({"items": [{
            "name": "demo", "hosts": [], "routes": ["GET /a"], "deployments": 2,
            "stages": [{"name": "prod", "auto_deploy": false, "deployment_id": 2},
                       {"name": "dev", "auto_deploy": true, "deployment_id": null}],
        }]});
        assert_eq!(
            format_apis(&v),
            "NAME  HOSTS  STAGES      ROUTES  DEPLOYMENTS\n\
             demo  *      prod@2,dev  1       2\n"
        );
    }

    #[test]
    fn keys_commands_map_to_their_endpoints() {
        let c = call_of(&["keys", "list"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str(), c.pages),
            ("GET", "/apikeys?limit=500", true)
        );
        let c = call_of(&["keys", "list", "--include-values", "--name", "a b"]).unwrap();
        assert_eq!(c.path, "/apikeys?limit=500&include_values=true&name=a%20b");
        let c = call_of(&["keys", "get", "k1", "--include-value"]).unwrap();
        assert_eq!(c.path, "/apikeys/k1?include_value=true");
        assert!(!c.pages);
        let c = call_of(&[
            "keys",
            "create",
            "alice",
            "--value",
            "v",
            "--description",
            "d",
            "--disabled",
            "--plan",
            "p1",
            "--plan",
            "p2",
        ])
        .unwrap();
        assert_eq!((c.method, c.path.as_str()), ("POST", "/apikeys"));
        assert_eq!(
            c.body,
            Some(
                json!({"name": "alice", "value": "v", "description": "d", "enabled": false,
                        "usage_plan_ids": ["p1", "p2"]})
            )
        );
        let c = call_of(&["keys", "create", "bob"]).unwrap();
        assert_eq!(c.body, Some(json!({"name": "bob"})));
        let c = call_of(&["keys", "disable", "k/1"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str(), c.body),
            ("PATCH", "/apikeys/k%2F1", Some(json!({"enabled": false})))
        );
        let c = call_of(&["keys", "enable", "k1"]).unwrap();
        assert_eq!(c.body, Some(json!({"enabled": true})));
        let c = call_of(&["keys", "rename", "k1", "new"]).unwrap();
        assert_eq!(c.body, Some(json!({"name": "new"})));
        let c = call_of(&["keys", "delete", "k1"]).unwrap();
        assert_eq!((c.method, c.path.as_str()), ("DELETE", "/apikeys/k1"));
        let c = call_of(&["keys", "import", "-"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str(), c.body, c.upload.as_deref()),
            (
                "POST",
                "/apikeys?mode=import&format=csv",
                None,
                Some(Path::new("-"))
            )
        );
    }

    #[test]
    fn plans_commands_build_their_bodies() {
        let c = call_of(&[
            "plans",
            "create",
            "gold",
            "--rate",
            "10.5",
            "--burst",
            "20",
            "--quota",
            "1000",
            "--period",
            "week",
            "--offset",
            "5",
            "--stage",
            "shop:prod",
            "--stage",
            "shop:dev",
            "--route-throttle",
            "shop:prod:GET /items/{id}=1/2",
        ])
        .unwrap();
        assert_eq!((c.method, c.path.as_str()), ("POST", "/usageplans"));
        assert_eq!(
            c.body,
            Some(json!({
                "name": "gold",
                "throttle": {"rate": 10.5, "burst": 20},
                "quota": {"limit": 1000, "period": "WEEK", "offset": 5},
                "stages": [
                    {"api": "shop", "stage": "prod",
                     "route_throttle": {"GET /items/{id}": {"rate": 1.0, "burst": 2}}},
                    {"api": "shop", "stage": "dev"},
                ],
            }))
        );
        let c = call_of(&[
            "plans",
            "update",
            "p1",
            "--no-quota",
            "--no-throttle",
            "--name",
            "n",
        ])
        .unwrap();
        assert_eq!((c.method, c.path.as_str()), ("PATCH", "/usageplans/p1"));
        assert_eq!(
            c.body,
            Some(json!({"name": "n", "quota": null, "throttle": null}))
        );
        let c = call_of(&["plans", "update", "p1", "--no-stages"]).unwrap();
        assert_eq!(c.body, Some(json!({"stages": []})));
        let e = call_of(&["plans", "update", "p1"]).unwrap_err();
        assert!(e.starts_with("nothing to change"), "{e}");
        let e = call_of(&[
            "plans",
            "create",
            "x",
            "--stage",
            "a:b",
            "--route-throttle",
            "a:c:GET /=1/1",
        ])
        .unwrap_err();
        assert!(e.contains("stage a:c is not given with --stage"), "{e}");
        let c = call_of(&["plans", "attach", "p1", "k1"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str(), c.body),
            ("POST", "/usageplans/p1/keys", Some(json!({"key_id": "k1"})))
        );
        let c = call_of(&["plans", "detach", "p1", "k1"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str()),
            ("DELETE", "/usageplans/p1/keys/k1")
        );
        let c = call_of(&["plans", "keys", "p1"]).unwrap();
        assert_eq!(
            (c.path.as_str(), c.pages),
            ("/usageplans/p1/keys?limit=500", true)
        );
        let c = call_of(&["plans", "list"]).unwrap();
        assert_eq!(c.path, "/usageplans?limit=500");
        assert_eq!(
            next_page(&c, "a b").path,
            "/usageplans?limit=500&position=a%20b"
        );
    }

    #[test]
    fn plan_arguments_are_checked_before_sending() {
        let plan = |extra: &[&str]| {
            let mut a = vec!["plans", "create", "x"];
            a.extend_from_slice(extra);
            parse(&a)
        };
        assert!(plan(&["--quota", "5", "--period", "YEAR"]).is_err());
        assert!(plan(&["--quota", "5"]).is_err(), "--quota needs --period");
        assert!(
            plan(&["--period", "DAY"]).is_err(),
            "--period needs --quota"
        );
        assert!(plan(&["--offset", "1"]).is_err(), "--offset needs --quota");
        assert!(plan(&["--rate", "5"]).is_err(), "--rate needs --burst");
        assert!(plan(&["--stage", "nocolon"]).is_err());
        assert!(plan(&["--stage", ":x"]).is_err());
        assert!(
            plan(&["--route-throttle", "a:b:GET /=1/1"]).is_err(),
            "needs --stage"
        );
        for bad in [
            "a:b:GET /",
            "a:b=1/1",
            "a:b:GET /=x/1",
            "a:b:GET /=1/-1",
            "a:b:GET /=-1/1",
        ] {
            assert!(
                plan(&["--stage", "a:b", "--route-throttle", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(parse(&[
            "plans",
            "update",
            "p",
            "--no-quota",
            "--quota",
            "1",
            "--period",
            "DAY"
        ])
        .is_err());
        assert!(parse(&[
            "plans",
            "update",
            "p",
            "--no-throttle",
            "--rate",
            "1",
            "--burst",
            "1"
        ])
        .is_err());
        assert_eq!(
            route_throttle("a:b:GET /x:y=2.5/3").unwrap(),
            RouteThrottle {
                api: "a".into(),
                stage: "b".into(),
                route: "GET /x:y".into(),
                rate: 2.5,
                burst: 3
            }
        );
    }

    #[test]
    fn usage_and_quota_map_to_their_endpoints() {
        let c = call_of(&["usage", "p1", "--from", "2026-01-01", "--to", "2026-01-31"]).unwrap();
        assert_eq!(
            (c.path.as_str(), c.pages),
            (
                "/usageplans/p1/usage?startDate=2026-01-01&endDate=2026-01-31&limit=500",
                true
            )
        );
        let c = call_of(&[
            "usage",
            "p1",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-01",
            "--key",
            "k1",
            "--limit",
            "2",
            "--position",
            "k0",
        ])
        .unwrap();
        assert_eq!(
            (c.path.as_str(), c.pages),
            (
                "/usageplans/p1/usage?startDate=2026-01-01&endDate=2026-01-01&keyId=k1&limit=2\
                 &position=k0",
                false
            )
        );
        assert!(parse(&["usage", "p1", "--from", "2026-02-30", "--to", "2026-03-01"]).is_err());
        assert!(parse(&["usage", "p1", "--from", "2026-01-01"]).is_err());
        let c = call_of(&["quota", "p1", "k1"]).unwrap();
        assert_eq!(
            (c.method, c.path.as_str(), c.body),
            ("GET", "/usageplans/p1/keys/k1/usage", None)
        );
        let c = call_of(&["quota", "p1", "k1", "--remaining", "7"]).unwrap();
        assert_eq!((c.method, c.body), ("PATCH", Some(json!({"remaining": 7}))));
    }

    #[test]
    fn pages_merge_their_items() {
        let mut all = json!({"items": [1, 2], "position": "2"});
        merge_page(&mut all, json!({"items": [3], "position": "3"}));
        merge_page(&mut all, json!({"items": [4]}));
        assert_eq!(all, json!({"items": [1, 2, 3, 4]}));
        let mut all = json!({"usagePlanId": "p", "items": {"a": [[1, 2]]}, "position": "a"});
        merge_page(
            &mut all,
            json!({"usagePlanId": "p", "items": {"b": [[3, null]]}}),
        );
        assert_eq!(
            all,
            json!({"usagePlanId": "p", "items": {"a": [[1, 2]], "b": [[3, null]]}})
        );
    }

    fn alice() -> Value {
        json!({"id": "k1", "name": "alice", "description": "", "enabled": true, "source": "state",
               "created_at": 0, "usage_plan_ids": ["p1", "p2"]})
    }

    fn gold() -> Value {
        json!({"id": "p1", "name": "gold", "description": "", "source": "state",
               "throttle": {"rate": 10.0, "burst": 20}, "quota": {"limit": 1000, "period": "DAY", "offset": 0},
               "stages": [{"api": "shop", "stage": "prod", "route_throttle": {"GET /a": {"rate": 1.5, "burst": 2}}}],
               "key_ids": ["k1"], "created_at": 0})
    }

    #[test]
    fn keys_tables_and_lines() {
        let mut bob = alice();
        bob["id"] = json!("k2");
        bob["name"] = json!("bob");
        bob["enabled"] = json!(false);
        bob["usage_plan_ids"] = json!([]);
        assert_eq!(
            format_keys(&json!({"items": [alice(), bob.clone()]})),
            "ID  NAME   ENABLED  SOURCE  PLANS  CREATED\n\
             k1  alice  yes      state   p1,p2  1970-01-01T00:00:00Z\n\
             k2  bob    no       state   -      1970-01-01T00:00:00Z\n"
        );
        bob["value"] = json!("secret-value");
        assert!(format_keys(&json!({"items": [bob.clone()]})).ends_with(
            "  VALUE\nk2  bob   no       state   -      1970-01-01T00:00:00Z  secret-value\n"
        ));
        assert_eq!(format_keys(&json!({"items": []})), "(none)\n");
        assert_eq!(
            format_key(&bob),
            "id:          k2\n\
             name:        bob\n\
             description: -\n\
             enabled:     no\n\
             source:      state\n\
             created:     1970-01-01T00:00:00Z\n\
             plans:       -\n\
             value:       secret-value\n"
        );
        let mut created = alice();
        created["value"] = json!("v".repeat(40));
        let out = format_key_created(&created);
        assert!(out.starts_with("created key k1 (alice), enabled, plans: p1,p2\nvalue: vvvv"));
        assert!(out.contains("shown this once"), "{out}");
        assert_eq!(
            format_imported(&json!({"ids": ["k1"], "items": [alice()]})),
            "imported 1 key\nID  NAME   ENABLED  PLANS\nk1  alice  yes      p1,p2\n"
        );
        let cmd = parse(&["keys", "disable", "k1"]).unwrap().command;
        assert!(render(&cmd, &alice(), None).starts_with("disabled key k1 (alice): "));
    }

    #[test]
    fn plans_tables_and_lines() {
        assert_eq!(
            format_plans(&json!({"items": [gold()]})),
            "ID  NAME  SOURCE  THROTTLE        QUOTA         STAGES     KEYS\n\
             p1  gold  state   10/s, burst 20  1000 per DAY  shop:prod  1\n"
        );
        assert_eq!(
            format_plan(&gold()),
            "id:          p1\n\
             name:        gold\n\
             description: -\n\
             source:      state\n\
             created:     1970-01-01T00:00:00Z\n\
             throttle:    10/s, burst 20\n\
             quota:       1000 per DAY\n\
             stages:      1\n\
             \x20 shop:prod\n\
             \x20   GET /a: 1.5/s, burst 2\n\
             keys:        1\n\
             \x20 k1\n"
        );
        let mut p = gold();
        p["throttle"] = Value::Null;
        p["quota"] = json!({"limit": 5, "period": "MONTH", "offset": 2});
        p["stages"] = json!([]);
        p["key_ids"] = json!([]);
        let cmd = parse(&["plans", "update", "p1", "--no-throttle"])
            .unwrap()
            .command;
        assert_eq!(
            render(&cmd, &p, None),
            "updated plan p1 (gold): throttle none, quota 5 per MONTH, 2 off the first period, \
             stages -, 0 keys\n"
        );
    }

    #[test]
    fn usage_and_quota_output() {
        let v = json!({"usagePlanId": "p1", "startDate": "2026-02-28", "endDate": "2026-03-01",
                       "items": {"k1": [[3, 0], [1, 4]], "k22": [[0, null], [12, null]]},
                       "position": "k22"});
        assert_eq!(
            format_usage(&v),
            "KEY  DATE        USED  REMAINING\n\
             k1   2026-02-28  3     0\n\
             k1   2026-03-01  1     4\n\
             k22  2026-02-28  0     -\n\
             k22  2026-03-01  12    -\n\
             more: add --position k22 for the next page\n"
        );
        assert_eq!(format_usage(&json!({"items": {}})), "(none)\n");
        let q = json!({"usage_plan_id": "p1", "key_id": "k1",
                       "quota": {"limit": 3, "period": "DAY", "offset": 0},
                       "period_start": "2026-03-01", "period_end": "2026-03-02",
                       "allowance": 5, "used": 3, "remaining": 2});
        assert_eq!(
            format_quota(&q),
            "plan:       p1\n\
             key:        k1\n\
             quota:      3 per DAY\n\
             period:     2026-03-01 until 2026-03-02 (UTC)\n\
             allowance:  5\n\
             used:       3\n\
             remaining:  2\n"
        );
        assert_eq!(
            format_quota_set(&q),
            "key k1 of plan p1: 2 remaining until 2026-03-02 (UTC); allowance 5, used 3\n"
        );
    }
}
