//! Configuration loading: reads `ringgate.toml`, checks every value and
//! every cross-reference, and hands the gateway a validated [`Config`].
//!
//! This module owns the file format, its defaults and the errors shown to
//! the person who wrote the file. It depends on no other ringgate module
//! but [`crate::observe::access_log`], whose parser checks log formats.
//! It is cold-path code, run once at start-up (and by `ringgate check`):
//! it favours clear messages over speed, but leaves the gateway nothing to
//! re-parse (mock bodies and proxy URIs arrive as [`BodyPart`]s,
//! durations as [`Duration`]s, addresses as [`SocketAddr`]s and
//! [`TargetAddr`]s).
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
//! health_path = "/ringgate/health"   # optional: GET answers 200 {"status":"ok"}, 503 while draining
//!
//! [metrics]                      # optional
//! enabled = true                 # per-API/stage/route counts and latency histograms
//! listen = "127.0.0.1:9464"      # a scrape listener (loopback or private only)
//!
//! [access_log]                   # optional: no access log without it
//! path = "/var/log/ringgate/access.log"   # or "-" for stdout; reopened on SIGUSR1
//! format = "clf"                 # clf | json | csv | http_api_clf | $context variables
//! queue = 1024                   # batches waiting for the writer; past it, dropped and counted
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
//!   auto_deploy = true           # default: serve this file's routes, follow reloads;
//!                                # false: serve the deployment the state store points
//!                                # at (admin socket), seeded from this file once
//!   variables = { greeting = "hello" }
//!   throttle = { rate = 100, burst = 50 }   # each route's own bucket (≤ the account)
//!   route_throttle = { "GET /pets" = { rate = 10, burst = 5 } }
//!   detailed_metrics = true      # metrics by route too (API Gateway's metricsEnabled)
//!   access_log_format = "json"   # the stage's own format, or "off"
//!     [api.stage.cache]          # optional stage cache; see "Stage cache" below
//!     enabled = true             # default true when the table is present
//!     capacity = 0.5             # GB class 0.5, 1.6, 6.1, 13.5, 28.4, 58.2, 118, 237
//!                                # (number or "1.6"), or a size "1MiB"..="1GiB"; default 0.5
//!     ttl = "300s"               # 0s..=3600s, default 300s; 0: routes without a ttl are not cached
//!     status_header = false      # add X-Cache-Status (Hit|Miss|Refresh|Bypass) and Age
//!     cache_statuses = [200, 404]    # only cache these statuses (100..=599); default all
//!     require_authorization_for_cache_control = false  # true: only authorized clients
//!                                # may refresh with Cache-Control: max-age=0
//!     unauthorized_strategy = "SUCCEED_WITH_RESPONSE_HEADER"  # or FAIL_WITH_403 |
//!                                # SUCCEED_WITHOUT_RESPONSE_HEADER
//!     authorization_header = "x-cache-token"  # required with require_...= true: a request
//!     authorization_token = "s3cret"          # is authorized when this header equals the token
//!     respect_origin_cache_control = false    # honour origin Cache-Control/Vary instead of ttl
//!     stale_if_error = "0s"      # serve expired entries this long on backend failure, 0s..=1h
//!     lock_timeout = "10s"       # concurrent misses wait for one fetch, 10ms..=60s, default 10s
//!   [[api.route]]
//!   route = "GET /pets/{id}"     # or "ANY /{proxy+}" or "$default"
//!   api_key_required = false     # true: needs an x-api-key in a plan of the stage (403)
//!   client_throttle = { rate = 5, burst = 10 }   # opt-in: a bucket per client IP address
//!                                # on this route per stage, checked first; default none
//!   [api.route.mock]             # exactly one integration per route
//!   status = 200
//!   headers = { "content-type" = "application/json" }
//!   body = '{"id": "{id}", "greeting": "${stageVariables.greeting}"}'
//!   [api.route.cache]            # optional per-route cache settings
//!   enabled = true               # default: GET routes (and GET/HEAD of ANY routes) only
//!   ttl = "60s"                  # overrides the stage ttl; 0s..=3600s
//!   key_parameters = ["path.id", "querystring.lang", "header.accept-language"]
//!                                # or ["querystring.*"]; default [] (see the trap below)
//!   namespace = "pets"           # routes sharing a namespace share entries; default the route
//!
//!   [[api.route]]
//!   route = "ANY /pets/{proxy+}"
//!   [api.route.http_proxy]       # forward to an HTTP backend
//!   uri = "http://pets/v1/{proxy}"   # required; see "Proxy URIs" below
//!   timeout = "29s"              # 50ms..=29s, default 29s
//!   preserve_host = false        # send the client's Host instead of the target's
//!   allow_upgrade = false        # pass WebSocket/Upgrade requests through
//!
//! [[upstream]]                   # a named group of backends for http_proxy
//! name = "pets"                  # [A-Za-z0-9_-]{1,64}, unique
//! targets = ["127.0.0.1:9000", "localhost:9001", "[::1]:9002"]  # 1..=256, unique, port required
//! balance = "round_robin"        # or "least_outstanding"; default round_robin
//! connect_timeout = "2s"         # 10ms..=60s, default 2s
//! idle_timeout = "60s"           # pooled idle connection lifetime, 1s..=1h, default 60s
//! max_idle_per_target = 512      # per worker, 0..=65536, default 512 (0: no pooling)
//!   [upstream.passive_health]    # optional: eject a target after consecutive failures
//!   max_failures = 3             # 1..=1000, default 3
//!   ejection_time = "10s"        # 1s..=1h, default 10s
//!   [upstream.health_check]      # optional active checks
//!   path = "/health"             # required, starts with '/'
//!   interval = "5s"              # 100ms..=1h, default 5s
//!   timeout = "1s"               # 10ms..=60s, default 1s; less than interval
//!   healthy_threshold = 2        # 1..=100, default 2
//!   unhealthy_threshold = 3      # 1..=100, default 3
//!   expected_status = "2xx"      # "2xx", "200-399", "204" or 204; default "2xx"
//!   [upstream.tls]               # optional: the group speaks HTTPS (`tls = {}` for defaults)
//!   ca = "platform"              # "platform" (default), "webpki", or a PEM bundle
//!   verify = true                # false: any certificate (warned at start)
//!   server_name = "pets.internal"  # SNI and verified name; default each target's host
//!   min_version = "1.2"          # or "1.3"
//!   client_certificate = { chain = "gw.pem", key = "gw.key" }  # if the backend asks
//!
//! [[domain]]
//! host = "api.example.com"       # or "*"
//!   [[domain.mapping]]
//!   base_path = "v1"             # "" maps the whole host
//!   api = "demo"
//!   stage = "prod"
//!
//! [throttle]                     # the account level (default 10,000 rps, burst 5,000)
//! rate = 10000                   # requests/s, fractional allowed; -1: no account limit
//! burst = 5000                   # rate and burst: both or neither (the default)
//! headers = false                # opt-in: RateLimit-Limit/-Remaining/-Reset on throttled
//!                                # routes' responses, Retry-After on a 429
//!
//! [key_source]                   # opt-in: where API keys are read from
//! header = "x-api-key"           # the key's header (default x-api-key)
//! query = "apikey"               # also accept ?apikey=KEY (percent-decoded); default none
//! hide = false                   # true: the backend (and a whole-query cache key) never
//!                                # sees the key header or parameter
//!
//! [[api_key]]
//! name = "alice"
//! value = "alice-2f0c9a1e7b3d4c5a"   # 20..=128 printable ASCII, unique
//! enabled = true
//!
//! [[usage_plan]]
//! name = "gold"
//! throttle = { rate = 10, burst = 20 }   # per key, over the plan's stages
//! quota = { limit = 5000, period = "DAY", offset = 0 }   # per key: DAY, WEEK (from Monday) or MONTH, UTC
//! keys = ["alice"]               # a key is in at most one plan per stage
//!   [[usage_plan.stage]]
//!   api = "demo"
//!   stage = "prod"
//!   route_throttle = { "GET /pets" = { rate = 2, burst = 5 } }   # per key per route
//!
//! [state]
//! dir = "state"                  # default: `state` next to this file (created 0700)
//!
//! [admin]
//! socket = "state/admin.sock"    # default: admin.sock in the state directory (mode 0600)
//! listen = "127.0.0.1:9901"      # optional TCP admin listener, loopback only,
//! token_file = "admin.token"     # ... which requires this bearer token (≥ 16 characters)
//! ```
//!
//! Relative paths (`[state] dir`, `[admin] socket`, `token_file`) are
//! relative to the configuration file's directory. `[server]`, `[limits]`,
//! `[state]` and `[admin]` are read at start only; a reload applies the
//! rest.
//!
//! Unknown keys anywhere are errors. An empty file is valid: defaults, and
//! no APIs (the caller should warn that nothing is served).
//!
//! # Proxy URIs
//!
//! `http_proxy.uri` is `http[s]://AUTHORITY[/PATH][?QUERY]` (no fragment,
//! no user info). The path defaults to `/`. `https://` reaches the backend
//! over TLS: an `[[upstream]]` it names must have `[upstream.tls]` (and one
//! with it must be named by `https://`), and a `host:port` is verified
//! against the system's CA certificates. The authority is one of:
//!
//! - the name of an `[[upstream]]` (`http://pets/v1`);
//! - a literal `host:port` (`http://127.0.0.1:9000`), a one-target upstream.
//!   **The port is required**: an authority without `:` is always read as
//!   an upstream name, so a misspelt name is an error rather than a DNS
//!   lookup of `pest:80`;
//! - text containing `${stageVariables.NAME}` (`http://${stageVariables.backend}`,
//!   `http://${stageVariables.svc}.internal:9000`) that must substitute to
//!   one of the above. Each stage that defines every variable the authority
//!   uses is checked now; the gateway checks again at request time (see
//!   [`TargetAddr::parse`], [`Config::upstream`]).
//!
//! The path and query may use `${stageVariables.NAME}`, `{param}` for the
//! route's path parameters and `{proxy}` for a greedy `{proxy+}`. Unlike a
//! mock body, any other `{name}` is an error. Literal text is limited to
//! URI characters (`%XX` escapes allowed).
//!
//! # Stage cache
//!
//! API Gateway's stage cache. `[api.stage.cache]` turns caching
//! on for a stage ([`StageCacheConfig`]); without it nothing is cached.
//! [`RouteConfig::cache_ttl`] says whether a request is cached and for how
//! long: GET routes are cached by default, routes with another method only
//! with `enabled = true` in `[api.route.cache]`, `ANY` routes and
//! `$default` for their GET and HEAD requests only; the route `ttl`
//! overrides the stage `ttl`, and a TTL of 0 means not cached. A mock route
//! may be cached too (harmless).
//!
//! The key is the stage, the namespace (default: the route), the method
//! and the values of `key_parameters` ([`RouteCacheConfig`]):
//! `path.NAME` (a path parameter of the route; `path.proxy` for
//! `{proxy+}`), `querystring.NAME`, `header.NAME`, or `"querystring.*"`,
//! the whole query string (not combined with `querystring.NAME`).
//!
//! **The trap** (as in API Gateway, see terraform-provider-aws issue 856): parameters not
//! listed do not vary the key, and that includes path parameters. With the
//! default empty list, `GET /items/1` and `GET /items/2` share one entry:
//! list `"path.id"`. The one exception: when a cache-enabled stage of the
//! api has `respect_origin_cache_control = true`, a route that does not
//! write `key_parameters` (or has no `[api.route.cache]`) gets
//! `"querystring.*"`, filled in at validation
//! ([`RouteCacheConfig::whole_query`]); path parameters must still be
//! listed.
//!
//! # Opt-in extensions (beyond API Gateway)
//!
//! All off by default: a file without them behaves, and answers, exactly as
//! before.
//! - `[throttle] headers = true` ([`Config::throttle_headers`]): responses
//!   on throttled routes carry `RateLimit-Limit`, `RateLimit-Remaining` and
//!   `RateLimit-Reset`; a 429 from throttling also `Retry-After`.
//! - `client_throttle = { rate, burst }` on a route
//!   ([`RouteConfig::client_throttle`]): a bucket per client IP address on
//!   that route in each stage, checked before every other level; at most
//!   100,000 addresses per (stage, route), idle ones swept every 5 s.
//! - `[key_source]` ([`KeySourceConfig`]): the key's header, an optional
//!   query parameter (percent-decoded), and `hide` to keep both from
//!   backends and from a whole-query-string cache key.
//!
//! # Warnings
//!
//! A stage that lacks a stage variable used by an `http_proxy` uri is not
//! an error (API Gateway answers such requests with 500 at request time,
//! and stage variables will be editable at run time): [`Config::warnings`]
//! records one [`ConfigWarning`] per (route, stage, missing variable).
//! So does an `[api.route.cache]` that cannot take effect: no stage of its
//! api enables a cache, or it is on a non-GET route without `enabled`.
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

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod error;
mod raw;
mod template;
mod tls;
mod validate;

