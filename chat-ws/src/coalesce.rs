//! A coalescing wrapper around a socket's IO: the frames a socket task writes in one turn
//! leave in one `write(2)`, and the frames a client sent in a burst arrive in one `read(2)`.
//!
//! tungstenite writes every frame to its IO as soon as the frame is started (its own write
//! buffer is off, see [`crate::Hub::new`]), so without this each frame would be its own system
//! call; on loopback a `send(2)` also pays for the receiving side's TCP processing, and that
//! was most of the server's CPU. [`Coalesced`] takes those writes into a buffer and hands the
//! buffer to the IO in one write when the socket task flushes, which it does once per turn.
//! Likewise tungstenite reads at most its small read buffer ([`crate::READ_BUFFER_BYTES`]) per
//! call; [`Coalesced`] reads up to [`READ_AHEAD`] bytes at once and serves tungstenite's reads
//! from them.
//!
//! Both buffers exist only while they hold bytes: the write buffer from the first write after a
//! flush until a flush has written it all, the read-ahead from a read until tungstenite has
//! taken all of it. An idle socket keeps nothing here (tungstenite's own write buffer, by
//! contrast, would keep the capacity of its largest batch for the socket's whole life). A
//! drained buffer is kept for the next socket by the thread that drained it, one of each kind
//! per thread, so the hot path does not allocate them. The write buffer holds at most
//! [`Coalesced::new`]'s `limit` bytes: a write that would take it past the limit first writes
//! the buffer out, and waits (`Pending`) while the IO cannot take it; a write at least as large
//! as the limit finding the buffer empty goes straight to the IO, uncopied.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes one read takes from the IO.
pub(crate) const READ_AHEAD: usize = 16 * 1024;

