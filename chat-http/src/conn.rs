//! Open TCP connections per client address, and the stream that holds one of them open.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Why a connection was refused (closed at once, unanswered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address already has `max_connections_per_address` open.
    Address,
    /// The node already has `max_connections` open.
    Total,
    /// The process ran out of file descriptors (refused with the spare one).
    Descriptors,
}

/// Counts open connections, in all and per address. The map has one entry per address with an
/// open connection, so it is bounded by the number of open sockets.
#[derive(Debug)]
pub(crate) struct ConnLimiter {
    /// Connections allowed per address.
    max: usize,
    /// Connections allowed in all (kept under the process's descriptor limit).
    max_total: usize,
    /// Open connections per address, and in all.
    open: Mutex<(HashMap<IpAddr, usize>, usize)>,
    /// Signalled whenever a connection closes: an accept loop that ran out of descriptors
    /// waits for it (or a short backoff) before trying again.
    closed: Notify,
}

impl ConnLimiter {
    pub(crate) fn new(max: usize, max_total: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            max,
            max_total,
            open: Mutex::new((HashMap::new(), 0)),
            closed: Notify::new(),
        })
    }

    /// Counts a new connection from `ip`, unless that would pass a limit.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, Refusal> {
        let mut guard = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (per_address, total) = &mut *guard;
        if *total >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = per_address.entry(ip).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                per_address.remove(&ip);
            }
            return Err(Refusal::Address);
        }
        *n += 1;
        *total += 1;
        Ok(ConnGuard {
            limiter: Arc::clone(self),
            ip,
        })
    }

    /// Open connections now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    /// Resolves when a connection closes (or at once if one closed since the last call).
    pub(crate) async fn one_closed(&self) {
        self.closed.notified().await;
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
        {
            let mut guard = self.limiter.open.lock().unwrap_or_else(|p| p.into_inner());
            let (per_address, total) = &mut *guard;
            *total = total.saturating_sub(1);
            if let Some(n) = per_address.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_address.remove(&self.ip);
                }
            }
        }
        // A descriptor is free again.
        self.limiter.closed.notify_one();
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
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_forgets_closed() {
        let l = ConnLimiter::new(2, 100);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let g1 = l.acquire(a).unwrap();
        let _g2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).err(), Some(Refusal::Address));
        let _g3 = l.acquire(b).unwrap();
        drop(g1);
        assert!(l.acquire(a).is_ok());
        assert_eq!(l.open.lock().unwrap().0.len(), 2);
    }

    #[tokio::test]
    async fn counts_in_all_and_says_when_one_closes() {
        let l = ConnLimiter::new(10, 3);
        let ips: Vec<IpAddr> = (1..=4).map(|i| IpAddr::from([127, 0, 0, i])).collect();
        let guards: Vec<ConnGuard> = ips[..3].iter().map(|ip| l.acquire(*ip).unwrap()).collect();
        assert_eq!(l.open(), 3);
        assert_eq!(l.acquire(ips[3]).err(), Some(Refusal::Total));
        let waiting = {
            let l = Arc::clone(&l);
            tokio::spawn(async move { l.one_closed().await })
        };
        drop(guards);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("told of a closed connection")
            .unwrap();
        assert_eq!(l.open(), 0);
        let _g = l.acquire(ips[3]).unwrap();
        assert_eq!(l.open.lock().unwrap().0.len(), 1);
    }
}
