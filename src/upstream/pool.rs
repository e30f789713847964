//! Per-worker keep-alive pools of backend connections.
//!
//! A [`Pool`] belongs to one worker (no locks, no atomics) and keeps, per
//! target, a LIFO stack of idle [`UpstreamConn`]s with their read buffers,
//! so a proxied request on a warm pool opens nothing and allocates nothing.
//! LIFO keeps the most recently used (warmest, least likely to have been
//! closed by the backend) connection on top. A connection idle longer than
//! its group's `idle_timeout` is dropped when met; the cap
//! (`max_idle_per_target`) is applied on return.
//!
//! A pooled connection the backend has closed is only discovered when it is
//! used: the forwarder retries such a request once on a fresh connection
//! where that is safe (see `runtime::proxy`).

use std::cell::{Cell, RefCell};
use std::io;
use std::time::Duration;

use monoio::net::TcpStream;

use super::Target;

/// Initial read buffer of a backend connection.
const READ_BUFFER: usize = 16 * 1024;

/// A connection to one target, with its read buffer.
#[derive(Debug)]
pub struct UpstreamConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read from the backend and not yet consumed.
    pub rbuf: Vec<u8>,
    /// The target's id.
    pub target: usize,
    /// When it was returned to the pool ([`super::now_ms`]).
    pub idle_since: u64,
    /// Requests sent on it so far.
    pub requests: u64,
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// The target's name has not resolved (yet).
    Unresolved,
    /// No answer within the connect timeout.
    Timeout,
    /// Refused, unreachable, reset…
    Io(io::Error),
}

/// Opens a connection to `target` within `timeout`.
pub async fn connect(target: &Target, timeout: Duration) -> Result<UpstreamConn, ConnectError> {
    let addr = target.addr().ok_or(ConnectError::Unresolved)?;
    let stream = match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Err(_) => return Err(ConnectError::Timeout),
    };
    let _ = stream.set_nodelay(true);
    Ok(UpstreamConn {
        stream,
        rbuf: Vec::with_capacity(READ_BUFFER),
        target: target.id,
        idle_since: 0,
        requests: 0,
    })
}

/// One worker's idle connections, by target id.
#[derive(Debug, Default)]
pub struct Pool {
    idle: RefCell<Vec<Vec<UpstreamConn>>>,
    /// Requests sent to backends by this worker.
    pub requests: Cell<u64>,
    /// Of those, how many went over a reused (pooled) connection.
    pub reused: Cell<u64>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool::default()
    }

    /// The most recently returned idle connection to `target` that is
    /// younger than `idle_timeout`; older ones met on the way are closed.
    pub fn take(&self, target: usize, now: u64, idle_timeout: Duration) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let stack = idle.get_mut(target)?;
        let limit = idle_timeout.as_millis() as u64;
        while let Some(conn) = stack.pop() {
            if now.saturating_sub(conn.idle_since) < limit {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection for reuse, unless the target already has `max`
    /// idle ones (then it is closed).
    pub fn put(&self, mut conn: UpstreamConn, now: u64, max: usize) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() <= conn.target {
            idle.resize_with(conn.target + 1, Vec::new);
        }
        let stack = &mut idle[conn.target];
        if stack.len() < max {
            conn.idle_since = now;
            conn.rbuf.clear();
            stack.push(conn);
        }
    }
}
