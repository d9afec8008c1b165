//! The connection between the primary and one worker, over a Unix stream socket
//! (made by the cluster code from an inherited `socketpair` fd).
//!
//! Reading: [`IpcReader::next`] yields messages in order; `None` means EOF (the peer is
//! gone). After an error (oversized frame, malformed message, i/o) it yields `None`: the
//! caller logs the error and closes the connection.
//!
//! Writing: [`IpcSender`] is a cheap cloneable handle with a non-async
//! [`send`](IpcSender::send). It encodes the message on the caller's side (so an oversized
//! message is refused at the call site). When nothing is queued, the frame is written to
//! the socket at once, in the call: once `send` returns, the frame is in the kernel and
//! reaches the peer even if this process is killed the next moment (a worker acks a
//! client's broadcast right after handing it over, and must not lose it if it dies
//! then). Otherwise, or for what the socket did not take, the frame is queued on a
//! channel to one writer task, which writes everything queued, in order, then waits for
//! more (small frames are coalesced into one buffer and one write; large ones are
//! written as they are, without a copy).
//!
//! The queue is bounded in bytes, not in messages, and a send never waits: the primary
//! relays each worker's messages to every other worker, and waiting on the slowest
//! worker would stall all of them. A send made while the backlog is at or over the
//! limit ([`IpcConnection::with_limits`]) fails with [`SendError::Backlog`] instead (so
//! the backlog stays under the limit plus one frame), and so
//! does every later send on the connection: a peer that stopped reading gets no message
//! after a gap, it is given up (the primary kills and restarts such a worker; a worker
//! whose primary stopped reading drains). [`IpcSender::queued_bytes`] reports the backlog.
//!
//! The writer task ends, and shuts the socket's write side down (the peer then reads
//! EOF), when every `IpcSender` of the connection has been dropped, or on a write error
//! (later sends then fail with [`SendError::Closed`]).
//!
//! The socket is registered with the runtime for readability only, and for
//! writability only while the writer task waits for room: every read by the peer
//! of an `AF_UNIX` stream socket wakes whoever polls it for writing, so a
//! registration for both (tokio's `UnixStream`) woke the process once per
//! message it sent, when the peer read it, for nothing.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdUnixStream;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead};

use crate::codec::{CodecError, DEFAULT_MAX_FRAME_LENGTH};
use crate::framing::{EncodedFrame, IpcCodec};
use crate::message::Message;

/// The default bound on bytes queued for one connection (64 MiB): a peer that falls
/// this far behind is not reading.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// Small frames are copied into one buffer until it holds this much, then written.
const BATCH_BYTES: usize = 64 * 1024;
/// Frames at least this large are written directly, without copying them into the buffer.
const DIRECT_BYTES: usize = 16 * 1024;

/// Error of [`IpcSender::send`].
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection's writer has stopped (write error, or the socket is closed).
    #[error("ipc connection closed")]
    Closed,
    /// The message could not be encoded (too large for the frame limit).
    #[error(transparent)]
    Encode(#[from] CodecError),
    /// The peer does not read: the backlog reached the connection's limit. Every later
    /// send fails the same way.
    #[error("ipc peer not reading: backlog over {limit} bytes")]
    Backlog {
        /// The connection's limit on queued bytes.
        limit: usize,
    },
}

/// A connected pair of Unix stream sockets, for tests.
pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
    UnixStream::pair()
}

/// One end of the primary/worker connection: a reader and a sender.
#[derive(Debug)]
pub struct IpcConnection {
    reader: IpcReader,
    sender: IpcSender,
}

impl IpcConnection {
    /// Wraps `stream` with the default frame limit ([`DEFAULT_MAX_FRAME_LENGTH`]) and
    /// spawns the writer task (must be called within a tokio runtime).
    pub fn new(stream: UnixStream) -> Self {
        Self::with_max_frame_length(stream, DEFAULT_MAX_FRAME_LENGTH)
    }

    /// Wraps `stream`, refusing frames over `max` bytes both ways, and spawns the writer task.
    /// The backlog is bounded by [`DEFAULT_MAX_QUEUED_BYTES`].
    pub fn with_max_frame_length(stream: UnixStream, max: usize) -> Self {
        Self::with_limits(stream, max, DEFAULT_MAX_QUEUED_BYTES)
    }

