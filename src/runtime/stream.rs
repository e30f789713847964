//! What a client connection's stream must do: [`ClientStream`], for plain
//! TCP here and for TLS in [`crate::tls`].
//!
//! [`ClientIo`](super::ClientIo) reads and writes only through this trait,
//! with the connection's own `Vec<u8>` buffers (owned, as monoio's
//! completion-based I/O wants them). Concrete buffers, rather than monoio's
//! generic `IoBuf`, let a TLS stream copy decrypted bytes into them and
//! read bytes to encrypt out of them without unsafe code. The operations
//! are the ones the connection uses: append what arrives to a buffer, with
//! or without a cancel handle (the reaper's way to park an idle keep-alive
//! connection); write a whole buffer; wait for input holding no buffer;
//! shut the write side down; hand the stream over to an upgrade tunnel.

#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut, Slice};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
};
use monoio::net::TcpStream;

use crate::upstream::pool::UpstreamConn;

/// A buffer of bytes to send that can be read as a slice (what a TLS
/// stream encrypts): a `Vec`, shared `Bytes`, or a range of a `Vec`.
pub trait OutBuf: IoBuf {
    /// The bytes to send.
    fn out_bytes(&self) -> &[u8];
}

impl OutBuf for Vec<u8> {
    fn out_bytes(&self) -> &[u8] {
        self
    }
}

impl OutBuf for bytes::Bytes {
    fn out_bytes(&self) -> &[u8] {
        self
    }
}

impl OutBuf for Slice<Vec<u8>> {
    fn out_bytes(&self) -> &[u8] {
        &self.get_ref()[self.begin()..self.end()]
    }
}

/// A client connection's byte stream.
pub trait ClientStream: 'static {
    /// Reads what is there into `buf`'s spare capacity (after its
    /// contents), up to its capacity; `Ok(0)` is the end of the stream.
    fn read_append(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;

    /// [`ClientStream::read_append`] that the reaper can cancel through
    /// `handle`: it then ends with `ECANCELED` and nothing read, or with the
    /// bytes that raced the cancel, never losing any.
    fn read_append_cancelable(
        &mut self,
        buf: Vec<u8>,
        handle: CancelHandle,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;

    /// Writes all of `buf` (bytes shared with others, or a slice of a
    /// buffer) and hands it back.
    fn write_all_buf<B: OutBuf>(&mut self, buf: B) -> impl Future<Output = (io::Result<()>, B)>;

    /// Resolves once a read would not wait: bytes, the end of the stream
    /// or an error are there. May resolve spuriously (the read then waits).
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>>;

    /// Ends the write side (a TLS stream sends its close_notify first).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>>;

    /// Whether a backend's `101 Switching Protocols` may turn this
    /// connection into a tunnel ([`ClientStream::tunnel`]).
    const TUNNELS: bool;

    /// Relays bytes both ways between this stream and `backend` (after
    /// sending it `pending`), until either side ends or stays idle for
    /// `idle`. Called only when [`ClientStream::TUNNELS`].
    fn tunnel(
        self,
        backend: UpstreamConn,
        pending: Vec<u8>,
        idle: Duration,
    ) -> impl Future<Output = ()>;
}

impl ClientStream for TcpStream {
    #[inline]
    fn read_append(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        let (len, cap) = (buf.len(), buf.capacity());
        let read = self.read(buf.slice_mut(len..cap));
        async move {
            let (res, slice) = read.await;
            (res, slice.into_inner())
        }
    }

    #[inline]
    fn read_append_cancelable(
        &mut self,
        buf: Vec<u8>,
        handle: CancelHandle,
    ) -> impl Future<Output = (io::Result<usize>, Vec<u8>)> {
        let (len, cap) = (buf.len(), buf.capacity());
        let read = self.cancelable_read(buf.slice_mut(len..cap), handle);
        async move {
            let (res, slice) = read.await;
            (res, slice.into_inner())
        }
    }

    async fn write_all_buf<B: OutBuf>(&mut self, buf: B) -> (io::Result<()>, B) {
        let len = buf.bytes_init();
        if len == 0 {
            return (Ok(()), buf);
        }
        // One write takes a whole response nearly always: write_all's loop
        // (a future and a slice) only for the rest.
        match self.write(buf).await {
            (Ok(n), buf) if n == len => (Ok(()), buf),
            (res, buf) => write_rest(self, res, buf, len).await,
        }
    }

    #[inline]
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>> {
        // Not relaxed: on the epoll driver a stale readiness is checked
        // with poll(2) rather than trusted.
        self.readable(false)
    }

    #[inline]
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        AsyncWriteRent::shutdown(self)
    }

    const TUNNELS: bool = true;

    fn tunnel(
        self,
        backend: UpstreamConn,
        pending: Vec<u8>,
        idle: Duration,
    ) -> impl Future<Output = ()> {
        crate::upstream::tunnel::tunnel(self, backend.stream, pending, idle)
    }
}

/// After a first write of `buf` (`len` bytes) that did not take it all:
/// monoio's write_all loop for the rest, or the failure.
#[cold]
async fn write_rest<B: IoBuf>(
    s: &mut TcpStream,
    first: io::Result<usize>,
    buf: B,
    len: usize,
) -> (io::Result<()>, B) {
    match first {
        Ok(n) if n > 0 => {
            let (res, rest) = s.write_all(buf.slice(n..len)).await;
            (res.map(drop), rest.into_inner())
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            let (res, buf) = s.write_all(buf).await;
            (res.map(drop), buf)
        }
        Ok(_) => (Err(io::ErrorKind::WriteZero.into()), buf),
        Err(e) => (Err(e), buf),
    }
}
