//! Request head parsing: httparse into a caller-owned stack array, then the
//! framing rules of RFC 9112 applied strictly.
//!
//! [`parse_head`] borrows the connection's read buffer and returns a
//! [`RequestHead`] of slices into it: no allocation. It answers `Ok(None)`
//! while the head is incomplete, after checking that what has arrived so far
//! is still within the limits, so a client cannot make the buffer grow past
//! them.
//!
//! Refused with 400 (and the connection closed by the caller), never
//! forwarded — the request-smuggling shapes:
//! both `Content-Length` and `Transfer-Encoding`; several `Content-Length`
//! values that differ, or one that is not plain digits; any
//! `Transfer-Encoding` other than a single `chunked`; `Transfer-Encoding` on
//! HTTP/1.0; whitespace between a header name and its colon and obs-fold
//! continuation lines (httparse rejects both as a bad header name); NUL, CR
//! or other control bytes in a header value; a request line that is not
//! `METHOD SP target SP HTTP/1.x`; an HTTP/1.1 request without exactly one
//! `Host`. Too many or too large headers give 431, a target over the URL
//! limit 414.

#![forbid(unsafe_code)]

use std::mem::MaybeUninit;

use httparse::{Header, Status};

/// The size of the stack array headers are parsed into; `limits.max_headers`
/// may lower it, never raise it.
pub const MAX_HEADERS: usize = 128;

/// HTTP version of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: keep-alive only when the client asks for it.
    Http10,
    /// HTTP/1.1: keep-alive unless the client says `Connection: close`.
    Http11,
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// `Content-Length: n` with n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The limits a head is checked against.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Bytes of the header section (after the request line).
    pub max_header_bytes: usize,
    /// Number of header fields (at most [`MAX_HEADERS`]).
    pub max_headers: usize,
    /// Bytes of the request target.
    pub max_url_bytes: usize,
}

/// Why a request head was refused with 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// The request line is not `METHOD SP target SP HTTP/1.x`: a method that
    /// is not a token, extra spaces, or a bad line ending.
    RequestLine,
    /// The version is not HTTP/1.0 or HTTP/1.1.
    Version,
    /// The request target is not origin-form, absolute-form or `*`.
    Target,
    /// A header name is not a token: whitespace before the colon, or an
    /// obs-fold continuation line.
    HeaderName,
    /// A header value holds NUL, CR or another control byte.
    HeaderValue,
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    LengthAndChunked,
    /// Several `Content-Length` values that differ.
    ConflictingLength,
    /// A `Content-Length` that is not plain decimal digits within u64.
    InvalidLength,
    /// A `Transfer-Encoding` other than one final `chunked`.
    UnsupportedTransferEncoding,
    /// `Transfer-Encoding` on an HTTP/1.0 request (RFC 9112 §6.1).
    TransferEncodingHttp10,
    /// HTTP/1.1 without a `Host` header.
    MissingHost,
    /// More than one `Host` header.
    MultipleHost,
    /// A `Host` header (or absolute-form authority) that is empty or holds
    /// bytes no host name, address or port can contain (RFC 9112 §3.2).
    InvalidHost,
    /// An `Expect` other than `100-continue`.
    Expectation,
}

impl BadRequest {
    /// A short description, used in the response body and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BadRequest::RequestLine => "malformed request line",
            BadRequest::Version => "unsupported HTTP version",
            BadRequest::Target => "invalid request target",
            BadRequest::HeaderName => "invalid header name (whitespace before colon or obs-fold)",
            BadRequest::HeaderValue => "invalid character in header value",
            BadRequest::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            BadRequest::ConflictingLength => "conflicting Content-Length values",
            BadRequest::InvalidLength => "invalid Content-Length",
            BadRequest::UnsupportedTransferEncoding => "unsupported Transfer-Encoding",
            BadRequest::TransferEncodingHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            BadRequest::MissingHost => "missing Host header",
            BadRequest::MultipleHost => "more than one Host header",
            BadRequest::InvalidHost => "invalid Host header",
            BadRequest::Expectation => "unsupported expectation",
        }
    }
}

