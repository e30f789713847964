//! Parsing a backend's response head, with the framing rules a proxy must
//! apply before it forwards a byte (RFC 9112 §6.3).
//!
//! [`parse_response_head`] borrows the upstream connection's read buffer and
//! returns a [`ResponseHead`] of slices into it, or `Ok(None)` while the head
//! is incomplete. A response the gateway cannot frame safely is refused with
//! [`BadResponse`] (the caller answers 502 and discards the connection):
//! both `Content-Length` and `Transfer-Encoding`, differing or malformed
//! `Content-Length`s, a `Transfer-Encoding` other than one `chunked`, a head
//! over the size limit, or anything httparse rejects.

#![forbid(unsafe_code)]

use httparse::{Header, Status};

use super::parse::{parse_length, trim, HeaderArray, Version, MAX_HEADERS};

/// Largest response head accepted from a backend.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body: HEAD, 1xx, 204, 304, or `Content-Length: 0`.
    None,
    /// `Content-Length: n`, n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Neither: the body runs until the backend closes.
    Close,
}

/// Why a backend response was refused (answered 502).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadResponse {
    /// Not an HTTP/1.x response head.
    Malformed,
    /// The head is larger than [`MAX_RESPONSE_HEAD`].
    TooLarge,
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndChunked,
    /// `Content-Length` values that differ, or one that is not digits.
    BadLength,
    /// A `Transfer-Encoding` other than a single `chunked`.
    BadTransferEncoding,
}

impl BadResponse {
    /// A short description for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BadResponse::Malformed => "malformed response head",
            BadResponse::TooLarge => "response head too large",
            BadResponse::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            BadResponse::BadLength => "invalid or conflicting Content-Length",
            BadResponse::BadTransferEncoding => "unsupported Transfer-Encoding",
        }
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: &'b str,
    /// HTTP version of the response.
    pub version: Version,
    /// Bytes of the head including the blank line.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: ResponseFraming,
    /// Whether the backend connection may be reused after the body.
    pub keep_alive: bool,
    /// All header fields, in order.
    pub headers: &'h [Header<'b>],
}

/// Parses a response head. `request_was_head`: the request was HEAD, so
/// the response has no body whatever its headers say.
pub fn parse_response_head<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut HeaderArray<'b>,
    request_was_head: bool,
) -> Result<Option<ResponseHead<'h, 'b>>, BadResponse> {
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers[..MAX_HEADERS],
    ) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => return Err(BadResponse::TooLarge),
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooLarge),
        Err(_) => return Err(BadResponse::Malformed),
    };
    if head_len > MAX_RESPONSE_HEAD {
        return Err(BadResponse::TooLarge);
    }
    let status = resp.code.ok_or(BadResponse::Malformed)?;
    if !(100..=999).contains(&status) {
        return Err(BadResponse::Malformed);
    }
    let version = if resp.version == Some(0) {
        Version::Http10
    } else {
        Version::Http11
    };
    let reason = resp.reason.unwrap_or("");
    let parsed: &'h [Header<'b>] = resp.headers;

    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive_token = false;
    for h in parsed {
        let name = h.name.as_bytes();
        match name.len() {
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for t in h.value.split(|&b| b == b',') {
                    let t = trim(t);
                    close |= t.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_length(trim(h.value)).ok_or(BadResponse::BadLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(BadResponse::BadLength);
                }
                length = Some(n);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                if chunked || !trim(h.value).eq_ignore_ascii_case(b"chunked") {
                    return Err(BadResponse::BadTransferEncoding);
                }
                chunked = true;
            }
            _ => {}
        }
    }
    if chunked && length.is_some() {
        return Err(BadResponse::LengthAndChunked);
    }
    let no_body =
        request_was_head || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        ResponseFraming::None
    } else if chunked {
        ResponseFraming::Chunked
    } else {
        match length {
            Some(0) => ResponseFraming::None,
            Some(n) => ResponseFraming::Length(n),
            None => ResponseFraming::Close,
        }
    };
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
    // framing; it is read (as chunked) and the connection closed after it.
    let keep_alive = framing != ResponseFraming::Close
        && !close
        && !(chunked && version == Version::Http10)
        && (version == Version::Http11 || keep_alive_token);
    Ok(Some(ResponseHead {
        status,
        reason,
        version,
        head_len,
        framing,
        keep_alive,
        headers: parsed,
    }))
}