#[cfg(test)]
mod tests;

pub use crate::throttle::quota::{Period, QuotaSettings};
pub use error::ConfigError;
pub use tls::{CertificateConfig, TlsConfig, TlsVersion, UpstreamTlsConfig};
/// Headers a mock may not set: the gateway owns them.
pub(crate) use validate::RESERVED_HEADERS as MOCK_RESERVED_HEADERS;

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
    /// `[[upstream]]` in file order; names unique.
    pub upstreams: Vec<UpstreamConfig>,
    /// Problems that do not stop the configuration from loading (see
    /// "Warnings" above), in file order. The caller should print them.
    pub warnings: Vec<ConfigWarning>,
    /// `[state]`: where the durable control-plane state lives.
    pub state: StateConfig,
    /// `[admin]`: the admin socket and the optional loopback TCP listener.
    pub admin: AdminConfig,
    /// `[throttle]`: the account-level limit over every API (API Gateway's
    /// default, 10,000 rps with a burst of 5,000, when absent); `None` with
    /// `rate = -1`.
    pub throttle: Option<ThrottleLimit>,
    /// `[[api_key]]` in file order.
    pub api_keys: Vec<ApiKeyConfig>,
    /// `[[usage_plan]]` in file order.
    pub usage_plans: Vec<UsagePlanConfig>,
    /// `[throttle] headers` (default false, API Gateway sends none):
    /// throttled routes' responses carry `RateLimit-Limit`,
    /// `RateLimit-Remaining` and `RateLimit-Reset`, and a 429 from
    /// throttling `Retry-After` too.
    pub throttle_headers: bool,
    /// `[key_source]`: where API keys are read from, and whether the
    /// backend sees them.
    pub key_source: KeySourceConfig,
    /// `[metrics]`: per-request metrics and the optional scrape listener.
    pub metrics: MetricsConfig,
    /// `[access_log]`: where and how each request is logged; `None`: no
    /// access log.
    pub access_log: Option<AccessLogConfig>,
    /// `[tls]`: the certificates of `server.listen_tls`; `None` when that
    /// is not set.
    pub tls: Option<TlsConfig>,
}

