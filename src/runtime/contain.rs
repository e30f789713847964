//! Containment: a panic while serving one connection costs that connection,
//! not the worker.
//!
//! monoio polls tasks without catching panics, so a panic anywhere on a
//! request path would unwind through the runtime and end the worker thread
//! with its listener and every connection on it. [`serve`] runs each
//! connection inside [`Contained`]: a panic unwinds only the connection's
//! own future (its socket closes, its buffers and pooled backend connection
//! are dropped), is counted in [`Counters::connection_panics`], and is
//! logged once — message, location, peer and the id of the request being
//! served — by the panic hook this module installs ([`install_hook`]).
//! Panics outside a connection (a worker's own tasks) still end the worker;
//! the supervisor in [`super`] then starts a new one.
//!
//! Cost on the request path: a thread-local flag set and cleared around
//! each poll of a connection, and a copy of the request id (at most
//! [`TRACE_ID_LEN`] bytes) per request into [`RequestTrace`].
//!
//! The gateway's debug builds can inject both kinds of panic on request
//! (`x-ringgate-fault`, see `crate::gateway`): the tests use them.

#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::task::{Context, Poll};

use monoio::net::TcpStream;

use super::conn::ClientConn;
use super::worker::{log, Worker};
use super::LocalService;
use crate::tls::TlsAcceptor;

/// Bytes of a request id kept for the panic log line.
pub(crate) const TRACE_ID_LEN: usize = 64;

/// Process-wide counters of what containment caught and restarted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections closed because serving them panicked.
    pub connection_panics: AtomicU64,
    /// Worker threads that ended unexpectedly and were started again.
    pub worker_restarts: AtomicU64,
    /// Worker threads whose runtime is running now.
    pub live_workers: AtomicUsize,
    /// TLS handshakes that failed (not TLS, no shared version or suite,
    /// a bad client certificate, the client closing).
    pub tls_handshake_failures: AtomicU64,
    /// TLS handshakes not done within `header_read_timeout`.
    pub tls_handshake_timeouts: AtomicU64,
}

/// Counts a worker as live while it exists (dropped at the thread's end,
/// also while a panic unwinds it).
pub(crate) struct LiveWorker<'a>(&'a Counters);

impl<'a> LiveWorker<'a> {
    pub fn new(counters: &'a Counters) -> LiveWorker<'a> {
        counters.live_workers.fetch_add(1, Ordering::SeqCst);
        LiveWorker(counters)
    }
}

impl Drop for LiveWorker<'_> {
    fn drop(&mut self) {
        self.0.live_workers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The request a connection is serving, for the panic log line.
#[derive(Debug)]
pub struct RequestTrace {
    /// The client (kept here, in a small allocation, rather than in every
    /// connection's task).
    peer: std::net::SocketAddr,
    id: RefCell<[u8; TRACE_ID_LEN]>,
    len: Cell<u8>,
}

impl RequestTrace {
    pub(crate) fn new(peer: std::net::SocketAddr) -> RequestTrace {
        RequestTrace {
            peer,
            id: RefCell::new([0; TRACE_ID_LEN]),
            len: Cell::new(0),
        }
    }

    /// Records the id of the request now being served.
    #[inline]
    pub fn note(&self, id: &[u8]) {
        // Copied in place (no temporary): this runs on every request.
        let n = id.len().min(TRACE_ID_LEN);
        self.id.borrow_mut()[..n].copy_from_slice(&id[..n]);
        self.len.set(n as u8);
    }

    fn id(&self) -> String {
        let buf = self.id.borrow();
        let n = usize::from(self.len.get());
        if n == 0 {
            "-".to_string()
        } else {
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    }
}

thread_local! {
    /// Set while a contained future is being polled on this thread.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
    /// What the hook recorded about the last contained panic.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs, once per process, a panic hook that records a contained panic
/// (message and location) for [`serve`]'s single log line instead of
/// printing it; every other panic goes to the hook that was there before.
pub(crate) fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(Cell::get) {
                return previous(info);
            }
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let what = format!("{}{at}", payload_text(info.payload()));
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(what));
        }));
    });
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Polls `fut` with its panics contained: a panic becomes
/// `Err(description)`.
fn poll_contained<F: Future>(
    fut: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Result<F::Output, String>> {
    let outer = CONTAINED.with(|c| c.replace(true));
    let polled = panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx)));
    CONTAINED.with(|c| c.set(outer));
    match polled {
        Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => {
            let what = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| payload_text(payload.as_ref()));
            Poll::Ready(Err(what))
        }
    }
}

