//! One worker's gateway state ([`GatewayWorker`]), shared by the worker's
//! connections: the snapshot handle, the head and body limits, the pool of
//! backend connections, the request-id generator and the worker's row of
//! outcome counters.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::sync::Arc;

use super::outcome::{Outcome, OutcomeTable};
use super::request_id::{entropy_seed, IdGenerator, RequestId};
use super::snapshot::Snapshot;
use crate::http::HeadLimits;
use crate::upstream::pool::Pool;

/// One worker's gateway state, shared by the worker's connections.
pub struct GatewayWorker {
    id: usize,
    /// The configuration being served.
    pub(super) snapshot: Arc<Snapshot>,
    /// Limits on a request head.
    pub(super) head_limits: HeadLimits,
    /// Largest request body accepted.
    pub(super) max_body: u64,
    /// Keep-alive connections to backends.
    pub(super) pool: Pool,
    ids: RefCell<IdGenerator>,
    outcomes: Arc<OutcomeTable>,
    /// Debug builds: honour `x-ringgate-fault`.
    #[cfg(debug_assertions)]
    pub(super) fault_injection: bool,
}

impl GatewayWorker {
    /// The client's request id if sane, else a new one.
    #[inline]
    pub(super) fn new_request_id<'a>(&self, client: Option<&'a [u8]>) -> RequestId<'a> {
        self.ids.borrow_mut().from_client_or_new(client)
    }

    /// Counts how a request ended.
    #[inline]
    pub(super) fn record(&self, outcome: Outcome) {
        self.outcomes.record(self.id, outcome);
    }
}

impl GatewayWorker {
    /// Worker `id`'s state: `limits` are the head limits and the largest
    /// body accepted.
    pub(super) fn new(
        id: usize,
        snapshot: Arc<Snapshot>,
        (head_limits, max_body): (HeadLimits, u64),
        outcomes: Arc<OutcomeTable>,
        #[cfg(debug_assertions)] fault_injection: bool,
    ) -> GatewayWorker {
        GatewayWorker {
            id,
            snapshot,
            head_limits,
            max_body,
            pool: Pool::new(),
            ids: RefCell::new(IdGenerator::new(entropy_seed() ^ ((id as u64) << 56))),
            outcomes,
            #[cfg(debug_assertions)]
            fault_injection,
        }
    }
}
