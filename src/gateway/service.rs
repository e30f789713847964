//! The gateway as a [`Service`] the runtime's workers run: [`Gateway`] is
//! shared by every worker; each worker builds its own
//! [`GatewayWorker`](super::worker::GatewayWorker)
//! (the snapshot handle, its pool of backend connections, its request-id
//! generator, its row of outcome counters) and serves every connection it
//! accepts with it.

#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use monoio::net::TcpStream;

use super::outcome::{OutcomeCounts, OutcomeTable};
use super::snapshot::Snapshot;
use super::worker::GatewayWorker;
use crate::config::Limits;
use crate::http::HeadLimits;
use crate::runtime::{ClientConn, LocalService, Service, Worker};
use crate::upstream::forward::ClientInfo;

/// Options for the gateway beyond its configuration.
#[derive(Clone, Debug, Default)]
pub struct GatewayOptions {
    /// Debug builds only: honour the `x-ringgate-fault` request header,
    /// which panics on the request path (`panic`) or in a worker task
    /// (`kill-worker`), to test containment and the supervisor.
    #[cfg(debug_assertions)]
    pub fault_injection: bool,
}

/// The gateway service: what every worker serves.
pub struct Gateway {
    snapshot: Arc<Snapshot>,
    head_limits: HeadLimits,
    max_body: u64,
    outcomes: Arc<OutcomeTable>,
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    options: GatewayOptions,
}

impl Gateway {
    /// Serves `snapshot` under `limits` on `workers` workers.
    pub fn new(
        snapshot: Arc<Snapshot>,
        limits: &Limits,
        workers: usize,
        options: GatewayOptions,
    ) -> Gateway {
        Gateway {
            snapshot,
            head_limits: HeadLimits {
                max_header_bytes: limits.max_header_bytes,
                max_headers: limits.max_headers,
                max_url_bytes: limits.max_url_bytes,
            },
            max_body: limits.max_body_bytes,
            outcomes: Arc::new(OutcomeTable::new(workers)),
            options,
        }
    }

    /// The configuration being served.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Requests answered so far, by outcome, over all workers.
    pub fn outcomes(&self) -> OutcomeCounts {
        self.outcomes.snapshot()
    }
}

impl Service for Gateway {
    type Local = GatewayWorker;

    fn local(&self, worker: &Rc<Worker>) -> GatewayWorker {
        GatewayWorker::new(
            worker.id,
            self.snapshot.clone(),
            (self.head_limits, self.max_body),
            self.outcomes.clone(),
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

    fn stop(&self) {
        // Idle backend connections close with the worker.
        self.pool.clear();
    }
}