/// `[access_log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// `path`: a file (appended to, reopened on SIGUSR1), or `-` for
    /// standard output (`None`).
    pub path: Option<PathBuf>,
    /// `format` (default `clf`): a preset (`clf`, `json`, `csv`,
    /// `http_api_clf`) or a format of `$context` variables, as written;
    /// checked when the file is read.
    pub format: String,
    /// `queue` (default 1024): batches of lines (about 32 KiB each) waiting
    /// for the writer; past it, lines are dropped and counted rather than
    /// making a worker wait.
    pub queue: usize,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `enabled` (default true): count and time every request by API,
    /// stage (and route, where a stage sets `detailed_metrics`). `false`
    /// keeps only the process-wide counts.
    pub enabled: bool,
    /// `listen`: a plain HTTP listener answering `GET /metrics` for
    /// scrapers, on a loopback or private address only (the admin socket
    /// answers it too). `None`: the socket only.
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: None,
        }
    }
}

/// `[key_source]`: where a request's API key is found (beyond API
/// Gateway, which reads `x-api-key` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySourceConfig {
    /// `header`: the header holding the key, lowercased (default
    /// `x-api-key`). Never one the gateway owns (`Host`, framing,
    /// hop-by-hop, `X-Forwarded-*`, `x-request-id`).
    pub header: String,
    /// `query`: also accept the key as this query parameter (the header
    /// wins when both are sent). `[A-Za-z0-9._~-]{1,64}`; `None`: header
    /// only (the default).
    pub query: Option<String>,
    /// `hide`: the key header and query parameter are removed from the
    /// request forwarded to a backend, and the query parameter from a
    /// whole-query-string cache key (default false).
    pub hide: bool,
}