thread_local! {
    /// A drained write buffer (empty, with its capacity), for the next socket on this thread.
    static SPARE_WRITE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// A drained read-ahead buffer (`READ_AHEAD` initialised bytes), likewise.
    static SPARE_READ: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// An IO whose writes are held until a flush (or until they reach the limit) and then written
/// together, in order, and whose reads are served from one larger read.
#[derive(Debug)]
pub(crate) struct Coalesced<IO> {
    io: IO,
    /// Bytes accepted and not yet written, oldest first. Never longer than `limit`; no
    /// allocation at all while empty.
    buf: Vec<u8>,
    /// The most bytes `buf` holds.
    limit: usize,
    /// Bytes read ahead: `ahead[start..end]` is what the reader has not taken yet. No
    /// allocation at all while that is empty.
    ahead: Vec<u8>,
    start: usize,
    end: usize,
}

impl<IO> Coalesced<IO> {
    /// Wraps `io`, holding at most `limit` bytes (at least 1) between flushes.
    pub(crate) fn new(io: IO, limit: usize) -> Coalesced<IO> {
        Coalesced {
            io,
            buf: Vec::new(),
            limit: limit.max(1),
            ahead: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Bytes held and not yet written.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The write buffer's allocation (0 when nothing is held).
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// The read-ahead's allocation (0 when nothing is read ahead).
    #[cfg(test)]
    pub(crate) fn read_allocated(&self) -> usize {
        self.ahead.capacity()
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

    /// A buffer of exactly `limit` capacity: this thread's spare if it fits, else a new one.
    fn write_buffer(&self) -> Vec<u8> {
        let spare = SPARE_WRITE.take();
        if spare.capacity() == self.limit {
            spare
        } else {
            Vec::with_capacity(self.limit)
        }
    }

    /// Hands the drained write buffer to this thread's spare slot (unless a large frame made
    /// it grow: that one is freed).
    fn release_write(&mut self) {
        let mut drained = std::mem::take(&mut self.buf);
        if drained.capacity() == self.limit {
            drained.clear();
            SPARE_WRITE.set(drained);
        }
    }

    /// Hands the drained read-ahead to this thread's spare slot.
    fn release_read(&mut self) {
        SPARE_READ.set(std::mem::take(&mut self.ahead));
        self.start = 0;
        self.end = 0;
    }
}

impl<IO: AsyncWrite + Unpin> Coalesced<IO> {
    /// Ready when [`Coalesced::push_text`] may append a frame: the buffer holds less than its
    /// limit (it is written out first when it is full).
    pub(crate) fn poll_text_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.len() >= self.limit {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Appends one whole text frame carrying `payload`, unmasked and final, as a server sends
    /// it: the socket loop's frames skip tungstenite's write path (its per-frame work and its
    /// own copy into a buffer it keeps for the socket's life). Called once
    /// [`Coalesced::poll_text_ready`] is ready, so the buffer holds at most its limit plus one
    /// frame.
    ///
    /// Frames never interleave: this appends a whole frame, and tungstenite's own frames
    /// (pings, pongs, the close) are small enough that [`AsyncWrite::poll_write`] always takes
    /// them whole or not at all.
    pub(crate) fn push_text(&mut self, payload: &[u8]) {
        let mut head = [0u8; 10];
        let head = text_header(payload.len(), &mut head);
        if self.buf.capacity() == 0 {
            self.buf = self.write_buffer();
        }
        // Past the limit only for a large frame, and then to exactly what it needs.
        self.buf.reserve_exact(head.len() + payload.len());
        self.buf.extend_from_slice(head);
        self.buf.extend_from_slice(payload);
    }

    /// Writes out everything held; gives the buffer up once it is all written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.capacity() == 0 {
            return Poll::Ready(Ok(()));
        }
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
        self.release_write();
        Poll::Ready(Ok(()))
    }
}

/// The header of an unmasked, final text frame of `len` bytes (RFC 6455, section 5.2).
fn text_header(len: usize, out: &mut [u8; 10]) -> &[u8] {
    /// FIN and the text opcode.
    const FIN_TEXT: u8 = 0x81;
    out[0] = FIN_TEXT;
    if len < 126 {
        out[1] = len as u8;
        &out[..2]
    } else if let Ok(len) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        &out[..4]
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        &out[..10]
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
            this.buf = this.write_buffer();
        }
        // Fits: `buf.len() + data.len() <= limit`, within the capacity.
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
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.start == this.end {
            if out.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.io).poll_read(cx, out);
            }
            let mut chunk = SPARE_READ.take();
            if chunk.len() != READ_AHEAD {
                chunk = vec![0; READ_AHEAD];
            }
            let mut into = ReadBuf::new(&mut chunk);
            let read = Pin::new(&mut this.io).poll_read(cx, &mut into);
            let n = into.filled().len();
            if !matches!(read, Poll::Ready(Ok(()))) || n == 0 {
                // Pending, an error, or the end of the stream: nothing to hold.
                SPARE_READ.set(chunk);
                return read;
            }
            this.ahead = chunk;
            this.start = 0;
            this.end = n;
        }
        let n = out.remaining().min(this.end - this.start);
        out.put_slice(&this.ahead[this.start..this.start + n]);
        this.start += n;
        if this.start == this.end {
            this.release_read();
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
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

    /// An IO with `input` to read, counting its reads; `Pending` while `dry`, the end of the
    /// stream once `input` is empty.
    #[derive(Default)]
    struct Source {
        input: std::collections::VecDeque<u8>,
        reads: usize,
        dry: bool,
    }

    impl AsyncRead for Source {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if this.dry {
                return Poll::Pending;
            }
            this.reads += 1;
            let n = buf.remaining().min(this.input.len());
            let taken: Vec<u8> = this.input.drain(..n).collect();
            buf.put_slice(&taken);
            Poll::Ready(Ok(()))
        }
    }

    fn read(c: &mut Coalesced<Source>, want: usize) -> Poll<io::Result<Vec<u8>>> {
        let waker = cx_of(&Arc::default());
        let mut space = vec![0u8; want];
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(c).poll_read(&mut Context::from_waker(&waker), &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().to_vec())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    #[test]
    fn small_reads_are_served_from_one_large_read_in_order() {
        let input: Vec<u8> = (0..READ_AHEAD + 500).map(|i| (i % 251) as u8).collect();
        let mut c = Coalesced::new(
            Source {
                input: input.iter().copied().collect(),
                ..Source::default()
            },
            64,
        );
        assert_eq!(c.read_allocated(), 0, "nothing allocated before a read");
        let mut got = Vec::new();
        while got.len() < READ_AHEAD {
            match read(&mut c, 1000) {
                Poll::Ready(Ok(part)) => {
                    assert!(!part.is_empty() && part.len() <= 1000);
                    got.extend_from_slice(&part);
                }
                other => panic!("{other:?}"),
            }
        }
        // One read of the IO served the first READ_AHEAD bytes, and the read-ahead is gone
        // once taken.
        assert_eq!(c.get_ref().reads, 1);
        assert_eq!(got.len(), READ_AHEAD);
        assert_eq!(c.read_allocated(), 0, "drained means given up");
        // The rest, then the end of the stream.
        match read(&mut c, 1000) {
            Poll::Ready(Ok(part)) => got.extend_from_slice(&part),
            other => panic!("{other:?}"),
        }
        assert_eq!(got, input);
        assert!(matches!(read(&mut c, 1000), Poll::Ready(Ok(end)) if end.is_empty()));
        assert_eq!(c.read_allocated(), 0);
    }

    #[test]
    fn reads_wait_with_the_io_and_large_reads_go_straight_through() {
        let mut c = Coalesced::new(
            Source {
                dry: true,
                ..Source::default()
            },
            64,
        );
        assert!(read(&mut c, 100).is_pending());
        assert_eq!(c.read_allocated(), 0, "a read that waits holds nothing");
        c.io.dry = false;
        c.io.input.extend(b"hello");
        assert!(matches!(read(&mut c, 2), Poll::Ready(Ok(p)) if p == b"he"));
        assert!(c.read_allocated() > 0, "the rest is held");
        assert!(matches!(read(&mut c, 100), Poll::Ready(Ok(p)) if p == b"llo"));
        assert_eq!(c.read_allocated(), 0);
        // A reader with room for a whole read-ahead reads directly.
        c.io.input.extend(b"direct");
        assert!(matches!(read(&mut c, READ_AHEAD), Poll::Ready(Ok(p)) if p == b"direct"));
        assert_eq!(c.read_allocated(), 0);
        assert_eq!(c.get_ref().reads, 2);
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

    /// What a client reads from `bytes`: tungstenite on the client side decodes them.
    fn client_reads(bytes: Vec<u8>) -> Vec<tokio_tungstenite::tungstenite::Message> {
        use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
        let config = WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        /// Reads `bytes`; what the client writes back (pongs) is dropped.
        struct ReadOnly(std::io::Cursor<Vec<u8>>);
        impl io::Read for ReadOnly {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.read(buf)
            }
        }
        impl io::Write for ReadOnly {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let stream = ReadOnly(std::io::Cursor::new(bytes));
        let mut ws = WebSocket::from_raw_socket(stream, Role::Client, Some(config));
        let mut got = Vec::new();
        loop {
            match ws.read() {
                Ok(m) => got.push(m),
                // The end of the bytes.
                Err(tokio_tungstenite::tungstenite::Error::Protocol(
                    tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) => break,
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn text_frames_pushed_among_other_writes_decode_whole_and_in_order() {
        use tokio_tungstenite::tungstenite::Message;
        let mut c = Coalesced::new(
            Recorder {
                per_write: Some(1000),
                ..Recorder::default()
            },
            4096,
        );
        let ping = [0x89u8, 0x02, b'h', b'i'];
        let mut expected = Vec::new();
        for (i, len) in [0usize, 1, 125, 126, 127, 4000, 65_535, 65_536, 100_000, 3]
            .into_iter()
            .enumerate()
        {
            let text: String = (0..len)
                .map(|j| char::from(b'a' + ((i + j) % 26) as u8))
                .collect();
            let waker = cx_of(&Arc::default());
            let ready = c.poll_text_ready(&mut Context::from_waker(&waker));
            assert!(matches!(ready, Poll::Ready(Ok(()))));
            c.push_text(text.as_bytes());
            assert!(c.buffered() <= 4096 + 10 + len);
            expected.push(Message::text(text));
            // tungstenite's own frames go through `poll_write`, whole.
            assert!(matches!(write(&mut c, &ping), Poll::Ready(Ok(4))));
            expected.push(Message::Ping(b"hi".to_vec().into()));
        }
        assert!(matches!(flush(&mut c), Poll::Ready(Ok(()))));
        assert_eq!(c.allocated(), 0, "a grown buffer is freed, not kept");
        let bytes = c.get_ref().bytes();
        assert_eq!(client_reads(bytes), expected);
    }

    #[test]
    fn text_waits_while_a_full_buffer_cannot_be_written() {
        let mut c = Coalesced::new(Recorder::default(), 8);
        c.push_text(b"0123456789");
        c.io.blocked = true;
        let waker = cx_of(&Arc::default());
        assert!(
            c.poll_text_ready(&mut Context::from_waker(&waker))
                .is_pending()
        );
        c.io.blocked = false;
        assert!(matches!(
            c.poll_text_ready(&mut Context::from_waker(&waker)),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(c.get_ref().bytes()[..2], [0x81, 10]);
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
