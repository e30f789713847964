//! Route keys (`"GET /pets/{id}"`, `"$default"`), mock body templates and
//! `http_proxy` URI templates.

#![forbid(unsafe_code)]

use super::{BodyPart, RouteKey};

/// The methods a route may name, in the order error messages list them.
pub(super) const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "ANY",
];

/// What is wrong and how to fix it; the caller adds the position.
pub(super) struct Problem {
    pub problem: String,
    pub fix: String,
}

fn problem(problem: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem {
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// A validated route key.
pub(super) struct ParsedRoute {
    pub key: RouteKey,
    /// Method and path with parameter names erased (`GET /a/{}/{+}`); two
    /// routes of one API with the same shape conflict.
    pub shape: String,
    /// Path parameter names, without the greedy `+`.
    pub params: Vec<String>,
}

/// Parses and validates a route key.
pub(super) fn parse_route(s: &str) -> Result<ParsedRoute, Problem> {
    if s == "$default" {
        return Ok(ParsedRoute {
            key: RouteKey::Default,
            shape: s.to_string(),
            params: Vec::new(),
        });
    }
    if s.starts_with('$') {
        return Err(problem(
            format!("unknown special route {s:?}"),
            "the only special route is \"$default\"",
        ));
    }
    let Some((method, path)) = s.split_once(' ') else {
        return Err(if s.starts_with('/') {
            problem(
                format!("route {s:?} has no method"),
                format!(
                    "write it as \"METHOD {s}\", e.g. \"GET {s}\", or \"ANY {s}\" for every method"
                ),
            )
        } else {
            problem(
                format!("route {s:?} is neither \"METHOD /path\" nor \"$default\""),
                "write e.g. \"GET /pets/{id}\", \"ANY /{proxy+}\" or \"$default\"",
            )
        });
    };
    if !METHODS.contains(&method) {
        let upper = method.to_ascii_uppercase();
        return Err(if METHODS.contains(&upper.as_str()) {
            problem(
                format!("method {method:?} must be written in upper case"),
                format!("write \"{upper} {path}\""),
            )
        } else {
            problem(
                format!("unknown method {method:?}"),
                "use one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY",
            )
        });
    }
    let (shape_path, params) = check_path(path)?;
    Ok(ParsedRoute {
        key: RouteKey::Route {
            method: (method != "ANY").then(|| method.to_string()),
            path: path.to_string(),
        },
        shape: format!("{method} {shape_path}"),
        params,
    })
}

fn literal_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.,:~@!$&'()*+;=".contains(c)
}

/// Validates a path template; returns its shape and parameter names.
fn check_path(path: &str) -> Result<(String, Vec<String>), Problem> {
    if path.starts_with(' ') {
        return Err(problem(
            "more than one space between the method and the path",
            "separate the method and the path with a single space",
        ));
    }
    if !path.starts_with('/') {
        return Err(problem(
            format!("path {path:?} must start with '/'"),
            format!("write \"/{path}\""),
        ));
    }
    if path == "/" {
        return Ok((path.to_string(), Vec::new()));
    }
    if path.ends_with('/') {
        return Err(problem(
            format!("path {path:?} ends with '/'"),
            format!(
                "remove the trailing '/': \"{}\" (only the root path \"/\" ends with '/')",
                path.trim_end_matches('/')
            ),
        ));
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut shape = String::new();
    let mut params: Vec<String> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            return Err(problem(
                format!("path {path:?} has an empty segment"),
                "remove the extra '/'",
            ));
        }
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, greedy) = match inner.strip_suffix('+') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(problem(
                    format!("parameter name {name:?} in {seg} is not valid"),
                    "name parameters with letters, digits and '_' only, e.g. {id} or {proxy+}",
                ));
            }
            if greedy && i + 1 != segments.len() {
                return Err(problem(
                    format!("greedy parameter {seg} must be the last segment of the path"),
                    format!("move {seg} to the end of the path, or use {{{name}}} to match a single segment"),
                ));
            }
            if params.iter().any(|p| p == name) {
                return Err(problem(
                    format!("parameter {{{name}}} appears more than once in the path"),
                    "give each parameter a different name",
                ));
            }
            params.push(name.to_string());
            shape.push_str(if greedy { "/{+}" } else { "/{}" });
        } else if seg.contains(['{', '}']) {
            return Err(problem(
                format!("segment {seg:?} mixes literal text and a parameter"),
                "a parameter must be a whole segment, e.g. /items/{id}",
            ));
        } else if let Some(c) = seg.chars().find(|c| !literal_char_ok(*c)) {
            let mut fix = "use only ASCII letters, digits and _ - . , : ~ @ ! $ & ' ( ) * + ; = in path segments".to_string();
            if c == '?' {
                fix.push_str("; a query string is not part of a route");
            }
            return Err(problem(
                format!("path segment {seg:?} contains {c:?}, which is not allowed"),
                fix,
            ));
        } else {
            shape.push('/');
            shape.push_str(seg);
        }
    }
    Ok((shape, params))
}

