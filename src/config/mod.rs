//! Configuration loading: reads `ringgate.toml`, checks every value and
//! every cross-reference, and hands the gateway a validated [`Config`].
//!
//! This module owns the file format, its defaults and the errors shown to
//! the person who wrote the file. It depends on no other ringgate module.
//! It is cold-path code, run once at start-up (and by `ringgate check`):
//! it favours clear messages over speed, but leaves the gateway nothing to
//! re-parse (mock bodies arrive as [`BodyPart`]s, durations as
//! [`Duration`]s, addresses as [`SocketAddr`]s).
//!
//! # The format in brief
//!
//! ```toml
//! [server]                       # all optional
//! listen = ["127.0.0.1:8080"]
//! workers = "auto"               # or 1..=1024
//! pin_workers = true
//! io_driver = "auto"             # "io_uring" | "epoll"
//! ring_entries = 4096            # power of two, 64..=32768
//! drain_timeout = "10s"
//!
//! [limits]                       # all optional; see [`Limits`]
//! max_body_bytes = "10MiB"
//! keepalive_timeout = "60s"
//!
//! [[api]]
//! name = "demo"
//! hosts = ["api.example.com"]    # omit on at most one api: it answers other hosts
//! unmatched_route = "missing_authentication_token"   # or "not_found"
//!   [[api.stage]]
//!   name = "prod"
//!   variables = { greeting = "hello" }
//!   [[api.route]]
//!   route = "GET /pets/{id}"     # or "ANY /{proxy+}" or "$default"
//!   [api.route.mock]             # exactly one integration per route
//!   status = 200
//!   headers = { "content-type" = "application/json" }
//!   body = '{"id": "{id}", "greeting": "${stageVariables.greeting}"}'
//!
//! [[domain]]
//! host = "api.example.com"       # or "*"
//!   [[domain.mapping]]
//!   base_path = "v1"             # "" maps the whole host
//!   api = "demo"
//!   stage = "prod"
//! ```
//!
//! Unknown keys anywhere are errors. An empty file is valid: defaults, and
//! no APIs (the caller should warn that nothing is served).
//!
//! # Errors
//!
//! [`load`] and [`parse`] stop at the first problem and return a
//! [`ConfigError`] that points at the offending value, names its key and
//! says how to fix it:
//!
//! ```text
//! config/ringgate.toml:12:9: api[0].route[2].route: unknown method "FETCH"
//!   fix: use one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY
//! ```
//!
//! TOML syntax errors and schema errors (unknown key, wrong type, missing
//! key) are reported the same way, with the position `toml` gives.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

mod error;
mod raw;
mod template;
mod validate;

#[cfg(test)]
mod tests;

pub use error::ConfigError;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[server]`: listeners and workers.
    pub server: ServerConfig,
    /// `[limits]`: per-request and per-connection limits.
    pub limits: Limits,
    /// `[[api]]` in file order; may be empty.
    pub apis: Vec<ApiConfig>,
    /// `[[domain]]` in file order.
    pub domains: Vec<DomainConfig>,
    /// The file name the configuration was read from (as given).
    pub source: String,
}

/// `[server]`: how the gateway listens and runs its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Addresses to listen on; port 0 lets the OS choose. Never empty.
    pub listen: Vec<SocketAddr>,
    /// Number of worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Pin worker `i` to core `i`.
    pub pin_workers: bool,
    /// Which I/O driver to use.
    pub io_driver: IoDriver,
    /// io_uring submission queue size (a power of two, 64..=32768).
    pub ring_entries: u32,
    /// How long a graceful shutdown may wait for connections to finish.
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            workers: None,
            pin_workers: true,
            io_driver: IoDriver::Auto,
            ring_entries: 4096,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// `server.io_driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring when the kernel allows it, epoll otherwise.
    Auto,
    /// io_uring only.
    IoUring,
    /// epoll only.
    Epoll,
}

/// `[limits]`: limits applied to every connection and request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest header block in bytes, request line excluded (1024..=1 MiB).
    pub max_header_bytes: usize,
    /// Most header fields in a request (1..=128).
    pub max_headers: usize,
    /// Longest request target in bytes (64..=1 MiB).
    pub max_url_bytes: usize,
    /// Largest request body in bytes (0..=1 TiB).
    pub max_body_bytes: u64,
    /// Time allowed to receive a request's headers (100ms..=1h).
    pub header_read_timeout: Duration,
    /// Idle time allowed between requests on a connection (1s..=1h).
    pub keepalive_timeout: Duration,
    /// Most open connections per worker (1..=1000000).
    pub max_connections_per_worker: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 10240,
            max_headers: 100,
            max_url_bytes: 8192,
            max_body_bytes: 10 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections_per_worker: 10000,
        }
    }
}

