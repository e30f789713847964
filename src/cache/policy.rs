//! What may be stored, for how long, and how it may be reused, when the
//! origin has a say: the shared-cache rules of RFC 9111 (with RFC 5861's
//! stale extensions and RFC 9213's targeted fields) that a stage applies
//! with `respect_origin_cache_control`, and the client's request directives.
//!
//! Pure functions over header bytes: no I/O, no configuration, no clock
//! (times are arguments). Untrusted input throughout: `delta-seconds` of
//! more than 19 digits are capped, never wrapped; quoted strings may hold
//! commas; nothing here panics or allocates.
//!
//! - [`evaluate`]: from a response's stored head lines and what is known of
//!   its request, whether a shared cache may store it ([`Decision`]) and,
//!   if so, its [`Freshness`]: lifetime (`s-maxage` over `max-age` over
//!   `Expires` minus `Date`, else heuristic: 10 % of `Date` minus
//!   `Last-Modified` for the statuses §4.2.2 lists, capped by the stage),
//!   corrected initial age (§4.2.3, with the origin's `Age`), validators,
//!   whether it is a variant (`Vary` on a header the key lacks), and the
//!   revalidation and stale rules.
//! - [`vary_names`]: the header names a variant is selected by.
//! - [`request_directives`]: a client's `Cache-Control` (`no-cache`,
//!   `max-age`, `min-fresh`, `max-stale`, `no-store`, `only-if-cached`).
//! - [`asks_refresh`]: whether a request's `Cache-Control` values carry
//!   `max-age=0`, API Gateway's per-request invalidation.
//! - [`etag_matches`] / [`not_modified_since`]: RFC 9110 §13's weak
//!   comparison of `If-None-Match` and the `If-Modified-Since` rule, for
//!   answering a client's conditional request from a stored entry.
//! - [`byte_range`] / [`if_range_allows`]: RFC 9110 §14's single byte
//!   range and its `If-Range` guard, for answering 206 from an entry.

#![forbid(unsafe_code)]

use std::ops::Range;

use crate::http::date::parse_http_date;
use crate::http::parse::trim;

/// Statuses a cache may give heuristic freshness (RFC 9110 §15.1, as
/// RFC 9111 §4.2.2 refers to them).
pub const HEURISTIC_STATUSES: [u16; 12] =
    [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// Directive values above this many seconds are capped (about 68 years).
const MAX_DELTA_SECS: u64 = 1 << 31;

/// The stage's settings [`evaluate`] applies.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    /// Largest heuristic lifetime, in milliseconds (0: no heuristics).
    pub heuristic_max_ms: u64,
    /// Targeted cache-control fields (RFC 9213, lowercase), in order of
    /// precedence; the first present replaces `Cache-Control` and
    /// `Expires`.
    pub targeted: &'a [Box<str>],
    /// Store responses that carry `Set-Cookie`.
    pub store_set_cookie: bool,
    /// Whether the route's key varies on a header (lowercase or not): a
    /// `Vary` on any other header makes the response a variant
    /// ([`Freshness::varies`]).
    pub keyed: &'a dyn Fn(&[u8]) -> bool,
}

/// What is known of the request a response answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFacts {
    /// The request carried `Authorization` (RFC 9111 §3.5).
    pub authorization: bool,
}

/// Wall-clock times around the fetch, in milliseconds since the epoch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Times {
    /// When the request went to the origin.
    pub request_ms: u64,
    /// When its response head arrived.
    pub response_ms: u64,
}

/// Why a response is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// `no-store`.
    NoStore,
    /// `private`.
    Private,
    /// A request with `Authorization`, and no `public`, `s-maxage` or
    /// `must-revalidate`.
    Authorization,
    /// `Set-Cookie`, and the stage does not store those.
    SetCookie,
    /// A 1xx, 206 or 304.
    Status,
    /// `Vary: *` (never reusable).
    Vary,
    /// Neither explicit freshness, `public`, nor a heuristically cacheable
    /// status.
    NotCacheable,
    /// Stale on arrival with no validator to revalidate it by.
    Useless,
}

