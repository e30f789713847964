//! What may be stored, and for how long, when the origin has a say: the
//! shared-cache rules of RFC 9111 that a stage applies with
//! `respect_origin_cache_control`, and the client's request for a refresh.
//!
//! Pure functions over header bytes: no I/O, no configuration, no clock.
//! `delta-seconds` are at most 19 digits; a longer value is ignored (the
//! default TTL applies), never wrapped.
//!
//! - [`origin_freshness`]: from a response's stored head lines, whether a
//!   shared cache may store it and its TTL. `no-store`, `private` and
//!   `no-cache` are not stored; `s-maxage` then `max-age` give the TTL (the
//!   caller's default when neither is sent; 0 means not stored); a `Vary` on
//!   a header the route does not key on (or `Vary: *`) is not stored; a
//!   response to a request that carried `Authorization` is stored only when
//!   the origin says `public` or `s-maxage` (RFC 9111 §3.5).
//! - [`asks_refresh`]: whether a request's `Cache-Control` values carry
//!   `max-age=0`, API Gateway's per-request invalidation.

#![forbid(unsafe_code)]

use crate::http::parse::{parse_length, trim};

/// The TTL (ms) a response may be stored for under RFC 9111's shared-cache
/// rules, from its head lines (status line first, then `name: value`
/// lines, each ending in CRLF or LF). `keyed` says whether the route's key
/// varies on a header (lowercase or not); `authorized_request` whether the
/// request carried `Authorization`. `None`: do not store.
pub fn origin_freshness(
    head: &[u8],
    default_ttl_ms: u64,
    keyed: impl Fn(&[u8]) -> bool,
    authorized_request: bool,
) -> Option<u64> {
    let mut s_maxage = None;
    let mut max_age = None;
    let mut public = false;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"cache-control") {
            for d in value.split(|&b| b == b',') {
                let d = trim(d);
                let seconds = |prefix: &[u8]| -> Option<u64> {
                    if d.len() > prefix.len() && d[..prefix.len()].eq_ignore_ascii_case(prefix) {
                        let v = d[prefix.len()..]
                            .strip_prefix(b"\"")
                            .unwrap_or(&d[prefix.len()..]);
                        let v = v.strip_suffix(b"\"").unwrap_or(v);
                        parse_length(v)
                    } else {
                        None
                    }
                };
                if d.eq_ignore_ascii_case(b"no-store")
                    || d.eq_ignore_ascii_case(b"private")
                    || d.eq_ignore_ascii_case(b"no-cache")
                {
                    return None;
                } else if d.eq_ignore_ascii_case(b"public") {
                    public = true;
                } else if let Some(n) = seconds(b"s-maxage=") {
                    s_maxage = Some(n);
                } else if let Some(n) = seconds(b"max-age=") {
                    max_age = Some(n);
                }
            }
        } else if name.eq_ignore_ascii_case(b"vary") {
            for v in value.split(|&b| b == b',') {
                let v = trim(v);
                if v == b"*" || !keyed(v) {
                    return None;
                }
            }
        }
    }
    if authorized_request && !public && s_maxage.is_none() {
        return None;
    }
    let ttl = s_maxage
        .or(max_age)
        .map_or(default_ttl_ms, |s| s.saturating_mul(1000));
    (ttl > 0).then_some(ttl)
}

/// Whether any of a request's `Cache-Control` header values carries the
/// directive `max-age=0` (a refresh, API Gateway's invalidation).
pub fn asks_refresh<'a>(cache_control_values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    cache_control_values
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|d| trim(d).eq_ignore_ascii_case(b"max-age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_freshness_follows_shared_cache_rules() {
        let none = |_: &[u8]| false;
        let head = |extra: &str| format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extra}");
        let f = |extra: &str| origin_freshness(head(extra).as_bytes(), 300_000, none, false);
        assert_eq!(f(""), Some(300_000));
        assert_eq!(f("Cache-Control: max-age=60\r\n"), Some(60_000));
        assert_eq!(
            f("Cache-Control: max-age=60, s-maxage=10\r\n"),
            Some(10_000)
        );
        assert_eq!(f("cache-control: public, max-age=\"5\"\r\n"), Some(5_000));
        assert_eq!(f("Cache-Control: no-store\r\n"), None);
        assert_eq!(f("Cache-Control: private, max-age=60\r\n"), None);
        assert_eq!(f("Cache-Control: no-cache\r\n"), None);
        assert_eq!(f("Cache-Control: max-age=0\r\n"), None);
        assert_eq!(f("Vary: *\r\n"), None);
        assert_eq!(f("Vary: Accept-Language\r\n"), None);
        let keyed = |n: &[u8]| n.eq_ignore_ascii_case(b"accept-language");
        let h = head("Vary: Accept-Language\r\nCache-Control: max-age=9\r\n");
        assert_eq!(origin_freshness(h.as_bytes(), 1, keyed, false), Some(9_000));
        // A request with Authorization: only public or s-maxage responses.
        let h = head("Cache-Control: max-age=9\r\n");
        assert_eq!(origin_freshness(h.as_bytes(), 1, none, true), None);
        let h = head("Cache-Control: public, max-age=9\r\n");
        assert_eq!(origin_freshness(h.as_bytes(), 1, none, true), Some(9_000));
        // Malformed or huge delta-seconds are ignored, never wrapped.
        assert_eq!(f("Cache-Control: max-age=-5\r\n"), Some(300_000));
        assert_eq!(
            f("Cache-Control: max-age=99999999999999999999\r\n"),
            Some(300_000)
        );
        assert_eq!(
            f("Cache-Control: max-age=9999999999999999999\r\n"),
            Some(u64::MAX)
        );
    }

    #[test]
    fn refresh_is_max_age_zero_in_any_value() {
        assert!(asks_refresh([&b"max-age=0"[..]]));
        assert!(asks_refresh([
            &b"no-transform"[..],
            &b" public , MAX-AGE=0 "[..]
        ]));
        assert!(!asks_refresh([&b"max-age=00"[..]]));
        assert!(!asks_refresh([&b"max-age=10"[..]]));
        assert!(!asks_refresh(std::iter::empty::<&[u8]>()));
    }
}
