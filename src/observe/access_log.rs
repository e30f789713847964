//! Access logs as Amazon API Gateway writes them: a format of literal text
//! and `$context` variables, one line per request.
//!
//! ## Formats
//! [`LogFormat::parse`] compiles a format such as
//! `$context.identity.sourceIp [$context.requestTime] "$context.httpMethod
//! $context.resourcePath" $context.status $context.requestId` into
//! [`Part`]s once, at configuration time. The variables are API Gateway's
//! (see [`Var`]; an unknown one is an error naming it and the known names
//! close to it), plus `$context.ringgate.outcome` (the request's
//! [`crate::gateway::outcome::Outcome`] name). As in API Gateway, a format
//! must carry `$context.requestId` or `$context.extendedRequestId` and is
//! at most [`MAX_FORMAT_LEN`] bytes. API Gateway's four console presets
//! are [`LogFormat::preset`]s: `clf`, `json`, `csv` and `http_api_clf`.
//!
//! ## Escaping
//! Values come from the client (the path, the `User-Agent`, the `Host`), so
//! each is escaped for the format's kind ([`Escape`]), chosen at parse:
//! JSON string content when the format starts with `{` (a value is ASCII
//! and never breaks the JSON, whatever bytes the client sent), CSV quoting
//! for the `csv` preset, and nginx's `\xHH` for `"`, `\`, control bytes
//! and non-ASCII bytes otherwise (a CLF line never holds a raw quote or
//! line break inside a value). A value that is unset or empty is `-`, in
//! every kind — so, as in API Gateway, a variable a JSON format leaves
//! outside quotes (`"status":$context.status`) gives invalid JSON when
//! unset; the `json` preset quotes them all. Literal text is written as it is in the format; line breaks in the
//! format become spaces, so a record is always one line ending `\n`.
//!
//! ## The request path
//! [`LogFormat::write`] appends one line for a [`LogRecord`] (borrowed
//! values and plain numbers the pipeline already has) to a `Vec<u8>` and
//! allocates nothing when it has room: numbers are written digit by digit,
//! and `$context.requestTime` (CLF time, UTC) is formatted once a second by
//! a per-worker [`ClfClock`].
//!
//! ## Writing
//! [`AccessLog::start`] opens the file (or stdout) and starts a thread
//! named `ringgate-log` that writes batches of lines. Each worker fills a
//! [`LogBuffer`] of its own (64 KiB, reused) and ships it once it passes
//! 32 KiB (or when [`LogBuffer::flush`] is called) through a bounded queue:
//! one message per 32 KiB, not per line. The writer sends each written
//! buffer back through a second queue, so in a steady state no buffer is
//! allocated. A full queue — a slow or stuck disk — never blocks a worker:
//! the batch's lines are dropped and counted ([`LogStats::dropped_lines`]).
//! [`AccessLog::reopen`] reopens the file at its path (after logrotate
//! renamed it); [`AccessLog::stop`] writes whatever was shipped and joins
//! the thread.

#![forbid(unsafe_code)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{self, Receiver, Sender};

use crate::http::date::civil_from_days;

/// The longest format accepted, in bytes (API Gateway's 3 KB).
pub const MAX_FORMAT_LEN: usize = 3072;

/// The capacity of a worker's [`LogBuffer`].
pub const BUFFER_CAPACITY: usize = 64 * 1024;

/// A [`LogBuffer`] holding this many bytes or more is shipped to the writer.
pub const SHIP_AT: usize = 32 * 1024;

/// The writer reports failures on stderr at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------

/// A `$context` variable, as compiled. Several API Gateway names may map to
/// one variable (`integrationLatency` and `integration.latency`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    /// `requestId`: [`LogRecord::request_id`].
    RequestId,
    /// `extendedRequestId`: [`LogRecord::extended_request_id`].
    ExtendedRequestId,
    /// `identity.sourceIp`: [`LogRecord::source_ip`].
    SourceIp,
    /// `identity.userAgent`: [`LogRecord::user_agent`].
    UserAgent,
    /// `identity.apiKey` and `identity.apiKeyId`: both the key's *id*
    /// ([`LogRecord::api_key_id`]); a key's value is never logged.
    ApiKeyId,
    /// `httpMethod`: [`LogRecord::method`].
    HttpMethod,
    /// `resourcePath`: the route template ([`LogRecord::resource_path`]).
    ResourcePath,
    /// `routeKey`: the method, a space and the route template.
    RouteKey,
    /// `path`: the path as received ([`LogRecord::path`]).
    Path,
    /// `stage`: [`LogRecord::stage`].
    Stage,
    /// `apiId`: [`LogRecord::api_id`].
    ApiId,
    /// `resourceId`: [`LogRecord::resource_id`].
    ResourceId,
    /// `accountId`: [`LogRecord::account_id`].
    AccountId,
    /// `domainName`: [`domain_name`] of [`LogRecord::host`].
    DomainName,
    /// `domainPrefix`: the first label of [`domain_name`] of [`LogRecord::host`].
    DomainPrefix,
    /// `protocol`: [`LogRecord::protocol`].
    Protocol,
    /// `requestTime`: CLF time, `dd/Mmm/yyyy:HH:mm:ss +0000` (UTC).
    RequestTime,
    /// `requestTimeEpoch`: milliseconds since the Unix epoch.
    RequestTimeEpoch,
    /// `status`: [`LogRecord::status`].
    Status,
    /// `responseLength`: [`LogRecord::response_length`].
    ResponseLength,
    /// `responseLatency`: whole milliseconds.
    ResponseLatency,
    /// `integrationLatency`, `integration.latency`: whole milliseconds.
    IntegrationLatency,
    /// `integrationStatus`, `integration.status`.
    IntegrationStatus,
    /// `integrationErrorMessage`, `integration.error`.
    IntegrationError,
    /// `error.message`: [`LogRecord::error_message`].
    ErrorMessage,
    /// `error.responseType`: [`LogRecord::error_response_type`].
    ErrorResponseType,
    /// `customDomain.basePathMatched`: [`LogRecord::base_path_matched`].
    BasePathMatched,
    /// `isCanaryRequest`: `true` or `false`.
    IsCanaryRequest,
    /// `ringgate.outcome`: [`LogRecord::outcome`].
    Outcome,
    /// `identity.clientCert.clientCertPem`: [`ClientCertFields::pem`].
    ClientCertPem,
    /// `identity.clientCert.subjectDN`.
    ClientCertSubject,
    /// `identity.clientCert.issuerDN`.
    ClientCertIssuer,
    /// `identity.clientCert.serialNumber`.
    ClientCertSerial,
    /// `identity.clientCert.validity.notBefore`.
    ClientCertNotBefore,
    /// `identity.clientCert.validity.notAfter`.
    ClientCertNotAfter,
    /// Always `-`: what ringgate does not have — `identity.caller`,
    /// `identity.user` (no IAM authorization), `xrayTraceId`, and every
    /// `authorizer.*`, `authorize.*`, `authenticate.*`, `waf*` name, and
    /// any other `identity.clientCert.*` name.
    Unset,
}