/// Whether a header is hop-by-hop (RFC 9110 §7.6.1) and so never forwarded
/// as is: `Connection`, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`,
/// `Upgrade`, and every `Proxy-*`.
pub fn is_hop_by_hop(name: &str) -> bool {
    let n = name.as_bytes();
    match n.len() {
        2 => n.eq_ignore_ascii_case(b"te"),
        7 => n.eq_ignore_ascii_case(b"trailer") || n.eq_ignore_ascii_case(b"upgrade"),
        10 => n.eq_ignore_ascii_case(b"connection") || n.eq_ignore_ascii_case(b"keep-alive"),
        17 => n.eq_ignore_ascii_case(b"transfer-encoding"),
        _ => n.len() > 6 && n[..6].eq_ignore_ascii_case(b"proxy-"),
    }
}

/// Whether `name` is listed in any `Connection` header of `headers` (such
/// headers are hop-by-hop too).
pub fn named_by_connection(headers: &[Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|t| trim(t).eq_ignore_ascii_case(name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::header_array;

    fn parse(raw: &[u8], head: bool) -> Result<Option<(u16, ResponseFraming, bool)>, BadResponse> {
        let mut h = header_array();
        parse_response_head(raw, &mut h, head)
            .map(|r| r.map(|r| (r.status, r.framing, r.keep_alive)))
    }

    #[test]
    fn framing_rules() {
        use ResponseFraming::*;
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Ok(Some((200, Length(5), true)))
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Ok(Some((200, None, true)))
        );
        assert_eq!(
            parse(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            Ok(Some((204, None, true)))
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            Ok(Some((304, None, true)))
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Ok(Some((200, Chunked, true)))
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Ok(Some((200, Close, false)))
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
                false
            ),
            Ok(Some((200, Length(1), false)))
        );
        assert_eq!(
            parse(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            Ok(Some((200, Length(1), false)))
        );
        assert_eq!(
            parse(
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
                false
            ),
            Ok(Some((200, Length(1), true)))
        );
        // RFC 9112 §6.1: HTTP/1.0 with Transfer-Encoding is faulty framing:
        // read it, then close the connection.
        assert_eq!(
            parse(
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
                false
            ),
            Ok(Some((200, Chunked, false)))
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(Option::None)
        );
    }

    #[test]
    fn refuses_unsafe_framing() {
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Err(BadResponse::LengthAndChunked)
        );
        assert_eq!(
            parse(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                false
            ),
            Err(BadResponse::BadLength)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false),
            Err(BadResponse::BadLength)
        );
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            Err(BadResponse::BadTransferEncoding)
        );
        assert_eq!(
            parse(b"NOT HTTP\r\n\r\n", false),
            Err(BadResponse::Malformed)
        );
        assert_eq!(
            parse(b"HTTP/1.1 2000 OK\r\n\r\n", false),
            Err(BadResponse::Malformed)
        );
        let big = format!(
            "HTTP/1.1 200 OK\r\nX: {}",
            "a".repeat(MAX_RESPONSE_HEAD + 10)
        );
        assert_eq!(parse(big.as_bytes(), false), Err(BadResponse::TooLarge));
    }

    #[test]
    fn hop_by_hop_names() {
        for n in [
            "Connection",
            "keep-alive",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Proxy-Authorization",
            "proxy-connection",
        ] {
            assert!(is_hop_by_hop(n), "{n}");
        }
        for n in ["Content-Length", "Host", "X-Proxy", "Tea"] {
            assert!(!is_hop_by_hop(n), "{n}");
        }
        let mut h = header_array();
        let raw = b"GET / HTTP/1.1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\r\n";
        let mut req = httparse::Request::new(&mut []);
        req.parse_with_uninit_headers(raw, &mut h).unwrap();
        assert!(named_by_connection(req.headers, "x-secret"));
        assert!(!named_by_connection(req.headers, "x-other"));
    }
}
