//! Observability: what the gateway records about the requests it serves.
//!
//! - [`metrics`]: counts and latency histograms per API, stage, route and
//!   canary, recorded per worker without locks, merged when read (the
//!   admin socket's `GET /metrics` and `GET /stats`).

#![forbid(unsafe_code)]

pub mod metrics;