/// The variable names after `$context.`, and what each compiles to.
const NAMES: &[(&str, Var)] = &[
    ("requestId", Var::RequestId),
    ("extendedRequestId", Var::ExtendedRequestId),
    ("identity.sourceIp", Var::SourceIp),
    ("identity.userAgent", Var::UserAgent),
    ("identity.caller", Var::Unset),
    ("identity.user", Var::Unset),
    ("identity.apiKey", Var::ApiKeyId),
    ("identity.apiKeyId", Var::ApiKeyId),
    ("httpMethod", Var::HttpMethod),
    ("resourcePath", Var::ResourcePath),
    ("routeKey", Var::RouteKey),
    ("path", Var::Path),
    ("stage", Var::Stage),
    ("apiId", Var::ApiId),
    ("resourceId", Var::ResourceId),
    ("accountId", Var::AccountId),
    ("domainName", Var::DomainName),
    ("domainPrefix", Var::DomainPrefix),
    ("protocol", Var::Protocol),
    ("requestTime", Var::RequestTime),
    ("requestTimeEpoch", Var::RequestTimeEpoch),
    ("status", Var::Status),
    ("responseLength", Var::ResponseLength),
    ("responseLatency", Var::ResponseLatency),
    ("integrationLatency", Var::IntegrationLatency),
    ("integration.latency", Var::IntegrationLatency),
    ("integration.status", Var::IntegrationStatus),
    ("integrationStatus", Var::IntegrationStatus),
    ("integrationErrorMessage", Var::IntegrationError),
    ("integration.error", Var::IntegrationError),
    ("error.message", Var::ErrorMessage),
    ("error.responseType", Var::ErrorResponseType),
    ("customDomain.basePathMatched", Var::BasePathMatched),
    ("xrayTraceId", Var::Unset),
    ("isCanaryRequest", Var::IsCanaryRequest),
    ("ringgate.outcome", Var::Outcome),
    ("identity.clientCert.clientCertPem", Var::ClientCertPem),
    ("identity.clientCert.subjectDN", Var::ClientCertSubject),
    ("identity.clientCert.issuerDN", Var::ClientCertIssuer),
    ("identity.clientCert.serialNumber", Var::ClientCertSerial),
    (
        "identity.clientCert.validity.notBefore",
        Var::ClientCertNotBefore,
    ),
    (
        "identity.clientCert.validity.notAfter",
        Var::ClientCertNotAfter,
    ),
];

/// Families accepted with any suffix (after a `.`), always `-`.
const UNSET_FAMILIES: &[&str] = &[
    "authorizer",
    "authorize",
    "authenticate",
    "identity.clientCert",
];

/// The variable `name` (after `$context.`) compiles to, if known.
fn lookup(name: &str) -> Option<Var> {
    if let Some(&(_, v)) = NAMES.iter().find(|(n, _)| *n == name) {
        return Some(v);
    }
    let family = UNSET_FAMILIES.iter().any(|f| {
        name.strip_prefix(f)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    });
    (family || name.starts_with("waf")).then_some(Var::Unset)
}

/// The known names close to an unknown `name`, closest first (at most 4).
fn close_names(name: &str) -> Vec<&'static str> {
    let lower = name.to_ascii_lowercase();
    let mut scored: Vec<(usize, &'static str)> = NAMES
        .iter()
        .filter_map(|&(known, _)| {
            let k = known.to_ascii_lowercase();
            let d = edit_distance(&lower, &k);
            let contains = lower.len() >= 4 && (k.contains(&lower) || lower.contains(&k));
            (d <= (name.len() / 3).max(2) || contains).then_some((d, known))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(4).map(|(_, n)| n).collect()
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// One piece of a compiled format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Text written as it is.
    Literal(Box<[u8]>),
    /// A variable's value, escaped for the format's kind.
    Var(Var),
}

/// How values are escaped (literal text never is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// nginx's: `"`, `\`, control bytes and bytes from 0x7f are written
    /// `\xHH`. The default.
    Clf,
    /// JSON string content: `\"`, `\\`, `\n`, `\r`, `\t`, and `\u00XX` for
    /// other control bytes and every byte from 0x7f (so a line is ASCII;
    /// `\u00XX` decodes back to the byte `XX`). For formats starting `{`.
    Json,
    /// CSV: a value holding `,`, `"`, CR or LF is quoted with `"`, its
    /// quotes doubled. For the `csv` preset.
    Csv,
}

/// Why a format was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// `$context.{name}` is not a variable; `close` are known names like it.
    UnknownVariable {
        /// The name after `$context.`.
        name: String,
        /// Known names close to it, closest first (maybe none).
        close: Vec<&'static str>,
    },
    /// Neither `$context.requestId` nor `$context.extendedRequestId`.
    NoRequestId,
    /// Longer than [`MAX_FORMAT_LEN`] bytes.
    TooLong {
        /// The format's length in bytes.
        len: usize,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::UnknownVariable { name, close } => {
                write!(f, "unknown access log variable $context.{name}")?;
                match close.split_first() {
                    None => write!(f, " (no known variable is close to it)"),
                    Some((first, rest)) => {
                        write!(f, "; did you mean $context.{first}")?;
                        for n in rest {
                            write!(f, ", $context.{n}")?;
                        }
                        write!(f, "?")
                    }
                }
            }
            FormatError::NoRequestId => write!(
                f,
                "an access log format must include $context.requestId or \
                 $context.extendedRequestId"
            ),
            FormatError::TooLong { len } => write!(
                f,
                "an access log format is at most {MAX_FORMAT_LEN} bytes; this one is {len}"
            ),
        }
    }
}

