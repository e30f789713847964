//! The protocol-switch tunnel: after a backend's `101 Switching Protocols`
//! (WebSocket), bytes are copied both ways between the client and the
//! backend until either side closes or neither sends for the idle timeout.
//!
//! Between two plain TCP sockets ([`tunnel`]) each direction runs on its
//! own half: it reads into its own buffer of `COPY_CHUNK` bytes and writes
//! it out before reading again, so a slow reader holds back its sender
//! (back-pressure) and memory stays bounded.
//!
//! A TLS stream cannot be split into halves (one rustls state serves both
//! directions), so when either side is TLS — a `wss://` client, an HTTPS
//! backend, or both — [`relay`] runs one loop instead: it waits for either
//! side to be readable (readiness only, holding no buffer, so the side
//! that loses the race loses no bytes), moves what that side has to the
//! other, and holds the other direction back while it writes. A TLS read
//! that completes no record with data (a partial record, a session ticket,
//! a key update) moves nothing, and the loop waits again, so neither
//! direction waits on the other's rest. When one side ends, the other is
//! closed (a TLS side gets its close_notify).

#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::ConnectionCommon;

use super::pool::BackendStream;
use crate::tls::io::TlsIo;

/// Bytes read per read in each direction.
const COPY_CHUNK: usize = 16 * 1024;

/// One side of a [`relay`]: plain TCP or TLS over it.
pub trait TunnelSide {
    /// Whether a read would not wait: decrypted bytes, or the end, are
    /// already in hand.
    fn buffered(&mut self) -> bool;
    /// Resolves once the socket is readable.
    fn ready(&self) -> impl Future<Output = io::Result<()>>;
    /// Reads what is there into `buf` (after its contents), once the side
    /// is ready; `Ok(0)` is the end, `WouldBlock` that nothing came through
    /// yet (a partial TLS record, a ticket, a key update).
    fn read_some(&mut self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>>;
    /// Writes all of `buf`.
    fn send(&mut self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>>;
    /// Ends the write side (close_notify first over TLS).
    fn close(&mut self) -> impl Future<Output = ()>;
}

impl TunnelSide for TcpStream {
    fn buffered(&mut self) -> bool {
        false
    }

    fn ready(&self) -> impl Future<Output = io::Result<()>> {
        self.readable(false)
    }

    fn read_some(&mut self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>> {
        AsyncReadRent::read(self, buf)
    }

    fn send(&mut self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>> {
        AsyncWriteRentExt::write_all(self, buf)
    }

    async fn close(&mut self) {
        let _ = AsyncWriteRent::shutdown(self).await;
    }
}

impl<C, D> TunnelSide for TlsIo<C>
where
    C: std::ops::DerefMut<Target = ConnectionCommon<D>>,
{
    fn buffered(&mut self) -> bool {
        self.has_plaintext()
    }

    fn ready(&self) -> impl Future<Output = io::Result<()>> {
        self.tcp().readable(false)
    }

    fn read_some(&mut self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>> {
        self.read_step(buf)
    }

    async fn send(&mut self, buf: Vec<u8>) -> BufResult<usize, Vec<u8>> {
        let res = self.send_plain(&buf).await;
        (res.map(|()| buf.len()), buf)
    }

    async fn close(&mut self) {
        let _ = self.shutdown().await;
    }
}

/// Relays bytes both ways between `a` and `b` from one loop (see the
/// module docs), after sending `b` the bytes `to_b`, until either side
/// ends or neither sends for `idle`.
pub async fn relay<A: TunnelSide, B: TunnelSide>(
    a: &mut A,
    b: &mut B,
    to_b: Vec<u8>,
    idle: Duration,
) {
    if !to_b.is_empty() && b.send(to_b).await.0.is_err() {
        return;
    }
    let mut a_to_b = Vec::with_capacity(COPY_CHUNK);
    let mut b_to_a = Vec::with_capacity(COPY_CHUNK);
    loop {
        let a_first = if a.buffered() {
            true
        } else if b.buffered() {
            false
        } else {
            let (ra, rb) = (a.ready(), b.ready());
            monoio::select! {
                r = ra => if r.is_err() { return } else { true },
                r = rb => if r.is_err() { return } else { false },
                _ = monoio::time::sleep(idle) => return,
            }
        };
        let going = if a_first {
            pass(a, b, &mut a_to_b, idle).await
        } else {
            pass(b, a, &mut b_to_a, idle).await
        };
        if !going {
            return;
        }
    }
}

/// Moves what `from` has to `to`. False: the tunnel is over (`from` ended,
/// and `to` was closed; or either failed; or a read waited past `idle`).
async fn pass<F: TunnelSide, T: TunnelSide>(
    from: &mut F,
    to: &mut T,
    buf: &mut Vec<u8>,
    idle: Duration,
) -> bool {
    let mut b = std::mem::take(buf);
    b.clear();
    let Ok((res, b)) = monoio::time::timeout(idle, from.read_some(b)).await else {
        return false;
    };
    match res {
        Ok(n) if n > 0 => {}
        Ok(_) => {
            to.close().await;
            return false;
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            *buf = b;
            return true;
        }
        Err(_) => return false,
    }
    let (res, b) = to.send(b).await;
    *buf = b;
    res.is_ok()
}

/// The tunnel of a plain TCP client: split halves when the backend is
/// plain too, else [`relay`].
pub async fn tunnel_tcp(
    mut client: TcpStream,
    backend: BackendStream,
    to_backend: Vec<u8>,
    idle: Duration,
) {
    match backend {
        BackendStream::Plain(backend) => tunnel(client, backend, to_backend, idle).await,
        BackendStream::Tls(mut tls) => relay(&mut client, &mut *tls, to_backend, idle).await,
    }
}

/// Copies bytes both ways between a client and a backend after a 101,
/// until either side closes or neither sends for `idle`.
pub async fn tunnel<C>(client: C, backend: TcpStream, to_backend: Vec<u8>, idle: Duration)
where
    C: Split + AsyncReadRent + AsyncWriteRent,
{
    let (mut cr, mut cw) = client.into_split();
    let (mut br, mut bw) = backend.into_split();
    if !to_backend.is_empty() {
        let (res, _) = bw.write_all(to_backend).await;
        if res.is_err() {
            return;
        }
    }
    let up = copy(&mut cr, &mut bw, idle);
    let down = copy(&mut br, &mut cw, idle);
    monoio::select! {
        _ = up => {},
        _ = down => {},
    }
}

async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(r: &mut R, w: &mut W, idle: Duration) {
    let mut buf = Vec::with_capacity(COPY_CHUNK);
    loop {
        buf.clear();
        let (res, b) = match monoio::time::timeout(idle, r.read(buf)).await {
            Ok(x) => x,
            Err(_) => return,
        };
        buf = b;
        match res {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let (res, b) = w.write_all(buf).await;
        buf = b;
        if res.is_err() {
            return;
        }
    }
}