/// `[[api]]`: one API with its stages and routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Unique name, `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    /// Host values (lowercased, without port) answered execute-api style
    /// (`/{stage}/path`). Empty: this API answers any host not claimed
    /// otherwise (at most one API is like that).
    pub hosts: Vec<String>,
    /// What to answer when no route matches.
    pub unmatched_route: UnmatchedRoute,
    /// Stages, in file order; never empty, names unique.
    pub stages: Vec<StageConfig>,
    /// Routes, in file order; no two conflict.
    pub routes: Vec<RouteConfig>,
}

impl ApiConfig {
    /// The stage with this name.
    pub fn stage(&self, name: &str) -> Option<&StageConfig> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// `api.unmatched_route`: the answer when no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmatchedRoute {
    /// 403 `{"message":"Missing Authentication Token"}` (REST API style).
    MissingAuthenticationToken,
    /// 404 `{"message":"Not Found"}` (HTTP API style).
    NotFound,
}

/// `[[api.stage]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageConfig {
    /// Name, unique within the API, `[A-Za-z0-9_-]{1,128}`.
    pub name: String,
    /// Stage variables (at most 100).
    pub variables: BTreeMap<String, String>,
}

/// `[[api.route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The route key.
    pub key: RouteKey,
    /// What answers the route.
    pub integration: Integration,
    /// 1-based line of the `route = ...` value, for messages.
    pub line: usize,
}

/// A validated route key, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKey {
    /// `$default`: matches what no other route matches.
    Default,
    /// `METHOD /path`.
    Route {
        /// The upper-case method; `None` for `ANY`.
        method: Option<String>,
        /// The path template, e.g. `/pets/{id}` or `/files/{proxy+}`.
        path: String,
    },
}

impl RouteKey {
    /// The key as written: `"GET /pets/{id}"`, `"ANY /x"` or `"$default"`.
    pub fn as_display(&self) -> String {
        match self {
            RouteKey::Default => "$default".to_string(),
            RouteKey::Route { method, path } => {
                format!("{} {path}", method.as_deref().unwrap_or("ANY"))
            }
        }
    }
}

/// What answers a route. More kinds (`http_proxy`) will be added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Integration {
    /// `[api.route.mock]`: a fixed response.
    Mock(MockIntegration),
}

/// `[api.route.mock]`: a fixed response, its body templated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockIntegration {
    /// Status code, 200..=599.
    pub status: u16,
    /// Header names (lowercased) and values, in file order; never one the
    /// gateway owns (content-length, date, ...).
    pub headers: Vec<(String, String)>,
    /// The body template; empty for an empty body.
    pub body: Vec<BodyPart>,
}

/// A piece of a mock body template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPart {
    /// Text copied as is.
    Literal(String),
    /// `${stageVariables.NAME}`: the stage's variable (every stage of the
    /// API defines it).
    StageVariable(String),
    /// `{name}`: the value of the route's path parameter `name` (for a
    /// greedy `{proxy+}` the placeholder is `{proxy}`).
    PathParam(String),
}

/// `[[domain]]`: a custom domain name and its base path mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// Host value (lowercased, without port), or `*` for any host.
    pub host: String,
    /// Mappings, in file order; never empty, base paths unique.
    pub mappings: Vec<Mapping>,
}

/// `[[domain.mapping]]`: requests under `base_path` go to an API stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Base path without leading or trailing `/`; `""` maps the whole host.
    pub base_path: String,
    /// Name of an [`ApiConfig`].
    pub api: String,
    /// Name of a stage of that API.
    pub stage: String,
}

/// Reads and validates the configuration file at `path`. A file that
/// cannot be read gives a [`ConfigError`] with line 0.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::read(&source, &e))?;
    parse(&text, &source)
}

/// Parses and validates configuration text; `source` names it in errors
/// and in [`Config::source`].
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    let src = error::Source::new(text, source);
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    validate::build(raw, &src)
}

/// Parses a duration: a whole number and a unit, `ms`, `s`, `m` or `h`
/// (`"500ms"`, `"10s"`, `"2m"`, `"1h"`). `None` if malformed or too large.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    if split == 0 {
        return None;
    }
    let n: u64 = s[..split].parse().ok()?;
    match &s[split..] {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Parses a size in bytes: plain digits, or digits and a unit `B`, `KiB`,
/// `MiB`, `GiB` or `TiB` (`"100B"`, `"512KiB"`, `"10MiB"`). `None` if
/// malformed or too large for a `u64`.
pub fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if split == 0 {
        return None;
    }
    let n: u64 = s[..split].parse().ok()?;
    let shift = match &s[split..] {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}