impl Default for KeySourceConfig {
    fn default() -> Self {
        KeySourceConfig {
            header: DEFAULT_KEY_HEADER.to_string(),
            query: None,
            hide: false,
        }
    }
}

/// The header API keys come in by default (API Gateway's).
pub const DEFAULT_KEY_HEADER: &str = "x-api-key";

/// `[[api_key]]`: an API key declared in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// Unique name, `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    /// The value clients send in `x-api-key`: 20 to 128 printable ASCII
    /// characters, unique.
    pub value: String,
    /// A disabled key is refused (403).
    pub enabled: bool,
}

/// `[[usage_plan]]`: limits for the keys it lists on the stages it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePlanConfig {
    /// Unique name.
    pub name: String,
    /// Per key: one bucket per key over every stage of the plan.
    pub throttle: Option<ThrottleLimit>,
    /// Per key: requests per DAY, WEEK or MONTH (UTC), over every stage of
    /// the plan.
    pub quota: Option<QuotaSettings>,
    /// Names of `[[api_key]]`s; a key is in at most one plan per stage.
    pub keys: Vec<String>,
    /// The stages the plan covers.
    pub stages: Vec<PlanStageConfig>,
}

/// `[[usage_plan.stage]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStageConfig {
    /// The API.
    pub api: String,
    /// Its stage.
    pub stage: String,
    /// Per key per route: one bucket per (key, route) on this stage.
    pub route_throttle: BTreeMap<String, ThrottleLimit>,
}

/// A token bucket's limit: `rate` requests per second (fractional allowed)
/// and `burst`, the bucket's capacity (API Gateway's `rateLimit` and
/// `burstLimit`). A new bucket starts full; `burst = 0` refuses everything.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ThrottleLimit {
    /// Steady-state requests per second, finite and ≥ 0.
    pub rate: f64,
    /// Capacity: the most requests admitted at once.
    pub burst: u32,
}

impl PartialEq for ThrottleLimit {
    fn eq(&self, other: &Self) -> bool {
        self.rate.to_bits() == other.rate.to_bits() && self.burst == other.burst
    }
}

// Rates are validated finite (never NaN), so equality is an equivalence.
impl Eq for ThrottleLimit {}

/// API Gateway's account-level default: 10,000 rps, burst 5,000.
pub const ACCOUNT_THROTTLE: ThrottleLimit = ThrottleLimit {
    rate: 10_000.0,
    burst: 5_000,
};

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateConfig {
    /// `dir` as written; `None`: `state` next to the configuration file.
    /// A relative path is relative to the file's directory
    /// ([`Config::state_dir`]).
    pub dir: Option<PathBuf>,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminConfig {
    /// `socket` as written; `None`: `admin.sock` in the state directory
    /// ([`Config::admin_socket`]).
    pub socket: Option<PathBuf>,
    /// `listen`: a loopback address for the TCP admin listener, which then
    /// requires `Authorization: Bearer <token>`.
    pub listen: Option<SocketAddr>,
    /// `token_file`: the file holding that token (required with `listen`).
    pub token_file: Option<PathBuf>,
}

impl Config {
    /// The `[[upstream]]` with this name. An `http_proxy` authority (after
    /// stage variable substitution) without `:` names an upstream; one with
    /// `:` is a `host:port` for [`TargetAddr::parse`].
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The directory relative paths in the file are relative to: the
    /// file's own directory.
    fn base_dir(&self) -> PathBuf {
        Path::new(&self.source)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }

    /// The state directory: `[state] dir`, else `state` next to the file.
    pub fn state_dir(&self) -> PathBuf {
        self.resolve(self.state.dir.as_deref().unwrap_or(Path::new("state")))
    }

    /// The admin socket: `[admin] socket`, else `admin.sock` in the state
    /// directory.
    pub fn admin_socket(&self) -> PathBuf {
        match &self.admin.socket {
            Some(p) => self.resolve(p),
            None => self.state_dir().join("admin.sock"),
        }
    }

    /// `[admin] token_file`, resolved.
    pub fn admin_token_file(&self) -> Option<PathBuf> {
        self.admin.token_file.as_deref().map(|p| self.resolve(p))
    }
}

/// Something worth telling the person who wrote the file that does not
/// stop it from loading. Displayed like a [`ConfigError`], without column
/// and fix:
///
/// ```text
/// ringgate.toml:31: warning: api[0].route[2].http_proxy.uri: stage "beta" does not define ...
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file name as given to [`load`] or [`parse`].
    pub file: String,
    /// 1-based line of the value concerned.
    pub line: usize,
    /// Dotted path of the key concerned, e.g. `api[0].route[2].http_proxy.uri`.
    pub key: String,
    /// What is wrong and what happens because of it, in one line.
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: warning: {}: {}",
            self.file, self.line, self.key, self.message
        )
    }
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
    /// A path the gateway answers itself, before routing, for load
    /// balancers: 200 while serving, 503 while draining. `None`: off.
    pub health_path: Option<String>,
    /// Addresses that serve HTTPS (`[tls]` gives the certificates); may be
    /// empty.
    pub listen_tls: Vec<SocketAddr>,
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
            health_path: None,
            listen_tls: Vec::new(),
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

