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
//! [`super::forward`]).
//!
//! A TLS connection ([`BackendStream::Tls`]) cannot be judged by a peek:
//! a TLS 1.3 backend sends session tickets after its handshake, and may
//! send a key update or its close_notify while the connection is idle. So
//! whatever is waiting is read (non-blocking) and handed to rustls: a
//! close_notify, an alert, a TCP end, or application data nobody asked for
//! mean the connection is done; tickets and key updates are taken in and
//! the connection handed out.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::BufResult;

use super::Target;
use crate::runtime::stream::{InBuf, OutBuf};
use crate::tls::client::{BackendTls, HandshakeFailure};

/// The byte stream of a backend connection: plain TCP, or TLS over it.
pub enum BackendStream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`, handshaken (boxed: a plain connection stays small).
    Tls(Box<BackendTls>),
}

impl std::fmt::Debug for BackendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendStream::Plain(_) => "Plain",
            BackendStream::Tls(_) => "Tls",
        })
    }
}

/// Reads decrypted bytes from a TLS backend into `buf` (after its
/// contents); `Ok(0)` is the end of the stream.
///
/// Boxed, and matched at the call sites rather than behind an `async fn`
/// on [`BackendStream`]: the TLS read's future is large, and either way
/// every plain read's future would carry it (and a layer more), which cost
/// a plain proxied request about 350 instructions.
pub fn tls_read<T: InBuf>(
    tls: &mut BackendTls,
    buf: T,
) -> Pin<Box<dyn Future<Output = BufResult<usize, T>> + '_>> {
    Box::pin(tls.read_into(buf, None))
}

/// Writes all of `buf` to a TLS backend (see [`tls_read`] for the box).
pub fn tls_write_all<'a, B: OutBuf + 'a>(
    tls: &'a mut BackendTls,
    buf: B,
) -> Pin<Box<dyn Future<Output = BufResult<usize, B>> + 'a>> {
    Box::pin(async move {
        let len = buf.out_bytes().len();
        let res = tls.send_plain(buf.out_bytes()).await;
        (res.map(|()| len), buf)
    })
}

impl BackendStream {
    fn fd(&self) -> RawFd {
        match self {
            BackendStream::Plain(tcp) => tcp.as_raw_fd(),
            BackendStream::Tls(tls) => tls.tcp().as_raw_fd(),
        }
    }
}

/// One non-blocking `recv` on `fd` into `buf` (`flags` added to
/// `MSG_DONTWAIT`): the bytes, `Ok(0)` at the end of the stream, or the
/// error (`WouldBlock`: nothing there).
fn recv_now(fd: RawFd, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: `fd` is an open socket owned by a connection the caller
    // borrows for the duration of the call, with no operation in flight on
    // it (it sits idle in the pool); `buf` is valid, writable memory of
    // `buf.len()` bytes; MSG_DONTWAIT makes the call return at once
    // whatever the socket's mode.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Initial read buffer of a backend connection.
const READ_BUFFER: usize = 16 * 1024;

/// A connection to one target, with its read buffer.
#[derive(Debug)]
pub struct UpstreamConn {
    /// The socket, or TLS over it.
    pub stream: BackendStream,
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
    pub fn is_closed_by_backend(&mut self) -> bool {
        let fd = self.stream.fd();
        let tls = match &mut self.stream {
            BackendStream::Plain(_) => {
                let mut byte = [0u8; 1];
                return match recv_now(fd, &mut byte, libc::MSG_PEEK) {
                    Err(e) => !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ),
                    Ok(_) => true,
                };
            }
            BackendStream::Tls(tls) => tls,
        };
        let mut buf = [0u8; 2048];
        loop {
            match recv_now(fd, &mut buf, 0) {
                Ok(0) => return true,
                Ok(n) => {
                    let conn = tls.connection_mut();
                    // recv never reports more than it was given room for.
                    let Some(mut data) = buf.get(..n) else {
                        return true;
                    };
                    while !data.is_empty() {
                        if conn.read_tls(&mut data).is_err() || conn.process_new_packets().is_err()
                        {
                            return true;
                        }
                    }
                    // Data, or the session's end (close_notify), is as bad
                    // as a plain connection's unasked-for bytes.
                    if tls.has_plaintext() {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return e.kind() != io::ErrorKind::WouldBlock,
            }
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub enum ConnectError {
    /// The target's name has not resolved (yet).
    Unresolved,
    /// No answer (or, over TLS, no finished handshake) within the connect
    /// timeout.
    Timeout,
    /// Refused, unreachable, reset…
    Io(io::Error),
    /// The TLS handshake failed.
    Tls(HandshakeFailure),
}

/// Opens a connection to `target` — and for an HTTPS target, runs the TLS
/// handshake — within `timeout`.
pub async fn connect(target: &Target, timeout: Duration) -> Result<UpstreamConn, ConnectError> {
    let addr = target.addr().ok_or(ConnectError::Unresolved)?;
    let open = async {
        let tcp = TcpStream::connect_addr(addr)
            .await
            .map_err(ConnectError::Io)?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &target.tls else {
            return Ok(BackendStream::Plain(tcp));
        };
        let Some(name) = tls.name.clone() else {
            target.log_tls_failure(&io::Error::other(
                "its host is not a DNS name or IP address TLS can verify; set [upstream.tls] server_name",
            ));
            return Err(ConnectError::Tls(HandshakeFailure::Protocol));
        };
        crate::tls::client::connect(tcp, &tls.client, name)
            .await
            .map(|tls| BackendStream::Tls(Box::new(tls)))
            .map_err(|e| match HandshakeFailure::of(&e) {
                HandshakeFailure::Io => ConnectError::Io(e),
                failure => {
                    target.log_tls_failure(&e);
                    ConnectError::Tls(failure)
                }
            })
    };
    let stream = match monoio::time::timeout(timeout, open).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ConnectError::Timeout),
    };
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
        while let Some(mut conn) = stack.pop() {
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
