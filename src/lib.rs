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
//! main (CLI) ─ config::load ─► Config ─► server::Server::start
//!   ├─ state::Store::open (redb in the state dir) ─► State
//!   ├─ control::Control: Config + State ─► Snapshot::build_with ─► Published
//!   │    (every admin change or reload: check → compile → commit → publish)
//!   ├─ admin::http::AdminServer  Unix socket 0600 (+ loopback TCP, bearer)
//!   │    threads of its own ─ admin::api endpoints ─► Control
//!   ├─ runtime::Workers::start(Gateway)  one SO_REUSEPORT listener per worker
//!   │    worker 0 (core 0): monoio io_uring runtime ─ accept ─ ClientConn ─┐
//!   │    worker 1 (core 1): …                                              │
//!   ├─ control::UsageFlusher thread: usage counts → the store, every second │
//!   ├─ observe::access_log writer thread: batches of log lines → the file  │
//!   └─ upstream::health thread: active checks, DNS refresh (never a worker) │
//!                                                                          ▼
//!   gateway::connection: read → http::parse_head (stack headers, strict framing)
//!   gateway::pipeline, per request:
//!     [health_path: 200 / 503 draining or a worker down, before anything]
//!     snapshot (the last published; one atomic load when unchanged)
//!     resolve (host/base path → API → stage, or its canary → route)
//!     authorize (API key on key-required routes: 403) · throttle (plan per
//!     route and per key, stage route, account: 429) · quota (the key's
//!     (plan, key) counter: 429 Limit Exceeded)
//!     cache (stage cache: hit from shared bytes, or one fetch per key)
//!     integrate (mock into the reused write buffer; http_proxy:
//!                upstream::forward over a pooled connection, streamed both ways)
//!     respond (or a gateway error) · record (a typed Outcome; the series'
//!              counts and latency histograms; the access log line)
//! ```
//!
//! - [`config`]: the TOML file → a validated [`config::Config`]; every error
//!   names the file, line, key and fix. Cold path; imports nothing else.
//! - [`http`]: allocation-free HTTP/1.1 pieces without I/O: head parsing with
//!   smuggling refusal, the chunked decoder, response writing, the Date cache.
//! - [`router`]: the route table (literal > `{param}` > `{greedy+}` with
//!   backtracking, ANY, `$default`); flat lookup cost as it grows.
//! - [`cache`]: the stage cache store (byte-weighted, shared by all workers,
//!   one backend fetch per key under a stampede) and the RFC 9111 rules
//!   ([`cache::policy`]: storage, freshness, age, validators, client
//!   directives and conditionals).
//! - [`runtime`]: workers, rings, listeners, accept, the reaper (timeouts),
//!   drain, shutdown, panic containment and the supervisor, and the client
//!   connection type ([`runtime::ClientConn`], generic over the stream,
//!   [`runtime::ClientStream`], so a TLS stream is served by the same
//!   code). Knows nothing of APIs, caches or backends: it runs a
//!   [`runtime::Service`].
//! - [`tls`]: TLS with rustls: termination (certificates chosen by SNI,
//!   the Host/SNI check (421), mutual TLS, reload), the client side toward
//!   HTTPS backends ([`tls::client`]), and the record I/O both share over
//!   monoio's TCP ([`tls::io`]).
//! - [`upstream`]: backend groups, balancing, passive/active health, the
//!   per-worker keep-alive pools, forwarding a request
//!   ([`upstream::forward`]) and the protocol-switch tunnel.
//! - [`gateway`]: the compiled [`gateway::Snapshot`] and the request
//!   pipeline: the HTTP/1.1 connection loop, the phases, the stage cache on
//!   the request path, gateway errors, request ids, outcomes. It is the
//!   [`runtime::Service`] the workers run.
//! - [`observe`]: per-worker metrics (counts, HdrHistogram-layout latency
//!   buckets by API, stage, route and canary, merged when read) and access
//!   logs (`$context` formats, a bounded queue to a writer thread).
//! - [`throttle`]: GCRA token buckets (one atomic each), several levels
//!   taken all or none, a bounded per-key table, and usage-plan quotas and
//!   usage counters ([`throttle::quota`]).
//! - [`state`]: the durable control-plane state (deployments, pinned
//!   stages, canaries, API keys, usage plans, usage per key per day) in a
//!   redb database; crash-safe commits, a schema
//!   version with migrations. Never read on the request path.
//! - [`control`]: applies admin changes and reloads: checks them, compiles
//!   the state and the file into a new snapshot, commits, publishes.
//!   Workers pick the new snapshot up at their next request; a request in
//!   flight finishes on the one it started with.
//! - [`openapi`]: moving from API Gateway: its OpenAPI exports (with the
//!   `x-amazon-apigateway-*` extensions) imported into a checked
//!   configuration, with what was approximated or left out, and an API or
//!   a deployment exported back. Cold path: the CLI and the admin socket.
//! - [`admin`]: the admin API: endpoints ([`admin::api`]) over HTTP/1.1 +
//!   JSON on a Unix socket (and optionally loopback TCP with a bearer
//!   token), served by threads of their own with blocking std I/O, never by
//!   the workers; and the client `ringgate admin` uses.
//! - [`observe`]: API Gateway style access logs, written off the workers.
//! - [`server`]: the composition root that starts all of the above.
//!
//! Module dependencies run one way: `config`, `http`, `router` at the
//! bottom (`state` on `config`); `cache` and `runtime` on them; `upstream` on `runtime` (the client
//! connection it streams to); `gateway` on all of those (and `state`'s
//! record types); `control` on `gateway`; `admin` on `control`; `server`
//! on top.
//!
//! ## Threads and sharing
//! Each worker owns its ring, its connections and their buffers, and its
//! pool of backend connections. The [`gateway::Snapshot`] is immutable and
//! shared behind an `Arc`. What is shared mutably is small and lock-free on
//! the request path: a stage cache (quick_cache's sharded table), whose
//! fill wakes requests waiting for the same key on other workers; the
//! upstream targets' atomics (in-flight counts, passive health); the
//! outcome counters (one cache-line-padded row per worker, written only by
//! it); and the containment counters. Cross-thread wake-ups (shutdown,
//! cache waiters) go through monoio's eventfd machinery, so no thread but
//! its owner ever touches a worker's ring (io_uring SINGLE_ISSUER).
//!
//! ## Failure containment
//! A panic while serving one connection closes that connection only; it is
//! counted and logged once with the request id. A worker thread that dies
//! anyway is replaced by a supervisor thread (fresh ring, fresh listener);
//! the server never keeps running with fewer workers than configured.
//!
//! ## What a request costs
//! Once a worker's pools are warm, serving a mock route allocates nothing:
//! the head is parsed into an uninitialised stack array, path parameters
//! are slices of the read buffer, the response is written into a pooled
//! buffer, and the `Date` header is formatted once a second per worker. A
//! proxied request on a warm pool allocates nothing either: the backend
//! connection and its buffer come from the worker's pool.
//! `tests/alloc.rs` asserts both.
//!
//! ## What a connection costs
//! Memory follows busy connections, not open ones. A keep-alive
//! connection that stays silent for 1 to 2 s after an answer *parks*: its
//! pending read is cancelled, its read and write buffers go back to the
//! worker's bounded pool ([`runtime::buffers`]), the state of serving
//! requests goes back with its pooled block ([`runtime::slab`]), and it
//! waits for readiness as a task of under 500 bytes.
//! `tests/idle_memory.rs` bounds the resident memory of an idle connection
//! (about 800 bytes; nginx's is about 500).

// Every module forbids unsafe code but these, whose `unsafe` blocks each
// state their invariant: runtime::reaper (shutdown(2) on connection and
// listener fds), runtime::slab (futures placed in pooled blocks),
// upstream::pool (a non-blocking recv(MSG_PEEK) on a pooled socket), and
// one prctl(2) call in runtime (transparent huge pages off).
// Their parents (runtime, upstream) and this file deny it instead.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod cache;
pub mod config;
pub mod control;
pub mod gateway;
pub mod http;
pub mod observe;
pub mod openapi;
pub mod router;
pub mod runtime;
pub mod server;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod upstream;

/// Property tests' configuration: `cases` cases, and a failure's seed
/// saved beside the test's source file (`<file>.regressions`, replayed
/// first on the next run) rather than in a directory at the top of the
/// repository.
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, FileFailurePersistence};
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}
