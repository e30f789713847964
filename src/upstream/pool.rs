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
//! A backend may close a connection while it sits idle here (Node.js does
//! after 5 s, nginx after 75 s). [`Pool::take`] therefore looks at the
//! socket before handing a connection out — one non-blocking
//! `recv(MSG_PEEK)`: end-of-file, a reset, or bytes nobody asked for mean
//! the backend is done with it, and it is closed instead of used. A close
//! that races the request is still possible; the forwarder then sends the
//! request once more on a fresh connection where that is safe (see
//! `runtime::proxy`).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
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

impl UpstreamConn {
    /// Whether the backend has closed (or reset) this idle connection, or
    /// sent bytes while nothing was asked: either way it cannot carry a
    /// request. Never blocks.
    pub fn is_closed_by_backend(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: the fd belongs to `self.stream`, which is open for the
        // duration of this borrow; the buffer is one valid, writable byte on
        // the stack; MSG_PEEK leaves any data in the socket and MSG_DONTWAIT
        // makes the call return at once whatever the socket's mode.
        #[allow(unsafe_code)]
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            );
        }
        true
    }
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

/// A target's idle connections, with the target they belong to.
type Stack = (Option<Arc<Target>>, Vec<UpstreamConn>);

/// One worker's idle connections, by target id.
#[derive(Debug, Default)]
pub struct Pool {
    /// By target id: the target the stack belongs to, and its stack.
    idle: RefCell<Vec<Stack>>,
    /// Requests sent to backends by this worker.
    pub requests: Cell<u64>,
    /// Of those, how many went over a reused (pooled) connection.
    pub reused: Cell<u64>,
    /// Idle connections found closed by their backend when taken.
    pub closed_while_idle: Cell<u64>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool::default()
    }

    /// The most recently returned idle connection to `target` that is
    /// younger than `idle_timeout` and still open at the backend's end;
    /// the others met on the way are closed.
    ///
    /// Ids are indexes into one snapshot's targets: after a reload the same
    /// id may be another backend, so each stack remembers its target and
    /// only a request for that very target gets its connections.
    pub fn take(
        &self,
        target: &Arc<Target>,
        now: u64,
        idle_timeout: Duration,
    ) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let (owner, stack) = idle.get_mut(target.id)?;
        if !owner.as_ref().is_some_and(|o| Arc::ptr_eq(o, target)) {
            return None;
        }
        let limit = idle_timeout.as_millis() as u64;
        while let Some(conn) = stack.pop() {
            if now.saturating_sub(conn.idle_since) >= limit {
                continue;
            }
            if conn.is_closed_by_backend() {
                self.closed_while_idle.set(self.closed_while_idle.get() + 1);
                continue;
            }
            return Some(conn);
        }
        None
    }

    /// Closes every idle connection (a worker that is stopping: its tasks,
    /// which own the pool, are never dropped by monoio).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }

    /// Returns a connection for reuse, unless the target already has `max`
    /// idle ones (then it is closed).
    /// A connection to another target than the stack's (a request that
    /// started before a reload renumbered the targets) replaces the stack.
    pub fn put(&self, mut conn: UpstreamConn, target: &Arc<Target>, now: u64, max: usize) {
        let mut idle = self.idle.borrow_mut();
        if idle.len() <= conn.target {
            idle.resize_with(conn.target + 1, || (None, Vec::new()));
        }
        let (owner, stack) = &mut idle[conn.target];
        if !owner.as_ref().is_some_and(|o| Arc::ptr_eq(o, target)) {
            *owner = Some(target.clone());
            stack.clear();
        }
        if stack.len() < max {
            conn.idle_since = now;
            conn.rbuf.clear();
            stack.push(conn);
        }
    }
}
