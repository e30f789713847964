//! [`ConfigError`], byte-offset to line/column conversion, and the
//! translation of `toml`/serde errors into errors a person can act on.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

use super::raw::SNode;

/// One problem found in a configuration file, pointing at the offending
/// value (or key) and saying how to fix it.
///
/// Displayed as
///
/// ```text
/// config/ringgate.toml:12:9: api[0].route[2].route: unknown method "FETCH"
///   fix: use one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY
/// ```
///
/// A file that cannot be read at all gives `line` and `column` 0 and an
/// empty `key`; the position is then left out of the display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given to [`load`](super::load) or
    /// [`parse`](super::parse).
    pub file: String,
    /// 1-based line of the offending value or key; 0 when there is none.
    pub line: usize,
    /// 1-based column (in characters) of the offending value or key; 0
    /// when there is none.
    pub column: usize,
    /// Dotted path of the offending key, with 0-based array indices, e.g.
    /// `api[0].route[2].route` or `server.workers`.
    pub key: String,
    /// What is wrong, in one line.
    pub problem: String,
    /// What to do about it, in one line.
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)?;
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The error for a file that could not be read.
    pub(super) fn read(file: &str, err: &std::io::Error) -> Self {
        ConfigError {
            file: file.to_string(),
            line: 0,
            column: 0,
            key: String::new(),
            problem: format!("cannot read the configuration file: {err}"),
            fix: "check the path given with --config and the file's permissions".to_string(),
        }
    }
}

/// The text being parsed, with what is needed to turn byte offsets into
/// line/column positions and build errors.
pub(super) struct Source<'a> {
    pub(super) file: &'a str,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(super) fn new(text: &'a str, file: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            file,
            text,
            line_starts,
        }
    }

    /// 1-based (line, column) of a byte offset; the column counts characters.
    pub(super) fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let idx = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[idx];
        (idx + 1, self.text[start..offset].chars().count() + 1)
    }

    /// 1-based line of the start of a span.
    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        self.line_col(span.start).0
    }

    /// An error pointing at the start of `span`.
    pub(super) fn error(
        &self,
        span: &Range<usize>,
        key: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = self.line_col(span.start);
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// Translates an error from `toml::from_str` (a syntax error, or a serde
    /// error such as an unknown field, a wrong type or a missing field).
    pub(super) fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let span = err.span().unwrap_or(0..0);
        let message = err
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        match toml::from_str::<SNode>(self.text) {
            // The document itself does not parse: a TOML syntax error.
            Err(_) => {
                let fix = if message.contains("duplicate key") {
                    "remove or rename the second one; a key may appear once per table".to_string()
                } else {
                    "correct the TOML syntax here: strings need quotes (key = \"value\"), \
                     tables are [name] and arrays of tables [[name]]"
                        .to_string()
                };
                self.error(
                    &span,
                    self.syntax_key(span.start),
                    format!("invalid TOML: {message}"),
                    fix,
                )
            }
            // Valid TOML that does not fit the schema.
            Ok(tree) => {
                let path = tree.path_at(span.start).unwrap_or_default();
                data_error(self, &span, path, &in_toml_terms(&message))
            }
        }
    }

    /// Best-effort dotted key for a syntax error: the table header in
    /// effect (with array-of-tables indices) plus the key on the error line.
    fn syntax_key(&self, offset: usize) -> String {
        let (line, _) = self.line_col(offset);
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut current = String::new();
        for text in self.text.lines().take(line.saturating_sub(1)) {
            let t = text.trim();
            if let Some(rest) = t.strip_prefix("[[") {
                let name = header_name(rest.split("]]").next().unwrap_or(""));
                counts.retain(|k, _| !k.starts_with(&format!("{name}.")));
                *counts.entry(name.clone()).or_insert(0) += 1;
                current = indexed(&name, &counts);
            } else if let Some(rest) = t.strip_prefix('[') {
                let name = header_name(rest.split(']').next().unwrap_or(""));
                current = indexed(&name, &counts);
            }
        }
        let error_line = self.text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        let t = error_line.trim();
        if !t.starts_with('[') && !t.starts_with('#') {
            if let Some((k, _)) = t.split_once('=') {
                let k = header_name(k);
                if !k.is_empty() && !k.contains(char::is_whitespace) {
                    return join(&current, &k);
                }
            }
        }
        current
    }
}

/// Normalises a header or key text: `a . "b"` -> `a.b`.
fn header_name(s: &str) -> String {
    s.split('.')
        .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".")
}

/// Adds `[n]` after each prefix of `name` that is an array of tables.
fn indexed(name: &str, counts: &HashMap<String, usize>) -> String {
    let mut plain = String::new();
    let mut out = String::new();
    for part in name.split('.') {
        if !plain.is_empty() {
            plain.push('.');
            out.push('.');
        }
        plain.push_str(part);
        out.push_str(part);
        if let Some(n) = counts.get(&plain).filter(|n| **n > 0) {
            out.push_str(&format!("[{}]", n - 1));
        }
    }
    out
}

/// Rewrites serde's Rust-flavoured type names in TOML terms.
fn in_toml_terms(message: &str) -> String {
    let mut out = message
        .replace("a sequence", "an array")
        .replace("expected i64", "expected an integer")
        .replace("expected a map", "expected a table");
    // "expected struct RawMock" names an internal type.
    if let Some(i) = out.find("expected struct Raw") {
        out.truncate(i);
        out.push_str("expected a table");
    }
    out
}

/// `prefix.name`, or `name` when the prefix is empty.
pub(super) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A key as it would be written in a dotted path: bare when possible,
/// quoted otherwise.
pub(super) fn key_segment(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// The `a`, `b` in "... expected one of `a`, `b`".
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// Builds the error for a serde (schema) error at `path`.
fn data_error(src: &Source<'_>, span: &Range<usize>, path: String, message: &str) -> ConfigError {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or("");
        let expected = rest.split_once(", expected").map(|(_, e)| e).unwrap_or("");
        let allowed = backticked(expected);
        let key = if path.is_empty() {
            key_segment(field)
        } else {
            path
        };
        let mut fix = if allowed.is_empty() {
            "remove it; no keys are allowed here".to_string()
        } else {
            format!(
                "remove it; the keys allowed here are: {}",
                allowed.join(", ")
            )
        };
        if let Some(near) = closest(field, &allowed) {
            fix.push_str(&format!(" (did you mean `{near}`?)"));
        }
        return src.error(span, key, format!("unknown field `{field}`"), fix);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or("");
        return src.error(
            span,
            join(&path, field),
            message,
            format!("add `{field} = ...` to this table"),
        );
    }
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let fix = match message.rsplit_once("expected ") {
            Some((_, expected)) => format!("change the value to {expected}"),
            None => "correct the value".to_string(),
        };
        return src.error(span, path, message, fix);
    }
    src.error(
        span,
        path,
        message,
        "correct this value (see the example configuration)",
    )
}

/// The allowed key closest to a misspelt one, if it is close enough.
fn closest<'s>(field: &str, allowed: &[&'s str]) -> Option<&'s str> {
    allowed
        .iter()
        .map(|a| (edit_distance(field, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
