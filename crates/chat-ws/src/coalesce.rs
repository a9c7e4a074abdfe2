//! A write-coalescing wrapper around a socket's IO: the frames a socket task writes in one turn
//! leave in one `write(2)`.
//!
//! tungstenite writes every frame to its IO as soon as the frame is started (its own write
//! buffer is off, see [`crate::Hub::new`]), so without this each frame would be its own system
//! call; on loopback a `send(2)` also pays for the receiving side's TCP processing, and that
//! was most of the server's CPU. [`Coalesced`] takes those writes into a buffer and hands the
//! buffer to the IO in one write when the socket task flushes, which it does once per turn.
//!
//! The buffer exists only while it holds bytes: it is allocated by the first write after a
//! flush and freed as soon as a flush has written it all, so an idle socket keeps nothing here
//! (tungstenite's own write buffer, by contrast, would keep the capacity of its largest batch
//! for the socket's whole life). It holds at most [`Coalesced::limit`] bytes: a write that
//! would take it past the limit first writes the buffer out, and waits (`Pending`) while the
//! IO cannot take it; a write at least as large as the limit finding the buffer empty goes
//! straight to the IO, uncopied.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first allocation of a buffer: enough for a typical turn's frames (a few acks, echoes
/// and deliveries of chat-sized messages) without regrowing.
const FIRST_ALLOCATION: usize = 2048;

/// An IO whose writes are held until a flush (or until they reach the limit) and then written
/// together, in order. Reads pass straight through.
#[derive(Debug)]
pub(crate) struct Coalesced<IO> {
    io: IO,
    /// Bytes accepted and not yet written, oldest first. Never longer than `limit`; no
    /// allocation at all while empty.
    buf: Vec<u8>,
    /// The most bytes `buf` holds.
    limit: usize,
}

impl<IO> Coalesced<IO> {
    /// Wraps `io`, holding at most `limit` bytes (at least 1) between flushes.
    pub(crate) fn new(io: IO, limit: usize) -> Coalesced<IO> {
        Coalesced {
            io,
            buf: Vec::new(),
            limit: limit.max(1),
        }
    }

    /// Bytes held and not yet written.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The buffer's allocation (0 when nothing is held).
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// The wrapped IO.
    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The bound of the buffer.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

impl<IO: AsyncWrite + Unpin> Coalesced<IO> {
    /// Writes out everything held; frees the buffer once it is all written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                // A partial write: the kernel's buffer is full. Rare, so the memmove is cheap
                // next to the system calls it saves, and it keeps `buf.len() <= limit`.
                Ok(n) => drop(self.buf.drain(..n)),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        // Nothing held keeps nothing allocated.
        self.buf = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Coalesced<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !this.buf.is_empty() && this.buf.len() + data.len() > this.limit {
            ready!(this.poll_drain(cx))?;
        }
        if this.buf.is_empty() && data.len() >= this.limit {
            // As big as the whole buffer: copying it first would only add a copy.
            return Pin::new(&mut this.io).poll_write(cx, data);
        }
        if this.buf.capacity() == 0 {
            this.buf
                .reserve_exact(data.len().max(FIRST_ALLOCATION).min(this.limit));
        }
        this.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Coalesced<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that unwraps fails loudly, as it should
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// An IO that records every write it takes, takes at most `per_write` bytes a call, and
    /// answers `Pending` while `blocked`.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        per_write: Option<usize>,
        blocked: bool,
        fail: Option<io::ErrorKind>,
        zero: bool,
        flushed: usize,
        shut: bool,
    }