    /// Wraps `stream`, refusing frames over `max_frame` bytes both ways and sends once
    /// `max_queued` bytes wait for the socket, and spawns the writer task.
    pub fn with_limits(stream: UnixStream, max_frame: usize, max_queued: usize) -> Self {
        let codec = IpcCodec::with_max_frame_length(max_frame);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        // Taken off tokio's registration (readable and writable) and registered
        // again for reading only (see the module doc). A socket that cannot be is
        // a connection closed at once: the reader ends, sends fail.
        let sides = stream.into_std().and_then(|s| {
            let out = s.try_clone()?;
            Ok((register(s, Interest::READABLE)?, out))
        });
        let (read, out, failed) = match sides {
            Ok((read, out)) => (Some(read), Some(out), false),
            Err(e) => {
                tracing::warn!(error = %e, "cannot register an ipc socket");
                (None, None, true)
            }
        };
        let write = Arc::new(WriteSide {
            out,
            direct: std::sync::Mutex::new(()),
            overflowed: AtomicBool::new(false),
        });
        if failed {
            drop(rx);
        } else {
            tokio::spawn(write_loop(write.clone(), rx, queued.clone()));
        }
        IpcConnection {
            reader: IpcReader {
                frames: FramedRead::new(ReadSide(read), RawFrames(codec)),
                failed,
            },
            sender: IpcSender {
                tx,
                queued,
                write,
                max_frame_length: codec.max_frame_length(),
                max_queued,
            },
        }
    }

    /// A new handle for sending on this connection.
    pub fn sender(&self) -> IpcSender {
        self.sender.clone()
    }

    /// The next message; `None` at EOF or after an error.
    pub async fn next(&mut self) -> Option<Result<Message, CodecError>> {
        self.reader.next().await
    }

    /// Separates the reading half from the sender (e.g. to read in another task).
    pub fn into_split(self) -> (IpcReader, IpcSender) {
        (self.reader, self.sender)
    }
}

/// The reading half of an [`IpcConnection`]; also a `Stream` of messages.
#[derive(Debug)]
pub struct IpcReader {
    frames: FramedRead<ReadSide, RawFrames>,
    /// Set after the first error: the stream cannot be resynchronised, so it ends.
    failed: bool,
}

impl IpcReader {
    /// The next message; `None` at EOF (the peer is gone) or after an error.
    pub async fn next(&mut self) -> Option<Result<Message, CodecError>> {
        StreamExt::next(self).await
    }

    /// The next message together with its encoded frame (to relay it without re-encoding).
    pub async fn next_frame(&mut self) -> Option<Result<(Message, EncodedFrame), CodecError>> {
        std::future::poll_fn(|cx| self.poll_next_frame(cx)).await
    }

    /// Polls for the next message together with its encoded frame: one reader
    /// can then be read among others in one task, without a future per reader.
    pub fn poll_next_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(Message, EncodedFrame), CodecError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let res = match ready!(self.frames.poll_next_unpin(cx)) {
            Some(res) => res.and_then(|frame| frame.decode().map(|msg| (msg, frame))),
            None => return Poll::Ready(None),
        };
        self.failed = res.is_err();
        Poll::Ready(Some(res))
    }
}

impl Stream for IpcReader {
    type Item = Result<Message, CodecError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let item =
            ready!(self.frames.poll_next_unpin(cx)).map(|res| res.and_then(|frame| frame.decode()));
        self.failed = matches!(item, Some(Err(_)));
        Poll::Ready(item)
    }
}

/// Registers `socket` with the runtime for `interest`.
fn register(socket: StdUnixStream, interest: Interest) -> io::Result<AsyncFd<StdUnixStream>> {
    // Deprecated for types whose descriptor may change or close under the
    // registration; a std `UnixStream` owns its descriptor until it is dropped
    // with the `AsyncFd` (the safe call keeps this crate free of `unsafe`).
    #[allow(deprecated)]
    AsyncFd::with_interest(socket, interest)
}

/// The socket as read: registered for readability only.
#[derive(Debug)]
struct ReadSide(Option<AsyncFd<StdUnixStream>>);

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(fd) = &self.0 else {
            return Poll::Ready(Ok(())); // EOF
        };
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| inner.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Not readable after all: readiness cleared, poll again.
                Err(_would_block) => continue,
            }
        }
    }
}

/// Splits frames off the stream without decoding them.
#[derive(Debug)]
struct RawFrames(IpcCodec);

impl Decoder for RawFrames {
    type Item = EncodedFrame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<EncodedFrame>, CodecError> {
        self.0.decode_frame(src)
    }
}

/// The socket's write side, shared by the senders (direct writes) and the writer task.
#[derive(Debug)]
struct WriteSide {
    /// A descriptor of its own for the socket, not registered with the runtime;
    /// `None` when the connection failed at its start.
    out: Option<StdUnixStream>,
    /// Held by a sender from its look at `queued` to its push on the channel, so
    /// that two senders' bytes never interleave.
    direct: std::sync::Mutex<()>,
    /// Set once the backlog passed the limit: the connection sends nothing more.
    overflowed: AtomicBool,
}

impl Drop for WriteSide {
    fn drop(&mut self) {
        // The peer reads EOF (the read side's descriptor may live on).
        if let Some(out) = &self.out {
            let _ = out.shutdown(std::net::Shutdown::Write);
        }
    }
}

/// A cheap cloneable handle that writes messages, or queues them for the
/// connection's writer task.
#[derive(Debug, Clone)]
pub struct IpcSender {
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes on the channel or in the writer task's hands: while it is not 0, a
    /// frame must go behind them, through the channel.
    queued: Arc<AtomicUsize>,
    write: Arc<WriteSide>,
    max_frame_length: usize,
    max_queued: usize,
}

