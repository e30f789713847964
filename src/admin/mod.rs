//! The admin API: HTTP/1.1 + JSON over a Unix socket, and optionally over a
//! loopback TCP listener guarded by a bearer token. It is the only way to
//! change a running gateway (besides SIGHUP, which reloads).
//!
//! - [`api`]: the endpoints, applied through [`crate::control::Control`].
//! - [`http`]: the transport (below).
//! - `plans`: the API-key, usage-plan and usage endpoints.
//! - [`client`]: the client `ringgate admin …` uses.
//!
//! ## Endpoints
//!
//! | method and path | what it does | success |
//! |---|---|---|
//! | `GET /` | lists the endpoints | 200 |
//! | `GET /status` | version, uptime, config and state files, each worker's open connections, each TLS certificate's expiry | 200 |
//! | `GET /metrics` | Prometheus text: requests by API, stage, route, canary and status class, latency histograms, upstream targets, 5xx reasons, the access log, workers, connections, stage caches, RSS ([`metrics`]) | 200 `text/plain` |
//! | `GET /stats` | the same series as JSON with latency percentiles | 200 |
//! | `POST /logs/reopen` | reopens the access log at its path (as SIGUSR1) | 200 `{reopened}` |
//! | `GET /tls` | the TLS certificates served: hosts, chain file, subject, issuer, serial, validity, days left; 404 without `listen_tls` | 200 `{certificates}` |
//! | `POST /tls/reload` | reads the certificate and key files again (as SIGHUP and the file watcher do): all load and new handshakes use them, or 409 naming the file and nothing changes | 200 `{reloaded, certificates}` |
//! | `POST /reload` | re-reads the configuration file (as SIGHUP does); a bad file is refused with its `file:line` error (400 `invalid_config`) and the running configuration stays | 200 `{warnings, restart_required, pinned_stages}` |
//! | `GET /apis` | the APIs with their stages and deployment pointers (paged) | 200 |
//! | `GET /apis/{api}` | one API | 200 |
//! | `GET /apis/{api}/deployments` | deployments, newest first (paged) | 200 |
//! | `POST /apis/{api}/deployments` | deploys the file's current routes: `{"description"?, "stage"?}`; with `stage`, points that pinned stage (or only its canary, if it has one) at it | 201 + `Location` |
//! | `GET /apis/{api}/deployments/{id}` | one deployment with its frozen definition | 200 |
//! | `GET /apis/{api}/deployments/{id}/export` | the deployment as OpenAPI 3.0.1 with API Gateway's extensions ([`crate::openapi::export`]) | 200 |
//! | `POST /apis/{api}/import[?stage&description&strict]` | the body (an OpenAPI 3.0 or Swagger 2.0 document, JSON or YAML, at most 1 MiB) becomes a new deployment ([`crate::openapi::import()`]), checked against the API's stages and the gateway's upstreams; with `stage`, that pinned stage (or its canary) points at it. A document that cannot be read: 400 `invalid_document` with the JSON pointer as `field`; `strict=true` (or API Gateway's `failonwarnings=true`) and anything left out: 400 `left_out`; both change nothing | 201 + `Location`, the deployment with `import: {routes, approximated, left_out}` |
//! | `GET /apis/{api}/stages` | the stages (paged) | 200 |
//! | `GET /apis/{api}/stages/{stage}` | one stage: source (`file` or `state`), deployment, variables, cache settings, canary | 200 |
//! | `PATCH /apis/{api}/stages/{stage}` | a pinned stage: `{"deployment_id"?, "variables"?: {name: value or null}, "cache"?: {"enabled"?, "capacity"?, "ttl_seconds"?}}` (rollback = an earlier `deployment_id`; refused with 409 while the stage has a canary) | 200, the stage |
//! | `PUT /apis/{api}/stages/{stage}/canary` | creates or changes the canary: `{"percent" (required when new, 0–100), "deployment_id"? (default the stage's), "variable_overrides"?, "use_stage_cache"?}` | 200, the stage |
//! | `DELETE /apis/{api}/stages/{stage}/canary` | removes the canary | 200, the stage |
//! | `POST /apis/{api}/stages/{stage}/canary/promote` | the canary's deployment and overrides become the stage's; its share becomes 0 (it stays until removed) | 200, the stage |
//! | `GET /apis/{api}/stages/{stage}/cache` | the stage cache's settings and counters (hits, misses, evictions, entries, bytes) | 200 |
//! | `DELETE /apis/{api}/stages/{stage}/cache/data` | flushes the stage cache (API Gateway's FlushStageCache) | 202, empty |
//! | `DELETE /apis/{api}/stages/{stage}/cache/entries?path=…` | drops one entry: `path` within the stage, `method` (GET), `query`, `header.NAME=value` for header key parameters, `canary=true` for the canary's entries | 200 `{"removed": bool}` |
//! | `GET /apikeys`, `GET /apikeys/{id}` | keys of the file and the store (`include_values=true` / `include_value=true` add values) | 200 |
//! | `POST /apikeys` | `{"name", "value"?, "description"?, "enabled"?, "usage_plan_ids"?}` (value generated when absent, shown in the answer) | 201 + `Location` |
//! | `POST /apikeys?mode=import&format=csv` | API Gateway's CSV (`key,name,description,enabled,usageplanIds`), all rows or none | 201 `{ids, items}` |
//! | `PATCH /apikeys/{id}`, `DELETE /apikeys/{id}` | `{"name"?, "description"?, "enabled"?}`; delete | 200, 204 |
//! | `GET /usageplans`, `POST /usageplans`, `GET/PATCH/DELETE /usageplans/{id}` | plans: `{"name", "description"?, "throttle"?, "quota"?: {"limit", "period", "offset"?}, "stages"?}` | 200, 201, 204 |
//! | `GET/POST /usageplans/{id}/keys`, `DELETE /usageplans/{id}/keys/{key}` | attach (`{"key_id"}` or `{"keyId", "keyType"}`) and detach | 200, 201 |
//! | `GET /usageplans/{id}/usage?startDate&endDate[&keyId&limit&position]` | API Gateway's GetUsage shape: `[used, remaining]` per key per UTC day | 200 |
//! | `GET/PATCH /usageplans/{id}/keys/{key}/usage` | the key's current quota period; `{"remaining": n}` sets what remains (UpdateUsage) | 200 |
//!
//! Lists take `limit` (1–500, default 25) and `position` (the token the
//! previous page returned with more to come). `auto_deploy` stages follow
//! the file: their API can be deployed, but they cannot be repointed,
//! reconfigured or given a canary (409). Endpoint errors: 400
//! `invalid_value` or `malformed_json` naming the `field`, 404
//! `not_found`, 405 `method_not_allowed` with `Allow`, 409 `conflict`, 400
//! `invalid_config` (reload), 500 `internal` (the store failed; nothing
//! changed). Example:
//!
//! ```text
//! curl -s --unix-socket state/admin.sock http://ringgate/apis/shop/stages/prod
//! curl -s --unix-socket state/admin.sock -X PUT http://ringgate/apis/shop/stages/prod/canary \
//!      -d '{"percent": 10, "deployment_id": 3}'
//! ```
//!
//! ## Transport
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
pub mod metrics;
mod plans;
