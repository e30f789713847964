//! Response head writing into a reused per-connection buffer.
//!
//! Everything here appends to a `Vec<u8>` whose capacity the connection
//! keeps between requests, so once the buffer has grown to the largest
//! response head it will ever write, writing allocates nothing. Numbers are
//! formatted on the stack.

#![forbid(unsafe_code)]

/// What the `Connection` header of a response says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// Nothing: HTTP/1.1 keep-alive is the default.
    Omit,
    /// `Connection: keep-alive` (an HTTP/1.0 client asked for it).
    KeepAlive,
    /// `Connection: close`: the connection ends after this response.
    Close,
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends `HTTP/1.1 {status} {reason}\r\n`.
pub fn write_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends the headers every response carries: `Server`, `Date`,
/// `x-request-id`, and `Connection` when it is not the default.
pub fn write_common_headers(
    out: &mut Vec<u8>,
    date: &[u8],
    request_id: &[u8],
    connection: ConnectionHeader,
) {
    out.extend_from_slice(b"Server: ringgate\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\nx-request-id: ");
    out.extend_from_slice(request_id);
    out.extend_from_slice(b"\r\n");
    match connection {
        ConnectionHeader::Omit => {}
        ConnectionHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnectionHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
}

/// Appends `Content-Length: n\r\n`.
pub fn write_content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"Content-Length: ");
    write_u64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `n` (formatted on the stack).
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(u64_digits(n, &mut digits));
}

/// Formats `n` in decimal into `buf`, returning the digits.
pub fn u64_digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Rate-limit headers for one response (the opt-in `[throttle] headers`),
/// three or four numbers on the stack, written by [`RateHeaders::write`]
/// into the response head being built: no allocation beyond the reused
/// buffer's growth.
///
/// Every writer of a response head takes an `Option<RateHeaders>` and
/// appends these lines after the common headers: mock responses, gateway
/// errors, proxied responses and cache hits alike. `None` writes nothing.
///
/// - An admitted request: [`RateHeaders::admitted`] (`RateLimit-Limit`,
///   `RateLimit-Remaining`, `RateLimit-Reset`).
/// - A refused one: [`RateHeaders::refused`] adds `Retry-After` with the
///   same seconds as `RateLimit-Reset`, and `RateLimit-Remaining: 0`. Any
///   429 can carry them; a usage-plan quota answers with the quota's limit
///   and the seconds until its period ends:
///   `RateHeaders::refused(quota_limit, secs_until_period_end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateHeaders {
    /// `RateLimit-Limit`: the capacity (burst) of the bucket reported.
    pub limit: u32,
    /// `RateLimit-Remaining`: whole tokens left after this request.
    pub remaining: u32,
    /// `RateLimit-Reset`: seconds until the bucket is full again (admitted)
    /// or until a request can be admitted (refused); also `Retry-After` on
    /// a refusal. Waits beyond `u32::MAX` seconds (136 years: a bucket
    /// that never refills) are written as `u32::MAX`.
    pub reset_secs: u32,
    /// A refusal: `Retry-After` is written too.
    pub refused: bool,
}

impl RateHeaders {
    /// For an admitted request: the bucket with the fewest tokens left.
    pub fn admitted(limit: u32, remaining: u32, reset_secs: u64) -> RateHeaders {
        RateHeaders {
            limit,
            remaining,
            reset_secs: clamp_secs(reset_secs),
            refused: false,
        }
    }

    /// For a refused request (429): `Retry-After` and `RateLimit-Reset`
    /// both `retry_after_secs` (at least 1: a `Retry-After: 0` would invite
    /// an immediate retry that is refused again).
    pub fn refused(limit: u32, retry_after_secs: u64) -> RateHeaders {
        RateHeaders {
            limit,
            remaining: 0,
            reset_secs: clamp_secs(retry_after_secs.max(1)),
            refused: true,
        }
    }

    /// Appends the header lines, each ending in CRLF.
    pub fn write(&self, out: &mut Vec<u8>) {
        if self.refused {
            out.extend_from_slice(b"Retry-After: ");
            write_u64(out, u64::from(self.reset_secs));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"RateLimit-Limit: ");
        write_u64(out, u64::from(self.limit));
        out.extend_from_slice(b"\r\nRateLimit-Remaining: ");
        write_u64(out, u64::from(self.remaining));
        out.extend_from_slice(b"\r\nRateLimit-Reset: ");
        write_u64(out, u64::from(self.reset_secs));
        out.extend_from_slice(b"\r\n");
    }
}

/// Seconds for a header field kept in 32 bits (see [`RateHeaders`]).
fn clamp_secs(secs: u64) -> u32 {
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Appends `rate`'s header lines, if any.
#[inline]
pub fn write_rate_headers(out: &mut Vec<u8>, rate: Option<&RateHeaders>) {
    if let Some(r) = rate {
        r.write(out);
    }
}

/// Nanoseconds as whole seconds for a header, rounded up (`u64::MAX`, a
/// wait that never ends, stays large).
pub fn secs_ceil(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// Whether a status forbids a body (RFC 9110 §6.4.1: 1xx, 204, 304).
pub fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_numbers_and_lines() {
        let mut out = Vec::new();
        write_u64(&mut out, 0);
        out.push(b' ');
        write_u64(&mut out, u64::MAX);
        assert_eq!(out, b"0 18446744073709551615");
        out.clear();
        write_status_line(&mut out, 431);
        assert_eq!(out, b"HTTP/1.1 431 Request Header Fields Too Large\r\n");
    }

    #[test]
    fn rate_headers() {
        let mut out = Vec::new();
        RateHeaders::admitted(10, 9, 1).write(&mut out);
        assert_eq!(
            out,
            b"RateLimit-Limit: 10\r\nRateLimit-Remaining: 9\r\nRateLimit-Reset: 1\r\n"
        );
        out.clear();
        RateHeaders::refused(5, 0).write(&mut out);
        assert_eq!(
            out,
            &b"Retry-After: 1\r\nRateLimit-Limit: 5\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: 1\r\n"[..]
        );
        out.clear();
        write_rate_headers(&mut out, None);
        assert!(out.is_empty());
        assert_eq!(secs_ceil(0), 0);
        assert_eq!(secs_ceil(1), 1);
        assert_eq!(secs_ceil(1_000_000_000), 1);
        assert_eq!(secs_ceil(1_000_000_001), 2);
        assert_eq!(
            RateHeaders::refused(1, secs_ceil(u64::MAX)).reset_secs,
            u32::MAX
        );
        assert_eq!(std::mem::size_of::<Option<RateHeaders>>(), 16);
    }
}