    impl Recorder {
        fn bytes(&self) -> Vec<u8> {
            self.writes.concat()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if let Some(kind) = this.fail {
                return Poll::Ready(Err(kind.into()));
            }
            if this.zero {
                return Poll::Ready(Ok(0));
            }
            if this.blocked {
                return Poll::Pending;
            }
            let n = this.per_write.map_or(data.len(), |p| p.min(data.len()));
            this.writes.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushed += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn cx_of(w: &Arc<CountWakes>) -> std::task::Waker {
        std::task::Waker::from(Arc::clone(w))
    }

    fn write(c: &mut Coalesced<Recorder>, data: &[u8]) -> Poll<io::Result<usize>> {
        let waker = cx_of(&Arc::default());
        Pin::new(c).poll_write(&mut Context::from_waker(&waker), data)
    }

    fn flush(c: &mut Coalesced<Recorder>) -> Poll<io::Result<()>> {
        let waker = cx_of(&Arc::default());
        Pin::new(c).poll_flush(&mut Context::from_waker(&waker))
    }

    #[test]
    fn writes_wait_for_the_flush_and_leave_in_one_write_in_order() {
        let mut c = Coalesced::new(Recorder::default(), 1024);
        assert_eq!(c.allocated(), 0, "nothing allocated before a write");
        for part in [&b"one "[..], b"two ", b"three"] {
            assert!(matches!(write(&mut c, part), Poll::Ready(Ok(n)) if n == part.len()));
        }
        assert!(
            c.get_ref().writes.is_empty(),
            "nothing written before the flush"
        );
        assert_eq!(c.buffered(), 13);
        assert!(matches!(flush(&mut c), Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().writes, vec![b"one two three".to_vec()]);
        assert_eq!(c.get_ref().flushed, 1, "the flush reaches the IO");
        assert_eq!((c.buffered(), c.allocated()), (0, 0), "drained means freed");
        // An empty flush writes nothing.
        assert!(matches!(flush(&mut c), Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().writes.len(), 1);
    }

    #[test]
    fn the_buffer_never_holds_more_than_its_limit() {
        let mut c = Coalesced::new(Recorder::default(), 100);
        let mut sent = Vec::new();
        for i in 0..50u8 {
            let part = vec![i; 7 + usize::from(i % 5)];
            assert!(matches!(write(&mut c, &part), Poll::Ready(Ok(n)) if n == part.len()));
            sent.extend_from_slice(&part);
            assert!(c.buffered() <= c.limit());
            assert!(c.allocated() <= c.limit(), "{}", c.allocated());
        }
        assert!(matches!(flush(&mut c), Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().bytes(), sent, "every byte, in order");
        // Written in chunks of at most the limit: far fewer writes than parts.
        let writes = &c.get_ref().writes;
        assert!(writes.iter().all(|w| w.len() <= 100));
        assert!(writes.len() < 15, "{} writes", writes.len());
    }

    #[test]
    fn a_write_as_large_as_the_limit_goes_straight_through() {
        let mut c = Coalesced::new(Recorder::default(), 16);
        assert!(matches!(write(&mut c, b"head"), Poll::Ready(Ok(4))));
        let big = [7u8; 40];
        // What is held goes first, then the big one, uncopied.
        assert!(matches!(write(&mut c, &big), Poll::Ready(Ok(40))));
        assert_eq!(c.get_ref().writes, vec![b"head".to_vec(), big.to_vec()]);
        assert_eq!((c.buffered(), c.allocated()), (0, 0));
    }

    #[test]
    fn partial_writes_are_finished_in_order() {
        let mut c = Coalesced::new(
            Recorder {
                per_write: Some(3),
                ..Recorder::default()
            },
            64,
        );
        assert!(matches!(write(&mut c, b"abcdefgh"), Poll::Ready(Ok(8))));
        assert!(matches!(write(&mut c, b"ijk"), Poll::Ready(Ok(3))));
        assert!(matches!(flush(&mut c), Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().bytes(), b"abcdefghijk");
        assert_eq!(c.get_ref().writes.len(), 4);
        assert_eq!(c.allocated(), 0);
    }

    #[test]
    fn a_blocked_io_keeps_the_bytes_and_the_writer_waits() {
        let mut c = Coalesced::new(Recorder::default(), 10);
        assert!(matches!(write(&mut c, b"12345678"), Poll::Ready(Ok(8))));
        c.io.blocked = true;
        // The flush cannot finish: the bytes stay, in order.
        assert!(flush(&mut c).is_pending());
        assert_eq!(c.buffered(), 8);
        // A write that does not fit waits too, and takes nothing.
        assert!(write(&mut c, b"abc").is_pending());
        assert_eq!(c.buffered(), 8);
        // One that fits is still taken.
        assert!(matches!(write(&mut c, b"9"), Poll::Ready(Ok(1))));
        c.io.blocked = false;
        assert!(matches!(write(&mut c, b"abc"), Poll::Ready(Ok(3))));
        assert!(matches!(flush(&mut c), Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().bytes(), b"123456789abc");
        assert_eq!(c.allocated(), 0);
    }

    #[test]
    fn errors_reach_the_writer() {
        let mut c = Coalesced::new(Recorder::default(), 10);
        assert!(matches!(write(&mut c, b"abc"), Poll::Ready(Ok(3))));
        c.io.fail = Some(io::ErrorKind::BrokenPipe);
        match flush(&mut c) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
            other => panic!("{other:?}"),
        }
        let mut c = Coalesced::new(Recorder::default(), 10);
        assert!(matches!(write(&mut c, b"abc"), Poll::Ready(Ok(3))));
        c.io.zero = true;
        match flush(&mut c) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::WriteZero),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shutdown_writes_what_is_held_first() {
        let mut c = Coalesced::new(Recorder::default(), 10);
        assert!(matches!(write(&mut c, b"bye"), Poll::Ready(Ok(3))));
        let waker = cx_of(&Arc::default());
        let done = Pin::new(&mut c).poll_shutdown(&mut Context::from_waker(&waker));
        assert!(matches!(done, Poll::Ready(Ok(()))));
        assert_eq!(c.get_ref().bytes(), b"bye");
        assert!(c.get_ref().shut);
    }

    #[tokio::test]
    async fn a_real_pipe_gets_every_byte_in_order() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A pipe smaller than what is written: partial writes and waits for the reader.
        let (near, mut far) = tokio::io::duplex(64);
        let mut c = Coalesced::new(near, 100);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut sent = Vec::new();
        for i in 0..200u32 {
            let part = format!("<{i}>");
            c.write_all(part.as_bytes()).await.unwrap();
            sent.extend_from_slice(part.as_bytes());
            if i % 7 == 0 {
                c.flush().await.unwrap();
                assert_eq!(c.allocated(), 0);
            }
        }
        c.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), sent);
    }
}