impl std::error::Error for FormatError {}

/// API Gateway's `clf` console preset.
pub const PRESET_CLF: &str = "$context.identity.sourceIp $context.identity.caller \
$context.identity.user [$context.requestTime] \"$context.httpMethod $context.resourcePath \
$context.protocol\" $context.status $context.responseLength $context.requestId \
$context.extendedRequestId";

/// API Gateway's `json` console preset.
pub const PRESET_JSON: &str = "{ \"requestId\":\"$context.requestId\", \
\"extendedRequestId\":\"$context.extendedRequestId\", \"ip\": \"$context.identity.sourceIp\", \
\"caller\":\"$context.identity.caller\", \"user\":\"$context.identity.user\", \
\"requestTime\":\"$context.requestTime\", \"httpMethod\":\"$context.httpMethod\", \
\"resourcePath\":\"$context.resourcePath\", \"status\":\"$context.status\", \
\"protocol\":\"$context.protocol\", \"responseLength\":\"$context.responseLength\" }";

/// API Gateway's `csv` console preset.
pub const PRESET_CSV: &str = "$context.identity.sourceIp,$context.identity.caller,\
$context.identity.user,$context.requestTime,$context.httpMethod,$context.resourcePath,\
$context.protocol,$context.status,$context.responseLength,$context.requestId,\
$context.extendedRequestId";

/// API Gateway's CLF preset for HTTP APIs (`http_api_clf`).
pub const PRESET_HTTP_API_CLF: &str = "$context.identity.sourceIp - - [$context.requestTime] \
\"$context.httpMethod $context.routeKey $context.protocol\" $context.status \
$context.responseLength $context.requestId";

/// A compiled access log format; see the [module page](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat {
    parts: Box<[Part]>,
    escape: Escape,
    /// The format uses `identity.userAgent` (the caller looks it up only
    /// then).
    uses_user_agent: bool,
}