/// Why a head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 400 Bad Request.
    Bad(BadRequest),
    /// 414 URI Too Long.
    UriTooLong,
    /// 431 Request Header Fields Too Large (too many or too many bytes).
    HeadersTooLarge,
}

/// A parsed request head: slices of the read buffer (`'b`) and of the
/// caller's header array (`'h`).
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    /// The method token, e.g. `GET`.
    pub method: &'b str,
    /// The request target as sent.
    pub target: &'b str,
    /// The path part of the target (for absolute-form, after the authority).
    pub path: &'b str,
    /// The query string without the `?`; empty when there is none.
    pub query: &'b str,
    /// HTTP version.
    pub version: Version,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the connection may be kept open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The `Host` header (or the authority of an absolute-form target), as
    /// bytes: it is only ever compared, so it is not UTF-8-checked.
    pub host: Option<&'b [u8]>,
    /// The client's `x-request-id`, if present.
    pub request_id: Option<&'b [u8]>,
    /// The first `x-api-key` (API Gateway's key header), trimmed, if
    /// present: found in the same pass as the framing headers, so the key
    /// check does not search the headers again.
    pub api_key: Option<&'b [u8]>,
    /// An `Upgrade` header is present.
    pub upgrade: bool,
    /// All header fields, in order.
    pub headers: &'h [Header<'b>],
}

/// An uninitialised header array for [`parse_head`]: creating one costs
/// nothing (no 4 KiB memset per request).
pub type HeaderArray<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

/// A fresh [`HeaderArray`].
#[inline]
pub fn header_array<'b>() -> HeaderArray<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Parses a request head from `buf`. `Ok(None)`: incomplete, read more.
// Never inlined: compiled on its own, the parser's code does not depend on
// the inlining budget of the connection loop that calls it. Inlined, any
// change to the request path could reshuffle it (measured: the control
// plane's few extra instructions per request cost +290 instructions per
// mock request through this, +0.6 % once parse_head stood alone).
#[inline(never)]
pub fn parse_head<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut HeaderArray<'b>,
    limits: &HeadLimits,
) -> Result<Option<RequestHead<'h, 'b>>, HeadError> {
    let max_headers = limits.max_headers.clamp(1, MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers[..max_headers]) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => return check_partial(buf, limits).map(|()| None),
        Err(e) => {
            // A head too large, or a method too long, is reported as such
            // even when httparse failed on it for another reason first;
            // otherwise httparse's reason.
            if let Err(
                e @ (HeadError::UriTooLong
                | HeadError::HeadersTooLarge
                | HeadError::Bad(BadRequest::RequestLine)),
            ) = check_partial(buf, limits)
            {
                return Err(e);
            }
            return Err(match e {
                httparse::Error::TooManyHeaders => HeadError::HeadersTooLarge,
                httparse::Error::HeaderName => HeadError::Bad(BadRequest::HeaderName),
                httparse::Error::HeaderValue => HeadError::Bad(BadRequest::HeaderValue),
                httparse::Error::Version => HeadError::Bad(BadRequest::Version),
                _ => HeadError::Bad(BadRequest::RequestLine),
            });
        }
    };
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    if method.len() > MAX_METHOD {
        return Err(HeadError::Bad(BadRequest::RequestLine));
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        _ => Version::Http11,
    };
    if target.len() > limits.max_url_bytes {
        return Err(HeadError::UriTooLong);
    }
    let target_end = target.as_ptr() as usize - buf.as_ptr() as usize + target.len();
    if head_len.saturating_sub(target_end) > limits.max_header_bytes + 16 {
        return Err(HeadError::HeadersTooLarge);
    }
    let parsed_headers: &'h [Header<'b>] = req.headers;

    let (path, query, target_host) = split_target(method, target)?;

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut host: Option<&'b [u8]> = None;
    let mut host_count = 0u32;
    let mut request_id = None;
    let mut api_key = None;
    let mut upgrade = false;

    for h in parsed_headers {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                if !valid_host(value) {
                    return Err(HeadError::Bad(BadRequest::InvalidHost));
                }
                host_count += 1;
                host = Some(value);
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(HeadError::Bad(BadRequest::Expectation));
                }
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => upgrade = true,
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value.split(|&b| b == b',') {
                    let token = trim(token);
                    if token.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            }
            9 if api_key.is_none() && is_x_api_key(name) => api_key = Some(value),
            12 if name.eq_ignore_ascii_case(b"x-request-id") => request_id = Some(value),
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_length(value).ok_or(HeadError::Bad(BadRequest::InvalidLength))?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(HeadError::Bad(BadRequest::ConflictingLength));
                }
                content_length = Some(n);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                // Exactly one field, exactly `chunked`: anything else is a
                // framing the gateway cannot vouch for.
                if transfer_encoding || !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(HeadError::Bad(BadRequest::UnsupportedTransferEncoding));
                }
                transfer_encoding = true;
                chunked = true;
            }
            _ => {}
        }
    }

    if transfer_encoding && content_length.is_some() {
        return Err(HeadError::Bad(BadRequest::LengthAndChunked));
    }
    if transfer_encoding && version == Version::Http10 {
        return Err(HeadError::Bad(BadRequest::TransferEncodingHttp10));
    }
    if host_count > 1 {
        return Err(HeadError::Bad(BadRequest::MultipleHost));
    }
    if host_count == 0 && version == Version::Http11 && target_host.is_none() {
        return Err(HeadError::Bad(BadRequest::MissingHost));
    }
    let framing = if chunked {
        BodyFraming::Chunked
    } else {
        match content_length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        }
    };
    let keep_alive = match version {
        Version::Http11 => !conn_close,
        Version::Http10 => conn_keep_alive && !conn_close,
    };
    Ok(Some(RequestHead {
        method,
        target,
        path,
        query,
        version,
        head_len,
        framing,
        keep_alive,
        expect_continue,
        host: target_host.map(str::as_bytes).or(host),
        request_id,
        api_key,
        upgrade,
        headers: parsed_headers,
    }))
}

