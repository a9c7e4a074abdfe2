//! Open TCP connections per client address, and the stream that holds one of them open.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Counts open connections per address. The map has one entry per address with an open
/// connection, so it is bounded by the number of open sockets.
#[derive(Debug)]
pub(crate) struct ConnLimiter {
    /// Connections allowed per address.
    max: usize,
    /// Open connections per address.
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnLimiter {
    pub(crate) fn new(max: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `ip`; `None` when it already has `max` open.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let mut open = self.open.lock().ok()?;
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(ConnGuard {
            limiter: Arc::clone(self),
            ip,
        })
    }
}

/// One counted connection; dropping it uncounts it.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let Ok(mut open) = self.limiter.open.lock() else {
            return;
        };
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A TCP stream that stays counted for as long as it is open — also after a WebSocket
/// upgrade, when hyper hands the stream over and forgets the connection.
#[derive(Debug)]
pub(crate) struct CountedStream {
    stream: TcpStream,
    _guard: ConnGuard,
}

impl CountedStream {
    pub(crate) fn new(stream: TcpStream, guard: ConnGuard) -> CountedStream {
        CountedStream {
            stream,
            _guard: guard,
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that unwraps fails loudly, as it should
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_forgets_closed() {
        let l = ConnLimiter::new(2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let g1 = l.acquire(a).unwrap();
        let _g2 = l.acquire(a).unwrap();
        assert!(l.acquire(a).is_none());
        let _g3 = l.acquire(b).unwrap();
        drop(g1);
        assert!(l.acquire(a).is_some());
        assert_eq!(l.open.lock().unwrap().len(), 2);
    }
}