impl LogFormat {
    /// Compiles `s`: literal text and `$context.*` variables (the name is
    /// the longest run of `[A-Za-z0-9_.]` after `$context.`, less trailing
    /// dots; `$` not followed by `context.` is literal). Escaping is JSON
    /// when the first non-space character is `{`, CSV for exactly the
    /// `csv` preset, CLF otherwise. A trailing line break is dropped; other
    /// line breaks (and the indentation after them) become one space.
    pub fn parse(s: &str) -> Result<LogFormat, FormatError> {
        let s = s.trim_end_matches(['\n', '\r']);
        if s.len() > MAX_FORMAT_LEN {
            return Err(FormatError::TooLong { len: s.len() });
        }
        let escape = if s.trim_start().starts_with('{') {
            Escape::Json
        } else if s == PRESET_CSV {
            Escape::Csv
        } else {
            Escape::Clf
        };
        let bytes = s.as_bytes();
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\r' || b == b'\n' {
                while i < bytes.len() && matches!(bytes[i], b'\r' | b'\n' | b' ' | b'\t') {
                    i += 1;
                }
                literal.push(b' ');
                continue;
            }
            if b == b'$' && bytes[i..].starts_with(b"$context.") {
                let start = i + b"$context.".len();
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'_' | b'.'))
                {
                    end += 1;
                }
                while end > start && bytes[end - 1] == b'.' {
                    end -= 1;
                }
                let name = &s[start..end];
                let var = lookup(name).ok_or_else(|| FormatError::UnknownVariable {
                    name: name.to_string(),
                    close: close_names(name),
                })?;
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal).into()));
                }
                parts.push(Part::Var(var));
                i = end;
                continue;
            }
            literal.push(b);
            i += 1;
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal.into()));
        }
        let has_id = parts.iter().any(|p| {
            matches!(
                p,
                Part::Var(Var::RequestId) | Part::Var(Var::ExtendedRequestId)
            )
        });
        if !has_id {
            return Err(FormatError::NoRequestId);
        }
        let uses_user_agent = parts.iter().any(|p| matches!(p, Part::Var(Var::UserAgent)));
        Ok(LogFormat {
            parts: parts.into(),
            escape,
            uses_user_agent,
        })
    }

    /// API Gateway's console preset `name` (`clf`, `json`, `csv`,
    /// `http_api_clf`), as a format string.
    pub fn preset(name: &str) -> Option<&'static str> {
        match name {
            "clf" => Some(PRESET_CLF),
            "json" => Some(PRESET_JSON),
            "csv" => Some(PRESET_CSV),
            "http_api_clf" => Some(PRESET_HTTP_API_CLF),
            _ => None,
        }
    }

    /// A setting's value: a preset name, else a format string.
    pub fn from_setting(s: &str) -> Result<LogFormat, FormatError> {
        LogFormat::parse(LogFormat::preset(s).unwrap_or(s))
    }

    /// The same format with values escaped as `escape`.
    pub fn with_escape(mut self, escape: Escape) -> LogFormat {
        self.escape = escape;
        self
    }

    /// How values are escaped.
    pub fn escape(&self) -> Escape {
        self.escape
    }

    /// The compiled pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Whether the format shows `$context.identity.userAgent` (so a caller
    /// need not look the header up otherwise).
    pub fn uses_user_agent(&self) -> bool {
        self.uses_user_agent
    }

    /// Appends `rec`'s line (ending `\n`) to `out`. Allocates nothing when
    /// `out` has room for the line.
    pub fn write(&self, rec: &LogRecord<'_>, clock: &mut ClfClock, out: &mut Vec<u8>) {
        // One capacity check for most lines (the buffer has room anyway
        // once warm).
        out.reserve(1024);
        for part in self.parts.iter() {
            match part {
                // Most literals between variables are one byte (a space).
                Part::Literal(text) if text.len() == 1 => out.push(text[0]),
                Part::Literal(text) => out.extend_from_slice(text),
                Part::Var(var) => self.value(*var, rec, clock, out),
            }
        }
        out.push(b'\n');
    }

    /// Writes one variable's value.
    fn value(&self, var: Var, rec: &LogRecord<'_>, clock: &mut ClfClock, out: &mut Vec<u8>) {
        let e = self.escape;
        // A match, not `unwrap_or("")`: with the latter the compiler hoisted
        // every field's select out of the loop over the parts, whichever
        // variables the format has.
        let bytes = |out: &mut Vec<u8>, v: Option<&[u8]>| match v {
            Some(v) => put1(out, e, v),
            None => out.push(b'-'),
        };
        let text = |out: &mut Vec<u8>, v: Option<&str>| bytes(out, v.map(str::as_bytes));
        match var {
            Var::RequestId | Var::ExtendedRequestId => {
                let id = match var {
                    Var::RequestId => Some(rec.request_id),
                    _ => rec.extended_request_id,
                };
                match id {
                    Some(id) if rec.tokens_checked && !id.is_empty() => out.extend_from_slice(id),
                    _ => bytes(out, id),
                }
            }
            Var::SourceIp => match (rec.source_ip_text, rec.source_ip) {
                // Our own formatting of an address: nothing to escape.
                (Some(text), _) if !text.is_empty() => out.extend_from_slice(text),
                (Some(_), _) => out.push(b'-'),
                (None, Some(ip)) => put_ip(out, ip),
                (None, None) => out.push(b'-'),
            },
            Var::UserAgent => bytes(out, rec.user_agent),
            Var::ApiKeyId => text(out, rec.api_key_id),
            Var::HttpMethod if rec.tokens_checked && !rec.method.is_empty() => {
                out.extend_from_slice(rec.method)
            }
            Var::HttpMethod => bytes(out, Some(rec.method)),
            Var::ResourcePath => text(out, rec.resource_path),
            Var::RouteKey => match rec.resource_path {
                Some(t) if !t.is_empty() && rec.tokens_checked && e != Escape::Csv => {
                    out.extend_from_slice(rec.method);
                    out.push(b' ');
                    put1(out, e, t.as_bytes());
                }
                Some(t) if !t.is_empty() => put(out, e, &[rec.method, b" ", t.as_bytes()]),
                _ => out.push(b'-'),
            },
            Var::Path => bytes(out, Some(rec.path)),
            Var::Stage => text(out, rec.stage),
            Var::ApiId => text(out, rec.api_id),
            Var::ResourceId => text(out, rec.resource_id),
            Var::AccountId => text(out, rec.account_id),
            Var::DomainName => bytes(out, rec.host.map(domain_name)),
            Var::DomainPrefix => bytes(
                out,
                rec.host
                    .map(domain_name)
                    .map(|d| d.split(|&b| b == b'.').next().unwrap_or(d)),
            ),
            Var::Protocol => match rec.protocol {
                p @ ("HTTP/1.1" | "HTTP/1.0") => out.extend_from_slice(p.as_bytes()),
                p => text(out, Some(p)),
            },
            Var::RequestTime => out.extend_from_slice(clock.format(rec.request_time_ms)),
            Var::RequestTimeEpoch => put_u64(out, rec.request_time_ms),
            Var::Status => put_opt(out, (rec.status != 0).then_some(rec.status.into())),
            Var::ResponseLength => put_opt(out, rec.response_length),
            Var::ResponseLatency => put_u64(out, rec.response_latency_us / 1000),
            Var::IntegrationLatency => put_opt(out, rec.integration_latency_us.map(|us| us / 1000)),
            Var::IntegrationStatus => put_opt(out, rec.integration_status.map(u64::from)),
            Var::IntegrationError => text(out, rec.integration_error),
            Var::ErrorMessage => text(out, rec.error_message),
            Var::ErrorResponseType => text(out, rec.error_response_type),
            Var::BasePathMatched => text(out, rec.base_path_matched),
            Var::IsCanaryRequest => {
                out.extend_from_slice(if rec.is_canary { b"true" } else { b"false" })
            }
            Var::Outcome => text(out, Some(rec.outcome)),
            Var::ClientCertPem => text(out, rec.client_cert.map(|c| c.pem.as_str())),
            Var::ClientCertSubject => text(out, rec.client_cert.map(|c| c.subject_dn.as_str())),
            Var::ClientCertIssuer => text(out, rec.client_cert.map(|c| c.issuer_dn.as_str())),
            Var::ClientCertSerial => text(out, rec.client_cert.map(|c| c.serial_number.as_str())),
            Var::ClientCertNotBefore => text(out, rec.client_cert.map(|c| c.not_before.as_str())),
            Var::ClientCertNotAfter => text(out, rec.client_cert.map(|c| c.not_after.as_str())),
            Var::Unset => out.push(b'-'),
        }
    }
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Printable ASCII that needs no escape in JSON or CLF.
#[inline]
fn plain(b: u8) -> bool {
    // Branch-free, so that `all_plain` vectorises.
    (b.wrapping_sub(0x20) < 0x5f) & (b != b'"') & (b != b'\\')
}

