//! Moving from Amazon API Gateway: its OpenAPI exports in, ringgate
//! configuration out, and back.
//!
//! - [`import()`]: an OpenAPI 3.0 or Swagger 2.0 document (JSON or YAML),
//!   as `aws apigateway get-export --parameters extensions=apigateway` or
//!   `aws apigatewayv2 export-api` write it, becomes a ringgate TOML file
//!   with one `[[api]]`, and a [`Summary`] of what was imported,
//!   approximated and left out. The file is checked before it is handed
//!   back (it passes `ringgate check`): a route that would not validate is
//!   left out, with the reason, rather than failing the import.
//! - [`export`]: an API of a configuration, or a deployment's frozen
//!   definition, becomes an OpenAPI 3.0.1 document with API Gateway's
//!   extensions; importing it gives the same configuration back.
//!
//! ## What an import understands
//! | in the document | becomes |
//! |---|---|
//! | paths and methods, `x-amazon-apigateway-any-method`, `{param}`, greedy `{proxy+}`, the HTTP API's `$default` path | `[[api.route]]` `route = "GET /pets/{id}"`, `"ANY /{proxy+}"`, `"$default"` |
//! | integration `http_proxy` (`connectionType` `INTERNET`) | `[api.route.http_proxy]`: `uri` (a host without a port gets the scheme's), `timeout` from `timeoutInMillis` (29 s at most) |
//! | integration `http` | the same, with a note: request and response mappings are not applied |
//! | `requestParameters` | path placeholders of the uri from path parameters, literals and stage variables; query parameters added to the uri's query; same-name query and header mappings are what a proxy does anyway; others are left out, named |
//! | integration `mock` | `[api.route.mock]`: the status its `requestTemplates` choose, the integration response it selects (selection patterns are regexes), static `responseParameters` headers, the `responseTemplates` body (`$stageVariables.x` and `$input.params('p')` converted; other VTL kept as text, noted) |
//! | `cacheKeyParameters`, `cacheNamespace` | `[api.route.cache]` `key_parameters`, `namespace` |
//! | `security` naming an API key scheme | `api_key_required = true` |
//! | an HTTP API's `$ref` to `components/x-amazon-apigateway-integrations` | followed |
//! | `servers` / `basePath` | the stage name (`--stage` overrides); an HTTP API's `$default` stage is stage `default` served at the root through a `[[domain]] host = "*"` |
//! | stage variables in uris and bodies | `[[api.stage]] variables` (values from `--variable`) |
//!
//! Reported, never silently dropped: Lambda (`aws_proxy`), AWS-service
//! (`aws`) and VPC-link integrations, authorizers, IAM
//! (`x-amazon-apigateway-auth`) and other security schemes (such a route
//! is left out, not served unprotected), resource policies, gateway
//! responses, request validators, CORS, binary media types, and an API key
//! source other than the header.
//!
//! ## Errors
//! A document that cannot be read as the structure above (a value of the
//! wrong type where the import needs it) is an [`ImportError`] naming the
//! JSON pointer inside the document (`/paths/~1pets/get/...`); syntax
//! errors name the line and column.

#![forbid(unsafe_code)]

pub mod cli;
mod export;
mod import;
#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::Value;

pub(crate) use export::{capacity, export_name, root_stage};
pub use export::{export, export_config, ExportContext, ExportStage};
pub use import::{import, ImportOptions, Imported, Note, Summary};

/// The largest document an import reads: 8 MiB (API Gateway's own import
/// limit is 6 MB).
pub const MAX_DOCUMENT_BYTES: usize = 8 << 20;

/// The deepest `[`/`{` nesting a YAML document may have.
const MAX_FLOW_DEPTH: usize = 160;

/// The deepest nesting of `[` and `{` in `text`, strings and comments not
/// told apart (an over-estimate).
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A document that cannot be imported: where in it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The JSON pointer (RFC 6901) of the offending value; `""` for the
    /// document as a whole.
    pub pointer: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl ImportError {
    pub(crate) fn at(pointer: &str, message: impl Into<String>) -> ImportError {
        ImportError {
            pointer: pointer.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "(document): {}", self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

impl std::error::Error for ImportError {}

/// Reads a document as JSON (when it starts with `{` or `[`) or YAML.
pub fn parse_document(text: &str) -> Result<Value, ImportError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(ImportError::at(
            "",
            format!(
                "the document is {} bytes; at most {MAX_DOCUMENT_BYTES} are read",
                text.len()
            ),
        ));
    }
    let trimmed = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    if trimmed.starts_with(['{', '[']) {
        serde_json::from_str(trimmed).map_err(|e| {
            ImportError::at(
                "",
                format!(
                    "not valid JSON: line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })
    } else {
        // libyaml's time grows with the square of flow nesting ("[[[[…"),
        // and serde refuses more than 128 levels anyway: refuse deep
        // documents before parsing. Brackets inside quoted strings count
        // too, so the bound leaves room.
        if flow_depth(trimmed) > MAX_FLOW_DEPTH {
            return Err(ImportError::at(
                "",
                format!("not valid YAML: nested deeper than {MAX_FLOW_DEPTH} levels"),
            ));
        }
        let value: Value = serde_norway::from_str(trimmed).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {} column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            ImportError::at("", format!("not valid YAML or JSON: {at}{e}"))
        })?;
        Ok(value)
    }
}

/// `pointer` extended by one reference token, escaped as RFC 6901 says.
pub(crate) fn child(pointer: &str, token: &str) -> String {
    let mut out = String::with_capacity(pointer.len() + token.len() + 1);
    out.push_str(pointer);
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}