/// Whether `name` is a valid stage variable name: `[A-Za-z0-9_]{1,64}`.
pub(super) fn variable_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits a mock body into literal text, `${stageVariables.NAME}` and
/// `{param}` parts. Brace text that names no parameter stays literal.
pub(super) fn parse_body(body: &str, params: &[String]) -> Result<Vec<BodyPart>, Problem> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = body;
    let flush = |literal: &mut String, parts: &mut Vec<BodyPart>| {
        if !literal.is_empty() {
            parts.push(BodyPart::Literal(std::mem::take(literal)));
        }
    };
    while let Some(c) = rest.chars().next() {
        if let Some((name, after)) = stage_variable(rest)? {
            flush(&mut literal, &mut parts);
            parts.push(BodyPart::StageVariable(name.to_string()));
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix('{') {
            if let Some(name) = after.find('}').map(|end| &after[..end]) {
                if params.iter().any(|p| p == name) {
                    flush(&mut literal, &mut parts);
                    parts.push(BodyPart::PathParam(name.to_string()));
                    rest = &after[name.len() + 1..];
                    continue;
                }
            }
        }
        literal.push(c);
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut literal, &mut parts);
    Ok(parts)
}

const STAGE_VAR: &str = "${stageVariables.";

/// `Some((NAME, rest))` when `s` starts with `${stageVariables.NAME}`;
/// `None` when it does not start with `${stageVariables.`.
fn stage_variable(s: &str) -> Result<Option<(&str, &str)>, Problem> {
    let Some(after) = s.strip_prefix(STAGE_VAR) else {
        return Ok(None);
    };
    match after.find('}').map(|end| &after[..end]) {
        Some(name) if variable_name_ok(name) => Ok(Some((name, &after[name.len() + 1..]))),
        _ => Err(problem(
            "\"${stageVariables.\" is not followed by a variable name and '}'",
            "write ${stageVariables.NAME}, where NAME has letters, digits and '_' (at most 64)",
        )),
    }
}

/// An `http_proxy` uri split into templates.
pub(super) struct ParsedUri {
    /// The scheme is `https`.
    pub tls: bool,
    pub authority: Vec<BodyPart>,
    pub path: Vec<BodyPart>,
    pub query: Vec<BodyPart>,
}

/// Which part of a uri is being parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UriPart {
    Authority,
    Path,
    Query,
}

impl UriPart {
    fn name(self) -> &'static str {
        match self {
            UriPart::Authority => "host",
            UriPart::Path => "path",
            UriPart::Query => "query",
        }
    }

    fn char_ok(self, c: char) -> bool {
        let unreserved = c.is_ascii_alphanumeric() || "-._~".contains(c);
        match self {
            UriPart::Authority => unreserved || ":[]".contains(c),
            UriPart::Path => unreserved || "!$&'()*+,;=:@/".contains(c),
            UriPart::Query => unreserved || "!$&'()*+,;=:@/?".contains(c),
        }
    }
}

/// Whether `s` starts with `prefix`, ignoring ASCII case.
fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// Splits an `http_proxy` uri (`http[s]://AUTHORITY[/PATH][?QUERY]`) into
/// templates and checks their syntax. `params` are the route's path
/// parameter names. Whether the authority names an upstream or a valid
/// `host:port` is left to the caller.
pub(super) fn parse_uri(uri: &str, params: &[String]) -> Result<ParsedUri, Problem> {
    let tls = starts_with_ci(uri, "https://");
    if !tls && !starts_with_ci(uri, "http://") {
        let problem_text = match uri.split_once("://") {
            Some((scheme, _)) => format!("uri {uri:?} has the unsupported scheme {scheme:?}"),
            None => format!("uri {uri:?} does not start with \"http://\" or \"https://\""),
        };
        return Err(problem(
            problem_text,
            "write an absolute http or https uri, e.g. \"http://my-upstream/path\" or \"https://127.0.0.1:9443/path\"",
        ));
    }
    if let Some(i) = uri.find('#') {
        return Err(problem(
            format!("uri {uri:?} has a fragment ({:?})", &uri[i..]),
            "remove the '#' and what follows; fragments are never sent to a server",
        ));
    }
    let rest = &uri[if tls {
        "https://".len()
    } else {
        "http://".len()
    }..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority_text, rest) = rest.split_at(end);
    if authority_text.is_empty() {
        return Err(problem(
            format!("uri {uri:?} has no host"),
            "write the name of an [[upstream]] or a host:port after the scheme, e.g. \"http://pets/v1\"",
        ));
    }
    if authority_text.contains('@') {
        return Err(problem(
            format!("uri {uri:?} has user information before '@'"),
            "remove it; credentials in uris are not supported",
        ));
    }
    let (path_text, query_text) = match rest.split_once('?') {
        Some((p, q)) => (p, q),
        None => (rest, ""),
    };
    let authority = parse_uri_part(authority_text, params, UriPart::Authority)?;
    let path = if path_text.is_empty() {
        vec![BodyPart::Literal("/".to_string())]
    } else {
        parse_uri_part(path_text, params, UriPart::Path)?
    };
    let query = parse_uri_part(query_text, params, UriPart::Query)?;
    Ok(ParsedUri {
        tls,
        authority,
        path,
        query,
    })
}

