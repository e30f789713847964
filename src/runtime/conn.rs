//! The client connection: its stream, its reaper slot and its reused
//! buffers, with every read and write under the connection's deadlines.
//!
//! [`ClientConn`] is what a worker hands the service for each accepted
//! connection. It is generic over the stream ([`ClientStream`]: plain TCP,
//! or [`crate::tls::TlsStream`]), so a TLS connection is served by the same
//! code as a plain one; the reaper only needs the socket's fd, taken before
//! any wrapping.
//!
//! It comes in two parts so that a request head parsed from the read buffer
//! (which borrows it) can stay alive while the connection reads and writes:
//! [`ClientIo`] owns the stream and the slot and does the I/O; the buffers
//! are separate fields, lent to `ClientIo`'s methods one at a time.
//!
//! - `rbuf` ([`ReadBuf`]) holds incoming bytes: a [`SMALL`](super::buffers::SMALL) buffer that
//!   grows only for a head that needs it, up to
//!   [`ConnLimits::max_read_buffer`] (and is freed, not pooled, once grown).
//! - `wbuf` collects responses; [`ClientIo::flush`] writes it out.
//! - `scratch` receives body bytes that do not fit in `rbuf`
//!   ([`ClientIo::read_body`], a [`LARGE`] buffer taken only when a body
//!   streams).
//!
//! Idle connections hold no buffer. Right after an answer a connection
//! reads for the next request with its buffer ([`ClientIo::read_next`]):
//! on a busy keep-alive connection the next request comes at once, and
//! this is the cheapest way to take it. If nothing comes through a whole
//! sweep interval of the reaper (1 to 2 s), the reaper
//! cancels that read and the connection *parks*:
//! it gives its buffers back ([`ClientConn::give_buffers`]) and waits for
//! readiness ([`ClientIo::wait_readable`]: an io_uring poll, or epoll
//! readiness) holding none, since a read in flight would pin its buffer for
//! as long as the client stays silent. Buffers come back from the worker's
//! [`BufPool`] once bytes are there ([`ClientConn::take_buffers`]).
//!
//! Timeouts, enforced by the worker's reaper with one-second granularity:
//! waiting for the first byte of a request, `keepalive_timeout`
//! (`header_read_timeout` for the first request); once part of a head has
//! arrived, the whole head by `header_read_timeout` (slowloris); each body
//! read, `header_read_timeout`; each write the client does not drain,
//! `keepalive_timeout`. On drain, a connection idle between requests is
//! closed at once.

#![forbid(unsafe_code)]

use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use std::io;

use monoio::buf::IoBufMut;
use monoio::io::CancelHandle;

use super::buffers::{BufPool, LARGE};
use super::contain::RequestTrace;
use super::reaper::Wait;
use super::stream::{ClientStream, OutBuf};
use super::worker::Worker;

/// Lingering close: how long, and how many bytes, the client's unread input
/// is read and discarded (see [`ClientIo::linger`]).
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 1024 * 1024;

/// The limits a worker applies to every client connection.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    /// Time allowed for a request head, and for each body read.
    pub header_read_timeout: Duration,
    /// Idle time allowed between requests, and for each write.
    pub keepalive_timeout: Duration,
    /// Most open connections per worker.
    pub max_connections: usize,
    /// Largest the read buffer may grow to: the longest head allowed.
    pub max_read_buffer: usize,
}

/// A client connection (see the module docs).
pub struct ClientConn<S> {
    /// The stream and its deadlines.
    pub io: ClientIo<S>,
    /// Incoming bytes.
    pub rbuf: ReadBuf,
    /// Outgoing responses.
    pub wbuf: Vec<u8>,
    /// Body bytes beyond `rbuf`.
    pub scratch: Vec<u8>,
}

/// The read buffer: bytes from the client, of which `start..` are not yet
/// consumed.
#[derive(Debug)]
pub struct ReadBuf {
    /// The bytes read.
    pub buf: Vec<u8>,
    /// Start of unconsumed bytes.
    pub start: usize,
}

impl ReadBuf {
    /// The unconsumed bytes.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Whether every byte read has been consumed.
    pub fn is_drained(&self) -> bool {
        self.start == self.buf.len()
    }

    /// Marks `n` more bytes consumed; forgets everything once all are.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Replaces the contents with `bytes` (the start of the next request,
    /// read past a body into the scratch buffer).
    pub fn replace_with(&mut self, bytes: &[u8]) {
        self.buf.clear();
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }
}

