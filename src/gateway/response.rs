//! Gateway-generated responses: the errors the gateway itself answers with,
//! as API Gateway shapes them: status, `x-amzn-ErrorType`, and a
//! JSON body (`Content-Type: application/json`), except the 413, whose
//! observed body is plain text.

#![forbid(unsafe_code)]

use crate::http::response::{
    u64_digits, write_common_headers, write_content_length, write_rate_headers, write_status_line,
    ConnectionHeader, RateHeaders,
};

/// An error the gateway answers itself, before or instead of an integration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayError {
    /// 400: the request is malformed; the text says how.
    BadRequest(&'static str),
    /// 403 `Missing Authentication Token`: no route matched (REST style).
    MissingAuthenticationToken,
    /// 404 `Not Found`: no route matched (HTTP API style).
    NotFound,
    /// 403 `Forbidden`: no API or stage answers this host and path.
    Forbidden,
    /// 408: the client sent its head too slowly.
    RequestTimeout,
    /// 421 `Misdirected Request`: on a TLS connection, the `Host` is for
    /// another certificate than the handshake's SNI name chose.
    MisdirectedRequest,
    /// 413: the body is over the limit (carries the limit in bytes).
    PayloadTooLarge(u64),
    /// 414: the request target is over the URL limit.
    UriTooLong,
    /// 431: too many header fields, or too many header bytes.
    HeadersTooLarge,
    /// 500: the configuration cannot serve this request.
    ApiConfiguration,
    /// 502: the backend's response could not be framed or parsed.
    BadGateway,
    /// 504: the backend did not answer within the integration timeout.
    IntegrationTimeout,
    /// 504: the backend refused, reset or dropped the connection, or no
    /// target is healthy.
    IntegrationFailure,
    /// 429 `Too Many Requests`: a throttle refused the request.
    TooManyRequests,
    /// 429 `Limit Exceeded`: the key's usage-plan quota for this period is
    /// used up.
    QuotaExceeded,
    /// 504 `Not in cache`: a request with `Cache-Control: only-if-cached`
    /// (RFC 9111 §5.2.1.7) that the stage cache cannot answer.
    NotCached,
}

impl GatewayError {
    /// The status code.
    pub fn status(self) -> u16 {
        match self {
            GatewayError::BadRequest(_) => 400,
            GatewayError::MissingAuthenticationToken | GatewayError::Forbidden => 403,
            GatewayError::NotFound => 404,
            GatewayError::RequestTimeout => 408,
            GatewayError::MisdirectedRequest => 421,
            GatewayError::TooManyRequests | GatewayError::QuotaExceeded => 429,
            GatewayError::PayloadTooLarge(_) => 413,
            GatewayError::UriTooLong => 414,
            GatewayError::HeadersTooLarge => 431,
            GatewayError::ApiConfiguration => 500,
            GatewayError::BadGateway => 502,
            GatewayError::IntegrationTimeout
            | GatewayError::IntegrationFailure
            | GatewayError::NotCached => 504,
        }
    }