/// Parses one part of a uri: literal URI characters and `%XX` escapes,
/// `${stageVariables.NAME}` and (outside the authority) `{param}`.
fn parse_uri_part(text: &str, params: &[String], part: UriPart) -> Result<Vec<BodyPart>, Problem> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    let flush = |literal: &mut String, parts: &mut Vec<BodyPart>| {
        if !literal.is_empty() {
            parts.push(BodyPart::Literal(std::mem::take(literal)));
        }
    };
    let where_ = part.name();
    while let Some(c) = rest.chars().next() {
        if let Some((name, after)) = stage_variable(rest)? {
            flush(&mut literal, &mut parts);
            parts.push(BodyPart::StageVariable(name.to_string()));
            rest = after;
            continue;
        }
        if c == '{' {
            let Some(end) = rest.find('}') else {
                return Err(problem(
                    format!("'{{' in the uri's {where_} is not closed by '}}'"),
                    "write a path parameter as {name}, or percent-encode a literal '{' as %7B",
                ));
            };
            let inner = &rest[1..end];
            let bare = inner.strip_suffix('+').unwrap_or(inner);
            let known = if params.is_empty() {
                "remove it; this route has no path parameters".to_string()
            } else {
                format!(
                    "use one of the route's parameters: {}",
                    params
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            if part == UriPart::Authority {
                return Err(problem(
                    format!("path parameter {{{inner}}} cannot be used in the uri's host"),
                    "use a parameter in the path or query, or ${stageVariables.NAME} in the host",
                ));
            }
            if inner.ends_with('+') && params.iter().any(|p| p == bare) {
                return Err(problem(
                    format!("write {{{bare}}} in the uri, not {{{inner}}}"),
                    format!("the greedy parameter {{{inner}}} of the route is written {{{bare}}} in the uri"),
                ));
            }
            if !params.iter().any(|p| p == inner) {
                return Err(problem(
                    format!(
                        "{{{inner}}} in the uri's {where_} is not a path parameter of the route"
                    ),
                    format!("{known}; percent-encode literal braces as %7B and %7D"),
                ));
            }
            flush(&mut literal, &mut parts);
            parts.push(BodyPart::PathParam(inner.to_string()));
            rest = &rest[end + 1..];
            continue;
        }
        if c == '%' {
            let hex = rest
                .get(1..3)
                .filter(|h| h.chars().all(|c| c.is_ascii_hexdigit()));
            match hex {
                Some(h) if part != UriPart::Authority => {
                    literal.push('%');
                    literal.push_str(h);
                    rest = &rest[3..];
                    continue;
                }
                _ => {}
            }
            let fix = if part == UriPart::Authority {
                "remove it; a host cannot contain percent escapes".to_string()
            } else {
                "write '%' as %25; a '%' must start an escape like %2F".to_string()
            };
            return Err(problem(
                format!("'%' in the uri's {where_} does not start a %XX escape"),
                fix,
            ));
        }
        if !part.char_ok(c) {
            let fix = match part {
                UriPart::Authority => "write the name of an [[upstream]] or host:port, with letters, digits, '-', '.', '_' and ':' (IPv6 as [addr]:port)".to_string(),
                _ => format!(
                    "percent-encode it (e.g. {:?} as {})",
                    c,
                    c.to_string()
                        .bytes()
                        .map(|b| format!("%{b:02X}"))
                        .collect::<String>()
                ),
            };
            return Err(problem(
                format!("the uri's {where_} contains {c:?}, which is not allowed there"),
                fix,
            ));
        }
        literal.push(c);
        rest = &rest[c.len_utf8()..];
    }
    flush(&mut literal, &mut parts);
    Ok(parts)
}