/// What [`ClientIo::read_next`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum NextRequest {
    /// The next request's first bytes are in the buffer.
    Data,
    /// Nothing came for a while: the read was cancelled; give the buffers
    /// back and wait for readiness.
    Park,
    /// The client closed, failed, or stayed idle past its timeout.
    Closed,
}

/// What [`ClientIo::fill`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// More bytes are in the buffer.
    Data,
    /// The client closed, failed, or stayed idle past its timeout.
    Closed,
    /// A partial head did not complete within `header_read_timeout`.
    HeadTimeout,
}

/// Why no body bytes came from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientStop {
    /// It closed the connection, or it failed.
    Gone,
    /// Nothing arrived within the body read timeout.
    TimedOut,
}

/// A connection's registration with the worker's reaper; unregisters when
/// dropped. [`ClientIo`] declares it before the stream, so it drops first:
/// the fd in a live slot is always the connection's open socket.
struct Slot {
    worker: Rc<Worker>,
    index: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.worker.reaper.unregister(self.index);
    }
}

/// The stream of a client connection, with its reaper slot: reads and
/// writes under the connection's deadlines.
pub struct ClientIo<S> {
    // Field order matters: the slot unregisters before the stream closes.
    slot: Slot,
    stream: S,
    /// Set once part of a head has arrived and more must be read.
    /// (0: none; the reaper's clock starts at 1.)
    head_deadline: u64,
    /// Requests answered on this connection.
    served: u64,
    /// The request being served, for the log line of a contained panic.
    trace: Rc<RequestTrace>,
    /// What lets the reaper cancel [`ClientIo::read_next`]'s read: taken
    /// from the reaper at the first such read of a busy period and kept
    /// until the connection parks ([`ClientConn::give_buffers`]), so a
    /// busy connection looks it up once, not once per request. Should a
    /// cancel race a read that then completes with bytes, the handle stays
    /// cancelled: the next `read_next` ends at once (`ECANCELED`, nothing
    /// read) and the connection parks, as the reaper meant it to.
    cancel: Option<CancelHandle>,
}

impl<S: ClientStream> ClientConn<S> {
    /// Wraps an accepted stream whose socket is `fd`, registering it with
    /// `worker`'s reaper. It holds no buffer yet.
    pub fn new(stream: S, fd: RawFd, worker: Rc<Worker>, trace: Rc<RequestTrace>) -> Self {
        let index = worker.reaper.register(fd);
        ClientConn {
            io: ClientIo {
                slot: Slot { worker, index },
                stream,
                head_deadline: 0,
                served: 0,
                trace,
                cancel: None,
            },
            rbuf: ReadBuf {
                buf: Vec::new(),
                start: 0,
            },
            wbuf: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Takes the read and write buffers from the worker's pool (the
    /// connection has bytes to read).
    #[inline]
    pub fn take_buffers(&mut self) {
        let pool = self.io.buffers();
        pool.ensure_small(&mut self.rbuf.buf);
        pool.ensure_small(&mut self.wbuf);
    }

    /// Gives every buffer back to the worker's pool: the connection is idle
    /// (nothing unread, nothing unwritten) or closing.
    #[inline]
    pub fn give_buffers(&mut self) {
        self.io.cancel = None;
        let pool = &self.io.slot.worker.buffers;
        self.rbuf.start = 0;
        pool.give(&mut self.rbuf.buf);
        pool.give(&mut self.wbuf);
        pool.give(&mut self.scratch);
    }
}

impl<S: ClientStream> ClientIo<S> {
    /// The worker serving this connection.
    #[inline]
    pub fn worker(&self) -> &Worker {
        &self.slot.worker
    }

    /// The worker serving this connection, to keep.
    pub fn worker_rc(&self) -> Rc<Worker> {
        self.slot.worker.clone()
    }

    /// Records the id of the request now being served (for a panic's log
    /// line) and counts it.
    #[inline]
    pub fn start_request(&mut self, id: &[u8]) {
        self.head_deadline = 0;
        self.served += 1;
        self.trace.note(id);
    }

    /// The client certificate of a mutual-TLS connection.
    #[inline]
    pub fn client_cert(&self) -> Option<&crate::observe::access_log::ClientCertFields> {
        self.stream.client_cert()
    }

    /// Header lines carrying the verified client certificate to backends.
    #[inline]
    pub fn backend_headers(&self) -> Option<std::rc::Rc<[u8]>> {
        self.stream.backend_headers()
    }

    /// Whether this connection has answered a request before.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// The worker's buffer pool.
    #[inline]
    pub fn buffers(&self) -> &BufPool {
        &self.slot.worker.buffers
    }

    /// Reads more bytes into `rbuf` (which must have memory, see
    /// [`ClientConn::take_buffers`]) after what is there, under the head
    /// timeout: the connection was readable, or part of a head has arrived.
    pub async fn fill(&mut self, rbuf: &mut ReadBuf) -> Fill {
        let limits = &self.slot.worker.limits;
        // Move the unconsumed tail to the front.
        if rbuf.start > 0 {
            rbuf.buf.copy_within(rbuf.start.., 0);
            rbuf.buf.truncate(rbuf.buf.len() - rbuf.start);
            rbuf.start = 0;
        }
        if rbuf.buf.len() == rbuf.buf.capacity() {
            // The head parser refuses heads over the limits before the
            // buffer could grow past them, so this growth is bounded.
            let grow = rbuf
                .buf
                .capacity()
                .min(limits.max_read_buffer.saturating_sub(rbuf.buf.capacity()));
            if grow == 0 {
                return Fill::Closed;
            }
            rbuf.buf.reserve_exact(grow);
        }
        let reaper = &self.slot.worker.reaper;
        if self.head_deadline == 0 {
            self.head_deadline = reaper.deadline(limits.header_read_timeout);
        }
        let deadline = self.head_deadline;
        let partial = !rbuf.buf.is_empty();
        let buf = std::mem::take(&mut rbuf.buf);
        let len = buf.len();
        let cap = buf.capacity();
        reaper.arm(self.slot.index, deadline, Wait::Read);
        let (res, slice) = self.stream.recv(buf.slice_mut(len..cap)).await;
        let expired = reaper.disarm(self.slot.index);
        rbuf.buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) if expired && partial => Fill::HeadTimeout,
            Ok(0) | Err(_) => Fill::Closed,
            Ok(_) if expired => Fill::Closed,
            Ok(_) => Fill::Data,
        }
    }