    /// The gateway response type, used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "BAD_REQUEST",
            GatewayError::MissingAuthenticationToken => "MISSING_AUTHENTICATION_TOKEN",
            GatewayError::NotFound => "RESOURCE_NOT_FOUND",
            GatewayError::Forbidden => "ACCESS_DENIED",
            GatewayError::RequestTimeout => "REQUEST_TIMEOUT",
            GatewayError::MisdirectedRequest => "MISDIRECTED_REQUEST",
            GatewayError::PayloadTooLarge(_) => "REQUEST_TOO_LARGE",
            GatewayError::UriTooLong => "URI_TOO_LONG",
            GatewayError::HeadersTooLarge => "REQUEST_HEADERS_TOO_LARGE",
            GatewayError::ApiConfiguration => "API_CONFIGURATION_ERROR",
            GatewayError::BadGateway => "BAD_GATEWAY",
            GatewayError::IntegrationTimeout => "INTEGRATION_TIMEOUT",
            GatewayError::IntegrationFailure => "INTEGRATION_FAILURE",
            GatewayError::TooManyRequests => "THROTTLED",
            GatewayError::QuotaExceeded => "QUOTA_EXCEEDED",
            GatewayError::NotCached => "NOT_CACHED",
        }
    }

    /// The `x-amzn-ErrorType` value, where API Gateway sends one.
    fn error_type(self) -> Option<&'static str> {
        match self {
            GatewayError::MissingAuthenticationToken => Some("MissingAuthenticationTokenException"),
            GatewayError::Forbidden => Some("ForbiddenException"),
            GatewayError::NotFound => Some("NotFoundException"),
            GatewayError::BadRequest(_) => Some("BadRequestException"),
            GatewayError::TooManyRequests => Some("TooManyRequestsException"),
            GatewayError::QuotaExceeded => Some("LimitExceededException"),
            GatewayError::ApiConfiguration
            | GatewayError::BadGateway
            | GatewayError::IntegrationFailure => Some("InternalServerErrorException"),
            _ => None,
        }
    }

    /// Whether the connection must close after this response: the framing
    /// of what follows on the connection is in doubt.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            GatewayError::BadRequest(_)
                | GatewayError::RequestTimeout
                | GatewayError::MisdirectedRequest
                | GatewayError::PayloadTooLarge(_)
                | GatewayError::UriTooLong
                | GatewayError::HeadersTooLarge
        )
    }

    /// Appends the whole response (head and, unless `head_only`, body).
    pub fn write(
        self,
        out: &mut Vec<u8>,
        date: &[u8],
        request_id: &[u8],
        connection: ConnectionHeader,
        head_only: bool,
    ) {
        self.write_with(out, date, request_id, connection, head_only, None);
    }

    /// [`GatewayError::write`] with rate-limit headers (the opt-in
    /// `[throttle] headers`): a 429 from throttling or a quota passes
    /// [`RateHeaders::refused`] for its `Retry-After`; any other error on a
    /// throttled route passes the admitted request's headers.
    pub fn write_with(
        self,
        out: &mut Vec<u8>,
        date: &[u8],
        request_id: &[u8],
        connection: ConnectionHeader,
        head_only: bool,
        rate: Option<&RateHeaders>,
    ) {
        write_status_line(out, self.status());
        write_common_headers(out, date, request_id, connection);
        write_rate_headers(out, rate);
        if let Some(t) = self.error_type() {
            out.extend_from_slice(b"x-amzn-ErrorType: ");
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let mut body = [0u8; 160];
        let len = self.body(&mut body);
        if let GatewayError::PayloadTooLarge(_) = self {
            out.extend_from_slice(b"Content-Type: text/plain\r\n");
        } else {
            out.extend_from_slice(b"Content-Type: application/json\r\n");
        }
        write_content_length(out, len as u64);
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&body[..len]);
        }
    }

    /// The message API Gateway's body carries (`$context.error.message`).
    pub fn message(self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "Bad Request",
            GatewayError::MissingAuthenticationToken => "Missing Authentication Token",
            GatewayError::NotFound => "Not Found",
            GatewayError::Forbidden => "Forbidden",
            GatewayError::RequestTimeout => "Request Timeout",
            GatewayError::MisdirectedRequest => "Misdirected Request",
            GatewayError::PayloadTooLarge(_) => "HTTP content length exceeded",
            GatewayError::UriTooLong => "Request-URI Too Long",
            GatewayError::HeadersTooLarge => "Request Header Fields Too Large",
            GatewayError::ApiConfiguration | GatewayError::BadGateway => "Internal server error",
            GatewayError::IntegrationTimeout => "Endpoint request timed out",
            GatewayError::IntegrationFailure => "Network error communicating with endpoint",
            GatewayError::TooManyRequests => "Too Many Requests",
            GatewayError::QuotaExceeded => "Limit Exceeded",
            GatewayError::NotCached => "Not in cache",
        }
    }

    /// The length of the body [`GatewayError::write`] sends.
    pub fn body_len(self) -> usize {
        self.body(&mut [0u8; 160])
    }

    /// Writes the body into `buf`, returning its length.
    fn body(self, buf: &mut [u8; 160]) -> usize {
        let mut w = Cursor { buf, len: 0 };
        match self {
            GatewayError::BadRequest(why) => {
                w.put(b"{\"message\":\"Bad Request: ");
                w.put(why.as_bytes());
                w.put(b"\"}");
            }
            GatewayError::MissingAuthenticationToken => {
                w.put(b"{\"message\":\"Missing Authentication Token\"}")
            }
            GatewayError::NotFound => w.put(b"{\"message\":\"Not Found\"}"),
            GatewayError::Forbidden => w.put(b"{\"message\":\"Forbidden\"}"),
            GatewayError::RequestTimeout => w.put(b"{\"message\":\"Request Timeout\"}"),
            GatewayError::MisdirectedRequest => w.put(b"{\"message\":\"Misdirected Request\"}"),
            GatewayError::PayloadTooLarge(limit) => {
                w.put(b"HTTP content length exceeded ");
                let mut digits = [0u8; 20];
                w.put(u64_digits(limit, &mut digits));
                w.put(b" bytes.");
            }
            GatewayError::UriTooLong => w.put(b"{\"message\":\"Request-URI Too Long\"}"),
            GatewayError::HeadersTooLarge => {
                w.put(b"{\"message\":\"Request Header Fields Too Large\"}")
            }
            GatewayError::ApiConfiguration | GatewayError::BadGateway => {
                w.put(b"{\"message\": \"Internal server error\"}")
            }
            GatewayError::IntegrationTimeout => {
                w.put(b"{\"message\": \"Endpoint request timed out\"}")
            }
            GatewayError::IntegrationFailure => {
                w.put(b"{\"message\": \"Network error communicating with endpoint\"}")
            }
            GatewayError::TooManyRequests => w.put(b"{\"message\":\"Too Many Requests\"}"),
            GatewayError::QuotaExceeded => w.put(b"{\"message\":\"Limit Exceeded\"}"),
            GatewayError::NotCached => w.put(b"{\"message\":\"Not in cache\"}"),
        }
        w.len
    }
}