/// Whether a 9-byte header name is `x-api-key`, in any case: one 8-byte
/// word and a byte, each with bit 5 set (eq_ignore_ascii_case costs about
/// 40 instructions here). Exact for token characters: setting bit 5 maps
/// only `A-Z` onto the letters, and onto `-` only CR, which no header name
/// holds (httparse refuses it).
#[inline]
fn is_x_api_key(name: &[u8]) -> bool {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    match name {
        [a, b, c, d, e, f, g, h, last] => {
            let word = u64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]);
            word | FOLD == u64::from_le_bytes(*b"x-api-ke") && last | 0x20 == b'y'
        }
        _ => false,
    }
}

/// Longest method token accepted (the longest registered method name has
/// 17 bytes); a longer one is refused as a bad request line.
const MAX_METHOD: usize = 32;
/// `HTTP/1.1` and its line end.
const MAX_VERSION_PART: usize = 10;

/// Limits on a head still arriving, checked the way the complete head is:
/// the method within [`MAX_METHOD`], the target within the URL limit, the
/// version part within its length, the header bytes within theirs. So a
/// client cannot make the buffer grow past the limits, and a head refused
/// while arriving would have been refused whole.
fn check_partial(buf: &[u8], limits: &HeadLimits) -> Result<(), HeadError> {
    // Leading blank lines are allowed before the request line (RFC 9112 §2.2).
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let line_end = rest.iter().position(|&b| b == b'\n');
    let line = &rest[..line_end.unwrap_or(rest.len())];
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    if method.len() > MAX_METHOD {
        return Err(HeadError::Bad(BadRequest::RequestLine));
    }
    if parts
        .next()
        .is_some_and(|target| target.len() > limits.max_url_bytes)
    {
        return Err(HeadError::UriTooLong);
    }
    match (line_end, parts.next()) {
        (None, Some(version)) if version.len() > MAX_VERSION_PART => {
            Err(HeadError::Bad(BadRequest::Version))
        }
        (Some(line), _) if rest.len() - line > limits.max_header_bytes + 16 => {
            Err(HeadError::HeadersTooLarge)
        }
        _ => Ok(()),
    }
}

