//! `ringgate admin ...`: a thin command-line client of a running gateway's
//! admin API (the endpoints of [`super::api`]), one request per command
//! over [`super::client`].
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
//! | `stages list API [--limit N] [--position P]` | `GET /apis/{api}/stages` | the API's stages: source, deployment, canary, cache |
//! | `stages show API STAGE` | `GET /apis/{api}/stages/{stage}` | one stage: deployment, variables, cache settings, canary |
//! | `stages set API STAGE [--deployment ID] [--var NAME=VALUE]... [--unset-var NAME]... [--cache on\|off] [--cache-capacity C] [--cache-ttl SECS]` | `PATCH /apis/{api}/stages/{stage}` | changes a pinned stage: rollback or roll forward, variables, cache settings (a capacity is a class in GB such as `0.5`, or a size such as `64MiB`) |
//! | `canary set API STAGE [--percent P] [--deployment ID] [--override NAME=VALUE]... [--unset-override NAME]... [--use-stage-cache true\|false]` | `PUT /apis/{api}/stages/{stage}/canary` | creates (`--percent` required) or changes a pinned stage's canary |
//! | `canary promote API STAGE` | `POST .../canary/promote` | the canary's deployment and overrides become the stage's; the canary stays, at 0 % |
//! | `canary remove API STAGE` | `DELETE .../canary` | removes the canary |
//! | `cache stats API STAGE` | `GET .../cache` | the stage cache's settings and counters |
//! | `cache flush API STAGE` | `DELETE .../cache/data` | empties the stage cache |
//! | `cache drop API STAGE --path P [--method M] [--query Q] [--header NAME=VALUE]... [--canary]` | `DELETE .../cache/entries?...` | drops the one entry that request would use (method GET unless given; `--canary` for the canary's entries) |
//!
//! Path segments and query values are percent-encoded (all but RFC 3986's
//! unreserved characters).
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
//! [`render`], [`format_status`], [`format_apis`], ... and [`error_message`].
//!
//! ## Exit codes
//! - 0: done;
//! - 1: the server refused the request; `ringgate admin: <message> (field:
//!   <field>) [HTTP <status> <code>]` on stderr;
//! - 2: the request could not be made: no socket, no answer, a
//!   configuration that does not load, a token file that cannot be read,
//!   bad arguments (as clap's usage errors).

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
    };
    Ok(match cmd {
        A::Status => get("/status".into()),
        A::Reload => Call {
            method: "POST",
            path: "/reload".into(),
            body: None,
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
                }
            }
            DeploymentsCommand::Show { api, id } => {
                get(format!("/apis/{}/deployments/{id}", encode(api)))
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
                }
            }
            CanaryCommand::Promote { api, stage } => Call {
                method: "POST",
                path: format!("{}/canary/promote", stage_path(api, stage)),
                body: None,
            },
            CanaryCommand::Remove { api, stage } => Call {
                method: "DELETE",
                path: format!("{}/canary", stage_path(api, stage)),
                body: None,
            },
        },
        A::Cache(c) => match c {
            CacheCommand::Stats { api, stage } => get(format!("{}/cache", stage_path(api, stage))),
            CacheCommand::Flush { api, stage } => Call {
                method: "DELETE",
                path: format!("{}/cache/data", stage_path(api, stage)),
                body: None,
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
                }
            }
        },
    })
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
    let body = call.body.as_ref().map(|b| b.to_string().into_bytes());
    let reply = match client::request(&endpoint, call.method, &call.path, body.as_deref()) {
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
        A::Reload => format_reload(v),
        A::Apis { .. } => format_apis(v),
        A::Deployments(DeploymentsCommand::List { .. }) => format_deployments(v),
        A::Deployments(DeploymentsCommand::Create { stage: name, .. }) => {
            format_created(v, name.as_deref(), stage)
        }
        A::Deployments(DeploymentsCommand::Show { .. }) => format_deployment(v),
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
}