/// How a stored response may be reused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Freshness {
    /// Freshness lifetime (ms).
    pub lifetime_ms: u64,
    /// Corrected initial age (ms): what the response was already aged
    /// when it arrived.
    pub initial_age_ms: u64,
    /// The response's `Date` (seconds since the epoch), or when it arrived
    /// if it had none (RFC 9110 §6.6.1: the recipient adds one).
    pub date_secs: u64,
    /// Whether the lifetime is heuristic.
    pub heuristic: bool,
    /// `no-cache`: stored, but revalidated before every reuse.
    pub no_cache: bool,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: once stale,
    /// never served without revalidation (no stale-while-revalidate, no
    /// stale-if-error).
    pub must_revalidate: bool,
    /// `stale-while-revalidate` (ms) from the origin.
    pub stale_while_revalidate_ms: u64,
    /// `stale-if-error` (ms) from the origin.
    pub stale_if_error_ms: Option<u64>,
    /// The `ETag` line's value, as a byte range of the head.
    pub etag: Option<Range<usize>>,
    /// The `Last-Modified` line's value, as a byte range of the head.
    pub last_modified: Option<Range<usize>>,
    /// `Last-Modified` in seconds since the epoch, when it parses.
    pub last_modified_secs: Option<u64>,
    /// `Vary` names a request header the route's key does not carry: the
    /// response is stored as one variant of its URL (RFC 9111 §4.1).
    pub varies: bool,
}

impl Freshness {
    /// Whether the response carries a validator (`ETag` or `Last-Modified`).
    pub fn has_validator(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// What [`evaluate`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store it, with this freshness.
    Store(Freshness),
    /// Do not store it.
    Skip(NotStored),
}

/// The header fields of stored head lines: status line first (skipped),
/// then `name: value` lines ending in CRLF or LF. Yields `(name, value,
/// value's byte range in head)`, the value trimmed.
pub fn fields(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], Range<usize>)> {
    let mut pos = 0;
    let mut first = true;
    std::iter::from_fn(move || loop {
        if pos >= head.len() {
            return None;
        }
        let rest = &head[pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let start = pos;
        pos += len;
        if std::mem::take(&mut first) {
            continue;
        }
        let line = &head[start..start + len];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let raw = &line[colon + 1..];
        let value = trim(raw);
        // `trim` takes spaces and tabs (OWS), nothing else.
        let lead = raw.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        let vstart = start + colon + 1 + lead;
        return Some((&line[..colon], value, vstart..vstart + value.len()));
    })
}

/// The directives of `Cache-Control`-syntax values: `(name, argument)`,
/// the argument unquoted (a quoted argument may hold commas). Empty
/// members are skipped.
pub fn directives(value: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    let mut rest = value;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        // The member ends at the first comma outside a quoted string.
        let mut quoted = false;
        let mut escaped = false;
        let mut end = rest.len();
        for (i, &b) in rest.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b',' && !quoted {
                end = i;
                break;
            }
        }
        let member = trim(&rest[..end]);
        rest = rest.get(end + 1..).unwrap_or(&[]);
        if member.is_empty() {
            continue;
        }
        return Some(match member.iter().position(|&b| b == b'=') {
            None => (member, None),
            Some(eq) => {
                let arg = trim(&member[eq + 1..]);
                let arg = match arg.strip_prefix(b"\"") {
                    Some(inner) => inner.strip_suffix(b"\"").unwrap_or(inner),
                    None => arg,
                };
                (trim(&member[..eq]), Some(arg))
            }
        });
    })
}

/// A `delta-seconds` argument: digits only, capped at about 68 years.
pub fn delta_seconds(arg: Option<&[u8]>) -> Option<u64> {
    let v = arg?;
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Leading zeros cannot overflow; more than 19 significant digits cap.
    let v = &v[v.iter().position(|&b| b != b'0').unwrap_or(v.len())..];
    if v.len() > 19 {
        return Some(MAX_DELTA_SECS);
    }
    Some(
        v.iter()
            .fold(0u64, |n, &b| n * 10 + u64::from(b - b'0'))
            .min(MAX_DELTA_SECS),
    )
}

/// The response directives [`evaluate`] reads, from one field's values.
#[derive(Clone, Copy, Debug, Default)]
struct ResponseDirectives {
    no_store: bool,
    private: bool,
    no_cache: bool,
    public: bool,
    must_revalidate: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    swr: Option<u64>,
    sie: Option<u64>,
    /// A directive that takes delta-seconds carried a bad value: the
    /// response is treated as stale (RFC 9111 §1.2.2 asks for the
    /// conservative reading).
    invalid: bool,
}