/// Writes the value made of `pieces` (one value, several slices) escaped
/// as `e`; `-` when it is empty.
/// [`put`] for a value of one slice, the usual case: a clean value is
/// copied at once.
#[inline]
fn put1(out: &mut Vec<u8>, e: Escape, v: &[u8]) {
    if v.is_empty() {
        out.push(b'-');
    } else if e != Escape::Csv && all_plain(v) {
        out.extend_from_slice(v);
    } else {
        put(out, e, &[v]);
    }
}

fn put(out: &mut Vec<u8>, e: Escape, pieces: &[&[u8]]) {
    if pieces.iter().all(|p| p.is_empty()) {
        out.push(b'-');
        return;
    }
    match e {
        Escape::Json => pieces.iter().for_each(|p| put_json(out, p)),
        Escape::Clf => pieces.iter().for_each(|p| put_clf(out, p)),
        Escape::Csv => {
            let special = |b: &u8| matches!(b, b',' | b'"' | b'\r' | b'\n');
            if !pieces.iter().any(|p| p.iter().any(special)) {
                pieces.iter().for_each(|p| out.extend_from_slice(p));
                return;
            }
            out.push(b'"');
            for p in pieces {
                for (i, run) in p.split(|&b| b == b'"').enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b"\"\"");
                    }
                    out.extend_from_slice(run);
                }
            }
            out.push(b'"');
        }
    }
}

/// Whether every byte of `v` is [`plain`], eight bytes at a time.
#[inline]
fn all_plain(v: &[u8]) -> bool {
    let mut words = v.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        if !word_plain(u64::from_le_bytes(b)) {
            return false;
        }
    }
    words.remainder().iter().all(|&b| plain(b))
}

/// Whether none of the eight bytes of `x` is below 0x20, 0x7f or above,
/// `"` or `\\` (SWAR; a borrow can only flag a byte after one that is
/// flagged already, so the answer is exact).
#[inline]
fn word_plain(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    let del_or_high = (x.wrapping_add(ONES) | x) & HIGH;
    let quote = has_zero(x ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(x ^ (ONES * u64::from(b'\\')));
    below_space | del_or_high | quote | backslash == 0
}

fn put_json(out: &mut Vec<u8>, v: &[u8]) {
    if all_plain(v) {
        out.extend_from_slice(v);
        return;
    }
    let mut start = 0;
    for (i, &b) in v.iter().enumerate() {
        if plain(b) {
            continue;
        }
        out.extend_from_slice(&v[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX_LOWER[usize::from(b >> 4)],
                HEX_LOWER[usize::from(b & 15)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&v[start..]);
}

fn put_clf(out: &mut Vec<u8>, v: &[u8]) {
    if all_plain(v) {
        out.extend_from_slice(v);
        return;
    }
    let mut start = 0;
    for (i, &b) in v.iter().enumerate() {
        if plain(b) {
            continue;
        }
        out.extend_from_slice(&v[start..i]);
        out.extend_from_slice(&[
            b'\\',
            b'x',
            HEX_UPPER[usize::from(b >> 4)],
            HEX_UPPER[usize::from(b & 15)],
        ]);
        start = i + 1;
    }
    out.extend_from_slice(&v[start..]);
}

/// Two decimal digits for each of 0..100.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Writes `n` in decimal, two digits per division.
fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[i..]);
}

fn put_opt(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => put_u64(out, n),
        None => out.push(b'-'),
    }
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                put_u64(out, octet.into());
            }
        }
        // Display for an address writes straight into the formatter (no
        // width or precision given), and io::Write for a Vec appends: no
        // allocation beyond the Vec's growth.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

// ---------------------------------------------------------------------------
// Records and the clock
// ---------------------------------------------------------------------------

/// `host` (a `Host` header's value) without its port: `shop.example:8080`
/// is `shop.example`, `[::1]:8080` is `[::1]`.
pub fn domain_name(host: &[u8]) -> &[u8] {
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host[i..].contains(&b']') => &host[..i],
        _ => host,
    }
}

