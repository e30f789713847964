//! Record I/O shared by both ends: rustls's buffered connection state
//! (server or client) over monoio's TCP, fed ciphertext from owned buffers.
//!
//! [`TlsIo`] is what [`super::stream::TlsStream`] (clients' connections to
//! the gateway) and [`super::client`] (the gateway's connections to HTTPS
//! backends) are made of.
//!
//! Reads: ciphertext arrives in `rx` (one TCP read), is handed to rustls
//! (`read_tls`, `process_new_packets`), and the plaintext it yields is
//! appended to the caller's buffer from rustls's own (`BufRead::fill_buf`),
//! so no uninitialised memory is ever written through a raw pointer.
//! A cancelled read (the reaper parking an idle connection) is the TCP
//! read's cancellation: it ends with `ECANCELED` and nothing read, or with
//! the ciphertext that raced it, which rustls keeps; no record is lost.
//!
//! Writes: plaintext goes to rustls (`writer()`), the records it makes are
//! collected in `tx` (`write_tls`) and written out whole.
//!
//! Failures: a record that does not decrypt, a protocol violation or an
//! alert from the peer fail the read with `InvalidData` (its inner error
//! is the [`rustls::Error`]) after rustls's alert has been sent; a TCP end
//! without close_notify is `UnexpectedEof`.

#![forbid(unsafe_code)]

use std::io::{self, BufRead, Write};
use std::ops::DerefMut;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::ConnectionCommon;

use crate::runtime::stream::InBuf;

/// Bytes of ciphertext read from the socket at a time: one full TLS record
/// (16 KiB of plaintext, its header and the AEAD's overhead).
pub(super) const RX_BYTES: usize = 16 * 1024 + 256;

/// A TLS connection over TCP: `C` is rustls's `ServerConnection` or
/// `ClientConnection`.
pub struct TlsIo<C> {
    pub(super) tcp: TcpStream,
    pub(super) tls: Box<C>,
    /// Ciphertext read from the socket, handed to rustls right away.
    pub(super) rx: Vec<u8>,
    /// Records to write, collected from rustls.
    tx: Vec<u8>,
}