impl ResponseDirectives {
    fn add(&mut self, value: &[u8]) {
        for (name, arg) in directives(value) {
            let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
            let mut secs = |slot: &mut Option<u64>| match delta_seconds(arg) {
                // Duplicates: the lowest (most conservative) wins.
                Some(n) => *slot = Some(slot.map_or(n, |o| o.min(n))),
                None => self.invalid = true,
            };
            if is(b"no-store") {
                self.no_store = true;
            } else if is(b"private") {
                self.private = true;
            } else if is(b"no-cache") {
                self.no_cache = true;
            } else if is(b"public") {
                self.public = true;
            } else if is(b"must-revalidate") || is(b"proxy-revalidate") {
                self.must_revalidate = true;
            } else if is(b"max-age") {
                let mut v = self.max_age;
                secs(&mut v);
                self.max_age = v;
            } else if is(b"s-maxage") {
                let mut v = self.s_maxage;
                secs(&mut v);
                self.s_maxage = v;
            } else if is(b"stale-while-revalidate") {
                self.swr = delta_seconds(arg).or(self.swr);
            } else if is(b"stale-if-error") {
                self.sie = delta_seconds(arg).or(self.sie);
            }
        }
    }
}

/// Decides whether a shared cache may store a response to a GET, and how
/// it may reuse it (RFC 9111 §3, §4.2, §5.2.2; RFC 5861; RFC 9213). `head`
/// is the stored head lines: the status line, then the headers, the
/// origin's `Date` as `x-amzn-Remapped-Date` (the gateway renames it) or
/// `Date`.
pub fn evaluate(
    head: &[u8],
    status: u16,
    request: RequestFacts,
    times: Times,
    rules: &Rules<'_>,
) -> Decision {
    if status < 200 || status == 206 || status == 304 {
        return Decision::Skip(NotStored::Status);
    }
    // The first targeted field present replaces Cache-Control and Expires.
    let targeted = rules
        .targeted
        .iter()
        .find(|t| fields(head).any(|(n, _, _)| n.eq_ignore_ascii_case(t.as_bytes())));
    let mut d = ResponseDirectives::default();
    let mut expires = None;
    let mut date = None;
    let mut age = None;
    let mut age_invalid = false;
    let mut f = Freshness::default();
    for (name, value, range) in fields(head) {
        let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
        match targeted {
            Some(t) if is(t.as_bytes()) => d.add(value),
            None if is(b"cache-control") => d.add(value),
            None if is(b"expires") => expires = Some(parse_http_date(value)),
            _ => {}
        }
        if is(b"x-amzn-remapped-date") || is(b"date") {
            date = date.or(parse_http_date(value));
        } else if is(b"age") {
            match delta_seconds(Some(value)) {
                Some(a) => age = Some(age.map_or(a, |o: u64| o.max(a))),
                None => age_invalid = true,
            }
        } else if is(b"etag") && f.etag.is_none() {
            f.etag = Some(range);
        } else if is(b"last-modified") && f.last_modified.is_none() {
            f.last_modified_secs = parse_http_date(value);
            f.last_modified = Some(range);
        } else if is(b"set-cookie") && !rules.store_set_cookie {
            return Decision::Skip(NotStored::SetCookie);
        } else if is(b"vary") {
            for v in value.split(|&b| b == b',') {
                let v = trim(v);
                if v == b"*" {
                    return Decision::Skip(NotStored::Vary);
                }
                f.varies |= !v.is_empty() && !(rules.keyed)(v);
            }
        }
    }
    if d.no_store {
        return Decision::Skip(NotStored::NoStore);
    }
    if d.private {
        return Decision::Skip(NotStored::Private);
    }
    if request.authorization && !d.public && d.s_maxage.is_none() && !d.must_revalidate {
        return Decision::Skip(NotStored::Authorization);
    }
    let explicit = d.s_maxage.is_some() || d.max_age.is_some() || expires.is_some();
    let heuristic_status = HEURISTIC_STATUSES.contains(&status);
    if !explicit && !d.public && !heuristic_status && !d.invalid {
        return Decision::Skip(NotStored::NotCacheable);
    }

    // §4.2.3: the corrected initial age.
    let response_secs = times.response_ms / 1000;
    let date_secs = date.unwrap_or(response_secs);
    let apparent = response_secs.saturating_sub(date_secs) * 1000;
    let delay = times.response_ms.saturating_sub(times.request_ms);
    let corrected = age.unwrap_or(0).saturating_mul(1000).saturating_add(delay);
    f.initial_age_ms = apparent.max(corrected);
    f.date_secs = date_secs;

    // §4.2.1: the freshness lifetime.
    f.lifetime_ms = if d.invalid || age_invalid {
        0
    } else if let Some(s) = d.s_maxage.or(d.max_age) {
        s * 1000
    } else if let Some(e) = expires {
        // An invalid Expires (e.g. "0") means already expired.
        e.map_or(0, |e| e.saturating_sub(date_secs) * 1000)
    } else if let (true, Some(lm)) = (heuristic_status, f.last_modified_secs) {
        f.heuristic = true;
        (date_secs.saturating_sub(lm) * 100).min(rules.heuristic_max_ms)
    } else {
        0
    };
    f.no_cache = d.no_cache;
    f.must_revalidate = d.must_revalidate || d.s_maxage.is_some();
    if !f.must_revalidate {
        f.stale_while_revalidate_ms = d.swr.map_or(0, |s| s * 1000);
        f.stale_if_error_ms = d.sie.map(|s| s * 1000);
    }
    let usable_fresh = f.lifetime_ms > f.initial_age_ms && !f.no_cache;
    if !usable_fresh && !f.has_validator() {
        return Decision::Skip(NotStored::Useless);
    }
    Decision::Store(f)
}