/// One request's values, borrowed from the pipeline. `None` (and an empty
/// value) is logged `-`. Build one with [`LogRecord::new`] and struct
/// update syntax, filling what is known:
/// `LogRecord { status: 200, ..LogRecord::new(id, now_ms) }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// The request id (`$context.requestId`).
    pub request_id: &'a [u8],
    /// A second id (`$context.extendedRequestId`), if the caller has one.
    pub extended_request_id: Option<&'a [u8]>,
    /// Both ids are tokens of `[A-Za-z0-9._:+/=-]` (the gateway's own, or
    /// a client's it checked) and the method is an RFC 9110 token (httparse
    /// accepts no other): they are written without an escape check, as no
    /// escaping mode changes such bytes. Leave it false for anything else.
    pub tokens_checked: bool,
    /// The client's address (`$context.identity.sourceIp`).
    pub source_ip: Option<IpAddr>,
    /// [`LogRecord::source_ip`] already formatted (a connection formats its
    /// peer once); written as it is when set.
    pub source_ip_text: Option<&'a [u8]>,
    /// The `User-Agent` header (`$context.identity.userAgent`).
    pub user_agent: Option<&'a [u8]>,
    /// The API key's id. `$context.identity.apiKey` and
    /// `$context.identity.apiKeyId` both print it: a key's value is a
    /// secret and is never logged.
    pub api_key_id: Option<&'a str>,
    /// The method (`$context.httpMethod`).
    pub method: &'a [u8],
    /// The matched route's template, such as `/pets/{id}`
    /// (`$context.resourcePath`; `$context.routeKey` is the method, a space
    /// and this).
    pub resource_path: Option<&'a str>,
    /// The path as received, without the query (`$context.path`).
    pub path: &'a [u8],
    /// The stage (`$context.stage`).
    pub stage: Option<&'a str>,
    /// The API (`$context.apiId`).
    pub api_id: Option<&'a str>,
    /// `$context.resourceId`.
    pub resource_id: Option<&'a str>,
    /// `$context.accountId`.
    pub account_id: Option<&'a str>,
    /// The `Host` header as received: `$context.domainName` is it without
    /// its port ([`domain_name`]), `$context.domainPrefix` that name's first
    /// label. (Cut only when a format asks for it.)
    pub host: Option<&'a [u8]>,
    /// `HTTP/1.1` or `HTTP/1.0` (`$context.protocol`); written as it is
    /// when it is one of those two.
    pub protocol: &'static str,
    /// When the request arrived, in milliseconds since the Unix epoch
    /// (`$context.requestTimeEpoch`; `$context.requestTime` in CLF time).
    pub request_time_ms: u64,
    /// The status sent (`$context.status`); 0 (nothing was sent) is `-`.
    pub status: u16,
    /// The response body's length in bytes (`$context.responseLength`).
    pub response_length: Option<u64>,
    /// From the request's arrival to the response's end, in microseconds
    /// (`$context.responseLatency`, logged in whole milliseconds).
    pub response_latency_us: u64,
    /// Time spent on the integration, in microseconds
    /// (`$context.integrationLatency`, logged in whole milliseconds).
    pub integration_latency_us: Option<u64>,
    /// The backend's status (`$context.integrationStatus`).
    pub integration_status: Option<u16>,
    /// Why the integration failed (`$context.integrationErrorMessage`).
    pub integration_error: Option<&'a str>,
    /// The gateway error's message (`$context.error.message`).
    pub error_message: Option<&'a str>,
    /// The gateway error's type (`$context.error.responseType`).
    pub error_response_type: Option<&'a str>,
    /// The custom domain's base path (`$context.customDomain.basePathMatched`).
    pub base_path_matched: Option<&'a str>,
    /// Served by a canary (`$context.isCanaryRequest`).
    pub is_canary: bool,
    /// How the request ended (`$context.ringgate.outcome`), as
    /// [`crate::gateway::outcome::Outcome::as_str`] names it.
    pub outcome: &'static str,
    /// The client certificate of a mutual-TLS connection
    /// (`$context.identity.clientCert.*`).
    pub client_cert: Option<&'a ClientCertFields>,
}

/// A client certificate as `$context.identity.clientCert.*` prints it,
/// made once per connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCertFields {
    /// The certificate, PEM (`clientCertPem`).
    pub pem: String,
    /// Its subject, e.g. `CN=alice` (`subjectDN`).
    pub subject_dn: String,
    /// Its issuer (`issuerDN`).
    pub issuer_dn: String,
    /// Its serial number, hex (`serialNumber`).
    pub serial_number: String,
    /// Valid from, as `May 28 12:30:02 2019 GMT` (`validity.notBefore`).
    pub not_before: String,
    /// Valid until, in the same form (`validity.notAfter`).
    pub not_after: String,
}

/// `secs` since the epoch as OpenSSL prints a certificate's dates (and API
/// Gateway its `validity` fields): `May 28 12:30:02 2019 GMT`.
pub fn openssl_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let month = std::str::from_utf8(MONTHS[(month - 1) as usize]).unwrap_or("???");
    format!(
        "{month} {day:>2} {:02}:{:02}:{:02} {year} GMT",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

impl<'a> LogRecord<'a> {
    /// A record of request `request_id`, arrived at `request_time_ms`
    /// (see [`epoch_ms`]), over HTTP/1.1, with everything else unset.
    pub fn new(request_id: &'a [u8], request_time_ms: u64) -> LogRecord<'a> {
        LogRecord {
            request_id,
            request_time_ms,
            protocol: "HTTP/1.1",
            ..LogRecord::default()
        }
    }
}

/// `t` in milliseconds since the Unix epoch (0 before it).
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// The length of a CLF time, `dd/Mmm/yyyy:HH:mm:ss +0000`.
pub const CLF_TIME_LEN: usize = 26;

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// CLF time (`dd/Mmm/yyyy:HH:mm:ss +0000`, UTC), formatted once per
/// second: one per worker, passed to [`LogFormat::write`].
#[derive(Clone, Debug)]
pub struct ClfClock {
    /// The second `text` shows; `u64::MAX` before the first.
    secs: u64,
    text: [u8; CLF_TIME_LEN],
    /// How many times a time was formatted (for tests).
    formatted: u64,
}

impl Default for ClfClock {
    fn default() -> Self {
        ClfClock::new()
    }
}

impl ClfClock {
    /// A clock that has formatted nothing yet.
    pub fn new() -> ClfClock {
        ClfClock {
            secs: u64::MAX,
            text: *b"01/Jan/1970:00:00:00 +0000",
            formatted: 0,
        }
    }

    /// The CLF time of `epoch_ms`; formatted only when the second changed.
    pub fn format(&mut self, epoch_ms: u64) -> &[u8; CLF_TIME_LEN] {
        let secs = epoch_ms / 1000;
        if secs != self.secs {
            self.secs = secs;
            self.text = clf_time(secs);
            self.formatted += 1;
        }
        &self.text
    }
}

/// `secs` since the epoch as `dd/Mmm/yyyy:HH:mm:ss +0000`.
fn clf_time(secs: u64) -> [u8; CLF_TIME_LEN] {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = *b"01/Jan/1970:00:00:00 +0000";
    let two = |out: &mut [u8], v: u64| {
        out[0] = b'0' + ((v / 10) % 10) as u8;
        out[1] = b'0' + (v % 10) as u8;
    };
    two(&mut out[0..2], day.into());
    out[3..6].copy_from_slice(MONTHS[(month - 1) as usize]);
    let y = year as u64;
    two(&mut out[7..9], y / 100);
    two(&mut out[9..11], y);
    two(&mut out[12..14], rem / 3600);
    two(&mut out[15..17], (rem % 3600) / 60);
    two(&mut out[18..20], rem % 60);
    out
}

// ---------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------

/// Where an access log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// A file, appended to (created with mode 0644).
    File(PathBuf),
    /// The process's standard output.
    Stdout,
}

impl fmt::Display for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTarget::File(p) => write!(f, "{}", p.display()),
            LogTarget::Stdout => f.write_str("stdout"),
        }
    }
}