impl IpcSender {
    /// Encodes `msg` and queues it; never blocks. Fails if the message exceeds the frame
    /// limit, or if the writer has stopped.
    pub fn send(&self, msg: Message) -> Result<(), SendError> {
        let frame = EncodedFrame::encode(&msg, self.max_frame_length)?;
        self.send_frame(frame)
    }

    /// Writes or queues an already encoded frame (e.g. one received from another
    /// worker, to relay it).
    pub fn send_frame(&self, frame: EncodedFrame) -> Result<(), SendError> {
        let mut bytes = frame.into_bytes();
        let _direct = self.write.direct.lock().unwrap_or_else(|e| e.into_inner());
        if self.tx.is_closed() {
            return Err(SendError::Closed);
        }
        let overflowed = self.write.overflowed.load(Ordering::Relaxed);
        let mut partly_written = false;
        if self.queued.load(Ordering::Acquire) == 0 && !overflowed {
            let out = self.write.out.as_ref().ok_or(SendError::Closed)?;
            match (&*out).write(&bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                // The rest goes first on the channel: nothing else is queued.
                Ok(n) => {
                    bytes = bytes.slice(n..);
                    partly_written = n > 0;
                }
                // Full socket buffer, or an error the writer task will meet and report.
                Err(_) => {}
            }
        }
        let len = bytes.len();
        // Refused once the bytes already queued reach the limit, so one frame of any
        // allowed size still goes to a peer that reads (the backlog stays under the
        // limit plus one frame). The rest of a frame begun on the socket is always
        // queued: a cut frame would break the stream.
        if overflowed || (!partly_written && self.queued.load(Ordering::Acquire) >= self.max_queued)
        {
            // Under `direct`, so no other sender slips a frame in after the gap.
            self.write.overflowed.store(true, Ordering::Relaxed);
            return Err(SendError::Backlog {
                limit: self.max_queued,
            });
        }
        self.queued.fetch_add(len, Ordering::AcqRel);
        self.tx.send(bytes).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            SendError::Closed
        })
    }

    /// Bytes queued and not yet written to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether the writer has stopped (later sends fail).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the writer has stopped.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The writer task: writes everything queued, in order, until every sender is gone.
async fn write_loop(
    side: Arc<WriteSide>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
) {
    let Some(socket) = &side.out else { return };
    let mut buf = BytesMut::with_capacity(BATCH_BYTES);
    while let Some(first) = rx.recv().await {
        let mut out = Out {
            socket,
            waiter: None,
        };
        let mut next = Some(first);
        let mut written = 0;
        let mut result = Ok(());
        while let Some(bytes) = next {
            written += bytes.len();
            result = write_batched(&mut out, &mut buf, bytes).await;
            if result.is_err() {
                break;
            }
            next = rx.try_recv().ok();
        }
        if result.is_ok() && !buf.is_empty() {
            result = write_all(&mut out, &buf).await;
            buf.clear();
        }
        // The writability registration, if any, goes with `out`.
        drop(out);
        // Only now, with all of it in the socket, may senders write directly again.
        queued.fetch_sub(written, Ordering::AcqRel);
        if let Err(e) = result {
            tracing::debug!(error = %e, "ipc write failed; closing the connection's writer");
            rx.close();
            return;
        }
    }
    // Every sender is gone: the write half is dropped with the last of them, which
    // shuts it down (the peer reads EOF).
}

/// The writer task's way to the socket: registered for writability only while
/// a write waits for room (see the module doc).
struct Out<'a> {
    socket: &'a StdUnixStream,
    waiter: Option<AsyncFd<StdUnixStream>>,
}

impl Out<'_> {
    /// Waits until the socket may take more.
    async fn writable(&mut self) -> io::Result<()> {
        if self.waiter.is_none() {
            let fd = self.socket.try_clone()?;
            self.waiter = Some(register(fd, Interest::WRITABLE)?);
        }
        let waiter = self.waiter.as_ref().expect("registered above");
        // Cleared before the next write: an edge after it is not missed.
        waiter.writable().await?.clear_ready();
        Ok(())
    }
}

/// Appends a small frame to `buf` (writing `buf` out when full), or writes a large one directly.
async fn write_batched(out: &mut Out<'_>, buf: &mut BytesMut, bytes: Bytes) -> io::Result<()> {
    if bytes.len() >= DIRECT_BYTES {
        if !buf.is_empty() {
            write_all(out, buf).await?;
            buf.clear();
        }
        return write_all(out, &bytes).await;
    }
    buf.extend_from_slice(&bytes);
    if buf.len() >= BATCH_BYTES {
        write_all(out, buf).await?;
        buf.clear();
    }
    Ok(())
}

/// `write_all` through a shared reference (the senders write through the same socket).
async fn write_all(out: &mut Out<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match out.socket.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => out.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