/// The request headers a response varies on that the route's key does not
/// carry: its `Vary` values, lowercase, in order, without duplicates, one
/// per line (`accept-encoding\naccept-language\n`). Empty when it varies
/// on none.
pub fn vary_names(head: &[u8], keyed: &dyn Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    for (name, value, _) in fields(head) {
        if !name.eq_ignore_ascii_case(b"vary") {
            continue;
        }
        for v in value.split(|&b| b == b',') {
            let v = trim(v);
            if v.is_empty() || v == b"*" || keyed(v) {
                continue;
            }
            let seen = out
                .split(|&b| b == b'\n')
                .any(|n| n.eq_ignore_ascii_case(v));
            if !seen {
                out.extend(v.iter().map(u8::to_ascii_lowercase));
                out.push(b'\n');
            }
        }
    }
    out
}

/// A client's request `Cache-Control` directives (RFC 9111 §5.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache`: do not reuse without revalidation.
    pub no_cache: bool,
    /// `no-store`: do not store the response.
    pub no_store: bool,
    /// `only-if-cached`: a stored response or 504.
    pub only_if_cached: bool,
    /// `max-age` (seconds): no older response.
    pub max_age: Option<u64>,
    /// `min-fresh` (seconds): fresh for at least this much longer.
    pub min_fresh: Option<u64>,
    /// `max-stale` (seconds; without a value, any staleness): a stale
    /// response this much past its freshness is acceptable.
    pub max_stale: Option<u64>,
}

/// Reads a request's `Cache-Control` values (and `Pragma: no-cache` when
/// there is no `Cache-Control`, RFC 9111 §5.4, given as `pragma_no_cache`).
pub fn request_directives<'a>(
    cache_control_values: impl IntoIterator<Item = &'a [u8]>,
    pragma_no_cache: bool,
) -> RequestDirectives {
    let mut r = RequestDirectives::default();
    let mut any = false;
    for value in cache_control_values {
        any = true;
        for (name, arg) in directives(value) {
            let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
            if is(b"no-cache") {
                r.no_cache = true;
            } else if is(b"no-store") {
                r.no_store = true;
            } else if is(b"only-if-cached") {
                r.only_if_cached = true;
            } else if is(b"max-age") {
                // An invalid value is read as 0: revalidate (conservative).
                let n = delta_seconds(arg).unwrap_or(0);
                r.max_age = Some(r.max_age.map_or(n, |o| o.min(n)));
            } else if is(b"min-fresh") {
                if let Some(n) = delta_seconds(arg) {
                    r.min_fresh = Some(r.min_fresh.map_or(n, |o| o.max(n)));
                }
            } else if is(b"max-stale") {
                // Without a value: any staleness. A bad value is ignored.
                let n = if arg.is_none() {
                    Some(u64::MAX)
                } else {
                    delta_seconds(arg)
                };
                if let Some(n) = n {
                    r.max_stale = Some(r.max_stale.map_or(n, |o| o.min(n)));
                }
            }
        }
    }
    if !any && pragma_no_cache {
        r.no_cache = true;
    }
    r
}

/// Whether any of a request's `Cache-Control` header values carries the
/// directive `max-age=0` (a refresh, API Gateway's invalidation).
pub fn asks_refresh<'a>(cache_control_values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    cache_control_values
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|d| trim(d).eq_ignore_ascii_case(b"max-age=0"))
}