/// An access log's counters, from [`AccessLog::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Lines written to the target.
    pub lines_written: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// Lines lost: the queue was full, a write failed, or the log was
    /// stopped.
    pub dropped_lines: u64,
    /// Failed writes and failed reopens.
    pub write_errors: u64,
    /// Times the file was reopened.
    pub reopens: u64,
    /// Batches waiting for the writer now.
    pub queued_batches: usize,
}

/// What the writer thread is sent.
enum Msg {
    /// A buffer of whole lines, and how many.
    Batch(Vec<u8>, u64),
    /// Look at the reopen flag now.
    Reopen,
    /// Write nothing more: return.
    Stop,
}

/// What the writer, the [`AccessLog`] and the buffers share.
#[derive(Default)]
struct Shared {
    lines_written: AtomicU64,
    bytes_written: AtomicU64,
    dropped_lines: AtomicU64,
    write_errors: AtomicU64,
    reopens: AtomicU64,
    /// [`AccessLog::reopen`] was called.
    reopen: AtomicBool,
    /// [`AccessLog::stop`] was called: ship nothing more.
    stopped: AtomicBool,
    /// Buffers between checking `stopped` and sending (see `stop`).
    shipping: AtomicUsize,
}

impl Shared {
    fn drop_lines(&self, lines: u64) {
        self.dropped_lines.fetch_add(lines, Ordering::Relaxed);
    }
}

/// A running access log: a writer thread and the queues to it. See the
/// [module page](self).
pub struct AccessLog {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    /// The writer thread, until stopped.
    thread: Mutex<Option<JoinHandle<()>>>,
    target: LogTarget,
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("target", &self.target)
            .field("stats", &self.stats())
            .finish()
    }
}

impl AccessLog {
    /// Opens `target` (a file: append, create, mode 0644) and starts the
    /// writer thread, `ringgate-log`, behind a queue of `queue_batches`
    /// batches (at least 1) of about [`SHIP_AT`] bytes each.
    pub fn start(target: LogTarget, queue_batches: usize) -> io::Result<Arc<AccessLog>> {
        let queue_batches = queue_batches.max(1);
        let sink = Sink::open(&target)?;
        let (tx, rx) = channel::bounded(queue_batches);
        // Room for every buffer not held by a worker: those queued, the
        // one being written and one more.
        let (free_tx, free_rx) = channel::bounded(queue_batches + 2);
        // A few spare buffers up front, so that a worker shipping a batch
        // while the writer still holds the last ones need not allocate.
        for _ in 0..queue_batches.min(SPARE_BUFFERS) {
            let _ = free_tx.try_send(Vec::with_capacity(BUFFER_CAPACITY));
        }
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            target: target.clone(),
            sink,
            rx,
            free_tx: free_tx.clone(),
            shared: shared.clone(),
            last_report: None,
            unreported: 0,
        };
        let thread = std::thread::Builder::new()
            .name("ringgate-log".into())
            .spawn(move || writer.run())?;
        Ok(Arc::new(AccessLog {
            shared,
            tx,
            free_tx,
            free_rx,
            thread: Mutex::new(Some(thread)),
            target,
        }))
    }

    /// A buffer for one worker (one per worker: it is not shared).
    pub fn buffer(&self) -> LogBuffer {
        LogBuffer {
            buf: recycled(&self.free_rx),
            committed: 0,
            lines: 0,
            tx: self.tx.clone(),
            free_tx: self.free_tx.clone(),
            free_rx: self.free_rx.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Asks the writer to reopen the file at its path, before it writes
    /// its next batch or at once when idle (for logrotate: lines written
    /// after go to the new file). Nothing for stdout.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        // A full queue means a batch comes next, which sees the flag.
        let _ = self.tx.try_send(Msg::Reopen);
    }

    /// The counters now.
    pub fn stats(&self) -> LogStats {
        let s = &self.shared;
        LogStats {
            lines_written: s.lines_written.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            dropped_lines: s.dropped_lines.load(Ordering::Relaxed),
            write_errors: s.write_errors.load(Ordering::Relaxed),
            reopens: s.reopens.load(Ordering::Relaxed),
            queued_batches: self.tx.len(),
        }
    }

    /// Where the log goes.
    pub fn target(&self) -> &LogTarget {
        &self.target
    }

    /// Writes every batch already shipped, flushes and joins the writer.
    /// Waits while the writer works through the queue. Batches shipped
    /// after this are dropped and counted. Safe to call more than once and
    /// from any thread (a second caller waits for the first to finish).
    pub fn stop(&self) {
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(handle) = thread.take() else {
            return;
        };
        // A buffer that saw `stopped` false before this store is counted in
        // `shipping` until its batch is queued; once the count is 0, every
        // such batch is queued ahead of `Stop`, and later ones see the flag.
        self.shared.stopped.store(true, Ordering::SeqCst);
        while self.shared.shipping.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
        let _ = self.tx.send(Msg::Stop);
        let _ = handle.join();
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free buffer from the writer, or a new one when none is free.
/// Buffers allocated when the log starts, beyond the workers' own.
const SPARE_BUFFERS: usize = 4;

fn recycled(free_rx: &Receiver<Vec<u8>>) -> Vec<u8> {
    free_rx
        .try_recv()
        .unwrap_or_else(|_| Vec::with_capacity(BUFFER_CAPACITY))
}

/// One worker's lines on their way to the writer; see the
/// [module page](self). Dropping it flushes it.
pub struct LogBuffer {
    buf: Vec<u8>,
    /// Bytes of whole lines in `buf`.
    committed: usize,
    /// Lines in `buf[..committed]`.
    lines: u64,
    tx: Sender<Msg>,
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
}

impl fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogBuffer")
            .field("bytes", &self.committed)
            .field("lines", &self.lines)
            .finish()
    }
}