/// The part of an [`ApiConfig`] a deployment freezes: which routes there
/// are and what answers them. Hosts, stages and domains stay with the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiDefinition {
    /// What to answer when no route matches.
    pub unmatched_route: UnmatchedRoute,
    /// Routes, in file order.
    pub routes: Vec<RouteConfig>,
}

impl ApiConfig {
    /// The API's current definition, as a deployment would freeze it.
    pub fn definition(&self) -> ApiDefinition {
        ApiDefinition {
            unmatched_route: self.unmatched_route,
            routes: self.routes.clone(),
        }
    }

    /// The stage with this name.
    pub fn stage(&self, name: &str) -> Option<&StageConfig> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// `api.unmatched_route`: the answer when no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `auto_deploy` (default true): the stage serves the file's current
    /// definition of the API, and a reload applies its edits. `false`: the
    /// stage serves the deployment it points at in the state store, with
    /// the variables and cache settings stored there; the file's only seed
    /// them the first time the stage is seen.
    pub auto_deploy: bool,
    /// Stage variables (at most 100).
    pub variables: BTreeMap<String, String>,
    /// `[api.stage.cache]`; `None` when the table is absent (no caching).
    /// Present with `enabled == false` also means no caching.
    pub cache: Option<StageCacheConfig>,
    /// `[api.stage.throttle]`: the stage's default per-route limit (API
    /// Gateway's `*/*` method setting), applied to each route's own bucket.
    pub throttle: Option<ThrottleLimit>,
    /// `route_throttle`: per-route limits by route key as written
    /// (`"GET /pets"`), overriding `throttle` for that route.
    pub route_throttle: BTreeMap<String, ThrottleLimit>,
    /// `detailed_metrics` (default false; API Gateway's `metricsEnabled`):
    /// metrics by route as well as by stage.
    pub detailed_metrics: bool,
    /// `access_log_format`: the stage's own access log format (a preset or
    /// a format), or `off`; `None`: `[access_log] format`.
    pub access_log_format: Option<String>,
}

/// The stage cache capacity classes of API Gateway (`cacheClusterSize`,
/// in GB) and their byte budgets, `size_gb × 2^30` rounded down.
pub const CAPACITY_CLASSES: [(&str, u64); 8] = [
    ("0.5", class_bytes(5)),
    ("1.6", class_bytes(16)),
    ("6.1", class_bytes(61)),
    ("13.5", class_bytes(135)),
    ("28.4", class_bytes(284)),
    ("58.2", class_bytes(582)),
    ("118", class_bytes(1180)),
    ("237", class_bytes(2370)),
];

/// Bytes of a class given in tenths of a GB: exact integer arithmetic.
const fn class_bytes(tenths_of_gb: u64) -> u64 {
    tenths_of_gb * (1 << 30) / 10
}

/// `[api.stage.cache]`: the stage cache (see "Stage cache" above).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCacheConfig {
    /// `enabled`; default true when the table is present.
    pub enabled: bool,
    /// Byte budget of the whole stage cache (LRU beyond it).
    pub capacity_bytes: u64,
    /// The class chosen (`"0.5"` .. `"237"`, as in [`CAPACITY_CLASSES`]);
    /// `None` for an explicit size (`"64MiB"`).
    pub capacity_class: Option<String>,
    /// Default TTL of the stage's routes, 0s..=3600s (default 300s).
    /// Zero: routes without their own `ttl` are not cached.
    pub ttl: Duration,
    /// Add `X-Cache-Status` (Hit|Miss|Refresh|Bypass) and `Age` to
    /// responses of cached routes (default false, for parity).
    pub status_header: bool,
    /// Only integration responses with these statuses (100..=599, file
    /// order, no duplicates, never empty) are stored; `None`: all (parity).
    pub cache_statuses: Option<Vec<u16>>,
    /// `require_authorization_for_cache_control`: only authorized clients
    /// may refresh an entry with `Cache-Control: max-age=0`. When true,
    /// `authorization_header` and `authorization_token` are `Some`.
    pub require_authorization: bool,
    /// What to do with an unauthorized `Cache-Control: max-age=0`.
    pub unauthorized_strategy: UnauthorizedStrategy,
    /// Lowercased header whose value must equal `authorization_token` for
    /// a request to be authorized to refresh.
    pub authorization_header: Option<String>,
    /// The expected value of `authorization_header` (non-empty).
    pub authorization_token: Option<String>,
    /// Honour origin `Cache-Control`/`Vary` (RFC 9111 shared cache) instead
    /// of the fixed TTL. Also makes the default key the whole query string
    /// (see [`RouteCacheConfig::whole_query`]).
    pub respect_origin_cache_control: bool,
    /// Serve an expired entry up to this long when the backend fails or
    /// times out, 0s..=1h (default 0s: off).
    pub stale_if_error: Duration,
    /// How long concurrent misses for one key wait for the single backend
    /// fetch, 10ms..=60s (default 10s).
    pub lock_timeout: Duration,
    /// RFC mode: the largest heuristic freshness lifetime (10 % of the time
    /// since `Last-Modified`), 0s..=365d (default 86400s; 0: no heuristics).
    pub heuristic_max: Duration,
    /// RFC mode: a targeted cache-control field (RFC 9213), lowercased,
    /// that takes precedence over `CDN-Cache-Control` (always honoured in
    /// RFC mode); neither reaches clients.
    pub targeted_cache_control: Option<String>,
    /// RFC mode: store responses that carry `Set-Cookie` (default false).
    pub store_set_cookie: bool,
}

