//! A server-side TLS stream over monoio's TCP: rustls's connection state,
//! fed ciphertext from owned buffers, as a [`ClientStream`].
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
//! alert from the client fail the read with `InvalidData` after rustls's
//! alert has been sent; a TCP end without close_notify is `UnexpectedEof`.
//!
//! Accepting: [`TlsStream::accept`] reads the ClientHello with rustls's
//! `Acceptor` before any connection state exists, so the caller picks the
//! server configuration by its SNI name (mutual TLS is per certificate
//! entry); [`TlsStream::handshake`] then completes the handshake. A parked
//! connection gives back `rx` and `tx`; rustls's own buffers stay (about
//! 21 KB per idle connection in all).
//!
//! Allocations: rustls's buffered API copies each received record's
//! plaintext and each record it makes into `Vec`s of its own, two per
//! request-response (`tests/tls_alloc.rs`).

#![forbid(unsafe_code)]

use std::future::Future;
use std::io::{self, BufRead, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::CancelableAsyncReadRent;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, CancelHandle};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::server::{AcceptedAlert, Acceptor};
use rustls::{ServerConfig, ServerConnection};

use crate::observe::access_log::ClientCertFields;
use crate::runtime::stream::{ClientStream, InBuf, OutBuf};
use crate::upstream::pool::UpstreamConn;

/// Bytes of ciphertext read from the socket at a time: one full TLS record
/// (16 KiB of plaintext, its header and the AEAD's overhead).
const RX_BYTES: usize = 16 * 1024 + 256;

/// Writes out the alert rustls made for a ClientHello it refused.
async fn send_alert(tcp: &mut TcpStream, mut alert: AcceptedAlert) {
    let mut out = Vec::new();
    if alert.write_all(&mut out).is_ok() && !out.is_empty() {
        let _ = tcp.write_all(out).await;
    }
}

/// A TLS connection from a client, handshaken or not.
pub struct TlsStream {
    tcp: TcpStream,
    tls: Box<ServerConnection>,
    /// Ciphertext read from the socket, handed to rustls right away.
    rx: Vec<u8>,
    /// Records to write, collected from rustls.
    tx: Vec<u8>,
    /// The client certificate's fields, on a mutual-TLS connection that
    /// presented one.
    client_cert: Option<Box<ClientCertFields>>,
    /// `client_cert_headers`' lines for a verified certificate.
    backend_headers: Option<Rc<[u8]>>,
}

impl TlsStream {
    /// A stream whose handshake is still to be done ([`TlsStream::handshake`]).
    pub fn new(tcp: TcpStream, tls: ServerConnection) -> TlsStream {
        TlsStream {
            tcp,
            tls: Box::new(tls),
            rx: Vec::new(),
            tx: Vec::new(),
            client_cert: None,
            backend_headers: None,
        }
    }

    /// Reads the ClientHello from `tcp` and starts the connection with the
    /// configuration `choose` gives for its SNI name (`None`: no SNI),
    /// which also returns a value to hand back (the certificate entry).
    /// The handshake is then [`TlsStream::handshake`]'s. Errors: the
    /// client closed, or sent what is not a ClientHello (rustls's alert is
    /// sent first).
    pub async fn accept<T>(
        mut tcp: TcpStream,
        choose: impl FnOnce(Option<&str>) -> (Arc<ServerConfig>, T),
    ) -> io::Result<(TlsStream, T)> {
        let mut acceptor = Acceptor::default();
        let mut rx = Vec::with_capacity(RX_BYTES);
        let accepted = loop {
            rx.clear();
            let (res, buf) = tcp.read(rx).await;
            rx = buf;
            if res? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut data = &rx[..];
            while !data.is_empty() {
                if acceptor.read_tls(&mut data)? == 0 {
                    break;
                }
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => break accepted,
                Ok(None) => {}
                Err((e, alert)) => {
                    send_alert(&mut tcp, alert).await;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        };
        let (config, chosen) = choose(accepted.client_hello().server_name());
        let conn = match accepted.into_connection(config) {
            Ok(conn) => conn,
            Err((e, alert)) => {
                send_alert(&mut tcp, alert).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        let mut stream = TlsStream::new(tcp, conn);
        stream.rx = rx;
        Ok((stream, chosen))
    }

    /// Runs the handshake to its end. Errors: the client closed, sent
    /// something that is not TLS, or failed the handshake (rustls's alert
    /// is sent first).
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

    /// Keeps the header lines that carry the certificate to backends.
    pub(super) fn set_backend_headers(&mut self, lines: Vec<u8>) {
        self.backend_headers = Some(lines.into());
    }

    /// Keeps the client certificate's fields for the access log.
    pub(super) fn set_client_cert(&mut self, fields: ClientCertFields) {
        self.client_cert = Some(Box::new(fields));
    }

    /// The rustls connection (the SNI name, the protocol version, the
    /// client's certificates).
    pub fn connection(&self) -> &ServerConnection {
        &self.tls
    }

    /// Reads ciphertext once (through `cancel` when given) and has rustls
    /// process it; sends whatever rustls wants to send in answer. Returns
    /// the bytes read (0: the client closed its side).
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
        let mut data = &self.rx[..n];
        loop {
            // `read_tls` takes what fits in its buffer; processing frees it.
            self.tls.read_tls(&mut data)?;
            if let Err(e) = self.tls.process_new_packets() {
                // Tell the client why (the alert rustls queued), then fail.
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
    async fn write_tls(&mut self) -> io::Result<()> {
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
    /// has none yet. `Some(Ok(0))`: the client closed the TLS session.
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
    fn has_plaintext(&mut self) -> bool {
        !matches!(self.tls.reader().fill_buf(), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    async fn read_into<T: InBuf>(
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

    /// Hands all of `bytes` to rustls and writes out the records.
    async fn send_plain(&mut self, mut bytes: &[u8]) -> io::Result<()> {
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
}

impl ClientStream for TlsStream {
    fn recv<T: InBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.read_into(buf, None)
    }

    fn recv_cancelable<T: InBuf>(
        &mut self,
        buf: T,
        handle: CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>> {
        self.read_into(buf, Some(handle))
    }

    /// Always all of it: rustls takes the bytes as they are given.
    async fn send<B: OutBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        let len = buf.out_bytes().len();
        let res = self.send_plain(buf.out_bytes()).await;
        (res.map(|()| len), buf)
    }

    async fn send_all<B: OutBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        ClientStream::send(self, buf).await
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        if self.has_plaintext() {
            return Ok(());
        }
        // Parked: the ciphertext scratch buffers hold nothing between
        // reads and writes, so an idle connection gives them back (the next
        // busy period takes new ones).
        self.rx = Vec::new();
        self.tx = Vec::new();
        self.tcp.readable(false).await
    }

    fn client_cert(&self) -> Option<&ClientCertFields> {
        self.client_cert.as_deref()
    }

    fn backend_headers(&self) -> Option<Rc<[u8]>> {
        self.backend_headers.clone()
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.write_tls().await?;
        AsyncWriteRent::shutdown(&mut self.tcp).await
    }

    /// Upgrades are not tunnelled over TLS yet: the gateway does not offer
    /// them on TLS connections (the backend sees no `Upgrade`).
    const TUNNELS: bool = false;

    async fn tunnel(self, _backend: UpstreamConn, _pending: Vec<u8>, _idle: Duration) {}
}
