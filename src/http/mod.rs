//! Allocation-free HTTP/1.1 (RFC 9112) building blocks, free of I/O.
//!
//! - [`parse`]: the request head, parsed by httparse into a stack array of
//!   headers, with strict framing checks (request smuggling is refused).
//! - [`chunked`]: a streaming chunked-body decoder.
//! - [`response`]: response heads written into a reused buffer.
//! - [`response_head`]: a backend's response head, parsed with the framing
//!   rules a proxy must apply (502 for smuggling shapes), and the hop-by-hop
//!   header set.
//! - [`date`]: the `Date` value, formatted once a second per worker.
//!
//! The connection loop that drives these over sockets lives in
//! [`crate::runtime`]; keeping this module free of I/O lets its rules be
//! unit-tested byte by byte and benchmarked alone.

#![forbid(unsafe_code)]

pub mod chunked;
pub mod date;
pub mod parse;
pub mod response;
pub mod response_head;

pub use parse::{
    header_array, parse_head, BodyFraming, HeadError, HeadLimits, HeaderArray, RequestHead,
    Version, MAX_HEADERS,
};

/// Position of `byte` in `s`. For the short strings of a request line a
/// plain loop beats `str::find`'s searcher set-up several times over.
#[inline]
pub fn find_byte(s: &str, byte: u8) -> Option<usize> {
    s.as_bytes().iter().position(|&b| b == byte)
}