struct Cursor<'a> {
    buf: &'a mut [u8; 160],
    len: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(e: GatewayError) -> String {
        let mut out = Vec::new();
        e.write(&mut out, b"DATE", b"rid", ConnectionHeader::Omit, false);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bodies_match_api_gateway() {
        let r = render(GatewayError::MissingAuthenticationToken);
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(r.contains("x-amzn-ErrorType: MissingAuthenticationTokenException\r\n"));
        assert!(r.ends_with("\r\n\r\n{\"message\":\"Missing Authentication Token\"}"));
        let r = render(GatewayError::PayloadTooLarge(10_485_760));
        assert!(r.contains("Content-Length: 44\r\n"), "{r}");
        assert!(r.ends_with("HTTP content length exceeded 10485760 bytes."));
        let r = render(GatewayError::Forbidden);
        assert!(r.contains("Content-Length: 23\r\n"));
        // Integration errors carry a space after the colon, as captured.
        let r = render(GatewayError::IntegrationFailure);
        assert!(r.contains("Content-Length: 56\r\n"), "{r}");
        let r = render(GatewayError::BadGateway);
        assert!(r.contains("Content-Length: 36\r\n"), "{r}");
    }

    #[test]
    fn a_429_can_carry_retry_after() {
        let mut out = Vec::new();
        let rate = RateHeaders::refused(20, 3);
        GatewayError::TooManyRequests.write_with(
            &mut out,
            b"DATE",
            b"rid",
            ConnectionHeader::Omit,
            false,
            Some(&rate),
        );
        let r = String::from_utf8(out).unwrap();
        assert!(r.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{r}");
        assert!(
            r.contains("\r\nRetry-After: 3\r\nRateLimit-Limit: 20\r\n"),
            "{r}"
        );
        assert!(
            r.ends_with("\r\n\r\n{\"message\":\"Too Many Requests\"}"),
            "{r}"
        );
        // Without: byte for byte what API Gateway's shape is.
        assert!(!render(GatewayError::TooManyRequests).contains("Retry-After"));
    }
}
