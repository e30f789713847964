//! The file as serde sees it: every struct denies unknown fields and keeps
//! the spans of the values that validation may need to point at. Tables
//! themselves are never wrapped in `Spanned` (implicit tables have no span).
//!
//! Also holds [`SNode`], a generic span-keeping tree of the document used
//! only to name the key behind a serde error's byte offset.

#![forbid(unsafe_code)]

use std::fmt;
use std::ops::Range;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::{Spanned, Value};

use super::error::{join, key_segment};

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: Option<RawServer>,
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub api: Vec<RawApi>,
    #[serde(default)]
    pub domain: Vec<RawDomain>,
    #[serde(default)]
    pub upstream: Vec<RawUpstream>,
    pub state: Option<RawState>,
    pub admin: Option<RawAdmin>,
    pub throttle: Option<RawAccountThrottle>,
    pub key_source: Option<RawKeySource>,
    pub metrics: Option<RawMetrics>,
    pub access_log: Option<RawAccessLog>,
    #[serde(default)]
    pub api_key: Vec<RawApiKey>,
    #[serde(default)]
    pub usage_plan: Vec<RawUsagePlan>,
    pub tls: Option<RawTls>,
}

/// `[tls]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub min_version: Option<Spanned<String>>,
    pub session_tickets: Option<bool>,
    pub session_cache: Option<Spanned<i64>>,
    pub watch: Option<Spanned<String>>,
    pub redirect_hosts: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub certificate: Vec<RawCertificate>,
}

/// `[[tls.certificate]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub chain: Spanned<String>,
    pub key: Spanned<String>,
    pub hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub client_ca: Option<Spanned<String>>,
    pub client_cert_headers: Option<OrderedMap>,
}

/// `[metrics]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub enabled: Option<bool>,
    pub listen: Option<Spanned<String>>,
}

/// `[access_log]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccessLog {
    pub path: Spanned<String>,
    pub format: Option<Spanned<String>>,
    pub queue: Option<Spanned<i64>>,
}

/// `[[api_key]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApiKey {
    pub name: Spanned<String>,
    pub value: Spanned<String>,
    pub enabled: Option<bool>,
}

/// `[[usage_plan]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsagePlan {
    pub name: Spanned<String>,
    pub throttle: Option<RawThrottle>,
    pub quota: Option<Spanned<RawQuota>>,
    #[serde(default)]
    pub keys: Vec<Spanned<String>>,
    #[serde(default)]
    pub stage: Vec<RawPlanStage>,
}

/// `[usage_plan.quota]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuota {
    pub limit: Spanned<i64>,
    pub period: Spanned<String>,
    pub offset: Option<Spanned<i64>>,
}

/// `[[usage_plan.stage]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlanStage {
    pub api: Spanned<String>,
    pub stage: Spanned<String>,
    pub route_throttle: Option<std::collections::BTreeMap<String, RawThrottle>>,
}

/// `[throttle]`, `[api.stage.throttle]` and each `route_throttle` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThrottle {
    pub rate: Spanned<Value>,
    pub burst: Option<Spanned<i64>>,
}

/// The top-level `[throttle]`: the account's limit (both optional there:
/// absent means API Gateway's default) and the opt-in `headers`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccountThrottle {
    pub rate: Option<Spanned<Value>>,
    pub burst: Option<Spanned<i64>>,
    pub headers: Option<bool>,
}

/// `[key_source]`: where API keys are read from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKeySource {
    pub header: Option<Spanned<String>>,
    pub query: Option<Spanned<String>>,
    pub hide: Option<bool>,
}

/// `[state]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub dir: Option<Spanned<String>>,
}

/// `[admin]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub socket: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
}

/// `[server]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<Spanned<Vec<Spanned<String>>>>,
    pub listen_tls: Option<Spanned<Vec<Spanned<String>>>>,
    pub workers: Option<Spanned<Value>>,
    pub pin_workers: Option<bool>,
    pub io_driver: Option<Spanned<String>>,
    pub ring_entries: Option<Spanned<i64>>,
    pub drain_timeout: Option<Spanned<Value>>,
    pub health_path: Option<Spanned<String>>,
}

/// `[limits]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_header_bytes: Option<Spanned<i64>>,
    pub max_headers: Option<Spanned<i64>>,
    pub max_url_bytes: Option<Spanned<i64>>,
    pub max_body_bytes: Option<Spanned<Value>>,
    pub header_read_timeout: Option<Spanned<Value>>,
    pub keepalive_timeout: Option<Spanned<Value>>,
    pub max_connections_per_worker: Option<Spanned<i64>>,
}

