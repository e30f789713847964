//! Where a request's API key comes from (`[key_source]`, beyond API
//! Gateway, which reads `x-api-key` only), and hiding it from backends.
//!
//! - [`KeySource::find`]: the key header's value (trimmed), else — when a
//!   `query` name is set — the first `name=value` pair of the query
//!   string. A value without `%` is used as is; one with `%` escapes is
//!   decoded into a stack buffer of [`MAX_KEY_LEN`] bytes (`+` stays `+`:
//!   keys are not form data). A value that does not decode, or decodes to
//!   more than that, counts as no key (403 on a route that needs one).
//! - With `hide = true`, the forwarded request skips the key header
//!   (`upstream::forward` compares names while copying) and the query
//!   parameter ([`strip_query_tail`] removes it in place from the target
//!   just written), and a whole-query-string cache key leaves it out
//!   ([`without_param`]). Nothing here allocates.

#![forbid(unsafe_code)]

use crate::config::KeySourceConfig;
use crate::http::RequestHead;

/// The longest key value accepted from a query parameter after decoding
/// (keys are 20 to 128 characters).
pub const MAX_KEY_LEN: usize = 128;

/// API Gateway's key header.
const DEFAULT_HEADER: &str = "x-api-key";

/// `[key_source]`, compiled into the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySource {
    /// Lowercase header name.
    header: String,
    /// It is `x-api-key` (the head parser finds that one).
    default_header: bool,
    query: Option<String>,
    hide: bool,
}

impl Default for KeySource {
    fn default() -> Self {
        KeySource::new(&KeySourceConfig::default())
    }
}

impl KeySource {
    /// From the validated configuration.
    pub fn new(c: &KeySourceConfig) -> KeySource {
        KeySource {
            header: c.header.to_ascii_lowercase(),
            default_header: c.header.eq_ignore_ascii_case(DEFAULT_HEADER),
            query: c.query.clone(),
            hide: c.hide,
        }
    }

    /// The key header backends must not see (`hide = true`).
    #[inline]
    pub fn hidden_header(&self) -> Option<&str> {
        self.hide.then_some(self.header.as_str())
    }

    /// The query parameter backends and cache keys must not see.
    #[inline]
    pub fn hidden_query(&self) -> Option<&str> {
        self.query.as_deref().filter(|_| self.hide)
    }

    /// The request's API key, if it sent one: the header first, then the
    /// query parameter (percent-decoded into `buf` when it has escapes).
    /// Returns a slice of the request or of `buf`: nothing is copied for a
    /// key sent as is.
    #[inline]
    pub fn find<'a>(
        &self,
        head: &RequestHead<'a, '_>,
        buf: &'a mut [u8; MAX_KEY_LEN],
    ) -> Option<&'a [u8]> {
        // The default name was found by the head parser in its own pass.
        let header = if self.default_header {
            head.api_key
        } else {
            self.find_header(head)
        };
        if let Some(v) = header {
            return Some(v);
        }
        self.find_query(head, buf)
    }

    /// A configured header name (lowercase): only the request's side is
    /// folded, and only at the same length.
    #[inline(never)]
    fn find_header<'a>(&self, head: &RequestHead<'a, '_>) -> Option<&'a [u8]> {
        let want = self.header.as_bytes();
        head.headers
            .iter()
            .find(|h| {
                h.name.len() == want.len()
                    && h.name
                        .bytes()
                        .zip(want)
                        .all(|(a, &b)| a.to_ascii_lowercase() == b)
            })
            .map(|h| crate::http::parse::trim(h.value))
    }

    /// The query parameter, if one is configured.
    #[inline(never)]
    fn find_query<'a>(
        &self,
        head: &RequestHead<'a, '_>,
        buf: &'a mut [u8; MAX_KEY_LEN],
    ) -> Option<&'a [u8]> {
        let name = self.query.as_deref()?;
        let raw = query_param(head.query, name)?;
        decode(raw, buf)
    }
}

