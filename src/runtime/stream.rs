//! What a client connection's stream must do: [`ClientStream`], for plain
//! TCP here and for TLS in [`crate::tls`].
//!
//! [`ClientIo`](super::ClientIo) reads and writes only through this trait.
//! Its methods have monoio's shapes (owned buffers in, `(result, buffer)`
//! out), and for TCP they are monoio's own calls, so a plain connection
//! runs exactly the code it ran before TLS existed. The buffers are limited
//! to the kinds the connection uses ([`InBuf`]: a `Vec` or a `SliceMut` of
//! one; [`OutBuf`]: a `Vec`, `Bytes`, or a `Slice` of either), which a TLS
//! stream can fill with decrypted bytes and read bytes to encrypt from
//! through safe slices, instead of the raw pointers monoio's generic
//! `IoBuf` gives. The operations are the ones the connection uses: read,
//! with or without a cancel handle (the reaper's way to park an idle
//! keep-alive connection); write once or whole; wait for input holding no
//! buffer; shut the write side down; hand the stream to an upgrade tunnel.

#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut, Slice, SliceMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent,
};
use monoio::net::TcpStream;
use monoio::BufResult;

use crate::observe::access_log::ClientCertFields;
use crate::upstream::pool::UpstreamConn;

/// A buffer to read into that a TLS stream can append decrypted bytes to:
/// a `Vec` (from its length up to its capacity) or a `SliceMut` of one
/// (whose start is the `Vec`'s length).
pub trait InBuf: IoBufMut {
    /// Bytes that still fit.
    fn room(&self) -> usize;
    /// Appends the first [`InBuf::room`] bytes of `bytes` at most; how many.
    fn append(&mut self, bytes: &[u8]) -> usize;
}

impl InBuf for Vec<u8> {
    fn room(&self) -> usize {
        self.capacity() - self.len()
    }

    fn append(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        self.extend_from_slice(&bytes[..n]);
        n
    }
}

impl InBuf for SliceMut<Vec<u8>> {
    fn room(&self) -> usize {
        self.end().saturating_sub(self.get_ref().len())
    }

    fn append(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        self.get_mut().extend_from_slice(&bytes[..n]);
        n
    }
}

/// A buffer of bytes to send that can be read as a slice (what a TLS
/// stream encrypts): a `Vec`, shared `Bytes`, or a `Slice` of either.
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

impl<B: OutBuf> OutBuf for Slice<B> {
    fn out_bytes(&self) -> &[u8] {
        &self.get_ref().out_bytes()[self.begin()..self.end()]
    }
}

/// A client connection's byte stream.
pub trait ClientStream: 'static {
    /// Reads what is there into `buf` (after its contents); `Ok(0)` is the
    /// end of the stream.
    fn recv<T: InBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>>;

    /// [`ClientStream::recv`] that the reaper can cancel through `handle`:
    /// it then ends with `ECANCELED` and nothing read, or with the bytes
    /// that raced the cancel, never losing any.
    fn recv_cancelable<T: InBuf>(
        &mut self,
        buf: T,
        handle: CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>>;

    /// Writes some of `buf` (all of it, nearly always); how much.
    fn send<B: OutBuf>(&mut self, buf: B) -> impl Future<Output = BufResult<usize, B>>;

    /// Writes all of `buf`.
    fn send_all<B: OutBuf>(&mut self, buf: B) -> impl Future<Output = BufResult<usize, B>>;

    /// Resolves once a read would not wait: bytes, the end of the stream
    /// or an error are there. May resolve spuriously (the read then waits).
    fn wait_readable(&mut self) -> impl Future<Output = io::Result<()>>;

    /// Ends the write side (a TLS stream sends its close_notify first).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>>;

    /// The client certificate the connection presented (mutual TLS), for
    /// `$context.identity.clientCert.*`. None on plain TCP.
    #[inline]
    fn client_cert(&self) -> Option<&ClientCertFields> {
        None
    }

    /// Header lines (`name: value\r\n`) that carry the verified client
    /// certificate to backends (`client_cert_headers`). None on plain TCP.
    #[inline]
    fn backend_headers(&self) -> Option<std::rc::Rc<[u8]>> {
        None
    }

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
    fn recv<T: InBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        AsyncReadRent::read(self, buf)
    }

    #[inline]
    fn recv_cancelable<T: InBuf>(
        &mut self,
        buf: T,
        handle: CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>> {
        CancelableAsyncReadRent::cancelable_read(self, buf, handle)
    }

    #[inline]
    fn send<B: OutBuf>(&mut self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        AsyncWriteRent::write(self, buf)
    }

    #[inline]
    fn send_all<B: OutBuf>(&mut self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        AsyncWriteRentExt::write_all(self, buf)
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
        crate::upstream::tunnel::tunnel_tcp(self, backend.stream, pending, idle)
    }
}
