//! The admin API's transport: HTTP/1.1 + JSON over a Unix socket, and
//! optionally over a loopback TCP listener guarded by a bearer token.
//!
//! This module carries requests to and from the control plane; what the
//! endpoints do is behind the [`http::Handler`] trait and lives elsewhere.
//!
//! - [`http`]: the server. [`http::AdminServer`] binds the socket (mode
//!   0600, never briefly wider; a stale socket file is replaced, a live one
//!   is refused with `AddrInUse`) and the optional TCP listener, and serves
//!   each connection on a thread of its own with plain blocking std I/O,
//!   never on the monoio workers. The request parser
//!   ([`http::parse_request`]) is a pure function over a byte buffer.
//! - [`client`]: one request at a time over either transport, for the
//!   `ringgate admin ...` commands.
//!
//! ## Wire rules
//! HTTP/1.1 and 1.0, keep-alive (`Connection: close` honoured, 1.0 closes
//! unless it asks for keep-alive), pipelined requests answered in order.
//! Request bodies are framed by `Content-Length` only: `Transfer-Encoding`
//! gets 411. Every response has `Content-Length` (but 204), a JSON body
//! has `Content-Type: application/json`, and a response after which the
//! server closes says `Connection: close`. Errors of the transport itself
//! use the same shape as the endpoints' (`{"error": code, "message": ...}`):
//!
//! | status | `error`              | when                                            |
//! |--------|----------------------|-------------------------------------------------|
//! | 400    | `bad_request`        | malformed head, bad percent-encoding, non-UTF-8 path |
//! | 400    | `bad_content_length` | `Content-Length` not a number, or two that differ |
//! | 401    | `unauthorized`       | TCP: no or wrong `Authorization: Bearer` token  |
//! | 408    | `request_timeout`    | a request started but did not finish in time    |
//! | 411    | `length_required`    | `Transfer-Encoding` present                     |
//! | 413    | `payload_too_large`  | body over 1 MiB (refused before it is read)     |
//! | 431    | `header_too_large`   | head over 16 KiB or over 64 header fields       |
//! | 500    | `internal`           | the handler panicked (logged to stderr)         |
//! | 503    | `too_many_connections` | 32 connections already open                   |
//!
//! After any 4xx from the transport the connection is closed (401 aside).
//!
//! ## Limits
//! - One thread per connection, at most 32 at once; meant for operators and
//!   scripts, not for traffic.
//! - A read that waits 10 s ends the connection (silently when idle, 408
//!   mid-request), and a request must arrive whole within 30 s, so a silent
//!   or trickling client cannot pin a thread for long. Writes time out too.
//! - No `HEAD` special-casing, no chunked bodies, no TLS: the Unix socket is
//!   protected by its file mode, the TCP listener only listens on loopback.
//! - Replacing a stale socket is check-then-rename: two servers started at
//!   the same instant on the same path can both succeed, the later one
//!   owning the path.

pub mod api;
pub mod cli;
pub mod client;
pub mod http;