/// Splits a target into (path, query, authority of an absolute-form target).
fn split_target<'b>(
    method: &str,
    target: &'b str,
) -> Result<(&'b str, &'b str, Option<&'b str>), HeadError> {
    let (rest, authority) = if target.starts_with('/') {
        (target, None)
    } else if target == "*" && method == "OPTIONS" {
        return Ok(("*", "", None));
    } else {
        // absolute-form: scheme "://" authority path-abempty [ "?" query ]
        // (compared as bytes: the target may hold multi-byte characters)
        let Some(after) = strip_prefix_ignore_case(target, "http://")
            .or_else(|| strip_prefix_ignore_case(target, "https://"))
        else {
            return Err(HeadError::Bad(BadRequest::Target));
        };
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let authority = &after[..end];
        if !valid_host(authority.as_bytes()) {
            return Err(HeadError::Bad(BadRequest::Target));
        }
        let rest = &after[end..];
        if rest.is_empty() || rest.starts_with('?') {
            // "http://host" or "http://host?q": the path is "/". The query
            // cannot be sliced after a synthesized "/", so refuse the rare
            // second shape rather than allocate.
            if rest.is_empty() {
                return Ok(("/", "", Some(authority)));
            }
            return Err(HeadError::Bad(BadRequest::Target));
        }
        (rest, Some(authority))
    };
    match super::find_byte(rest, b'?') {
        Some(q) => Ok((&rest[..q], &rest[q + 1..], authority)),
        None => Ok((rest, "", authority)),
    }
}

/// Whether `v` can be a `Host` value, `uri-host [ ":" port ]` (RFC 9112
/// §3.2, RFC 3986 §3.2.2): a bracketed IP literal, or a non-empty reg-name
/// or IPv4 address made of unreserved, sub-delims and `%` bytes; then
/// optionally `:` and at most five digits. Whitespace, `/`, `@`, a second
/// `:`, control and non-ASCII bytes are refused, as nginx refuses them.
fn valid_host(v: &[u8]) -> bool {
    let (host_ok, port) = if v.first() == Some(&b'[') {
        match v.iter().position(|&b| b == b']') {
            Some(close) => {
                let inner = &v[1..close];
                let ok = !inner.is_empty()
                    && inner.iter().all(|&b| {
                        b.is_ascii_alphanumeric()
                            || matches!(b, b':' | b'.' | b'%' | b'-' | b'_' | b'~')
                    });
                (ok, &v[close + 1..])
            }
            None => (false, &b""[..]),
        }
    } else {
        // One pass: reg-name bytes up to the first byte that is not one
        // (a ':' there starts the port; anything else fails below).
        let name_len = v
            .iter()
            .position(|&b| !REG_NAME_BYTE[usize::from(b)])
            .unwrap_or(v.len());
        (name_len > 0, &v[name_len..])
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok
}

/// The bytes of a reg-name (or IPv4 address): unreserved, sub-delims and
/// `%` (RFC 3986 §3.2.2), as a table: the check runs on every request.
static REG_NAME_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
            );
        b += 1;
    }
    t
};