/// `[[api]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub name: Spanned<String>,
    pub hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub unmatched_route: Option<Spanned<String>>,
    #[serde(default)]
    pub stage: Vec<RawStage>,
    #[serde(default)]
    pub route: Vec<RawRoute>,
}

/// `[[api.stage]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStage {
    pub name: Spanned<String>,
    pub auto_deploy: Option<bool>,
    pub variables: Option<OrderedMap>,
    pub cache: Option<RawStageCache>,
    pub throttle: Option<RawThrottle>,
    pub route_throttle: Option<std::collections::BTreeMap<String, RawThrottle>>,
    pub detailed_metrics: Option<bool>,
    pub access_log_format: Option<Spanned<String>>,
}

/// `[api.stage.cache]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStageCache {
    pub enabled: Option<bool>,
    pub capacity: Option<Spanned<Value>>,
    pub ttl: Option<Spanned<Value>>,
    pub status_header: Option<bool>,
    pub cache_statuses: Option<Spanned<Vec<Spanned<i64>>>>,
    pub require_authorization_for_cache_control: Option<Spanned<bool>>,
    pub unauthorized_strategy: Option<Spanned<String>>,
    pub authorization_header: Option<Spanned<String>>,
    pub authorization_token: Option<Spanned<String>>,
    pub respect_origin_cache_control: Option<bool>,
    pub stale_if_error: Option<Spanned<Value>>,
    pub lock_timeout: Option<Spanned<Value>>,
    pub heuristic_max: Option<Spanned<Value>>,
    pub targeted_cache_control: Option<Spanned<String>>,
    pub store_set_cookie: Option<Spanned<bool>>,
}

/// `[[api.route]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub route: Spanned<String>,
    pub mock: Option<RawMock>,
    pub http_proxy: Option<RawHttpProxy>,
    pub cache: Option<RawRouteCache>,
    #[serde(default)]
    pub client_throttle: Option<RawThrottle>,
    pub api_key_required: Option<bool>,
}

/// `[api.route.cache]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouteCache {
    pub enabled: Option<Spanned<bool>>,
    pub ttl: Option<Spanned<Value>>,
    pub key_parameters: Option<Spanned<Vec<Spanned<String>>>>,
    pub namespace: Option<Spanned<String>>,
}

/// `[api.route.mock]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMock {
    pub status: Option<Spanned<i64>>,
    pub headers: Option<OrderedMap>,
    pub body: Option<Spanned<String>>,
}

/// `[api.route.http_proxy]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttpProxy {
    pub uri: Spanned<String>,
    pub timeout: Option<Spanned<Value>>,
    pub preserve_host: Option<bool>,
    pub allow_upgrade: Option<bool>,
}

/// `[[upstream]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub name: Spanned<String>,
    pub targets: Spanned<Vec<Spanned<String>>>,
    pub balance: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<Value>>,
    pub idle_timeout: Option<Spanned<Value>>,
    pub max_idle_per_target: Option<Spanned<i64>>,
    pub passive_health: Option<RawPassiveHealth>,
    pub health_check: Option<RawHealthCheck>,
    pub tls: Option<Spanned<RawUpstreamTls>>,
}

/// `[upstream.tls]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstreamTls {
    pub ca: Option<Spanned<String>>,
    pub verify: Option<Spanned<bool>>,
    pub server_name: Option<Spanned<String>>,
    pub min_version: Option<Spanned<String>>,
    pub client_certificate: Option<RawClientCertificate>,
}

/// `[upstream.tls.client_certificate]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientCertificate {
    pub chain: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[upstream.passive_health]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPassiveHealth {
    pub max_failures: Option<Spanned<i64>>,
    pub ejection_time: Option<Spanned<Value>>,
}

/// `[upstream.health_check]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub path: Spanned<String>,
    pub interval: Option<Spanned<Value>>,
    pub timeout: Option<Spanned<Value>>,
    pub healthy_threshold: Option<Spanned<i64>>,
    pub unhealthy_threshold: Option<Spanned<i64>>,
    pub expected_status: Option<Spanned<Value>>,
}

/// `[[domain]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomain {
    pub host: Spanned<String>,
    #[serde(default)]
    pub mapping: Vec<RawMapping>,
}

/// `[[domain.mapping]]`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMapping {
    pub base_path: Option<Spanned<String>>,
    pub api: Spanned<String>,
    pub stage: Spanned<String>,
}

