//! The TOML an import writes: a header of comments (what was
//! approximated and left out), the upstreams and domain it needs, then
//! the `[[api]]` with its stages and routes, each route's notes above it.
//! Strings go through `toml`'s own quoting; comments are one line each,
//! control characters replaced.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Integration, Note, Route};

/// What the file says besides its routes.
pub(super) struct Head<'a> {
    pub(super) title: &'a str,
    pub(super) format: &'a str,
    pub(super) api: &'a str,
    pub(super) http_api: bool,
    pub(super) hosts: &'a [String],
    pub(super) stages: &'a [(String, BTreeMap<String, String>)],
    pub(super) root_stage: Option<&'a str>,
    pub(super) cache_capacity: Option<&'a str>,
    pub(super) stage_caches: &'a BTreeMap<String, String>,
    pub(super) upstreams: &'a [(String, bool)],
    /// `x-ringgate-upstreams`: name, targets, TLS.
    pub(super) groups: &'a [(String, Vec<String>, bool)],
}

/// A TOML string: quoted and escaped.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A comment line's text: one line, no control characters.
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

pub(super) fn write_toml(
    head: &Head<'_>,
    routes: &[Route],
    approximated: &[Note],
    left_out: &[Note],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported by `ringgate import openapi` from {} ({}).",
        comment_text(&format!("{:?}", head.title)),
        head.format
    );
    out.push_str("# Check it with `ringgate check --config FILE`, serve it with `ringgate serve --config FILE`.\n");
    if !approximated.is_empty() {
        out.push_str("#\n# Approximated (imported, but not exactly as API Gateway does it):\n");
        for n in approximated {
            let _ = writeln!(out, "#   {}", comment_text(&n.to_string()));
        }
    }
    if !left_out.is_empty() {
        out.push_str("#\n# Left out (not imported):\n");
        for n in left_out {
            let _ = writeln!(out, "#   {}", comment_text(&n.to_string()));
        }
    }
    for (name, tls) in head.upstreams {
        let _ = writeln!(
            out,
            "\n# Stands for the gateway's own [[upstream]] {name}.\n[[upstream]]\nname = {}\ntargets = [\"127.0.0.1:9\"]{}",
            q(name),
            if *tls { "\ntls = { verify = false }" } else { "" }
        );
    }
    for (name, targets, tls) in head.groups {
        let targets: Vec<String> = targets.iter().map(|t| q(t)).collect();
        let _ = writeln!(
            out,
            "\n[[upstream]]\nname = {}\ntargets = [{}]{}",
            q(name),
            targets.join(", "),
            if *tls { "\ntls = {}" } else { "" }
        );
    }
    if let Some(stage) = head.root_stage {
        out.push_str(
            "\n# The HTTP API's $default stage: served at the root of every host, as API Gateway serves it.\n",
        );
        let _ = writeln!(out, "[[domain]]\nhost = \"*\"\n  [[domain.mapping]]\n  base_path = \"\"\n  api = {}\n  stage = {}", q(head.api), q(stage));
    }
    let _ = writeln!(out, "\n[[api]]\nname = {}", q(head.api));
    if !head.hosts.is_empty() {
        if head.root_stage.is_some() {
            out.push_str("# With a [[domain]] \"*\" every host is served through the domain; an API beside\n# one names hosts of its own.\n");
        }
        let hosts: Vec<String> = head.hosts.iter().map(|h| q(h)).collect();
        let _ = writeln!(out, "hosts = [{}]", hosts.join(", "));
    }
    let _ = writeln!(
        out,
        "unmatched_route = {}",
        q(if head.http_api {
            "not_found"
        } else {
            "missing_authentication_token"
        })
    );
    for (name, vars) in head.stages {
        let _ = writeln!(out, "\n  [[api.stage]]\n  name = {}", q(name));
        if !vars.is_empty() {
            let _ = writeln!(out, "  variables = {}", inline_table(vars.iter()));
        }
        let capacity = head
            .cache_capacity
            .or_else(|| head.stage_caches.get(name).map(String::as_str));
        if let Some(c) = capacity {
            let _ = writeln!(out, "  cache = {{ capacity = {} }}", q(c));
        }
    }
    for r in routes {
        out.push('\n');
        for c in &r.comments {
            let _ = writeln!(out, "  # {}", comment_text(c));
        }
        let _ = writeln!(out, "  [[api.route]]\n  route = {}", q(&r.key));
        if r.api_key_required {
            out.push_str("  api_key_required = true\n");
        }
        if let Some((rate, burst)) = r.client_throttle {
            let _ = writeln!(
                out,
                "  client_throttle = {{ rate = {rate}, burst = {burst} }}"
            );
        }
        match &r.integration {
            Integration::Proxy {
                uri,
                timeout_ms,
                preserve_host,
                allow_upgrade,
            } => {
                let _ = writeln!(out, "  [api.route.http_proxy]\n  uri = {}", q(uri));
                if let Some(ms) = timeout_ms {
                    let t = if ms % 1000 == 0 {
                        format!("{}s", ms / 1000)
                    } else {
                        format!("{ms}ms")
                    };
                    let _ = writeln!(out, "  timeout = {}", q(&t));
                }
                if *preserve_host {
                    out.push_str("  preserve_host = true\n");
                }
                if *allow_upgrade {
                    out.push_str("  allow_upgrade = true\n");
                }
            }
            Integration::Mock {
                status,
                headers,
                body,
            } => {
                out.push_str("  [api.route.mock]\n");
                if *status != 200 {
                    let _ = writeln!(out, "  status = {status}");
                }
                if !headers.is_empty() {
                    let _ = writeln!(
                        out,
                        "  headers = {}",
                        inline_table(headers.iter().map(|(k, v)| (k, v)))
                    );
                }
                if !body.is_empty() {
                    let _ = writeln!(out, "  body = {}", q(body));
                }
            }
        }
        if let Some(c) = &r.cache {
            out.push_str("  [api.route.cache]\n");
            if let Some(e) = c.enabled {
                let _ = writeln!(out, "  enabled = {e}");
            }
            if let Some(t) = c.ttl_seconds {
                let _ = writeln!(out, "  ttl = \"{t}s\"");
            }
            if !c.key_parameters.is_empty() {
                let list: Vec<String> = c.key_parameters.iter().map(|p| q(p)).collect();
                let _ = writeln!(out, "  key_parameters = [{}]", list.join(", "));
            }
            if let Some(ns) = &c.namespace {
                let _ = writeln!(out, "  namespace = {}", q(ns));
            }
        }
    }
    out
}

fn inline_table<'a>(entries: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let parts: Vec<String> = entries
        .map(|(k, v)| format!("{} = {}", q(k), q(v)))
        .collect();
    format!("{{ {} }}", parts.join(", "))
}
