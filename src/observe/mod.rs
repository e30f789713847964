//! Observing the gateway from outside: what it leaves behind for people and
//! tools to read.
//!
//! - [`access_log`]: access logs in the style of Amazon API Gateway (a
//!   format of `$context` variables, one line per request), formatted on
//!   the worker without allocating and written by a thread of their own.

pub mod access_log;

#[cfg(test)]
mod tests;