/// `cache.unauthorized_strategy` (API Gateway's
/// `unauthorizedCacheControlHeaderStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnauthorizedStrategy {
    /// `FAIL_WITH_403`: reject the request with 403.
    FailWith403,
    /// `SUCCEED_WITH_RESPONSE_HEADER` (the default): ignore the
    /// `Cache-Control` header, serve normally and add a `Warning` header.
    SucceedWithResponseHeader,
    /// `SUCCEED_WITHOUT_RESPONSE_HEADER`: ignore the `Cache-Control`
    /// header and serve normally, with no warning header.
    SucceedWithoutResponseHeader,
}

/// `[api.route.cache]`: per-route cache settings. Also present, with only
/// `whole_query` set, on a route without the table when a stage of its api
/// has `respect_origin_cache_control = true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCacheConfig {
    /// `enabled` as written; `None`: the default (see
    /// [`RouteConfig::cache_ttl`]).
    pub enabled: Option<bool>,
    /// Overrides the stage `ttl`, 0s..=3600s (0: not cached).
    pub ttl: Option<Duration>,
    /// The parameters that vary the key besides stage, namespace and
    /// method, in file order, no duplicates. Path parameters are names of
    /// this route's parameters; header names are lowercased.
    pub key_parameters: Vec<KeyParameter>,
    /// The whole query string varies the key (`"querystring.*"`); then no
    /// [`KeyParameter::Query`] is listed. Default true when
    /// `key_parameters` is not written and a cache-enabled stage of the api
    /// has `respect_origin_cache_control = true`.
    pub whole_query: bool,
    /// Routes naming the same namespace share entries (within a stage);
    /// `None`: the route itself. `[A-Za-z0-9_-]{1,64}`.
    pub namespace: Option<String>,
}

/// One `cache.key_parameters` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyParameter {
    /// `path.NAME`: the route's path parameter `NAME` (`proxy` for
    /// `{proxy+}`).
    Path(String),
    /// `querystring.NAME`: the query parameter `NAME` (case-sensitive).
    Query(String),
    /// `header.NAME`: the request header `NAME` (lowercased).
    Header(String),
}

/// `[[api.route]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// The route key.
    pub key: RouteKey,
    /// What answers the route.
    pub integration: Integration,
    /// 1-based line of the `route = ...` value, for messages.
    pub line: usize,
    /// `[api.route.cache]`, if given (see also [`RouteCacheConfig`]).
    pub cache: Option<RouteCacheConfig>,
    /// `client_throttle`: one bucket per client IP address on this route
    /// in each stage (beyond API Gateway), checked before every other
    /// level. Absent from deployments stored before it existed: `None`.
    #[serde(default)]
    pub client_throttle: Option<ThrottleLimit>,
    /// `api_key_required`: requests need an enabled `x-api-key` in a usage
    /// plan of the stage (else 403), and the plan's limits apply.
    #[serde(default)]
    pub api_key_required: bool,
}

impl RouteConfig {
    /// The TTL with which a `method` request (upper case) to this route in
    /// `stage` is cached, or `None` when it is not cached: the stage has no
    /// enabled cache, the route has `enabled = false`, the effective TTL
    /// (the route's, else the stage's) is zero, or the method is not
    /// cached by default. By default a GET route is cached; a route with
    /// another method only with `enabled = true`; an `ANY` route and
    /// `$default` cache GET and HEAD requests only, even with
    /// `enabled = true` (declare e.g. a `POST` route to cache POST).
    pub fn cache_ttl(&self, stage: &StageConfig, method: &str) -> Option<Duration> {
        let sc = stage.cache.as_ref().filter(|c| c.enabled)?;
        let rc = self.cache.as_ref();
        let enabled = rc.and_then(|c| c.enabled);
        if enabled == Some(false) {
            return None;
        }
        let method_ok = match &self.key {
            RouteKey::Route {
                method: Some(m), ..
            } => m == "GET" || enabled == Some(true),
            _ => method == "GET" || method == "HEAD",
        };
        let ttl = rc.and_then(|c| c.ttl).unwrap_or(sc.ttl);
        (method_ok && !ttl.is_zero()).then_some(ttl)
    }
}

