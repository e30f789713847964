//! Route keys (`"GET /pets/{id}"`, `"$default"`) and mock body templates.

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
    const STAGE_VAR: &str = "${stageVariables.";
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = body;
    let flush = |literal: &mut String, parts: &mut Vec<BodyPart>| {
        if !literal.is_empty() {
            parts.push(BodyPart::Literal(std::mem::take(literal)));
        }
    };
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix(STAGE_VAR) {
            let name = after.find('}').map(|end| &after[..end]);
            match name {
                Some(name) if variable_name_ok(name) => {
                    flush(&mut literal, &mut parts);
                    parts.push(BodyPart::StageVariable(name.to_string()));
                    rest = &after[name.len() + 1..];
                    continue;
                }
                _ => {
                    return Err(problem(
                        "\"${stageVariables.\" is not followed by a variable name and '}'",
                        "write ${stageVariables.NAME}, where NAME has letters, digits and '_' (at most 64)",
                    ))
                }
            }
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