/// A table of string values, in file order, keys and values spanned.
pub(super) struct OrderedMap(pub Vec<(Spanned<String>, Spanned<String>)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------
// Generic spanned tree, for naming the key behind an error offset.

// The names `toml` (through `serde_spanned`) recognises to hand out spans.
// Asking for them directly, rather than through `toml::Spanned`, lets a
// value without a span (an implicit table) fall back to a plain value
// instead of failing.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_FIELDS: &[&str] = &[
    SPANNED_START,
    "$__serde_spanned_private_end",
    "$__serde_spanned_private_value",
];

/// A node of the document with its span, when `toml` knows it.
pub(super) struct SNode {
    span: Option<Range<usize>>,
    kind: Node,
}

enum Node {
    Table(Vec<(SKey, SNode)>),
    Array(Vec<SNode>),
    Leaf,
}

/// A table key with its span.
struct SKey {
    span: Option<Range<usize>>,
    name: String,
}

impl SNode {
    /// The dotted path of the key or value at byte offset `pos`: a key
    /// whose span holds `pos`, else the innermost value that holds it.
    pub(super) fn path_at(&self, pos: usize) -> Option<String> {
        let mut best = None;
        walk(self, pos, "", &mut best);
        best.map(|(_, path)| path)
    }
}

fn span_len(span: &Option<Range<usize>>, pos: usize) -> Option<usize> {
    let s = span.as_ref()?;
    (s.start <= pos && (pos < s.end || pos == s.start)).then(|| s.end - s.start)
}

fn consider(best: &mut Option<(usize, String)>, len: usize, path: &str) {
    if best.as_ref().is_none_or(|(l, _)| len <= *l) {
        *best = Some((len, path.to_string()));
    }
}

fn walk(node: &SNode, pos: usize, prefix: &str, best: &mut Option<(usize, String)>) {
    match &node.kind {
        Node::Table(entries) => {
            for (key, value) in entries {
                let path = join(prefix, &key_segment(&key.name));
                if span_len(&key.span, pos).is_some() {
                    consider(best, 0, &path);
                }
                if let Some(len) = span_len(&value.span, pos) {
                    consider(best, len, &path);
                }
                walk(value, pos, &path, best);
            }
        }
        Node::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{prefix}[{i}]");
                if let Some(len) = span_len(&item.span, pos) {
                    consider(best, len, &path);
                }
                walk(item, pos, &path, best);
            }
        }
        Node::Leaf => {}
    }
}

impl<'de> Deserialize<'de> for SNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor { spanned: true })
    }
}

/// A node deserialised without asking for its span (the value inside a
/// spanned wrapper).
struct Plain(SNode);

impl<'de> Deserialize<'de> for Plain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor { spanned: false }).map(Plain)
    }
}

struct NodeVisitor {
    spanned: bool,
}

fn leaf() -> SNode {
    SNode {
        span: None,
        kind: Node::Leaf,
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = SNode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SNode, E> {
        Ok(leaf())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SNode, E> {
        Ok(leaf())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SNode, E> {
        Ok(leaf())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SNode, E> {
        Ok(leaf())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<SNode, E> {
        Ok(leaf())
    }
    fn visit_unit<E: de::Error>(self) -> Result<SNode, E> {
        Ok(leaf())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<SNode>()? {
            items.push(item);
        }
        Ok(SNode {
            span: None,
            kind: Node::Array(items),
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SNode, A::Error> {
        let Some(first) = map.next_key::<SKey>()? else {
            return Ok(SNode {
                span: None,
                kind: Node::Table(Vec::new()),
            });
        };
        if self.spanned && first.name == SPANNED_START {
            let start: usize = map.next_value()?;
            let _ = map.next_key::<SKey>()?;
            let end: usize = map.next_value()?;
            let _ = map.next_key::<SKey>()?;
            let Plain(mut node) = map.next_value()?;
            node.span = Some(start..end);
            return Ok(node);
        }
        let mut entries = vec![(first, map.next_value::<SNode>()?)];
        while let Some(key) = map.next_key::<SKey>()? {
            entries.push((key, map.next_value::<SNode>()?));
        }
        Ok(SNode {
            span: None,
            kind: Node::Table(entries),
        })
    }
}

impl<'de> Deserialize<'de> for SKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SKey, E> {
                Ok(SKey {
                    span: None,
                    name: s.to_string(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SKey, A::Error> {
                let _ = map.next_key::<String>()?;
                let start: usize = map.next_value()?;
                let _ = map.next_key::<String>()?;
                let end: usize = map.next_value()?;
                let _ = map.next_key::<String>()?;
                let name: String = map.next_value()?;
                Ok(SKey {
                    span: Some(start..end),
                    name,
                })
            }
        }
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, V)
    }
}