pin_project_lite::pin_project! {
    /// One connection's future ([`LocalService::serve`]) with its panics
    /// contained; accounts for the connection's end however it ends.
    ///
    /// A hand-written future rather than an `async fn`: an `async fn`
    /// would hold the connection's future as well as the values it was
    /// built from (its arguments are stored apart from its locals), and
    /// every idle connection would pay for both.
    pub(crate) struct Contained<F> {
        #[pin]
        fut: Option<F>,
        trace: Rc<RequestTrace>,
        worker: Rc<Worker>,
    }
}

/// Wraps an accepted connection for [`LocalService::serve`], its panics
/// contained.
pub(crate) fn serve<L: LocalService>(
    local: &Rc<L>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    local_port: u16,
    worker: &Rc<Worker>,
) -> Contained<impl Future<Output = ()>> {
    let _ = stream.set_nodelay(true);
    let trace = Rc::new(RequestTrace::new(peer));
    let fd = stream.as_raw_fd();
    let conn = ClientConn::new(stream, fd, worker.clone(), trace.clone());
    Contained {
        fut: Some(local.clone().serve(conn, peer, local_port)),
        trace,
        worker: worker.clone(),
    }
}

/// Wraps an accepted TLS connection: its handshake, within
/// `header_read_timeout` (a client that stalls mid-handshake is dropped
/// then), and then [`LocalService::serve_tls`], panics contained. A failed
/// handshake closes the connection; rustls has sent its alert.
pub(crate) fn serve_tls<L: LocalService>(
    local: &Rc<L>,
    tls: &Arc<TlsAcceptor>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    local_port: u16,
    worker: &Rc<Worker>,
) -> Contained<impl Future<Output = ()>> {
    let _ = stream.set_nodelay(true);
    let trace = Rc::new(RequestTrace::new(peer));
    let fd = stream.as_raw_fd();
    let (local, tls, w, t) = (local.clone(), tls.clone(), worker.clone(), trace.clone());
    let fut = async move {
        let limit = w.limits.header_read_timeout;
        // Boxed: inline, the handshake's state (rustls's `Acceptor`, the
        // ClientHello buffer, the connection before it is boxed) would size
        // this future, and so every TLS connection's task, for the
        // connection's whole life; boxed, it is freed once the handshake
        // ends (about 10 KB less per idle TLS connection).
        let handshake = Box::pin(tls.accept(stream));
        let (stream, cert, auth) = match monoio::time::timeout(limit, handshake).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(_)) => {
                w.counters
                    .tls_handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                w.counters
                    .tls_handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let conn = ClientConn::new(stream, fd, w, t);
        local.serve_tls(conn, peer, local_port, cert, auth).await;
    };
    Contained {
        fut: Some(fut),
        trace,
        worker: worker.clone(),
    }
}

impl<F: Future<Output = ()>> Future for Contained<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        let outcome = match poll_contained(fut, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        // Dropped now, panicked or not: its socket closes.
        this.fut.set(None);
        let worker = &**this.worker;
        if let Err(what) = outcome {
            worker
                .counters
                .connection_panics
                .fetch_add(1, Ordering::Relaxed);
            log(&format!(
                "worker {}: panic while serving {} (request {}): {what}; connection closed",
                worker.id,
                this.trace.peer,
                this.trace.id()
            ));
        }
        worker.connection_closed();
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_keeps_a_bounded_copy() {
        let t = RequestTrace::new(([127, 0, 0, 1], 1).into());
        assert_eq!(t.id(), "-");
        t.note(b"abc");
        assert_eq!(t.id(), "abc");
        t.note(&[b'x'; 200]);
        assert_eq!(t.id().len(), TRACE_ID_LEN);
    }

    use std::pin::pin;

    #[test]
    fn catch_unwind_turns_a_panic_into_an_error() {
        install_hook();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let out = rt.block_on(async {
            let mut fut = pin!(async {
                if CONTAINED.with(Cell::get) {
                    panic!("boom");
                }
                1
            });
            std::future::poll_fn(|cx| poll_contained(fut.as_mut(), cx)).await
        });
        let err = out.unwrap_err();
        assert!(err.starts_with("boom at "), "{err}");
        assert!(!CONTAINED.with(Cell::get));
        let ok = rt.block_on(async {
            let mut fut = pin!(async { 2 });
            std::future::poll_fn(|cx| poll_contained(fut.as_mut(), cx)).await
        });
        assert_eq!(ok, Ok(2));
    }
}
