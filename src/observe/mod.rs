//! Observability: what the gateway records about the requests it serves,
//! for people and tools to read.
//!
//! - [`metrics`]: counts and latency histograms per API, stage, route and
//!   canary, recorded per worker without locks, merged when read (the
//!   admin socket's `GET /metrics` and `GET /stats`).
//! - [`access_log`]: access logs in the style of Amazon API Gateway (a
//!   format of `$context` variables, one line per request), formatted on
//!   the worker without allocating and written by a thread of their own.

#![deny(unsafe_code)] // the submodules forbid it; the writer tests need libc::mkfifo

pub mod access_log;
pub mod metrics;

#[cfg(test)]
mod tests;