/// `s` without `prefix`, compared ASCII-case-insensitively; `None` when
/// `s` does not start with it. Never slices inside a multi-byte character.
fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Plain decimal digits (at most 19) as a u64; anything else is `None`.
pub(crate) fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// `v` without leading and trailing spaces and tabs (OWS).
pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 10240,
        max_headers: 100,
        max_url_bytes: 8192,
    };

    fn parse(raw: &[u8]) -> Result<Option<(BodyFraming, bool, String, String)>, HeadError> {
        let mut headers = header_array();
        parse_head(raw, &mut headers, &LIMITS).map(|h| {
            h.map(|h| {
                (
                    h.framing,
                    h.keep_alive,
                    h.path.to_string(),
                    h.query.to_string(),
                )
            })
        })
    }

    fn bad(raw: &[u8]) -> BadRequest {
        match parse(raw) {
            Err(HeadError::Bad(b)) => b,
            other => panic!(
                "expected 400 for {:?}, got {other:?}",
                String::from_utf8_lossy(raw)
            ),
        }
    }

    #[test]
    fn simple_get() {
        let (framing, ka, path, query) = parse(b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(framing, BodyFraming::None);
        assert!(ka);
        assert_eq!(path, "/a/b");
        assert_eq!(query, "x=1");
    }

    #[test]
    fn the_first_api_key_header_is_found_in_the_same_pass() {
        let key = |raw: &[u8]| {
            let mut headers = header_array();
            parse_head(raw, &mut headers, &LIMITS)
                .unwrap()
                .unwrap()
                .api_key
                .map(<[u8]>::to_vec)
        };
        assert_eq!(key(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), None);
        assert_eq!(
            key(b"GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key:  k1 \r\nx-api-key: k2\r\n\r\n"),
            Some(b"k1".to_vec())
        );
        // Another 9-byte name is not it.
        assert_eq!(
            key(b"GET / HTTP/1.1\r\nHost: h\r\nx-api-kez: k\r\n\r\n"),
            None
        );
        // The folded compare against every 9-byte token name differing
        // from x-api-key in one place: only case differences match.
        let tchar =
            b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        for i in 0..9 {
            for &c in tchar {
                let mut n = *b"x-api-key";
                n[i] = c;
                assert_eq!(
                    is_x_api_key(&n),
                    n.eq_ignore_ascii_case(b"x-api-key"),
                    "{n:?}"
                );
            }
        }
    }

    #[test]
    fn partial_head() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
        assert!(parse(b"GE").unwrap().is_none());
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |raw: &[u8]| parse(raw).unwrap().unwrap().1;
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, Close\r\n\r\n"
        ));
    }

    #[test]
    fn framing() {
        let f = |raw: &[u8]| parse(raw).unwrap().unwrap().0;
        assert_eq!(
            f(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"),
            BodyFraming::Length(5)
        );
        assert_eq!(
            f(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            BodyFraming::Length(5)
        );
        assert_eq!(
            f(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            BodyFraming::Chunked
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        use BadRequest::*;
        let cases: &[(&[u8], BadRequest)] = &[
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", LengthAndChunked),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", ConflictingLength),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", InvalidLength),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", InvalidLength),
            (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", InvalidLength),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEncodingHttp10),
            (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", HeaderName),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", HeaderName),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n", HeaderValue),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", HeaderValue),
            (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", RequestLine),
            (b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n", RequestLine),
            (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", Version),
            (b"GET /\r\nHost: h\r\n\r\n", RequestLine),
            (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", RequestLine),
            (b"GET foo HTTP/1.1\r\nHost: h\r\n\r\n", Target),
            (b"GET / HTTP/1.1\r\n\r\n", MissingHost),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", MultipleHost),
            (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", Expectation),
            (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost:  \t \r\n\r\n", InvalidHost),
            (b"GET http://x/prod/ok HTTP/1.1\r\nHost:  \r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: t:80x\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: t:80:81\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: []\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: t:123456\r\n\r\n", InvalidHost),
            (b"GET http://t:x/ HTTP/1.1\r\nHost: t\r\n\r\n", Target),
            (b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", InvalidHost),
            (b"GET abcdef\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", Target),
            (b"GET \xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", Target),
            (b"GET http\xc3\xa9//x/ HTTP/1.1\r\nHost: x\r\n\r\n", Target),
            (b"GET http://\xc3\xa9/ HTTP/1.1\r\nHost: x\r\n\r\n", Target),
            (b"GET http:///p HTTP/1.1\r\nHost: x\r\n\r\n", Target),
        ];
        let mut wrong = Vec::new();
        for (raw, want) in cases {
            let got = bad(raw);
            if got != *want {
                wrong.push(format!(
                    "{:?}: expected {want:?}, got {got:?}",
                    String::from_utf8_lossy(raw)
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn limits() {
        let long_url = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(8200));
        assert_eq!(
            parse(long_url.as_bytes()).unwrap_err(),
            HeadError::UriTooLong
        );
        // Still arriving, already too long.
        let partial = format!("GET /{}", "a".repeat(9000));
        assert_eq!(
            parse(partial.as_bytes()).unwrap_err(),
            HeadError::UriTooLong
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
            "b".repeat(11000)
        );
        assert_eq!(
            parse(big.as_bytes()).unwrap_err(),
            HeadError::HeadersTooLarge
        );
        let big_partial = format!("GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}", "b".repeat(11000));
        assert_eq!(
            parse(big_partial.as_bytes()).unwrap_err(),
            HeadError::HeadersTooLarge
        );
        let mut many = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 0..101 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            parse(many.as_bytes()).unwrap_err(),
            HeadError::HeadersTooLarge
        );
    }

    #[test]
    fn non_ascii_targets_never_panic() {
        // Multi-byte characters at every offset around the scheme's length.
        for prefix in [
            "", "h", "ht", "htt", "http", "http:", "http:/", "http://", "https:/",
        ] {
            for ch in ["\u{e9}", "\u{20ac}", "\u{1f600}"] {
                let raw = format!("GET {prefix}{ch}x HTTP/1.1\r\nHost: x\r\n\r\n");
                assert!(parse(raw.as_bytes()).is_err(), "{raw:?}");
            }
        }
        // In origin-form they are accepted as sent (as nginx does).
        let (_, _, path, _) = parse("GET /caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(path, "/caf\u{e9}");
    }

    #[test]
    fn valid_hosts() {
        for host in [
            "a",
            "api.example.com",
            "api.example.com:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "[::1]",
            "[fe80::1%25eth0]:443",
            "t:",
            "xn--caf-dma.example",
        ] {
            assert!(valid_host(host.as_bytes()), "{host}");
        }
    }

    #[test]
    fn a_head_refused_while_arriving_is_refused_whole() {
        // A long method with a target at the URL limit: the whole head is
        // judged by the same rules as its prefixes.
        let head = format!(
            "{} /{} HTTP/1.1\r\nHost: h\r\n\r\n",
            "M".repeat(60),
            "a".repeat(8191)
        );
        let whole = parse(head.as_bytes()).map(|h| h.is_some());
        for cut in [10, 70, 4096, 8257, head.len() - 3] {
            let part = parse(&head.as_bytes()[..cut]);
            match (&part, &whole) {
                (Ok(None), _) | (Err(_), Err(_)) => {}
                _ => panic!("prefix {cut}: {part:?}, whole: {whole:?}"),
            }
        }
        assert_eq!(whole.unwrap_err(), HeadError::Bad(BadRequest::RequestLine));
        // A method of MAX_METHOD bytes and a target at the limit are fine.
        let ok = format!(
            "{} /{} HTTP/1.1\r\nHost: h\r\n\r\n",
            "M".repeat(MAX_METHOD),
            "a".repeat(8191)
        );
        for cut in [10, 4096, 8200, ok.len() - 1] {
            assert_eq!(parse(&ok.as_bytes()[..cut]), Ok(None), "{cut}");
        }
        assert!(parse(ok.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn absolute_form() {
        let mut headers = header_array();
        let raw = b"GET http://Example.com:8080/p?q=1 HTTP/1.1\r\n\r\n";
        let h = parse_head(raw, &mut headers, &LIMITS).unwrap().unwrap();
        assert_eq!(h.path, "/p");
        assert_eq!(h.query, "q=1");
        assert_eq!(h.host, Some(&b"Example.com:8080"[..]));
    }
}