/// A validated route key, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// What answers a route. More kinds may be added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Integration {
    /// `[api.route.mock]`: a fixed response.
    Mock(MockIntegration),
    /// `[api.route.http_proxy]`: forward the request to an HTTP backend.
    HttpProxy(HttpProxyIntegration),
}

/// `[api.route.http_proxy]`: the request is forwarded to the backend the
/// URI template names. Adjacent literals are merged, so an authority with
/// no stage variable is a single [`BodyPart::Literal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProxyIntegration {
    /// The uri says `https://`: the backend is reached over TLS (the
    /// `[[upstream]]` it names has `[upstream.tls]`, or a `host:port` is
    /// verified against the system's CA certificates).
    #[serde(default)]
    pub tls: bool,
    /// The authority template: [`BodyPart::Literal`] and
    /// [`BodyPart::StageVariable`] only. Once substituted, text without `:`
    /// is an [`UpstreamConfig`] name ([`Config::upstream`]), text with `:`
    /// a `host:port` ([`TargetAddr::parse`]). A stage may lack a variable
    /// used here (see [`Config::warnings`]): the gateway then answers 500.
    pub authority: Vec<BodyPart>,
    /// The path template; starts with a `/` literal (`/` when the uri has
    /// no path).
    pub path: Vec<BodyPart>,
    /// The query template, without the `?`; empty when there is none.
    pub query: Vec<BodyPart>,
    /// Integration timeout, 50ms..=29s (default 29s).
    pub timeout: Duration,
    /// Send the client's Host header instead of the target's.
    pub preserve_host: bool,
    /// Pass WebSocket / `Upgrade` requests through.
    pub allow_upgrade: bool,
    /// The uri as written, for messages.
    pub uri: String,
}

/// `[[upstream]]`: a named group of backend targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Unique name, `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    /// 1..=256 targets, no two with the same host and port.
    pub targets: Vec<TargetAddr>,
    /// How requests are spread over the targets.
    pub balance: Balance,
    /// Time allowed to connect to a target (10ms..=60s, default 2s).
    pub connect_timeout: Duration,
    /// How long a pooled idle connection is kept (1s..=1h, default 60s).
    pub idle_timeout: Duration,
    /// Idle connections pooled per target and worker (0..=65536, default
    /// 512; 0 disables pooling).
    pub max_idle_per_target: usize,
    /// `[upstream.passive_health]`, if given.
    pub passive_health: Option<PassiveHealth>,
    /// `[upstream.health_check]`, if given.
    pub health_check: Option<HealthCheck>,
    /// `[upstream.tls]`, if given: the group speaks HTTPS, and the uris
    /// naming it must say `https://`.
    pub tls: Option<UpstreamTlsConfig>,
    /// 1-based line of the `name = ...` value, for messages.
    pub line: usize,
}

/// A backend address, `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetAddr {
    /// Lowercased DNS name, IPv4 address, or IPv6 address without brackets
    /// (IP addresses in their canonical form).
    pub host: String,
    /// Port, 1..=65535.
    pub port: u16,
    /// The address as written.
    pub text: String,
}

impl TargetAddr {
    /// Parses `host:port`: an IPv4 address, `[IPv6]` or a DNS name (letters,
    /// digits, `-` and `_`; the last label not all digits), and a port from
    /// 1 to 65535, which is required. `Err` says what is wrong as a phrase
    /// to follow the quoted text, e.g. `has no port`.
    pub fn parse(text: &str) -> Result<TargetAddr, String> {
        validate::parse_target(text)
    }
}

/// `upstream.balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each target in turn (the default).
    RoundRobin,
    /// The target with the fewest requests in flight.
    LeastOutstanding,
}

/// `[upstream.passive_health]`: eject a target after consecutive failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Consecutive failures that eject a target (1..=1000, default 3).
    pub max_failures: u32,
    /// How long an ejected target is left out (1s..=1h, default 10s).
    pub ejection_time: Duration,
}

/// `[upstream.health_check]`: active checks of every target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path (and optional query) requested with GET; starts with `/`.
    pub path: String,
    /// Time between checks of a target (100ms..=1h, default 5s).
    pub interval: Duration,
    /// Time allowed for one check (10ms..=60s, default 1s); always less
    /// than `interval`.
    pub timeout: Duration,
    /// Consecutive successes that mark a target healthy (1..=100, default 2).
    pub healthy_threshold: u32,
    /// Consecutive failures that mark a target unhealthy (1..=100, default 3).
    pub unhealthy_threshold: u32,
    /// Statuses that count as success, an inclusive range (default
    /// `(200, 299)`, written `"2xx"`).
    pub expected_status: (u16, u16),
}

/// `[api.route.mock]`: a fixed response, its body templated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockIntegration {
    /// Status code, 200..=599.
    pub status: u16,
    /// Header names (lowercased) and values, in file order; never one the
    /// gateway owns (content-length, date, ...).
    pub headers: Vec<(String, String)>,
    /// The body template; empty for an empty body.
    pub body: Vec<BodyPart>,
}

/// A piece of a mock body or proxy URI template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyPart {
    /// Text copied as is.
    Literal(String),
    /// `${stageVariables.NAME}`: the stage's variable. In a mock body every
    /// stage of the API defines it; in an `http_proxy` uri a stage may not
    /// (see [`Config::warnings`]).
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