    /// Reads client bytes into `scratch` (replacing its contents) under the
    /// body read timeout; returns how many arrived.
    pub async fn read_body(&mut self, scratch: &mut Vec<u8>) -> Result<usize, ClientStop> {
        let w = &self.slot.worker;
        let buf = take_scratch(&w.buffers, scratch);
        w.reaper.arm(
            self.slot.index,
            w.reaper.deadline(w.limits.header_read_timeout),
            Wait::Read,
        );
        let (res, buf) = self.stream.recv(buf).await;
        let expired = w.reaper.disarm(self.slot.index);
        *scratch = buf;
        match res {
            Ok(n) if n > 0 && !expired => Ok(n),
            _ if expired => Err(ClientStop::TimedOut),
            _ => Err(ClientStop::Gone),
        }
    }

    /// Writes out `wbuf` (leaving it empty) under the write timeout. False:
    /// the connection failed.
    ///
    /// [`ClientIo::write`]'s work, written out here rather than awaited:
    /// this runs once per request, and a nested future costs a state to
    /// resume and one to drop.
    pub async fn flush(&mut self, wbuf: &mut Vec<u8>) -> bool {
        let len = wbuf.len();
        if len == 0 {
            return true;
        }
        self.arm_write();
        let (ok, mut buf) = match self.stream.send(std::mem::take(wbuf)).await {
            (Ok(n), buf) if n == len => (true, buf),
            (res, buf) => self.write_rest(res, buf, len).await,
        };
        let expired = self.disarm();
        buf.clear();
        *wbuf = buf;
        ok && !expired
    }

    /// Writes all of `buf` (shared bytes, a slice of another buffer) under
    /// the write timeout and hands it back. False: the connection failed.
    pub async fn write<B: OutBuf>(&mut self, buf: B) -> (bool, B) {
        let len = buf.bytes_init();
        self.arm_write();
        let (ok, buf) = if len == 0 {
            (true, buf)
        } else {
            match self.stream.send(buf).await {
                (Ok(n), buf) if n == len => (true, buf),
                (res, buf) => self.write_rest(res, buf, len).await,
            }
        };
        let expired = self.disarm();
        (ok && !expired, buf)
    }

    /// Arms the slot for a write: `keepalive_timeout`.
    #[inline]
    fn arm_write(&self) {
        let w = &self.slot.worker;
        w.reaper.arm(
            self.slot.index,
            w.reaper.deadline(w.limits.keepalive_timeout),
            Wait::Write,
        );
    }

    /// Disarms the slot; true if the reaper expired it meanwhile.
    #[inline]
    fn disarm(&self) -> bool {
        self.slot.worker.reaper.disarm(self.slot.index)
    }