impl LogBuffer {
    /// The buffer to append one line to (ending `\n`), then
    /// [`LogBuffer::commit_line`]. Anything appended since the last commit
    /// is discarded first.
    pub fn line(&mut self) -> &mut Vec<u8> {
        self.buf.truncate(self.committed);
        &mut self.buf
    }

    /// Counts the line appended to [`LogBuffer::line`]; ships the buffer
    /// once it holds [`SHIP_AT`] bytes.
    pub fn commit_line(&mut self) {
        self.committed = self.buf.len();
        self.lines += 1;
        if self.committed >= SHIP_AT {
            self.ship();
        }
    }

    /// Formats `rec` with `format` into the buffer, as one line.
    pub fn log(&mut self, format: &LogFormat, rec: &LogRecord<'_>, clock: &mut ClfClock) {
        format.write(rec, clock, self.line());
        self.commit_line();
    }

    /// Ships the lines held now, however few (call it about once a second
    /// and when the worker stops).
    pub fn flush(&mut self) {
        self.ship();
    }

    /// Lines held, not yet shipped.
    pub fn pending_lines(&self) -> u64 {
        self.lines
    }

    /// Sends the whole lines to the writer, or drops and counts them if the
    /// queue is full or the log stopped. Never blocks.
    fn ship(&mut self) {
        self.buf.truncate(self.committed);
        self.committed = 0;
        let lines = std::mem::take(&mut self.lines);
        if lines == 0 {
            self.buf.clear();
            return;
        }
        let shared = &self.shared;
        shared.shipping.fetch_add(1, Ordering::SeqCst);
        let mut sent = false;
        // A full queue is the overload case: drop without touching the
        // free list (no buffer allocated for a batch that goes nowhere).
        if !shared.stopped.load(Ordering::SeqCst) && !self.tx.is_full() {
            let fresh = recycled(&self.free_rx);
            let batch = std::mem::replace(&mut self.buf, fresh);
            match self.tx.try_send(Msg::Batch(batch, lines)) {
                Ok(()) => sent = true,
                Err(e) => {
                    if let Msg::Batch(batch, _) = e.into_inner() {
                        let fresh = std::mem::replace(&mut self.buf, batch);
                        let _ = self.free_tx.try_send(fresh);
                    }
                }
            }
        }
        shared.shipping.fetch_sub(1, Ordering::SeqCst);
        if !sent {
            shared.drop_lines(lines);
        }
        self.buf.clear();
    }
}

impl Drop for LogBuffer {
    fn drop(&mut self) {
        self.ship();
    }
}

/// The writer's open target.
enum Sink {
    File(File),
    Stdout(io::Stdout),
}

impl Sink {
    fn open(target: &LogTarget) -> io::Result<Sink> {
        match target {
            LogTarget::File(path) => OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o644)
                .open(path)
                .map(Sink::File),
            LogTarget::Stdout => Ok(Sink::Stdout(io::stdout())),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::File(f) => f.write_all(buf),
            Sink::Stdout(s) => {
                let mut s = s.lock();
                s.write_all(buf)?;
                s.flush()
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Stdout(s) => s.flush(),
        }
    }
}

/// The writer thread's state.
struct Writer {
    target: LogTarget,
    sink: Sink,
    rx: Receiver<Msg>,
    free_tx: Sender<Vec<u8>>,
    shared: Arc<Shared>,
    /// When a failure was last reported on stderr.
    last_report: Option<Instant>,
    /// Failures since, not reported.
    unreported: u64,
}

impl Writer {
    fn run(mut self) {
        loop {
            match self.rx.recv() {
                Ok(Msg::Batch(buf, lines)) => {
                    self.reopen_if_asked();
                    self.write(buf, lines);
                }
                Ok(Msg::Reopen) => self.reopen_if_asked(),
                Ok(Msg::Stop) | Err(_) => break,
            }
        }
        if let Err(e) = self.sink.flush() {
            self.failed("flush failed", &e);
        }
    }

    fn write(&mut self, mut buf: Vec<u8>, lines: u64) {
        let written = self.sink.write_all(&buf);
        let bytes = buf.len() as u64;
        buf.clear();
        // Back before the counts move, so that a worker that saw its lines
        // counted finds the buffer free. The list is full only when
        // buffers were made beyond need: let this one go then.
        let _ = self.free_tx.try_send(buf);
        match written {
            Ok(()) => {
                let s = &self.shared;
                s.lines_written.fetch_add(lines, Ordering::Relaxed);
                s.bytes_written.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(e) => {
                self.shared.drop_lines(lines);
                self.failed("write failed", &e);
            }
        }
    }

    fn reopen_if_asked(&mut self) {
        if !self.shared.reopen.swap(false, Ordering::AcqRel) {
            return;
        }
        if matches!(self.target, LogTarget::Stdout) {
            return;
        }
        match Sink::open(&self.target) {
            Ok(sink) => {
                self.sink = sink;
                self.shared.reopens.fetch_add(1, Ordering::Relaxed);
            }
            // The old file stays open; the next reopen tries again.
            Err(e) => self.failed("cannot reopen", &e),
        }
    }

    /// Counts a failure; reports it on stderr unless one was reported in
    /// the last minute.
    fn failed(&mut self, what: &str, e: &io::Error) {
        self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if self
            .last_report
            .is_some_and(|t| now.duration_since(t) < REPORT_EVERY)
        {
            self.unreported += 1;
            return;
        }
        let more = std::mem::take(&mut self.unreported);
        let since = if more > 0 {
            format!(" ({more} more failures since the last report)")
        } else {
            String::new()
        };
        eprintln!("ringgate: access log {}: {what}: {e}{since}", self.target);
        self.last_report = Some(now);
    }
}

#[cfg(test)]
mod tests;