/// Checks a stage variable as the file's validator does (for values set
/// through the admin socket): `Err` says what is wrong.
pub fn check_stage_variable(name: &str, value: &str) -> Result<(), String> {
    if !template::variable_name_ok(name) {
        return Err(format!(
            "stage variable name {name:?} is not valid: use 1 to 64 letters, digits or '_'"
        ));
    }
    validate::variable_value_problem(value).map_or(Ok(()), |p| {
        Err(format!("value of stage variable {name:?} {p}"))
    })
}

/// A stage cache capacity written as `[api.stage.cache] capacity` takes it,
/// from a string: a capacity class in GB (`"0.5"` … `"237"`) or a size from
/// `"1MiB"` to `"1GiB"`. Returns the bytes and the class, if one.
pub fn parse_capacity(s: &str) -> Result<(u64, Option<String>), String> {
    if let Some((class, bytes)) = CAPACITY_CLASSES
        .iter()
        .find(|(c, _)| s.parse::<f64>().ok() == c.parse::<f64>().ok() && s.parse::<f64>().is_ok())
    {
        return Ok((*bytes, Some(class.to_string())));
    }
    match parse_size(s) {
        Some(n) if (validate::MIN_CACHE_SIZE..=validate::MAX_CACHE_SIZE).contains(&n) => {
            Ok((n, None))
        }
        _ => Err(format!(
            "capacity {s:?} is neither a capacity class ({}) nor a size from \"1MiB\" to \"1GiB\"",
            CAPACITY_CLASSES.map(|(c, _)| c).join(", ")
        )),
    }
}

/// The settings of a stage cache written as `cache = { enabled = true }`:
/// what a cache enabled through the admin socket starts with.
pub fn default_stage_cache() -> StageCacheConfig {
    const DOC: &str = "[[api]]\nname = \"a\"\n[[api.stage]]\nname = \"s\"\n\
                       cache = { enabled = true }\n[[api.route]]\nroute = \"$default\"\nmock = {}\n";
    let cfg = parse(DOC, "(defaults)").expect("the default stage cache validates");
    cfg.apis[0].stages[0]
        .cache
        .clone()
        .expect("the default stage has a cache")
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

/// Parses a duration with [`humantime::parse_duration`]: one or more parts,
/// each a number (a decimal fraction is allowed) and a unit, adding up
/// (`"500ms"`, `"10s"`, `"1.5s"`, `"2m"`, `"1m30s"`, `"1h 30m"`,
/// `"60 seconds"`). Units: `ms`, `s`, `m`, `h`, `d`, `w` and their spelled-out
/// forms (`msec`, `sec`, `seconds`, `min`, `minutes`, `hr`, `hours`...).
///
/// Refused on top of what humantime refuses (empty, a sign, an unknown unit,
/// a number without a unit, a value too large):
/// - `"0"`, the one bare number humantime takes: every other bare number is
///   refused, so `"0s"` is how to write zero;
/// - months and years (`M`, `month`, `y`, `year`...): they have no fixed
///   length, and `"5M"` is five months, not five minutes;
/// - anything finer than a millisecond (`"1us"`, `"0.0005s"`): timeouts
///   have millisecond resolution at best;
/// - a space inside a number (`"1 0s"`), which humantime skips (10s).
///
/// `Err` says why in words, for the configuration error.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    use humantime::DurationError as E;
    if s.trim() == "0" {
        return Err("a number needs a unit (zero is \"0s\")".to_string());
    }
    // humantime reads "1 0s" as 10s: a space inside a number is a typo.
    let numeric = |c: char| c.is_ascii_digit() || c == '.';
    let words = s.split_whitespace();
    if words
        .clone()
        .zip(words.skip(1))
        .any(|(a, b)| a.ends_with(numeric) && b.starts_with(numeric))
    {
        return Err("a space inside a number".to_string());
    }
    let rest = |at: usize| s.get(at..).unwrap_or(s);
    let d = humantime::parse_duration(s).map_err(|e| match e {
        E::Empty => "it is empty".to_string(),
        E::NumberExpected(at) => format!("expected a number at {:?}", rest(at)),
        E::InvalidCharacter(at) => format!("unexpected {:?}", rest(at)),
        E::UnknownUnit { unit, .. } if unit.is_empty() => "a number needs a unit".to_string(),
        E::UnknownUnit { unit, .. } => format!("unknown unit {unit:?}"),
        E::NumberOverflow => "the number is too large or too precise".to_string(),
    })?;
    let calendar = ["M", "month", "months", "y", "yr", "yrs", "year", "years"];
    if let Some(unit) = s
        .split(|c: char| !c.is_alphabetic())
        .find(|unit| calendar.contains(unit))
    {
        return Err(format!(
            "{unit:?} is a calendar unit with no fixed length (minutes are \"m\")"
        ));
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err("it is finer than a millisecond".to_string());
    }
    Ok(d)
}

/// Parses a size in bytes: plain digits, or digits and a unit `B`, `KiB`,
/// `MiB`, `GiB` or `TiB` (`"100B"`, `"512KiB"`, `"10MiB"`). `None` if
/// malformed or too large for a `u64`.
///
/// Hand-written on purpose: the size-parsing crates (parse-size, bytesize,
/// humanize-rs, bytefmt) all also take decimal `MB`, most of them in any
/// case, and a `10MB` meaning 10,000,000 where the rest of the file means
/// 10 MiB is the surprise this format refuses (see `body_size`'s fix).
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
