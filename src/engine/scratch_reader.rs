//! Socket reads through one scratch buffer per thread.
//!
//! tungstenite reads into whatever capacity is left in its (small, per
//! connection) read buffer, often a few dozen bytes once the frames before
//! were split off: one `recv` per fragment, and tokio cannot tell that the
//! socket is drained. Reading the socket into a large per-thread buffer takes
//! everything available in one `recv`; what the caller had no room for is kept
//! with the connection only until it is taken, so an idle connection holds no
//! read memory here.

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of each thread's scratch buffer: one `recv` takes up to this much.
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// An I/O object whose reads go through the thread's scratch buffer; writes
/// pass straight through.
#[derive(Debug)]
pub(crate) struct ScratchReader<T> {
    inner: T,
    /// Read from `inner`, not yet taken by the caller (unallocated when empty).
    rest: Box<[u8]>,
    taken: usize,
}

impl<T> ScratchReader<T> {
    pub(crate) fn new(inner: T) -> Self {
        ScratchReader {
            inner,
            rest: Box::default(),
            taken: 0,
        }
    }

    /// Copies kept bytes into `buf`; frees them once all are taken.
    fn take_rest(&mut self, buf: &mut ReadBuf<'_>) {
        let rest = &self.rest[self.taken..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.taken += n;
        if self.taken == self.rest.len() {
            self.rest = Box::default();
            self.taken = 0;
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ScratchReader<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.taken < this.rest.len() {
            this.take_rest(buf);
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        SCRATCH_BUF.with(|scratch| {
            // Not re-entered (the inner read is plain socket I/O), but never panic on it.
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            };
            let mut read = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let data = read.filled();
            let n = data.len().min(buf.remaining());
            buf.put_slice(&data[..n]);
            if n < data.len() {
                this.rest = data[n..].into();
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ScratchReader<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Reads `want` bytes in reads of at most `chunk` bytes.
    async fn read_in_chunks<R: AsyncRead + Unpin>(r: &mut R, chunk: usize, want: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        while out.len() < want {
            let n = r.read(&mut buf).await.unwrap();
            assert!(n > 0, "early end of stream");
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[tokio::test]
    async fn small_reads_get_every_byte_in_order_from_one_inner_read() {
        let (mut peer, inner) = tokio::io::duplex(64 * 1024);
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        peer.write_all(&data).await.unwrap();
        let mut r = ScratchReader::new(inner);
        let mut got = read_in_chunks(&mut r, 37, 100).await;
        // The whole write was taken by the first read: the rest is kept.
        assert_eq!(r.rest.len(), 5000 - 37);
        got.extend(read_in_chunks(&mut r, 37, 5000 - got.len()).await);
        assert_eq!(got, data);
        assert!(r.rest.is_empty(), "the kept bytes are freed once taken");
    }

    #[tokio::test]
    async fn large_reads_and_end_of_stream_pass_through() {
        let (mut peer, inner) = tokio::io::duplex(64 * 1024);
        let data = vec![9u8; 40_000];
        peer.write_all(&data).await.unwrap();
        drop(peer);
        let mut r = ScratchReader::new(inner);
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data);
        assert!(r.rest.is_empty());
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (mut peer, inner) = tokio::io::duplex(1024);
        let mut w = ScratchReader::new(inner);
        w.write_all(b"hello").await.unwrap();
        w.flush().await.unwrap();
        let mut buf = [0; 5];
        peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }
}
