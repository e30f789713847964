//! A server-side TLS stream: a client's connection to the gateway, over
//! [`TlsIo`] (rustls's buffered `ServerConnection` on monoio's TCP; how
//! reads, cancelled reads, writes and failures work is on its page), as a
//! [`ClientStream`].
//!
//! Accepting: [`TlsStream::accept`] reads the ClientHello with rustls's
//! `Acceptor` before any connection state exists, so the caller picks the
//! server configuration by its SNI name (mutual TLS is per certificate
//! entry); [`TlsStream::handshake`] then completes the handshake. A parked
//! connection gives back `rx` and `tx`; rustls's own buffers stay (about
//! 21 KB per idle connection in all).
//!
//! Upgrades: after a backend's 101, [`TlsStream`]'s `tunnel` relays both
//! ways with [`crate::upstream::tunnel::relay`], one loop that waits for
//! either side's readiness (a TLS stream cannot be split into independent
//! halves as TCP can).
//!
//! Allocations: rustls's buffered API copies each received record's
//! plaintext and each record it makes into `Vec`s of its own, two per
//! request-response (`tests/tls_alloc.rs`).

#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelHandle};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::server::{AcceptedAlert, Acceptor};
use rustls::{ServerConfig, ServerConnection};

use super::io::{TlsIo, RX_BYTES};
use crate::observe::access_log::ClientCertFields;
use crate::runtime::stream::{ClientStream, InBuf, OutBuf};
use crate::upstream::pool::{BackendStream, UpstreamConn};

/// Writes out the alert rustls made for a ClientHello it refused.
async fn send_alert(tcp: &mut TcpStream, mut alert: AcceptedAlert) {
    let mut out = Vec::new();
    if alert.write_all(&mut out).is_ok() && !out.is_empty() {
        let _ = tcp.write_all(out).await;
    }
}

/// A TLS connection from a client, handshaken or not.
pub struct TlsStream {
    io: TlsIo<ServerConnection>,
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
            io: TlsIo::new(tcp, tls),
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
        stream.io.rx = rx;
        Ok((stream, chosen))
    }

    /// Runs the handshake to its end. Errors: the client closed, sent
    /// something that is not TLS, or failed the handshake (rustls's alert
    /// is sent first).
    pub async fn handshake(&mut self) -> io::Result<()> {
        self.io.handshake().await
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
        self.io.connection()
    }
}

impl ClientStream for TlsStream {
    fn recv<T: InBuf>(&mut self, buf: T) -> impl Future<Output = BufResult<usize, T>> {
        self.io.read_into(buf, None)
    }

    fn recv_cancelable<T: InBuf>(
        &mut self,
        buf: T,
        handle: CancelHandle,
    ) -> impl Future<Output = BufResult<usize, T>> {
        self.io.read_into(buf, Some(handle))
    }

    /// Always all of it: rustls takes the bytes as they are given.
    async fn send<B: OutBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        let len = buf.out_bytes().len();
        let res = self.io.send_plain(buf.out_bytes()).await;
        (res.map(|()| len), buf)
    }

    async fn send_all<B: OutBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        ClientStream::send(self, buf).await
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        if self.io.has_plaintext() {
            return Ok(());
        }
        self.io.park();
        self.io.tcp().readable(false).await
    }

    fn client_cert(&self) -> Option<&ClientCertFields> {
        self.client_cert.as_deref()
    }

    fn backend_headers(&self) -> Option<Rc<[u8]>> {
        self.backend_headers.clone()
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }

    const TUNNELS: bool = true;

    /// A WebSocket (or other upgrade) over TLS: [`crate::upstream::tunnel::relay`],
    /// one loop for both directions (a TLS stream cannot be split).
    async fn tunnel(mut self, backend: UpstreamConn, pending: Vec<u8>, idle: Duration) {
        use crate::upstream::tunnel::relay;
        match backend.stream {
            BackendStream::Plain(mut tcp) => relay(&mut self.io, &mut tcp, pending, idle).await,
            BackendStream::Tls(mut tls) => relay(&mut self.io, &mut *tls, pending, idle).await,
        }
    }
}