    /// After a first write of `buf` (`len` bytes) that did not take it
    /// all: monoio's write_all loop for the rest, or the failure. One write
    /// takes a whole response nearly always, so the loop's future and
    /// slice are not paid for on every response.
    #[cold]
    async fn write_rest<B: OutBuf>(
        &mut self,
        first: io::Result<usize>,
        buf: B,
        len: usize,
    ) -> (bool, B) {
        match first {
            Ok(n) if n > 0 => {
                let (res, rest) = self.stream.send_all(buf.slice(n..len)).await;
                (res.is_ok(), rest.into_inner())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                let (res, buf) = self.stream.send_all(buf).await;
                (res.is_ok(), buf)
            }
            // Ok(0): the socket takes nothing more (write_all's WriteZero).
            _ => (false, buf),
        }
    }

    /// Closes lingering, as nginx's `lingering_close` does: after an error
    /// answered before the client's request was read whole, closing at once
    /// with its bytes unread makes the kernel send a reset, which can
    /// destroy the response before the client has read it. So: shut down
    /// the write side (the client sees the end of the response), then read
    /// and discard for at most `LINGER_TIME` and `LINGER_BYTES`, until
    /// the client closes.
    pub async fn linger(&mut self, scratch: &mut Vec<u8>) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let w = &self.slot.worker;
        let deadline = w.reaper.deadline(LINGER_TIME);
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            let buf = take_scratch(&w.buffers, scratch);
            w.reaper.arm(self.slot.index, deadline, Wait::Read);
            let (res, buf) = self.stream.recv(buf).await;
            let expired = w.reaper.disarm(self.slot.index);
            *scratch = buf;
            match res {
                Ok(n) if n > 0 && !expired => discarded += n,
                _ => return,
            }
        }
    }

    /// The stream, out of the reaper's hands (for a protocol switch, whose
    /// tunnel keeps its own idle timeout).
    pub fn into_stream(self) -> S {
        let ClientIo { slot, stream, .. } = self;
        drop(slot);
        stream
    }
}

impl<S: ClientStream> ClientIo<S> {
    /// Reads the first bytes of the next request into `rbuf` (empty, with
    /// memory) right after the last answer: on a busy keep-alive
    /// connection they come at once, and a read now costs nothing more.
    /// Should none come within 1 to 2 s (a whole sweep interval), the reaper cancels the
    /// read ([`NextRequest::Park`]) so that the connection can give its buffers
    /// back and wait holding none. `keepalive_timeout` and a drain close it
    /// as an idle connection.
    pub async fn read_next(&mut self, rbuf: &mut ReadBuf) -> NextRequest {
        let w = &self.slot.worker;
        if w.is_draining() {
            return NextRequest::Closed;
        }
        let index = self.slot.index;
        let handle = self
            .cancel
            .get_or_insert_with(|| w.reaper.cancel_handle(index))
            .clone();
        w.reaper.arm(
            index,
            w.reaper.deadline(w.limits.keepalive_timeout),
            Wait::Hot,
        );
        let buf = std::mem::take(&mut rbuf.buf);
        let len = buf.len();
        let cap = buf.capacity();
        let (res, slice) = self
            .stream
            .recv_cancelable(buf.slice_mut(len..cap), handle)
            .await;
        let expired = w.reaper.disarm(index);
        rbuf.buf = slice.into_inner();
        match res {
            Ok(n) if n > 0 && !expired => NextRequest::Data,
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) && !expired => {
                w.parked.set(w.parked.get() + 1);
                NextRequest::Park
            }
            _ => NextRequest::Closed,
        }
    }
}

impl<S: ClientStream> ClientIo<S> {
    /// Waits, holding no buffer, until the client sends the first bytes of
    /// its next request (or closes). False: it stayed idle past
    /// `keepalive_timeout` (`header_read_timeout` before its first
    /// request), the worker is draining, or the socket failed; close it.
    pub async fn wait_readable(&mut self) -> bool {
        let w = &self.slot.worker;
        if w.is_draining() {
            return false;
        }
        let timeout = if self.served == 0 {
            w.limits.header_read_timeout
        } else {
            w.limits.keepalive_timeout
        };
        w.reaper
            .arm(self.slot.index, w.reaper.deadline(timeout), Wait::Idle);
        let res = self.stream.wait_readable().await;
        let expired = w.reaper.disarm(self.slot.index);
        res.is_ok() && !expired
    }
}

/// The scratch buffer, emptied and at least [`LARGE`] bytes (from the
/// pool), taken out for a read (the read hands it back).
fn take_scratch(pool: &BufPool, scratch: &mut Vec<u8>) -> Vec<u8> {
    let mut buf = std::mem::take(scratch);
    buf.clear();
    if buf.capacity() < LARGE {
        pool.give(&mut buf);
        buf = pool.large();
    }
    buf
}