impl<C, D> TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    /// A connection whose handshake is still to be done.
    pub fn new(tcp: TcpStream, tls: C) -> TlsIo<C> {
        TlsIo {
            tcp,
            tls: Box::new(tls),
            rx: Vec::new(),
            tx: Vec::new(),
        }
    }

    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The rustls connection.
    pub fn connection(&self) -> &C {
        &self.tls
    }

    /// The rustls connection, to hand it bytes read elsewhere.
    pub fn connection_mut(&mut self) -> &mut C {
        &mut self.tls
    }

    /// Runs the handshake to its end. Errors: the peer closed, sent
    /// something that is not TLS, or failed the handshake (rustls's alert
    /// is sent first; the inner error is the [`rustls::Error`]).
    pub async fn handshake(&mut self) -> io::Result<()> {
        while self.tls.is_handshaking() {
            if self.tls.wants_write() {
                self.write_tls().await?;
            }
            if self.tls.is_handshaking() && self.tls.wants_read() && self.read_tls(None).await? == 0
            {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        if self.tls.wants_write() {
            self.write_tls().await?;
        }
        Ok(())
    }

    /// Reads ciphertext once (through `cancel` when given) and has rustls
    /// process it; sends whatever rustls wants to send in answer. Returns
    /// the bytes read (0: the peer closed its side).
    async fn read_tls(&mut self, cancel: Option<CancelHandle>) -> io::Result<usize> {
        let mut rx = std::mem::take(&mut self.rx);
        rx.clear();
        if rx.capacity() < RX_BYTES {
            rx.reserve_exact(RX_BYTES);
        }
        let (res, rx) = match cancel {
            Some(handle) => {
                let cap = rx.capacity();
                let (res, slice) = self.tcp.cancelable_read(rx.slice_mut(0..cap), handle).await;
                (res, slice.into_inner())
            }
            None => self.tcp.read(rx).await,
        };
        self.rx = rx;
        let n = res?;
        // The read reports what it put in `rx`, never more than it holds.
        let Some(mut data) = self.rx.get(..n) else {
            return Err(io::ErrorKind::InvalidData.into());
        };
        loop {
            // `read_tls` takes what fits in its buffer; processing frees it.
            self.tls.read_tls(&mut data)?;
            if let Err(e) = self.tls.process_new_packets() {
                // Tell the peer why (the alert rustls queued), then fail.
                let _ = self.write_tls().await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if data.is_empty() {
                break;
            }
        }
        if self.tls.wants_write() && !self.tls.is_handshaking() {
            // A key update or session ticket: send it now.
            self.write_tls().await?;
        }
        Ok(n)
    }

    /// Writes out the records rustls has queued.
    pub(super) async fn write_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.tx)?;
        }
        if self.tx.is_empty() {
            return Ok(());
        }
        let tx = std::mem::take(&mut self.tx);
        let (res, mut tx) = self.tcp.write_all(tx).await;
        tx.clear();
        self.tx = tx;
        res.map(drop)
    }

    /// Moves decrypted bytes into `buf` (as many as fit). `None`: rustls
    /// has none yet. `Some(Ok(0))`: the peer closed the TLS session.
    fn take_plaintext<T: InBuf>(&mut self, buf: &mut T) -> Option<io::Result<usize>> {
        let mut reader = self.tls.reader();
        match reader.fill_buf() {
            Ok(data) => {
                let n = buf.append(data);
                reader.consume(n);
                Some(Ok(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Whether decrypted bytes (or the session's end) are waiting.
    pub fn has_plaintext(&mut self) -> bool {
        !matches!(self.tls.reader().fill_buf(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Reads decrypted bytes into `buf` (after its contents), waiting for
    /// the socket when rustls has none; `Ok(0)` is the session's end.
    pub async fn read_into<T: InBuf>(
        &mut self,
        mut buf: T,
        cancel: Option<CancelHandle>,
    ) -> BufResult<usize, T> {
        loop {
            if let Some(res) = self.take_plaintext(&mut buf) {
                return (res, buf);
            }
            // The end of the stream included: rustls tells a clean end
            // from an unclean one at the next `take_plaintext`.
            if let Err(e) = self.read_tls(cancel.clone()).await {
                return (Err(e), buf);
            }
        }
    }

    /// One step, for a caller that waits for the socket's readiness itself
    /// (a tunnel): the decrypted bytes rustls has, or else one read of the
    /// socket and what it decrypted. `WouldBlock`: that read brought no
    /// application data (a partial record, a session ticket, a key update),
    /// so the caller waits again instead of this blocking on the rest.
    pub async fn read_step<T: InBuf>(&mut self, mut buf: T) -> BufResult<usize, T> {
        if let Some(res) = self.take_plaintext(&mut buf) {
            return (res, buf);
        }
        if let Err(e) = self.read_tls(None).await {
            return (Err(e), buf);
        }
        // At the end of the stream rustls answers `Ok(0)` or an error here.
        match self.take_plaintext(&mut buf) {
            Some(res) => (res, buf),
            None => (Err(io::ErrorKind::WouldBlock.into()), buf),
        }
    }

    /// Hands all of `bytes` to rustls and writes out the records.
    pub async fn send_plain(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            // rustls takes what its buffer limit allows; write that out.
            let n = self.tls.writer().write(bytes)?;
            // `io::Write` promises n <= len; a zero means rustls took
            // nothing, which would loop forever.
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            bytes = bytes.get(n..).unwrap_or_default();
            self.write_tls().await?;
        }
        Ok(())
    }

    /// Gives back the ciphertext scratch buffers, which hold nothing
    /// between reads and writes (an idle connection; the next busy period
    /// takes new ones).
    pub fn park(&mut self) {
        self.rx = Vec::new();
        self.tx = Vec::new();
    }

    /// Sends close_notify, then ends the TCP write side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.write_tls().await?;
        monoio::io::AsyncWriteRent::shutdown(&mut self.tcp).await
    }
}

/// The [`rustls::Error`] inside an I/O error from [`TlsIo`], if that is
/// what it is.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}
