//! The protocol-switch tunnel: after a backend's `101 Switching Protocols`
//! (WebSocket), bytes are copied both ways between the client and the
//! backend until either side closes or neither sends for the idle timeout.
//!
//! Each direction reads into its own buffer of `COPY_CHUNK` bytes and
//! writes it out before reading again, so a slow reader holds back its
//! sender (back-pressure) and memory stays bounded. Both sides are plain
//! TCP here; a TLS client's tunnel is [`crate::tls::TlsStream`]'s own (one
//! rustls state cannot be split into halves). HTTPS backends are never
//! offered upgrades.

#![forbid(unsafe_code)]

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};

use super::pool::BackendStream;

/// Bytes read per read in each direction.
const COPY_CHUNK: usize = 16 * 1024;

/// Copies bytes both ways between a client and a backend after a 101,
/// until either side closes or neither sends for `idle`.
pub async fn tunnel<C>(client: C, backend: BackendStream, to_backend: Vec<u8>, idle: Duration)
where
    C: Split + AsyncReadRent + AsyncWriteRent,
{
    // An HTTPS backend is never sent an `Upgrade` (see the module docs).
    let BackendStream::Plain(backend) = backend else {
        return;
    };
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
