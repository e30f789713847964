//! The gateway: what a request means, and the pipeline that answers it.
//!
//! - [`snapshot`]: the immutable [`Snapshot`] compiled from a configuration
//!   (APIs, stages, routes, integrations, stage caches, backends) and how a
//!   request resolves against it.
//! - [`service`]: [`Gateway`], the [`crate::runtime::Service`] the workers
//!   run; `worker`: its per-worker state.
//! - `connection`: the HTTP/1.1 loop on one client connection (heads,
//!   pipelining, keep-alive, errors that close).
//! - `pipeline`: one request, phase by phase (below); `exchange`: what
//!   the phases share (the request's context, the lent connection, writing
//!   an error, forwarding and answering the forward).
//! - `cached`: the stage cache on the request path (the API Gateway
//!   mode); `cached_rfc`: its RFC 9111 mode (revalidation, conditional
//!   requests, invalidation by unsafe methods, stale content).
//! - `body`: reading and dropping a body the gateway answers without a
//!   backend.
//! - [`outcome`]: how each request ended, as a typed [`Outcome`].
//! - [`response`]: the gateway's own error responses; [`request_id`].
//! - [`limits`]: the opt-in throttling beyond API Gateway (per-client-IP
//!   buckets, rate-limit headers) and the thread that sweeps idle client
//!   buckets; [`key_source`]: where API keys are read from and hiding them
//!   from backends (`[key_source]`).
//!
//! ## A request, top to bottom (`pipeline::handle`)
//! ```text
//! (health)    [server] health_path, answered before anything else
//! resolve     host / base path → API → stage → route (Snapshot::dispatch)
//! authorize   the API key of a key-required route (403)
//! throttle    the key's plan per route and per key, the stage's route, the
//!             account (429)
//! quota       the key's usage-plan quota (429 Limit Exceeded)
//! cache       stage cache lookup: hit → respond; miss → lead the fetch
//! integrate   mock, or http_proxy (upstream::forward) with the cache's capture
//! respond     the response, or a gateway error as API Gateway shapes it
//! record      the request's Outcome; its series' counts and Latency /
//!             IntegrationLatency (observe::metrics); its access log line
//! ```
//! One context per request (`exchange::Request`) carries what the phases
//! share (the head, the route's parameters, the request id), so no phase
//! needs a long argument list. Within this module, dependencies run one
//! way: `service` → `connection` → `pipeline` → `cached` → `body` →
//! `exchange` → `worker` → `snapshot`/`outcome`/`response`.

#![forbid(unsafe_code)]

mod body;
mod cached;
mod cached_rfc;
mod connection;
mod exchange;
pub mod key_source;
pub mod limits;
pub mod outcome;
mod pipeline;
pub mod request_id;
pub mod response;
pub mod service;
pub mod snapshot;
mod worker;

pub use outcome::{Outcome, OutcomeCounts};
pub use response::GatewayError;
pub use service::{Gateway, GatewayOptions, Published};
pub use snapshot::*;
