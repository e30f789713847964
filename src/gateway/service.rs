//! The gateway as a [`Service`] the runtime's workers run: [`Gateway`] is
//! shared by every worker; each worker builds its own
//! `GatewayWorker`
//! (the snapshot handle, its pool of backend connections, its request-id
//! generator, its row of outcome counters) and serves every connection it
//! accepts with it.

#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use monoio::net::TcpStream;

use super::outcome::{OutcomeCounts, OutcomeTable};
use super::snapshot::Snapshot;
use super::worker::GatewayWorker;
use crate::config::Limits;
use crate::http::HeadLimits;
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::Metrics;
use crate::runtime::{ClientConn, LocalService, Service, Worker};
use crate::tls::{ClientAuth, TlsAcceptor, TlsStream};
use crate::upstream::forward::ClientInfo;

/// Options for the gateway beyond its configuration.
#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    /// Debug builds only: honour the `x-ringgate-fault` request header,
    /// which panics on the request path (`panic`) or in a worker task
    /// (`kill-worker`), to test containment and the supervisor.
    #[cfg(debug_assertions)]
    pub fault_injection: bool,
    /// `[server] health_path`: answered by the gateway itself.
    pub health_path: Option<String>,
    /// The access log's writer, when `[access_log]` is set.
    pub access_log: Option<Arc<AccessLog>>,
    /// The TLS listeners' certificates, when `server.listen_tls` is set.
    pub tls: Option<Arc<TlsAcceptor>>,
}

/// The snapshot being served, published by the control side and picked up
/// by each worker at its next request. A request in flight keeps the
/// snapshot it started on until it ends.
#[derive(Debug)]
pub struct Published {
    generation: AtomicU64,
    current: Mutex<Arc<Snapshot>>,
    /// Gives each published snapshot's metrics series their ids.
    metrics: OnceLock<Arc<Metrics>>,
}

impl Published {
    /// Starts with `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>) -> Published {
        Published {
            generation: AtomicU64::new(0),
            current: Mutex::new(snapshot),
            metrics: OnceLock::new(),
        }
    }

    /// Registers the series of the snapshot being served, and of every
    /// snapshot published from now on, with `metrics` (once; before the
    /// workers start).
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.set_series_ids(metrics.register(current.series_labels()));
        let _ = self.metrics.set(metrics);
    }

    /// The metrics the published snapshots count into, once attached.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.get()
    }

    /// Bumped by every publish.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The generation and the snapshot current now (the generation is read
    /// first: a publish in between only makes the reader look again).
    pub fn load(&self) -> (u64, Arc<Snapshot>) {
        let generation = self.generation();
        let s = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (generation, s)
    }

    /// Makes `snapshot` the one new requests start on.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        if let Some(m) = self.metrics.get() {
            snapshot.set_series_ids(m.register(snapshot.series_labels()));
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// The gateway service: what every worker serves.
pub struct Gateway {
    published: Arc<Published>,
    head_limits: HeadLimits,
    max_body: u64,
    outcomes: Arc<OutcomeTable>,
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    options: GatewayOptions,
    /// How many workers serve it.
    workers: usize,
}

impl Gateway {
    /// Serves what is published in `published` under `limits` on
    /// `workers` workers.
    pub fn new(
        published: Arc<Published>,
        limits: &Limits,
        workers: usize,
        options: GatewayOptions,
    ) -> Gateway {
        Gateway {
            published,
            head_limits: HeadLimits {
                max_header_bytes: limits.max_header_bytes,
                max_headers: limits.max_headers,
                max_url_bytes: limits.max_url_bytes,
            },
            max_body: limits.max_body_bytes,
            outcomes: Arc::new(OutcomeTable::new(workers)),
            workers,
            options,
        }
    }

    /// The snapshot being served now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.load().1
    }

    /// Where new snapshots are published.
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }

    /// Requests answered so far, by outcome, over all workers.
    pub fn outcomes(&self) -> OutcomeCounts {
        self.outcomes.snapshot()
    }

    /// The access log's writer, when `[access_log]` is set.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.options.access_log.as_ref()
    }

    /// The TLS listeners' certificates, when `server.listen_tls` is set.
    pub fn tls(&self) -> Option<&Arc<TlsAcceptor>> {
        self.options.tls.as_ref()
    }
}

impl Service for Gateway {
    type Local = GatewayWorker;

    fn local(&self, worker: &Rc<Worker>) -> GatewayWorker {
        GatewayWorker::new(
            worker.id,
            self.published.clone(),
            (self.head_limits, self.max_body),
            self.outcomes.clone(),
            (
                self.published.metrics().filter(|m| m.enabled()).cloned(),
                self.options.access_log.as_deref(),
            ),
            (
                self.options
                    .health_path
                    .as_deref()
                    .map(|p| (Box::from(p), self.workers)),
                self.options.tls.clone(),
            ),
            #[cfg(debug_assertions)]
            self.options.fault_injection,
        )
    }
}

impl LocalService for GatewayWorker {
    fn serve(
        self: Rc<Self>,
        conn: ClientConn<TcpStream>,
        peer: SocketAddr,
        local_port: u16,
    ) -> impl Future<Output = ()> {
        // Not an async fn: that would store the connection twice.
        super::connection::serve(self, conn, ClientInfo::new(peer, local_port))
    }

    fn serve_tls(
        self: Rc<Self>,
        conn: ClientConn<TlsStream>,
        peer: SocketAddr,
        local_port: u16,
        cert: u16,
        auth: ClientAuth,
    ) -> impl Future<Output = ()> {
        let mut info = ClientInfo::new(peer, local_port);
        info.tls_cert = Some(cert);
        info.client_auth = auth;
        super::connection::serve(self, conn, info)
    }

    fn stop(&self) {
        // Idle backend connections close with the worker.
        self.pool.clear();
        self.flush_log();
    }

    fn tick(&self) {
        self.flush_log();
    }
}