/// RFC 9110 §13.1.2: whether an `If-None-Match` value (`*` or a list of
/// entity tags) matches the stored `etag` by weak comparison.
pub fn etag_matches(if_none_match: &[u8], etag: &[u8]) -> bool {
    let stored = trim(etag);
    let stored = stored.strip_prefix(b"W/").unwrap_or(stored);
    if stored.len() < 2 || stored[0] != b'"' || stored[stored.len() - 1] != b'"' {
        return false;
    }
    let v = trim(if_none_match);
    if v == b"*" {
        return true;
    }
    let mut rest = v;
    loop {
        let s = trim(rest);
        let s = s.strip_prefix(b",").map_or(s, trim);
        if s.is_empty() {
            return false;
        }
        let t = s.strip_prefix(b"W/").unwrap_or(s);
        let Some(inner) = t.strip_prefix(b"\"") else {
            return false;
        };
        let Some(close) = inner.iter().position(|&b| b == b'"') else {
            return false;
        };
        if &t[..close + 2] == stored {
            return true;
        }
        rest = &inner[close + 1..];
    }
}

/// RFC 9110 §13.1.3: with no `If-None-Match`, whether `If-Modified-Since`
/// lets a stored response with `last_modified_secs` be answered 304. An
/// invalid date is ignored (false).
pub fn not_modified_since(if_modified_since: &[u8], last_modified_secs: Option<u64>) -> bool {
    match (parse_http_date(if_modified_since), last_modified_secs) {
        (Some(since), Some(lm)) => lm <= since,
        _ => false,
    }
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// Answer the whole representation: no usable `Range` (another unit,
    /// a syntax error, several ranges).
    Whole,
    /// Bytes `first..=last` (both within the representation).
    Part(u64, u64),
    /// One well-formed range that starts past the end: 416.
    Unsatisfiable,
}

/// RFC 9110 §14.1.2: reads a `Range` value (`bytes=first-last`,
/// `bytes=first-`, `bytes=-suffix`) for a representation of `len` bytes.
/// Only a single range is answered from the cache; several ranges are
/// answered whole (a server may ignore `Range`).
pub fn byte_range(value: &[u8], len: u64) -> RangeAsk {
    let v = trim(value);
    let Some(eq) = v.iter().position(|&b| b == b'=') else {
        return RangeAsk::Whole;
    };
    if !trim(&v[..eq]).eq_ignore_ascii_case(b"bytes") {
        return RangeAsk::Whole;
    }
    let set = trim(&v[eq + 1..]);
    if set.contains(&b',') {
        return RangeAsk::Whole;
    }
    let Some(dash) = set.iter().position(|&b| b == b'-') else {
        return RangeAsk::Whole;
    };
    let (first, last) = (trim(&set[..dash]), trim(&set[dash + 1..]));
    let num = |d: &[u8]| -> Option<u64> {
        (!d.is_empty() && d.len() <= 19 && d.iter().all(u8::is_ascii_digit))
            .then(|| d.iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0')))
    };
    match (first.is_empty(), last.is_empty()) {
        // bytes=-suffix: the last `suffix` bytes.
        (true, false) => match num(last) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if len == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part(len.saturating_sub(n), len - 1),
            None => RangeAsk::Whole,
        },
        (false, true) => match num(first) {
            Some(f) if f < len => RangeAsk::Part(f, len - 1),
            Some(_) => RangeAsk::Unsatisfiable,
            None => RangeAsk::Whole,
        },
        (false, false) => match (num(first), num(last)) {
            (Some(f), Some(l)) if f > l => RangeAsk::Whole,
            (Some(f), Some(_)) if f >= len => RangeAsk::Unsatisfiable,
            (Some(f), Some(l)) => RangeAsk::Part(f, l.min(len - 1)),
            _ => RangeAsk::Whole,
        },
        (true, true) => RangeAsk::Whole,
    }
}

/// RFC 9110 §13.1.5: whether an `If-Range` value lets the range apply: an
/// entity tag that equals the stored strong `etag` (a weak one never
/// does), or a date equal to the stored `Last-Modified`.
pub fn if_range_allows(
    if_range: &[u8],
    etag: Option<&[u8]>,
    last_modified_secs: Option<u64>,
) -> bool {
    let v = trim(if_range);
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        return !v.starts_with(b"W/")
            && etag.is_some_and(|e| {
                let e = trim(e);
                !e.starts_with(b"W/") && e == v
            });
    }
    matches!((parse_http_date(v), last_modified_secs), (Some(d), Some(lm)) if d == lm)
}

#[cfg(test)]
mod tests;