/// A query value: as is without `%`, else decoded into `buf` (`None` for a
/// bad escape or a value over [`MAX_KEY_LEN`] bytes).
fn decode<'a>(raw: &'a [u8], buf: &'a mut [u8; MAX_KEY_LEN]) -> Option<&'a [u8]> {
    if !raw.contains(&b'%') {
        return Some(raw);
    }
    let mut len = 0;
    let mut i = 0;
    while i < raw.len() {
        let b = if raw[i] == b'%' {
            let hi = hex(*raw.get(i + 1)?)?;
            let lo = hex(*raw.get(i + 2)?)?;
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            raw[i - 1]
        };
        *buf.get_mut(len)? = b;
        len += 1;
    }
    Some(&buf[..len])
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The raw value of the first `name=value` pair named `name` (`b""` for a
/// bare `name`).
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q [u8]> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

/// Whether a `name=value` (or bare `name`) pair is named `name`.
fn named(pair: &[u8], name: &str) -> bool {
    let key = pair.split(|&b| b == b'=').next().unwrap_or(pair);
    key == name.as_bytes()
}

/// The pairs of `query` not named `name`, in order (empty pairs dropped
/// only when they are the removed ones: the rest is kept byte for byte).
pub fn without_param<'q>(query: &'q str, name: &'q str) -> impl Iterator<Item = &'q str> + Clone {
    query
        .split('&')
        .filter(move |pair| !named(pair.as_bytes(), name))
}

/// Removes every `name` pair from the last `tail` bytes of `out` — a
/// request target whose query string ends it, as
/// [`ProxyRoute::write_target`](super::snapshot::ProxyRoute::write_target)
/// writes the client's query last — in place. When nothing of that query
/// is left, the `?` or `&` before it goes too. No allocation.
pub fn strip_query_tail(out: &mut Vec<u8>, tail: usize, name: &str) {
    if tail == 0 || tail > out.len() {
        return;
    }
    let start = out.len() - tail;
    let mut write = start;
    let mut read = start;
    let mut kept_any = false;
    // Every pair, the empty one after a trailing `&` included (the rest
    // stays byte for byte).
    loop {
        let end = out[read..]
            .iter()
            .position(|&b| b == b'&')
            .map_or(out.len(), |i| read + i);
        if !named(&out[read..end], name) {
            if kept_any {
                out[write] = b'&';
                write += 1;
            }
            out.copy_within(read..end, write);
            write += end - read;
            kept_any = true;
        }
        if end == out.len() {
            break;
        }
        read = end + 1;
    }
    out.truncate(write);
    if !kept_any && matches!(out.last(), Some(b'?' | b'&')) && start > 0 {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(target: &str, query: &str, name: &str) -> String {
        let mut out = target.as_bytes().to_vec();
        strip_query_tail(&mut out, query.len(), name);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strips_the_key_from_the_client_query() {
        assert_eq!(strip("/p?apikey=k", "apikey=k", "apikey"), "/p");
        assert_eq!(
            strip("/p?a=1&apikey=k&b=2", "a=1&apikey=k&b=2", "apikey"),
            "/p?a=1&b=2"
        );
        assert_eq!(strip("/p?apikey=k&b=2", "apikey=k&b=2", "apikey"), "/p?b=2");
        assert_eq!(strip("/p?a=1&apikey", "a=1&apikey", "apikey"), "/p?a=1");
        assert_eq!(
            strip("/p?apikey=1&apikey=2", "apikey=1&apikey=2", "apikey"),
            "/p"
        );
        // The template's own query stays, even with the same name.
        assert_eq!(strip("/p?t=1&apikey=k", "apikey=k", "apikey"), "/p?t=1");
        assert_eq!(strip("/p?apikey=t&x=1", "x=1", "apikey"), "/p?apikey=t&x=1");
        // Not a prefix match; empty pairs kept as sent.
        assert_eq!(
            strip("/p?apikeys=1&&b", "apikeys=1&&b", "apikey"),
            "/p?apikeys=1&&b"
        );
        assert_eq!(strip("/p", "", "apikey"), "/p");
    }

    #[test]
    fn query_without_a_param() {
        let q: Vec<&str> = without_param("a=1&apikey=k&b", "apikey").collect();
        assert_eq!(q, ["a=1", "b"]);
        assert_eq!(without_param("apikey=k", "apikey").count(), 0);
    }

    #[test]
    fn decodes_query_keys_on_the_stack() {
        let d = |raw: &[u8]| {
            let mut buf = [0u8; MAX_KEY_LEN];
            decode(raw, &mut buf).map(<[u8]>::to_vec)
        };
        assert_eq!(d(b"abc+def"), Some(b"abc+def".to_vec()));
        assert_eq!(d(b"abc%2Fdef%3d"), Some(b"abc/def=".to_vec()));
        assert_eq!(d(b"abc%2"), None);
        assert_eq!(d(b"abc%zz"), None);
        assert_eq!(
            d(&[b'a'; 200]),
            Some(vec![b'a'; 200]),
            "raw: no limit to copy"
        );
        let mut long = vec![b'a'; MAX_KEY_LEN];
        long.extend_from_slice(b"%41");
        assert_eq!(d(&long), None);
        assert_eq!(query_param("a=1&apikey=k%41", "apikey"), Some(&b"k%41"[..]));
        assert_eq!(query_param("apikey", "apikey"), Some(&b""[..]));
        assert_eq!(query_param("x=apikey", "apikey"), None);
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_config(256))]
        /// Arbitrary (and %-laden) query values: no panic, and a decoded
        /// value never longer than the stack buffer.
        #[test]
        fn decoding_any_value_is_safe(raw in proptest::collection::vec(
            proptest::prop_oneof![proptest::prelude::any::<u8>(), proptest::strategy::Just(b'%')],
            0..300,
        )) {
            let mut buf = [0u8; MAX_KEY_LEN];
            if let Some(v) = decode(&raw, &mut buf) {
                if raw.contains(&b'%') {
                    proptest::prop_assert!(v.len() <= MAX_KEY_LEN);
                } else {
                    proptest::prop_assert_eq!(v, &raw[..]);
                }
            }
        }

        /// Stripping the key parameter from any query left behind any
        /// prefix gives exactly the prefix and the other pairs, in order,
        /// and agrees with the cache key's [`without_param`].
        #[test]
        fn stripping_any_query_keeps_the_rest(
            prefix in "/[a-z/]{0,8}[?&]?",
            query in "[a-z=&]{0,40}",
            name in "[a-z]{1,3}",
        ) {
            let mut out = format!("{prefix}{query}").into_bytes();
            strip_query_tail(&mut out, query.len(), &name);
            let kept: Vec<&str> = without_param(&query, &name).collect();
            let mut want = prefix.clone();
            if kept.is_empty() {
                if !query.is_empty() && (want.ends_with('?') || want.ends_with('&')) {
                    want.pop();
                }
            } else {
                want.push_str(&kept.join("&"));
            }
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), want);
            let _ = query_param(&query, &name);
        }
    }
}
