//! # ringgate
//!
//! A self-hosted API gateway and edge proxy: what Amazon API Gateway does for
//! an API — routes, stages, stage variables, mock and HTTP proxy
//! integrations, its status codes and error bodies — as one binary, built on
//! io_uring with one pinned worker thread per core.
//!
//! ## Architecture in a page
//!
//! ```text
//! main (CLI) ─ config::load ─► Config ─► gateway::Snapshot::build ─► Arc<Snapshot>
//!                                                                        │
//! runtime::Server::start ─ binds SO_REUSEPORT listeners, one per worker ─┤
//!   worker 0 (core 0): monoio io_uring runtime ─ accept ─ connection tasks
//!   worker 1 (core 1): …                                   │
//!                                                         ▼
//!   connection: read → http::parse_head (stack headers, strict framing)
//!              → body consumed (Content-Length / chunked, streaming, bounded)
//!              → Snapshot::dispatch: host/base path → stage → router
//!              → mock: response into the reused write buffer (one write per batch)
//!              → stage cache (proxied routes): hit from shared bytes, or one fetch per key
//!              → http_proxy: pooled backend connection, streamed both ways
//! health thread: active upstream checks and DNS refresh (never on a worker)
//! ```
//!
//! - [`config`]: the TOML file → a validated [`config::Config`]; every error
//!   names the file, line, key and fix. Cold path.
//! - [`http`]: allocation-free HTTP/1.1 pieces without I/O: head parsing with
//!   smuggling refusal, the chunked decoder, response writing, the Date cache.
//! - [`router`]: the route table (literal > `{param}` > `{greedy+}` with
//!   backtracking, ANY, `$default`); flat lookup cost as it grows.
//! - [`gateway`]: the immutable [`gateway::Snapshot`] compiled from a config,
//!   resolution of host/base path/stage, gateway error responses, request ids.
//! - [`upstream`]: backend groups, balancing, passive/active health, and the
//!   per-worker keep-alive pools.
//! - [`cache`]: the stage cache store: byte-weighted, shared by all workers,
//!   keys, entries, one backend fetch per key under a stampede.
//! - [`runtime`]: workers, listeners, connection loop, the proxy forwarder,
//!   graceful drain.
//!
//! ## Threads and sharing
//! Each worker owns its ring, its connections and their buffers, and its
//! pool of backend connections. The [`gateway::Snapshot`] is immutable and
//! shared behind an `Arc`. What is shared mutably is small and lock-free on
//! the request path: a stage cache (quick_cache's sharded table), whose
//! fill wakes requests waiting for the same key on other workers; the
//! upstream targets' atomics (in-flight counts, passive health); and the
//! containment counters. Cross-thread wake-ups (shutdown, cache waiters) go
//! through monoio's eventfd machinery, so no thread but its owner ever
//! touches a worker's ring (io_uring SINGLE_ISSUER).
//!
//! ## Failure containment
//! A panic while serving one connection closes that connection only; it is
//! counted and logged once with the request id. A worker thread that dies
//! anyway is replaced by a supervisor thread (fresh ring, fresh listener);
//! the server never keeps running with fewer workers than configured.
//!
//! ## What a request costs
//! Once a connection is warm, serving a mock route allocates nothing: the
//! head is parsed into an uninitialised stack array, path parameters are
//! slices of the read buffer, the response is written into the connection's
//! reused buffer, and the `Date` header is formatted once a second per
//! worker. A proxied request on a warm pool allocates nothing either: the
//! backend connection and its buffer come from the worker's pool.
//! `tests/alloc.rs` asserts both.

// Every module forbids unsafe code but two, whose `unsafe` blocks each state
// their invariant: runtime::reaper (shutdown(2) on connection and listener
// fds) and upstream::pool (a non-blocking recv(MSG_PEEK) on a pooled socket).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod gateway;
pub mod http;
pub mod router;
pub mod runtime;
pub mod upstream;
